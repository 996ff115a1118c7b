"""``stratoflow deployment ls|inspect|run`` (and ``deployment schedule ...`` from schedules.py).

``run --watch`` follows the new run until it ends (see logs.watch_flow_run): exit 0 when it
completed, 1 when it ended otherwise, 3 when ``--timeout`` passed first.
"""

import json
from typing import Annotated

import typer
from rich.text import Text

from stratoflow.cli import _output, schedules
from stratoflow.cli._output import echo, field, safe, state_text
from stratoflow.cli._params import CliUsageError, JsonOption, ParamOption, parse_params, parse_when
from stratoflow.cli.logs import watch_flow_run
from stratoflow.client import get_client
from stratoflow.settings import get_settings

app = typer.Typer(help="Deployments: list, inspect, run, schedule.")

NameOrId = Annotated[str, typer.Argument(metavar="NAME_OR_ID", help="The deployment's id or FLOW/NAME.")]


@app.command("ls")
def ls(
    flow: Annotated[str | None, typer.Option(help="Only deployments of this flow.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many deployments.")] = 200,
    json_: JsonOption = False,
) -> int:
    """List deployments."""
    deps = get_client().read_deployments(flow_name=flow, limit=limit)
    if _output.wants_json(json_):
        _output.print_json([d.model_dump(mode="json") for d in deps])
        return 0
    rows = [(d.id, f"{d.flow_name}/{d.name}", d.version, "paused" if d.paused else "active", d.work_pool_name or "-",
             ", ".join(d.tags) or "-") for d in deps]
    _output.print_table(rows, ["ID", "NAME", "VERSION", "STATUS", "WORK POOL", "TAGS"])
    return 0


@app.command("inspect")
def inspect(name_or_id: NameOrId, json_: JsonOption = False) -> int:
    """Show a deployment (by id or FLOW/NAME)."""
    d = get_client().read_deployment(name_or_id)
    if _output.wants_json(json_):
        _output.print_json(d.model_dump(mode="json"))
        return 0
    console = _output.stdout()
    queue: list[str | Text] = [" / ", safe(d.work_queue_name)] if d.work_queue_name else []
    schema = json.dumps(d.parameter_openapi_schema) if d.parameter_openapi_schema else "-"
    for line in (
        Text.assemble("Deployment ", safe(f"{d.flow_name}/{d.name}"), " (", safe(d.id), ")"),
        field("version", f"{d.version}    {'paused' if d.paused else 'active'}"),
        field("entrypoint", safe(d.entrypoint or "-")),
        field("work pool", safe(d.work_pool_name or "-"), *queue),
        field("parameters", safe(json.dumps(d.parameters))),
        field("schema", safe(schema)),
        field("tags", safe(", ".join(d.tags) or "-")),
        field("updated", _output.dt(d.updated)),
    ):
        echo(line, console=console)
    return 0


@app.command("run")
def run(
    name_or_id: NameOrId,
    param: ParamOption = None,
    tag: Annotated[list[str] | None, typer.Option(help="A tag for the run (repeatable).")] = None,
    idempotency_key: Annotated[str | None, typer.Option(
        help="A second run with the same key returns the first run.")] = None,
    at: Annotated[str | None, typer.Option(
        metavar="TIME", help="When to run: ISO 8601 time or +SECONDS (default now).")] = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Stream states and logs until the run ends "
                                        "(exit 0 when it completes, 1 otherwise).")] = False,
    timeout: Annotated[float | None, typer.Option(help="With --watch: give up after this many seconds (exit 3).")]
    = None,
    json_: JsonOption = False,
) -> int:
    """Create a flow run of a deployment (by id or FLOW/NAME); --watch follows it."""
    as_json = _output.wants_json(json_)
    params = parse_params(param)
    settings = get_settings()
    if watch and settings.resolved_backend == "embedded" and not settings.api_url:
        raise CliUsageError("--watch needs something that executes the run: nothing consumes work pools on the "
                            "embedded backend; start `stratoflow dev` and use the settings it prints")
    flow_run = get_client().create_flow_run_from_deployment(
        name_or_id, parameters=params, tags=tag or (), idempotency_key=idempotency_key, scheduled_time=parse_when(at))
    if as_json and not watch:
        _output.print_json(flow_run.model_dump(mode="json", exclude={"state_history"}))
        return 0
    if not as_json:
        when = flow_run.state.state_details.scheduled_time if flow_run.state else None
        queue: list[str | Text] = [" / ", safe(flow_run.work_queue_name)] if flow_run.work_queue_name else []
        echo("Created flow run ", safe(repr(flow_run.name)), " (", safe(flow_run.id), ") of ",
             safe(flow_run.flow_name), ": ", state_text(flow_run.state_name, flow_run.state_type),
             f" for {_output.dt(when)}" if when else "")
        echo(field("parameters", safe(json.dumps(flow_run.parameters))))
        echo(field("work pool", safe(flow_run.work_pool_name or "-"), *queue))
    if not watch:
        return 0
    return watch_flow_run(flow_run.id, timeout=timeout, json_lines=as_json)


app.add_typer(schedules.app, name="schedule", help="A deployment's schedules.")
