"""The scope of a sandboxed flow run (stratoflow.sandbox.scope): what its code may ask the runtime."""

from __future__ import annotations

from typing import Any

import pytest

from stratoflow.sandbox.scope import RunScope, admit, allow, readable_blob


@pytest.fixture
def scope() -> RunScope:
    return RunScope({"run-1"}, {"task-1"})


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/runs/flow/anyone", None),
    ("GET", "/flow_runs/anyone/logs?limit=3", None),
    ("POST", "/flow_runs/filter", {}),
    ("POST", "/flows/ensure", {"name": "f"}),
    ("POST", "/runs/task/create", {"flow_run_id": "run-1", "id": "task-2"}),
    ("POST", "/runs/flow/create", {"parent_task_run_id": "task-1", "id": "sub-1"}),
    ("POST", "/runs/flow/create", {"parent_flow_run_id": "run-1", "id": "sub-2"}),
    ("POST", "/runs/flow/run-1/commit", {}),
    ("POST", "/runs/task/task-1/commit", {}),
    ("POST", "/flow_runs/run-1/set_state", {}),
    ("PUT", "/cache/some-key", {}),
    ("POST", "/logs", [{"flow_run_id": "run-1", "task_run_id": None},
                       {"flow_run_id": "run-1", "task_run_id": "task-1"}]),
    ("POST", "/concurrency_limits/increment", {"tags": ["a"], "holder": "task-1"}),
    ("POST", "/deployments/dep-9/create_flow_run", {}),
    ("PUT", "/_runtime/blobs/results/abc", None),
    ("PUT", "/_runtime/blobs/parameters/run-1.json", None),
    ("POST", "/_runtime/sign", {}),
])
def test_what_a_flow_run_needs_is_allowed(scope: RunScope, method: str, path: str, body: Any) -> None:
    assert allow(scope, method, path, body) is None


@pytest.mark.parametrize(("method", "path", "body", "needle"), [
    ("POST", "/runs/task/create", {"flow_run_id": "run-2"}, "another flow run"),
    ("POST", "/runs/flow/create", {"parent_task_run_id": None}, "not a subflow"),
    ("POST", "/runs/flow/create", {"parent_flow_run_id": "run-2", "parent_task_run_id": "task-9"}, "not a subflow"),
    ("POST", "/runs/flow/run-2/commit", {}, "another flow run"),
    ("POST", "/runs/task/task-9/commit", {}, "another task run"),
    ("POST", "/flow_runs/run-2/set_state", {}, "another flow run"),
    ("POST", "/flow_runs/run-1/set_state/force", {}, "runtime's scope"),
    ("POST", "/logs", [{"flow_run_id": "run-2"}], "logs of another flow run"),
    ("POST", "/logs", [{"flow_run_id": "run-1", "task_run_id": "task-9"}], "logs of another task run"),
    ("POST", "/concurrency_limits/increment", {"holder": "task-9"}, "another run"),
    ("POST", "/deployments", {}, "runtime's scope"),
    ("DELETE", "/flow_runs/run-1", None, "runtime's scope"),
    ("POST", "/work_pools", {}, "runtime's scope"),
    ("POST", "/flow_runs/run-1/cancel", None, "runtime's scope"),
    ("PUT", "/_runtime/blobs/packages/x.zip", None, "neither a result"),
    ("PUT", "/_runtime/blobs/results/../packages/x.zip", None, "not a plain key"),
    ("PUT", "/_runtime/blobs/parameters/run-2.json", None, "neither a result"),
    ("POST", "/runs/flow/run%2D2/commit", {}, "another flow run"),
])
def test_everything_else_is_refused_with_the_reason(scope: RunScope, method: str, path: str, body: Any,
                                                    needle: str) -> None:
    reason = allow(scope, method, path, body)
    assert reason is not None and needle in reason, reason
    assert reason.startswith(f"flow code may not {method} ")


def test_created_runs_join_the_scope(scope: RunScope) -> None:
    assert allow(scope, "POST", "/runs/task/task-2/commit", {}) is not None
    admit(scope, "POST", "/runs/task/create", {"id": "task-2"}, 201)
    assert allow(scope, "POST", "/runs/task/task-2/commit", {}) is None
    admit(scope, "POST", "/runs/flow/create", {"id": "sub-1"}, 409)  # refused: not admitted
    assert allow(scope, "POST", "/runs/flow/sub-1/commit", {}) is not None
    admit(scope, "POST", "/runs/flow/create", {"id": "sub-1"}, 201)
    assert allow(scope, "POST", "/runs/task/create", {"flow_run_id": "sub-1"}) is None


@pytest.mark.parametrize(("uri", "ok"), [
    ("s3://b/results/x", True), ("s3://b/parameters/run-9.json", True), ("s3://b/packages/x.zip", False),
    ("s3://other/results/x", False), ("s3://b/results/../packages/x.zip", False),
])
def test_readable_blobs_are_results_and_parameters_of_this_stack(scope: RunScope, uri: str, ok: bool) -> None:
    assert (readable_blob(scope, "b", uri) is None) is ok
