"""Crash durability of the embedded default backend.

A subprocess runs a flow against its own STRATOFLOW_HOME and dies with ``os._exit(1)`` in the
middle; this process then opens that home (which replays its journal) and reads back what the
dead process had committed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from stratoflow import flow, get_client
from stratoflow.settings import reset_settings
from stratoflow.states import StateType

CRASHING_FLOW = textwrap.dedent(
    """
    import os

    from stratoflow import flow, task

    @task
    def step(i: int) -> bytes | int:
        if i == 4:
            os._exit(1)  # the process dies mid-flow: no finally blocks, no flushes
        if i == BIG_STEP:
            return bytes(range(256)) * 400  # ~100 KB: stored in S3, not inline
        return i * 10

    @flow(name="durable")
    def durable() -> None:
        for i in range(1, 6):
            step(i)

    durable()
    raise SystemExit("unreachable: step 4 should have killed the process")
    """
)
BIG_PAYLOAD = bytes(range(256)) * 400


def run_crashing_flow(home: Path, big_step: int = 0, extra_env: dict[str, str] | None = None) -> None:
    env = dict(os.environ)
    env.update(extra_env or {})
    env["STRATOFLOW_HOME"] = str(home)
    env["STRATOFLOW_BACKEND"] = "embedded"
    env["STRATOFLOW_LOG_TO_CONSOLE"] = "false"
    script = f"BIG_STEP = {big_step}\n" + CRASHING_FLOW
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, f"expected os._exit(1), got {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


def open_home(monkeypatch: pytest.MonkeyPatch, home: Path) -> Any:
    """Point this process at ``home`` and return a client on it (replaying its journal)."""
    monkeypatch.setenv("STRATOFLOW_HOME", str(home))
    reset_settings()
    return get_client()


def journal_of(home: Path) -> Path:
    path = home / "embedded" / "journal.jsonl"
    assert path.exists(), f"no journal at {path}"
    return path


def assert_crashed_run_state(client: Any, expect_results: dict[str, Any]) -> Any:
    runs = client.read_flow_runs(flow_name="durable")
    assert len(runs) == 1
    run = client.read_flow_run(runs[0].id)
    # Nobody reported the end of the run: it is still Running, as the dead process left it.
    assert run.state.type == StateType.RUNNING
    assert [s.name for s in run.state_history] == ["Pending", "Running"]
    assert run.end_time is None

    task_runs = client.read_task_runs(run.id)
    completed = {r.name: r for r in task_runs if r.state.type == StateType.COMPLETED}
    assert sorted(completed) == ["step-0", "step-1", "step-2"]
    assert all(r.state.type != StateType.COMPLETED for r in task_runs if r.name not in completed)
    for name, expected in expect_results.items():
        stored = client.read_task_run(completed[name].id)
        assert [s.name for s in stored.state_history] == ["Pending", "Running", "Completed"]
        assert stored.state.result() == expected
    return run


@pytest.mark.parametrize(
    "commit_env",
    [
        pytest.param({}, id="default-group-commit"),
        # Nothing drains before the crash: the records exist only in the dead process's outbox.
        pytest.param({"STRATOFLOW_GROUP_COMMIT_INTERVAL": "600"}, id="undrained-outbox"),
        pytest.param({"STRATOFLOW_TASK_COMMIT": "sync"}, id="sync-commit"),
        pytest.param({"STRATOFLOW_TASK_STATE_FLUSH_AFTER": "0"}, id="write-every-transition"),
    ],
)
def test_completed_tasks_survive_a_crash(
    stratoflow_home: Path, monkeypatch: pytest.MonkeyPatch, commit_env: dict[str, str]
) -> None:
    crashed_home = stratoflow_home / "crashed-process"
    run_crashing_flow(crashed_home, extra_env=commit_env)
    if "STRATOFLOW_GROUP_COMMIT_INTERVAL" in commit_env:
        outboxes = list((crashed_home / "outbox").rglob("*.jsonl"))
        assert outboxes and any(p.stat().st_size > 0 for p in outboxes), "expected undrained outbox records"
    client = open_home(monkeypatch, crashed_home)
    assert_crashed_run_state(client, {"step-0": 10, "step-1": 20, "step-2": 30})
    assert not [p for p in (crashed_home / "outbox").rglob("*.jsonl") if p.stat().st_size > 0 and
                str(os.getpid()) not in p.name], "the dead process's outbox should be recovered and removed"


def test_result_stored_in_s3_survives_a_crash(stratoflow_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    crashed_home = stratoflow_home / "crashed-process"
    run_crashing_flow(crashed_home, big_step=2)
    client = open_home(monkeypatch, crashed_home)
    run = assert_crashed_run_state(client, {"step-0": 10, "step-2": 30})
    big = next(r for r in client.read_task_runs(run.id) if r.name == "step-1")
    assert big.state.result_ref is not None and "uri" in big.state.result_ref
    assert big.state.result() == BIG_PAYLOAD


def test_torn_last_journal_line_is_ignored(stratoflow_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    crashed_home = stratoflow_home / "crashed-process"
    run_crashing_flow(crashed_home)
    journal = journal_of(crashed_home)
    with open(journal, "ab") as fh:  # a write the crash cut short: no newline
        fh.write(b'{"m":"POST","u":"https://dynamodb.us-east-1.amazonaws.com/","h":{"X-Amz-Tar')
    client = open_home(monkeypatch, crashed_home)
    assert_crashed_run_state(client, {"step-0": 10, "step-1": 20, "step-2": 30})


def test_journal_stays_replayable_after_a_torn_line_and_new_writes(
    stratoflow_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a torn final write, the next process (here, this one) appends its own entries; the
    journal must still replay for the process after that (a subprocess): the torn bytes must not
    swallow the next entry nor make the whole journal unreadable."""
    crashed_home = stratoflow_home / "crashed-process"
    run_crashing_flow(crashed_home)
    with open(journal_of(crashed_home), "ab") as fh:
        fh.write(b'{"m":"POST","u":"https://dynamodb.us-east-1.amazonaws.com/","h":{"X-Amz-Tar')

    open_home(monkeypatch, crashed_home)

    @flow(name="after-the-crash")
    def after_the_crash() -> int:
        return 7

    assert after_the_crash() == 7

    summary = read_in_subprocess(crashed_home)
    assert summary["durable"] == {"state": "RUNNING", "completed": {"step-0": 10, "step-1": 20, "step-2": 30}}
    assert summary["after-the-crash"] == [{"state": "COMPLETED", "result": 7}]


