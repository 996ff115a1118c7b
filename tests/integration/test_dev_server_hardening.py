"""``stratoflow dev`` (and the ``stratoflow ui`` proxy) against what a browser or a burst of
clients sends: cross-site requests refused (CSRF), a listen backlog that holds a burst of
connections, a body that is not UTF-8 answered 400 instead of reaching the store as U+FFFD."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.credentials import Credentials

from stratoflow.local.api_gateway import build_http_api_event
from stratoflow.local.ui_proxy import SigningProxy, start_proxy

BURST = 64
BURST_TIMEOUT = 10.0  # seconds for each connection; with a backlog of 5 some took 14-31 s (SYN retries)


def _burst(host: str, port: int, path: str, n: int = BURST) -> list[str]:
    """Open ``n`` connections at once (a barrier releases every connect together), send one GET
    on each and return each status line, or the error that connection got."""
    barrier = threading.Barrier(n)
    results: list[str] = [""] * n

    def one(i: int) -> None:
        try:
            barrier.wait(10)
            with socket.create_connection((host, port), timeout=BURST_TIMEOUT) as sock:
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
            results[i] = data.split(b"\r\n", 1)[0].decode()
        except (OSError, threading.BrokenBarrierError) as exc:
            results[i] = f"{type(exc).__name__}: {exc}"

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    return parts.hostname, parts.port


# -- listen backlog -------------------------------------------------------------------------------
def test_a_burst_of_64_connections_is_served_without_resets(dev_stack: Any) -> None:
    host, port = _address(dev_stack.api_url)
    started = time.monotonic()
    results = _burst(host, port, "/health")
    failed = [r for r in results if not r.startswith("HTTP/1.1 200")]
    assert failed == [], f"{len(failed)} of {BURST} connections failed: {sorted(set(failed))}"
    assert time.monotonic() - started < BURST_TIMEOUT


def test_the_ui_proxy_serves_a_burst_too(dev_stack: Any) -> None:
    proxy, _ = start_proxy(dev_stack.api_url, port=0, credentials=Credentials("AKIDEXAMPLE", "secret"))
    try:
        host, port = _address(proxy.address)
        results = _burst(host, port, "/health")
    finally:
        proxy.shutdown()
        proxy.server_close()
    failed = [r for r in results if not r.startswith("HTTP/1.1 200")]
    assert failed == [], f"{len(failed)} of {BURST} connections failed: {sorted(set(failed))}"


# -- cross-site requests (CSRF) -------------------------------------------------------------------
def _runs_of(dev_stack: Any, flow_name: str) -> list[dict[str, Any]]:
    response = dev_stack.request("POST", "/flow_runs/filter", headers={"Content-Type": "application/json"},
                                 body=json.dumps({"flow_name": flow_name}).encode())
    assert response.status == 200, response.body
    runs: list[dict[str, Any]] = response.json()
    return runs


@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example"},
    {"Origin": "https://evil.example", "Content-Type": "application/json"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},  # no Origin, but a browser says the request comes from another site
])
def test_a_cross_site_post_is_refused_and_changes_nothing(dev_stack: Any, headers: dict[str, str]) -> None:
    response = dev_stack.request("POST", "/flow_runs", headers=headers, body=b'{"flow_name": "csrf-dev"}')
    assert response.status == 403
    message = response.json()["message"]
    assert message.startswith("stratoflow dev: cross-") and "\n" not in message
    assert _runs_of(dev_stack, "csrf-dev") == []


def test_a_cross_origin_read_is_refused(dev_stack: Any) -> None:
    assert dev_stack.request("GET", "/flow_runs/x", headers={"Origin": "https://evil.example"}).status == 403


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_the_servers_own_origin_is_served(dev_stack: Any, host: str) -> None:
    """What the UI's own fetches send (Chromium adds Origin to a same-origin POST)."""
    port = _address(dev_stack.api_url)[1]
    origin = f"http://{host}:{port}"
    flow_name = f"own-origin-{host}"
    response = dev_stack.request("POST", "/flow_runs", headers={
        "Origin": origin, "Sec-Fetch-Site": "same-origin", "Content-Type": "application/json"},
        body=json.dumps({"flow_name": flow_name}).encode())
    assert response.status == 201, response.body
    run = response.json()
    cancel = dev_stack.request("POST", f"/flow_runs/{run['id']}/cancel", headers={"Origin": origin})  # no body
    assert cancel.status == 200 and cancel.json()["state"]["type"] == "CANCELLED"


