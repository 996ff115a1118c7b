"""Every ``StratoflowClient`` method through the API of the local stack (``stratoflow dev``).

Each test runs twice: over HTTP (``STRATOFLOW_API_URL`` of the session's dev stack) and over the
embedded store, and checks the same answers and the same errors in both. Names are unique per test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from stratoflow import flow, get_client, get_run_logger, task
from stratoflow.client import StratoflowClient
from stratoflow.exceptions import Conflict, ObjectNotFound, TransitionRefused, Unprocessable
from stratoflow.orchestration import ResponseStatus
from stratoflow.states import Completed, Pending, Running, Scheduled, StateType, now


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=["api", "store"])
def sf(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[StratoflowClient]:
    """A client over the API of the dev stack ("api"), or over this test's embedded store ("store")."""
    from stratoflow.engine import flow_engine as flows
    from stratoflow.settings import reset_settings
    from stratoflow.storage import aws as _aws

    if request.param == "api":
        stack = request.getfixturevalue("dev_stack")
        for name in list(os.environ):
            if name.startswith(("STRATOFLOW_", "AWS_")):
                monkeypatch.delenv(name, raising=False)
        for name, value in stack.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("STRATOFLOW_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("STRATOFLOW_LOG_TO_CONSOLE", "false")
        reset_settings()
        _aws.clear_clients()
        with flows._known_lock:
            flows._known_flows.clear()
    client = get_client()
    assert client.over_api == (request.param == "api")
    yield client
    reset_settings()
    _aws.clear_clients()


def _finished_run(name: str, *, fail_task: bool = False, big: bool = False) -> str:
    """Run flow ``name`` (one task, two log lines); its flow run id."""
    ids: list[str] = []

    @task(name=f"{name}-step")
    def step(x: int) -> int:
        get_run_logger().info("step %d", x)
        return x + 1

    @flow(name=name)
    def body(n: int, blob: str = "") -> int:
        from stratoflow import get_run_context

        ctx = get_run_context()
        assert ctx is not None and ctx.flow_run is not None
        ids.append(ctx.flow_run.id)
        get_run_logger().warning("starting %d", n)
        return step(n)

    assert body(1, blob="x" * (40 * 1024) if big else "") == 2
    return ids[0]


# -- flows, flow runs, task runs, logs ---------------------------------------------------------------
def test_reads_of_flows_runs_task_runs_and_logs(sf: StratoflowClient) -> None:
    name = _unique("client-reads")
    run_id = _finished_run(name)
    big_id = _finished_run(name, big=True)

    assert sf.read_flow(name).name == name
    assert name in {f.name for f in sf.read_flows(limit=1000)}
    with pytest.raises(ObjectNotFound):
        sf.read_flow(_unique("no-such-flow"))

    run = sf.read_flow_run(run_id)
    assert run.flow_name == name and run.state_type == StateType.COMPLETED
    assert {r.id for r in sf.read_flow_runs(flow_name=name)} == {run_id, big_id}
    assert {r.id for r in sf.read_flow_runs(flow_name=name, state_types=["COMPLETED"])} == {run_id, big_id}
    assert sf.read_flow_runs(flow_name=name, state_types=[StateType.FAILED]) == []
    # The time bound applies to runs of the given state types (by the time they entered it).
    hour_ago = now() - timedelta(hours=1)
    assert sf.read_flow_runs(flow_name=name, state_types=["COMPLETED"], scheduled_before=hour_ago) == []
    assert len(sf.read_flow_runs(flow_name=name, state_types=["COMPLETED"], scheduled_before=now())) == 2
    assert len(sf.read_flow_runs(flow_name=name, limit=1)) == 1
    with pytest.raises(ObjectNotFound):
        sf.read_flow_run(_unique("no-such-run"))

    assert [s.type for s in sf.read_flow_run_states(run_id)] == [StateType.PENDING, StateType.RUNNING,
                                                                 StateType.COMPLETED]
    assert sf.read_flow_run_parameters(run_id) == {"n": 1, "blob": ""}
    big = sf.read_flow_run(big_id)
    assert big.parameters_ref is not None and big.parameters == {}
    assert sf.read_flow_run_parameters(big_id) == {"n": 1, "blob": "x" * (40 * 1024)}

    task_runs = sf.read_task_runs(run_id)
    assert len(task_runs) == 1
    task_run = sf.read_task_run(task_runs[0].id)
    assert task_run.flow_run_id == run_id and task_run.state_type == StateType.COMPLETED
    assert [s.type for s in sf.read_task_run_states(task_run.id)][-1] == StateType.COMPLETED
    assert [t.id for t in sf.filter_task_runs(run_id, state_types=["COMPLETED"])] == [task_run.id]
    assert sf.filter_task_runs(run_id, state_types=[StateType.FAILED]) == []
    assert sf.read_task_runs(_unique("no-such-run")) == []
    with pytest.raises(ObjectNotFound):
        sf.read_task_run(_unique("no-such-task-run"))
    with pytest.raises(ObjectNotFound):
        sf.filter_task_runs(_unique("no-such-run"))

    messages = [log.message for log in sf.iter_logs(run_id)]
    assert messages.index("starting 1") < messages.index("step 1")
    first = sf.read_logs(run_id, limit=1)
    assert [log.message for log in first.logs] == messages[:1] and first.next_cursor is not None
    second = sf.read_logs(run_id, limit=1, cursor=first.next_cursor)
    assert [log.message for log in second.logs] == messages[1:2]
    assert [log.message for log in sf.read_logs(run_id, min_level=30).logs] == ["starting 1"]
    task_logs = sf.read_logs(run_id, task_run_id=task_run.id).logs
    assert "step 1" in [log.message for log in task_logs] and {log.task_run_id for log in task_logs} == {task_run.id}
    assert sf.read_logs(_unique("no-such-run")).logs == []


# -- states --------------------------------------------------------------------------------------------
def test_set_states_accept_abort_and_force(sf: StratoflowClient) -> None:
    run_id = _finished_run(_unique("client-states"))
    # A finished flow run cannot run again: ABORT, returned (not raised) with the rule and its reason.
    result = sf.set_flow_run_state(run_id, Running())
    assert result.status == ResponseStatus.ABORT
    assert result.rule == "HandleFlowTerminalStateTransitions"
    assert result.reason and "terminal" in result.reason
    assert sf.read_flow_run(run_id).state_type == StateType.COMPLETED  # nothing written
    # Forced, the rules are skipped.
    forced = sf.set_flow_run_state(run_id, Running(), force=True)
    assert forced.status == ResponseStatus.ACCEPT and forced.state is not None
    assert forced.state.type == StateType.RUNNING
    assert sf.read_flow_run(run_id).state_type == StateType.RUNNING
    done = sf.set_flow_run_state(run_id, Completed())
    assert done.status == ResponseStatus.ACCEPT and sf.read_flow_run(run_id).state_type == StateType.COMPLETED

    task_run = sf.read_task_runs(run_id)[0]
    refused = sf.set_task_run_state(task_run.id, Pending())
    assert refused.status == ResponseStatus.ABORT and refused.rule and refused.reason
    assert sf.read_task_run(task_run.id).state_type == StateType.COMPLETED
    moved = sf.set_task_run_state(task_run.id, Running(), force=True)
    assert moved.status == ResponseStatus.ACCEPT
    assert sf.read_task_run(task_run.id).state_type == StateType.RUNNING

    with pytest.raises(ObjectNotFound):
        sf.set_flow_run_state(_unique("no-such-run"), Running())
    with pytest.raises(ObjectNotFound):
        sf.set_task_run_state(_unique("no-such-task-run"), Running())


# -- deployments, cancel/retry/delete ------------------------------------------------------------------
def test_deployments_and_their_runs(sf: StratoflowClient) -> None:
    flow_name = _unique("client-dep-flow")
    pool = _unique("pool")
    # A `process` pool: `stratoflow dev` executes the runs of `lambda` pools, which would race the
    # assertions below on the run staying Scheduled (nobody here starts a worker).
    sf.create_work_pool(pool, type="process")
    sf.create_work_queue(pool, "fast")
    schema = {"type": "object", "properties": {"n": {"type": "integer"}, "who": {"type": "string"}},
              "required": ["n"], "additionalProperties": False}
    dep = sf.create_deployment(flow_name, "nightly", parameters={"who": "world"}, parameter_openapi_schema=schema,
                               work_pool_name=pool, work_queue_name="fast", tags=["etl"])
    assert dep.version == 1 and dep.work_queue_name == "fast"
    updated = sf.create_deployment(flow_name, "nightly", description="every night")
    assert updated.id == dep.id and updated.version == 2
    assert updated.description == "every night" and updated.tags == ["etl"]  # the others kept
    assert sf.read_deployment(dep.id).version == 2
    assert sf.read_deployment(f"{flow_name}/nightly").id == dep.id
    with pytest.raises(ObjectNotFound) as missing:
        sf.read_deployment(f"{flow_name}/nope")
    assert missing.value.kind == "deployment" and missing.value.key == f"{flow_name}/nope"
    with pytest.raises(Unprocessable):
        sf.create_deployment(flow_name, "other", work_pool_name=pool, work_queue_name="fast",
                             parameter_openapi_schema={"type": 7})

    assert [d.id for d in sf.read_deployments(flow_name=flow_name)] == [dep.id]
    assert [d.id for d in sf.read_deployments(work_pool_name=pool, tags=["etl"])] == [dep.id]
    assert sf.read_deployments(flow_name=flow_name, paused=True) == []

    assert sf.pause_deployment(f"{flow_name}/nightly").paused is True
    assert [d.id for d in sf.read_deployments(flow_name=flow_name, paused=True)] == [dep.id]
    with pytest.raises(Conflict):
        sf.create_flow_run_from_deployment(dep.id, parameters={"n": 1})
    assert sf.resume_deployment(dep.id).paused is False
    with pytest.raises(ObjectNotFound):
        sf.pause_deployment(_unique("no-such-deployment"))

    run = sf.create_flow_run_from_deployment(f"{flow_name}/nightly", parameters={"n": 3}, tags=["adhoc"],
                                             name="by-hand", idempotency_key="k1")
    assert run.deployment_id == dep.id and run.name == "by-hand" and run.work_pool_name == pool
    assert run.state_type == StateType.SCHEDULED and set(run.tags) == {"etl", "adhoc"}
    assert sf.read_flow_run_parameters(run.id) == {"who": "world", "n": 3}
    again = sf.create_flow_run_from_deployment(dep.id, parameters={"n": 3}, idempotency_key="k1")
    assert again.id == run.id
    with pytest.raises(Unprocessable) as bad:
        sf.create_flow_run_from_deployment(dep.id, parameters={"n": "three"})
    assert "parameters.n" in str(bad.value)
    assert [r.id for r in sf.read_flow_runs(deployment_id=dep.id)] == [run.id]
    assert [r.id for r in sf.read_flow_runs(flow_name=flow_name, state_types=[StateType.SCHEDULED],
                                            scheduled_before=now() + timedelta(hours=1))] == [run.id]

    # Cancel (Scheduled -> Cancelled), retry (back to Scheduled), delete.
    cancelled = sf.cancel_flow_run(run.id)
    assert cancelled.state_type == StateType.CANCELLED
    retried = sf.retry_flow_run(run.id)
    assert retried.state_type == StateType.SCHEDULED and retried.state is not None
    assert retried.state.name == "AwaitingRetry"
    with pytest.raises(Conflict):
        sf.retry_flow_run(run.id)  # not finished
    sf.delete_flow_run(run.id)
    with pytest.raises(ObjectNotFound):
        sf.read_flow_run(run.id)
    with pytest.raises(ObjectNotFound):
        sf.delete_flow_run(run.id)
    with pytest.raises(ObjectNotFound):
        sf.cancel_flow_run(run.id)

    # A finished run cannot be cancelled: the rule's reason.
    finished = _finished_run(_unique("client-cancel"))
    with pytest.raises(TransitionRefused) as refused:
        sf.cancel_flow_run(finished)
    assert refused.value.result.rule and refused.value.result.reason


# -- work pools and queues, concurrency limits ----------------------------------------------------------
def test_work_pools_and_queues(sf: StratoflowClient) -> None:
    pool = _unique("pool")
    created = sf.create_work_pool(pool, type="process", concurrency_limit=3, description="test pool")
    assert created.name == pool and created.type == "process" and created.concurrency_limit == 3
    with pytest.raises(Conflict):
        sf.create_work_pool(pool)
    assert sf.read_work_pool(pool).description == "test pool"
    assert pool in {p.name for p in sf.read_work_pools()}
    assert sf.pause_work_pool(pool).paused is True
    assert sf.read_work_pool(pool).paused is True
    assert sf.resume_work_pool(pool).paused is False
    with pytest.raises(ObjectNotFound):
        sf.read_work_pool(_unique("no-such-pool"))
    with pytest.raises(ObjectNotFound):
        sf.pause_work_pool(_unique("no-such-pool"))

    sf.create_work_queue(pool, "slow", priority=5)
    queue = sf.create_work_queue(pool, "fast", priority=1, concurrency_limit=2)
    assert queue.work_pool_name == pool and queue.concurrency_limit == 2
    with pytest.raises(Conflict):
        sf.create_work_queue(pool, "fast")
    assert [q.name for q in sf.read_work_queues(pool)] == ["default", "fast", "slow"]  # `default` comes with the pool
    with pytest.raises(ObjectNotFound):
        sf.read_work_queues(_unique("no-such-pool"))
    with pytest.raises(ObjectNotFound):
        sf.create_work_queue(_unique("no-such-pool"), "q")


def test_concurrency_limits(sf: StratoflowClient) -> None:
    tag = _unique("tag")
    created = sf.create_concurrency_limit(tag, 2)
    assert created.tag == tag and created.limit == 2
    changed = sf.create_concurrency_limit(tag, 5)
    assert changed.limit == 5
    assert sf.read_concurrency_limit(tag).limit == 5
    assert tag in {c.tag for c in sf.read_concurrency_limits()}
    sf.delete_concurrency_limit(tag)
    with pytest.raises(ObjectNotFound):
        sf.read_concurrency_limit(tag)
    with pytest.raises(ObjectNotFound):
        sf.delete_concurrency_limit(tag)
    assert tag not in {c.tag for c in sf.read_concurrency_limits()}


def test_client_is_a_context_manager_and_scheduled_run_can_start(sf: StratoflowClient) -> None:
    flow_name = _unique("client-ctx")
    dep = sf.create_deployment(flow_name, "d")
    with get_client() as client:
        assert client.over_api == sf.over_api
        run = client.create_flow_run_from_deployment(dep.id)
        assert client.set_flow_run_state(run.id, Pending()).status == ResponseStatus.ACCEPT
        # Scheduled again from Pending: the rules decide (no exception either way).
        result = client.set_flow_run_state(run.id, Scheduled())
        assert result.status in set(ResponseStatus)