READER = textwrap.dedent(
    """
    import json

    from stratoflow import get_client

    client = get_client()
    out = {}
    [run] = client.read_flow_runs(flow_name="durable")
    out["durable"] = {
        "state": run.state.type.value,
        "completed": {t.name: t.state.result() for t in client.read_task_runs(run.id)
                      if t.state.type.value == "COMPLETED"},
    }
    out["after-the-crash"] = [{"state": r.state.type.value, "result": r.state.result()}
                              for r in client.read_flow_runs(flow_name="after-the-crash")]
    print(json.dumps(out))
    """
)


def read_in_subprocess(home: Path) -> dict[str, Any]:
    """Open ``home`` in a fresh process (replaying its journal) and summarise what it holds."""
    env = dict(os.environ)
    env["STRATOFLOW_HOME"] = str(home)
    env["STRATOFLOW_BACKEND"] = "embedded"
    env["STRATOFLOW_LOG_TO_CONSOLE"] = "false"
    proc = subprocess.run([sys.executable, "-c", READER], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"a new process could not open the home:\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


SWITCHER = textwrap.dedent(
    """
    import os

    from stratoflow import flow, get_client
    from stratoflow.settings import reset_settings

    def use(home):
        os.environ["STRATOFLOW_HOME"] = home
        reset_settings()
        return get_client()

    use(os.environ["FIRST_HOME"])
    try:
        use(os.environ["BAD_HOME"])
        print("bad home opened")
    except Exception as exc:
        print(f"bad home refused: {type(exc).__name__}")

    use(os.environ["GOOD_HOME"])

    @flow(name="still-works")
    def still_works() -> int:
        return 3

    assert still_works() == 3
    print("good home works")
    """
)


def test_a_home_that_fails_to_open_does_not_break_the_next_one(stratoflow_home: Path) -> None:
    """In one process: open a home, fail to open a home whose journal is corrupt, then open a
    healthy home. The healthy one must work (the failed switch must not leave a closed cloud
    behind as the current one). Run in a subprocess so a failure cannot affect other tests."""
    bad_home = stratoflow_home / "bad"
    (bad_home / "embedded").mkdir(parents=True)
    (bad_home / "embedded" / "journal.jsonl").write_bytes(b"this is not json\n")
    env = dict(os.environ)
    env.update(FIRST_HOME=str(stratoflow_home / "first"), BAD_HOME=str(bad_home),
               GOOD_HOME=str(stratoflow_home / "good"), STRATOFLOW_BACKEND="embedded",
               STRATOFLOW_LOG_TO_CONSOLE="false")
    proc = subprocess.run([sys.executable, "-c", SWITCHER], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "good home works" in proc.stdout, (
        f"opening a healthy home failed after a failed one:\n{proc.stdout}\n{proc.stderr[-3000:]}")
