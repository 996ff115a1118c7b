"""``stratoflow deployment schedule ls|add|pause|resume|rm``: a deployment's schedules.

Changes go through ``get_client().create_deployment(...)`` with the new list of schedules (the
deployment's version goes up; its other fields stay as they are).
"""

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from stratoflow.cli import _output
from stratoflow.cli._output import echo, safe
from stratoflow.cli._params import CliUsageError, JsonOption, exclusive, parse_params
from stratoflow.client import get_client
from stratoflow.control.schedules import upcoming
from stratoflow.exceptions import StratoflowError
from stratoflow.schedules.models import CronSchedule, DeploymentSchedule, IntervalSchedule, RRuleSchedule
from stratoflow.schedules.slots import zone
from stratoflow.schedules.translate import translate

app = typer.Typer(help="A deployment's schedules.")

NameOrId = Annotated[str, typer.Argument(metavar="NAME_OR_ID", help="The deployment's id or FLOW/NAME.")]
ScheduleId = Annotated[str, typer.Argument(metavar="SCHEDULE_ID", help="The schedule's id (schedule ls shows it).")]


class ScheduleNotFound(StratoflowError):
    """The deployment has no schedule with that id."""


def describe(schedule: Any) -> str:
    """A schedule in one short line: ``cron 0 9 * * 1-5``, ``every 300s``, ``rrule FREQ=...``."""
    s = schedule.schedule
    if s.type == "cron":
        return f"cron {s.cron}" + ("" if s.day_or else " (day_or=false)")
    if s.type == "interval":
        anchor = f" from {s.anchor_date.isoformat()}" if s.anchor_date else ""
        return f"every {s.interval:g}s{anchor}"
    return "rrule " + " ".join(s.rrule.split())


def _fired_by(schedule: Any) -> str:
    t = translate(schedule.schedule)
    return f"EventBridge {t.expression.expression}" if t.expression is not None else "tick"


def _save(deployment: Any, schedules: list[Any]) -> Any:
    return get_client().create_deployment(deployment.flow_name, deployment.name, schedules=schedules)


def _ls_json(dep: Any, slots: list[tuple[str, datetime]]) -> dict[str, Any]:
    def one(s: Any) -> dict[str, Any]:
        t = translate(s.schedule)
        return {"id": s.id, "active": s.active, "schedule": s.schedule.model_dump(mode="json"),
                "eventbridge": t.expression.expression if t.expression else None,
                "tick_reason": None if t.expression else t.reason,
                "upcoming": [slot.isoformat() for sid, slot in slots if sid == s.id]}

    return {"deployment": f"{dep.flow_name}/{dep.name}", "paused": dep.paused,
            "schedules": [one(s) for s in dep.schedules]}


@app.command("ls")
def ls(
    name: NameOrId,
    count: Annotated[int, typer.Option(help="Upcoming times per schedule.")] = 10,
    json_: JsonOption = False,
) -> int:
    """Show a deployment's schedules and their upcoming times (UTC and local)."""
    if count < 1:
        raise CliUsageError("--count must be at least 1")
    dep = get_client().read_deployment(name)
    slots = upcoming(dep, datetime.now(UTC), count)
    if _output.wants_json(json_):
        _output.print_json(_ls_json(dep, slots))
        return 0
    echo(safe(f"Deployment {dep.flow_name}/{dep.name}"), "  (paused: no runs are created)" if dep.paused else "")
    if not dep.schedules:
        print("  no schedules")
        return 0
    rows = [[s.id, describe(s), s.schedule.timezone, "active" if s.active else "inactive", _fired_by(s)]
            for s in dep.schedules]
    _output.print_table(rows, ["SCHEDULE", "WHEN", "TIMEZONE", "STATUS", "FIRED BY"])
    if slots:
        by_id = {s.id: s for s in dep.schedules}
        upcoming_rows = []
        for sid, slot in slots:
            tz = by_id[sid].schedule.timezone
            local = slot.astimezone(zone(tz))
            upcoming_rows.append([sid, slot.strftime("%Y-%m-%d %H:%M:%S UTC"),
                                  f"{local.strftime('%Y-%m-%d %H:%M:%S')} {tz}"])
        print()
        _output.print_table(upcoming_rows, ["SCHEDULE", "NEXT (UTC)", "NEXT (LOCAL)"])
    return 0


def _check_add(cron: str | None, interval: float | None, rrule: str | None, day_or: bool,
               anchor_date: str | None) -> datetime | None:
    """argparse's checks of ``add`` (one kind of schedule, options of that kind only); the anchor."""
    kinds = {"--cron": cron, "--interval": interval, "--rrule": rrule}
    exclusive(kinds)
    if all(v is None for v in kinds.values()):
        raise CliUsageError("one of the arguments --cron --interval --rrule is required")
    if cron is None and not day_or:
        raise CliUsageError("--no-day-or applies to --cron only")
    if interval is None and anchor_date:
        raise CliUsageError("--anchor-date applies to --interval only")
    if not anchor_date:
        return None
    try:
        return datetime.fromisoformat(anchor_date)
    except ValueError:
        raise CliUsageError(f"--anchor-date {anchor_date!r} is not an ISO 8601 time") from None


