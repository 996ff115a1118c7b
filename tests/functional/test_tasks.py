"""Functional tests of ``@task`` and its options, checked against what the engine stored."""

from __future__ import annotations

import os
import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from stratoflow import cache_policies, exponential_backoff, flow, get_run_context, get_run_logger, task, unmapped
from stratoflow.futures import StratoflowFuture
from stratoflow.models import TaskRun
from stratoflow.states import State, StateType, now


def names(states: list[State]) -> list[str]:
    return [s.name for s in states]


def current_task_run_id() -> str:
    ctx = get_run_context()
    assert ctx is not None
    return ctx.task_run.id  # type: ignore[union-attr]


def current_flow_run_id() -> str:
    ctx = get_run_context()
    assert ctx is not None
    return ctx.flow_run.id  # type: ignore[union-attr]


def run_in_flow(body: Any, name: str = "harness", **flow_options: Any) -> tuple[Any, str]:
    """Run ``body()`` inside a flow; return (the flow's final state, the flow run id).

    Like any flow, one that returns a State, or a list of states/futures, takes its final state
    from them; bodies that want states back wrap them in a dict."""
    ids: list[str] = []

    @flow(name=name, **flow_options)
    def harness() -> Any:
        ids.append(current_flow_run_id())
        return body()

    state = harness(return_state=True)
    return state, ids[0]


class Unreliable(RuntimeError):
    """Module level so the persisted exception unpickles."""


# -- basic calls ------------------------------------------------------------------------------------
def test_task_call_in_flow_returns_value_and_stores_completed_run(client: Any) -> None:
    ids: list[str] = []

    @task
    def add(x: int, y: int) -> int:
        ids.append(current_task_run_id())
        return x + y

    state, flow_run_id = run_in_flow(lambda: add(2, 3))
    assert state.result() == 5

    runs = client.read_task_runs(flow_run_id)
    assert len(runs) == 1
    run = runs[0]
    assert run.id == ids[0]
    assert run.flow_run_id == flow_run_id
    assert run.name == "add-0"
    assert run.state.type == StateType.COMPLETED
    assert names(run.state_history) == ["Pending", "Running", "Completed"]
    assert run.run_count == 1
    assert run.start_time is not None and run.end_time is not None
    assert run.state.result() == 5
    assert client.read_task_run_states(run.id)[-1].id == run.state.id


def test_task_outside_a_flow_runs_and_is_stored(client: Any) -> None:
    ids: list[str] = []

    @task
    def square(x: int) -> int:
        ids.append(current_task_run_id())
        return x * x

    assert square(7) == 49
    state = square(3, return_state=True)
    assert state.is_completed() and state.result() == 9
    future = square.submit(4)  # no flow: a process-wide pool runs it
    assert future.result() == 16
    assert future.task_run_id == ids[2]

    for run_id, value in zip(ids, (49, 9, 16), strict=True):
        run = client.read_task_run(run_id)
        assert run.flow_run_id is None
        assert run.state.type == StateType.COMPLETED
        assert names(run.state_history) == ["Pending", "Running", "Completed"]
        assert run.state.result() == value


def test_failing_task_in_flow_reraises_and_stores_failed_run(client: Any) -> None:
    @task
    def broken() -> None:
        raise Unreliable("task broke")

    def body() -> str:
        state = broken(return_state=True)
        assert state.is_failed()
        with pytest.raises(Unreliable):
            broken()
        return "done"

    state, flow_run_id = run_in_flow(body)
    assert state.result() == "done"
    runs = client.read_task_runs(flow_run_id)
    assert len(runs) == 2
    for run in runs:
        assert names(run.state_history) == ["Pending", "Running", "Failed"]
        with pytest.raises(Unreliable, match="task broke"):
            client.read_task_run(run.id).state.result()


# -- retries ----------------------------------------------------------------------------------------
def test_retries_really_rerun_the_task(client: Any) -> None:
    calls: list[int] = []
    ids: list[str] = []

    @task(retries=3)
    def flaky() -> str:
        ids.append(current_task_run_id())
        calls.append(1)
        if len(calls) < 3:
            raise Unreliable(f"attempt {len(calls)} failed")
        return "ok"

    state, _ = run_in_flow(lambda: flaky())
    assert state.result() == "ok"
    assert len(calls) == 3
    assert len(set(ids)) == 1  # one task run, three attempts
    run = client.read_task_run(ids[0])
    assert run.run_count == 3
    assert run.state.type == StateType.COMPLETED
    assert names(run.state_history) == [
        "Pending", "Running", "AwaitingRetry", "Retrying", "AwaitingRetry", "Retrying", "Completed"]


