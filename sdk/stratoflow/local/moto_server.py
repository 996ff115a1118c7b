"""moto in server mode on a local port: the AWS endpoint (DynamoDB, S3, SQS, ...) of
``stratoflow dev`` and of ``infra/provision.py --moto``.

What ``moto.server.ThreadedMotoServer`` does, with the differences the local cloud needs:

* **One request at a time.** moto's backends are plain Python, and a DynamoDB conditional write
  must be atomic as it is on AWS (two claimers of one run can never both win). SQS long polls are
  the exception: they become short polls under the lock with pauses outside it.
* **Keep-alive.** werkzeug's handler closes the connection after every answer; here it stays open,
  so the stack's AWS calls do not pay a TCP connect and a new server thread each.
* **Errors and threads.** A busy port raises ``OSError`` from ``start()`` (werkzeug would print and
  exit), and ``stop()`` joins every thread it started.

Moto's backends are process-global: run one in a process of its own, not beside the embedded backend.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, ClassVar

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer

from stratoflow.local.threaded_server import LISTEN_BACKLOG, STOP_TIMEOUT, TrackedThreadingMixIn


class _OneAtATime:
    """WSGI middleware: one request at a time into moto (see the module docstring).

    SQS long polls (``ReceiveMessage`` with ``WaitTimeSeconds``) are the exception: moto waits
    inside the request, which under the lock would stall every other request for up to 20 s.
    They are answered here by short polls (under the lock) with pauses between them (outside
    it), until a message arrives or the wait is over, as SQS's long polling behaves.
    """

    POLL_PAUSE = 0.05

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self.lock = threading.Lock()

    def _call(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> bytes:
        with self.lock:
            result = self.app(environ, start_response)
            try:
                return b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()

    @staticmethod
    def _long_poll(environ: dict[str, Any]) -> tuple[float, bytes] | None:
        """(wait seconds, the request body asking for no wait) for an SQS JSON long poll."""
        if environ.get("HTTP_X_AMZ_TARGET") != "AmazonSQS.ReceiveMessage":
            return None
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        try:
            request = json.loads(raw or b"{}")
            wait = float(request.get("WaitTimeSeconds") or 0)
        except (ValueError, TypeError, AttributeError):
            wait = 0.0
            request = None
        if request is None or wait <= 0:
            environ["wsgi.input"] = io.BytesIO(raw)
            return (0.0, raw) if raw else None
        request["WaitTimeSeconds"] = 0
        return wait, json.dumps(request).encode()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        poll = self._long_poll(environ)
        if poll is None or poll[0] <= 0:
            return [self._call(environ, start_response)]
        wait, body = poll
        deadline = time.monotonic() + wait
        captured: list[Any] = []

        def capture(status: str, headers: Any, exc_info: Any = None) -> None:
            captured[:] = [status, headers]

        while True:
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            answer = self._call(environ, capture)
            try:
                got_messages = not str(captured[0]).startswith("200") or bool(json.loads(answer).get("Messages"))
            except (ValueError, AttributeError):
                got_messages = True  # not what a poll answers: hand it over as it is
            if got_messages or time.monotonic() + self.POLL_PAUSE >= deadline:
                start_response(captured[0], captured[1])
                return [answer]
            time.sleep(self.POLL_PAUSE)


class _KeepAlive:
    """Keep-alive for moto's (werkzeug's) request handler, which closes the connection after
    every answer and then drains the socket: every AWS call of the stack's functions paid a TCP
    connect and a new server thread. Here the request is answered the plain WSGI way on a
    persistent HTTP/1.1 connection: the body is read whole before the app runs (a request it
    leaves partly unread cannot run into the next one), the answer is buffered and sent with its
    length, and Nagle is off (headers and body go out in separate writes; the body would wait
    for the client's delayed ACK)."""

    disable_nagle_algorithm = True
    timeout: ClassVar[float | None] = 120  # an idle keep-alive connection is closed after this
    protocol_version = "HTTP/1.1"

    def make_environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().make_environ()  # type: ignore[misc]
        stream = environ["wsgi.input"]
        if environ.pop("wsgi.input_terminated", False):  # chunked: werkzeug's DechunkedInput
            body = stream.read()
            environ.pop("HTTP_TRANSFER_ENCODING", None)
        else:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = stream.read(length) if length > 0 else b""
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return environ

    def run_wsgi(self) -> None:
        handler: Any = self
        if handler.headers.get("Expect", "").lower().strip() == "100-continue":
            handler.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        environ = handler.environ = self.make_environ()
        started: list[Any] = []
        chunks: list[bytes] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            started[:] = [status, headers]
            return chunks.append

        try:
            result = handler.server.app(environ, start_response)
            try:
                chunks.extend(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
        except (ConnectionError, TimeoutError):
            handler.close_connection = True
            return
        except Exception:
            handler.close_connection = True
            traceback.print_exc()
            started[:] = ["500 Internal Server Error", [("Content-Type", "text/plain")]]
            chunks[:] = [b"Internal Server Error"]
        status, headers = started
        code = int(status.split(" ", 1)[0])
        body = b"".join(chunks)
        handler.send_response(code, status.partition(" ")[2])
        head = handler.command == "HEAD"
        for name, value in headers:
            lower = name.lower()
            if lower in ("connection", "transfer-encoding") or (lower == "content-length" and not head):
                continue  # HEAD keeps the app's length (of the body it would send)
            handler.send_header(name, value)
        if not head and not (100 <= code < 200 or code in (204, 304)):
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if not head and body:
            handler.wfile.write(body)


class _MotoWSGIServer(TrackedThreadingMixIn, BaseWSGIServer):
    multithread = True
    thread_prefix = "stratoflow-dev-moto"
    request_queue_size = LISTEN_BACKLOG


class _MotoHandler(_KeepAlive, MotoRequestHandler):
    pass


class MotoServer:
    """moto in server mode on ``host:port`` (0: a free port, read ``port`` after ``start()``);
    see the module docstring for how it differs from ``moto.server.ThreadedMotoServer``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._server: _MotoWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        app = _OneAtATime(DomainDispatcherApplication(create_backend_app))
        # Bound here so a busy port raises OSError (werkzeug itself would print and sys.exit).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(LISTEN_BACKLOG)  # werkzeug does not listen again on a socket it is given
            self.port = sock.getsockname()[1]
            self._server = _MotoWSGIServer(self.host, self.port, app, handler=_MotoHandler, fd=sock.fileno())
        finally:
            sock.close()  # the server works on its own duplicate of the descriptor
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="stratoflow-dev-moto", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = STOP_TIMEOUT) -> list[threading.Thread]:
        server, self._server = self._server, None
        if server is None:
            return []
        if self._thread is not None:
            server.shutdown()
            self._thread.join()
            self._thread = None
        leftovers: list[threading.Thread] = server.close_connections(timeout)
        server.server_close()
        return leftovers

