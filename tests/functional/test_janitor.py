"""The janitor on the embedded cloud: Late runs, lost executors, stuck cancellations, leaked slots.

Time is driven by passing ``now=`` to the janitor (no sleeps): a heartbeat written "now" is stale
for a tick two minutes later. A dead executor is simulated by doing what it had done before it
died (the claim, Running, a task run started, heartbeats) and then nothing more; the run's
message is then executed by the real executor handler, as in test_executor.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from stratoflow import janitor
from stratoflow.client import StratoflowClient, get_client
from stratoflow.control import transitions
from stratoflow.deployments import deploy
from stratoflow.local.event_sources import sqs_event
from stratoflow.local.lambda_runtime import FunctionConfig, LambdaContext, load_handler
from stratoflow.models import FlowRun, ObjectKind, RetryPolicy, TaskRun
from stratoflow.orchestration import RunKind
from stratoflow.settings import get_settings, reset_settings
from stratoflow.states import Cancelling, Completed, Pending, Running, StateType, now
from stratoflow.storage import get_server_store
from stratoflow.storage import slots as concurrency
from stratoflow.storage.base import Store
from stratoflow.workpools.sqs import QueueTarget, ReceivedMessage, SqsQueues

pytestmark = pytest.mark.store_only("drives the store and the pools' SQS queues directly; the dev stack would "
                                    "run its own executor and janitor against them")

ROOT = Path(__file__).resolve().parents[2]
EXECUTOR = ROOT / "functions" / "executor" / "app.py"
JANITOR = ROOT / "functions" / "janitor" / "app.py"
LATER = timedelta(minutes=2)  # past every heartbeat timeout

FLOWS = '''
from pathlib import Path

from stratoflow import flow, task, unmapped


@task
def square(x: int, marker: str) -> int:
    return x * x


@flow(retries={retries})
def etl(n: int = 3, marker: str = "") -> int:
    with open(marker, "a") as fh:
        fh.write("run\\n")
    return sum(square.map(range(n), marker=unmapped(marker)).result())
'''


@pytest.fixture(autouse=True)
def settings_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRATOFLOW_PACKAGE_CACHE_DIR", str(tmp_path / "package-cache"))
    reset_settings()


@pytest.fixture
def store() -> Store:
    return get_server_store()


def _deploy(tmp_path: Path, client: StratoflowClient, *, retries: int = 1) -> tuple[str, str]:
    pool = f"pool-{uuid.uuid4().hex[:8]}"
    client.create_work_pool(pool)
    src = tmp_path / f"src-{retries}"
    src.mkdir(exist_ok=True)
    (src / "flows.py").write_text(FLOWS.replace("{retries}", str(retries)))
    deployment = deploy("flows.py:etl", name="prod", work_pool=pool, source_dir=src, client=client)
    return f"{deployment.flow_name}/{deployment.name}", pool


def _receive(pool: str) -> list[ReceivedMessage]:
    record = next(q for q in get_client().read_work_queues(pool) if q.name == "default")
    sqs = SqsQueues(get_settings())
    assert record.queue_url is not None
    target = QueueTarget(record.queue_url, sqs.queue_arn(record.queue_url), pool, "default", record.priority)
    out: list[ReceivedMessage] = []
    while batch := sqs.receive(target, 10, 0):
        out.extend(batch)
    return out


def _execute(messages: list[ReceivedMessage]) -> dict[str, Any]:
    import time

    _, handler = load_handler(EXECUTOR, "lambda_handler", f"executor_{uuid.uuid4().hex}")
    config = FunctionConfig(handler_path=EXECUTOR, name="stratoflow-executor", timeout=60.0)
    context = LambdaContext(config, str(uuid.uuid4()), 1, time.monotonic() + 60.0)
    result: dict[str, Any] = handler(sqs_event(messages, "us-east-1"), context)
    return result


def _flow_run(store: Store, run_id: str) -> FlowRun:
    run = store.read_run(RunKind.FLOW, run_id)
    assert isinstance(run, FlowRun)
    return run


def _names(run: FlowRun | TaskRun) -> list[str]:
    return [s.name for s in run.state_history]


def _start(store: Store, run_id: str, *, retries: int = 0, beat: bool = True, task: bool = True) -> FlowRun:
    """What an executor does before it dies: claim (Pending), Running, a task run started, a beat."""
    run = _flow_run(store, run_id).model_copy(update={"retry_policy": RetryPolicy(retries=retries)})
    _, run = transitions.propose(store, RunKind.FLOW, run, Pending())  # type: ignore[assignment]
    _, run = transitions.propose(store, RunKind.FLOW, run, Running())  # type: ignore[assignment]
    assert run.state_type == StateType.RUNNING
    if task:
        task_run = store.create_run(RunKind.TASK, TaskRun(name="square-0", task_key="square", flow_run_id=run.id))
        transitions.propose(store, RunKind.TASK, task_run, Running())
    if beat:
        store.put_object(ObjectKind.HEARTBEAT, run.id, {"at": now().isoformat(), "executor": "dead-host:1"})
    return run


def _interactive_run(store: Store, state: Any) -> FlowRun:
    """A flow run called in a user's process (no deployment, no heartbeat), moved to ``state``."""
    run = store.create_run(RunKind.FLOW, FlowRun(name="local", flow_name="local-flow"))
    _, run = transitions.propose(store, RunKind.FLOW, run, Running())
    if state.type != StateType.RUNNING:
        _, run = transitions.propose(store, RunKind.FLOW, run, state)
    assert isinstance(run, FlowRun)
    return run


