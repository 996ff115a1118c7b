"""Provisions deployment schedules as EventBridge Scheduler schedules (on AWS, or in moto).

* One schedule group, named like the stack's tables (``settings.table_prefix``).
* One schedule per deployment schedule that EventBridge can express (``translate.py``), named
  ``d-<deployment id>-<hash of the schedule id>`` (EventBridge names are at most 64 characters),
  ``ENABLED`` while the schedule is active and its deployment unpaused, ``DISABLED`` otherwise.
  Its target is the scheduler function (``STRATOFLOW_SCHEDULER_TARGET_ARN``, invoked with the
  role ``STRATOFLOW_SCHEDULER_ROLE_ARN``) with the input
  ``{"deployment_id", "schedule_id", "slot": "<aws.scheduler.scheduled-time>"}``; no flexible
  time window. A ``rate()`` schedule's ``StartDate`` is its first slot from now, so it fires on
  the anchor's phase.
* One ``rate(1 minute)`` schedule, ``stratoflow-tick``, for the schedules EventBridge cannot
  express; its input is ``{"tick": true, "time": "<aws.scheduler.scheduled-time>"}``. It is
  created when the first such schedule is provisioned and left in place (a tick with nothing to
  do costs one invocation a minute).

Every call is idempotent: create falls back to update, delete ignores what is already gone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from stratoflow.exceptions import StratoflowError
from stratoflow.schedules.slots import next_slots, utc
from stratoflow.schedules.translate import EventBridgeExpression, translate
from stratoflow.storage import aws as _aws

if TYPE_CHECKING:
    from stratoflow.models import Deployment
    from stratoflow.schedules.models import DeploymentSchedule
    from stratoflow.settings import Settings

TARGET_ARN_ENV = "STRATOFLOW_SCHEDULER_TARGET_ARN"
ROLE_ARN_ENV = "STRATOFLOW_SCHEDULER_ROLE_ARN"
TICK_SCHEDULE_NAME = "stratoflow-tick"
TICK_EXPRESSION = "rate(1 minute)"
SCHEDULED_TIME = "<aws.scheduler.scheduled-time>"
LOCAL_ACCOUNT = "123456789012"  # moto's account
_NAME_OK = re.compile(r"^[0-9A-Za-z_.-]+$")


class SchedulerConfigError(StratoflowError):
    """The scheduler's target or role is not configured."""


@dataclass(frozen=True)
class ProvisionedSchedule:
    name: str
    expression: str
    timezone: str
    state: str  # ENABLED | DISABLED
    input: dict[str, Any]
    start_date: datetime | None

    @property
    def enabled(self) -> bool:
        return self.state == "ENABLED"

    @property
    def is_tick(self) -> bool:
        return bool(self.input.get("tick"))

    def as_expression(self) -> EventBridgeExpression:
        return EventBridgeExpression(self.expression, self.timezone, self.start_date)


def schedule_name(deployment_id: str, schedule_id: str) -> str:
    """``d-<deployment id>-<16 hex of sha256(schedule id)>``: 55 characters for a UUID id."""
    digest = hashlib.sha256(f"{deployment_id}/{schedule_id}".encode()).hexdigest()
    return f"{deployment_prefix(deployment_id)}{digest[:16]}"


