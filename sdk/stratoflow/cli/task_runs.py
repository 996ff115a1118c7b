"""``stratoflow task-run ls --flow-run ID``, and the task-run table ``flow-run inspect`` and
``deployment run --watch`` end with."""

from collections.abc import Sequence
from typing import Annotated, Any

import typer

from stratoflow.cli import _output
from stratoflow.cli._params import JsonOption
from stratoflow.client import get_client

app = typer.Typer(help="Inspect task runs.")


def task_table(tasks: Sequence[Any]) -> str:
    rows = [(t.name, t.state_name, t.run_count, _output.duration(_output.run_duration(t)), t.id) for t in tasks]
    return _output.table(rows, ["TASK RUN", "STATE", "RUNS", "DURATION", "ID"], 1, [t.state_type for t in tasks])


def print_task_runs(tasks: Sequence[Any]) -> None:
    """``Task runs (N)`` and their table, after a blank line."""
    print(f"\nTask runs ({len(tasks)})")
    print(task_table(tasks))


@app.command("ls")
def ls(
    flow_run: Annotated[str, typer.Option("--flow-run", help="The flow run whose task runs to list.")],
    json_: JsonOption = False,
) -> int:
    """List the task runs of a flow run."""
    tasks = get_client().read_task_runs(flow_run)
    if _output.wants_json(json_):
        _output.print_json([t.model_dump(mode="json", exclude={"state_history"}) for t in tasks])
    else:
        print(task_table(tasks))
    return 0
