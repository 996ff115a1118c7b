"""The executor Lambda handler over SQS (moto in-process): claims, duplicates, deadlines, pauses.

Flows are deployed from a temporary directory (a real package in S3), their runs sent to the
pool's SQS queue by the API operation, received from SQS and handed to
``functions/executor/app.py:lambda_handler`` as the event source mapping would.
"""

from __future__ import annotations

import json
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from stratoflow.client import StratoflowClient, get_client
from stratoflow.deployments import deploy
from stratoflow.local.event_sources import sqs_event
from stratoflow.local.lambda_runtime import FunctionConfig, LambdaContext, LocalFunction, load_handler
from stratoflow.settings import get_settings, reset_settings
from stratoflow.states import StateType
from stratoflow.workpools.sqs import QueueTarget, ReceivedMessage, SqsQueues

HANDLER = Path(__file__).resolve().parents[2] / "functions" / "executor" / "app.py"

FLOWS = '''
import time
from pathlib import Path

from stratoflow import flow, task, unmapped


@task(retries=1)
def square(x: int, marker: str) -> int:
    Path(marker + ".tasks").open("a").write(f"{x}\\n")
    return x * x


@flow(retries={retries})
def etl(n: int = 3, marker: str = "", slow_first: float = 0.0) -> int:
    attempts = Path(marker).read_text().count("run") if Path(marker).exists() else 0
    with open(marker, "a") as fh:
        fh.write("run\\n")
    if slow_first and attempts == 0:
        # Python-level work: a deadline raised into a thread (the local runtime runs handlers in
        # threads) lands between bytecodes; on Lambda (main thread) a signal interrupts any sleep.
        end = time.monotonic() + slow_first
        while time.monotonic() < end:
            time.sleep(0.05)
    return sum(square.map(range(n), marker=unmapped(marker)).result())
'''


@pytest.fixture
def settings_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRATOFLOW_PACKAGE_CACHE_DIR", str(tmp_path / "package-cache"))
    reset_settings()


def _deploy(tmp_path: Path, client: StratoflowClient, *, retries: int = 1, pool: str | None = None) -> tuple[str, str]:
    pool = pool or f"pool-{uuid.uuid4().hex[:8]}"
    client.create_work_pool(pool)
    src = tmp_path / f"src-{retries}"
    src.mkdir()
    (src / "flows.py").write_text(FLOWS.replace("{retries}", str(retries)))
    deployment = deploy("flows.py:etl", name="prod", work_pool=pool, source_dir=src, client=client)
    return f"{deployment.flow_name}/{deployment.name}", pool


def _receive(pool: str, queue: str = "default", wait: int = 0) -> list[ReceivedMessage]:
    client = get_client()
    record = next(q for q in client.read_work_queues(pool) if q.name == queue)
    sqs = SqsQueues(get_settings())
    assert record.queue_url is not None
    target = QueueTarget(record.queue_url, sqs.queue_arn(record.queue_url), pool, queue, record.priority)
    return sqs.receive(target, 10, wait)


def _context(timeout: float = 60.0) -> LambdaContext:
    import time

    config = FunctionConfig(handler_path=HANDLER, name="stratoflow-executor", timeout=timeout)
    return LambdaContext(config, str(uuid.uuid4()), 1, time.monotonic() + timeout)


def _handler() -> Any:
    _, handler = load_handler(HANDLER, "lambda_handler", f"executor_{uuid.uuid4().hex}")
    return handler


def test_deployment_run_goes_through_sqs_and_the_executor(tmp_path: Path, settings_env: None) -> None:
    client = get_client()
    name, pool = _deploy(tmp_path, client)
    marker = str(tmp_path / "marker")
    run = client.create_flow_run_from_deployment(name, parameters={"n": 4, "marker": marker})
    assert run.state_type == StateType.SCHEDULED and run.work_pool_name == pool

    messages = _receive(pool)
    assert [json.loads(m.body)["flow_run_id"] for m in messages] == [run.id]
    response = _handler()(sqs_event(messages, "us-east-1"), _context())
    assert response == {"batchItemFailures": []}

    done = client.read_flow_run(run.id)
    assert done.state_type == StateType.COMPLETED, done.state
    assert done.state is not None and done.state.result() == 0 + 1 + 4 + 9
    assert [s.name for s in done.state_history] == ["Scheduled", "Pending", "Running", "Completed"]
    tasks = client.read_task_runs(run.id)
    assert len(tasks) == 4 and all(t.state_type == StateType.COMPLETED for t in tasks)
    logs = [log.message for log in client.iter_logs(run.id)]
    assert any("Beginning flow run" in m for m in logs) and any("Finished in state" in m for m in logs)