def deployment_prefix(deployment_id: str) -> str:
    if not _NAME_OK.match(deployment_id) or len(deployment_id) > 40:
        deployment_id = hashlib.sha256(deployment_id.encode()).hexdigest()[:36]
    return f"d-{deployment_id}-"


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class EventBridgeProvisioner:
    """``ScheduleProvisioner`` on EventBridge Scheduler (``_aws.client("scheduler")``, lazily)."""

    def __init__(self, settings: Settings, *, target_arn: str | None = None, role_arn: str | None = None,
                 group: str | None = None, now: Any = None) -> None:
        self.settings = settings
        self.group = group or settings.table_prefix
        self._target_arn = target_arn or os.environ.get(TARGET_ARN_ENV) or None
        self._role_arn = role_arn or os.environ.get(ROLE_ARN_ENV) or None
        self._now = now or (lambda: datetime.now(UTC))
        self._group_ready = False

    # -- configuration ----------------------------------------------------------------------
    @property
    def _local(self) -> bool:
        return self.settings.resolved_backend == "embedded" or bool(self.settings.aws_endpoint_url)

    def _arns(self) -> tuple[str, str]:
        target, role = self._target_arn, self._role_arn
        if self._local:  # moto checks neither: point at the names the SAM stack uses
            target = target or (f"arn:aws:lambda:{self.settings.region}:{LOCAL_ACCOUNT}:function:"
                                f"{self.settings.table_prefix}-scheduler")
            role = role or f"arn:aws:iam::{LOCAL_ACCOUNT}:role/{self.settings.table_prefix}-scheduler"
        if not target or not role:
            raise SchedulerConfigError(f"schedules cannot be provisioned: set {TARGET_ARN_ENV} (the scheduler "
                                       f"function) and {ROLE_ARN_ENV} (the role EventBridge invokes it with)")
        return target, role

    def _client(self) -> Any:

        return _aws.client("scheduler", self.settings)

    def ensure_group(self) -> None:
        if self._group_ready:
            return
        client = self._client()
        try:
            # Look first: moto's CreateScheduleGroup replaces an existing group (and empties it)
            # where AWS answers ConflictException.
            client.get_schedule_group(Name=self.group)
        except Exception as exc:
            if _error_code(exc) != "ResourceNotFoundException":
                raise
            try:
                client.create_schedule_group(Name=self.group)
            except Exception as create_exc:
                if _error_code(create_exc) != "ConflictException":
                    raise
        self._group_ready = True

    # -- one schedule -----------------------------------------------------------------------
    def _put(self, name: str, expr: EventBridgeExpression, payload: dict[str, Any], enabled: bool) -> None:
        self.ensure_group()
        target, role = self._arns()
        args: dict[str, Any] = {
            "Name": name, "GroupName": self.group, "ScheduleExpression": expr.expression,
            "ScheduleExpressionTimezone": expr.timezone, "FlexibleTimeWindow": {"Mode": "OFF"},
            "Target": {"Arn": target, "RoleArn": role, "Input": json.dumps(payload, separators=(",", ":"))},
            "State": "ENABLED" if enabled else "DISABLED",
        }
        if expr.start_date is not None:
            args["StartDate"] = expr.start_date
        client = self._client()
        try:
            client.create_schedule(**args)
        except Exception as exc:
            if _error_code(exc) != "ConflictException":
                raise
            client.update_schedule(**args)

    def _delete(self, name: str) -> bool:
        try:
            self._client().delete_schedule(Name=name, GroupName=self.group)
        except Exception as exc:
            if _error_code(exc) == "ResourceNotFoundException":
                return False
            raise
        return True

    def put_schedule(self, deployment: Deployment, schedule: DeploymentSchedule) -> str | None:
        """Create or update the EventBridge schedule of ``schedule``; returns its name, or None
        (and deletes any earlier one) when EventBridge cannot express it and the tick fires it."""
        name = schedule_name(deployment.id, schedule.id)
        expr = translate(schedule.schedule).expression
        if expr is None:
            self._delete(name)
            if schedule.active and not deployment.paused:
                self.ensure_tick()
            return None
        if expr.start_date is not None:
            # rate(): start at the first slot from now, so EventBridge keeps the anchor's phase.
            first = next_slots(schedule.schedule, self._now(), count=1)
            expr = EventBridgeExpression(expr.expression, expr.timezone, first[0] if first else None)
        payload = {"deployment_id": deployment.id, "schedule_id": schedule.id, "slot": SCHEDULED_TIME}
        self._put(name, expr, payload, enabled=schedule.active and not deployment.paused)
        return name

    def delete_schedule(self, deployment_id: str, schedule_id: str) -> bool:
        return self._delete(schedule_name(deployment_id, schedule_id))

    def ensure_tick(self) -> None:
        self._put(TICK_SCHEDULE_NAME, EventBridgeExpression(TICK_EXPRESSION, "UTC"),
                  {"tick": True, "time": SCHEDULED_TIME}, enabled=True)

    # -- a deployment -----------------------------------------------------------------------
    def sync_deployment(self, deployment: Deployment) -> None:
        wanted = {schedule_name(deployment.id, s.id) for s in deployment.schedules}
        kept: set[str] = set()
        for schedule in deployment.schedules:
            name = self.put_schedule(deployment, schedule)
            if name is not None:
                kept.add(name)
        for name in self._names(deployment_prefix(deployment.id)):
            if name not in kept or name not in wanted:
                self._delete(name)

    def remove_deployment(self, deployment_id: str) -> None:
        for name in self._names(deployment_prefix(deployment_id)):
            self._delete(name)

    # -- reading ----------------------------------------------------------------------------
    def _names(self, prefix: str = "") -> list[str]:
        self.ensure_group()
        client = self._client()
        names: list[str] = []
        token: str | None = None
        while True:
            args: dict[str, Any] = {"GroupName": self.group, "MaxResults": 100}
            if prefix:
                args["NamePrefix"] = prefix
            if token:
                args["NextToken"] = token
            page = client.list_schedules(**args)
            names.extend(s["Name"] for s in page.get("Schedules", []) if s["Name"].startswith(prefix))
            token = page.get("NextToken")
            if not token:
                return names

    def get(self, name: str) -> ProvisionedSchedule | None:
        try:
            got = self._client().get_schedule(Name=name, GroupName=self.group)
        except Exception as exc:
            if _error_code(exc) == "ResourceNotFoundException":
                return None
            raise
        raw_input = got.get("Target", {}).get("Input") or "{}"
        try:
            payload = json.loads(raw_input)
        except ValueError:
            payload = {}
        start = got.get("StartDate")
        return ProvisionedSchedule(name=got["Name"], expression=got["ScheduleExpression"],
                                   timezone=got.get("ScheduleExpressionTimezone") or "UTC",
                                   state=got.get("State", "ENABLED"),
                                   input=payload if isinstance(payload, dict) else {},
                                   start_date=utc(start) if isinstance(start, datetime) else None)

    def list_provisioned(self) -> list[ProvisionedSchedule]:
        """Every schedule of the group, by name."""
        out = []
        for name in sorted(self._names()):
            found = self.get(name)
            if found is not None:
                out.append(found)
        return out
