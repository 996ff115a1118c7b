"""Cancelling a running flow run, pausing (in place) and suspending (compute released) it."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from stratoflow import flow, get_client, pause_flow_run, resume_flow_run
from stratoflow.exceptions import RequestRefused, StratoflowError
from stratoflow.settings import get_settings, reset_settings
from stratoflow.states import StateType
from stratoflow.storage import get_server_store

pytestmark = pytest.mark.store_only("runs the executor handler in-process")

FLOWS = '''
import time
from pydantic import BaseModel
from stratoflow import flow, suspend_flow_run, task


@task
def step(i: int) -> int:
    return i


@flow
def long_loop(seconds: float = 30.0) -> int:
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += step(n)
        time.sleep(0.05)
    return n


class Approval(BaseModel):
    approved: bool
    by: str


@flow
def needs_approval() -> str:
    step(1)
    answer = suspend_flow_run(timeout=600, wait_for_input=Approval)
    return f"approved={answer.approved} by {answer.by}"
'''


def _until(predicate: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
def deployed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    from stratoflow.deployments import deploy

    monkeypatch.setenv("STRATOFLOW_PACKAGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("STRATOFLOW_HEARTBEAT_INTERVAL", "0.2")
    reset_settings()
    client = get_client()
    pool = f"pool-{uuid.uuid4().hex[:6]}"
    client.create_work_pool(pool)
    (tmp_path / "flows.py").write_text(FLOWS)
    deploy("flows.py:long_loop", name="d", work_pool=pool, source_dir=tmp_path, client=client)
    deploy("flows.py:needs_approval", name="d", work_pool=pool, source_dir=tmp_path, client=client)
    return pool


def _execute_next(pool: str) -> Any:
    """One executor delivery of the next message of the pool's default queue."""
    from stratoflow.executor import handle_message
    from stratoflow.workpools.sqs import QueueTarget, SqsQueues

    queue = next(q for q in get_client().read_work_queues(pool) if q.name == "default")
    assert queue.queue_url is not None
    sqs = SqsQueues(get_settings())
    target = QueueTarget(queue.queue_url, sqs.arn_of(queue.queue_url), pool, "default")
    (message,) = _until(lambda: sqs.receive(target, 1, 0))
    result = handle_message(message.body, store=get_server_store(), settings=get_settings())
    sqs.delete(queue.queue_url, message.receipt_handle)
    return result


def test_cancelling_a_running_deployment_run_stops_it_within_seconds(deployed: str) -> None:
    client = get_client()
    run = client.create_flow_run_from_deployment("long-loop/d", parameters={"seconds": 60})
    outcome: list[Any] = []
    executor = threading.Thread(target=lambda: outcome.append(_execute_next(deployed)))
    executor.start()
    _until(lambda: client.read_flow_run(run.id).state_type == StateType.RUNNING)
    time.sleep(0.3)
    asked = time.monotonic()
    assert client.cancel_flow_run(run.id).state_type == StateType.CANCELLING
    executor.join(30)
    stopped_after = time.monotonic() - asked
    done = client.read_flow_run(run.id)
    assert done.state_type == StateType.CANCELLED, done.state
    assert stopped_after < 5, f"took {stopped_after:.1f}s to stop"
    assert [s.name for s in done.state_history][-2:] == ["Cancelling", "Cancelled"]
    assert outcome and outcome[0].outcome.value == "ran"


def test_suspend_releases_the_executor_and_resume_runs_it_again_with_the_input(deployed: str) -> None:
    client = get_client()
    run = client.create_flow_run_from_deployment("needs-approval/d")
    first = _execute_next(deployed)
    assert first.state == "Suspended"  # the executor is free again; the run waits
    suspended = client.read_flow_run(run.id)
    assert suspended.state_type == StateType.PAUSED and suspended.state_name == "Suspended"

    with pytest.raises(RequestRefused) as bad:
        resume_flow_run(run.id, run_input={"approved": "maybe"})
    assert bad.value.status_code == 422 and "run_input.approved" in str(bad.value)
    assert client.read_flow_run(run.id).state_name == "Suspended"  # nothing changed

    resumed = resume_flow_run(run.id, run_input={"approved": True, "by": "ops"})
    assert resumed.state_type == StateType.SCHEDULED
    _execute_next(deployed)  # sent to the queue again by the resume
    done = client.read_flow_run(run.id)
    assert done.state_type == StateType.COMPLETED
    assert done.state is not None and done.state.result() == "approved=True by ops"


class Sizes(BaseModel):
    rows: int


def test_pause_waits_in_place_for_a_resume_with_input() -> None:
    client = get_client()
    results: list[Any] = []

    @flow
    def gated() -> int:
        answer = pause_flow_run(timeout=30, wait_for_input=Sizes)
        return answer.rows * 2

    worker = threading.Thread(target=lambda: results.append(gated(return_state=True)))
    worker.start()
    paused = _until(lambda: next((r for r in client.read_flow_runs(flow_name="gated", limit=5)
                                  if r.state_type == StateType.PAUSED), None))
    resume_flow_run(paused.id, run_input={"rows": 21})
    worker.join(30)
    assert results and results[0].result() == 42
    history = [s.name for s in client.read_flow_run(paused.id).state_history]
    assert history[-3:] == ["Paused", "Running", "Completed"]


def test_a_pause_that_times_out_fails_the_run() -> None:
    @flow
    def impatient() -> str:
        pause_flow_run(timeout=0.3)
        return "never"

    state = impatient(return_state=True)
    assert state.type == StateType.FAILED
    with pytest.raises(StratoflowError):
        state.result()
