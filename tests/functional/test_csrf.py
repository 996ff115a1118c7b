"""Cross-site requests: what a web page on another site can make the user's browser send.

* The ``stratoflow ui`` proxy signs what it forwards with the user's AWS credentials: it refuses
  (403, one line, nothing forwarded) a foreign ``Origin``, and a state-changing request with no
  Origin but a cross-site ``Sec-Fetch-Site``. Command-line clients send neither and pass.
* The API refuses a body of a POST/PUT/PATCH/DELETE that does not say ``Content-Type:
  application/json`` (415): a body with no content type needs no CORS preflight. Bodiless POSTs
  (cancel, retry, pause: the SDK and the UI send them without a content type) still work.
* A base64-encoded body (API Gateway's form of a body that is not UTF-8) is 400 "request body
  is not valid UTF-8", never a name full of U+FFFD.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from botocore.credentials import Credentials

from stratoflow.local.ui_proxy import SigningProxy, cross_site_refusal, is_own_origin, start_proxy


# -- the proxy ------------------------------------------------------------------------------------
class _Upstream(BaseHTTPRequestHandler):
    """Stands in for the API: records what reaches it and answers 200."""

    protocol_version = "HTTP/1.1"

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append((self.command, self.path, body))  # type: ignore[attr-defined]
        payload = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _record

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(upstream: ThreadingHTTPServer) -> Iterator[SigningProxy]:
    proxy, _ = start_proxy(f"http://127.0.0.1:{upstream.server_address[1]}", port=0,
                           credentials=Credentials("AKIDEXAMPLE", "secret"))
    yield proxy
    proxy.shutdown()
    proxy.server_close()


def send(proxy: SigningProxy, method: str, path: str, headers: dict[str, str] | None = None,
         body: bytes | None = None, conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes, str | None]:
    own = conn or http.client.HTTPConnection("127.0.0.1", proxy.server_address[1], timeout=10)
    try:
        own.request(method, path, body=body, headers=headers or {})
        response = own.getresponse()
        return response.status, response.read(), response.getheader("Connection")
    finally:
        if conn is None:
            own.close()


def seen(upstream: ThreadingHTTPServer) -> list[tuple[str, str, bytes]]:
    return list(upstream.seen)  # type: ignore[attr-defined]


JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize("origin", [
    "https://evil.example",
    "http://evil.example:4300",
    "null",  # sandboxed iframes, file: and data: pages
    "http://127.0.0.1:1",  # another local server (another port is another origin)
    "https://127.0.0.1:{port}",  # another scheme too
    "http://127.0.0.1.evil.example:{port}",
])
def test_a_foreign_origin_is_refused_and_not_forwarded(proxy: SigningProxy, upstream: ThreadingHTTPServer,
                                                       origin: str) -> None:
    origin = origin.format(port=proxy.server_address[1])
    status, body, connection = send(proxy, "POST", "/flow_runs/x/cancel", {"Origin": origin, **JSON}, b"{}")
    assert status == 403
    text = body.decode()
    assert text.count("\n") == 1 and "cross-origin request refused" in text and "Origin" in text
    assert connection == "close"
    assert seen(upstream) == []


def test_a_simple_cross_site_post_without_content_type_is_refused(proxy: SigningProxy,
                                                                  upstream: ThreadingHTTPServer) -> None:
    """What fetch(url, {method: "POST", mode: "no-cors", body: blob}) sends from another site."""
    status, _, _ = send(proxy, "POST", "/flow_runs", {"Origin": "https://evil.example",
                                                      "Sec-Fetch-Site": "cross-site"}, b'{"flow_name": "x"}')
    assert status == 403 and seen(upstream) == []


def test_a_foreign_origin_is_refused_on_a_get_too(proxy: SigningProxy, upstream: ThreadingHTTPServer) -> None:
    assert send(proxy, "GET", "/flow_runs/x", {"Origin": "https://evil.example"})[0] == 403
    assert seen(upstream) == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_the_proxys_own_origin_is_forwarded(proxy: SigningProxy, upstream: ThreadingHTTPServer, host: str) -> None:
    """The UI's own fetches: Chromium sends Origin on a same-origin POST."""
    origin = f"http://{host}:{proxy.server_address[1]}"
    status, body, _ = send(proxy, "POST", "/flow_runs/filter",
                           {"Origin": origin, "Sec-Fetch-Site": "same-origin", "Host": origin[7:], **JSON}, b"{}")
    assert status == 200 and json.loads(body) == {"ok": True}
    assert seen(upstream) == [("POST", "/flow_runs/filter", b"{}")]


