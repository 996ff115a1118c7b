"""What the API routes do, over the ``Store``: no HTTP here, so the routes stay parse-call-return.

Every operation validates all of its input before its first write, so a refused request leaves
nothing behind.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from stratoflow.api.errors import ApiError, Conflict, NotFound, Unprocessable
from stratoflow.api.schemas import (
    ConcurrencyLimitCreate,
    DeploymentCreate,
    DeploymentFilter,
    DeploymentRunCreate,
    FlowRunCreate,
    LogIn,
    SetStateIn,
    StateIn,
    TaskRunFilter,
    WorkPoolCreate,
    WorkQueueCreate,
)
from stratoflow.exceptions import ObjectAlreadyExists, ObjectNotFound, TransitionRefused
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
    new_id,
)
from stratoflow.orchestration import (
    FLOW_POLICY,
    OrchestrationContext,
    OrchestrationResult,
    ResponseStatus,
    RunKind,
    apply_transition,
    orchestrate,
)
from stratoflow.services import set_run_state
from stratoflow.states import AwaitingRetry, Cancelled, Cancelling, Scheduled, State, StateType, now
from stratoflow.storage.base import ObjectVersionConflict, StoredObject
from stratoflow.workpools.dispatch import dispatch_run

if TYPE_CHECKING:
    from stratoflow.settings import Settings
    from stratoflow.storage.base import Store
    from stratoflow.workpools.sqs import SqsQueues

# A Lambda response may be 6 MB; log pages are cut to stay well below it.
MAX_LOG_PAGE_BYTES = 4 * 1024 * 1024

def _run_name() -> str:
    from stratoflow.names import generate_run_name

    return generate_run_name()


# -- runs ---------------------------------------------------------------------------------------
def read_flow_run(store: Store, flow_run_id: str) -> FlowRun:
    run = store.read_run(RunKind.FLOW, flow_run_id)
    assert isinstance(run, FlowRun)
    return run


def read_task_run(store: Store, task_run_id: str) -> TaskRun:
    run = store.read_run(RunKind.TASK, task_run_id)
    assert isinstance(run, TaskRun)
    return run


def read_task_runs(store: Store, flow_run_id: str) -> list[TaskRun]:
    read_flow_run(store, flow_run_id)  # 404 for an unknown flow run rather than an empty list
    return sorted(store.list_task_runs(flow_run_id), key=lambda r: (r.start_time or r.created, r.created))


def set_state(store: Store, kind: RunKind, run_id: str, request: SetStateIn, *,
              force: bool = False) -> OrchestrationResult:
    """Propose the state; ACCEPT/REJECT/WAIT are answers, ABORT raises ``TransitionRefused``.

    ``force`` (skip the rules) comes from the route, ``.../set_state/force``, never from the body:
    IAM grants routes, so only a caller allowed that route can force. ``force: true`` in the body
    of the plain route is refused (403) rather than ignored, naming the route to use."""
    if request.force and not force:
        route = f"/{kind.value}_runs/{run_id}/set_state/force"
        raise ApiError(f"body.force: forcing a state skips the orchestration rules and has its own route, "
                       f"POST /{kind.value}_runs/<id>/set_state/force, which IAM grants separately; this "
                       "route only proposes", status_code=403, force_route=route)
    if force and "force" in request.model_fields_set and not request.force:
        raise Unprocessable("body.force: false contradicts the force route; omit it or use .../set_state")
    proposed = request.state.to_state()
    parent_state: State | None = None
    run: FlowRun | TaskRun = store.read_run(kind, run_id)
    if isinstance(run, TaskRun) and run.flow_run_id:
        try:
            parent_state = store.read_run(RunKind.FLOW, run.flow_run_id).state
        except ObjectNotFound:
            parent_state = None
    result, _ = set_run_state(store, kind, run, proposed, force=force, parent_flow_run_state=parent_state)
    if result.status == ResponseStatus.ABORT:
        raise TransitionRefused(result)
    return result


def create_flow_run(store: Store, settings: Settings, request: FlowRunCreate) -> tuple[FlowRun, bool]:
    """Create a flow run; returns ``(run, created)``. ``created`` is False when an earlier create
    with the same flow name and idempotency key made the run (nothing is written then)."""
    return _create_flow_run(store, settings, flow_name=request.flow_name, name=request.name,
                            parameters=request.parameters, tags=request.tags, state=request.state,
                            idempotency_key=request.idempotency_key)


def _create_flow_run(store: Store, settings: Settings, *, flow_name: str, name: str | None,
                     parameters: dict[str, Any], tags: Sequence[str], state: StateIn | None,
                     idempotency_key: str | None, deployment: Deployment | None = None) -> tuple[FlowRun, bool]:
    # 1. Everything that can refuse the request, before any write.
    proposed = state.to_state() if state is not None else Scheduled()
    run = FlowRun(id=new_id(), name=name or _run_name(), flow_name=flow_name,
                  parameters=parameters, tags=sorted(set(tags)), idempotency_key=idempotency_key)
    if deployment is not None:
        run.deployment_id = deployment.id
        run.work_pool_name = deployment.work_pool_name
        run.work_queue_name = deployment.work_queue_name
    decision = orchestrate(OrchestrationContext(kind=RunKind.FLOW, run=run, proposed_state=proposed), FLOW_POLICY)
    if decision.status != ResponseStatus.ACCEPT or decision.state is None:
        raise TransitionRefused(decision)
    run = apply_transition(run, decision.state)
    encoded = json.dumps(parameters, separators=(",", ":")).encode()

    if idempotency_key is not None:
        existing = _earlier_run(store, flow_name, idempotency_key)
        if existing is not None:
            return existing, False

    # 2. Writes: the flow record (once per flow), large parameters, then the run (with its
    # idempotency marker in the same transaction).
    # A deployment knows its flow's record (older deployment records may not).
    run.flow_id = (deployment.flow_id if deployment is not None and deployment.flow_id
                   else store.ensure_flow(Flow(name=flow_name)).id)
    if len(encoded) > settings.parameters_inline_max_bytes:
        run.parameters = {}
        run.parameters_ref = store.put_blob(f"parameters/{run.id}.json", encoded)
    if idempotency_key is not None:
        return store.create_flow_run_idempotent(run, idempotency_key)
    created = store.create_run(RunKind.FLOW, run)
    assert isinstance(created, FlowRun)
    return created, True


def _earlier_run(store: Store, flow_name: str, key: str) -> FlowRun | None:
    reader = getattr(store, "read_idempotent_run", None)
    return reader(flow_name, key) if reader is not None else None


def delete_flow_run(store: Store, flow_run_id: str) -> None:
    """Remove the run, its task runs and its idempotency marker; ``ObjectNotFound`` if unknown."""
    store.delete_flow_run(flow_run_id)


def cancel_flow_run(store: Store, flow_run_id: str) -> FlowRun:
    """Running/Pending -> Cancelling (the executor finishes it), Scheduled/Paused -> Cancelled.
    A run already Cancelling is returned as it is; a finished run is refused (409, the rule's reason)."""
    run = read_flow_run(store, flow_run_id)
    if run.state_type == StateType.CANCELLING:
        return run
    proposed = Cancelling() if run.state_type in (StateType.RUNNING, StateType.PENDING) else Cancelled()
    proposed.message = "cancelled through the API"
    result, moved = set_run_state(store, RunKind.FLOW, run, proposed)
    if result.status == ResponseStatus.ABORT:
        raise TransitionRefused(result)
    if result.status != ResponseStatus.ACCEPT:
        raise Conflict(f"{result.rule}: {result.reason}", status=result.status.value, rule=result.rule,
                       reason=result.reason)
    assert isinstance(moved, FlowRun)
    return moved


def retry_flow_run(store: Store, flow_run_id: str, settings: Settings | None = None) -> FlowRun:
    """A finished run goes back to Scheduled (AwaitingRetry) for now, through the policy; a run of
    a work pool is sent to its queue again."""
    run = read_flow_run(store, flow_run_id)
    if run.state is None or not run.state.is_final():
        raise Conflict(f"only a finished flow run can be retried; it is {run.state!r}",
                       state=run.state.model_dump(mode="json") if run.state else None)
    result, moved = set_run_state(store, RunKind.FLOW, run,
                                  AwaitingRetry(message="retried through the API"))
    if result.status == ResponseStatus.ABORT:
        raise TransitionRefused(result)
    if result.status != ResponseStatus.ACCEPT:
        raise Conflict(f"{result.rule}: {result.reason}", status=result.status.value, rule=result.rule,
                       reason=result.reason)
    assert isinstance(moved, FlowRun)
    dispatch_run(store, _settings(settings), moved)
    return moved


def resume_flow_run(store: Store, flow_run_id: str, run_input: dict[str, Any] | None,
                    settings: Settings | None = None) -> FlowRun:
    """Paused -> Running (the waiting body goes on); Suspended -> Scheduled and sent to its work
    queue (the flow runs again and its suspend call returns the input). ``run_input`` is checked
    against the schema the pause declared (422 naming the field) before anything is written."""
    import json as _json

    from stratoflow.pause import RUN_INPUT, check_run_input, input_key

    run = read_flow_run(store, flow_run_id)
    if run.state is None or run.state.type != StateType.PAUSED:
        raise Conflict(f"only a paused flow run can be resumed; it is {run.state!r}",
                       state=run.state.model_dump(mode="json") if run.state else None)
    details = run.state.state_details
    try:
        check_run_input((details.run_input_keyset or {}).get("schema"), run_input or {})
    except ValueError as exc:
        raise Unprocessable(str(exc)) from None
    key = details.pause_key or "pause-1"
    if run_input is not None:
        store.put_object(RUN_INPUT, input_key(run.id, key), {"input": run_input, "at": now().isoformat()})
    if details.pause_reschedule:
        proposed: State = Scheduled(name="Resuming", message="resumed; it runs again from the start")
        if run_input is not None:
            # Also on the state: a flow reading its input over the API (a sandboxed run) finds it there.
            proposed.state_details.run_input_keyset = {"input": _json.dumps(run_input), "key": key}
    else:
        from stratoflow.states import Running

        proposed = Running(message="resumed")
        if run_input is not None:
            proposed.state_details.run_input_keyset = {"input": _json.dumps(run_input)}
    result, moved = set_run_state(store, RunKind.FLOW, run, proposed)
    if result.status == ResponseStatus.ABORT:
        raise TransitionRefused(result)
    assert isinstance(moved, FlowRun)
    if moved.state is not None and moved.state.type == StateType.FAILED:
        raise Conflict(f"{result.rule}: {result.reason}", status=result.status.value, rule=result.rule,
                       reason=result.reason, state=moved.state.model_dump(mode="json"))
    if moved.state is not None and moved.state.type == StateType.SCHEDULED:
        dispatch_run(store, _settings(settings), moved)
    return moved


def filter_task_runs(store: Store, request: TaskRunFilter) -> list[TaskRun]:
    runs = read_task_runs(store, request.flow_run_id)
    if request.state_types:
        wanted = set(request.state_types)
        runs = [r for r in runs if r.state_type in wanted]
    return runs[:request.limit]


# -- flows ----------------------------------------------------------------------------------------
def list_flows(store: Store, limit: int = 200) -> list[Flow]:
    flows, _ = store.list_flows(limit=limit)
    return flows


# -- low-volume records ---------------------------------------------------------------------------
DEPLOYMENT = "deployment"
WORK_POOL = "work_pool"
WORK_QUEUE = "work_queue"
CONCURRENCY_LIMIT = "concurrency_limit"
_DEPLOYMENT_IDS = uuid.UUID("7f3c1a52-4d0e-4c1b-9a57-5b2f0d7c9e11")
_WRITE_ATTEMPTS = 5


def deployment_id(flow_name: str, name: str) -> str:
    """A deployment's id follows from its (flow name, name): a create is a put-if-absent."""
    return str(uuid.uuid5(_DEPLOYMENT_IDS, json.dumps([flow_name, name])))


def _all(store: Store, kind: str, prefix: str = "", limit: int = 10_000) -> list[StoredObject]:
    out: list[StoredObject] = []
    cursor: str | None = None
    while len(out) < limit:
        page = store.list_objects(kind, prefix=prefix, cursor=cursor, limit=min(1000, limit - len(out)))
        out.extend(page.objects)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    return out


def _check_schema(schema: dict[str, Any]) -> None:
    """A deployment's schema must be valid JSON Schema, and its patterns ones RE2 runs (runs are
    checked on RE2, see ``validate_parameters``): refused now, naming the place, rather than at
    every run."""
    if not schema:
        return
    from jsonschema import SchemaError
    from jsonschema.validators import validator_for

    from stratoflow.safe_jsonschema import UnsafeSchema, check_safe, format_checker

    try:
        check_safe(schema)
        validator_for(schema).check_schema(schema, format_checker=format_checker())
    except UnsafeSchema as exc:
        raise Unprocessable(f"body.parameter_openapi_schema.{exc.where}: {exc.message}") from None
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise Unprocessable(f"body.parameter_openapi_schema{'.' + where if where else ''}: not a valid JSON "
                            f"Schema: {exc.message}") from None


def validate_parameters(schema: dict[str, Any], parameters: dict[str, Any]) -> None:
    """Raise 422 naming the first parameter that breaks the deployment's schema.

    Patterns run on RE2 under a work budget (``stratoflow.safe_jsonschema``): no schema and no
    value can hold the request for more than a fraction of a second (``^(a+)+$`` on Python's
    ``re`` could for hours)."""
    if not schema:
        return
    from stratoflow.safe_jsonschema import RegexBudgetExceeded, UnsafeSchema, validation_errors

    try:
        found = validation_errors(schema, parameters)
    except UnsafeSchema as exc:
        where = f".{exc.where}" if exc.where else ""
        raise Unprocessable(f"the deployment's parameter_openapi_schema{where}: {exc.message}") from None
    except RegexBudgetExceeded as exc:
        raise Unprocessable(f"parameters: too costly to check against the deployment's patterns ({exc}); "
                            "send shorter values") from None
    errors = sorted(found, key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        return
    details = []
    for err in errors:
        path = [str(p) for p in err.absolute_path]
        if not path and err.validator == "required":
            missing = [p for p in err.validator_value if isinstance(p, str) and p not in parameters]
            path = missing[:1]
        if not path and err.validator == "additionalProperties":
            extra = sorted(set(parameters) - set(schema.get("properties", {})))
            path = extra[:1]
        loc = ".".join(["parameters", *path])
        # A message quotes the value: cut, or 20 of them from a 1 MiB body would swell the answer.
        msg = err.message if len(err.message) <= 500 else err.message[:500] + "..."
        details.append({"loc": loc, "msg": msg, "type": str(err.validator)})
    first = details[0]
    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    raise Unprocessable(f"{first['loc']}: {first['msg']}{more}", errors=details[:20])


_M = TypeVar("_M", bound=BaseModel)


def _write_record(
    store: Store, kind: str, key: str, model: type[_M], what: str, *,
    create: Callable[[], _M] | None, update: Callable[[_M, int], _M | None],
) -> tuple[_M, bool]:
    """Create or update one record with optimistic concurrency, re-reading after a lost race.

    ``update(current, stored_version)`` returns the new record, or None when nothing changes;
    without ``create`` a missing record is a 404. Returns the record and whether it was created.
    """
    for _ in range(_WRITE_ATTEMPTS):
        try:
            stored = store.get_object(kind, key)
        except ObjectNotFound:
            if create is None:
                raise
            record = create()
            try:
                store.put_object(kind, key, record.model_dump(mode="json"), must_not_exist=True)
            except ObjectAlreadyExists:
                continue
            return record, True
        current = model.model_validate(stored.doc)
        changed = update(current, stored.version)
        if changed is None:
            return current, False
        try:
            store.put_object(kind, key, changed.model_dump(mode="json"), expected_version=stored.version)
        except (ObjectVersionConflict, ObjectNotFound):
            continue
        return changed, False
    raise Conflict(f"the {what} keeps changing concurrently; retry later")


def upsert_deployment(store: Store, request: DeploymentCreate,
                      settings: Settings | None = None) -> tuple[Deployment, bool]:
    """Create the deployment, or update the one with the same (flow_name, name), bumping its version.

    Its schedules are then provisioned (EventBridge) and a changed or removed schedule's
    unstarted future runs are deleted (``schedules.service.on_deployment_changed``)."""
    _check_schema(request.parameter_openapi_schema)
    if request.work_pool_name is not None:
        read_work_pool(store, request.work_pool_name)
        if request.work_queue_name is not None:
            read_work_queue(store, request.work_pool_name, request.work_queue_name)
    elif request.work_queue_name is not None:
        raise Unprocessable("body.work_queue_name: needs work_pool_name")
    if request.package_uri is not None or request.package_sha256 is not None:
        # Executors fetch a deployment's code from package_uri: only the stack's own bucket.
        from stratoflow.deployments.packaging import package_uri_problem

        problem = package_uri_problem(request.package_uri, request.package_sha256, _settings(settings).bucket)
        if problem is not None:
            raise Unprocessable(f"body.package_uri: {problem}")
    dep_id = deployment_id(request.flow_name, request.name)
    flow_id = store.ensure_flow(Flow(name=request.flow_name)).id
    # An update changes the fields the request names; the others keep their stored values.
    # (Values as given: a schedule's generated id is kept, not regenerated by a dump.)
    given = {name: getattr(request, name) for name in request.model_fields_set}
    given["flow_id"] = flow_id
    before: list[Deployment] = []

    def update(old: Deployment, version: int) -> Deployment:
        before[:] = [old]
        return Deployment.model_validate({**old.model_dump(), **given, "version": version + 1, "updated": now()})

    deployment, created = _write_record(
        store, DEPLOYMENT, dep_id, Deployment, "deployment",
        create=lambda: Deployment(id=dep_id, flow_id=flow_id, **dict(request)), update=update)
    _schedules_changed(store, settings, before[0] if before else None, deployment)
    return deployment, created


def _schedules_changed(store: Store, settings: Settings | None, before: Deployment | None, after: Deployment) -> None:
    if not before and not after.schedules:
        return
    if before is not None and not before.schedules and not after.schedules:
        return
    from stratoflow.schedules.service import on_deployment_changed

    on_deployment_changed(store, _settings(settings), before, after)


def read_deployment(store: Store, dep_id: str) -> Deployment:
    return Deployment.model_validate(store.get_object(DEPLOYMENT, dep_id).doc)


def find_deployment(store: Store, name_or_id: str) -> Deployment:
    """By id, or by ``flow-name/deployment-name``."""
    if "/" in name_or_id:
        flow_name, _, name = name_or_id.partition("/")
        try:
            return read_deployment(store, deployment_id(flow_name, name))
        except ObjectNotFound:
            raise ObjectNotFound("deployment", name_or_id) from None
    return read_deployment(store, name_or_id)


def filter_deployments(store: Store, request: DeploymentFilter) -> list[Deployment]:
    out = []
    for obj in _all(store, DEPLOYMENT):
        dep = Deployment.model_validate(obj.doc)
        if request.flow_name is not None and dep.flow_name != request.flow_name:
            continue
        if request.work_pool_name is not None and dep.work_pool_name != request.work_pool_name:
            continue
        if request.paused is not None and dep.paused != request.paused:
            continue
        if request.tags and not set(request.tags) <= set(dep.tags):
            continue
        out.append(dep)
    out.sort(key=lambda d: (d.flow_name, d.name))
    return out[:request.limit]


def set_deployment_paused(store: Store, dep_id: str, paused: bool, settings: Settings | None = None) -> Deployment:
    """Pausing stops new runs: its schedules are disabled and their unstarted runs removed."""
    before = read_deployment(store, dep_id)
    after = _write_record(
        store, DEPLOYMENT, dep_id, Deployment, "deployment", create=None,
        update=lambda dep, version: None if dep.paused == paused else dep.model_copy(
            update={"paused": paused, "version": version + 1, "updated": now()}),
    )[0]
    if after.paused != before.paused:
        _schedules_changed(store, settings, before, after)
    return after


def create_deployment_flow_run(store: Store, settings: Settings, dep_id: str,
                               request: DeploymentRunCreate) -> tuple[FlowRun, bool]:
    """A run of the deployment: parameters merged over its defaults and checked against its
    schema; a paused deployment refuses (409)."""
    dep = read_deployment(store, dep_id)
    if dep.paused:
        raise Conflict(f"deployment {dep.flow_name}/{dep.name} is paused; resume it to create runs",
                       deployment_id=dep.id)
    parameters = {**dep.parameters, **request.parameters}
    validate_parameters(dep.parameter_openapi_schema, parameters)
    run, created = _create_flow_run(store, settings, flow_name=dep.flow_name, name=request.name,
                                    parameters=parameters, tags=[*dep.tags, *request.tags], state=request.state,
                                    idempotency_key=request.idempotency_key, deployment=dep)
    if created:
        dispatch_run(store, settings, run, fresh=True)
    return run, created


# -- work pools and queues ------------------------------------------------------------------------
def _settings(settings: Settings | None) -> Settings:
    from stratoflow.settings import get_settings

    return settings or get_settings()


def _map_to_executor(settings: Settings, sqs: SqsQueues, queue_url: str) -> None:
    """A `lambda` pool's queue feeds the executor on AWS (see ``workpools.mappings``); made
    before the record, so a pool or queue the API lists is one that runs."""
    from stratoflow.workpools.mappings import ExecutorMappings, MappingError

    mappings = ExecutorMappings(settings)
    if mappings.function_arn is not None:
        try:
            mappings.ensure(sqs.queue_arn(queue_url))
        except MappingError as exc:  # Lambda refused: say so, write no record
            raise ApiError(str(exc), status_code=502) from exc


def create_work_pool(store: Store, request: WorkPoolCreate, settings: Settings | None = None) -> WorkPool:
    """The pool record, its dead-letter queue and its ``default`` work queue (an SQS queue each).

    The SQS queues are made first (create_queue is idempotent), so a record never names a queue
    that does not exist; a refused duplicate leaves the existing pool's queues as they were."""
    from stratoflow.workpools.naming import DEFAULT_QUEUE
    from stratoflow.workpools.sqs import SqsQueues

    try:
        read_work_pool(store, request.name)
        raise Conflict(f"work pool {request.name!r} already exists", name=request.name)
    except ObjectNotFound:
        pass
    settings = _settings(settings)
    sqs = SqsQueues(settings)
    queue_url = sqs.ensure_queue(request.name, DEFAULT_QUEUE)
    dlq_url, _ = sqs.ensure_dlq(request.name)
    if request.type == WorkPoolType.LAMBDA:
        _map_to_executor(settings, sqs, queue_url)
    pool = WorkPool(name=request.name, type=request.type, description=request.description,
                    concurrency_limit=request.concurrency_limit, queue_url=queue_url, dlq_url=dlq_url)
    try:
        store.put_object(WORK_POOL, pool.name, pool.model_dump(mode="json"), must_not_exist=True)
    except ObjectAlreadyExists:
        raise Conflict(f"work pool {pool.name!r} already exists", name=pool.name) from None
    default = WorkQueue(name=DEFAULT_QUEUE, work_pool_name=pool.name, priority=1, queue_url=queue_url)
    with contextlib.suppress(ObjectAlreadyExists):
        store.put_object(WORK_QUEUE, f"{pool.name}/{DEFAULT_QUEUE}", default.model_dump(mode="json"),
                         must_not_exist=True)
    return pool


def read_work_pool(store: Store, name: str) -> WorkPool:
    return WorkPool.model_validate(store.get_object(WORK_POOL, name).doc)


def list_work_pools(store: Store) -> list[WorkPool]:
    return [WorkPool.model_validate(o.doc) for o in _all(store, WORK_POOL)]


def set_work_pool_paused(store: Store, name: str, paused: bool) -> WorkPool:
    return _write_record(
        store, WORK_POOL, name, WorkPool, "work pool", create=None,
        update=lambda pool, _version: None if pool.paused == paused else pool.model_copy(update={"paused": paused}),
    )[0]


def create_work_queue(store: Store, pool_name: str, request: WorkQueueCreate,
                      settings: Settings | None = None) -> WorkQueue:
    from stratoflow.workpools.sqs import SqsQueues

    pool = read_work_pool(store, pool_name)
    try:
        read_work_queue(store, pool_name, request.name)
        raise Conflict(f"work queue {request.name!r} already exists in pool {pool_name!r}", name=request.name)
    except ObjectNotFound:
        pass
    settings = _settings(settings)
    sqs = SqsQueues(settings)
    queue_url = sqs.ensure_queue(pool_name, request.name)
    if pool.type == WorkPoolType.LAMBDA:
        _map_to_executor(settings, sqs, queue_url)
    queue = WorkQueue(name=request.name, work_pool_name=pool_name, priority=request.priority,
                      concurrency_limit=request.concurrency_limit, queue_url=queue_url)
    try:
        store.put_object(WORK_QUEUE, f"{pool_name}/{queue.name}", queue.model_dump(mode="json"),
                         must_not_exist=True)
    except ObjectAlreadyExists:
        raise Conflict(f"work queue {queue.name!r} already exists in pool {pool_name!r}", name=queue.name) from None
    return queue


def set_work_queue_paused(store: Store, pool_name: str, name: str, paused: bool) -> WorkQueue:
    """A paused queue's messages wait in SQS (executors and workers leave them there)."""
    read_work_queue(store, pool_name, name)
    return _write_record(
        store, WORK_QUEUE, f"{pool_name}/{name}", WorkQueue, "work queue", create=None,
        update=lambda queue, _version: None if queue.paused == paused else queue.model_copy(update={"paused": paused}),
    )[0]


def work_pool_status(store: Store, name: str, settings: Settings | None = None) -> dict[str, Any]:
    """The pool and each of its queues with its SQS depth (approximate, as SQS reports it)."""
    from stratoflow.workpools.sqs import SqsQueues

    pool = read_work_pool(store, name)
    sqs = SqsQueues(_settings(settings))
    queues = []
    for queue in list_work_queues(store, name):
        depth = sqs.depth(queue.queue_url) if queue.queue_url else {}
        queues.append({**queue.model_dump(mode="json"), **depth})
    dead = sqs.depth(pool.dlq_url)["messages_visible"] if pool.dlq_url else 0
    return {"pool": pool.model_dump(mode="json"), "queues": queues, "dead_letter_messages": dead}


def read_work_queue(store: Store, pool_name: str, name: str) -> WorkQueue:
    try:
        return WorkQueue.model_validate(store.get_object(WORK_QUEUE, f"{pool_name}/{name}").doc)
    except ObjectNotFound:
        raise ObjectNotFound("work queue", f"{pool_name}/{name}") from None


def list_work_queues(store: Store, pool_name: str) -> list[WorkQueue]:
    read_work_pool(store, pool_name)
    queues = [WorkQueue.model_validate(o.doc) for o in _all(store, WORK_QUEUE, prefix=f"{pool_name}/")]
    return sorted(queues, key=lambda q: (q.priority, q.name))


# -- concurrency limits ---------------------------------------------------------------------------
def upsert_concurrency_limit(store: Store, request: ConcurrencyLimitCreate) -> tuple[ConcurrencyLimit, bool]:
    """Create the limit of ``tag``, or change its limit (the slots held stay held)."""
    return _write_record(
        store, CONCURRENCY_LIMIT, request.tag, ConcurrencyLimit, "concurrency limit",
        create=lambda: ConcurrencyLimit(tag=request.tag, limit=request.limit),
        update=lambda limit, version: limit.model_copy(
            update={"limit": request.limit, "version": version + 1, "updated": now()}),
    )


def read_concurrency_limit(store: Store, tag: str) -> ConcurrencyLimit:
    return ConcurrencyLimit.model_validate(store.get_object(CONCURRENCY_LIMIT, tag).doc)


def list_concurrency_limits(store: Store) -> list[ConcurrencyLimit]:
    return [ConcurrencyLimit.model_validate(o.doc) for o in _all(store, CONCURRENCY_LIMIT)]


def delete_concurrency_limit(store: Store, tag: str) -> None:
    store.delete_object(CONCURRENCY_LIMIT, tag)


# -- logs ---------------------------------------------------------------------------------------
def write_logs(store: Store, entries: Sequence[LogIn]) -> int:
    """Write a batch of logs, all or nothing: every line was checked by ``LogIn`` (fields,
    timestamp range), and here no id may repeat and every flow run must exist, before the first
    write. Lines are stored by id, so the same batch sent again (a retry) adds no copies."""
    seen: dict[tuple[str, str], int] = {}
    for index, entry in enumerate(entries):
        if entry.id is not None:
            first = seen.setdefault((entry.flow_run_id, entry.id), index)
            if first != index:
                raise Unprocessable(f"body.{index}.id: {entry.id!r} is also the id of body.{first} "
                                    "(ids are unique within a flow run)")
    logs: list[Log] = [entry.to_log() for entry in entries]
    missing = [rid for rid in dict.fromkeys(e.flow_run_id for e in entries) if not _flow_run_exists(store, rid)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise NotFound(f"flow run {missing[0]!r} not found{more}", missing=missing[:20])
    store.write_logs(logs)
    return len(logs)


def _flow_run_exists(store: Store, flow_run_id: str) -> bool:
    try:
        store.read_run(RunKind.FLOW, flow_run_id)
    except ObjectNotFound:
        return False
    return True


def encode_cursor(position: str | None) -> str | None:
    return base64.urlsafe_b64encode(position.encode()).decode().rstrip("=") if position else None


def decode_cursor(cursor: str | None) -> str | None:
    if not cursor:
        return None
    try:
        position = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        position = ""
    if "#" not in position:  # every log position is time#writer#seq
        raise Unprocessable("query.cursor: not a cursor this API returned")
    return position


def read_logs(store: Store, flow_run_id: str, *, cursor: str | None, limit: int, min_level: int,
              task_run_id: str | None = None) -> tuple[list[Log], str | None]:
    """A page of the run's logs in emitted order, cut so the response stays far below Lambda's
    6 MB limit (a smaller page is read when messages are large)."""
    read_flow_run(store, flow_run_id)
    position = decode_cursor(cursor)
    while True:
        page = store.read_logs(flow_run_id, cursor=position, limit=limit, min_level=min_level, task_run_id=task_run_id)
        size = sum(len(log.message.encode("utf-8", "surrogatepass")) + 256 for log in page.logs)
        if size <= MAX_LOG_PAGE_BYTES or limit == 1:
            return page.logs, encode_cursor(page.next_cursor)
        limit = max(1, limit // 2)
