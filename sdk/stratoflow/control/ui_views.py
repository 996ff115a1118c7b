"""What the web UI's pages draw, read in one request each (``GET /ui/api/...``).

* ``dashboard``: counts of the flow runs created in the last ``hours`` by state, per time bucket
  (the dashboard's chart), failing deployments, late runs and work pools. It reads at most
  ``DASHBOARD_MAX_RUNS`` runs through ``page_flow_runs`` (the by-day index, newest first) and says
  ``truncated`` when the window holds more.
* ``timeline``: the task runs of a flow run reduced to what the Gantt chart draws, capped at
  ``TIMELINE_MAX_TASK_RUNS``.

No HTTP here: plain JSON-ready dicts; domain errors (``stratoflow.exceptions``) for the API to map.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from stratoflow.control import deployments, task_runs, work_pools
from stratoflow.exceptions import ObjectNotFound
from stratoflow.models import FlowRun, TaskRun
from stratoflow.states import FAILURE_STATES, LATE_AFTER, StateType
from stratoflow.storage.base import FlowRunQuery

if TYPE_CHECKING:
    from stratoflow.storage.base import Store

DASHBOARD_MAX_RUNS = 5000
DASHBOARD_PAGE = 1000
DASHBOARD_BUCKETS = 24
DASHBOARD_LATE_LIMIT = 20
DASHBOARD_MAX_HOURS = 24 * 7
TIMELINE_MAX_TASK_RUNS = 20_000


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _run_summary(run: FlowRun) -> dict[str, Any]:
    state = run.state
    return {
        "id": run.id, "name": run.name, "flow_name": run.flow_name, "deployment_id": run.deployment_id,
        "state_type": state.type.value if state else None, "state_name": state.name if state else None,
        "scheduled_time": _iso(state.state_details.scheduled_time) if state else None,
        "expected_start_time": _iso(run.expected_start_time), "created": _iso(run.created),
        "start_time": _iso(run.start_time), "end_time": _iso(run.end_time), "tags": run.tags,
    }


def dashboard(store: Store, *, hours: int, now: datetime) -> dict[str, Any]:
    """Everything the dashboard shows, from at most ``DASHBOARD_MAX_RUNS`` runs plus a few reads."""
    since = now - timedelta(hours=hours)
    runs: list[FlowRun] = []
    cursor: str | None = None
    truncated = False
    while True:
        page, cursor = store.page_flow_runs(FlowRunQuery(
            created_after=since, limit=min(DASHBOARD_PAGE, DASHBOARD_MAX_RUNS - len(runs)), cursor=cursor))
        runs.extend(page)
        if cursor is None:
            break
        if len(runs) >= DASHBOARD_MAX_RUNS:
            truncated = True
            break

    bucket_seconds = max(60, math.ceil(hours * 3600 / DASHBOARD_BUCKETS))
    buckets: list[dict[str, Any]] = [
        {"start": _iso(since + timedelta(seconds=i * bucket_seconds)), "counts": Counter()}
        for i in range(math.ceil(hours * 3600 / bucket_seconds))]
    by_type: Counter[str] = Counter()
    by_name: Counter[str] = Counter()
    by_deployment: dict[str, dict[str, Any]] = defaultdict(lambda: {"runs": 0, "failed": 0, "last_failure": None})
    for run in runs:
        state_type = run.state.type.value if run.state else "UNKNOWN"
        by_type[state_type] += 1
        by_name[run.state.name if run.state else "Unknown"] += 1
        index = int((run.created - since).total_seconds() // bucket_seconds)
        if 0 <= index < len(buckets):
            buckets[index]["counts"][state_type] += 1
        if run.deployment_id:
            entry = by_deployment[run.deployment_id]
            entry["runs"] += 1
            if run.state is not None and run.state.type in FAILURE_STATES:
                entry["failed"] += 1
                when = run.end_time or run.state.timestamp
                if entry["last_failure"] is None or when > entry["last_failure"]:
                    entry["last_failure"] = when

    failing = sorted(((dep_id, e) for dep_id, e in by_deployment.items() if e["failed"]),
                     key=lambda item: (-item[1]["failed"], item[0]))[:20]
    failing_out = []
    for dep_id, entry in failing:
        try:
            dep = deployments.read_deployment(store, dep_id)
            name, flow_name, paused = dep.name, dep.flow_name, dep.paused
        except ObjectNotFound:
            name, flow_name, paused = None, None, None
        failing_out.append({"id": dep_id, "name": name, "flow_name": flow_name, "paused": paused,
                            "runs": entry["runs"], "failed": entry["failed"],
                            "last_failure": _iso(entry["last_failure"])})

    late, _ = store.page_flow_runs(FlowRunQuery(state_types=(StateType.SCHEDULED,),
                                                scheduled_before=now - LATE_AFTER, limit=DASHBOARD_LATE_LIMIT))
    pools = []
    for pool in work_pools.list_work_pools(store)[:100]:
        pools.append({"name": pool.name, "type": pool.type.value, "paused": pool.paused,
                      "concurrency_limit": pool.concurrency_limit, "description": pool.description})
    return {
        "hours": hours, "since": _iso(since), "now": _iso(now), "total": len(runs), "truncated": truncated,
        "counts": dict(by_type), "counts_by_name": dict(by_name), "bucket_seconds": bucket_seconds,
        "buckets": [{"start": b["start"], "counts": dict(b["counts"])} for b in buckets],
        "failing_deployments": failing_out, "late_runs": [_run_summary(r) for r in late], "work_pools": pools,
    }


def _task_summary(run: TaskRun) -> dict[str, Any]:
    state = run.state
    return {
        "id": run.id, "name": run.name, "task_key": run.task_key,
        "state_type": state.type.value if state else None, "state_name": state.name if state else None,
        "start_time": _iso(run.start_time), "end_time": _iso(run.end_time), "created": _iso(run.created),
        "run_count": run.run_count, "child_flow_run_id": run.child_flow_run_id,
        "message": (state.message or "")[:300] if state else "",
    }


def timeline(store: Store, flow_run_id: str) -> dict[str, Any]:
    """A flow run's task runs, reduced to what the Gantt chart draws (a fraction of the records'
    size), at most ``TIMELINE_MAX_TASK_RUNS``; ``ObjectNotFound`` for an unknown flow run."""
    runs = task_runs.read_task_runs(store, flow_run_id)
    return {"flow_run_id": flow_run_id, "total": len(runs), "truncated": len(runs) > TIMELINE_MAX_TASK_RUNS,
            "task_runs": [_task_summary(r) for r in runs[:TIMELINE_MAX_TASK_RUNS]]}