@pytest.mark.parametrize("site", ["cross-site", "same-site", "CROSS-SITE"])
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_a_state_changing_request_from_another_site_without_origin_is_refused(
        proxy: SigningProxy, upstream: ThreadingHTTPServer, method: str, site: str) -> None:
    status, body, _ = send(proxy, method, "/flow_runs/x", {"Sec-Fetch-Site": site})
    assert status == 403 and b"Sec-Fetch-Site" in body
    assert seen(upstream) == []


@pytest.mark.parametrize(("method", "headers"), [
    ("POST", {}),  # the SDK, curl: neither Origin nor Sec-Fetch-Site
    ("POST", {"Sec-Fetch-Site": "same-origin"}),
    ("POST", {"Sec-Fetch-Site": "none"}),  # typed in / a bookmark
    ("GET", {"Sec-Fetch-Site": "cross-site"}),  # a link from another site to the UI: a read
])
def test_requests_a_page_elsewhere_cannot_forge_are_forwarded(proxy: SigningProxy, upstream: ThreadingHTTPServer,
                                                              method: str, headers: dict[str, str]) -> None:
    assert send(proxy, method, "/flow_runs/x/cancel", headers)[0] == 200
    assert [s[:2] for s in seen(upstream)] == [(method, "/flow_runs/x/cancel")]


def test_a_refused_request_with_a_body_does_not_corrupt_the_connection(proxy: SigningProxy,
                                                                       upstream: ThreadingHTTPServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.server_address[1], timeout=10)
    try:
        body = b"GET /smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        assert send(proxy, "POST", "/x", {"Origin": "https://evil.example"}, body, conn=conn)[0] == 403
    finally:
        conn.close()
    assert seen(upstream) == []


def test_origin_rules() -> None:
    assert is_own_origin("http://127.0.0.1:4300", 4300)
    assert is_own_origin("http://localhost:4300", 4300)
    assert is_own_origin("http://[::1]:4300", 4300)
    assert is_own_origin("http://devbox:4200", 4200, ("devbox",))  # the address it listens on
    assert is_own_origin("http://localhost", 80)
    for origin in ("http://localhost:4301", "https://localhost:4300", "http://localhost", "null", "",
                   "http://evil.example:4300", "http://localhost:4300/path", "http://user@localhost:4300",
                   "http://localhost:99999"):
        assert not is_own_origin(origin, 4300), origin

    def own(origin: str) -> bool:
        return is_own_origin(origin, 4300)

    assert cross_site_refusal("POST", {}, own) is None
    assert cross_site_refusal("POST", {"Origin": "http://localhost:4300"}, own) is None
    assert cross_site_refusal("GET", {"Sec-Fetch-Site": "cross-site"}, own) is None
    assert cross_site_refusal("HEAD", {"Origin": "https://evil.example"}, own) is not None
    assert cross_site_refusal("DELETE", {"Sec-Fetch-Site": "same-site"}, own) is not None


# -- the API: content type and encoding of bodies -------------------------------------------------
class _Context:
    function_name = "stratoflow-api"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:stratoflow-api"
    aws_request_id = "csrf-test"


_CONTEXT: Any = _Context()  # what Lambda passes, duck-typed


def api_event(method: str, path: str, body: str | None = None, content_type: str | None = "application/json",
              base64_encoded: bool = False) -> dict[str, Any]:
    headers = {"host": "abc.execute-api.us-east-1.amazonaws.com"}
    if content_type is not None:
        headers["content-type"] = content_type
    event: dict[str, Any] = {
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "", "headers": headers,
        "requestContext": {"http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1",
                                    "userAgent": "pytest"}, "requestId": uuid.uuid4().hex, "routeKey": "$default",
                           "stage": "$default", "timeEpoch": int(datetime.now(UTC).timestamp() * 1000)},
        "isBase64Encoded": base64_encoded,
    }
    if body is not None:
        event["body"] = body
    return event


def call(event: dict[str, Any]) -> tuple[int, Any]:
    from stratoflow.api.app import get_app

    raw = get_app().resolve(event, _CONTEXT)
    return raw["statusCode"], json.loads(raw["body"]) if raw.get("body") else None


