"""The `stratoflow` CLI on the embedded backend: tables, JSON, and one-line errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stratoflow import flow, get_run_logger, task
from stratoflow.cli import main


@task
def double(x: int) -> int:
    return 2 * x


@flow(name="cli-demo")
def cli_demo(n: int = 3) -> int:
    get_run_logger().info("summing %d doubles", n)
    return sum(double(i) for i in range(n))


@pytest.fixture
def finished_run() -> Any:
    state = cli_demo(return_state=True)
    assert state.is_completed()
    from stratoflow import get_client

    return get_client().read_flow_runs(flow_name="cli-demo")[0]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_version_reports_backend(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--json", "version")
    assert code == 0
    info = json.loads(out)
    assert info["backend"] == "embedded" and info["version"]


def test_flow_run_ls_table_and_json(capsys: pytest.CaptureFixture[str], finished_run: Any) -> None:
    code, out, _ = run_cli(capsys, "flow-run", "ls")
    assert code == 0
    header, rule, row = out.splitlines()[:3]
    assert header.split()[:4] == ["ID", "FLOW", "NAME", "STATE"]
    assert set(rule.replace(" ", "")) == {"-"}
    assert finished_run.id in row and "Completed" in row

    code, out, _ = run_cli(capsys, "--json", "flow-run", "ls", "--state", "completed", "--flow", "cli-demo")
    assert code == 0
    (only,) = json.loads(out)
    assert only["id"] == finished_run.id and only["state"]["type"] == "COMPLETED"


def test_flow_run_inspect_shows_history_and_tasks(capsys: pytest.CaptureFixture[str], finished_run: Any) -> None:
    code, out, _ = run_cli(capsys, "flow-run", "inspect", finished_run.id)
    assert code == 0
    assert "State history" in out and "Pending" in out and "Running" in out
    assert "Task runs (3)" in out and "double-2" in out


def test_flow_run_logs_in_order(capsys: pytest.CaptureFixture[str], finished_run: Any) -> None:
    code, out, _ = run_cli(capsys, "flow-run", "logs", finished_run.id)
    assert code == 0
    lines = out.splitlines()
    assert "Beginning flow run" in lines[0]
    assert any("summing 3 doubles" in line for line in lines)
    assert "Finished in state Completed()" in lines[-1]
    # Who wrote each line: the flow, or the task run by name.
    assert lines[0].split(" | ")[1].strip() == "flow"
    sources = {line.split(" | ")[1].strip() for line in lines}
    assert {"flow", "double-0", "double-1", "double-2"} <= sources, sources
    code, out, _ = run_cli(capsys, "flow-run", "logs", finished_run.id, "--level", "error")
    assert code == 0 and out == ""


def test_follow_returns_once_the_run_is_final(capsys: pytest.CaptureFixture[str], finished_run: Any) -> None:
    code, out, _ = run_cli(capsys, "flow-run", "logs", finished_run.id, "--follow", "--interval", "0.01")
    assert code == 0 and "Finished in state" in out


def test_task_run_ls(capsys: pytest.CaptureFixture[str], finished_run: Any) -> None:
    code, out, _ = run_cli(capsys, "--json", "task-run", "ls", "--flow-run", finished_run.id)
    assert code == 0
    assert sorted(t["name"] for t in json.loads(out)) == ["double-0", "double-1", "double-2"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("flow-run", "inspect", "no-such-id"), "flow run 'no-such-id' not found"),
        (("flow-run", "logs", "no-such-id"), "flow run 'no-such-id' not found"),
        (("flow-run", "ls", "--state", "DONE"), "--state 'DONE' is not one of"),
    ],
)
def test_errors_are_one_line_with_nonzero_exit(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...],
                                               message: str) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code != 0
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and message in err


def test_bad_level_is_refused(capsys: pytest.CaptureFixture[str], finished_run: Any) -> None:
    code, _, err = run_cli(capsys, "flow-run", "logs", finished_run.id, "--level", "LOUD")
    assert code == 1 and "--level must be one of" in err
