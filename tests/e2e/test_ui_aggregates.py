"""The ``/ui/api`` aggregates in process, over the embedded store: bounded reads, right counts."""

from __future__ import annotations

from datetime import timedelta

import pytest

from stratoflow.control import deployments, flow_runs, work_pools
from stratoflow.control import ui_views as ui_routes
from stratoflow.schemas import DeploymentCreate, DeploymentRunCreate, FlowRunCreate, StateIn, WorkPoolCreate
from stratoflow.settings import get_settings
from stratoflow.states import StateDetails, StateType, now
from stratoflow.storage import get_store


def _run(state: StateType, flow_name: str = "agg", **details: object) -> str:
    run, _ = flow_runs.create_flow_run(get_store(), get_settings(), FlowRunCreate(
        flow_name=flow_name, state=StateIn(type=state, state_details=StateDetails(**details))))  # type: ignore[arg-type]
    return run.id


def test_dashboard_counts_buckets_failing_deployments_late_runs_and_pools() -> None:
    store = get_store()
    for state in (StateType.COMPLETED, StateType.COMPLETED, StateType.FAILED, StateType.RUNNING):
        _run(state)
    late_id = _run(StateType.SCHEDULED, scheduled_time=now() - timedelta(minutes=5))
    _run(StateType.SCHEDULED, scheduled_time=now() + timedelta(hours=1))
    dep, _ = deployments.upsert_deployment(store, DeploymentCreate(name="nightly", flow_name="agg-dep"))
    for state in (StateType.FAILED, StateType.CRASHED, StateType.COMPLETED):
        flow_runs.create_deployment_flow_run(store, get_settings(), dep.id,
                                             DeploymentRunCreate(state=StateIn(type=state)))
    work_pools.create_work_pool(store, WorkPoolCreate(name="pool-a"))
    work_pools.set_work_pool_paused(store, "pool-a", True)

    data = ui_routes.dashboard(store, hours=2, now=now())
    assert data["total"] == 9 and not data["truncated"]
    assert data["counts"] == {"COMPLETED": 3, "FAILED": 2, "RUNNING": 1, "SCHEDULED": 2, "CRASHED": 1}
    assert sum(sum(b["counts"].values()) for b in data["buckets"]) == 9
    assert len(data["buckets"]) == ui_routes.DASHBOARD_BUCKETS
    assert data["failing_deployments"] == [{
        "id": dep.id, "name": "nightly", "flow_name": "agg-dep", "paused": False, "runs": 3, "failed": 2,
        "last_failure": data["failing_deployments"][0]["last_failure"]}]
    assert [r["id"] for r in data["late_runs"]] == [late_id]
    assert data["work_pools"][0]["name"] == "pool-a" and data["work_pools"][0]["paused"] is True


def test_dashboard_reads_a_bounded_number_of_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    for _ in range(7):
        _run(StateType.COMPLETED)
    monkeypatch.setattr(ui_routes, "DASHBOARD_MAX_RUNS", 5)
    monkeypatch.setattr(ui_routes, "DASHBOARD_PAGE", 2)
    data = ui_routes.dashboard(get_store(), hours=1, now=now())
    assert data["total"] == 5 and data["truncated"] is True


def test_timeline_is_compact_and_404s_for_an_unknown_run() -> None:
    from stratoflow import flow, task
    from stratoflow.exceptions import ObjectNotFound

    @task
    def one(x: int) -> int:
        return x

    @flow(name="agg-timeline")
    def parent() -> int:
        return sum(one.map([1, 2, 3]).result())

    parent()
    run = get_store().list_flow_runs(flow_name="agg-timeline")[0]
    data = ui_routes.timeline(get_store(), run.id)
    assert data["total"] == 3 and not data["truncated"]
    assert {t["state_type"] for t in data["task_runs"]} == {"COMPLETED"}
    assert set(data["task_runs"][0]) == {"id", "name", "task_key", "state_type", "state_name", "start_time",
                                         "end_time", "created", "run_count", "child_flow_run_id", "message"}
    with pytest.raises(ObjectNotFound):
        ui_routes.timeline(get_store(), "no-such-run")