def test_retries_exhausted_end_failed(client: Any) -> None:
    calls: list[int] = []
    ids: list[str] = []

    @task(retries=2)
    def hopeless() -> None:
        ids.append(current_task_run_id())
        calls.append(1)
        raise Unreliable("never works")

    state, _ = run_in_flow(lambda: hopeless(return_state=True))
    assert state.is_failed()  # the flow returned the task's failed state
    assert len(calls) == 3
    run = client.read_task_run(ids[0])
    assert run.run_count == 3
    assert run.state.type == StateType.FAILED
    assert names(run.state_history).count("AwaitingRetry") == 2
    with pytest.raises(Unreliable, match="never works"):
        run.state.result()


def _retry_gaps(run: TaskRun) -> list[float]:
    """Seconds between each AwaitingRetry state and the time it scheduled the retry for; also
    checks that each retry really started no earlier than its scheduled time."""
    gaps = []
    history = run.state_history
    for i, state in enumerate(history):
        if state.name != "AwaitingRetry":
            continue
        scheduled = state.state_details.scheduled_time
        assert scheduled is not None
        gaps.append((scheduled - state.timestamp).total_seconds())
        retrying = history[i + 1]
        assert retrying.name == "Retrying"
        assert retrying.timestamp >= scheduled, "retry started before its scheduled time"
    return gaps


def _failing_task(fails: int, **options: Any) -> tuple[Any, list[str], list[float]]:
    ids: list[str] = []
    starts: list[float] = []

    @task(**options)
    def sometimes() -> str:
        ids.append(current_task_run_id())
        starts.append(time.monotonic())
        if len(starts) <= fails:
            raise Unreliable("not yet")
        return "ok"

    return sometimes, ids, starts


# An AwaitingRetry state's scheduled time is "decision time + delay" and its timestamp is taken
# just after the decision, so the gap is the delay minus a scheduling hiccup (never more).
def about(delay: float) -> Any:
    return pytest.approx(delay - 0.0125, abs=0.0145)  # [delay - 0.027, delay + 0.002]


def test_retry_delay_seconds_number(client: Any) -> None:
    t, ids, starts = _failing_task(2, retries=2, retry_delay_seconds=0.05)
    state, _ = run_in_flow(lambda: t())
    assert state.result() == "ok"
    run = client.read_task_run(ids[0])
    gaps = _retry_gaps(run)
    assert gaps == [about(0.05)] * 2
    assert starts[1] - starts[0] >= 0.05 and starts[2] - starts[1] >= 0.05
    assert run.retry_policy.retries == 2


def test_retry_delay_seconds_list(client: Any) -> None:
    t, ids, starts = _failing_task(3, retries=3, retry_delay_seconds=[0.03, 0.12])
    state, _ = run_in_flow(lambda: t())
    assert state.result() == "ok"
    run = client.read_task_run(ids[0])
    # The last delay repeats once the list runs out.
    assert _retry_gaps(run) == [about(0.03), about(0.12), about(0.12)]
    assert starts[2] - starts[1] >= 0.12
    assert run.run_count == 4


def test_retry_delay_exponential_backoff(client: Any) -> None:
    assert exponential_backoff(0.05)(3) == [0.05, 0.1, 0.2]
    t, ids, starts = _failing_task(3, retries=3, retry_delay_seconds=exponential_backoff(0.05))
    state, _ = run_in_flow(lambda: t())
    assert state.result() == "ok"
    run = client.read_task_run(ids[0])
    assert _retry_gaps(run) == [about(d) for d in (0.05, 0.1, 0.2)]
    assert run.retry_policy.retry_delays == [0.05, 0.1, 0.2]
    assert starts[3] - starts[2] >= 0.2


def test_retry_jitter_factor_is_accepted_and_bounded(client: Any) -> None:
    t, ids, _ = _failing_task(3, retries=3, retry_delay_seconds=0.1, retry_jitter_factor=0.5)
    state, _ = run_in_flow(lambda: t())
    assert state.result() == "ok"
    run = client.read_task_run(ids[0])
    assert run.retry_policy.retry_jitter_factor == 0.5
    gaps = _retry_gaps(run)
    assert len(gaps) == 3
    for gap in gaps:
        assert 0.05 - 0.027 <= gap <= 0.15 + 0.002


