"""The schedule records a deployment carries. Validation of expressions lives here so a bad
schedule is refused before anything is written."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Timezone = Annotated[str, Field(default="UTC", max_length=64, description="IANA name, e.g. Europe/Paris")]


class _Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CronSchedule(_Schedule):
    """5-field Unix cron, evaluated in ``timezone``; ``day_or`` as in Prefect/croniter: when both
    day-of-month and day-of-week are restricted, a day matching either fires (True) or both (False)."""

    type: Literal["cron"] = "cron"
    cron: str = Field(min_length=9, max_length=256)
    timezone: Timezone = "UTC"
    day_or: bool = True


class IntervalSchedule(_Schedule):
    """Every ``interval`` seconds from ``anchor_date`` (default: 2020-01-01 in ``timezone``)."""

    type: Literal["interval"] = "interval"
    interval: float = Field(gt=0, description="seconds between runs")
    anchor_date: datetime | None = None
    timezone: Timezone = "UTC"


class RRuleSchedule(_Schedule):
    """An iCalendar RFC 5545 recurrence rule (``DTSTART`` optional)."""

    type: Literal["rrule"] = "rrule"
    rrule: str = Field(min_length=6, max_length=4096)
    timezone: Timezone = "UTC"


Schedule = Annotated[CronSchedule | IntervalSchedule | RRuleSchedule, Field(discriminator="type")]


class DeploymentSchedule(_Schedule):
    """One schedule of a deployment. ``active=False`` stops it creating runs (kept, not deleted)."""

    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    schedule: Schedule
    active: bool = True
    # Parameters merged over the deployment's defaults for runs of this schedule.
    parameters: dict[str, object] = Field(default_factory=dict)
