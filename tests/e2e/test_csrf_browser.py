"""Cross-site request forgery in a real browser: a page on another origin makes Chromium POST a
JSON body with no content type (``mode: "no-cors"``, a Blob without a type: a "simple" request,
no CORS preflight) to ``stratoflow dev`` and to the ``stratoflow ui`` proxy. Both refuse it (403)
and no run is created; before, the run was created (and through the proxy, signed with the
user's credentials)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from _e2e_support import StackClient
from botocore.credentials import Credentials

from stratoflow.local.ui_proxy import start_proxy

_ATTACK = """async ({url, body}) => {
  try {
    await fetch(url, {method: "POST", mode: "no-cors", body: new Blob([body])});
    return "sent";
  } catch (err) {
    return `failed: ${err}`;
  }
}"""


class _AttackerPage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        payload = b"<!doctype html><title>another site</title><p>nothing to see</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def attacker_origin() -> Iterator[str]:
    """Another origin on this machine (another port): the page a user might have open."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AttackerPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _forge(page: Any, attacker_origin: str, url: str, flow_name: str) -> int:
    """POST from the attacker's page; returns the status the browser saw on the wire."""
    page.goto(f"{attacker_origin}/")
    with page.expect_response(lambda r: r.url == url and r.request.method == "POST") as answer:
        assert page.evaluate(_ATTACK, {"url": url, "body": f'{{"flow_name": "{flow_name}"}}'}) == "sent"
    status: int = answer.value.status
    return status


def _runs(stack: StackClient, flow_name: str) -> list[Any]:
    runs: list[Any] = stack.ok("POST", "/flow_runs/filter", {"flow_name": flow_name})
    return runs


def test_a_page_on_another_origin_cannot_post_to_the_dev_server(ui_stack: StackClient, page: Any,
                                                                  attacker_origin: str) -> None:
    flow_name = f"csrf-{uuid.uuid4().hex[:8]}"
    assert _forge(page, attacker_origin, f"{ui_stack.api_url}/flow_runs", flow_name) == 403
    assert _runs(ui_stack, flow_name) == []


def test_a_page_on_another_origin_cannot_post_through_the_ui_proxy(ui_stack: StackClient, page: Any,
                                                                    attacker_origin: str) -> None:
    proxy, _ = start_proxy(ui_stack.api_url, port=0, credentials=Credentials("AKIDEXAMPLE", "secret"))
    forwarded: list[str] = []
    forward = proxy.forward
    proxy.forward = lambda method, path, *rest: forwarded.append(path) or forward(method, path, *rest)  # type: ignore[method-assign]
    try:
        flow_name = f"csrf-{uuid.uuid4().hex[:8]}"
        assert _forge(page, attacker_origin, f"{proxy.address}/flow_runs", flow_name) == 403
        assert forwarded == []
        # The UI's own page on the proxy still posts (Chromium sends the proxy's origin).
        page.goto(f"{proxy.address}/ui/#/runs")
        page.wait_for_selector("#runs-table, .empty")
        assert "/flow_runs/filter" in forwarded
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert _runs(ui_stack, flow_name) == []
