"""The HTTP server of ``stratoflow dev`` in front of the API function, as API Gateway fronts it
on AWS: each request becomes the event ``api_gateway.py`` builds, runs through the caller's
``invoke`` (the function in its Lambda-like runtime), and its result becomes the HTTP response.

It is a server on the user's machine that anything can reach, so it is hardened where API
Gateway is hardened by AWS:

* **Sizes.** A body over API Gateway's 10 MB (also a chunked one, counted as it arrives) is
  answered 413 without being read; so is an event over Lambda's payload limit. A malformed
  length or chunk is a 400 and closes the connection.
* **Cross-site requests (CSRF).** It serves the API and the UI with no authentication, so any page
  the user visits could otherwise create, cancel or delete runs: an ``Origin`` that is not its
  own, or a cross-site ``Sec-Fetch-Site`` on a POST, PUT, PATCH or DELETE without one, is answered
  403. The rule is ``stratoflow.local.ui_proxy.cross_site_refusal``, which the ``stratoflow ui``
  proxy applies too.
* **Bursts and keep-alive.** A listen backlog that holds a burst of clients, persistent HTTP/1.1
  connections closed after 120 s idle, and a stop that joins every connection thread
  (``threaded_server.py``).

Every method goes to the function (TRACE, QUERY, ...), as the template's ``ANY /{proxy+}`` route
sends it. A failure of the server itself is still an answer (500) and a traceback in the log.
"""

from __future__ import annotations

import json
import re
import sys
import time
import traceback
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from stratoflow.local.api_gateway import (
    MAX_REQUEST_BYTES,
    GatewayResponse,
    build_http_api_event,
    json_response,
    new_gateway_request_id,
    response_from_invocation,
)
from stratoflow.local.lambda_runtime import MAX_PAYLOAD_BYTES, InvocationResult
from stratoflow.local.threaded_server import LISTEN_BACKLOG, TrackedThreadingMixIn
from stratoflow.local.ui_proxy import cross_site_refusal, is_own_origin

# Response header with the invocation's duration in ms (the handler alone: no HTTP parsing or transport).
HANDLER_MS_HEADER = "x-stratoflow-handler-ms"


class ApiServer(TrackedThreadingMixIn, HTTPServer):
    """Serves ``invoke`` (an event in, the function's ``InvocationResult`` out) over HTTP on
    ``address``; writes its log lines (a line per request, errors) to ``log``."""

    thread_prefix = "stratoflow-dev-api"
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], invoke: Callable[[dict[str, Any]], InvocationResult],
                 log: Callable[[str], None], integration_timeout: float) -> None:
        self.invoke = invoke
        self.log = log
        self.integration_timeout = integration_timeout
        super().__init__(address, _ApiRequestHandler)

    def own_origin(self, origin: str) -> bool:
        """Whether ``Origin`` is this server's (the UI it serves: ``http://127.0.0.1:PORT`` ...)."""
        return is_own_origin(origin, int(self.server_address[1]), (str(self.server_address[0]),))

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the client went away
        self.log(f"error serving {client_address[0]}:\n{traceback.format_exc().rstrip()}")

    def log_request(self, method: str, target: str, response: GatewayResponse, result: InvocationResult | None,
                    elapsed_ms: float) -> None:
        line = f"{method} {target} -> {response.status} ({elapsed_ms:.1f} ms"
        if result is not None and result.init_ms is not None:
            line += f", cold start {result.init_ms:.0f} ms"
        line += ")"
        if result is not None and result.error is not None:
            error = result.error
            line += f"\n  [ERROR] {error.get('errorType')}: {error.get('errorMessage')}"
            trace = "".join(error.get("stackTrace") or [])
            if trace:
                line += "\n  Traceback (most recent call last):\n" + trace.rstrip("\n")
        elif result is not None and result.abandoned:
            line += f"\n  [ERROR] the function did not answer within {self.integration_timeout:.0f} s " \
                    "(API Gateway's integration timeout)"
        self.log(line)


