"""The object routes of the API over real HTTP against ``stratoflow dev`` (the shared session
stack): at least one success and one error case per route. Names are unique per test."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not (REPO_ROOT / "functions" / "api" / "app.py").is_file(),
                                reason="functions/api/app.py not present")

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def call(stack: Any, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = {"Content-Type": "application/json"} if data is not None else {}
    response = stack.request(method, path, headers=headers, body=data)
    return response.status, (response.json() if response.body else None)


def error(stack: Any, method: str, path: str, status: int, needle: str, body: Any = None,
          raw: bytes | None = None) -> dict[str, Any]:
    got, reply = call(stack, method, path, body, raw)
    assert got == status, (method, path, got, reply)
    assert needle in reply["error"], (needle, reply)
    return dict(reply)


def new_run(stack: Any, flow: str, **body: Any) -> dict[str, Any]:
    status, run = call(stack, "POST", "/flow_runs", {"flow_name": flow, **body})
    assert status == 201, run
    return dict(run)


def test_flows(dev_stack: Any) -> None:
    flow = uid("flow")
    new_run(dev_stack, flow)
    status, flows = call(dev_stack, "GET", "/flows?limit=1000")
    assert status == 200 and flow in [f["name"] for f in flows]
    status, read = call(dev_stack, "GET", f"/flows/{flow}")
    assert status == 200 and read["name"] == flow
    error(dev_stack, "GET", f"/flows/{uid('none')}", 404, "not found")
    error(dev_stack, "GET", "/flows?limit=abc", 422, "limit")


def test_flow_run_cancel_retry_delete(dev_stack: Any) -> None:
    flow = uid("flow")
    running = new_run(dev_stack, flow, state={"type": "RUNNING"})
    status, run = call(dev_stack, "POST", f"/flow_runs/{running['id']}/cancel")
    assert status == 200 and run["state"]["type"] == "CANCELLING"
    scheduled = new_run(dev_stack, flow)
    status, run = call(dev_stack, "POST", f"/flow_runs/{scheduled['id']}/cancel")
    assert status == 200 and run["state"]["type"] == "CANCELLED"
    reply = error(dev_stack, "POST", f"/flow_runs/{scheduled['id']}/cancel", 409, "terminal state")
    assert reply["rule"] == "HandleFlowTerminalStateTransitions"
    error(dev_stack, "POST", "/flow_runs/nope/cancel", 404, "nope")

    status, run = call(dev_stack, "POST", f"/flow_runs/{scheduled['id']}/retry")
    assert status == 200 and run["state"]["name"] == "AwaitingRetry"
    error(dev_stack, "POST", f"/flow_runs/{scheduled['id']}/retry", 409, "only a finished flow run")
    error(dev_stack, "POST", "/flow_runs/nope/retry", 404, "nope")

    status, deleted = call(dev_stack, "DELETE", f"/flow_runs/{scheduled['id']}")
    assert status == 200 and deleted == {"deleted": scheduled["id"]}
    error(dev_stack, "GET", f"/flow_runs/{scheduled['id']}", 404, "not found")
    error(dev_stack, "DELETE", f"/flow_runs/{scheduled['id']}", 404, "not found")


def test_task_run_filter(dev_stack: Any) -> None:
    run = new_run(dev_stack, uid("flow"), state={"type": "RUNNING"})
    status, tasks = call(dev_stack, "POST", "/task_runs/filter", {"flow_run_id": run["id"],
                                                                  "state_types": ["COMPLETED"]})
    assert status == 200 and tasks == []
    error(dev_stack, "POST", "/task_runs/filter", 404, "nope", {"flow_run_id": "nope"})
    error(dev_stack, "POST", "/task_runs/filter", 422, "state_types", {"flow_run_id": run["id"],
                                                                       "state_types": "RUNNING"})
    error(dev_stack, "POST", "/task_runs/filter", 400, "malformed JSON", raw=b"{")


def test_deployments(dev_stack: Any) -> None:
    flow = uid("flow")
    body = {"name": "nightly", "flow_name": flow, "parameters": {"n": 1}, "parameter_openapi_schema": SCHEMA}
    status, dep = call(dev_stack, "POST", "/deployments", body)
    assert status == 201 and dep["version"] == 1
    status, updated = call(dev_stack, "POST", "/deployments", {**body, "description": "v2"})
    assert status == 200 and updated["version"] == 2 and updated["id"] == dep["id"]
    error(dev_stack, "POST", "/deployments", 422, "flow_name", {"name": "x"})

    status, read = call(dev_stack, "GET", f"/deployments/{dep['id']}")
    assert status == 200 and read["description"] == "v2"
    error(dev_stack, "GET", "/deployments/nope", 404, "nope")

    status, found = call(dev_stack, "POST", "/deployments/filter", {"flow_name": flow})
    assert status == 200 and [d["id"] for d in found] == [dep["id"]]
    error(dev_stack, "POST", "/deployments/filter", 422, "limit", {"limit": "many"})

    path = f"/deployments/{dep['id']}/create_flow_run"
    status, run = call(dev_stack, "POST", path, {"parameters": {"n": 7}, "idempotency_key": "k"})
    assert status == 201 and run["parameters"] == {"n": 7} and run["deployment_id"] == dep["id"]
    status, same = call(dev_stack, "POST", path, {"idempotency_key": "k"})
    assert status == 200 and same["id"] == run["id"]
    error(dev_stack, "POST", path, 422, "parameters.n", {"parameters": {"n": "seven"}})
    error(dev_stack, "POST", "/deployments/nope/create_flow_run", 404, "nope", {})

    status, paused = call(dev_stack, "POST", f"/deployments/{dep['id']}/pause")
    assert status == 200 and paused["paused"] is True
    error(dev_stack, "POST", path, 409, "paused", {})
    error(dev_stack, "POST", "/deployments/nope/pause", 404, "nope")
    status, resumed = call(dev_stack, "POST", f"/deployments/{dep['id']}/resume")
    assert status == 200 and resumed["paused"] is False
    error(dev_stack, "POST", "/deployments/nope/resume", 404, "nope")


def test_work_pools_and_queues(dev_stack: Any) -> None:
    name = uid("pool")
    status, pool = call(dev_stack, "POST", "/work_pools", {"name": name, "type": "process", "concurrency_limit": 2})
    assert status == 201 and pool["type"] == "process"
    error(dev_stack, "POST", "/work_pools", 409, "already exists", {"name": name})
    error(dev_stack, "POST", "/work_pools", 422, "type", {"name": uid("pool"), "type": "k8s"})

    status, pools = call(dev_stack, "GET", "/work_pools")
    assert status == 200 and name in [p["name"] for p in pools]
    status, read = call(dev_stack, "GET", f"/work_pools/{name}")
    assert status == 200 and read == pool
    error(dev_stack, "GET", f"/work_pools/{uid('none')}", 404, "not found")

    status, paused = call(dev_stack, "POST", f"/work_pools/{name}/pause")
    assert status == 200 and paused["paused"] is True
    error(dev_stack, "POST", "/work_pools/nope/pause", 404, "nope")
    status, resumed = call(dev_stack, "POST", f"/work_pools/{name}/resume")
    assert status == 200 and resumed["paused"] is False
    error(dev_stack, "POST", "/work_pools/nope/resume", 404, "nope")

    status, queue = call(dev_stack, "POST", f"/work_pools/{name}/queues", {"name": "fast", "priority": 1})
    assert status == 201 and queue["work_pool_name"] == name
    error(dev_stack, "POST", f"/work_pools/{name}/queues", 409, "already exists", {"name": "fast"})
    error(dev_stack, "POST", f"/work_pools/{name}/queues", 422, "priority", {"name": "slow", "priority": "hi"})
    status, queues = call(dev_stack, "GET", f"/work_pools/{name}/queues")
    assert status == 200 and [q["name"] for q in queues] == ["default", "fast"]  # every pool has a `default` queue
    error(dev_stack, "GET", "/work_pools/nope/queues", 404, "nope")


def test_concurrency_limits(dev_stack: Any) -> None:
    tag = uid("tag")
    status, limit = call(dev_stack, "POST", "/concurrency_limits", {"tag": tag, "limit": 3})
    assert status == 201 and limit["limit"] == 3
    error(dev_stack, "POST", "/concurrency_limits", 422, "limit", {"tag": tag, "limit": -1})
    status, limits = call(dev_stack, "GET", "/concurrency_limits")
    assert status == 200 and tag in [c["tag"] for c in limits]
    status, read = call(dev_stack, "GET", f"/concurrency_limits/{tag}")
    assert status == 200 and read == limit
    error(dev_stack, "GET", f"/concurrency_limits/{uid('none')}", 404, "not found")
    status, deleted = call(dev_stack, "DELETE", f"/concurrency_limits/{tag}")
    assert status == 200 and deleted == {"deleted": tag}
    error(dev_stack, "DELETE", f"/concurrency_limits/{tag}", 404, "not found")
