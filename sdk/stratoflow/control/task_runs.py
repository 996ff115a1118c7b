"""Task runs: reads and filters (the engine writes them through ``transitions``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stratoflow.control.flow_runs import read_flow_run
from stratoflow.models import TaskRun
from stratoflow.orchestration import RunKind
from stratoflow.schemas import TaskRunFilter

if TYPE_CHECKING:
    from stratoflow.storage.base import Store


def read_task_run(store: Store, task_run_id: str) -> TaskRun:
    run = store.read_run(RunKind.TASK, task_run_id)
    assert isinstance(run, TaskRun)
    return run


def read_task_runs(store: Store, flow_run_id: str) -> list[TaskRun]:
    read_flow_run(store, flow_run_id)  # 404 for an unknown flow run rather than an empty list
    return sorted(store.list_task_runs(flow_run_id), key=lambda r: (r.start_time or r.created, r.created))


def filter_task_runs(store: Store, request: TaskRunFilter) -> list[TaskRun]:
    runs = read_task_runs(store, request.flow_run_id)
    if request.state_types:
        wanted = set(request.state_types)
        runs = [r for r in runs if r.state_type in wanted]
    return runs[:request.limit]
