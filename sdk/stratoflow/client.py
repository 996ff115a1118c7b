"""``get_client()``: read back flows, runs, state history and logs (and set states).

One client class over two backends, chosen by the store ``get_store()`` returns:

* the store (embedded or AWS): the client reads DynamoDB directly and goes through
  ``stratoflow.control`` (the same service layer the API's routes call) for everything else;
* the API (``STRATOFLOW_API_URL``, an ``ApiStore``): every method is one of the API's routes.

Each public method checks and shapes its arguments once, then calls its backend. Both backends
answer with the same types and raise the same errors: ``ObjectNotFound`` for an unknown id,
``TransitionRefused`` when the rules refuse a cancel/retry, the ``stratoflow.exceptions.RequestRefused``
classes (``Conflict``, ``Unprocessable``, ...) for the rest. ``set_flow_run_state`` and
``set_task_run_state`` never raise for a refused transition: ABORT is an ``OrchestrationResult``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, cast

from stratoflow import _http, exceptions
from stratoflow._http import quote_segment
from stratoflow.control import concurrency_limits, deployments, flow_runs, task_runs, transitions, work_pools
from stratoflow.control.records import deployment_id
from stratoflow.exceptions import ObjectNotFound, TransitionRefused
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
from stratoflow.orchestration import OrchestrationResult, ResponseStatus, RunKind
from stratoflow.schemas import (
    ConcurrencyLimitCreate,
    DeploymentCreate,
    DeploymentFilter,
    DeploymentRunCreate,
    StateIn,
    TaskRunFilter,
    WorkPoolCreate,
    WorkQueueCreate,
)
from stratoflow.settings import get_settings
from stratoflow.states import State, StateDetails, StateType
from stratoflow.storage import get_store
from stratoflow.storage.api_store import ApiStore
from stratoflow.storage.base import LogPage, Store


class _StoreBackend:
    """The client's calls over the ``Store`` (DynamoDB + S3, embedded or AWS)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # flows
    def read_flow(self, name: str) -> Flow:
        return self.store.read_flow(name)

    def read_flows(self, limit: int) -> list[Flow]:

        return flow_runs.list_flows(self.store, limit)

    # flow runs
    def read_flow_run(self, flow_run_id: str) -> FlowRun:

        return flow_runs.read_flow_run(self.store, flow_run_id)

    def read_flow_runs(self, *, flow_name: str | None, deployment_id: str | None,
                       state_types: list[StateType] | None, scheduled_before: datetime | None,
                       limit: int) -> list[FlowRun]:
        return self.store.list_flow_runs(flow_name=flow_name, deployment_id=deployment_id, state_types=state_types,
                                         scheduled_before=scheduled_before, limit=limit)

    def read_flow_run_states(self, flow_run_id: str) -> list[State]:
        return self.read_flow_run(flow_run_id).state_history

    def set_state(self, kind: RunKind, run_id: str, state: State, force: bool) -> OrchestrationResult:

        result, _ = transitions.propose(self.store, kind, run_id, state, force=force)
        return result

    def cancel_flow_run(self, flow_run_id: str) -> FlowRun:

        return flow_runs.cancel_flow_run(self.store, flow_run_id)

    def resume_flow_run(self, flow_run_id: str, run_input: dict[str, Any] | None) -> FlowRun:

        return flow_runs.resume_flow_run(self.store, flow_run_id, run_input)

    def retry_flow_run(self, flow_run_id: str) -> FlowRun:

        return flow_runs.retry_flow_run(self.store, flow_run_id)

    def delete_flow_run(self, flow_run_id: str) -> None:

        flow_runs.delete_flow_run(self.store, flow_run_id)

    # task runs
    def read_task_run(self, task_run_id: str) -> TaskRun:

        return task_runs.read_task_run(self.store, task_run_id)

    def read_task_runs(self, flow_run_id: str) -> list[TaskRun]:
        return self.store.list_task_runs(flow_run_id)

    def filter_task_runs(self, request: TaskRunFilter) -> list[TaskRun]:

        return task_runs.filter_task_runs(self.store, request)

    # logs
    def read_logs(self, flow_run_id: str, *, task_run_id: str | None, min_level: int, cursor: str | None,
                  limit: int) -> LogPage:
        return self.store.read_logs(flow_run_id, cursor=cursor, limit=limit, task_run_id=task_run_id,
                                    min_level=min_level)

    # deployments
    def upsert_deployment(self, request: DeploymentCreate) -> Deployment:

        deployment, _ = deployments.upsert_deployment(self.store, request)
        return deployment

    def read_deployment(self, deployment_id: str) -> Deployment:

        return deployments.read_deployment(self.store, deployment_id)

    def filter_deployments(self, request: DeploymentFilter) -> list[Deployment]:

        return deployments.filter_deployments(self.store, request)

    def set_deployment_paused(self, deployment_id: str, paused: bool) -> Deployment:

        return deployments.set_deployment_paused(self.store, deployment_id, paused)

    def create_deployment_flow_run(self, deployment_id: str, request: DeploymentRunCreate) -> FlowRun:

        run, _ = flow_runs.create_deployment_flow_run(self.store, get_settings(), deployment_id, request)
        return run

    # work pools and queues
    def create_work_pool(self, request: WorkPoolCreate) -> WorkPool:

        return work_pools.create_work_pool(self.store, request)

    def read_work_pool(self, name: str) -> WorkPool:

        return work_pools.read_work_pool(self.store, name)

    def read_work_pools(self) -> list[WorkPool]:

        return work_pools.list_work_pools(self.store)

    def set_work_pool_paused(self, name: str, paused: bool) -> WorkPool:

        return work_pools.set_work_pool_paused(self.store, name, paused)

    def create_work_queue(self, work_pool_name: str, request: WorkQueueCreate) -> WorkQueue:

        return work_pools.create_work_queue(self.store, work_pool_name, request)

    def read_work_queues(self, work_pool_name: str) -> list[WorkQueue]:

        return work_pools.list_work_queues(self.store, work_pool_name)

    def set_work_queue_paused(self, work_pool_name: str, name: str, paused: bool) -> WorkQueue:

        return work_pools.set_work_queue_paused(self.store, work_pool_name, name, paused)

    def work_pool_status(self, name: str) -> dict[str, Any]:

        return work_pools.work_pool_status(self.store, name)

    # concurrency limits
    def upsert_concurrency_limit(self, request: ConcurrencyLimitCreate) -> ConcurrencyLimit:

        limit, _ = concurrency_limits.upsert_concurrency_limit(self.store, request)
        return limit

    def read_concurrency_limit(self, tag: str) -> ConcurrencyLimit:

        return concurrency_limits.read_concurrency_limit(self.store, tag)

    def read_concurrency_limits(self) -> list[ConcurrencyLimit]:

        return concurrency_limits.list_concurrency_limits(self.store)

    def delete_concurrency_limit(self, tag: str) -> None:

        concurrency_limits.delete_concurrency_limit(self.store, tag)


