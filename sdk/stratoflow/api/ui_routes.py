"""The web UI's routes on the API function: its static assets under ``/ui/`` and the read-only
aggregates its pages need under ``/ui/api/`` (same resolver, so the same IAM auth on AWS).

* ``GET /ui`` redirects to ``/ui/`` (relative ``Location``, so a stage prefix survives);
  ``GET /ui/`` is ``index.html``; ``GET /ui/<name>`` is one file of ``stratoflow/ui/static``,
  with its content type, a strong ETag (``If-None-Match`` answers 304), ``Cache-Control`` and
  gzip when the browser accepts it (a gzipped or binary body is sent base64-encoded, as API
  Gateway's payload 2.0 expects). Unknown names and anything that is not a plain file name of
  that folder are a 404.
* ``GET /ui/api/dashboard?hours=24``: counts of the flow runs created in the window by state,
  per time bucket (the dashboard's chart), failing deployments, late runs and work pools. It
  reads at most ``DASHBOARD_MAX_RUNS`` runs through ``page_flow_runs`` (the by-day index, newest
  first) and says ``truncated`` when the window holds more.
* ``GET /ui/api/flow_runs/<id>/timeline``: the task runs of a flow run reduced to what the Gantt
  chart draws (a fraction of the full records' size), capped at ``TIMELINE_MAX_TASK_RUNS``.
"""

import json
import math
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stratoflow.models import FlowRun, TaskRun
    from stratoflow.storage.base import Store

DASHBOARD_MAX_RUNS = 5000
DASHBOARD_PAGE = 1000
DASHBOARD_BUCKETS = 24
DASHBOARD_LATE_LIMIT = 20
DASHBOARD_MAX_HOURS = 24 * 7
TIMELINE_MAX_TASK_RUNS = 20_000
# The page loads only its own files and talks only to its own origin (the log download is a blob: URL).
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; "
                           "base-uri 'none'; frame-ancestors 'none'; form-action 'none'")
# A scheduled run still waiting this long after its scheduled time is late (as Prefect marks it).
LATE_AFTER = timedelta(seconds=15)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _run_summary(run: "FlowRun") -> dict[str, Any]:
    state = run.state
    return {
        "id": run.id, "name": run.name, "flow_name": run.flow_name, "deployment_id": run.deployment_id,
        "state_type": state.type.value if state else None, "state_name": state.name if state else None,
        "scheduled_time": _iso(state.state_details.scheduled_time) if state else None,
        "expected_start_time": _iso(run.expected_start_time), "created": _iso(run.created),
        "start_time": _iso(run.start_time), "end_time": _iso(run.end_time), "tags": run.tags,
    }


def dashboard(store: "Store", *, hours: int, now: datetime) -> dict[str, Any]:
    """Everything the dashboard shows, from at most ``DASHBOARD_MAX_RUNS`` runs plus a few reads."""
    from stratoflow.control import deployments, work_pools
    from stratoflow.exceptions import ObjectNotFound
    from stratoflow.states import FAILURE_STATES, StateType
    from stratoflow.storage.base import FlowRunQuery

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


def _task_summary(run: "TaskRun") -> dict[str, Any]:
    state = run.state
    return {
        "id": run.id, "name": run.name, "task_key": run.task_key,
        "state_type": state.type.value if state else None, "state_name": state.name if state else None,
        "start_time": _iso(run.start_time), "end_time": _iso(run.end_time), "created": _iso(run.created),
        "run_count": run.run_count, "child_flow_run_id": run.child_flow_run_id,
        "message": (state.message or "")[:300] if state else "",
    }


def timeline(store: "Store", flow_run_id: str) -> dict[str, Any]:
    from stratoflow.control import task_runs

    runs = task_runs.read_task_runs(store, flow_run_id)
    return {"flow_run_id": flow_run_id, "total": len(runs), "truncated": len(runs) > TIMELINE_MAX_TASK_RUNS,
            "task_runs": [_task_summary(r) for r in runs[:TIMELINE_MAX_TASK_RUNS]]}


