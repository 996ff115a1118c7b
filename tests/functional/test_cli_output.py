"""The CLI's output contract on the embedded backend: ``--json`` (before or after the command) is
one JSON document on stdout for every command family; names, tags and messages that look like Rich
markup print literally, on a pipe and on a terminal; a pipe gets whole lines and no colour codes."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest

from stratoflow import flow, get_run_logger
from stratoflow.cli import main
from stratoflow.models import Flow, FlowRun
from stratoflow.orchestration import RunKind
from stratoflow.states import Completed, Running

MARKUP = "[red]x[/red]"  # Rich would print a red "x"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def as_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    """The command's output with --json after the command, checked equal to --json before it."""
    code, out, err = run_cli(capsys, *argv, "--json")
    assert code == 0, err
    assert "\x1b" not in out
    after = json.loads(out)  # one document: json.loads refuses anything more
    return after


def new_run(client: Any, name: str = "r", flow_name: str = "cli-output", state: Any = None) -> FlowRun:
    client.store.ensure_flow(Flow(name=flow_name))
    run = client.store.create_run(RunKind.FLOW, FlowRun(name=name, flow_name=flow_name))
    client.set_flow_run_state(run.id, state or Running())
    return client.read_flow_run(run.id)


@flow(name="[bold]markup-flow")
def markup_flow() -> int:
    get_run_logger().info("said %s", MARKUP)
    return 1


# -- --json on every command family -----------------------------------------------------------------
@pytest.mark.store_only("creates runs through the in-process store")
def test_json_flow_runs_and_task_runs(capsys: pytest.CaptureFixture[str], client: Any) -> None:
    assert markup_flow(return_state=True).is_completed()
    (run,) = client.read_flow_runs(flow_name="[bold]markup-flow")
    assert [r["id"] for r in as_json(capsys, "flow-run", "ls")] == [run.id]
    inspected = as_json(capsys, "flow-run", "inspect", run.id)
    assert inspected["id"] == run.id and inspected["state_history"]
    code, out, _ = run_cli(capsys, "--json", "flow-run", "inspect", run.id)
    assert code == 0 and json.loads(out) == inspected  # the root --json gives the same document
    assert as_json(capsys, "task-run", "ls", "--flow-run", run.id) == []
    # Logs are a stream: one JSON document per line (JSON Lines), whichever side --json is on.
    code, out, _ = run_cli(capsys, "flow-run", "logs", run.id, "--json")
    assert code == 0 and MARKUP in [json.loads(line)["message"].split(" ", 1)[1] for line in out.splitlines()
                                    if "said" in line]
    other = new_run(client)
    assert as_json(capsys, "flow-run", "cancel", other.id)["state"]["type"] == "CANCELLING"
    client.set_flow_run_state(other.id, Completed(), force=True)
    assert as_json(capsys, "flow-run", "retry", other.id)["state"]["name"] == "AwaitingRetry"


def test_json_deployments_and_schedules(capsys: pytest.CaptureFixture[str], client: Any) -> None:
    dep = client.create_deployment("etl", "nightly", parameters={"n": 1})
    assert [d["id"] for d in as_json(capsys, "deployment", "ls")] == [dep.id]
    assert as_json(capsys, "deployment", "inspect", "etl/nightly")["parameters"] == {"n": 1}
    assert as_json(capsys, "deployment", "run", "etl/nightly", "-p", "n=2")["parameters"] == {"n": 2}
    added = as_json(capsys, "deployment", "schedule", "add", "etl/nightly", "--cron", "@daily", "--id", "d")
    assert added["id"] == "d" and added["schedule"]["cron"] == "@daily"
    listed = as_json(capsys, "deployment", "schedule", "ls", "etl/nightly", "--count", "2")
    assert listed["deployment"] == "etl/nightly" and len(listed["schedules"][0]["upcoming"]) == 2
    assert [s["active"] for s in as_json(capsys, "deployment", "schedule", "pause", "etl/nightly", "d")] == [False]
    assert [s["active"] for s in as_json(capsys, "deployment", "schedule", "resume", "etl/nightly", "d")] == [True]
    assert as_json(capsys, "deployment", "schedule", "rm", "etl/nightly", "d") == []


