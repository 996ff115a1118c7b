"""The engine and ``get_client()`` through the API (``STRATOFLOW_API_URL``) of the local stack."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from stratoflow import flow, get_client, get_run_logger, task
from stratoflow.exceptions import TransitionRefused
from stratoflow.orchestration import ResponseStatus, RunKind
from stratoflow.states import Completed, Failed, Pending, Running, StateType
from stratoflow.storage.api_store import ApiStore


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_flow_with_mapped_tasks_retries_cache_subflow_large_result_and_logs(over_api: ApiStore) -> None:
    name = _unique("api-etl")
    attempts: dict[str, int] = {"flaky": 0}

    @task
    def double(x: int) -> int:
        return 2 * x

    @task(retries=2, retry_delay_seconds=0)
    def flaky() -> str:
        attempts["flaky"] += 1
        if attempts["flaky"] < 2:
            raise ValueError("first attempt fails")
        return "ok"

    @task(cache_key_fn=lambda ctx, params: f"{name}-cached-{params['x']}")
    def cached(x: int) -> int:
        return x + 100

    @task
    def big() -> str:
        return "x" * (20 * 1024)

    @flow(name=f"{name}-child")
    def child(n: int) -> int:
        return double(n)

    @flow(name=name, log_prints=True)
    def parent(n: int) -> dict[str, Any]:
        values = double.map(list(range(n))).result()
        get_run_logger().info("mapped %d", len(values))
        print("hello from print")
        return {"sum": sum(values), "flaky": flaky(), "cached": [cached(1), cached(1)], "child": child(5),
                "big": len(big())}

    assert parent(4) == {"sum": 12, "flaky": "ok", "cached": [101, 101], "child": 10, "big": 20 * 1024}

    client = get_client()
    assert isinstance(client.store, ApiStore)
    run = client.read_flow_runs(flow_name=name)[0]
    assert run.state_type == StateType.COMPLETED
    assert [s.type for s in client.read_flow_run_states(run.id)] == [StateType.PENDING, StateType.RUNNING,
                                                                   StateType.COMPLETED]
    task_runs = client.read_task_runs(run.id)
    by_key: dict[str, list[Any]] = {}
    for tr in task_runs:
        by_key.setdefault(tr.task_key.split(".")[-1].split("-")[0], []).append(tr)
    assert all(tr.state_type == StateType.COMPLETED for tr in task_runs), [(t.name, t.state) for t in task_runs]
    assert len(task_runs) == 4 + 1 + 2 + 1 + 1  # mapped, flaky, cached x2, subflow placeholder, big
    flaky_run = next(tr for tr in task_runs if "flaky" in tr.name)
    assert flaky_run.run_count == 2
    assert StateType.SCHEDULED in [s.type for s in flaky_run.state_history]  # AwaitingRetry
    assert any(tr.state is not None and tr.state.name == "Cached" for tr in task_runs)
    big_run = next(tr for tr in task_runs if "big" in tr.name)
    assert big_run.state is not None and big_run.state.result() == "x" * (20 * 1024)
    assert run.state is not None and run.state.result()["sum"] == 12
    messages = [log.message for log in client.iter_logs(run.id)]
    assert any("mapped 4" in m for m in messages)
    assert any("hello from print" in m for m in messages)
    child_run = client.read_flow_runs(flow_name=f"{name}-child")[0]
    assert child_run.parent_flow_run_id == run.id and child_run.state_type == StateType.COMPLETED


def test_failed_flow_is_recorded(over_api: ApiStore) -> None:
    name = _unique("api-fail")

    @flow(name=name)
    def boom() -> None:
        raise RuntimeError("nope")

    state = boom(return_state=True)
    assert state.type == StateType.FAILED
    run = get_client().read_flow_runs(flow_name=name)[0]
    assert run.state_type == StateType.FAILED


def test_flows_are_listed_and_runs_deleted_over_the_api(over_api: ApiStore) -> None:
    from stratoflow.exceptions import ObjectNotFound

    name = _unique("api-delete")
    run_id = _finished_flow_run_id(name)
    flows, _ = over_api.list_flows(limit=1000)
    assert name in {f.name for f in flows}
    assert over_api.read_flow(name).name == name
    assert over_api.list_task_runs(run_id) == []
    over_api.delete_flow_run(run_id)
    with pytest.raises(ObjectNotFound):
        over_api.read_run(RunKind.FLOW, run_id)


def _finished_flow_run_id(name: str) -> str:
    @flow(name=name)
    def done() -> int:
        return 1

    done()
    return get_client().read_flow_runs(flow_name=name)[0].id


def test_forbidden_transition_is_refused_with_the_rule(over_api: ApiStore) -> None:
    run_id = _finished_flow_run_id(_unique("api-forbid"))
    client = get_client()
    # Through the client (the policy applied by the caller): ABORT with the rule's reason.
    result = client.set_flow_run_state(run_id, Running())
    assert result.status == ResponseStatus.ABORT
    assert result.rule == "HandleFlowTerminalStateTransitions"
    # Through the API's set_state route: 409, raised with the rule and its reason.
    with pytest.raises(TransitionRefused) as info:
        over_api.set_state(RunKind.FLOW, run_id, Running())
    assert info.value.result.rule == "HandleFlowTerminalStateTransitions"
    assert "terminal state" in str(info.value)
    # A caller that skips the policy and commits directly is refused by the server's replay.
    from stratoflow.orchestration import apply_transition

    stored = over_api.read_run(RunKind.FLOW, run_id)
    forged = apply_transition(stored, Running())
    with pytest.raises(TransitionRefused) as info:
        over_api.commit_run(RunKind.FLOW, forged, [forged.state_history[-1]], stored.version, {stored.state_type})
    assert info.value.result.rule == "HandleFlowTerminalStateTransitions"
    assert over_api.read_run(RunKind.FLOW, run_id).version == stored.version  # nothing written


def test_create_with_a_history_the_policy_refuses(over_api: ApiStore) -> None:
    from stratoflow.models import TaskRun
    from stratoflow.orchestration import apply_transition

    flow_run_id = _finished_flow_run_id(_unique("api-create"))
    run = TaskRun(name="forged", flow_run_id=flow_run_id, task_key="forged")
    for state in (Pending(), Running(), Completed(), Running()):
        run = apply_transition(run, state)
    with pytest.raises(TransitionRefused):
        over_api.create_run(RunKind.TASK, run)
    ok = TaskRun(name="ok", flow_run_id=flow_run_id, task_key="ok")
    for state in (Pending(), Running(), Failed()):
        ok = apply_transition(ok, state)
    created = over_api.create_run(RunKind.TASK, ok)
    assert created.version == 1 and created.run_count == 1


def test_stale_commit_duplicate_create_cache_and_validation(over_api: ApiStore) -> None:
    from stratoflow._http import ApiConflict, ApiError
    from stratoflow.exceptions import StaleRunError
    from stratoflow.models import CacheEntry, FlowRun
    from stratoflow.orchestration import apply_transition

    run = apply_transition(FlowRun(name="stale", flow_name=_unique("api-stale")), Pending())
    created = over_api.create_run(RunKind.FLOW, run)
    assert created.version == 1
    moved = apply_transition(created, Running())
    committed = over_api.commit_run(RunKind.FLOW, moved, [moved.state_history[-1]], 1, {StateType.PENDING})
    assert committed.version == 2 and committed.run_count == 1
    # The same commit again (version 1 is gone): the retried-request case answers with the run.
    assert over_api.commit_run(RunKind.FLOW, moved, [moved.state_history[-1]], 1, {StateType.PENDING}).version == 2
    # Another writer's commit against the old version: StaleRunError with the current record.
    other = apply_transition(created, Failed())
    with pytest.raises(StaleRunError) as info:
        over_api.commit_run(RunKind.FLOW, other, [other.state_history[-1]], 1, {StateType.PENDING})
    assert info.value.current.version == 2 and info.value.current.state_type == StateType.RUNNING
    # A duplicate create of a different history is a conflict; the same one answers with the run.
    fresh = apply_transition(FlowRun(name="dup", flow_name=run.flow_name), Pending())
    assert over_api.create_run(RunKind.FLOW, fresh).version == 1
    assert over_api.create_run(RunKind.FLOW, fresh).version == 1
    with pytest.raises(ApiConflict):
        over_api.create_run(RunKind.FLOW, apply_transition(fresh, Running()))
    # Cache entries round-trip; a missing one is None.
    key = _unique("cache-key")
    assert over_api.read_cache(key) is None
    from stratoflow.storage.results import persist_value

    state = Completed()
    state.result_ref = persist_value(over_api, {"rows": 3}, inline_max=1024, prefix="results/")  # signed
    over_api.write_cache(CacheEntry(key=key, state=state))
    entry = over_api.read_cache(key)
    assert entry is not None and entry.state.type == StateType.COMPLETED
    assert entry.state.result() == {"rows": 3}
    # An entry whose result is not one a runner signed is refused (it could be a planted pickle).
    with pytest.raises(ApiError) as forged:
        over_api.write_cache(CacheEntry(key=key, state=Completed()))
    assert forged.value.status == 422 and "result_ref" in forged.value.message
    # Malformed bodies: 422 with the field named.
    with pytest.raises(ApiError) as bad:
        over_api.http.request("POST", "/runs/flow/create", json_body={"name": 3})
    assert bad.value.status == 422 and "body" in bad.value.message
    with pytest.raises(ApiError) as bad:
        over_api.http.request("POST", "/runs/bogus/create", json_body={})
    assert bad.value.status == 422


def test_racing_set_state_over_http_has_one_winner(over_api: ApiStore) -> None:
    from stratoflow.models import FlowRun
    from stratoflow.orchestration import apply_transition

    run = apply_transition(FlowRun(name="race", flow_name=_unique("api-race")), Pending())
    over_api.create_run(RunKind.FLOW, run)
    client = get_client()
    barrier = threading.Barrier(8)
    outcomes: list[Any] = []
    lock = threading.Lock()

    def claim() -> None:
        barrier.wait()
        result = client.set_flow_run_state(run.id, Running())
        with lock:
            outcomes.append(result.status)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(outcomes) == 8
    assert outcomes.count(ResponseStatus.ACCEPT) == 1, outcomes
    assert outcomes.count(ResponseStatus.ABORT) == 7, outcomes
    stored = client.read_flow_run(run.id)
    assert [s.type for s in stored.state_history] == [StateType.PENDING, StateType.RUNNING]
    assert stored.run_count == 1


def test_racing_the_set_state_route_has_one_winner(over_api: ApiStore) -> None:
    from stratoflow.models import FlowRun
    from stratoflow.orchestration import apply_transition

    run = apply_transition(FlowRun(name="race", flow_name=_unique("api-race-route")), Pending())
    over_api.create_run(RunKind.FLOW, run)
    barrier = threading.Barrier(8)
    outcomes: list[str] = []
    lock = threading.Lock()

    def claim() -> None:
        barrier.wait()
        try:
            outcome = over_api.set_state(RunKind.FLOW, run.id, Running())["status"]
        except TransitionRefused as exc:
            outcome = f"refused by {exc.result.rule}"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == ["ACCEPT"] + ["refused by PreventDuplicateClaims"] * 7
    assert over_api.read_run(RunKind.FLOW, run.id).run_count == 1


@pytest.mark.slow
def test_per_task_overhead_of_a_sequential_flow(over_api: ApiStore, capsys: pytest.CaptureFixture[str]) -> None:
    name = _unique("api-bench")

    @task
    def step(i: int) -> int:
        return i

    @flow(name=name)
    def sequential(n: int) -> int:
        return sum(step(i) for i in range(n))

    sequential(5)  # warm up
    started = time.perf_counter()
    assert sequential(200) == sum(range(200))
    elapsed = time.perf_counter() - started
    with capsys.disabled():
        print(f"\n200-task sequential flow over the local HTTP API: {elapsed:.2f}s, "
              f"{elapsed / 200 * 1000:.1f} ms/task")


def test_flow_runs_page_over_http_with_the_next_cursor(over_api: ApiStore) -> None:
    from stratoflow import flow
    from stratoflow.storage.base import FlowRunQuery

    name = _unique("pages")
    tag = _unique("tag")

    @flow(name=name, tags=[tag])
    def tiny(i: int) -> int:
        return i

    for i in range(5):
        tiny(i)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page, cursor = over_api.page_flow_runs(FlowRunQuery(flow_name=name, tags=(tag,), limit=2, cursor=cursor))
        seen += [r.id for r in page]
        pages += 1
        if cursor is None:
            break
    assert pages == 3 and len(set(seen)) == 5
    created = [over_api.read_run(RunKind.FLOW, i).created for i in seen]
    assert created == sorted(created, reverse=True)
    assert over_api.list_flow_runs(flow_name=name, tags=["no-such-tag"]) == []
