"""Deployments end to end on the local cloud: deploy from a directory, trigger over the API, the
run travels through SQS to the executor function (or a worker process) and completes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from stratoflow import get_client, run_deployment
from stratoflow.deployments import deploy
from stratoflow.settings import get_settings
from stratoflow.states import StateType
from stratoflow.workpools.messages import RunMessage
from stratoflow.workpools.sqs import SqsQueues

FLOWS = '''
import time
from pathlib import Path

from stratoflow import flow, get_run_logger, task, unmapped


@task(retries=2, retry_delay_seconds=0)
def shout(word: str, marker: str) -> str:
    with open(marker + ".tasks", "a") as fh:
        fh.write(word + "\\n")
    return word.upper()


@flow(log_prints=True)
def greet(words: list[str], marker: str, hold: float = 0.0) -> str:
    attempts = Path(marker).read_text().count("run") if Path(marker).exists() else 0
    with open(marker, "a") as fh:
        fh.write("run\\n")
    get_run_logger().info("greeting %d words", len(words))
    end = time.monotonic() + (hold if attempts == 0 else 0.0)  # only the first attempt holds
    while time.monotonic() < end:
        time.sleep(0.05)
    return " ".join(shout.map(words, marker=unmapped(marker)).result())
'''


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _deploy(tmp_path: Path, pool_type: str = "lambda") -> tuple[str, str]:
    client = get_client()
    pool = _unique("pool")
    client.create_work_pool(pool, type=pool_type)
    src = tmp_path / "project"
    src.mkdir(exist_ok=True)
    (src / "greetings.py").write_text(FLOWS)
    dep = deploy("greetings.py:greet", name=_unique("dep"), work_pool=pool, source_dir=src, client=client)
    return f"{dep.flow_name}/{dep.name}", pool


def test_deploy_trigger_and_complete_through_sqs_and_the_executor(over_api: Any, tmp_path: Path) -> None:
    name, _ = _deploy(tmp_path)
    marker = tmp_path / "marker"
    run = run_deployment(name, parameters={"words": ["a", "b", "c"], "marker": str(marker)}, timeout=60)
    assert run.state_type == StateType.COMPLETED, run.state
    assert run.state is not None and run.state.result() == "A B C"
    assert [s.name for s in run.state_history] == ["Scheduled", "Pending", "Running", "Completed"]
    client = get_client()
    assert sorted(t.state_name or "" for t in client.read_task_runs(run.id)) == ["Completed"] * 3
    messages = [log.message for log in client.iter_logs(run.id)]
    assert "greeting 3 words" in messages

    # The same deployment with a bad parameter is refused before anything runs.
    from stratoflow.exceptions import RequestRefused

    with pytest.raises(RequestRefused) as refused:
        run_deployment(name, parameters={"words": "not a list", "marker": str(marker)}, timeout=0)
    assert refused.value.status_code == 422 and "parameters.words" in str(refused.value)


def test_the_same_message_delivered_ten_times_runs_once(over_api: Any, tmp_path: Path) -> None:
    name, pool = _deploy(tmp_path)
    client = get_client()
    marker = tmp_path / "marker"
    later = run_deployment(name, parameters={"words": ["x"], "marker": str(marker)}, timeout=0,
                           scheduled_time=datetime.now(UTC) + timedelta(seconds=3))
    queue = next(q for q in client.read_work_queues(pool) if q.name == "default")
    assert queue.queue_url is not None
    sqs = SqsQueues(get_settings())
    body = RunMessage(flow_run_id=later.id, deployment_id=later.deployment_id, work_pool_name=pool,
                      work_queue_name="default")
    for _ in range(10):  # nine extra copies of the run's message, as duplicate deliveries
        sqs.send(queue.queue_url, body, 3)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run = client.read_flow_run(later.id)
        depth = client.read_work_pool_status(pool)["queues"][0]
        drained = depth["messages_visible"] + depth["messages_in_flight"] + depth["messages_delayed"] == 0
        if run.state is not None and run.state.is_final() and drained:
            break
        time.sleep(0.2)
    assert run.state_type == StateType.COMPLETED, run.state
    assert marker.read_text().count("run") == 1
    assert Path(str(marker) + ".tasks").read_text().split() == ["x"]
    assert [s.name for s in run.state_history].count("Running") == 1


def _cli(env: dict[str, str], *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stratoflow.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _env(dev_stack: Any, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRATOFLOW_", "AWS_"))}
    env.update(dev_stack.env)
    env.update(STRATOFLOW_HOME=str(home), STRATOFLOW_LOG_TO_CONSOLE="false", PYTHONUNBUFFERED="1")
    return env


def test_cli_deploy_and_run_with_watch(over_api: Any, dev_stack: Any, tmp_path: Path) -> None:
    env = _env(dev_stack, tmp_path)
    pool = _unique("pool")
    assert _cli(env, "work-pool", "create", pool).returncode == 0
    (tmp_path / "greetings.py").write_text(FLOWS)
    deployed = _cli(env, "deploy", str(tmp_path / "greetings.py") + ":greet", "--name", "cli", "--pool", pool,
                    "--source-dir", str(tmp_path))
    assert deployed.returncode == 0, deployed.stderr
    marker = tmp_path / "marker"
    watched = _cli(env, "deployment", "run", "greet/cli", "--param", 'words=["hi", "yo"]',
                   "--param", f"marker={marker}", "--watch", "--timeout", "60")
    assert watched.returncode == 0, watched.stdout + watched.stderr
    out = watched.stdout
    for expected in ("Scheduled", "Pending", "Running", "Completed", "greeting 2 words", "Task runs (2)"):
        assert expected in out, (expected, out)
    bad = _cli(env, "deployment", "run", "greet/cli", "--param", "words=3", "--param", "marker=x")
    assert bad.returncode != 0 and "parameters.words" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_a_worker_runs_process_pool_runs_and_releases_them_on_sigterm(over_api: Any, dev_stack: Any,
                                                                      tmp_path: Path) -> None:
    name, pool = _deploy(tmp_path, pool_type="process")
    env = _env(dev_stack, tmp_path)
    client = get_client()

    def start_worker() -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "stratoflow.cli", "worker", "--pool", pool, "--limit", "2",
                                 "--grace", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)

    worker = start_worker()
    try:
        quick = run_deployment(name, parameters={"words": ["w"], "marker": str(tmp_path / "quick")}, timeout=60)
        assert quick.state_type == StateType.COMPLETED, quick.state
        # A long run: SIGTERM while it runs releases it (back to Scheduled, message visible again).
        slow = run_deployment(name, parameters={"words": ["s"], "marker": str(tmp_path / "slow"), "hold": 60},
                              timeout=0)
        deadline = time.monotonic() + 30
        while not (tmp_path / "slow").exists() and time.monotonic() < deadline:  # the flow body has started
            time.sleep(0.1)
        assert client.read_flow_run(slow.id).state_type == StateType.RUNNING
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
        assert worker.returncode == 0, output
        assert "1 released" in output, output
        released = client.read_flow_run(slow.id)
        assert released.state_type == StateType.SCHEDULED and "released" in (released.state.message or "")
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    # A second worker takes the released run over and finishes it.
    worker = start_worker()
    try:
        done = client.read_flow_run(slow.id)
        deadline = time.monotonic() + 120
        while not (done.state is not None and done.state.is_final()) and time.monotonic() < deadline:
            time.sleep(0.5)
            done = client.read_flow_run(slow.id)
        assert done.state_type == StateType.COMPLETED, done.state
        assert (tmp_path / "slow").read_text().count("run") == 2
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=30)
