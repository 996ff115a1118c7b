"""How the stack serves the UI (content types, ETag/304, gzip, 404 for anything that is not an
asset) and the dashboard, runs list and work pools pages against what the API says."""

from __future__ import annotations

import gzip
import http.client
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
from _e2e_support import StackClient

from stratoflow.ui import asset_names, etag_matches, load_asset


def _get(stack: StackClient, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(stack.api_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_assets_have_types_etags_gzip_and_unknown_paths_are_404(ui_stack: StackClient) -> None:
    status, headers, _ = _get(ui_stack, "/ui")
    assert status == 308 and headers["location"] == "ui/"
    status, headers, body = _get(ui_stack, "/ui/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'<script type="module" src="app.js">' in body
    etag = headers["etag"]
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["cache-control"] == "private, no-cache"
    status, headers, body = _get(ui_stack, "/ui/", {"If-None-Match": etag})
    assert status == 304 and body == b"" and headers["etag"] == etag

    names = asset_names()
    assert {"index.html", "app.js", "style.css", "favicon.svg"} <= set(names)
    for name in names:
        asset = load_asset(name)
        assert asset is not None
        status, headers, body = _get(ui_stack, f"/ui/{name}", {"Accept-Encoding": "gzip"})
        assert status == 200, name
        assert headers["content-type"] == asset.content_type
        if headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        assert body == asset.data, name
    status, headers, _ = _get(ui_stack, "/ui/app.js", {"Accept-Encoding": "gzip, br"})
    assert headers["content-encoding"] == "gzip" and headers["content-type"].startswith("text/javascript")

    for path in ("/ui/nope.js", "/ui/..%2F..%2Fpyproject.toml", "/ui/%2e%2e/app.py", "/ui/.hidden.js",
                 "/ui/__init__.py", "/ui/static", "/ui/api"):
        status, headers, body = _get(ui_stack, path)
        assert status == 404, (path, status, body[:200])
        assert headers["content-type"] == "application/json"


def test_asset_names_and_etags() -> None:
    assert load_asset("../__init__.py") is None and load_asset("index.html.bak") is None
    asset = load_asset("index.html")
    assert asset is not None and asset.is_text
    assert etag_matches(asset.etag, asset.etag) and etag_matches(f'W/{asset.etag}, "x"', asset.etag)
    assert etag_matches("*", asset.etag) and not etag_matches('"other"', asset.etag) and not etag_matches(None, "x")


def test_dashboard_counts_match_the_api_and_pools_pause(over_stack: StackClient, page: Any) -> None:
    flow_name = f"ui-dash-{uuid.uuid4().hex[:8]}"
    for state in ("COMPLETED", "COMPLETED", "FAILED"):
        over_stack.ok("POST", "/flow_runs", {"flow_name": flow_name, "state": {"type": state}})
    data = over_stack.ok("GET", "/ui/api/dashboard?hours=1")
    assert data["counts"]["COMPLETED"] >= 2 and data["counts"]["FAILED"] >= 1
    assert sum(sum(b["counts"].values()) for b in data["buckets"]) == data["total"]

    page.goto(f"{over_stack.ui_url}#/?hours=1")
    page.wait_for_selector("#state-counts")
    for state in ("COMPLETED", "FAILED"):
        shown = page.get_attribute(f"#state-counts [data-state-type={state}] .n", "data-count")
        assert int(shown or -1) == data["counts"][state]
    assert page.locator(".chart rect.bar.state-FAILED").count() >= 1

    # The runs list filtered by state (the dashboard's card links there).
    page.click("#state-counts [data-state-type=FAILED] a")
    page.wait_for_selector("#runs-table")
    states = page.locator("#runs-table tbody .badge").evaluate_all("els => els.map(e => e.dataset.stateType)")
    assert states and set(states) == {"FAILED"}
    assert "state=FAILED" in page.url
    page.fill("#filter-flow", flow_name)
    page.press("#filter-flow", "Enter")
    page.wait_for_function("() => document.querySelectorAll('#runs-table tbody tr').length === 1")
    assert f"flow={flow_name}" in page.url

    pool = f"ui-pool-{uuid.uuid4().hex[:6]}"
    over_stack.ok("POST", "/work_pools", {"name": pool})
    status, _, _ = over_stack.call("POST", f"/work_pools/{pool}/queues", {"name": "urgent", "priority": 1})
    assert status in (201, 409)  # 409: the pool came with that queue already
    page.goto(f"{over_stack.ui_url}#/pools")
    card = page.locator(f"section.pool[data-pool='{pool}']")
    card.wait_for()
    assert card.get_attribute("data-paused") == "false"
    card.locator("[data-action=pause]").click()
    page.wait_for_selector(f"section.pool[data-pool='{pool}'][data-paused=true]")
    assert over_stack.ok("GET", f"/work_pools/{pool}")["paused"] is True
    page.locator(f"section.pool[data-pool='{pool}'] tr[data-queue=urgent]").wait_for()


@pytest.mark.parametrize("hours", [0, 1000])
def test_dashboard_window_is_bounded(ui_stack: StackClient, hours: int) -> None:
    status, body, _ = ui_stack.call("GET", f"/ui/api/dashboard?hours={hours}")
    assert status == 422 and "hours" in body["error"]
