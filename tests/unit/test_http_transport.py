"""The HTTP transport against a tiny local server: retries, Retry-After, 4xx mapping, signing."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from stratoflow._http import ApiConflict, ApiError, ApiUnavailable, HttpTransport
from stratoflow.exceptions import ObjectNotFound, StratoflowError, TransitionRefused

Reply = tuple[int, dict[str, str], Any]


class Server:
    """Answers each request with the next scripted reply (the last one repeats); records requests."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.requests: list[dict[str, Any]] = []
        self.times: list[float] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server.requests.append({"method": self.command, "path": self.path,
                                        "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                server.times.append(time.monotonic())
                index = min(len(server.requests) - 1, len(server.replies) - 1)
                status, headers, payload = server.replies[index]
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.stop()


@pytest.fixture
def transport(server: Server) -> Callable[..., HttpTransport]:
    def make(**kwargs: Any) -> HttpTransport:
        kwargs.setdefault("sign", False)
        kwargs.setdefault("backoff_base", 0.001)
        return HttpTransport(server.url, **kwargs)

    return make


def test_retries_on_503_then_succeeds(server: Server, transport: Callable[..., HttpTransport]) -> None:
    server.replies = [(503, {}, {"error": "busy"}), (503, {}, {"error": "busy"}), (200, {}, {"ok": True})]
    assert transport().request("POST", "/things", json_body={"a": 1}) == {"ok": True}
    assert len(server.requests) == 3
    assert all(json.loads(r["body"]) == {"a": 1} for r in server.requests)
    assert server.requests[0]["headers"]["content-type"] == "application/json"


@pytest.mark.parametrize("status", [429, 502, 504])
def test_retries_other_transient_statuses(server: Server, transport: Callable[..., HttpTransport],
                                          status: int) -> None:
    server.replies = [(status, {}, {"error": "again"}), (200, {}, [1])]
    assert transport().request("GET", "/x") == [1]


def test_gives_up_after_bounded_attempts(server: Server, transport: Callable[..., HttpTransport]) -> None:
    server.replies = [(503, {}, {"error": "down for maintenance"})]
    with pytest.raises(ApiUnavailable, match=r"3 attempts.*down for maintenance"):
        transport(max_attempts=3).request("GET", "/x")
    assert len(server.requests) == 3


def test_honours_retry_after(server: Server, transport: Callable[..., HttpTransport]) -> None:
    server.replies = [(429, {"Retry-After": "0.3"}, {"error": "slow down"}), (200, {}, {"ok": 1})]
    assert transport(backoff_base=0.0).request("GET", "/x") == {"ok": 1}
    assert server.times[1] - server.times[0] >= 0.28


def test_connection_errors_are_retried() -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = HttpTransport(f"http://127.0.0.1:{port}", sign=False, max_attempts=2, backoff_base=0.001)
    with pytest.raises(ApiUnavailable, match=r"2 attempts.*ConnectionRefused"):
        t.request("GET", "/x")


def test_404_is_object_not_found(server: Server, transport: Callable[..., HttpTransport]) -> None:
    server.replies = [(404, {}, {"error": "flow run 'abc' not found", "kind": "flow run", "id": "abc"})]
    with pytest.raises(ObjectNotFound) as info:
        transport().request("GET", "/flow_runs/abc")
    assert info.value.kind == "flow run" and info.value.key == "abc"
    assert len(server.requests) == 1  # 4xx is not retried


def test_404_without_details_keeps_the_message(server: Server, transport: Callable[..., HttpTransport]) -> None:
    server.replies = [(404, {}, {"error": "no route for GET /nope"})]
    with pytest.raises(ObjectNotFound, match="no route for GET /nope"):
        transport().request("GET", "/nope")


def test_409_abort_is_transition_refused(server: Server, transport: Callable[..., HttpTransport]) -> None:
    server.replies = [(409, {}, {"error": "HandleFlowTerminalStateTransitions: already final", "status": "ABORT",
                                 "rule": "HandleFlowTerminalStateTransitions", "reason": "already final",
                                 "state": None})]
    with pytest.raises(TransitionRefused) as info:
        transport().request("POST", "/flow_runs/a/set_state", json_body={})
    assert info.value.result.rule == "HandleFlowTerminalStateTransitions"
    assert info.value.result.reason == "already final"
    assert "already final" in str(info.value)


def test_409_other_conflict_carries_the_body(server: Server, transport: Callable[..., HttpTransport]) -> None:
    server.replies = [(409, {}, {"error": "run changed concurrently", "current": {"id": "r"}})]
    with pytest.raises(ApiConflict) as info:
        transport().request("POST", "/runs/flow/r/commit", json_body={})
    assert info.value.body["current"] == {"id": "r"}
    assert isinstance(info.value, StratoflowError)


@pytest.mark.parametrize("status", [400, 413, 422])
def test_client_errors_carry_the_servers_line(server: Server, transport: Callable[..., HttpTransport],
                                               status: int) -> None:
    server.replies = [(status, {}, {"error": "body.limit: Input should be a valid integer", "errors": []})]
    with pytest.raises(ApiError) as info:
        transport().request("POST", "/x", json_body={"limit": "x"})
    assert info.value.status == status
    assert info.value.message == "body.limit: Input should be a valid integer"
    assert len(server.requests) == 1


def test_requests_are_signed_when_credentials_exist(server: Server, transport: Callable[..., HttpTransport]) -> None:
    from botocore.credentials import Credentials

    server.replies = [(200, {}, {"ok": True})]
    t = transport(sign=True, credentials=Credentials("AKIDEXAMPLE", "secret", "token"), region="eu-west-1")
    t.request("POST", "/flow_runs/filter", json_body={"limit": 1}, query={"a": "b c"})
    headers = server.requests[0]["headers"]
    auth = headers["authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/execute-api/aws4_request" in auth
    assert "x-amz-date" in headers and headers["x-amz-security-token"] == "token"
    assert server.requests[0]["path"] == "/flow_runs/filter?a=b+c"


def test_unsigned_without_credentials(server: Server, transport: Callable[..., HttpTransport],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import botocore.session

    class NoCredentials:
        def get_credentials(self) -> None:
            return None

    monkeypatch.setattr(botocore.session, "get_session", lambda: NoCredentials())
    server.replies = [(200, {}, {"ok": True})]
    transport(sign=True).request("GET", "/health")
    assert "authorization" not in server.requests[0]["headers"]


def test_keeps_the_connection_alive(server: Server, transport: Callable[..., HttpTransport]) -> None:
    server.replies = [(200, {}, {"ok": True})]
    t = transport()
    t.request("GET", "/a")
    conn = t._connection()
    t.request("GET", "/b")
    assert t._connection() is conn
