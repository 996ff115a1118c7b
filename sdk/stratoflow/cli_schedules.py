"""``stratoflow deployment schedule ls|add|pause|resume|rm``: a deployment's schedules.

``register_deployment_subcommands(deployment_subparsers)`` adds the ``schedule`` group to the
``deployment`` command. Changes go through ``get_client().create_deployment(...)`` with the new
list of schedules (the deployment's version goes up; its other fields stay as they are).
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

from stratoflow.cli import terminal_safe
from stratoflow.exceptions import StratoflowError


class ScheduleNotFound(StratoflowError):
    """The deployment has no schedule with that id."""


def _table(rows: list[list[Any]], headers: list[str]) -> str:
    from stratoflow.cli import table

    return table(rows, headers)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


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
    from stratoflow.schedules.translate import translate

    t = translate(schedule.schedule)
    return f"EventBridge {t.expression.expression}" if t.expression is not None else "tick"


def _deployment(name_or_id: str) -> Any:
    from stratoflow import get_client

    return get_client().read_deployment(name_or_id)


def _save(deployment: Any, schedules: list[Any]) -> Any:
    from stratoflow import get_client

    return get_client().create_deployment(deployment.flow_name, deployment.name, schedules=schedules)


def cmd_schedule_ls(args: argparse.Namespace) -> int:
    from stratoflow.control.schedules import upcoming
    from stratoflow.schedules.slots import zone
    from stratoflow.schedules.translate import translate

    if args.count < 1:
        print("error: --count must be at least 1", file=sys.stderr)
        return 2
    dep = _deployment(args.name)
    now = datetime.now(UTC)
    slots = upcoming(dep, now, args.count)
    by_id = {s.id: s for s in dep.schedules}
    if args.json:
        _print_json({
            "deployment": f"{dep.flow_name}/{dep.name}", "paused": dep.paused,
            "schedules": [{"id": s.id, "active": s.active, "schedule": s.schedule.model_dump(mode="json"),
                           "eventbridge": (t.expression.expression if (t := translate(s.schedule)).expression
                                           else None), "tick_reason": None if t.expression else t.reason,
                           "upcoming": [slot.isoformat() for sid, slot in slots if sid == s.id]}
                          for s in dep.schedules]})
        return 0
    print(terminal_safe(f"Deployment {dep.flow_name}/{dep.name}")
          + ("  (paused: no runs are created)" if dep.paused else ""))
    if not dep.schedules:
        print("  no schedules")
        return 0
    rows = [[s.id, describe(s), s.schedule.timezone, "active" if s.active else "inactive", _fired_by(s)]
            for s in dep.schedules]
    print(_table(rows, ["SCHEDULE", "WHEN", "TIMEZONE", "STATUS", "FIRED BY"]))
    if slots:
        print()
        upcoming_rows = []
        for sid, slot in slots:
            tz = by_id[sid].schedule.timezone
            local = slot.astimezone(zone(tz))
            upcoming_rows.append([sid, slot.strftime("%Y-%m-%d %H:%M:%S UTC"),
                                  f"{local.strftime('%Y-%m-%d %H:%M:%S')} {tz}"])
        print(_table(upcoming_rows, ["SCHEDULE", "NEXT (UTC)", "NEXT (LOCAL)"]))
    return 0


def _new_schedule(args: argparse.Namespace) -> Any:
    from stratoflow.schedules.models import CronSchedule, DeploymentSchedule, IntervalSchedule, RRuleSchedule

    tz = args.timezone or "UTC"
    spec: Any
    if args.cron is not None:
        spec = CronSchedule(cron=args.cron, timezone=tz, day_or=args.day_or)
    elif args.interval is not None:
        anchor = datetime.fromisoformat(args.anchor_date) if args.anchor_date else None
        spec = IntervalSchedule(interval=args.interval, anchor_date=anchor, timezone=tz)
    else:
        spec = RRuleSchedule(rrule=args.rrule, timezone=tz)
    # The id is always given explicitly: an update sends only the fields set.
    fields: dict[str, Any] = {"schedule": spec, "active": not args.inactive, "id": args.id or str(uuid.uuid4())}
    if args.param:
        from stratoflow.cli import _parse_params

        fields["parameters"] = _parse_params(args.param)
    return DeploymentSchedule(**fields)


def cmd_schedule_add(args: argparse.Namespace) -> int:
    from stratoflow.cli import _UsageError

    if args.cron is None and (args.day_or is False):
        raise _UsageError("--no-day-or applies to --cron only")
    if args.interval is None and args.anchor_date:
        raise _UsageError("--anchor-date applies to --interval only")
    if args.anchor_date:
        try:
            datetime.fromisoformat(args.anchor_date)
        except ValueError:
            raise _UsageError(f"--anchor-date {args.anchor_date!r} is not an ISO 8601 time") from None
    dep = _deployment(args.name)
    new = _new_schedule(args)
    if any(s.id == new.id for s in dep.schedules):
        raise _UsageError(f"deployment {dep.flow_name}/{dep.name} already has a schedule {new.id!r}")
    saved = _save(dep, [*dep.schedules, new])
    if args.json:
        _print_json(new.model_dump(mode="json"))
        return 0
    where = f"{saved.flow_name}/{saved.name}"
    print(terminal_safe(f"Added schedule {new.id} to {where}: {describe(new)} ({new.schedule.timezone}), ")
          + f"fired by {_fired_by(new)}")
    return 0


def _change(args: argparse.Namespace, verb: str) -> int:
    dep = _deployment(args.name)
    if not any(s.id == args.schedule_id for s in dep.schedules):
        known = ", ".join(s.id for s in dep.schedules) or "none"
        raise ScheduleNotFound(f"deployment {dep.flow_name}/{dep.name} has no schedule {args.schedule_id!r} "
                               f"(its schedules: {known})")
    if verb == "rm":
        schedules = [s for s in dep.schedules if s.id != args.schedule_id]
    else:
        schedules = [s.model_copy(update={"active": verb == "resume"}) if s.id == args.schedule_id else s
                     for s in dep.schedules]
    saved = _save(dep, schedules)
    if args.json:
        _print_json([s.model_dump(mode="json") for s in saved.schedules])
        return 0
    done = {"rm": "Removed", "pause": "Paused", "resume": "Resumed"}[verb]
    print(terminal_safe(f"{done} schedule {args.schedule_id} of {saved.flow_name}/{saved.name}"))
    return 0


def cmd_schedule_pause(args: argparse.Namespace) -> int:
    return _change(args, "pause")


def cmd_schedule_resume(args: argparse.Namespace) -> int:
    return _change(args, "resume")


def cmd_schedule_rm(args: argparse.Namespace) -> int:
    return _change(args, "rm")


def register_deployment_subcommands(deployment_subparsers: Any) -> None:
    """Add ``schedule ls|add|pause|resume|rm`` to the ``deployment`` command's subparsers."""
    group = deployment_subparsers.add_parser("schedule", help="a deployment's schedules").add_subparsers(
        dest="schedule_action", required=True)
    p = group.add_parser("ls", help="show a deployment's schedules and their upcoming times (UTC and local)")
    p.add_argument("name", metavar="NAME_OR_ID")
    p.add_argument("--count", type=int, default=10, help="upcoming times per schedule (default 10)")
    p.set_defaults(fn=cmd_schedule_ls)

    p = group.add_parser("add", help="add a schedule to a deployment")
    p.add_argument("name", metavar="NAME_OR_ID")
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--cron", help="5-field Unix cron, or @hourly/@daily/@weekly/@monthly/@yearly")
    kind.add_argument("--interval", type=float, metavar="SECONDS", help="every SECONDS seconds")
    kind.add_argument("--rrule", help="an RFC 5545 recurrence rule")
    p.add_argument("--timezone", help="IANA time zone (default UTC)")
    p.add_argument("--day-or", dest="day_or", action=argparse.BooleanOptionalAction, default=True,
                   help="cron: a day matching day-of-month OR day-of-week fires (default); --no-day-or: both")
    p.add_argument("--anchor-date", help="interval: ISO 8601 time the slots count from (default 2020-01-01)")
    p.add_argument("--id", help="the schedule's id (default: a new UUID)")
    p.add_argument("--param", "-p", action="append", metavar="KEY=VALUE",
                   help="a parameter for this schedule's runs (repeatable; VALUE read as JSON when valid)")
    p.add_argument("--inactive", action="store_true", help="add it paused")
    p.set_defaults(fn=cmd_schedule_add)

    for action, fn, text in (("pause", cmd_schedule_pause, "stop a schedule creating runs (kept)"),
                             ("resume", cmd_schedule_resume, "let a paused schedule create runs again"),
                             ("rm", cmd_schedule_rm, "remove a schedule")):
        p = group.add_parser(action, help=text)
        p.add_argument("name", metavar="NAME_OR_ID")
        p.add_argument("schedule_id", metavar="SCHEDULE_ID")
        p.set_defaults(fn=fn)