def test_retry_condition_fn_false_stops_retries(client: Any) -> None:
    seen: list[tuple[Any, Any, State]] = []
    calls: list[int] = []
    ids: list[str] = []

    def never_retry(t: Any, run: TaskRun, state: State) -> bool:
        seen.append((t, run, state))
        return False

    @task(retries=3, retry_condition_fn=never_retry)
    def once() -> None:
        ids.append(current_task_run_id())
        calls.append(1)
        raise Unreliable("do not retry me")

    state, _ = run_in_flow(lambda: once(return_state=True))
    assert state.is_failed()
    assert len(calls) == 1
    assert len(seen) == 1
    t, run_arg, failed = seen[0]
    assert t.name == "once" and run_arg.id == ids[0] and failed.is_failed()
    run = client.read_task_run(ids[0])
    assert run.run_count == 1
    assert run.state.type == StateType.FAILED
    assert "AwaitingRetry" not in names(run.state_history)


def test_retry_condition_fn_true_retries(client: Any) -> None:
    t, ids, starts = _failing_task(1, retries=2, retry_condition_fn=lambda t, r, s: True)
    state, _ = run_in_flow(lambda: t())
    assert state.result() == "ok"
    assert len(starts) == 2
    assert client.read_task_run(ids[0]).run_count == 2


# -- timeouts ---------------------------------------------------------------------------------------
def _timed(fn: Any) -> tuple[Any, float]:
    start = time.monotonic()
    value = fn()
    return value, time.monotonic() - start


def test_timeout_stops_task_called_in_main_thread(client: Any) -> None:
    ids: list[str] = []
    progressed: list[int] = []

    @task(timeout_seconds=0.2)
    def loop_sleeper() -> None:
        ids.append(current_task_run_id())
        for i in range(200):  # 2 s if not stopped
            time.sleep(0.01)
            progressed.append(i)

    def body() -> Any:
        assert threading.current_thread() is threading.main_thread()
        return _timed(lambda: loop_sleeper(return_state=True))

    flow_state, _ = run_in_flow(body)
    state, elapsed = flow_state.result()
    assert elapsed < 1.5, f"task was not stopped ({elapsed:.2f}s)"
    assert len(progressed) < 150
    assert state.type == StateType.FAILED and state.name == "TimedOut"
    run = client.read_task_run(ids[0])
    assert run.state.name == "TimedOut" and run.state.type == StateType.FAILED
    assert names(run.state_history) == ["Pending", "Running", "TimedOut"]
    with pytest.raises(TimeoutError):
        run.state.result()


def test_timeout_stops_submitted_task_in_worker_thread(client: Any) -> None:
    ids: list[str] = []
    threads: list[bool] = []

    @task(timeout_seconds=0.2)
    def loop_sleeper() -> None:
        ids.append(current_task_run_id())
        threads.append(threading.current_thread() is threading.main_thread())
        for _ in range(200):
            time.sleep(0.01)

    def body() -> Any:
        def go() -> State:
            fut = loop_sleeper.submit()
            fut.wait()
            return fut.state

        return _timed(go)

    flow_state, _ = run_in_flow(body)
    state, elapsed = flow_state.result()
    assert threads == [False]
    assert elapsed < 1.5, f"task was not stopped ({elapsed:.2f}s)"
    assert state.name == "TimedOut"
    run = client.read_task_run(ids[0])
    assert run.state.name == "TimedOut" and run.state.type == StateType.FAILED


def test_nested_task_and_flow_timeouts_in_main_thread(client: Any, only_flow_run: Any) -> None:
    """A task timeout inside a flow timeout: the task stops at its own deadline, then the flow
    (which goes on sleeping) stops at the flow's."""
    ids: list[str] = []
    marks: dict[str, float] = {}

    @task(timeout_seconds=0.2)
    def inner() -> None:
        ids.append(current_task_run_id())
        time.sleep(3)

    @flow(name="nested-timeouts", timeout_seconds=0.8)
    def outer() -> None:
        marks["start"] = time.monotonic()
        state = inner(return_state=True)
        marks["task_done"] = time.monotonic()
        assert state.name == "TimedOut"
        time.sleep(5)

    state = outer(return_state=True)
    marks["flow_done"] = time.monotonic()
    assert state.name == "TimedOut"
    assert marks["task_done"] - marks["start"] < 0.7
    assert marks["flow_done"] - marks["start"] < 2.5
    assert client.read_task_run(ids[0]).state.name == "TimedOut"
    assert only_flow_run("nested-timeouts").state.name == "TimedOut"


