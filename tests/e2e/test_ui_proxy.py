"""``stratoflow ui``: the local proxy forwards every request to the API, signed with SigV4."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from _e2e_support import StackClient
from botocore.credentials import Credentials

from stratoflow.local.ui_proxy import start_proxy


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]]

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append({"method": self.command, "path": self.path,  # type: ignore[attr-defined]
                                 "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
        payload = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("x-next-cursor", "abc")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _record

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[HTTPServer]:
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_requests_are_forwarded_signed_with_the_stage_path(recorder: HTTPServer) -> None:
    api = f"http://127.0.0.1:{recorder.server_address[1]}/prod"
    proxy, _ = start_proxy(api, port=0, region="eu-west-1", credentials=Credentials("AKIDEXAMPLE", "secret"))
    try:
        with urllib.request.urlopen(f"{proxy.address}/ui/app.js?v=1", timeout=10) as response:
            assert response.status == 200 and response.headers["x-next-cursor"] == "abc"
        request = urllib.request.Request(f"{proxy.address}/flow_runs/filter", data=b'{"limit": 5}', method="POST",
                                         headers={"Content-Type": "application/json", "Cookie": "secret=1"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read()) == {"ok": True}
        # A page on another origin reaching the proxy by a rebound name is refused, not forwarded.
        refused = urllib.request.Request(f"{proxy.address}/flow_runs/x", headers={"Host": "evil.example"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(refused, timeout=10)
        assert info.value.code == 403
    finally:
        proxy.shutdown()
        proxy.server_close()

    seen = recorder.seen  # type: ignore[attr-defined]
    assert [(s["method"], s["path"]) for s in seen] == [("GET", "/prod/ui/app.js?v=1"),
                                                        ("POST", "/prod/flow_runs/filter")]
    for s in seen:
        auth = s["headers"]["authorization"]
        assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
        assert "/eu-west-1/execute-api/aws4_request" in auth and "SignedHeaders=" in auth
        assert "x-amz-date" in s["headers"]
        assert s["headers"]["host"] == f"127.0.0.1:{recorder.server_address[1]}"
    assert seen[1]["body"] == b'{"limit": 5}' and "cookie" not in seen[1]["headers"]


def test_the_ui_works_through_the_proxy(ui_stack: StackClient, page: Any) -> None:
    proxy, _ = start_proxy(ui_stack.api_url, port=0, credentials=Credentials("AKIDEXAMPLE", "secret"))
    try:
        page.goto(f"{proxy.address}/ui/#/runs")
        page.wait_for_selector("#runs-table, .empty")
        assert page.locator(".banner-error").count() == 0
        page.goto(f"{proxy.address}/ui/#/")
        page.wait_for_selector("#state-counts")
    finally:
        proxy.shutdown()
        proxy.server_close()