def register_ui_routes(app: Any) -> None:
    """Add ``GET /ui``, ``/ui/``, ``/ui/<name>`` and the ``/ui/api/...`` routes to the resolver."""
    from typing import Annotated

    from aws_lambda_powertools.event_handler import Response, content_types
    from aws_lambda_powertools.event_handler.openapi.params import Path, Query

    from stratoflow.api.errors import error_body
    from stratoflow.schemas import ErrorOut
    from stratoflow.states import now
    from stratoflow.storage import get_store
    from stratoflow.ui import CACHE_CONTROL, etag_matches, load_asset

    JSON = content_types.APPLICATION_JSON

    def header(name: str) -> str | None:
        headers = app.current_event.headers or {}
        for key, value in headers.items():
            if key.lower() == name:
                return str(value)
        return None

    def serve(name: str) -> Response[Any]:
        asset = load_asset(name)
        if asset is None:
            return Response(status_code=404, content_type=JSON, body=error_body(f"no UI asset {name!r}"))
        headers = {"ETag": asset.etag, "Cache-Control": CACHE_CONTROL, "Vary": "Accept-Encoding",
                   "X-Content-Type-Options": "nosniff"}
        if asset.content_type.startswith("text/html"):
            headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        if etag_matches(header("if-none-match"), asset.etag):
            return Response(status_code=304, content_type=None, headers=headers, body=None)
        body: str | bytes
        if asset.gzipped is not None and "gzip" in (header("accept-encoding") or ""):
            body = asset.gzipped  # bytes: Powertools sends it base64-encoded (isBase64Encoded)
            headers["Content-Encoding"] = "gzip"
        elif asset.is_text:
            body = asset.data.decode("utf-8")
        else:
            body = asset.data
        return Response(status_code=200, content_type=asset.content_type, headers=headers, body=body)

    def json_response(payload: dict[str, Any]) -> Response[Any]:
        text = json.dumps(payload, separators=(",", ":"))
        # compress=True gzips when the request accepts it (the body then goes base64-encoded).
        return Response(status_code=200, content_type=JSON, body=text, compress=True,
                        headers={"Cache-Control": "no-store", "Vary": "Accept-Encoding"})

    @app.get("/ui", include_in_schema=False)
    def ui_redirect():  # no return annotation: a plain response, unvalidated
        return Response(status_code=308, content_type=None, headers={"Location": "ui/"}, body="")

    @app.get("/ui/", include_in_schema=False)
    def ui_index():
        return serve("index.html")

    @app.get("/ui/<name>", include_in_schema=False)
    def ui_asset(name: str):
        return serve(name)

    def responses(description: str, *errors: int) -> dict[int, Any]:
        texts = {404: "unknown flow run", 422: "invalid parameter (named)", 500: "internal error (logged)"}
        out: dict[int, Any] = {200: {"description": description, "content": {JSON: {}}}}
        for code in (*errors, 422, 500):
            out[code] = {"description": texts[code], "content": {JSON: {"model": ErrorOut}}}
        return out

    @app.get("/ui/api/dashboard", tags=["ui"], summary="The UI dashboard: runs of the last hours by state, "
             "failing deployments, late runs, work pools",
             responses=responses("counts by state and time bucket, failing deployments, late runs, work pools"))
    def ui_dashboard(hours: Annotated[int, Query(ge=1, le=DASHBOARD_MAX_HOURS)] = 24):
        return json_response(dashboard(get_store(), hours=hours, now=now()))

    @app.get("/ui/api/flow_runs/<flow_run_id>/timeline", tags=["ui"],
             summary="The task runs of a flow run, reduced to what the UI's timeline draws",
             responses=responses("the task runs in start order", 404))
    def ui_timeline(flow_run_id: Annotated[str, Path(min_length=1, max_length=256)]):
        return json_response(timeline(get_store(), flow_run_id))