def test_timeout_interrupts_a_single_blocking_sleep_in_main_thread(client: Any) -> None:
    """One ``time.sleep(3)`` in the main thread: only a signal can interrupt it, which the SDK
    promises (``_timeouts``: "a real-time timer signal (SIGALRM) interrupts even a blocking call").
    This runs under the project's pytest configuration (pytest-timeout installs its own SIGALRM
    handler for every test), as any application with its own SIGALRM handler would."""
    ids: list[str] = []

    @task(timeout_seconds=0.2)
    def blocking_sleeper() -> None:
        ids.append(current_task_run_id())
        time.sleep(3)

    flow_state, _ = run_in_flow(lambda: _timed(lambda: blocking_sleeper(return_state=True)))
    state, elapsed = flow_state.result()
    assert state.name == "TimedOut"
    assert elapsed < 1.5, f"time.sleep(3) was not interrupted ({elapsed:.2f}s)"
    assert client.read_task_run(ids[0]).state.name == "TimedOut"


@pytest.mark.timeout(300, method="thread")
def test_timeout_interrupts_a_single_blocking_sleep_without_other_alarm_handler(client: Any) -> None:
    """The same, with no other SIGALRM handler installed (pytest-timeout in thread mode)."""
    ids: list[str] = []

    @task(timeout_seconds=0.2)
    def blocking_sleeper() -> None:
        ids.append(current_task_run_id())
        time.sleep(3)

    flow_state, _ = run_in_flow(lambda: _timed(lambda: blocking_sleeper(return_state=True)))
    state, elapsed = flow_state.result()
    assert state.name == "TimedOut"
    assert elapsed < 1.5, f"time.sleep(3) was not interrupted ({elapsed:.2f}s)"
    assert client.read_task_run(ids[0]).state.name == "TimedOut"


# -- caching ----------------------------------------------------------------------------------------
def test_cache_policy_inputs_reuses_result_without_running(client: Any) -> None:
    calls: list[int] = []

    @task(cache_policy=cache_policies.INPUTS)
    def expensive(x: int) -> int:
        calls.append(x)
        return x * 100

    def body() -> dict[str, list[State]]:
        return {"states": [
            expensive(1, return_state=True),
            expensive(1, return_state=True),
            expensive(2, return_state=True),
        ]}

    flow_state, flow_run_id = run_in_flow(body)
    first, second, third = flow_state.result()["states"]
    assert calls == [1, 2]  # the second call with x=1 did not run the body
    assert first.name == "Completed" and first.result() == 100
    assert second.name == "Cached" and second.type == StateType.COMPLETED and second.result() == 100
    assert third.name == "Completed" and third.result() == 200

    runs = client.read_task_runs(flow_run_id)
    assert len(runs) == 3
    by_name = sorted(r.state.name for r in runs)
    assert by_name == ["Cached", "Completed", "Completed"]
    cached_run = next(r for r in runs if r.state.name == "Cached")
    assert cached_run.run_count == 0  # never entered Running
    assert cached_run.state.result() == 100  # loads from the store

    # A later flow run (another "process") also hits the stored cache entry.
    second_flow_state, _ = run_in_flow(lambda: {"state": expensive(1, return_state=True)}, name="harness-2")
    assert second_flow_state.result()["state"].name == "Cached"
    assert calls == [1, 2]


def test_cache_expiration(client: Any) -> None:
    calls: list[int] = []

    @task(cache_policy=cache_policies.INPUTS, cache_expiration=timedelta(seconds=0.4))
    def short_lived(x: int) -> int:
        calls.append(x)
        return len(calls)

    def body() -> dict[str, Any]:
        first = short_lived(1, return_state=True)
        cached = short_lived(1, return_state=True)
        cached_at = now()
        expires = first.state_details.cache_expiration
        assert expires is not None
        time.sleep(max((expires - now()).total_seconds(), 0) + 0.05)  # just past the expiry
        expired = short_lived(1, return_state=True)
        return {"states": [first, cached, expired], "cached_at": cached_at}

    flow_state, _ = run_in_flow(body)
    first, cached, expired = flow_state.result()["states"]
    expires = first.state_details.cache_expiration
    assert flow_state.result()["cached_at"] < expires, "machine too slow: the second call came after expiry"
    assert first.state_details.cache_expiration - first.timestamp <= timedelta(seconds=0.4)
    assert calls == [1, 1]
    assert [first.name, cached.name, expired.name] == ["Completed", "Cached", "Completed"]
    assert first.result() == 1 and cached.result() == 1 and expired.result() == 2


