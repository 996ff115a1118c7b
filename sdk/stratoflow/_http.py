"""A small JSON-over-HTTP transport to the control-plane API (``STRATOFLOW_API_URL``).

* Requests are signed with AWS SigV4 (service ``execute-api``, the settings' region) using the
  caller's credentials from the default botocore chain. Without credentials they go unsigned
  (said once in a debug log): the local stack does not check signatures.
* 429/502/503/504 and connection errors are retried with exponential backoff and full jitter, a
  bounded number of times; a ``Retry-After`` header is honoured (capped).
* 4xx become exceptions: 404 ``ObjectNotFound``, 409 ``TransitionRefused`` (when the body names
  the rule) or ``ApiConflict`` (carrying the body), anything else ``ApiError`` with the
  server's one-line message.

Stdlib only (http.client with one keep-alive connection per thread and host).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from stratoflow.exceptions import ObjectNotFound, StratoflowError, TransitionRefused
from stratoflow.orchestration import OrchestrationResult, ResponseStatus
from stratoflow.states import State

logger = logging.getLogger("stratoflow.http")

RETRY_STATUSES = frozenset({429, 502, 503, 504})
DEFAULT_MAX_ATTEMPTS = 6
DEFAULT_BACKOFF_BASE = 0.1
DEFAULT_BACKOFF_MAX = 5.0
MAX_RETRY_AFTER = 30.0


class ApiError(StratoflowError):
    """The API answered with an error status; ``message`` is its one-line ``error``."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.body = body


class ApiConflict(ApiError):
    """409 that is not a refused transition (for example a lost race; ``body["current"]``)."""


class ApiUnavailable(StratoflowError):
    """The API could not be reached, or kept answering 429/5xx, within the retry budget."""


def quote_segment(value: str) -> str:
    """``value`` as one path segment."""
    return quote(value, safe="")


