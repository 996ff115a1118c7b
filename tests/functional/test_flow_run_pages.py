"""Listing flow runs: order, filters (state, tags, time window) and keyset pagination, in the
store and through POST /flow_runs/filter."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stratoflow.models import FlowRun
from stratoflow.orchestration import RunKind, apply_transition
from stratoflow.states import Completed, Running, Scheduled, StateType
from stratoflow.storage import get_store
from stratoflow.storage.base import FlowRunQuery

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def make_runs(n: int = 7) -> list[FlowRun]:
    store = get_store()
    runs = []
    for i in range(n):
        run = FlowRun(name=f"r{i}", flow_name="pager", created=T0 + timedelta(minutes=i),
                      tags=["even"] if i % 2 == 0 else ["odd"])
        run = apply_transition(run, Scheduled(scheduled_time=T0))
        run = apply_transition(run, Running())
        if i < 3:
            run = apply_transition(run, Completed())
        created = store.create_run(RunKind.FLOW, run)
        assert isinstance(created, FlowRun)
        runs.append(created)
    return runs


def test_pages_walk_every_run_once_newest_first() -> None:
    runs = make_runs()
    store = get_store()
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page, cursor = store.page_flow_runs(FlowRunQuery(flow_name="pager", limit=3, cursor=cursor))
        seen += [r.name for r in page]
        pages += 1
        if cursor is None:
            break
    assert seen == [r.name for r in reversed(runs)]
    assert pages == 3


def test_filters_by_tags_and_created_window() -> None:
    make_runs()
    store = get_store()
    evens = store.list_flow_runs(flow_name="pager", tags=["even"])
    assert [r.name for r in evens] == ["r6", "r4", "r2", "r0"]
    window = store.list_flow_runs(created_after=T0 + timedelta(minutes=2), created_before=T0 + timedelta(minutes=5))
    assert [r.name for r in window] == ["r4", "r3", "r2"]


def test_runs_by_state_come_newest_first_across_shards() -> None:
    make_runs()
    running = get_store().list_flow_runs(state_types=[StateType.RUNNING], limit=2)
    # The two runs that entered Running last (r6, r5), not the two oldest.
    assert [r.name for r in running] == ["r6", "r5"]


def _filter(body: dict[str, Any]) -> dict[str, Any]:
    from stratoflow.api.app import get_app

    event = {
        "version": "2.0", "routeKey": "$default", "rawPath": "/flow_runs/filter", "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "requestContext": {"http": {"method": "POST", "path": "/flow_runs/filter", "protocol": "HTTP/1.1",
                                    "sourceIp": "127.0.0.1", "userAgent": "pytest"},
                           "requestId": "r", "routeKey": "$default", "stage": "$default"},
        "body": json.dumps(body), "isBase64Encoded": False,
    }
    return get_app().resolve(event, None)


def test_filter_route_pages_with_the_next_cursor_header() -> None:
    make_runs()
    first = _filter({"flow_name": "pager", "limit": 4, "tags": ["even"]})
    assert first["statusCode"] == 200
    assert [r["name"] for r in json.loads(first["body"])] == ["r6", "r4", "r2", "r0"]
    first = _filter({"flow_name": "pager", "limit": 4})
    cursor = first["headers"]["x-next-cursor"]
    second = _filter({"flow_name": "pager", "limit": 4, "cursor": cursor})
    assert [r["name"] for r in json.loads(second["body"])] == ["r2", "r1", "r0"]
    assert "x-next-cursor" not in (second.get("headers") or {})


@pytest.mark.parametrize("cursor", ["not-base64!!", "bm90IGpzb24="])
def test_a_cursor_the_api_never_gave_is_a_422_naming_it(cursor: str) -> None:
    reply = _filter({"cursor": cursor})
    assert reply["statusCode"] == 422
    assert "body.cursor" in json.loads(reply["body"])["error"]
