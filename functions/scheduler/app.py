"""Lambda entry of the scheduler: what EventBridge Scheduler invokes.

Two events (the schedule's ``Input``):

* ``{"deployment_id": ..., "schedule_id": ..., "slot": "<aws.scheduler.scheduled-time>"}``: the
  run of that slot (``stratoflow.control.schedules.fire``; a slot fired twice makes one run).
* ``{"tick": true, "time": "<aws.scheduler.scheduled-time>"}``: the per-minute tick, which
  creates the runs of the schedules EventBridge cannot express (``service.tick`` with ``now`` =
  the event's time, horizon ``STRATOFLOW_SCHEDULER_HORIZON_SECONDS``, default 60).

Thin on purpose, and importing it touches no AWS: the store is made on the first invocation.
Returns a small JSON summary.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "stratoflow-scheduler")

from aws_lambda_powertools import Logger

logger = Logger(service="stratoflow-scheduler")
HORIZON_ENV = "STRATOFLOW_SCHEDULER_HORIZON_SECONDS"


class BadEvent(ValueError):
    """The event is neither a slot nor a tick."""


def _time(value: Any, field: str) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and value and not value.startswith("<"):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise BadEvent(f"{field}: {value!r} is not an ISO 8601 time") from None
    else:
        raise BadEvent(f"{field}: expected an ISO 8601 time, got {value!r}")
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def handle(event: dict[str, Any]) -> dict[str, Any]:
    from stratoflow.control import schedules as service
    from stratoflow.settings import get_settings
    from stratoflow.storage import get_store

    if not isinstance(event, dict):
        raise BadEvent(f"expected a JSON object, got {type(event).__name__}")
    settings = get_settings()
    if event.get("tick"):
        now = _time(event.get("time") or datetime.now(UTC).isoformat(), "time")
        default = service.TICK_HORIZON.total_seconds()
        horizon = timedelta(seconds=float(event.get("horizon_seconds", os.environ.get(HORIZON_ENV, default))))
        runs = service.tick(get_store(), settings, now, horizon)
        logger.info("tick", extra={"tick_time": now.isoformat(), "runs_created": len(runs)})
        return {"tick": now.isoformat(), "created": [r.id for r in runs]}
    deployment_id, schedule_id = event.get("deployment_id"), event.get("schedule_id")
    if not isinstance(deployment_id, str) or not isinstance(schedule_id, str):
        raise BadEvent("expected {deployment_id, schedule_id, slot} or {tick: true}")
    slot = _time(event.get("slot"), "slot")
    run = service.fire(get_store(), settings, deployment_id, schedule_id, slot)
    logger.info("fire", extra={"deployment_id": deployment_id, "schedule_id": schedule_id, "slot": slot.isoformat(),
                               "flow_run_id": run.id if run else None})
    return {"deployment_id": deployment_id, "schedule_id": schedule_id, "slot": slot.isoformat(),
            "flow_run_id": run.id if run is not None else None, "fired": run is not None}


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event)