def test_cache_key_fn(client: Any) -> None:
    calls: list[int] = []

    @task(cache_key_fn=lambda ctx, params: f"parity-{params['x'] % 2}")
    def by_parity(x: int) -> int:
        calls.append(x)
        return x

    def body() -> dict[str, list[State]]:
        return {"states": [
            by_parity(1, return_state=True),
            by_parity(3, return_state=True),
            by_parity(2, return_state=True),
        ]}

    flow_state, _ = run_in_flow(body)
    a, b, c = flow_state.result()["states"]
    assert calls == [1, 2]
    assert b.name == "Cached" and b.result() == 1  # 3 has the same key as 1
    assert a.state_details.cache_key == "parity-1" and c.state_details.cache_key == "parity-0"


def test_refresh_cache_recomputes_and_updates_the_entry(client: Any) -> None:
    calls: list[int] = []

    @task(cache_policy=cache_policies.INPUTS)
    def counter(x: int) -> int:
        calls.append(x)
        return len(calls)

    refreshing = counter.with_options(refresh_cache=True)

    def body() -> dict[str, list[State]]:
        return {"states": [
            counter(1, return_state=True),
            refreshing(1, return_state=True),
            counter(1, return_state=True),
        ]}

    flow_state, _ = run_in_flow(body)
    first, refreshed, after = flow_state.result()["states"]
    assert calls == [1, 1]
    assert first.result() == 1
    assert refreshed.name == "Completed" and refreshed.result() == 2
    assert after.name == "Cached" and after.result() == 2  # the refreshed value replaced the entry


def test_task_source_plus_inputs_policy(client: Any) -> None:
    calls: list[int] = []
    policy = cache_policies.TASK_SOURCE + cache_policies.INPUTS

    @task(cache_policy=policy)
    def combined(x: int) -> int:
        calls.append(x)
        return -x

    def body() -> dict[str, list[State]]:
        return {"states": [
            combined(1, return_state=True),
            combined(1, return_state=True),
            combined(2, return_state=True),
        ]}

    flow_state, flow_run_id = run_in_flow(body)
    a, b, c = flow_state.result()["states"]
    assert calls == [1, 2]
    assert [a.name, b.name, c.name] == ["Completed", "Cached", "Completed"]
    expected_key = policy.compute_key(combined, {"x": 1}, None)
    assert expected_key is not None
    assert a.state_details.cache_key == expected_key
    # Both parts count: the compound key differs from each part's own key.
    assert expected_key != cache_policies.INPUTS.compute_key(combined, {"x": 1}, None)
    assert expected_key != cache_policies.TASK_SOURCE.compute_key(combined, {"x": 1}, None)
    stored = [r for r in client.read_task_runs(flow_run_id) if r.state.name == "Completed"]
    assert expected_key in {r.state.state_details.cache_key for r in stored}


def test_run_id_policy_caches_only_within_a_flow_run(client: Any) -> None:
    calls: list[int] = []

    @task(cache_policy=cache_policies.RUN_ID + cache_policies.INPUTS)
    def per_run(x: int) -> int:
        calls.append(x)
        return x

    def body() -> list[str]:
        return [per_run(1, return_state=True).name, per_run(1, return_state=True).name]

    first, _ = run_in_flow(body, name="run-a")
    second, _ = run_in_flow(body, name="run-b")
    assert first.result() == ["Completed", "Cached"]
    assert second.result() == ["Completed", "Cached"]
    assert calls == [1, 1]


# -- results ----------------------------------------------------------------------------------------
def test_persisted_result_is_readable_from_the_store(client: Any) -> None:
    ids: list[str] = []

    @task
    def make() -> dict[str, Any]:
        ids.append(current_task_run_id())
        return {"answer": 42, "items": [1, 2, 3]}

    state, _ = run_in_flow(lambda: make() and None)
    assert state.is_completed()
    stored = client.read_task_run(ids[0])  # a fresh record from the store, no in-memory value
    assert stored.state.result_ref is not None and "inline" in stored.state.result_ref
    assert stored.state.result() == {"answer": 42, "items": [1, 2, 3]}