def test_ten_concurrent_deliveries_run_the_flow_once(tmp_path: Path, settings_env: None) -> None:
    client = get_client()
    name, pool = _deploy(tmp_path, client)
    marker = tmp_path / "marker"
    run = client.create_flow_run_from_deployment(name, parameters={"n": 3, "marker": str(marker)})
    (message,) = _receive(pool)
    handler = _handler()
    results: list[Any] = []
    barrier = threading.Barrier(10)

    def deliver() -> None:
        barrier.wait()
        results.append(handler(sqs_event([message], "us-east-1"), _context()))

    threads = [threading.Thread(target=deliver) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 10 and all(r == {"batchItemFailures": []} for r in results)
    assert marker.read_text().count("run") == 1  # the flow body ran once
    assert sorted(Path(str(marker) + ".tasks").read_text().split()) == ["0", "1", "2"]
    done = client.read_flow_run(run.id)
    assert done.state_type == StateType.COMPLETED
    assert [s.name for s in done.state_history].count("Running") == 1


def test_executor_deadline_crashes_the_run_and_the_retry_completes(tmp_path: Path, settings_env: None,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRATOFLOW_EXECUTOR_DEADLINE_MARGIN", "1.0")
    reset_settings()
    client = get_client()
    name, pool = _deploy(tmp_path, client, retries=1)
    marker = tmp_path / "marker"
    run = client.create_flow_run_from_deployment(name, parameters={"n": 2, "marker": str(marker), "slow_first": 30})
    config = FunctionConfig(handler_path=HANDLER, name="stratoflow-executor", timeout=3.0)
    with LocalFunction(config) as function:
        first = function.invoke(sqs_event(_receive(pool), "us-east-1"))
        assert first.error is None and first.payload == {"batchItemFailures": []}, first.error
        crashed = client.read_flow_run(run.id)
        # The crash was recorded and, with a retry left, turned into AwaitingRetry and re-sent.
        assert crashed.state_type == StateType.SCHEDULED and crashed.state_name == "AwaitingRetry"
        logs = " ".join(log.message for log in client.iter_logs(run.id))
        assert "before its deadline" in logs
        again = _receive(pool, wait=2)
        assert [json.loads(m.body)["flow_run_id"] for m in again] == [run.id]
        second = function.invoke(sqs_event(again, "us-east-1"))
        assert second.error is None, second.error
    done = client.read_flow_run(run.id)
    assert done.state_type == StateType.COMPLETED and done.run_count == 2
    assert done.state is not None and done.state.result() == 1
    assert marker.read_text().count("run") == 2


def test_deadline_without_retries_leaves_the_run_crashed(tmp_path: Path, settings_env: None,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRATOFLOW_EXECUTOR_DEADLINE_MARGIN", "1.0")
    reset_settings()
    client = get_client()
    name, pool = _deploy(tmp_path, client, retries=0)
    run = client.create_flow_run_from_deployment(
        name, parameters={"n": 1, "marker": str(tmp_path / "m"), "slow_first": 30})
    config = FunctionConfig(handler_path=HANDLER, name="stratoflow-executor", timeout=2.5)
    with LocalFunction(config) as function:
        result = function.invoke(sqs_event(_receive(pool), "us-east-1"))
    assert result.error is None and not result.timed_out
    done = client.read_flow_run(run.id)
    assert done.state_type == StateType.CRASHED
    assert done.state is not None and "deadline" in (done.state.message or "")
    assert _receive(pool) == []  # nothing re-sent: no retries left


def test_paused_pool_keeps_its_runs_in_the_queue_however_long_it_is_paused(
        tmp_path: Path, settings_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    client = get_client()
    name, pool = _deploy(tmp_path, client)
    run = client.create_flow_run_from_deployment(name, parameters={"n": 1, "marker": str(tmp_path / "m")})
    client.pause_work_pool(pool)
    handler = _handler()
    module = sys.modules[handler.__module__]
    monkeypatch.setattr(module, "PAUSED_RECHECK_SECONDS", 0)  # recheck at once (60 s on AWS)
    # More rechecks than the queue's maxReceiveCount (5): a message put back each time would be
    # in the dead-letter queue by now; a fresh copy each time starts counting again.
    assert get_settings().queue_max_receive_count < 8
    for _ in range(8):
        messages = _receive(pool)
        assert len(messages) == 1
        assert handler(sqs_event(messages, "us-east-1"), _context()) == {"batchItemFailures": []}
        SqsQueues(get_settings()).delete(messages[0].target.url, messages[0].receipt_handle)  # as the ESM does
        assert client.read_flow_run(run.id).state_type == StateType.SCHEDULED
    status = client.read_work_pool_status(pool)
    default = next(q for q in status["queues"] if q["name"] == "default")
    assert default["messages_visible"] + default["messages_in_flight"] + default["messages_delayed"] == 1
    assert status["dead_letter_messages"] == 0  # waiting, not lost

    client.resume_work_pool(pool)
    again = _receive(pool)
    assert handler(sqs_event(again, "us-east-1"), _context()) == {"batchItemFailures": []}
    assert client.read_flow_run(run.id).state_type == StateType.COMPLETED


def test_a_malformed_message_is_reported_not_dropped(tmp_path: Path, settings_env: None) -> None:
    client = get_client()
    _, pool = _deploy(tmp_path, client)
    queue = next(q for q in client.read_work_queues(pool) if q.name == "default")
    sqs = SqsQueues(get_settings())
    assert queue.queue_url is not None
    sqs.client.send_message(QueueUrl=queue.queue_url, MessageBody='{"not": "a run"}')
    messages = _receive(pool)
    response = _handler()(sqs_event(messages, "us-east-1"), _context())
    assert response["batchItemFailures"] == [{"itemIdentifier": messages[0].message_id}]
    assert len(_receive(pool)) == 1  # visible again at once, on its way to the dead-letter queue


def test_a_broken_package_fails_the_run_with_the_reason(tmp_path: Path, settings_env: None) -> None:
    client = get_client()
    name, pool = _deploy(tmp_path, client)
    deployment = client.read_deployment(name)
    client.create_deployment(deployment.flow_name, deployment.name, entrypoint="flows.py:missing")
    run = client.create_flow_run_from_deployment(name, parameters={"n": 1, "marker": str(tmp_path / "m")})
    assert _handler()(sqs_event(_receive(pool), "us-east-1"), _context()) == {"batchItemFailures": []}
    failed = client.read_flow_run(run.id)
    assert failed.state_type == StateType.FAILED
    assert failed.state is not None and "missing" in (failed.state.message or "")


def test_queue_priorities_are_served_first(tmp_path: Path, settings_env: None) -> None:
    client = get_client()
    pool = f"pool-{uuid.uuid4().hex[:8]}"
    client.create_work_pool(pool)
    client.create_work_queue(pool, "urgent", priority=1)
    client.create_work_queue(pool, "bulk", priority=9)
    sqs = SqsQueues(get_settings())
    targets = []
    for queue in client.read_work_queues(pool):
        assert queue.queue_url is not None
        targets.append(QueueTarget(queue.queue_url, sqs.queue_arn(queue.queue_url), pool, queue.name, queue.priority))
    from stratoflow.workpools.messages import RunMessage

    by_name = {t.queue: t for t in targets}
    sqs.send(by_name["bulk"].url, RunMessage(flow_run_id="b", work_pool_name=pool, work_queue_name="bulk"))
    sqs.send(by_name["urgent"].url, RunMessage(flow_run_id="u", work_pool_name=pool, work_queue_name="urgent"))
    first = sqs.receive_by_priority(targets, 10)
    second = sqs.receive_by_priority(targets, 10)
    assert [json.loads(m.body)["flow_run_id"] for m in first + second] == ["u", "b"]
