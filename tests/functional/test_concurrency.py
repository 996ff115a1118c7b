"""Concurrency limits: tag limits on task runs, deployment/queue limits on flow runs.

Slots are taken with conditional writes; these tests check from the recorded state histories
that a limit was never exceeded, that every run completed and that no slot is left held,
including when executors die mid-run and the janitor cleans up after them.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from stratoflow import flow, get_client, task
from stratoflow.models import FlowRun, TaskRun
from stratoflow.settings import get_settings, reset_settings
from stratoflow.states import StateType, now
from stratoflow.storage import get_server_store
from stratoflow.storage import slots as concurrency

pytestmark = pytest.mark.store_only("reads slot records and drives the executor in-process")


def max_overlap(runs: list[FlowRun] | list[TaskRun]) -> int:
    """The most runs RUNNING at one instant, from their state histories."""
    events: list[tuple[datetime, int]] = []
    for run in runs:
        history = run.state_history
        for i, state in enumerate(history):
            if state.type == StateType.RUNNING and (i == 0 or history[i - 1].type != StateType.RUNNING):
                end = next((s.timestamp for s in history[i + 1:] if s.type != StateType.RUNNING), None)
                events.append((state.timestamp, 1))
                events.append((end or now(), -1))
    level = peak = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        level += delta
        peak = max(peak, level)
    return peak


def test_a_tag_limit_bounds_task_runs_and_gives_every_slot_back() -> None:
    client = get_client()
    client.create_concurrency_limit("db", 2)

    @task(tags=["db"])
    def query(i: int) -> int:
        time.sleep(0.05)
        return i

    @task
    def free(i: int) -> int:
        return i

    @flow
    def fan_out() -> list[int]:
        return [*query.map(range(8)).result(), *free.map(range(4)).result()]

    state = fan_out(return_state=True)
    assert state.result() == [*range(8), *range(4)]
    runs = client.read_task_runs(state.state_details.flow_run_id or client.read_flow_runs(limit=1)[0].id)
    limited = [r for r in runs if "db" in r.tags]
    assert len(limited) == 8 and all(r.state_type == StateType.COMPLETED for r in limited)
    assert max_overlap(limited) <= 2
    assert client.read_concurrency_limit("db").active_slots == []


def test_a_zero_limit_blocks_until_raised() -> None:
    client = get_client()
    client.create_concurrency_limit("frozen", 0)

    @task(tags=["frozen"])
    def gated() -> str:
        return "ran"

    @flow
    def wait_for_gate() -> str:
        return gated()

    result: list[Any] = []
    runner = threading.Thread(target=lambda: result.append(wait_for_gate()))
    runner.start()
    time.sleep(0.5)
    assert result == []  # still waiting for a slot
    client.create_concurrency_limit("frozen", 1)
    runner.join(30)
    assert result == ["ran"]
    assert client.read_concurrency_limit("frozen").active_slots == []


FLOW = '''
import time
from stratoflow import flow

@flow(retries=3)
def work(i: int = 0) -> int:
    time.sleep(0.02)
    return i
'''


def _drain(pool: str, *, crash_rate: float = 0.0, runs: int, timeout: float = 240.0,
           monkeypatch: pytest.MonkeyPatch | None = None) -> None:
    """Executors: threads taking messages from the pool's queue and handing them to the executor
    handler; with ``crash_rate`` some deliveries "die" after the claim (no final state, no slot
    given back, no heartbeat), as a killed Lambda would, and the janitor repairs them."""
    from stratoflow import executor as executor_module
    from stratoflow import janitor
    from stratoflow.workpools.sqs import QueueTarget, SqsQueues

    settings = get_settings()
    store = get_server_store()
    client = get_client()
    queue = next(q for q in client.read_work_queues(pool) if q.name == "default")
    assert queue.queue_url is not None
    sqs = SqsQueues(settings)
    target = QueueTarget(queue.queue_url, sqs.arn_of(queue.queue_url), pool, "default")
    rng = random.Random(7)
    lock = threading.Lock()
    # The flow runs in a sandboxed process (stratoflow.sandbox); the executor dies in its own
    # process, after the claim, where it would otherwise hand the run to that process.
    original = executor_module._execute_isolated

    class Killed(BaseException):
        pass

    def maybe_crash(store_: Any, settings_: Any, run: FlowRun, *args: Any) -> Any:
        with lock:
            crash = rng.random() < crash_rate
        if not crash:
            return original(store_, settings_, run, *args)
        from stratoflow.control import transitions
        from stratoflow.models import RetryPolicy
        from stratoflow.orchestration import RunKind
        from stratoflow.states import Pending, Running

        run = run.model_copy(update={"retry_policy": RetryPolicy(retries=3)})  # as the flow's claim records it
        _, claimed = transitions.propose(store, RunKind.FLOW, run, Pending())
        transitions.propose(store, RunKind.FLOW, claimed, Running())
        _dead[run.id] = True  # from here on nothing of this executor runs: its slot stays taken
        raise Killed()  # the process dies here: nothing after this line of the executor runs

    if monkeypatch is not None:
        monkeypatch.setattr(executor_module, "_execute_isolated", maybe_crash)
        real_release = concurrency.release_all
        monkeypatch.setattr(concurrency, "release_all", lambda s, limits, holder: (
            None if _dead.get(holder) else real_release(s, limits, holder)))
    _dead: dict[str, bool] = {}
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            for message in sqs.receive(target, 1, 0):
                try:
                    executor_module.handle_message(message.body, store=store, settings=settings)
                    sqs.delete(target.url, message.receipt_handle)
                except Killed:
                    sqs.delete(target.url, message.receipt_handle)  # the message was consumed; the run is lost
                except executor_module.QueueMessagePaused:
                    sqs.change_visibility(target.url, message.receipt_handle, 0)
            time.sleep(0.05)

    threads = [threading.Thread(target=consume) for _ in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            done = client.read_flow_runs(state_types=[StateType.COMPLETED], limit=1000)
            if len(done) >= runs:
                break
            if crash_rate:
                # The janitor; live executors beat every 0.1 s, so 2 s of silence is a lost one.
                report = janitor.tick(store, settings, timeout=timedelta(seconds=2))
                for run_id in report.crashed:
                    _dead.pop(run_id, None)
            time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(30)


@pytest.mark.slow
@pytest.mark.parametrize(("crash_rate", "total"), [(0.0, 200), (0.15, 60)], ids=["200-steady", "60-executors-crash"])
def test_a_deployment_limit_of_5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_rate: float,
                                 total: int) -> None:
    from stratoflow.deployments import deploy

    monkeypatch.setenv("STRATOFLOW_PACKAGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("STRATOFLOW_HEARTBEAT_INTERVAL", "0.1")
    reset_settings()
    client = get_client()
    pool = f"pool-{uuid.uuid4().hex[:6]}"
    client.create_work_pool(pool)
    (tmp_path / "work.py").write_text(FLOW)
    dep = deploy("work.py:work", name="limited", work_pool=pool, source_dir=tmp_path, client=client)
    client.create_deployment(dep.flow_name, dep.name, concurrency_limit=5)
    for i in range(total):
        client.create_flow_run_from_deployment("work/limited", parameters={"i": i})
    _drain(pool, crash_rate=crash_rate, runs=total, monkeypatch=monkeypatch)

    runs = client.read_flow_runs(deployment_id=dep.id, limit=1000)
    assert len(runs) == total
    assert all(r.state_type == StateType.COMPLETED for r in runs), [r.state for r in runs
                                                                   if r.state_type != StateType.COMPLETED]
    assert max_overlap(runs) <= 5
    assert concurrency.holders(get_server_store(), concurrency.deployment_limit(dep.id, 5)) == []
    waited = [r for r in runs if any(s.name == "AwaitingConcurrencySlot" for s in r.state_history)]
    assert waited, "8 executors against a limit of 5: some runs must have waited for a slot"
    if crash_rate:
        assert any(any(s.name == "AwaitingRetry" for s in r.state_history) for r in runs), "no crash was injected"