class HttpTransport:
    def __init__(
        self,
        base_url: str,
        *,
        region: str = "us-east-1",
        timeout: float = 30.0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        backoff_base: float = DEFAULT_BACKOFF_BASE,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
        sign: bool = True,
        credentials: Any = None,
        token: str | None = None,
    ) -> None:
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StratoflowError(f"STRATOFLOW_API_URL {base_url!r} is not an http(s) URL")
        self.base_url = base_url.rstrip("/")
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._base_path = parts.path.rstrip("/")
        self.region = region
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        # A bearer token (the sandbox gateway's) replaces SigV4: the process holds no AWS credentials.
        self._token = token
        self._sign = sign and token is None
        self._credentials = credentials
        self._credentials_resolved = credentials is not None
        self._local = threading.local()
        self._lock = threading.Lock()

    # -- signing ------------------------------------------------------------------------------
    def _get_credentials(self) -> Any:
        if not self._sign:
            return None
        if not self._credentials_resolved:
            with self._lock:
                if not self._credentials_resolved:
                    creds = None
                    try:
                        # cold start: botocore's signer loads only in a process that calls the API
                        import botocore.session

                        creds = botocore.session.get_session().get_credentials()
                    except Exception as exc:  # pragma: no cover - depends on the environment
                        logger.debug("could not load AWS credentials: %s", exc)
                    if creds is None:
                        logger.debug("no AWS credentials found: requests to %s are sent unsigned", self.base_url)
                    self._credentials = creds
                    self._credentials_resolved = True
        return self._credentials

    def _signed_headers(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> dict[str, str]:
        if self._token is not None:
            return {**headers, "Authorization": f"Bearer {self._token}"}
        creds = self._get_credentials()
        if creds is None:
            return headers
        # cold start: botocore's signer loads only in a process that calls the API
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method=method, url=url, data=body or b"", headers=headers)
        SigV4Auth(creds.get_frozen_credentials() if hasattr(creds, "get_frozen_credentials") else creds,
                  "execute-api", self.region).add_auth(request)
        return dict(request.headers.items())

    # -- connections --------------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            try:
                conn.close()
            finally:
                self._local.conn = None

    def close(self) -> None:
        self._drop_connection()

    # -- requests -----------------------------------------------------------------------------
    def request(self, method: str, path: str, *, json_body: Any = None,
                query: Mapping[str, Any] | None = None, response_headers: dict[str, str] | None = None) -> Any:
        """Send one JSON request (retried as described above); return the decoded JSON body.

        ``response_headers``, when given, receives the headers of the final response.
        """
        target = self._base_path + path
        params = {k: v for k, v in (query or {}).items() if v is not None}
        if params:
            target += "?" + urlencode(params)
        body = None if json_body is None else json.dumps(json_body, separators=(",", ":")).encode()
        url = f"{self._scheme}://{self._host}{'' if self._port is None else f':{self._port}'}{target}"
        last_error: str = ""
        for attempt in range(1, self.max_attempts + 1):
            headers = {"Accept": "application/json", "Host": urlsplit(url).netloc}
            if body is not None:
                headers["Content-Type"] = "application/json"
            headers = self._signed_headers(method, url, body, headers)
            retry_after: float | None = None
            try:
                conn = self._connection()
                conn.request(method, target, body=body, headers=headers)
                _quickack(conn)
                response = conn.getresponse()
                data = response.read()
                status = response.status
                if response.getheader("Connection", "").lower() == "close":
                    self._drop_connection()
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                last_error = f"{type(exc).__name__}: {exc}"
                status = 0
                data = b""
            else:
                if status not in RETRY_STATUSES:
                    if response_headers is not None:
                        response_headers.update({k.lower(): v for k, v in response.getheaders()})
                    return self._decode(method, path, status, data)
                last_error = f"HTTP {status}: {_error_line(data) or 'no body'}"
                retry_after = _retry_after(response.getheader("Retry-After"))
            if attempt == self.max_attempts:
                break
            delay = retry_after if retry_after is not None else random.uniform(  # nosec B311  # backoff jitter, nothing secret
                0, min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1)))
            logger.debug("%s %s failed (%s); retry %d in %.3fs", method, path, last_error, attempt, delay)
            time.sleep(delay)
        raise ApiUnavailable(f"{method} {path} failed after {self.max_attempts} attempts: {last_error}")

    def request_bytes(self, method: str, path: str, *, data: bytes | None = None,
                      query: Mapping[str, Any] | None = None) -> bytes:
        """One request with a raw body and a raw answer (blobs through the sandbox gateway); errors
        as ``request``. Not retried: the caller's operation is retried as a whole."""
        target = self._base_path + path
        params = {k: v for k, v in (query or {}).items() if v is not None}
        if params:
            target += "?" + urlencode(params)
        url = f"{self._scheme}://{self._host}{'' if self._port is None else f':{self._port}'}{target}"
        headers = {"Accept": "*/*", "Host": urlsplit(url).netloc}
        if data is not None:
            headers["Content-Type"] = "application/octet-stream"
        headers = self._signed_headers(method, url, data, headers)
        conn = self._connection()
        try:
            conn.request(method, target, body=data, headers=headers)
            response = conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self._drop_connection()
            raise ApiUnavailable(f"{method} {path} failed: {type(exc).__name__}: {exc}") from exc
        if response.status >= 400:
            self._decode(method, path, response.status, payload)
        return payload

    def _decode(self, method: str, path: str, status: int, data: bytes) -> Any:
        try:
            payload = json.loads(data) if data else None
        except ValueError:
            payload = None
        if status < 400:
            if payload is None and data:
                raise ApiError(status, f"{method} {path}: response is not JSON")
            return payload
        message = _error_line(data) or f"{method} {path} failed"
        if status == 404:
            kind = payload.get("kind") if isinstance(payload, dict) else None
            key = payload.get("id") if isinstance(payload, dict) else None
            if kind and key:
                raise ObjectNotFound(str(kind), str(key))
            error = ObjectNotFound("resource", path)
            error.args = (message,)
            raise error
        if status == 409:
            if isinstance(payload, dict) and payload.get("rule") is not None and "current" not in payload:
                raise TransitionRefused(_result_of(payload))
            raise ApiConflict(status, message, payload)
        raise ApiError(status, message, payload)


def _quickack(conn: http.client.HTTPConnection) -> None:
    """Acknowledge the response's first segment at once (Linux). A server that writes headers
    and body separately with Nagle on (Python's http.server does) otherwise waits for our
    delayed ACK: about 40 ms a request on a keep-alive connection."""
    option = getattr(socket, "TCP_QUICKACK", None)
    if option is not None and conn.sock is not None:
        with contextlib.suppress(OSError):
            conn.sock.setsockopt(socket.IPPROTO_TCP, option, 1)


def _error_line(data: bytes) -> str:
    try:
        payload = json.loads(data)
    except ValueError:
        return data[:200].decode("utf-8", "replace").strip()
    if isinstance(payload, dict):
        for key in ("error", "message"):
            if isinstance(payload.get(key), str):
                return str(payload[key])
    return str(payload)[:200]


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _result_of(payload: dict[str, Any]) -> Any:

    state = payload.get("state")
    try:
        status = ResponseStatus(payload.get("status") or "ABORT")
    except ValueError:
        status = ResponseStatus.ABORT
    return OrchestrationResult(status, State.model_validate(state) if isinstance(state, dict) else None,
                               reason=payload.get("reason"), rule=payload.get("rule"))


_transports: dict[tuple[str, str, str | None], HttpTransport] = {}
_transports_lock = threading.Lock()


def get_transport(base_url: str, region: str, token: str | None = None) -> HttpTransport:
    """One transport per API URL, region (and sandbox token) for the process."""
    key = (base_url, region, token)
    with _transports_lock:
        transport = _transports.get(key)
        if transport is None:
            transport = _transports[key] = HttpTransport(base_url, region=region, token=token)
        return transport