# -- Late -----------------------------------------------------------------------------------------------
def test_a_past_due_scheduled_run_becomes_late_and_a_claimed_one_is_not_touched(tmp_path: Path,
                                                                                 store: Store) -> None:
    client = get_client()
    name, _ = _deploy(tmp_path, client)
    waiting = client.create_flow_run_from_deployment(name, parameters={"marker": str(tmp_path / "m")})
    claimed = client.create_flow_run_from_deployment(name, parameters={"marker": str(tmp_path / "m")})
    future = client.create_flow_run_from_deployment(name, parameters={"marker": str(tmp_path / "m")},
                                                    scheduled_time=now() + timedelta(hours=1))
    transitions.propose(store, RunKind.FLOW, _flow_run(store, claimed.id), Pending())
    store.put_object(ObjectKind.HEARTBEAT, claimed.id, {"at": (now() + LATER).isoformat(), "executor": "alive:1"})

    early = janitor.tick(store, get_settings(), now=now() + timedelta(seconds=5))
    assert early.late == [] and early.errors == []

    report = janitor.tick(store, get_settings(), now=now() + LATER)
    assert report.late == [waiting.id] and report.errors == []
    late = _flow_run(store, waiting.id)
    assert late.state is not None and late.state.type == StateType.SCHEDULED and late.state.name == "Late"
    assert waiting.state is not None
    assert late.state.state_details.scheduled_time == waiting.state.state_details.scheduled_time
    assert _names(late) == ["Scheduled", "Late"]
    assert _names(_flow_run(store, claimed.id)) == ["Scheduled", "Pending"]
    assert _names(_flow_run(store, future.id)) == ["Scheduled"]

    again = janitor.tick(store, get_settings(), now=now() + LATER)
    assert again.late == [] and _names(_flow_run(store, waiting.id)) == ["Scheduled", "Late"]