@contextlib.contextmanager
def _api_errors() -> Iterator[None]:
    """The transport's 4xx errors as the ``stratoflow.exceptions.RequestRefused`` class of their status, the
    errors the store backend raises (the API's routes raise them from the same operations).
    ``ObjectNotFound`` and ``TransitionRefused`` pass through: the transport raises those already."""

    try:
        yield
    except _http.ApiError as exc:
        classes: dict[int, type[exceptions.RequestRefused]] = {
            400: exceptions.BadRequest, 403: exceptions.Forbidden, 404: exceptions.NotFound,
            409: exceptions.Conflict, 413: exceptions.PayloadTooLarge, 415: exceptions.UnsupportedMediaType,
            422: exceptions.Unprocessable, 502: exceptions.UpstreamRefused}
        extra = {k: v for k, v in exc.body.items() if k != "error"} if isinstance(exc.body, dict) else {}
        raise classes.get(exc.status, exceptions.RequestRefused)(exc.message, status_code=exc.status, **extra) from exc


def _models(model: type[Any], data: Any) -> list[Any]:
    return [model.model_validate(x) for x in data]


class _HttpBackend:
    """The client's calls over the control-plane API: one route each."""

    def __init__(self, store: ApiStore) -> None:
        self.store = store

    def _request(self, method: str, path: str, *, json_body: Any = None,
                 query: dict[str, Any] | None = None) -> Any:
        with _api_errors():
            return self.store.http.request(method, path, json_body=json_body, query=query)

    @staticmethod
    def _q(value: str) -> str:

        return quote_segment(value)

    # flows
    def read_flow(self, name: str) -> Flow:
        return Flow.model_validate(self._request("GET", f"/flows/{self._q(name)}"))

    def read_flows(self, limit: int) -> list[Flow]:
        return _models(Flow, self._request("GET", "/flows", query={"limit": max(1, min(limit, 1000))}))

    # flow runs
    def read_flow_run(self, flow_run_id: str) -> FlowRun:
        return FlowRun.model_validate(self._request("GET", f"/flow_runs/{self._q(flow_run_id)}"))

    def read_flow_runs(self, *, flow_name: str | None, deployment_id: str | None,
                       state_types: list[StateType] | None, scheduled_before: datetime | None,
                       limit: int) -> list[FlowRun]:
        # POST /flow_runs/filter (the time bound, which the route lacks, is applied as the store does).
        with _api_errors():
            return self.store.list_flow_runs(flow_name=flow_name, deployment_id=deployment_id,
                                             state_types=state_types, scheduled_before=scheduled_before,
                                             limit=limit)

    def read_flow_run_states(self, flow_run_id: str) -> list[State]:
        return _models(State, self._request("GET", f"/flow_runs/{self._q(flow_run_id)}/states"))

    def set_state(self, kind: RunKind, run_id: str, state: State, force: bool) -> OrchestrationResult:
        """``POST /<kind>_runs/<id>/set_state``: the server's rules decide. A 409 ABORT comes back
        as the result (with the rule and its reason), as the store backend returns it. ``force``
        uses ``.../set_state/force``, which the caller's IAM policy must allow on its own."""

        try:
            with _api_errors():
                data = self.store.set_state(kind, run_id, state, force=force)
        except TransitionRefused as exc:
            return exc.result
        return OrchestrationResult(ResponseStatus(data["status"]),
                                   State.model_validate(data["state"]) if data.get("state") else None,
                                   reason=data.get("reason"), rule=data.get("rule"),
                                   delay_seconds=data.get("delay_seconds"))

    def cancel_flow_run(self, flow_run_id: str) -> FlowRun:
        return FlowRun.model_validate(self._request("POST", f"/flow_runs/{self._q(flow_run_id)}/cancel"))

    def resume_flow_run(self, flow_run_id: str, run_input: dict[str, Any] | None) -> FlowRun:
        return FlowRun.model_validate(self._request("POST", f"/flow_runs/{self._q(flow_run_id)}/resume",
                                                    json_body={"run_input": run_input}))

    def retry_flow_run(self, flow_run_id: str) -> FlowRun:
        return FlowRun.model_validate(self._request("POST", f"/flow_runs/{self._q(flow_run_id)}/retry"))

    def delete_flow_run(self, flow_run_id: str) -> None:
        self._request("DELETE", f"/flow_runs/{self._q(flow_run_id)}")

    # task runs
    def read_task_run(self, task_run_id: str) -> TaskRun:
        return TaskRun.model_validate(self._request("GET", f"/task_runs/{self._q(task_run_id)}"))

    def read_task_runs(self, flow_run_id: str) -> list[TaskRun]:
        try:
            data = self._request("GET", f"/flow_runs/{self._q(flow_run_id)}/task_runs")
        except ObjectNotFound:
            return []  # as the store answers for a flow run it does not have
        return _models(TaskRun, data)

    def filter_task_runs(self, request: TaskRunFilter) -> list[TaskRun]:
        return _models(TaskRun, self._request("POST", "/task_runs/filter",
                                              json_body=request.model_dump(mode="json", exclude_unset=True)))

    # logs
    def read_logs(self, flow_run_id: str, *, task_run_id: str | None, min_level: int, cursor: str | None,
                  limit: int) -> LogPage:
        query = {"cursor": cursor, "limit": max(1, min(limit, 1000)), "task_run_id": task_run_id,
                 "min_level": min_level or None}
        try:
            data = self._request("GET", f"/flow_runs/{self._q(flow_run_id)}/logs", query=query)
        except ObjectNotFound:
            return LogPage([], None)  # as the store answers for a flow run it does not have
        return LogPage(_models(Log, data["logs"]), data.get("next_cursor"))

    # deployments
    def upsert_deployment(self, request: DeploymentCreate) -> Deployment:
        # Only the fields the caller gave: an update keeps the others.
        return Deployment.model_validate(self._request(
            "POST", "/deployments", json_body=request.model_dump(mode="json", exclude_unset=True)))

    def read_deployment(self, deployment_id: str) -> Deployment:
        return Deployment.model_validate(self._request("GET", f"/deployments/{self._q(deployment_id)}"))

    def filter_deployments(self, request: DeploymentFilter) -> list[Deployment]:
        return _models(Deployment, self._request(
            "POST", "/deployments/filter", json_body=request.model_dump(mode="json", exclude_unset=True)))

    def set_deployment_paused(self, deployment_id: str, paused: bool) -> Deployment:
        action = "pause" if paused else "resume"
        return Deployment.model_validate(self._request("POST", f"/deployments/{self._q(deployment_id)}/{action}"))

    def create_deployment_flow_run(self, deployment_id: str, request: DeploymentRunCreate) -> FlowRun:
        return FlowRun.model_validate(self._request(
            "POST", f"/deployments/{self._q(deployment_id)}/create_flow_run",
            json_body=request.model_dump(mode="json", exclude_unset=True)))

    # work pools and queues
    def create_work_pool(self, request: WorkPoolCreate) -> WorkPool:
        return WorkPool.model_validate(self._request("POST", "/work_pools", json_body=request.model_dump(mode="json")))

    def read_work_pool(self, name: str) -> WorkPool:
        return WorkPool.model_validate(self._request("GET", f"/work_pools/{self._q(name)}"))

    def read_work_pools(self) -> list[WorkPool]:
        return _models(WorkPool, self._request("GET", "/work_pools"))

    def set_work_pool_paused(self, name: str, paused: bool) -> WorkPool:
        action = "pause" if paused else "resume"
        return WorkPool.model_validate(self._request("POST", f"/work_pools/{self._q(name)}/{action}"))

    def create_work_queue(self, work_pool_name: str, request: WorkQueueCreate) -> WorkQueue:
        return WorkQueue.model_validate(self._request(
            "POST", f"/work_pools/{self._q(work_pool_name)}/queues", json_body=request.model_dump(mode="json")))

    def read_work_queues(self, work_pool_name: str) -> list[WorkQueue]:
        return _models(WorkQueue, self._request("GET", f"/work_pools/{self._q(work_pool_name)}/queues"))

    def set_work_queue_paused(self, work_pool_name: str, name: str, paused: bool) -> WorkQueue:
        action = "pause" if paused else "resume"
        return WorkQueue.model_validate(self._request(
            "POST", f"/work_pools/{self._q(work_pool_name)}/queues/{self._q(name)}/{action}"))

    def work_pool_status(self, name: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._request("GET", f"/work_pools/{self._q(name)}/status"))

    # concurrency limits
    def upsert_concurrency_limit(self, request: ConcurrencyLimitCreate) -> ConcurrencyLimit:
        return ConcurrencyLimit.model_validate(self._request(
            "POST", "/concurrency_limits", json_body=request.model_dump(mode="json")))

    def read_concurrency_limit(self, tag: str) -> ConcurrencyLimit:
        return ConcurrencyLimit.model_validate(self._request("GET", f"/concurrency_limits/{self._q(tag)}"))

    def read_concurrency_limits(self) -> list[ConcurrencyLimit]:
        return _models(ConcurrencyLimit, self._request("GET", "/concurrency_limits"))

    def delete_concurrency_limit(self, tag: str) -> None:
        self._request("DELETE", f"/concurrency_limits/{self._q(tag)}")