def test_json_work_pools_queues_and_limits(capsys: pytest.CaptureFixture[str]) -> None:
    assert as_json(capsys, "work-pool", "create", "builds", "--type", "process")["type"] == "process"
    assert [p["name"] for p in as_json(capsys, "work-pool", "ls")] == ["builds"]
    assert as_json(capsys, "work-pool", "pause", "builds")["paused"] is True
    assert as_json(capsys, "work-pool", "resume", "builds")["paused"] is False
    assert as_json(capsys, "work-pool", "queue", "create", "builds", "urgent", "--priority", "2")["priority"] == 2
    assert as_json(capsys, "work-pool", "queue", "pause", "builds", "urgent")["paused"] is True
    assert as_json(capsys, "work-pool", "queue", "resume", "builds", "urgent")["paused"] is False
    status = as_json(capsys, "work-pool", "inspect", "builds")
    assert status["pool"]["name"] == "builds" and {q["name"] for q in status["queues"]} == {"default", "urgent"}
    assert as_json(capsys, "concurrency-limit", "create", "db", "2")["limit"] == 2
    assert [c["tag"] for c in as_json(capsys, "concurrency-limit", "ls")] == ["db"]
    assert as_json(capsys, "concurrency-limit", "delete", "db") == {"deleted": "db"}


def test_json_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert as_json(capsys, "version")["backend"] == "embedded"


# -- Rich markup in user data prints literally ----------------------------------------------------------
@pytest.fixture
def markup_objects(client: Any) -> dict[str, Any]:
    dep = client.create_deployment("[red]flow", "[bold]dep", tags=["[blink]t", ":smile:"],
                                   parameters={"s": MARKUP})
    run = new_run(client, name="[green]run", flow_name="[red]flow", state=Running(message=MARKUP))
    client.create_concurrency_limit("[cyan]db", 1)
    return {"dep": dep, "run": run}


class _Terminal(io.StringIO):
    """Captured stdout that says it is a terminal, so the CLI colours what it prints."""

    def isatty(self) -> bool:
        return True


LITERALS = {
    ("deployment", "ls"): ["[red]flow/[bold]dep", "[blink]t, :smile:"],
    ("deployment", "inspect", "[red]flow/[bold]dep"): ["Deployment [red]flow/[bold]dep", '"s": "[red]x[/red]"',
                                                       "[blink]t, :smile:"],
    ("flow-run", "ls"): ["[red]flow", "[green]run"],
    ("concurrency-limit", "ls"): ["[cyan]db"],
}


@pytest.mark.store_only("creates runs through the in-process store")
@pytest.mark.parametrize("argv", list(LITERALS))
def test_markup_in_names_prints_literally_on_a_pipe(capsys: pytest.CaptureFixture[str],
                                                    markup_objects: dict[str, Any], argv: tuple[str, ...]) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "\x1b" not in out  # a pipe: no colour codes
    for literal in LITERALS[argv]:
        assert literal in out, (literal, out)


@pytest.mark.store_only("creates runs through the in-process store")
@pytest.mark.parametrize("argv", list(LITERALS))
def test_markup_in_names_prints_literally_on_a_terminal(monkeypatch: pytest.MonkeyPatch,
                                                        markup_objects: dict[str, Any], argv: tuple[str, ...]) -> None:
    terminal = _Terminal()
    monkeypatch.setattr("sys.stdout", terminal)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("COLUMNS", "200")  # wide enough that the TAGS column does not wrap at its space
    assert main(list(argv)) == 0
    shown = ANSI.sub("", terminal.getvalue())
    assert ANSI.search(terminal.getvalue())  # colour (bold headers at least): it did take it for a terminal
    for literal in LITERALS[argv]:
        assert literal in shown, (literal, shown)
    assert "\U0001f604" not in shown  # ":smile:" stays text, not an emoji