class _ClaimsAfterReading:
    """The store, except that every run it lists is claimed by an executor right after the janitor
    read it: the janitor's write then finds a run that moved."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def page_flow_runs(self, query: Any) -> Any:
        runs, cursor = self._store.page_flow_runs(query)
        for run in runs:
            transitions.propose(self._store, RunKind.FLOW, run, Pending())
        return runs, cursor


def test_a_run_claimed_between_the_janitors_read_and_write_is_left_alone(tmp_path: Path, store: Store) -> None:
    client = get_client()
    name, _ = _deploy(tmp_path, client)
    run = client.create_flow_run_from_deployment(name, parameters={"marker": str(tmp_path / "m")})
    marked = janitor.mark_late(_ClaimsAfterReading(store), get_settings(), now=now() + LATER)  # type: ignore[arg-type]
    assert marked == []
    assert _names(_flow_run(store, run.id)) == ["Scheduled", "Pending"]  # not moved back to Scheduled (Late)


# -- lost executors -------------------------------------------------------------------------------------
def test_killing_the_executor_mid_flow_leaves_it_crashed_then_the_retry_runs_and_completes(
        tmp_path: Path, store: Store) -> None:
    client = get_client()
    name, pool = _deploy(tmp_path, client, retries=1)
    marker = tmp_path / "marker"
    created = client.create_flow_run_from_deployment(name, parameters={"n": 3, "marker": str(marker)})
    assert [json.loads(m.body)["flow_run_id"] for m in _receive(pool)] == [created.id]  # the executor took it
    _start(store, created.id, retries=1)
    (dead_task,) = store.list_task_runs(created.id)

    alive = janitor.tick(store, get_settings(), now=now() + timedelta(seconds=5))
    assert alive.crashed == [] and _flow_run(store, created.id).state_type == StateType.RUNNING

    report = janitor.tick(store, get_settings(), now=now() + LATER)
    assert report.crashed == [created.id] and report.retried == [created.id], report
    assert report.crashed_task_runs == [dead_task.id] and report.errors == []
    run = _flow_run(store, created.id)
    assert run.state is not None and run.state.name == "AwaitingRetry"
    assert "stopped reporting heartbeats (last at" in (run.state.message or "")
    assert "Lambda timeout, out of memory, killed" in (run.state.message or "")
    task_run = store.read_run(RunKind.TASK, dead_task.id)
    assert task_run.state_type == StateType.CRASHED

    messages = _receive(pool)
    assert [json.loads(m.body)["flow_run_id"] for m in messages] == [created.id]  # sent again
    assert _execute(messages) == {"batchItemFailures": []}

    done = _flow_run(store, created.id)
    assert done.state_type == StateType.COMPLETED and done.run_count == 2
    assert done.state is not None and done.state.result() == 0 + 1 + 4
    assert _names(done) == ["Scheduled", "Pending", "Running", "AwaitingRetry", "Pending", "Running", "Completed"]
    assert marker.read_text().count("run") == 1  # the second attempt ran the body (the first died before it)
    tasks = store.list_task_runs(created.id)
    assert sorted(t.state_type.value for t in tasks if t.state_type) == ["COMPLETED"] * 3 + ["CRASHED"]
    after = janitor.tick(store, get_settings(), now=now() + LATER)
    assert after.crashed == [] and after.errors == []


def test_a_lost_run_without_retries_stays_crashed_and_interactive_runs_are_not_judged(
        tmp_path: Path, store: Store) -> None:
    client = get_client()
    name, pool = _deploy(tmp_path, client, retries=0)
    created = client.create_flow_run_from_deployment(name, parameters={"marker": str(tmp_path / "m")})
    _receive(pool)
    _start(store, created.id, beat=False, task=False)  # died before its first beat
    interactive = _interactive_run(store, Running())

    report = janitor.tick(store, get_settings(), now=now() + LATER)
    assert report.crashed == [created.id] and report.retried == []
    run = _flow_run(store, created.id)
    assert run.state is not None and run.state.type == StateType.CRASHED
    assert "none was ever recorded" in (run.state.message or "")
    assert _names(run) == ["Scheduled", "Pending", "Running", "Crashed"]
    assert _receive(pool) == []
    assert _names(_flow_run(store, interactive.id)) == ["Running"]


# -- cancellations --------------------------------------------------------------------------------------
def test_a_cancelling_run_whose_executor_stopped_becomes_cancelled(tmp_path: Path, store: Store) -> None:
    client = get_client()
    name, pool = _deploy(tmp_path, client)
    stopped = client.create_flow_run_from_deployment(name, parameters={"marker": str(tmp_path / "m")})
    live = client.create_flow_run_from_deployment(name, parameters={"marker": str(tmp_path / "m")})
    _receive(pool)
    for run_id in (stopped.id, live.id):
        _start(store, run_id)
        client.cancel_flow_run(run_id)
    orphan = _interactive_run(store, Cancelling())
    later = now() + LATER
    store.put_object(ObjectKind.HEARTBEAT, live.id, {"at": later.isoformat(), "executor": "alive:1"})

    early = janitor.tick(store, get_settings(), now=now() + timedelta(seconds=5))
    assert early.cancelled == [] and early.crashed == []

    report = janitor.tick(store, get_settings(), now=later)
    assert sorted(report.cancelled) == sorted([stopped.id, orphan.id]) and report.crashed == []
    done = _flow_run(store, stopped.id)
    assert _names(done) == ["Scheduled", "Pending", "Running", "Cancelling", "Cancelled"]
    assert done.state is not None and "its executor stopped" in (done.state.message or "")
    (task_run,) = store.list_task_runs(stopped.id)
    assert task_run.state_type == StateType.CANCELLED and report.cancelled_task_runs == [task_run.id]
    assert _flow_run(store, live.id).state_type == StateType.CANCELLING  # its executor still beats
    assert _flow_run(store, orphan.id).state_type == StateType.CANCELLED


# -- slots ----------------------------------------------------------------------------------------------
def test_slots_of_dead_runs_are_released_and_live_holders_keep_theirs(tmp_path: Path, store: Store) -> None:
    client = get_client()
    name, pool = _deploy(tmp_path, client)
    runs = [client.create_flow_run_from_deployment(name, parameters={"marker": str(tmp_path / "m")})
            for _ in range(4)]
    _receive(pool)
    finished, lost, live, idle = (r.id for r in runs)
    started = _start(store, finished, task=False)
    transitions.propose(store, RunKind.FLOW, started, Completed())
    _start(store, lost, task=False)
    _start(store, live)
    later = now() + LATER
    store.put_object(ObjectKind.HEARTBEAT, live, {"at": later.isoformat(), "executor": "alive:1"})
    limit = concurrency.deployment_limit(runs[0].deployment_id or "", 10)
    for holder in (finished, lost, live, idle, "deleted-run"):
        assert concurrency.acquire(store, limit, holder)
    # A tag limit held by task runs: one of the live flow run (kept), one finished, one deleted.
    tag = concurrency.Limit(ObjectKind.CONCURRENCY_LIMIT, "db", 5)
    (live_task,) = store.list_task_runs(live)
    done_task = store.create_run(RunKind.TASK, TaskRun(name="t-1", task_key="t", flow_run_id=live))
    transitions.propose(store, RunKind.TASK, done_task, Running())
    transitions.propose(store, RunKind.TASK, done_task.id, Completed())
    for holder in (live_task.id, done_task.id, "deleted-task-run"):
        assert concurrency.acquire(store, tag, holder)

    report = janitor.tick(store, get_settings(), now=later)
    assert report.errors == [] and report.crashed == [lost]
    assert concurrency.holders(store, limit) == [live, idle]  # idle: maybe between its slot and its claim
    assert concurrency.holders(store, tag) == [live_task.id]
    assert sorted(report.released) == sorted([f"{finished}@{limit.label}", f"{lost}@{limit.label}",
                                              f"deleted-run@{limit.label}", f"{done_task.id}@tag:db",
                                              "deleted-task-run@tag:db"])

    # Still Scheduled with no executor a timeout later: its slot is given back too.
    store.put_object(ObjectKind.HEARTBEAT, live, {"at": (later + LATER).isoformat(), "executor": "alive:1"})
    final = janitor.tick(store, get_settings(), now=later + LATER)
    assert final.released == [f"{idle}@{limit.label}"] and final.errors == []
    assert concurrency.holders(store, limit) == [live]
    assert store.list_objects(ObjectKind.JANITOR_SUSPECT).objects == []  # its sighting was forgotten


# -- concurrency and robustness -------------------------------------------------------------------------
def test_two_janitors_at_once_end_where_one_would(tmp_path: Path, store: Store) -> None:
    client = get_client()
    name, pool = _deploy(tmp_path, client, retries=1)
    marker = tmp_path / "marker"
    late, lost, cancelling = (client.create_flow_run_from_deployment(name, parameters={"marker": str(marker)})
                              for _ in range(3))
    _receive(pool)
    _start(store, lost.id, retries=1)
    _start(store, cancelling.id)
    client.cancel_flow_run(cancelling.id)
    limit = concurrency.deployment_limit(late.deployment_id or "", 2)
    assert concurrency.acquire(store, limit, "deleted-run")
    when = now() + LATER
    reports: list[janitor.JanitorReport] = []
    barrier = threading.Barrier(2)

    def sweep() -> None:
        barrier.wait()
        reports.append(janitor.tick(store, get_settings(), now=when))

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(reports) == 2 and all(r.errors == [] for r in reports), reports
    assert sorted(i for r in reports for i in r.late) == [late.id]
    assert sorted(i for r in reports for i in r.crashed) == [lost.id]
    assert sorted(i for r in reports for i in r.cancelled) == [cancelling.id]
    assert sum(len(r.crashed_task_runs) for r in reports) == 1
    assert sum(len(r.released) for r in reports) == 1
    assert _names(_flow_run(store, late.id)) == ["Scheduled", "Late"]
    assert _names(_flow_run(store, lost.id)) == ["Scheduled", "Pending", "Running", "AwaitingRetry"]
    assert _names(_flow_run(store, cancelling.id)) == ["Scheduled", "Pending", "Running", "Cancelling", "Cancelled"]
    assert concurrency.holders(store, limit) == []
    # However many copies went out, the retry runs once.
    messages = _receive(pool)
    assert {json.loads(m.body)["flow_run_id"] for m in messages} == {lost.id}
    assert _execute(messages) == {"batchItemFailures": []}
    assert marker.read_text().count("run") == 1
    assert _names(_flow_run(store, lost.id))[-3:] == ["Pending", "Running", "Completed"]
    quiet = janitor.tick(store, get_settings(), now=when)
    assert quiet.counts() == {k: 0 for k in quiet.counts()}


def test_a_bad_record_does_not_stop_the_tick(tmp_path: Path, store: Store) -> None:
    client = get_client()
    name, pool = _deploy(tmp_path, client, retries=0)
    bad, good, late = (client.create_flow_run_from_deployment(name, parameters={"marker": str(tmp_path / "m")})
                       for _ in range(3))
    _receive(pool)
    _start(store, bad.id, task=False)
    _start(store, good.id, task=False)
    store.put_object(ObjectKind.HEARTBEAT, bad.id, {"at": "yesterday-ish", "executor": "?"})

    report = janitor.tick(store, get_settings(), now=now() + LATER)
    assert report.crashed == [good.id] and report.late == [late.id]
    assert len(report.errors) == 1 and bad.id in report.errors[0] and "crash_lost_runs" in report.errors[0]
    assert _flow_run(store, bad.id).state_type == StateType.RUNNING
    assert _flow_run(store, good.id).state_type == StateType.CRASHED


# -- the Lambda function ----------------------------------------------------------------------------------
def test_the_janitor_function_returns_its_report_as_json(tmp_path: Path, store: Store) -> None:
    import time

    client = get_client()
    name, _ = _deploy(tmp_path, client)
    client.create_flow_run_from_deployment(name, parameters={"marker": str(tmp_path / "m")},
                                           scheduled_time=now() - timedelta(minutes=5))
    _, handler = load_handler(JANITOR, "lambda_handler", f"janitor_{uuid.uuid4().hex}")
    config = FunctionConfig(handler_path=JANITOR, name="stratoflow-janitor", timeout=60.0)
    event = {"source": "aws.events", "detail-type": "Scheduled Event", "time": now().isoformat(), "detail": {}}
    result = handler(event, LambdaContext(config, str(uuid.uuid4()), 1, time.monotonic() + 60.0))
    assert json.loads(json.dumps(result)) == result
    assert result["counts"]["late"] == 1 and result["errors"] == []


def test_importing_the_janitor_function_touches_no_aws() -> None:
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import app; "
            "bad = [m for m in ('boto3', 'moto', 'pynamodb', 'stratoflow.storage.dynamodb') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code, str(JANITOR.parent)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