@app.command("add")
def add(
    name: NameOrId,
    cron: Annotated[str | None, typer.Option(
        help="5-field Unix cron, or @hourly/@daily/@weekly/@monthly/@yearly.")] = None,
    interval: Annotated[float | None, typer.Option(metavar="SECONDS", help="Every SECONDS seconds.")] = None,
    rrule: Annotated[str | None, typer.Option(help="An RFC 5545 recurrence rule.")] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA time zone (default UTC).")] = None,
    day_or: Annotated[bool, typer.Option("--day-or/--no-day-or", help="cron: a day matching day-of-month OR "
                                         "day-of-week fires (default); --no-day-or: both.")] = True,
    anchor_date: Annotated[str | None, typer.Option(
        help="interval: ISO 8601 time the slots count from (default 2020-01-01).")] = None,
    schedule_id: Annotated[str | None, typer.Option("--id", help="The schedule's id (default: a new UUID).")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", metavar="KEY=VALUE",
        help="A parameter for this schedule's runs (repeatable; VALUE read as JSON when valid).")] = None,
    inactive: Annotated[bool, typer.Option("--inactive", help="Add it paused.")] = False,
    json_: JsonOption = False,
) -> int:
    """Add a schedule to a deployment (one of --cron, --interval, --rrule)."""
    anchor = _check_add(cron, interval, rrule, day_or, anchor_date)
    dep = get_client().read_deployment(name)
    tz = timezone or "UTC"
    spec: Any
    if cron is not None:
        spec = CronSchedule(cron=cron, timezone=tz, day_or=day_or)
    elif interval is not None:
        spec = IntervalSchedule(interval=interval, anchor_date=anchor, timezone=tz)
    else:
        spec = RRuleSchedule(rrule=rrule or "", timezone=tz)
    # The id is always given explicitly: an update sends only the fields set.
    fields: dict[str, Any] = {"schedule": spec, "active": not inactive, "id": schedule_id or str(uuid.uuid4())}
    if param:
        fields["parameters"] = parse_params(param)
    new = DeploymentSchedule(**fields)
    if any(s.id == new.id for s in dep.schedules):
        raise CliUsageError(f"deployment {dep.flow_name}/{dep.name} already has a schedule {new.id!r}")
    saved = _save(dep, [*dep.schedules, new])
    if _output.wants_json(json_):
        _output.print_json(new.model_dump(mode="json"))
        return 0
    echo(safe(f"Added schedule {new.id} to {saved.flow_name}/{saved.name}: {describe(new)} "
              f"({new.schedule.timezone}), "), f"fired by {_fired_by(new)}")
    return 0


def _change(name: str, schedule_id: str, verb: str, as_json: bool) -> int:
    dep = get_client().read_deployment(name)
    if not any(s.id == schedule_id for s in dep.schedules):
        known = ", ".join(s.id for s in dep.schedules) or "none"
        raise ScheduleNotFound(f"deployment {dep.flow_name}/{dep.name} has no schedule {schedule_id!r} "
                               f"(its schedules: {known})")
    if verb == "rm":
        schedules = [s for s in dep.schedules if s.id != schedule_id]
    else:
        schedules = [s.model_copy(update={"active": verb == "resume"}) if s.id == schedule_id else s
                     for s in dep.schedules]
    saved = _save(dep, schedules)
    if as_json:
        _output.print_json([s.model_dump(mode="json") for s in saved.schedules])
        return 0
    done = {"rm": "Removed", "pause": "Paused", "resume": "Resumed"}[verb]
    echo(safe(f"{done} schedule {schedule_id} of {saved.flow_name}/{saved.name}"))
    return 0


@app.command("pause")
def pause(name: NameOrId, schedule_id: ScheduleId, json_: JsonOption = False) -> int:
    """Stop a schedule creating runs (kept)."""
    return _change(name, schedule_id, "pause", _output.wants_json(json_))


@app.command("resume")
def resume(name: NameOrId, schedule_id: ScheduleId, json_: JsonOption = False) -> int:
    """Let a paused schedule create runs again."""
    return _change(name, schedule_id, "resume", _output.wants_json(json_))


@app.command("rm")
def rm(name: NameOrId, schedule_id: ScheduleId, json_: JsonOption = False) -> int:
    """Remove a schedule."""
    return _change(name, schedule_id, "rm", _output.wants_json(json_))