def test_large_result_is_stored_in_s3_by_reference(client: Any) -> None:
    ids: list[str] = []
    payload = os.urandom(100_000)

    @task
    def big() -> bytes:
        ids.append(current_task_run_id())
        return payload

    state, _ = run_in_flow(lambda: len(big()))
    assert state.result() == 100_000
    stored = client.read_task_run(ids[0])
    ref = stored.state.result_ref
    assert ref is not None and "uri" in ref and "inline" not in ref
    assert ref["uri"].startswith("s3://")
    assert stored.state.result() == payload


def test_persist_result_false_keeps_no_reference(client: Any) -> None:
    ids: list[str] = []

    @task(persist_result=False)
    def ephemeral() -> int:
        ids.append(current_task_run_id())
        return 5

    state, _ = run_in_flow(lambda: ephemeral())
    assert state.result() == 5  # the in-memory value still flows through
    stored = client.read_task_run(ids[0])
    assert stored.state.type == StateType.COMPLETED
    assert stored.state.result_ref is None
    with pytest.raises(Exception, match="persist"):
        stored.state.result()


def test_unpicklable_result_completes_with_a_warning(client: Any) -> None:
    ids: list[str] = []
    lock = threading.Lock()

    @task
    def locky() -> Any:
        ids.append(current_task_run_id())
        return lock

    state, flow_run_id = run_in_flow(lambda: locky() is lock)
    assert state.result() is True
    stored = client.read_task_run(ids[0])
    assert stored.state.type == StateType.COMPLETED
    assert stored.state.result_ref is None
    warnings = [log for log in client.iter_logs(flow_run_id) if log.task_run_id == ids[0] and log.level == 30]
    assert any("not persisted" in log.message for log in warnings)


# -- naming, tags, hooks ------------------------------------------------------------------------------
def test_task_run_name_template_and_tags(client: Any) -> None:
    @task(task_run_name="{x}-t", tags=["etl", "fast"])
    def named(x: int) -> int:
        return x

    @task(task_run_name=lambda: "fixed-name")
    def fixed() -> None:
        return None

    _, flow_run_id = run_in_flow(lambda: (named(3), fixed()))
    runs = {r.name: r for r in client.read_task_runs(flow_run_id)}
    assert set(runs) == {"3-t", "fixed-name"}
    assert {"etl", "fast"} <= set(runs["3-t"].tags)
    assert runs["fixed-name"].tags == []


def test_task_hooks_fire_on_the_right_outcome(client: Any) -> None:
    events: list[tuple[str, str, str, str]] = []

    def on_ok(t: Any, run: TaskRun, state: State) -> None:
        events.append(("completion", t.name, run.id, state.name))

    def on_bad(t: Any, run: TaskRun, state: State) -> None:
        events.append(("failure", t.name, run.id, state.name))

    def exploding(t: Any, run: TaskRun, state: State) -> None:
        raise RuntimeError("hook blew up")

    @task(on_completion=[exploding, on_ok], on_failure=[on_bad])
    def good() -> int:
        return 1

    @task(on_completion=[on_ok], on_failure=[on_bad])
    def bad() -> None:
        raise Unreliable("bad task")

    def body() -> None:
        assert good() == 1
        bad(return_state=True)

    state, flow_run_id = run_in_flow(body)
    assert state.is_completed()
    runs = {r.name: r for r in client.read_task_runs(flow_run_id)}
    assert events == [
        ("completion", "good", runs["good-0"].id, "Completed"),
        ("failure", "bad", runs["bad-0"].id, "Failed"),
    ]
    assert runs["good-0"].state.type == StateType.COMPLETED  # the exploding hook changed nothing
    logs = list(client.iter_logs(flow_run_id, task_run_id=runs["good-0"].id))
    assert any("exploding" in log.message and log.level >= 40 for log in logs)


# -- submit, map, wait_for, futures --------------------------------------------------------------------
def test_submit_returns_a_future(client: Any) -> None:
    @task
    def slow_add(x: int) -> int:
        time.sleep(0.05)
        return x + 1

    def body() -> tuple[Any, ...]:
        fut = slow_add.submit(1)
        assert isinstance(fut, StratoflowFuture)
        fut.wait()
        assert fut.done()
        return fut.task_run_id, fut.result(), fut.state

    state, flow_run_id = run_in_flow(body)
    run_id, value, fut_state = state.result()
    assert value == 2
    assert fut_state.is_completed()
    stored = client.read_task_run(run_id)
    assert stored.flow_run_id == flow_run_id
    assert stored.state.id == fut_state.id
    assert names(stored.state_history) == ["Pending", "Running", "Completed"]