# The shape of a registered HTTP method (IANA's registry: TRACE, QUERY, VERSION-CONTROL, ...);
# anything else (a lower-case "post" the resolver would upper-case) keeps http.server's 501.
_METHOD_NAME = re.compile(r"[A-Z][A-Z-]*")


class _EarlyResponse(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _ApiRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as API Gateway
    # Headers and body go out in separate writes; with Nagle on, the body waits ~40 ms for the
    # client's delayed ACK on every keep-alive request.
    disable_nagle_algorithm = True
    timeout = 120  # an idle keep-alive connection is closed after this
    server: ApiServer

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            size = int(length)
        except ValueError:
            self.close_connection = True
            raise _EarlyResponse(400, "Bad Request") from None
        if size > MAX_REQUEST_BYTES:
            self.close_connection = True  # the body stays unread
            raise _EarlyResponse(413, "Request Entity Too Large")
        body = self.rfile.read(size)
        if len(body) != size:
            self.close_connection = True
            raise _EarlyResponse(400, "Bad Request")
        return body

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                raise _EarlyResponse(400, "Bad Request") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > MAX_REQUEST_BYTES:
                self.close_connection = True
                raise _EarlyResponse(413, "Request Entity Too Large")
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _proxy(self) -> None:
        started = time.perf_counter()
        server = self.server
        request_id = new_gateway_request_id()
        result: InvocationResult | None = None
        try:
            body = self._read_body()
            refusal = cross_site_refusal(self.command, self.headers, server.own_origin)
            if refusal is not None:
                raise _EarlyResponse(403, f"stratoflow dev: {refusal}")
            event = build_http_api_event(
                method=self.command, target=self.path, headers=self.headers.items(), body=body,
                source_ip=self.client_address[0], server_port=server.server_address[1],
                request_id=request_id, protocol=self.request_version,
            )
            if len(json.dumps(event)) > MAX_PAYLOAD_BYTES:  # Lambda's limit for the event
                raise _EarlyResponse(413, "Request Entity Too Large")
            result = server.invoke(event)
            response = response_from_invocation(result)
            if not result.abandoned:  # the handler's own time (run + marshal), without HTTP or queueing
                response = response._replace(headers=[*response.headers, (HANDLER_MS_HEADER,
                                                                           f"{result.duration_ms:.3f}")])
        except _EarlyResponse as early:
            response = json_response(early.status, {"message": early.message})
        except Exception as exc:  # the stack's own failure: still an answer, and a trace in the log
            server.log(f"{self.command} {self.path}: stratoflow dev failed\n{traceback.format_exc().rstrip()}")
            response = json_response(500, {"message": "Internal Server Error",
                                            "errorMessage": f"stratoflow dev: {type(exc).__name__}: {exc}"})
        self._send(response, request_id)
        server.log_request(self.command, self.path, response, result, (time.perf_counter() - started) * 1000)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _proxy

    def parse_request(self) -> bool:
        """Send the other methods (TRACE, QUERY, ...) to the function too, as the template's
        ``ANY /{proxy+}`` route does; its resolver answers 404 for a method it has no route for,
        where http.server would answer 501, a server error for a request the API simply refuses."""
        if not super().parse_request():
            return False
        if not hasattr(self, f"do_{self.command}") and _METHOD_NAME.fullmatch(self.command):
            setattr(self, f"do_{self.command}", self._proxy)
        return True

    def _send(self, response: GatewayResponse, request_id: str) -> None:
        status = response.status
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        self.send_response_only(status, reason)
        self.send_header("date", self.date_time_string())
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("apigw-requestid", request_id)
        bodiless = status < 200 or status in (204, 304)
        if not bodiless:
            self.send_header("content-length", str(len(response.body)))
        if self.close_connection:
            self.send_header("connection", "close")
        self.end_headers()
        if not bodiless and self.command != "HEAD":
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        message = format % args
        if not message.startswith("Request timed out"):  # an idle keep-alive connection closing
            self.server.log(message)

