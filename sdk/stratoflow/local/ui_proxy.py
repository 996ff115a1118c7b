"""The local SigV4-signing proxy behind ``stratoflow ui``: a deployed stack's web UI in the browser.

On AWS the API (and the UI it serves under ``/ui/``) is behind IAM auth: every request must be
signed with SigV4, which a browser cannot do. This command listens on localhost and forwards
every request, unchanged but signed with the caller's AWS credentials (the SDK's own signing,
``stratoflow._http``), to ``STRATOFLOW_API_URL``; the browser opens ``http://127.0.0.1:4300/ui/``.
It serves nothing itself.

It listens on 127.0.0.1 only (anyone who can reach it acts with your credentials) and refuses
(403) what a web page on another site could make a browser send it:

* a ``Host`` that is not the address it listens on (DNS rebinding);
* an ``Origin`` that is not its own (``http://127.0.0.1:PORT``, ``http://localhost:PORT``): a
  page elsewhere may POST here without a CORS preflight (a body with no content type is a
  "simple" request), and the proxy would sign it;
* a POST/PUT/PATCH/DELETE with no ``Origin`` but a ``Sec-Fetch-Site`` other than
  ``same-origin``/``none`` (browsers send Origin on every cross-origin POST; this is a second
  line). Command-line clients send neither header and pass.

``stratoflow dev``'s API server applies the same rule (``cross_site_refusal``).
"""

from __future__ import annotations

import http.client
import ipaddress
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from stratoflow._http import HttpTransport
from stratoflow.exceptions import StratoflowError

DEFAULT_PORT = 4300
MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's own limit
# Pending connections the kernel keeps for us (socketserver's default, 5, resets bursts of clients).
LISTEN_BACKLOG = 128
STATE_CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Sec-Fetch-Site values of a request the user made on this server's own pages or typed in.
_SAME_SITE_FETCH = frozenset({"same-origin", "none"})
# Request headers passed on (everything else a browser sends stays here: cookies, origin, ...).
_FORWARDED_REQUEST_HEADERS = ("accept", "accept-encoding", "content-type", "if-none-match", "if-modified-since")
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
                         "upgrade", "content-length"})


def is_loopback_name(host: str | None) -> bool:
    """``localhost`` or a loopback IP address (``127.0.0.0/8``, ``::1``)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_own_origin(origin: str, port: int, hosts: tuple[str, ...] = ()) -> bool:
    """Whether ``origin`` is ``http://HOST:port`` with HOST a loopback name or one of ``hosts``
    (the address a server listens on): the origin of the pages this server itself serves."""
    try:
        parts = urlsplit(origin.strip())
        origin_port = parts.port
    except ValueError:
        return False
    if parts.scheme != "http" or parts.path or parts.query or parts.fragment or parts.username:
        return False
    if (origin_port if origin_port is not None else 80) != port:
        return False
    host = parts.hostname
    return host is not None and (is_loopback_name(host) or host in hosts)


def cross_site_refusal(method: str, headers: Any, own_origin: Callable[[str], bool]) -> str | None:
    """Why a request that a web page on another site made the browser send must be refused (one
    line), or None. ``headers``: anything with a case-insensitive ``get`` (``http.server``'s)."""
    origin = headers.get("Origin")
    if origin is not None:
        if own_origin(origin):
            return None
        return f"cross-origin request refused: Origin {origin[:100]!r} is not this server's own"
    site = headers.get("Sec-Fetch-Site")
    if method.upper() in STATE_CHANGING_METHODS and site is not None \
            and site.strip().lower() not in _SAME_SITE_FETCH:
        return f"cross-site {method.upper()} refused: Sec-Fetch-Site is {site[:40]!r} and there is no Origin"
    return None


class SigningProxy(ThreadingHTTPServer):
    """A localhost HTTP server that forwards each request to ``api_url``, signed with SigV4."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, api_url: str, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 region: str = "us-east-1", credentials: Any = None, timeout: float = 35.0) -> None:

        parts = urlsplit(api_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:

            raise StratoflowError(f"STRATOFLOW_API_URL {api_url!r} is not an http(s) URL")
        self.api_url = api_url.rstrip("/")
        self.target = parts
        self.timeout = timeout
        # The SDK's transport holds the credentials (the default botocore chain unless given) and signs.
        self.transport = HttpTransport(self.api_url, region=region, credentials=credentials)
        super().__init__((host, port), _ProxyHandler)

    @property
    def address(self) -> str:
        host, port = str(self.server_address[0]), int(self.server_address[1])
        return f"http://{host}:{port}"

    def allowed_host(self, value: str | None) -> bool:
        """Whether a request's ``Host`` names this proxy (a loopback address or localhost, our port)."""
        if not value:
            return False
        try:
            parts = urlsplit(f"//{value}")
            host, port = parts.hostname, parts.port
        except ValueError:
            return False
        if host is None or (port is not None and port != self.server_address[1]):
            return False
        return is_loopback_name(host)

    def own_origin(self, origin: str) -> bool:
        """Whether ``Origin`` is this proxy's (a page it serves: ``http://127.0.0.1:PORT`` ...)."""
        return is_own_origin(origin, int(self.server_address[1]), (str(self.server_address[0]),))

    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes | None,
                ) -> tuple[int, list[tuple[str, str]], bytes]:
        target = self.target
        full_path = (target.path.rstrip("/") + path) if target.path else path
        url = f"{target.scheme}://{target.netloc}{full_path}"
        send = {"Host": target.netloc, **headers}
        signed = self.transport._signed_headers(method, url, body, send)
        cls = http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
        conn = cls(target.hostname or "", target.port, timeout=self.timeout)
        try:
            conn.request(method, full_path, body=body, headers=signed)
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()