def test_future_result_raises_the_task_exception(client: Any) -> None:
    @task
    def bad() -> None:
        raise Unreliable("from a thread")

    def body() -> str:
        fut = bad.submit()
        with pytest.raises(Unreliable, match="from a thread"):
            fut.result()
        assert fut.result(raise_on_failure=False).args == ("from a thread",)
        assert fut.state.is_failed()
        return fut.task_run_id

    state, _ = run_in_flow(body)
    assert client.read_task_run(state.result()).state.type == StateType.FAILED


def test_map_with_unmapped_argument(client: Any) -> None:
    @task
    def scale(x: int, factor: int, extra: list[int]) -> int:
        return x * factor + len(extra)

    def body() -> tuple[list[int], list[str]]:
        futures = scale.map([1, 2, 3], 10, unmapped([7, 7]))
        return futures.result(), [f.task_run_id for f in futures]

    state, flow_run_id = run_in_flow(body)
    values, ids = state.result()
    assert values == [12, 22, 32]
    runs = {r.id: r for r in client.read_task_runs(flow_run_id)}
    assert set(runs) == set(ids)
    for run_id, value in zip(ids, values, strict=True):
        assert runs[run_id].state.type == StateType.COMPLETED
        assert runs[run_id].state.result() == value
    assert sorted(r.dynamic_key for r in runs.values()) == ["0", "1", "2"]


def test_map_with_mismatched_lengths_raises(client: Any) -> None:
    @task
    def pair(a: int, b: int) -> int:
        return a + b

    def body() -> None:
        with pytest.raises(ValueError, match="length"):
            pair.map([1, 2, 3], [1, 2])

    state, flow_run_id = run_in_flow(body)
    assert state.is_completed()
    assert client.read_task_runs(flow_run_id) == []


def test_wait_for_orders_execution(client: Any) -> None:
    marks: dict[str, float] = {}

    @task
    def first() -> None:
        time.sleep(0.15)
        marks["first_end"] = time.monotonic()

    @task
    def second() -> None:
        marks["second_start"] = time.monotonic()

    def body() -> None:
        f = first.submit()
        second.submit(wait_for=[f]).wait()

    state, flow_run_id = run_in_flow(body)
    assert state.is_completed()
    assert marks["second_start"] >= marks["first_end"]
    runs = client.read_task_runs(flow_run_id)
    assert all(r.state.type == StateType.COMPLETED for r in runs) and len(runs) == 2


def test_failed_upstream_fails_downstream_without_running_it(client: Any) -> None:
    ran: list[str] = []

    @task
    def upstream_breaks() -> None:
        raise Unreliable("upstream failed")

    @task
    def downstream() -> None:
        ran.append("downstream")

    @task
    def consumer(x: Any) -> None:
        ran.append("consumer")

    def body() -> tuple[str, str]:
        up = upstream_breaks.submit()
        down = downstream.submit(wait_for=[up])
        cons = consumer.submit(up)
        down.wait()
        cons.wait()
        return down.task_run_id, cons.task_run_id

    state, _ = run_in_flow(body)
    down_id, cons_id = state.result()
    assert ran == []
    for run_id in (down_id, cons_id):
        run = client.read_task_run(run_id)
        assert run.state.type == StateType.FAILED
        assert "upstream_breaks" in (run.state.message or "")
        assert run.run_count == 0
        assert names(run.state_history) == ["Pending", "Failed"]


def test_futures_as_arguments_resolve_and_record_task_inputs(client: Any) -> None:
    received: list[Any] = []

    @task
    def produce(x: int) -> int:
        return x * 2

    @task
    def consume(a: int, many: list[int]) -> int:
        received.append((a, many))
        return a + sum(many)

    def body() -> tuple[int, list[str], str]:
        p1 = produce.submit(1)
        p2 = produce.submit(2)
        p3 = produce.submit(3)
        c = consume.submit(p1, [p2, p3])
        return c.result(), [p1.task_run_id, p2.task_run_id, p3.task_run_id], c.task_run_id

    state, _ = run_in_flow(body)
    value, (id1, id2, id3), consumer_id = state.result()
    assert value == 2 + 4 + 6
    assert received == [(2, [4, 6])]
    consumer_run = client.read_task_run(consumer_id)
    assert consumer_run.task_inputs == {"a": [id1], "many": [id2, id3]}