def test_clients_without_origin_and_the_ui_page_are_served(dev_stack: Any) -> None:
    assert dev_stack.request("GET", "/ui/", headers={"Sec-Fetch-Site": "none"}).status == 200
    assert dev_stack.request("GET", "/health", headers={"Sec-Fetch-Site": "cross-site"}).status == 200
    response = dev_stack.request("POST", "/flow_runs", headers={"Content-Type": "application/json"},
                                 body=b'{"flow_name": "no-origin"}')
    assert response.status == 201


def test_a_body_without_content_type_is_415_through_the_dev_server(dev_stack: Any) -> None:
    response = dev_stack.request("POST", "/flow_runs", body=b'{"flow_name": "no-content-type"}')
    assert response.status == 415 and "Content-Type" in response.json()["error"]
    assert _runs_of(dev_stack, "no-content-type") == []


@pytest.mark.parametrize("method", ["TRACE", "QUERY"])
def test_a_method_the_api_has_no_route_for_is_its_404_not_a_501(dev_stack: Any, method: str) -> None:
    """http.server answered methods without a ``do_`` handler 501, a server error (schemathesis)."""
    response = dev_stack.request(method, "/health")
    assert response.status == 404 and response.json()["error"] == f"no route for {method} /health"
    assert dev_stack.request("get", "/health").status == 501  # not a method name: the resolver would upper-case it


# -- bodies that are not UTF-8 --------------------------------------------------------------------
def test_a_json_body_that_is_not_utf8_reaches_the_function_base64_encoded() -> None:
    """As API Gateway: a "text" body that is not UTF-8 is base64-encoded, not decoded with U+FFFD."""
    body = b'{"flow_name": "caf\xe9"}'
    event = build_http_api_event(method="POST", target="/flow_runs", headers=[("Content-Type", "application/json")],
                                 body=body, source_ip="127.0.0.1", server_port=4200, request_id="r")
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == body
    text = build_http_api_event(method="POST", target="/flow_runs", headers=[("Content-Type", "application/json")],
                                body='{"flow_name": "café"}'.encode(), source_ip="127.0.0.1", server_port=4200,
                                request_id="r")
    assert text["isBase64Encoded"] is False and text["body"] == '{"flow_name": "café"}'


def test_a_body_that_is_not_utf8_is_400_through_the_dev_server(dev_stack: Any) -> None:
    response = dev_stack.request("POST", "/flow_runs", headers={"Content-Type": "application/json"},
                                 body=b'{"flow_name": "caf\xe9-latin1"}')
    assert response.status == 400, response.body
    assert response.json()["error"] == "request body is not valid UTF-8"
    names = [r["flow_name"] for r in _runs_of(dev_stack, "caf\ufffd-latin1")]
    assert names == []


@pytest.fixture
def proxy_to(dev_stack: Any) -> Iterator[SigningProxy]:
    proxy, _ = start_proxy(dev_stack.api_url, port=0, credentials=Credentials("AKIDEXAMPLE", "secret"))
    yield proxy
    proxy.shutdown()
    proxy.server_close()


def test_the_proxy_refuses_a_foreign_origin_before_the_dev_server(proxy_to: SigningProxy, dev_stack: Any) -> None:
    import http.client

    host, port = _address(proxy_to.address)
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("POST", "/flow_runs", body=b'{"flow_name": "via-proxy"}',
                     headers={"Origin": "https://evil.example", "Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 403 and b"cross-origin request refused" in response.read()
    finally:
        conn.close()
    assert _runs_of(dev_stack, "via-proxy") == []