@pytest.mark.store_only("creates runs through the in-process store")
def test_markup_in_state_messages_and_logs_prints_literally(capsys: pytest.CaptureFixture[str],
                                                            markup_objects: dict[str, Any], client: Any) -> None:
    code, out, _ = run_cli(capsys, "flow-run", "inspect", markup_objects["run"].id)
    assert code == 0 and f"Running - {MARKUP}" in out and "'[green]run'" in out
    assert markup_flow(return_state=True).is_completed()
    (run,) = client.read_flow_runs(flow_name="[bold]markup-flow")
    code, out, _ = run_cli(capsys, "flow-run", "logs", run.id)
    assert code == 0 and any(line.endswith(f"| INFO    | said {MARKUP}") for line in out.splitlines())


# -- pipes read whole values ------------------------------------------------------------------------------
def test_a_pipe_gets_long_values_on_one_line(capsys: pytest.CaptureFixture[str], client: Any) -> None:
    long_tag = "t" * 250
    client.create_deployment("etl", "wide", tags=[long_tag, long_tag.upper(), "b c"], description="x")
    code, out, _ = run_cli(capsys, "deployment", "ls")
    assert code == 0
    _header, rule, row = out.splitlines()
    assert row.endswith(f"{long_tag}, {long_tag.upper()}, b c") and "etl/wide" in row
    assert len(rule) == len(row.rstrip())


def test_a_narrow_terminal_wraps_messages_but_keeps_ids_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    from stratoflow.cli import table

    monkeypatch.setattr("sys.stdout", _Terminal())
    monkeypatch.setenv("COLUMNS", "60")
    run_id = "e7cf8dde-5396-536d-9f6a-158c15082fb8"
    message = "a message of many words " * 4
    lines = ANSI.sub("", table([(run_id, "Running", message)], ["ID", "STATE", "MESSAGE"], 1, ["RUNNING"])).splitlines()
    assert lines[2].startswith(f"{run_id}  Running  a message")
    assert len(lines) > 3 and all(len(line) <= 60 for line in lines)
    assert " ".join(" ".join(line[47:].split()) for line in lines[2:]) == " ".join(message.split())
    # Wider than the terminal when even single words do not fit: printed whole, the terminal wraps it.
    wide = ANSI.sub("", table([(run_id * 2, "x")], ["ID", "V"]))
    assert run_id * 2 in wide


def test_a_reader_that_goes_away_ends_the_command_quietly(monkeypatch: pytest.MonkeyPatch, client: Any,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """``stratoflow deployment ls | head``: exit 0 and nothing on stderr, as ``cat`` (not Rich's exit 1)."""
    import os

    client.create_deployment("etl", "nightly")
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "w") as closed_pipe:
        monkeypatch.setattr("sys.stdout", closed_pipe)
        assert main(["deployment", "ls"]) == 0
        assert main(["version", "--json"]) == 0
    assert capsys.readouterr().err == ""


# -- help, completion, usage errors ---------------------------------------------------------------------------
def test_help_lists_the_commands_and_shell_completion(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    for name in ("flow-run", "deployment", "work-pool", "concurrency-limit", "deploy", "worker", "dev", "ui",
                 "config", "version", "task-run", "--install-completion", "--json"):
        assert name in out, name
    assert run_cli(capsys, "flow-run", "-h")[0] == 0


@pytest.mark.parametrize(("argv", "message"), [
    (("flow-run", "ls", "--bogus"), "No such option: --bogus"),
    (("flow-run", "inspect"), "Missing argument 'ID'"),
    (("flow-run", "ls", "--limit", "many"), "'--limit'"),
    (("work-pool", "create", "p", "--type", "docker"), "'--type'"),
    (("no-such-command",), "No such command 'no-such-command'"),
    (("config", "from-stack", "s", "--print", "--output", "x"), "argument --output: not allowed with argument --print"),
])
def test_usage_errors_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...],
                                              message: str) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and message in err, err
    assert "Traceback" not in err


def test_no_command_shows_the_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys)
    assert code == 2 and "flow-run" in out + err and "error" not in err