class _ProxyHandler(BaseHTTPRequestHandler):
    server: SigningProxy
    protocol_version = "HTTP/1.1"

    def _handle(self) -> None:
        if not self.server.allowed_host(self.headers.get("Host")):
            self._refuse("only requests to this address are forwarded")
            return
        refusal = cross_site_refusal(self.command, self.headers, self.server.own_origin)
        if refusal is not None:
            self._refuse(refusal)
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the body stays unread
            self._reply(413, [("Content-Type", "text/plain; charset=utf-8")], b"request body over 10 MB\n")
            return
        body = self.rfile.read(length) if length else None
        headers = {name: value for name in _FORWARDED_REQUEST_HEADERS
                   if (value := self.headers.get(name)) is not None}
        try:
            status, response_headers, payload = self.server.forward(self.command, self.path, headers, body)
        except (OSError, http.client.HTTPException) as exc:
            self._reply(502, [("Content-Type", "application/json")],
                        f'{{"error": "stratoflow ui: cannot reach {self.server.api_url}: {type(exc).__name__}"}}'
                        .encode())
            return
        self._reply(status, [(k, v) for k, v in response_headers if k.lower() not in _HOP_BY_HOP], payload)

    def _refuse(self, reason: str) -> None:
        """403 with one line, without forwarding; the connection closes (any body stays unread)."""
        self.close_connection = True
        self._reply(403, [("Content-Type", "text/plain; charset=utf-8"), ("Connection", "close")],
                    f"stratoflow ui: {reason}\n".encode())

    def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        bodiless = status in (204, 304) or self.command == "HEAD"
        if not bodiless:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not bodiless:
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

    def log_message(self, format: str, *args: Any) -> None:
        if getattr(self.server, "verbose", False):
            sys.stderr.write(f"{self.address_string()} {format % args}\n")


def start_proxy(api_url: str, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT, region: str = "us-east-1",
                credentials: Any = None) -> tuple[SigningProxy, threading.Thread]:
    """A running proxy (on a thread) and its thread; ``proxy.shutdown()`` stops it."""
    proxy = SigningProxy(api_url, host=host, port=port, region=region, credentials=credentials)
    thread = threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.2}, name="stratoflow-ui",
                              daemon=True)
    thread.start()
    return proxy, thread
