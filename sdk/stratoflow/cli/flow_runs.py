"""``stratoflow flow-run ls|inspect|logs|cancel|retry``: the runs of flows, newest first."""

import json
from typing import Annotated, Any

import typer
from rich.text import Text

from stratoflow.cli import _output, logs
from stratoflow.cli._output import echo, field, safe, state_text
from stratoflow.cli._params import CliUsageError, JsonOption
from stratoflow.cli.task_runs import print_task_runs
from stratoflow.client import get_client
from stratoflow.states import StateType

app = typer.Typer(help="Inspect flow runs.")

IdArgument = Annotated[str, typer.Argument(metavar="ID", help="The flow run's id.")]


def _state_types(states: list[str] | None) -> list[str] | None:
    """``--state`` values in upper case; a name that is no state type is a usage error."""
    wanted = [s.upper() for s in states or []]
    bad = [s for s in wanted if s not in StateType.__members__]
    if bad:
        raise CliUsageError(f"--state {bad[0]!r} is not one of {', '.join(StateType.__members__)}")
    return wanted or None


@app.command("ls")
def ls(
    flow: Annotated[str | None, typer.Option(help="Only runs of this flow.")] = None,
    state: Annotated[list[str] | None, typer.Option(help="Only runs in this state type (repeatable).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many runs.")] = 50,
    json_: JsonOption = False,
) -> int:
    """List flow runs, newest first."""
    runs = get_client().read_flow_runs(flow_name=flow, state_types=_state_types(state), limit=limit)
    if _output.wants_json(json_):
        _output.print_json([r.model_dump(mode="json", exclude={"state_history"}) for r in runs])
        return 0
    rows = [(r.id, r.flow_name, r.name, r.state_name, _output.dt(r.start_time or r.created),
             _output.duration(_output.run_duration(r))) for r in runs]
    _output.print_table(rows, ["ID", "FLOW", "NAME", "STATE", "STARTED", "DURATION"], 3, [r.state_type for r in runs])
    return 0


@app.command("inspect")
def inspect(flow_run_id: IdArgument, json_: JsonOption = False) -> int:
    """Show a flow run, its state history and task runs."""
    client = get_client()
    run = client.read_flow_run(flow_run_id)
    if _output.wants_json(json_):
        _output.print_json(run.model_dump(mode="json"))
        return 0
    console = _output.stdout()
    message: list[str | Text] = [" - ", safe(run.state.message)] if run.state and run.state.message else []
    for line in (
        Text.assemble("Flow run ", safe(repr(run.name)), " (", safe(run.id), ")"),
        field("flow", safe(run.flow_name)),
        field("state", state_text(run.state_name, run.state_type), *message),
        field("parameters", safe(json.dumps(run.parameters))),
        field("run count", f"{run.run_count}    duration {_output.duration(_output.run_duration(run))}"),
        field("tags", safe(", ".join(run.tags) or "-")),
    ):
        echo(line, console=console)
    print("\nState history")
    _output.print_table([(_output.dt(s.timestamp), s.name, s.message or "") for s in run.state_history],
                        ["TIME", "STATE", "MESSAGE"], 1, [s.type for s in run.state_history])
    tasks = client.read_task_runs(run.id)
    if tasks:
        print_task_runs(tasks)
    return 0


app.command("logs")(logs.flow_run_logs)


def _print_run_state(run: Any, verb: str, as_json: bool) -> None:
    if as_json:
        _output.print_json(run.model_dump(mode="json", exclude={"state_history"}))
        return
    echo(f"{verb} flow run ", safe(repr(run.name)), " (", safe(run.id), "): now ",
         state_text(run.state.name if run.state else None, run.state_type))


@app.command("cancel")
def cancel(flow_run_id: IdArgument, json_: JsonOption = False) -> int:
    """Cancel a flow run (Running/Pending -> Cancelling, Scheduled -> Cancelled)."""
    run = get_client().cancel_flow_run(flow_run_id)
    _print_run_state(run, "Cancelled" if run.state_type == "CANCELLED" else "Cancelling", _output.wants_json(json_))
    return 0


@app.command("retry")
def retry(flow_run_id: IdArgument, json_: JsonOption = False) -> int:
    """Retry a finished flow run (-> Scheduled, AwaitingRetry)."""
    run = get_client().retry_flow_run(flow_run_id)
    _print_run_state(run, "Retrying", _output.wants_json(json_))
    return 0
