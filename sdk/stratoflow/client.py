"""``get_client()``: read back flows, runs, state history and logs (and set states).

With the store backend (embedded or AWS) the client reads DynamoDB directly; an HTTP client for
``STRATOFLOW_API_URL`` implements the same methods (see the API issue).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from stratoflow.models import (
    ConcurrencyLimit,
    Deployment,
    Flow,
    FlowRun,
    Log,
    TaskRun,
    WorkPool,
    WorkPoolType,
    WorkQueue,
)
from stratoflow.orchestration import OrchestrationResult, RunKind
from stratoflow.services import set_run_state
from stratoflow.states import State, StateType
from stratoflow.storage.base import LogPage, Store


class StratoflowClient:
    def __init__(self, store: Store) -> None:
        self.store = store

    # flows
    def read_flow(self, name: str) -> Flow:
        return self.store.read_flow(name)

    # flow runs
    def read_flow_run(self, flow_run_id: str) -> FlowRun:
        run = self.store.read_run(RunKind.FLOW, flow_run_id)
        assert isinstance(run, FlowRun)
        return run

    def read_flow_runs(
        self,
        *,
        flow_name: str | None = None,
        deployment_id: str | None = None,
        state_types: Sequence[StateType | str] | None = None,
        scheduled_before: datetime | None = None,
        limit: int = 200,
    ) -> list[FlowRun]:
        types = [StateType(t) for t in state_types] if state_types else None
        return self.store.list_flow_runs(flow_name=flow_name, deployment_id=deployment_id, state_types=types,
                                         scheduled_before=scheduled_before, limit=limit)

    def read_flow_run_parameters(self, flow_run_id: str) -> dict[str, object]:
        """The run's parameters, loaded from S3 when they were too large for the run item."""
        import json

        run = self.read_flow_run(flow_run_id)
        if run.parameters_ref:
            return dict(json.loads(self.store.get_blob(run.parameters_ref)))
        return run.parameters

    def read_flow_run_states(self, flow_run_id: str) -> list[State]:
        return self.read_flow_run(flow_run_id).state_history

    def set_flow_run_state(self, flow_run_id: str, state: State, force: bool = False) -> OrchestrationResult:
        result, _ = set_run_state(self.store, RunKind.FLOW, flow_run_id, state, force=force)
        return result

    # task runs
    def read_task_run(self, task_run_id: str) -> TaskRun:
        run = self.store.read_run(RunKind.TASK, task_run_id)
        assert isinstance(run, TaskRun)
        return run

    def read_task_runs(self, flow_run_id: str) -> list[TaskRun]:
        return sorted(self.store.list_task_runs(flow_run_id), key=lambda r: (r.start_time or r.created, r.created))

    def read_task_run_states(self, task_run_id: str) -> list[State]:
        return self.read_task_run(task_run_id).state_history

    def set_task_run_state(self, task_run_id: str, state: State, force: bool = False) -> OrchestrationResult:
        result, _ = set_run_state(self.store, RunKind.TASK, task_run_id, state, force=force)
        return result

    # logs
    def read_logs(self, flow_run_id: str, *, task_run_id: str | None = None, min_level: int = 0,
                  cursor: str | None = None, limit: int = 1000) -> LogPage:
        return self.store.read_logs(flow_run_id, cursor=cursor, limit=limit, task_run_id=task_run_id,
                                    min_level=min_level)

    def iter_logs(self, flow_run_id: str, **kwargs: object) -> Iterator[Log]:
        """Every stored log line of the run, oldest first, across pages."""
        cursor: str | None = None
        while True:
            page = self.read_logs(flow_run_id, cursor=cursor, **kwargs)  # type: ignore[arg-type]
            yield from page.logs
            if not page.logs or page.next_cursor is None:
                return
            cursor = page.next_cursor

    # -- flows, deployments, work pools, concurrency limits; run cancel/retry/delete ----------
    # These go through stratoflow.api.operations, the same code the API's routes call, so the
    # client refuses exactly what the API refuses (errors are StratoflowError subclasses).
    def read_flows(self, limit: int = 200) -> list[Flow]:
        from stratoflow.api import operations as ops

        return ops.list_flows(self.store, limit)

    def cancel_flow_run(self, flow_run_id: str) -> FlowRun:
        from stratoflow.api import operations as ops

        return ops.cancel_flow_run(self.store, flow_run_id)

    def retry_flow_run(self, flow_run_id: str) -> FlowRun:
        from stratoflow.api import operations as ops

        return ops.retry_flow_run(self.store, flow_run_id)

    def delete_flow_run(self, flow_run_id: str) -> None:
        from stratoflow.api import operations as ops

        ops.delete_flow_run(self.store, flow_run_id)

    def filter_task_runs(self, flow_run_id: str, state_types: Sequence[StateType | str] | None = None,
                         limit: int = 1000) -> list[TaskRun]:
        from stratoflow.api import operations as ops
        from stratoflow.api.schemas import TaskRunFilter

        types = [StateType(t) for t in state_types] if state_types else None
        return ops.filter_task_runs(self.store, TaskRunFilter(flow_run_id=flow_run_id, state_types=types,
                                                              limit=limit))

    def create_deployment(self, flow_name: str, name: str, **fields: Any) -> Deployment:
        """Create the deployment, or update the one with this (flow_name, name) (its version goes up)."""
        from stratoflow.api import operations as ops
        from stratoflow.api.schemas import DeploymentCreate

        deployment, _ = ops.upsert_deployment(self.store, DeploymentCreate(flow_name=flow_name, name=name, **fields))
        return deployment

    def read_deployment(self, name_or_id: str) -> Deployment:
        """By id, or by ``flow-name/deployment-name``."""
        from stratoflow.api import operations as ops

        return ops.find_deployment(self.store, name_or_id)

    def read_deployments(self, *, flow_name: str | None = None, work_pool_name: str | None = None,
                         paused: bool | None = None, tags: Sequence[str] | None = None,
                         limit: int = 200) -> list[Deployment]:
        from stratoflow.api import operations as ops
        from stratoflow.api.schemas import DeploymentFilter

        return ops.filter_deployments(self.store, DeploymentFilter(
            flow_name=flow_name, work_pool_name=work_pool_name, paused=paused,
            tags=list(tags) if tags is not None else None, limit=limit))

    def pause_deployment(self, name_or_id: str) -> Deployment:
        from stratoflow.api import operations as ops

        return ops.set_deployment_paused(self.store, self.read_deployment(name_or_id).id, True)

    def resume_deployment(self, name_or_id: str) -> Deployment:
        from stratoflow.api import operations as ops

        return ops.set_deployment_paused(self.store, self.read_deployment(name_or_id).id, False)

    def create_flow_run_from_deployment(self, name_or_id: str, *, parameters: dict[str, Any] | None = None,
                                        tags: Sequence[str] = (), name: str | None = None,
                                        idempotency_key: str | None = None) -> FlowRun:
        from stratoflow.api import operations as ops
        from stratoflow.api.schemas import DeploymentRunCreate
        from stratoflow.settings import get_settings

        deployment = self.read_deployment(name_or_id)
        run, _ = ops.create_deployment_flow_run(self.store, get_settings(), deployment.id, DeploymentRunCreate(
            parameters=parameters or {}, tags=list(tags), name=name, idempotency_key=idempotency_key))
        return run

    def create_work_pool(self, name: str, type: str = "lambda", concurrency_limit: int | None = None,
                         description: str | None = None) -> WorkPool:
        from stratoflow.api import operations as ops
        from stratoflow.api.schemas import WorkPoolCreate

        return ops.create_work_pool(self.store, WorkPoolCreate(
            name=name, type=WorkPoolType(type), concurrency_limit=concurrency_limit, description=description))

    def read_work_pool(self, name: str) -> WorkPool:
        from stratoflow.api import operations as ops

        return ops.read_work_pool(self.store, name)

    def read_work_pools(self) -> list[WorkPool]:
        from stratoflow.api import operations as ops

        return ops.list_work_pools(self.store)

    def pause_work_pool(self, name: str) -> WorkPool:
        from stratoflow.api import operations as ops

        return ops.set_work_pool_paused(self.store, name, True)

    def resume_work_pool(self, name: str) -> WorkPool:
        from stratoflow.api import operations as ops

        return ops.set_work_pool_paused(self.store, name, False)

    def create_work_queue(self, work_pool_name: str, name: str, priority: int = 1,
                          concurrency_limit: int | None = None) -> WorkQueue:
        from stratoflow.api import operations as ops
        from stratoflow.api.schemas import WorkQueueCreate

        return ops.create_work_queue(self.store, work_pool_name, WorkQueueCreate(
            name=name, priority=priority, concurrency_limit=concurrency_limit))

    def read_work_queues(self, work_pool_name: str) -> list[WorkQueue]:
        from stratoflow.api import operations as ops

        return ops.list_work_queues(self.store, work_pool_name)

    def create_concurrency_limit(self, tag: str, limit: int) -> ConcurrencyLimit:
        """Create the limit of ``tag`` or change it."""
        from stratoflow.api import operations as ops
        from stratoflow.api.schemas import ConcurrencyLimitCreate

        created, _ = ops.upsert_concurrency_limit(self.store, ConcurrencyLimitCreate(tag=tag, limit=limit))
        return created

    def read_concurrency_limit(self, tag: str) -> ConcurrencyLimit:
        from stratoflow.api import operations as ops

        return ops.read_concurrency_limit(self.store, tag)

    def read_concurrency_limits(self) -> list[ConcurrencyLimit]:
        from stratoflow.api import operations as ops

        return ops.list_concurrency_limits(self.store)

    def delete_concurrency_limit(self, tag: str) -> None:
        from stratoflow.api import operations as ops

        ops.delete_concurrency_limit(self.store, tag)

    def __enter__(self) -> StratoflowClient:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def get_client() -> StratoflowClient:
    """A client for the configured backend. Usable as a context manager, like Prefect's."""
    from stratoflow.storage import get_store

    return StratoflowClient(get_store())
