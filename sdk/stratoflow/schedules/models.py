"""The schedule records a deployment carries. Validation of expressions lives here so a bad
schedule is refused before anything is written (the API answers 422 naming the field, e.g.
``schedules.0.schedule.cron: ...``). Pure: no boto3, no I/O.

Two levels: what every record must be (the models' own validators, also applied when a stored
deployment is read) and what a schedule being created or changed must also be
(``DeploymentScheduleIn``, used by requests and deploy): limits added later must not make the
deployments stored before them unreadable; the tick skips what it cannot compute instead.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
)
from pydantic_core import InitErrorDetails

Timezone = Annotated[str, Field(default="UTC", max_length=64, description="IANA name, e.g. Europe/Paris")]

# croniter's aliases, accepted and expanded to the 5 fields they stand for.
CRON_ALIASES: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# Shortest interval between two slots of a schedule, in seconds: an interval below it, or an
# rrule firing closer, is refused (not rounded). The tick creates runs a minute ahead, so a
# 1 s schedule fires on time (bench/scheduling_delay.py); cron's resolution is a minute.
MIN_INTERVAL_SECONDS = 1.0


def expand_cron(cron: str) -> str:
    """The 5-field form of ``cron`` (aliases such as ``@hourly`` expanded, whitespace normalized)."""
    text = " ".join(cron.split())
    return CRON_ALIASES.get(text.lower(), text)


def check_timezone(value: str) -> str:

    if not value or value != value.strip() or value.startswith(("/", ".")) or ".." in value:
        raise ValueError(f"{value!r} is not an IANA time zone name (e.g. UTC, Europe/Paris)")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"{value!r} is not an IANA time zone name (e.g. UTC, Europe/Paris)") from None
    return value


def check_cron(value: str) -> str:
    # cold start: croniter loads when a cron is first read, not with every model import
    from croniter import croniter

    expanded = expand_cron(value)
    if expanded.startswith("@"):
        raise ValueError(f"{value!r}: unknown alias; use one of {', '.join(CRON_ALIASES)} or 5 fields")
    fields = expanded.split()
    if len(fields) != 5:
        raise ValueError(f"{value!r} has {len(fields)} fields; a Unix cron has 5 "
                         "(minute hour day-of-month month day-of-week)")
    if any(f.upper().startswith("H") or "H(" in f.upper() for f in fields):
        raise ValueError(f"{value!r}: hashed fields (H) are not supported")
    if not croniter.is_valid(expanded):
        raise ValueError(f"{value!r} is not a valid cron expression")
    try:  # is_valid accepts a few expressions that cannot produce a time; make sure one comes
        croniter(expanded, datetime(2020, 1, 1)).get_next(datetime)
    except Exception as exc:
        raise ValueError(f"{value!r} never matches a time: {exc}") from None
    return value


def check_rrule(value: str) -> str:
    # cold start: dateutil's rrule loads when an rrule is first read
    from dateutil.rrule import rrulestr

    try:
        rrulestr(value, forceset=True, dtstart=datetime(2020, 1, 1))
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise ValueError(f"not a valid RFC 5545 recurrence rule: {exc}") from None
    return value


class _Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Fields written out even when they hold their default: ``model_dump(exclude_unset=True)``
    # (how deployment updates are sent and merged) must keep ``type``, the union's tag.
    _always_set: tuple[str, ...] = ("type",)

    def model_post_init(self, context: Any, /) -> None:
        self.__pydantic_fields_set__.update(f for f in self._always_set if f in type(self).model_fields)

    @field_validator("timezone", check_fields=False)
    @classmethod
    def _timezone(cls, value: str) -> str:
        return check_timezone(value)


class CronSchedule(_Schedule):
    """5-field Unix cron (or a croniter alias such as ``@hourly``), evaluated in ``timezone``;
    ``day_or`` as in Prefect/croniter: when both day-of-month and day-of-week are restricted, a
    day matching either fires (True) or only a day matching both (False)."""

    type: Literal["cron"] = "cron"
    cron: str = Field(min_length=1, max_length=256)
    timezone: Timezone = "UTC"
    day_or: bool = True

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        return check_cron(value)


class IntervalSchedule(_Schedule):
    """Every ``interval`` seconds from ``anchor_date`` (default: 2020-01-01 00:00 in ``timezone``;
    a naive anchor is read in ``timezone``). Slots are ``anchor + k * interval`` in absolute time."""

    type: Literal["interval"] = "interval"
    interval: float = Field(ge=MIN_INTERVAL_SECONDS, le=10 * 365 * 86400, description="seconds between runs")
    anchor_date: datetime | None = None
    timezone: Timezone = "UTC"


class RRuleSchedule(_Schedule):
    """An iCalendar RFC 5545 recurrence rule. ``DTSTART`` is optional (default 2020-01-01 00:00);
    a DTSTART without a zone (and the default) is wall time in ``timezone``."""

    type: Literal["rrule"] = "rrule"
    rrule: str = Field(min_length=6, max_length=4096)
    timezone: Timezone = "UTC"

    @field_validator("rrule")
    @classmethod
    def _rrule(cls, value: str) -> str:
        return check_rrule(value)


Schedule = Annotated[CronSchedule | IntervalSchedule | RRuleSchedule, Field(discriminator="type")]


class DeploymentSchedule(_Schedule):
    """One schedule of a deployment. ``active=False`` stops it creating runs (kept, not deleted).
    Give ``id`` explicitly when the schedule is sent as an update (``exclude_unset`` dumps leave a
    generated id out, and the receiver would generate another)."""

    _always_set: tuple[str, ...] = ()

    id: str = Field(default_factory=lambda: str(uuid.uuid4()), min_length=1, max_length=128,
                    pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    schedule: Schedule
    active: bool = True
    # Parameters merged over the deployment's defaults for runs of this schedule.
    parameters: dict[str, object] = Field(default_factory=dict)

    @field_validator("schedule", mode="wrap")
    @classmethod
    def _schedule_loc(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """Errors name the field (``schedule.cron``), not pydantic's union tag (``schedule.cron.cron``)."""
        try:
            return handler(value)
        except ValidationError as exc:
            tag = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
            details: list[InitErrorDetails] = []
            for err in exc.errors():
                loc = tuple(err["loc"])
                if tag is not None and loc[:1] == (tag,):
                    loc = loc[1:]
                detail: dict[str, Any] = {"type": err["type"], "loc": loc, "input": err.get("input")}
                if "ctx" in err:
                    detail["ctx"] = err["ctx"]
                details.append(detail)  # type: ignore[arg-type]
            raise ValidationError.from_exception_data(exc.title, details) from None
# A schedule as a request gives it (``DeploymentCreate.schedules``): errors name the field,
# ``schedules.0.schedule.rrule: Value error, ...``.