def _backend_for(store: Store) -> _StoreBackend | _HttpBackend:

    return _HttpBackend(store) if isinstance(store, ApiStore) else _StoreBackend(store)


def _state_types(state_types: Sequence[StateType | str] | None) -> list[StateType] | None:
    return [StateType(t) for t in state_types] if state_types else None


class StratoflowClient:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._backend = _backend_for(store)

    @property
    def over_api(self) -> bool:
        """True when this client goes through the API (``STRATOFLOW_API_URL``)."""
        return isinstance(self._backend, _HttpBackend)

    # flows
    def read_flow(self, name: str) -> Flow:
        return self._backend.read_flow(name)

    def read_flows(self, limit: int = 200) -> list[Flow]:
        return self._backend.read_flows(limit)

    # flow runs
    def read_flow_run(self, flow_run_id: str) -> FlowRun:
        return self._backend.read_flow_run(flow_run_id)

    def read_flow_runs(
        self,
        *,
        flow_name: str | None = None,
        deployment_id: str | None = None,
        state_types: Sequence[StateType | str] | None = None,
        scheduled_before: datetime | None = None,
        limit: int = 200,
    ) -> list[FlowRun]:
        return self._backend.read_flow_runs(flow_name=flow_name, deployment_id=deployment_id,
                                            state_types=_state_types(state_types),
                                            scheduled_before=scheduled_before, limit=limit)

    def read_flow_run_parameters(self, flow_run_id: str) -> dict[str, object]:
        """The run's parameters, loaded from S3 when they were too large for the run item."""

        run = self.read_flow_run(flow_run_id)
        if run.parameters_ref:
            return dict(json.loads(self.store.get_blob(run.parameters_ref)))
        return run.parameters

    def read_flow_run_states(self, flow_run_id: str) -> list[State]:
        return self._backend.read_flow_run_states(flow_run_id)

    def set_flow_run_state(self, flow_run_id: str, state: State, force: bool = False) -> OrchestrationResult:
        """Propose ``state``; the orchestration rules decide (ABORT is returned, not raised)."""
        return self._backend.set_state(RunKind.FLOW, flow_run_id, state, force)

    def cancel_flow_run(self, flow_run_id: str) -> FlowRun:
        return self._backend.cancel_flow_run(flow_run_id)

    def resume_flow_run(self, flow_run_id: str, run_input: dict[str, Any] | None = None) -> FlowRun:
        """Paused -> Running, Suspended -> Scheduled (runs again); ``run_input`` for a pause
        that waits for input (checked against its schema)."""
        return self._backend.resume_flow_run(flow_run_id, run_input)

    def retry_flow_run(self, flow_run_id: str) -> FlowRun:
        return self._backend.retry_flow_run(flow_run_id)

    def delete_flow_run(self, flow_run_id: str) -> None:
        self._backend.delete_flow_run(flow_run_id)

    # task runs
    def read_task_run(self, task_run_id: str) -> TaskRun:
        return self._backend.read_task_run(task_run_id)

    def read_task_runs(self, flow_run_id: str) -> list[TaskRun]:
        """The flow run's task runs in start order (none for an unknown flow run)."""
        return sorted(self._backend.read_task_runs(flow_run_id), key=lambda r: (r.start_time or r.created, r.created))

    def read_task_run_states(self, task_run_id: str) -> list[State]:
        return self.read_task_run(task_run_id).state_history

    def set_task_run_state(self, task_run_id: str, state: State, force: bool = False) -> OrchestrationResult:
        """Propose ``state``; the orchestration rules decide (ABORT is returned, not raised)."""
        return self._backend.set_state(RunKind.TASK, task_run_id, state, force)

    def filter_task_runs(self, flow_run_id: str, state_types: Sequence[StateType | str] | None = None,
                         limit: int = 1000) -> list[TaskRun]:

        return self._backend.filter_task_runs(TaskRunFilter(flow_run_id=flow_run_id,
                                                            state_types=_state_types(state_types), limit=limit))

    # logs
    def read_logs(self, flow_run_id: str, *, task_run_id: str | None = None, min_level: int = 0,
                  cursor: str | None = None, limit: int = 1000) -> LogPage:
        """A page of the run's logs, oldest first; pass ``next_cursor`` back for the next one.
        Cursors are opaque and belong to the backend that returned them."""
        return self._backend.read_logs(flow_run_id, task_run_id=task_run_id, min_level=min_level, cursor=cursor,
                                       limit=limit)

    def iter_logs(self, flow_run_id: str, **kwargs: object) -> Iterator[Log]:
        """Every stored log line of the run, oldest first, across pages."""
        cursor: str | None = None
        while True:
            page = self.read_logs(flow_run_id, cursor=cursor, **kwargs)  # type: ignore[arg-type]
            yield from page.logs
            if not page.logs or page.next_cursor is None:
                return
            cursor = page.next_cursor

    # deployments
    def create_deployment(self, flow_name: str, name: str, **fields: Any) -> Deployment:
        """Create the deployment, or update the one with this (flow_name, name) (its version goes up)."""

        return self._backend.upsert_deployment(DeploymentCreate(flow_name=flow_name, name=name, **fields))

    @staticmethod
    def _deployment_id(name_or_id: str) -> str:
        if "/" in name_or_id:

            flow_name, _, name = name_or_id.partition("/")
            return deployment_id(flow_name, name)
        return name_or_id

    @contextlib.contextmanager
    def _naming_deployment(self, name_or_id: str) -> Iterator[None]:
        """An unknown deployment is reported by the name or id the caller gave."""
        try:
            yield
        except ObjectNotFound as exc:
            if exc.kind != "deployment":
                raise
            raise ObjectNotFound("deployment", name_or_id) from None

    def read_deployment(self, name_or_id: str) -> Deployment:
        """By id, or by ``flow-name/deployment-name``."""
        with self._naming_deployment(name_or_id):
            return self._backend.read_deployment(self._deployment_id(name_or_id))

    def read_deployments(self, *, flow_name: str | None = None, work_pool_name: str | None = None,
                         paused: bool | None = None, tags: Sequence[str] | None = None,
                         limit: int = 200) -> list[Deployment]:

        return self._backend.filter_deployments(DeploymentFilter(
            flow_name=flow_name, work_pool_name=work_pool_name, paused=paused,
            tags=list(tags) if tags is not None else None, limit=limit))

    def pause_deployment(self, name_or_id: str) -> Deployment:
        with self._naming_deployment(name_or_id):
            return self._backend.set_deployment_paused(self._deployment_id(name_or_id), True)

    def resume_deployment(self, name_or_id: str) -> Deployment:
        with self._naming_deployment(name_or_id):
            return self._backend.set_deployment_paused(self._deployment_id(name_or_id), False)

    def create_flow_run_from_deployment(self, name_or_id: str, *, parameters: dict[str, Any] | None = None,
                                        tags: Sequence[str] = (), name: str | None = None,
                                        idempotency_key: str | None = None,
                                        scheduled_time: datetime | None = None) -> FlowRun:
        """A run of the deployment, Scheduled for ``scheduled_time`` (default now) and sent to its
        work pool when due."""

        state = None
        if scheduled_time is not None:
            if scheduled_time.tzinfo is None:
                raise ValueError("scheduled_time must be timezone-aware (e.g. datetime.now(UTC))")
            state = StateIn(type=StateType.SCHEDULED, state_details=StateDetails(scheduled_time=scheduled_time))
        request = DeploymentRunCreate(parameters=parameters or {}, tags=list(tags), name=name,
                                      idempotency_key=idempotency_key, state=state)
        with self._naming_deployment(name_or_id):
            return self._backend.create_deployment_flow_run(self._deployment_id(name_or_id), request)

    # work pools and queues
    def create_work_pool(self, name: str, type: str = "lambda", concurrency_limit: int | None = None,
                         description: str | None = None) -> WorkPool:

        return self._backend.create_work_pool(WorkPoolCreate(
            name=name, type=WorkPoolType(type), concurrency_limit=concurrency_limit, description=description))

    def read_work_pool(self, name: str) -> WorkPool:
        return self._backend.read_work_pool(name)

    def read_work_pools(self) -> list[WorkPool]:
        return self._backend.read_work_pools()

    def pause_work_pool(self, name: str) -> WorkPool:
        return self._backend.set_work_pool_paused(name, True)

    def resume_work_pool(self, name: str) -> WorkPool:
        return self._backend.set_work_pool_paused(name, False)

    def create_work_queue(self, work_pool_name: str, name: str, priority: int = 1,
                          concurrency_limit: int | None = None) -> WorkQueue:

        return self._backend.create_work_queue(work_pool_name, WorkQueueCreate(
            name=name, priority=priority, concurrency_limit=concurrency_limit))

    def read_work_queues(self, work_pool_name: str) -> list[WorkQueue]:
        return self._backend.read_work_queues(work_pool_name)

    def pause_work_queue(self, work_pool_name: str, name: str) -> WorkQueue:
        """Its messages wait in SQS; nothing is lost."""
        return self._backend.set_work_queue_paused(work_pool_name, name, True)

    def resume_work_queue(self, work_pool_name: str, name: str) -> WorkQueue:
        return self._backend.set_work_queue_paused(work_pool_name, name, False)

    def read_work_pool_status(self, name: str) -> dict[str, Any]:
        """The pool, each queue with its depth (visible, in flight, delayed) and dead letters."""
        return self._backend.work_pool_status(name)

    # concurrency limits
    def create_concurrency_limit(self, tag: str, limit: int) -> ConcurrencyLimit:
        """Create the limit of ``tag`` or change it."""

        return self._backend.upsert_concurrency_limit(ConcurrencyLimitCreate(tag=tag, limit=limit))

    def read_concurrency_limit(self, tag: str) -> ConcurrencyLimit:
        return self._backend.read_concurrency_limit(tag)

    def read_concurrency_limits(self) -> list[ConcurrencyLimit]:
        return self._backend.read_concurrency_limits()

    def delete_concurrency_limit(self, tag: str) -> None:
        self._backend.delete_concurrency_limit(tag)

    def __enter__(self) -> StratoflowClient:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def get_client() -> StratoflowClient:
    """A client for the configured backend. Usable as a context manager, like Prefect's."""

    return StratoflowClient(get_store())
