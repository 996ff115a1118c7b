"""The runtime's side of the sandbox: a loopback HTTP gateway that serves a flow's store requests.

A sandboxed flow run (``stratoflow.sandbox.runner``) has no AWS credentials of the runtime and
no result key; its engine talks to this gateway as to the API (``ApiStore``), with a bearer
token that names its run. For each request the gateway:

1. finds the run's scope by the token (401 without a known token);
2. refuses what is outside the scope (403 naming why, ``stratoflow.sandbox.scope``);
3. serves the request with the API's own routes, in process, over the runtime's store (so the
   policy replay, validation and signature checks of the API apply to flow code too), or one of
   the runtime routes: ``/_runtime/sign`` and ``/_runtime/verify`` (the result key stays here),
   ``/_runtime/blobs`` (results and parameters, confined to their prefixes), ``/_runtime/done``
   (the child's summary of the execution).

One gateway per runtime process, on 127.0.0.1 with a random port; tokens are 256-bit random and
live as long as their run.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from stratoflow.api.app import build_app
from stratoflow.sandbox.scope import RunScope, admit, allow, readable_blob, segments
from stratoflow.settings import Settings
from stratoflow.storage import using_store
from stratoflow.storage.base import Store
from stratoflow.storage.results import ResultIntegrityError, ResultKeyUnavailable

logger = logging.getLogger("stratoflow.sandbox")
MAX_BODY_BYTES = 512 * 1024 * 1024  # results may be large; the API routes keep their own 1 MiB limit


@dataclass
class Grant:
    """One sandboxed run's access: its scope, and what the child reported when it finished."""

    token: str
    scope: RunScope
    run_id: str
    # Whether the child's claim of the run went through (seen here, so it can be trusted).
    claimed: bool = False
    summary: dict[str, Any] | None = None
    done: threading.Event = field(default_factory=threading.Event)


