"""The CLI escapes control characters in what runs and API clients wrote (``terminal_safe``):
a log message cannot forge lines or drive the terminal; ``--json`` stays raw JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stratoflow import flow, get_run_logger, task
from stratoflow.cli import main, table, terminal_safe
from stratoflow.cli.logs import watch_flow_run

FORGED = "ok\n[forged] ERROR \x1b[31mred\x1b[0m"
FORGED_SHOWN = "ok\\n[forged] ERROR \\x1b[31mred\\x1b[0m"


# -- the helper -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "shown"), [
    ("line one\nline two", "line one\\nline two"),
    ("carriage\rreturn\ttab", "carriage\\rreturn\\ttab"),
    ("\x1b[2J\x1b]0;title\x07", "\\x1b[2J\\x1b]0;title\\x07"),
    ("nul\x00 del\x7f", "nul\\x00 del\\x7f"),
    ("c1 csi\x9b31m next\x85line", "c1 csi\\x9b31m next\\x85line"),
    ("sep\u2028para\u2029", "sep\\u2028para\\u2029"),
    ("bidi \u202eevil\u202c \u2066iso\u2069", "bidi \\u202eevil\\u202c \\u2066iso\\u2069"),
])
def test_controls_are_shown_as_escapes(raw: str, shown: str) -> None:
    assert terminal_safe(raw) == shown
    assert terminal_safe(raw).isprintable()


@pytest.mark.parametrize("text", [
    "plain ascii: 1 + 2 = 3 | a/b (c) [d] {e}",
    "café — naïve Ωμέγα 日本語 🙂 👩‍💻",  # accents, CJK, emoji with a zero-width joiner
    r"C:\path\to\file and a literal \n",  # backslashes are left alone
    "",
])
def test_ordinary_text_is_unchanged(text: str) -> None:
    assert terminal_safe(text) == text


def test_non_strings_are_converted() -> None:
    assert terminal_safe(42) == "42"
    assert terminal_safe(None) == "None"


def test_a_table_cell_with_a_newline_stays_on_its_row() -> None:
    out = table([("a\nforged row", "x"), ("b", "\x1b[31mred")], ["NAME", "VALUE"])
    lines = out.splitlines()
    assert len(lines) == 4  # header, rule, two rows
    assert lines[2].split() == ["a\\nforged", "row", "x"]
    assert lines[3].split() == ["b", "\\x1b[31mred"]
    assert "\x1b" not in out
    # Widths are measured on what is shown, so the columns stay aligned.
    assert lines[2].index("x") == lines[3].index("\\x1b") == lines[0].index("VALUE")


# -- the CLI on the embedded backend --------------------------------------------------------------
@task(name="step")
def step() -> int:
    get_run_logger().warning("task says %s", "hi\x1b]0;pwned\x07")
    return 1


@flow(name="escape-demo")
def escape_demo() -> int:
    get_run_logger().info(FORGED)
    return step.with_options(task_run_name="evil\nname")()


@pytest.fixture
def run_id() -> str:
    state = escape_demo(return_state=True)
    assert state.is_completed()
    from stratoflow import get_client

    return get_client().read_flow_runs(flow_name="escape-demo")[0].id


def test_flow_run_logs_prints_a_forged_message_escaped_on_one_line(
        capsys: pytest.CaptureFixture[str], run_id: str) -> None:
    assert main(["flow-run", "logs", run_id]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    lines = out.splitlines()
    assert not any(line.startswith("[forged]") for line in lines)
    (forged,) = [line for line in lines if "[forged]" in line]
    assert forged.endswith(f"| INFO    | {FORGED_SHOWN}")
    (task_line,) = [line for line in lines if "task says" in line]
    # The task run's name (the line's source) is escaped too.
    assert task_line.split(" | ")[1].strip() == "evil\\nname"
    assert task_line.endswith("task says hi\\x1b]0;pwned\\x07")


def test_json_logs_stay_raw_json(capsys: pytest.CaptureFixture[str], run_id: str) -> None:
    assert main(["--json", "flow-run", "logs", run_id]) == 0
    messages = [json.loads(line)["message"] for line in capsys.readouterr().out.splitlines()]
    assert FORGED in messages


def test_task_table_of_inspect_keeps_a_name_on_its_row(capsys: pytest.CaptureFixture[str], run_id: str) -> None:
    assert main(["flow-run", "inspect", run_id]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "evil" in line]
    assert len(rows) == 1 and rows[0].startswith("evil\\nname ")


def test_watch_prints_logs_escaped(capsys: pytest.CaptureFixture[str], run_id: str) -> None:
    """``deployment run --watch`` prints through ``watch_flow_run``."""
    assert watch_flow_run(run_id, interval=0.01) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert any(line.endswith(FORGED_SHOWN) for line in out.splitlines())
    assert not any(line.startswith("[forged]") for line in out.splitlines())


def test_a_state_message_is_escaped_by_inspect(capsys: pytest.CaptureFixture[str], run_id: str,
                                                client: Any) -> None:
    from stratoflow.states import State, StateType

    # A state's name and message are whatever an API client proposes (here as an administrative override).
    client.set_flow_run_state(run_id, State(type=StateType.FAILED, name="Bad\x1b[5m", message="boom\nfake line"),
                              force=True)
    assert main(["flow-run", "inspect", run_id]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "Bad\\x1b[5m - boom\\nfake line" in out
    assert not any(line.startswith("fake line") for line in out.splitlines())