in_process_api = pytest.mark.store_only("calls the API app in this process, on the test's embedded store")


@in_process_api
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_a_body_without_a_content_type_is_415_naming_the_header(method: str) -> None:
    status, reply = call(api_event(method, "/flow_runs", '{"flow_name": "csrf"}', content_type=None))
    assert status == 415
    assert "Content-Type: application/json" in reply["error"] and "\n" not in reply["error"]
    status, runs = call(api_event("POST", "/flow_runs/filter", '{"flow_name": "csrf"}'))
    assert status == 200 and runs == []  # nothing was created


@in_process_api
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/jsonp", ""])
def test_a_body_of_another_content_type_is_415(content_type: str) -> None:
    status, reply = call(api_event("POST", "/flow_runs", '{"flow_name": "csrf"}', content_type=content_type))
    assert status == 415 and "Content-Type" in reply["error"]


@in_process_api
@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8"])
def test_a_json_body_is_accepted(content_type: str) -> None:
    status, run = call(api_event("POST", "/flow_runs", '{"flow_name": "csrf"}', content_type=content_type))
    assert status == 201 and run["flow_name"] == "csrf"


@in_process_api
def test_bodiless_posts_need_no_content_type() -> None:
    """The SDK (``_http``) and the UI (``api.js``) send cancel/retry/pause/resume without a body
    and without a content type."""
    status, run = call(api_event("POST", "/flow_runs", '{"flow_name": "csrf"}'))
    assert status == 201
    status, cancelled = call(api_event("POST", f"/flow_runs/{run['id']}/cancel", content_type=None))
    assert status == 200 and cancelled["state"]["type"] == "CANCELLED"
    status, runs = call(api_event("POST", "/flow_runs/filter", content_type=None))
    assert status == 200 and run["id"] in [r["id"] for r in runs]


@in_process_api
def test_a_base64_body_that_is_not_utf8_is_400() -> None:
    """API Gateway base64-encodes a body that is not UTF-8 (isBase64Encoded true)."""
    body = base64.b64encode(b'{"flow_name": "caf\xe9"}').decode()  # Latin-1, not UTF-8
    status, reply = call(api_event("POST", "/flow_runs", body, base64_encoded=True))
    assert status == 400 and reply["error"] == "request body is not valid UTF-8"
    status, runs = call(api_event("POST", "/flow_runs/filter", "{}"))
    assert status == 200 and runs == []


@in_process_api
def test_a_base64_body_that_is_utf8_is_decoded() -> None:
    body = base64.b64encode('{"flow_name": "café"}'.encode()).decode()
    status, run = call(api_event("POST", "/flow_runs", body, base64_encoded=True))
    assert status == 201 and run["flow_name"] == "café"


@in_process_api
def test_a_body_that_is_not_base64_is_400() -> None:
    status, reply = call(api_event("POST", "/flow_runs", "not base64!", base64_encoded=True))
    assert status == 400 and reply["error"] == "request body is not valid base64"


def test_the_sdk_sends_a_content_type_with_every_body(monkeypatch: pytest.MonkeyPatch) -> None:
    """What makes 415-without-a-content-type safe for the SDK's own requests."""
    from stratoflow._http import HttpTransport

    sent: list[tuple[str, dict[str, str], bytes | None]] = []

    class Conn:
        sock = None

        def request(self, method: str, target: str, body: bytes | None = None,
                    headers: dict[str, str] | None = None) -> None:
            sent.append((method, dict(headers or {}), body))

        def getresponse(self) -> Any:
            class Response:
                status = 200

                def read(self) -> bytes:
                    return b"{}"

                def getheader(self, name: str, default: str = "") -> str:
                    return default

                def getheaders(self) -> list[tuple[str, str]]:
                    return []

            return Response()

    transport = HttpTransport("http://127.0.0.1:1", sign=False)
    monkeypatch.setattr(transport, "_connection", lambda: Conn())
    transport.request("POST", "/flow_runs", json_body={"flow_name": "x"})
    transport.request("POST", "/flow_runs/x/cancel")
    (_, with_body, body), (_, without, none) = sent
    assert body and with_body["Content-Type"] == "application/json"
    assert none is None and "Content-Type" not in without