class RuntimeGateway(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.grants: dict[str, Grant] = {}
        self._lock = threading.Lock()
        self.resolve_lock = threading.Lock()
        self._app: Any = None
        super().__init__(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="stratoflow-sandbox-gateway", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def grant(self, flow_run_id: str) -> Grant:
        grant = Grant(secrets.token_urlsafe(32), RunScope({flow_run_id}, results_prefix=self.settings.results_prefix),
                      flow_run_id)
        with self._lock:
            self.grants[grant.token] = grant
        return grant

    def revoke(self, grant: Grant) -> None:
        with self._lock:
            self.grants.pop(grant.token, None)

    def lookup(self, header: str | None) -> Grant | None:
        if not header or not header.startswith("Bearer "):
            return None
        with self._lock:
            return self.grants.get(header[7:].strip())

    def app(self) -> Any:
        if self._app is None:

            self._app = build_app()
        return self._app

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: RuntimeGateway
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("gateway: " + format, *args)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def _handle(self) -> None:
        grant = self.server.lookup(self.headers.get("Authorization"))
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            return self._json(413, {"error": f"request body over {MAX_BODY_BYTES} bytes"})
        raw = self.rfile.read(length) if length else b""
        if grant is None:
            return self._json(401, {"error": "the sandbox gateway needs the run's token"})
        parts = segments(self.path)
        body: Any = None
        if raw and parts[:2] != ["_runtime", "blobs"]:
            try:
                body = json.loads(raw)
            except ValueError:
                return self._json(400, {"error": "malformed JSON body"})
        refusal = allow(grant.scope, self.command, self.path, body)
        if refusal is not None:
            logger.warning("sandbox: refused %s", refusal)
            return self._json(403, {"error": refusal})
        try:
            if parts[:1] == ["_runtime"]:
                return self._runtime(grant, parts[1:], body, raw)
            self._api(grant, raw, body)
        except Exception as exc:  # the child sees a 500 with the reason; the runtime goes on
            logger.exception("sandbox gateway: %s %s failed", self.command, self.path)
            self._json(500, {"error": f"{type(exc).__name__}: {exc}"})

    # -- the API's routes, over the runtime's store -----------------------------------------------
    def _api(self, grant: Grant, raw: bytes, body: Any) -> None:

        event = _event(self.command, self.path, dict(self.headers.items()), raw)
        # One request at a time: Powertools' resolver keeps the current event on its base class
        # (BaseRouter.current_event), shared by every resolver of the process, so two requests
        # resolved at once would read each other's bodies.
        with self.server.resolve_lock, using_store(self.server.store):
            response = self.server.app().resolve(event, _Context())
        status = int(response.get("statusCode", 500))
        payload = response.get("body") or ""
        data = base64.b64decode(payload) if response.get("isBase64Encoded") else str(payload).encode()
        if status < 300:
            try:
                created = json.loads(data) if data else None
            except ValueError:
                created = None
            admit(grant.scope, self.command, self.path, created, status)
            if self.command == "POST" and segments(self.path) == ["runs", "flow", grant.run_id, "commit"]:
                grant.claimed = True
        headers = {str(k).lower(): str(v) for k, v in (response.get("headers") or {}).items()}
        self._send(status, data, headers.get("content-type", "application/json"),
                   {k: v for k, v in headers.items() if k.startswith("x-")})

    # -- the runtime's own routes -------------------------------------------------------------------
    def _runtime(self, grant: Grant, parts: list[str], body: Any, raw: bytes) -> None:
        store = self.server.store
        match (self.command, parts):
            case ("POST", ["sign"]):
                signer = store.result_signer()
                if signer is None:
                    return self._json(503, {"error": str(ResultKeyUnavailable.__doc__).strip()})
                return self._json(200, signer.sign(str(body.get("serializer")), str(body.get("sha256"))))
            case ("POST", ["verify"]):
                signer = store.result_signer()
                if signer is None:
                    return self._json(503, {"error": "the runtime has no result key"})
                try:
                    signer.verify(str(body.get("serializer")), str(body.get("sha256")), body.get("sig"),
                                  body.get("kid"), str(body.get("where") or "result_ref"))
                except ResultIntegrityError as exc:
                    return self._json(422, {"error": str(exc)})
                return self._json(200, {"verified": True})
            case ("PUT", ["blobs", *key]):
                return self._json(200, {"uri": store.put_blob("/".join(key), raw)})
            case ("GET", ["blobs"]):
                uri = dict(parse_qsl(urlsplit(self.path).query)).get("uri", "")
                reason = readable_blob(grant.scope, self.server.settings.bucket, uri)
                if reason is not None:
                    return self._json(403, {"error": f"flow code may not read {reason}"})
                return self._send(200, store.get_blob(uri), "application/octet-stream")
            case ("POST", ["done"]):
                grant.summary = body if isinstance(body, dict) else {}
                grant.done.set()
                return self._json(200, {"ok": True})
        self._json(404, {"error": f"no runtime route {self.command} {self.path}"})

    # -- replies ---------------------------------------------------------------------------------------
    def _json(self, status: int, body: Any) -> None:
        self._send(status, json.dumps(body, separators=(",", ":")).encode(), "application/json")

    def _send(self, status: int, data: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class _Context:
    """The bits of a Lambda context the API's handlers read."""

    function_name = "stratoflow-sandbox-gateway"
    aws_request_id = ""

    def __init__(self) -> None:
        self.aws_request_id = uuid.uuid4().hex


def _event(method: str, target: str, headers: dict[str, str], raw: bytes) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event for one request, as API Gateway would make it."""
    parts = urlsplit(target)
    now = datetime.now(UTC)
    query: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        query[key] = f"{query[key]},{value}" if key in query else value
    event: dict[str, Any] = {
        "version": "2.0", "routeKey": "$default", "rawPath": parts.path, "rawQueryString": parts.query,
        "headers": {k.lower(): v for k, v in headers.items() if k.lower() != "authorization"},
        "requestContext": {"accountId": "sandbox", "apiId": "sandbox", "requestId": uuid.uuid4().hex,
                           "routeKey": "$default", "stage": "$default", "timeEpoch": int(now.timestamp() * 1000),
                           "http": {"method": method, "path": parts.path, "protocol": "HTTP/1.1",
                                    "sourceIp": "127.0.0.1", "userAgent": headers.get("User-Agent", "")}},
        "isBase64Encoded": True,
    }
    if query:
        event["queryStringParameters"] = query
    if raw:
        event["body"] = base64.b64encode(raw).decode()
    else:
        event["isBase64Encoded"] = False
    return event


_gateway: RuntimeGateway | None = None
_gateway_lock = threading.Lock()


def get_gateway(store: Store, settings: Settings) -> RuntimeGateway:
    """The process's gateway over ``store`` (started on first use; a new one if the store changed)."""
    global _gateway
    with _gateway_lock:
        if _gateway is None or _gateway.store is not store:
            if _gateway is not None:
                _gateway.close()
            _gateway = RuntimeGateway(store, settings)
        return _gateway