def test_submitted_tasks_run_concurrently(client: Any) -> None:
    @task
    def nap(i: int) -> int:
        time.sleep(0.2)
        return i

    def body() -> tuple[list[int], float]:
        start = time.monotonic()
        futures = [nap.submit(i) for i in range(20)]
        values = [f.result() for f in futures]
        return values, time.monotonic() - start

    state, flow_run_id = run_in_flow(body)
    values, elapsed = state.result()
    assert values == list(range(20))
    assert elapsed < 2.5, f"20 x 0.2 s took {elapsed:.2f}s: not concurrent"
    runs = client.read_task_runs(flow_run_id)
    assert len(runs) == 20 and all(r.state.type == StateType.COMPLETED for r in runs)


# -- logs -------------------------------------------------------------------------------------------
def test_get_run_logger_in_task_stores_logs_with_task_run_id(client: Any) -> None:
    ids: list[str] = []

    @task
    def talker() -> None:
        ids.append(current_task_run_id())
        logger = get_run_logger()
        logger.warning("careful now")
        logger.debug("too quiet to store")

    def body() -> None:
        get_run_logger().info("flow speaking")
        talker()

    _, flow_run_id = run_in_flow(body)
    logs = list(client.iter_logs(flow_run_id))
    task_lines = [log for log in logs if log.message == "careful now"]
    assert len(task_lines) == 1
    assert task_lines[0].task_run_id == ids[0] and task_lines[0].level == 30
    assert task_lines[0].flow_run_id == flow_run_id
    flow_lines = [log for log in logs if log.message == "flow speaking"]
    assert len(flow_lines) == 1 and flow_lines[0].task_run_id is None and flow_lines[0].level == 20
    assert not any("too quiet" in log.message for log in logs)
    # Filtering by task run and by level, server side.
    only_task = list(client.iter_logs(flow_run_id, task_run_id=ids[0]))
    assert only_task and all(log.task_run_id == ids[0] for log in only_task)
    warnings = list(client.iter_logs(flow_run_id, min_level=30))
    assert "careful now" in [log.message for log in warnings]
    assert all(log.level >= 30 for log in warnings)


def test_logs_come_back_in_order_and_paginate(client: Any) -> None:
    def body() -> None:
        logger = get_run_logger()
        for i in range(300):
            logger.info("line %03d", i)

    _, flow_run_id = run_in_flow(body)
    expected = [f"line {i:03d}" for i in range(300)]
    all_logs = list(client.iter_logs(flow_run_id))
    assert [log.message for log in all_logs if log.message.startswith("line ")] == expected

    pages: list[list[str]] = []
    cursor = None
    for _ in range(100):
        page = client.read_logs(flow_run_id, limit=50, cursor=cursor)
        if not page.logs:
            break
        assert len(page.logs) <= 50
        pages.append([log.message for log in page.logs])
        assert page.next_cursor is not None
        cursor = page.next_cursor
    assert len(pages[0]) == 50
    assert len(pages) >= 6
    flat = [m for p in pages for m in p]
    assert flat == [log.message for log in all_logs]
    assert [m for m in flat if m.startswith("line ")] == expected


# -- interruption -----------------------------------------------------------------------------------
def test_keyboard_interrupt_in_task_records_the_task_run_as_crashed(client: Any) -> None:
    """Ctrl-C inside a task: the interrupt propagates and the flow run is Crashed; the task run
    must not be left Running (or unrecorded) but be recorded Crashed as well."""
    ids: list[str] = []
    flow_ids: list[str] = []

    @task
    def interrupted_task() -> None:
        ids.append(current_task_run_id())
        raise KeyboardInterrupt

    @flow(name="ctrl-c")
    def ctrl_c() -> None:
        flow_ids.append(current_flow_run_id())
        interrupted_task()

    with pytest.raises(KeyboardInterrupt):
        ctrl_c()
    assert client.read_flow_run(flow_ids[0]).state.type == StateType.CRASHED
    runs = client.read_task_runs(flow_ids[0])
    assert [r.id for r in runs] == ids
    assert runs[0].state.type == StateType.CRASHED
    assert "KeyboardInterrupt" in (runs[0].state.message or "")


def test_get_run_logger_outside_a_run_raises() -> None:
    from stratoflow.exceptions import StratoflowError

    with pytest.raises(StratoflowError, match="outside of a flow run or task run"):
        get_run_logger()
