"""The API's routes are split into one Powertools ``Router`` per noun (``stratoflow.api.routes``):
every operation of the OpenAPI document is held by exactly one of them, carries its module's tag,
and no router brings exception handlers of its own (``include_router`` would make them app-wide;
the error map is ``stratoflow.api.app``'s)."""

from __future__ import annotations

import re
from types import ModuleType
from typing import Any

import pytest

from stratoflow.api import app as api_app
from stratoflow.api.routes import (
    concurrency_limits,
    deployments,
    engine,
    flow_runs,
    flows,
    health,
    logs,
    task_runs,
    ui,
    work_pools,
)

# How many operations of the document each module holds.
OPERATIONS = {health: 1, engine: 6, flow_runs: 10, task_runs: 5, logs: 2, flows: 2, deployments: 6, work_pools: 10,
              concurrency_limits: 6, ui: 2}
# Routes left out of the document on purpose: the web UI's files.
UNDOCUMENTED = {("GET", "/ui"), ("GET", "/ui/"), ("GET", "/ui/{name}")}


def _routes(module: ModuleType) -> set[tuple[str, str]]:
    """(method, path) of each route of the module's router, the path as the document writes it."""
    # Router keeps what include_router copies in ``_routes``: (rule, methods, ...) -> function.
    out = set()
    for key in module.router._routes:
        rule, methods = key[0], key[1]
        out |= {(m.upper(), re.sub(r"<(\w+)>", r"{\1}", rule)) for m in methods}
    return out


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    schema = api_app.build_app().get_openapi_schema()
    return schema.model_dump(mode="json", by_alias=True, exclude_none=True)


def test_every_module_is_included() -> None:
    assert [m.router for m in OPERATIONS] == list(api_app.ROUTERS)


def test_every_operation_is_in_exactly_one_module_with_its_tag(document: dict[str, Any]) -> None:
    held = {module: _routes(module) for module in OPERATIONS}
    found: dict[ModuleType, int] = dict.fromkeys(OPERATIONS, 0)
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            owners = [module for module, routes in held.items() if (method.upper(), path) in routes]
            assert len(owners) == 1, f"{method.upper()} {path} is in {[m.__name__ for m in owners]}"
            assert operation["tags"] == [owners[0].TAG], f"{method.upper()} {path}"
            found[owners[0]] += 1
    assert {m.__name__: n for m, n in found.items()} == {m.__name__: n for m, n in OPERATIONS.items()}


def test_every_route_is_documented_unless_it_serves_ui_files(document: dict[str, Any]) -> None:
    documented = {(method.upper(), path) for path, operations in document["paths"].items() for method in operations}
    routes = set().union(*(_routes(module) for module in OPERATIONS))
    assert routes - documented == UNDOCUMENTED
    assert documented <= routes


def test_no_router_has_exception_handlers() -> None:
    assert {m.__name__: m.router._exception_handlers for m in OPERATIONS if m.router._exception_handlers} == {}


def _get(path: str, headers: dict[str, str]) -> dict[str, Any]:
    """A GET as API Gateway's HTTP API (payload 2.0) delivers it."""
    return {"version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "", "headers": headers,
            "requestContext": {"requestId": "r", "routeKey": "$default", "stage": "$default",
                               "http": {"method": "GET", "path": path, "protocol": "HTTP/1.1",
                                        "sourceIp": "127.0.0.1", "userAgent": "pytest"}},
            "isBase64Encoded": False}


def test_two_apps_share_the_routers_and_each_sees_its_request() -> None:
    """The sandbox gateway builds an app beside ``get_app``'s, including the same routers; a router
    refers to the last app that included it, yet a route reading the request's headers (the UI's
    ETag) sees the request of whichever app resolves it."""
    first = api_app.build_app()
    etag = first.resolve(_get("/ui/", {}), None)["headers"]["ETag"]
    second = api_app.build_app()
    for app in (first, second, first):
        assert app.resolve(_get("/ui/", {"if-none-match": etag}), None)["statusCode"] == 304
        assert app.resolve(_get("/ui/", {"if-none-match": '"other"'}), None)["statusCode"] == 200
    assert second.resolve(_get("/health", {}), None)["statusCode"] == 200
