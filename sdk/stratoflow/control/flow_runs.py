"""Flow runs: create (also from a deployment), read, filter, cancel, retry, resume, delete, and the
API's set_state of either kind. Every transition goes through ``transitions``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from stratoflow.control import transitions
from stratoflow.control.dispatch import dispatch_run
from stratoflow.control.engine_runs import forget_flow_run
from stratoflow.control.parameters import validate_parameters
from stratoflow.control.records import read_record, settings_or_default
from stratoflow.control.run_input import DEFAULT_KEY, check_run_input, input_key
from stratoflow.exceptions import (
    Conflict,
    Forbidden,
    ObjectNotFound,
    TransitionRefused,
    Unprocessable,
)
from stratoflow.models import (
    Deployment,
    Flow,
    FlowRun,
    ObjectKind,
    TaskRun,
    new_id,
)
from stratoflow.names import generate_run_name
from stratoflow.orchestration import (
    OrchestrationResult,
    ResponseStatus,
    RunKind,
)
from stratoflow.schemas import (
    DeploymentRunCreate,
    FlowRunCreate,
    FlowRunFilter,
    SetStateIn,
    StateIn,
)
from stratoflow.states import AwaitingRetry, Cancelled, Cancelling, Running, Scheduled, State, StateType, now
from stratoflow.storage.base import FlowRunQuery

if TYPE_CHECKING:
    from stratoflow.settings import Settings
    from stratoflow.storage.base import Store


def _run_name() -> str:

    return generate_run_name()


def read_flow_run(store: Store, flow_run_id: str) -> FlowRun:
    run = store.read_run(RunKind.FLOW, flow_run_id)
    assert isinstance(run, FlowRun)
    return run


def set_state(store: Store, kind: RunKind, run_id: str, request: SetStateIn, *,
              force: bool = False) -> OrchestrationResult:
    """Propose the state; ACCEPT/REJECT/WAIT are answers, ABORT raises ``TransitionRefused``.

    ``force`` (skip the rules) comes from the route, ``.../set_state/force``, never from the body:
    IAM grants routes, so only a caller allowed that route can force. ``force: true`` in the body
    of the plain route is refused (403) rather than ignored, naming the route to use."""
    if request.force and not force:
        route = f"/{kind.value}_runs/{run_id}/set_state/force"
        raise Forbidden(f"body.force: forcing a state skips the orchestration rules and has its own route, "
                       f"POST /{kind.value}_runs/<id>/set_state/force, which IAM grants separately; this "
                       "route only proposes", force_route=route)
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
    result, _ = transitions.propose(store, kind, run, proposed, force=force, parent_flow_run_state=parent_state)
    if result.status == ResponseStatus.ABORT:
        raise TransitionRefused(result)
    return result


def create_flow_run(store: Store, settings: Settings, request: FlowRunCreate) -> tuple[FlowRun, bool]:
    """Create a flow run; returns ``(run, created)``. ``created`` is False when an earlier create
    with the same flow name and idempotency key made the run (nothing is written then)."""
    return create_run_of_flow(store, settings, flow_name=request.flow_name, name=request.name,
                            parameters=request.parameters, tags=request.tags, state=request.state,
                            idempotency_key=request.idempotency_key)


def create_run_of_flow(store: Store, settings: Settings, *, flow_name: str, name: str | None,
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
    run = transitions.decide_new(RunKind.FLOW, run, [proposed])  # type: ignore[assignment]
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
        return transitions.create_idempotent(store, run, idempotency_key)
    created = transitions.create(store, RunKind.FLOW, run)
    assert isinstance(created, FlowRun)
    return created, True


def _earlier_run(store: Store, flow_name: str, key: str) -> FlowRun | None:
    reader = getattr(store, "read_idempotent_run", None)
    return reader(flow_name, key) if reader is not None else None


def delete_flow_run(store: Store, flow_run_id: str) -> None:
    """Remove the run, its task runs and its idempotency marker; ``ObjectNotFound`` if unknown."""
    store.delete_flow_run(flow_run_id)
    forget_flow_run(flow_run_id)  # its task runs are refused again (404)


def _accepted(result: OrchestrationResult, moved: FlowRun | TaskRun) -> FlowRun:
    """The run an operator's proposal moved: ABORT is ``TransitionRefused``; REJECT or WAIT (the
    policy chose another state, or later) is a ``Conflict`` naming the rule."""
    if result.status == ResponseStatus.ABORT:
        raise TransitionRefused(result)
    if result.status != ResponseStatus.ACCEPT:
        raise Conflict(f"{result.rule}: {result.reason}", status=result.status.value, rule=result.rule,
                       reason=result.reason)
    assert isinstance(moved, FlowRun)
    return moved


def cancel_flow_run(store: Store, flow_run_id: str) -> FlowRun:
    """Running/Pending -> Cancelling (the executor finishes it), Scheduled/Paused -> Cancelled.
    A run already Cancelling is returned as it is; a finished run is refused (409, the rule's reason)."""
    run = read_flow_run(store, flow_run_id)
    if run.state_type == StateType.CANCELLING:
        return run
    proposed = Cancelling() if run.state_type in (StateType.RUNNING, StateType.PENDING) else Cancelled()
    proposed.message = "cancelled through the API"
    return _accepted(*transitions.propose(store, RunKind.FLOW, run, proposed))


def retry_flow_run(store: Store, flow_run_id: str, settings: Settings | None = None) -> FlowRun:
    """A finished run goes back to Scheduled (AwaitingRetry) for now, through the policy; a run of
    a work pool is sent to its queue again."""
    run = read_flow_run(store, flow_run_id)
    if run.state is None or not run.state.is_final():
        raise Conflict(f"only a finished flow run can be retried; it is {run.state!r}",
                       state=run.state.model_dump(mode="json") if run.state else None)
    moved = _accepted(*transitions.propose(store, RunKind.FLOW, run, AwaitingRetry(message="retried through the API")))
    dispatch_run(store, settings_or_default(settings), moved)
    return moved


def resume_flow_run(store: Store, flow_run_id: str, run_input: dict[str, Any] | None,
                    settings: Settings | None = None) -> FlowRun:
    """Paused -> Running (the waiting body goes on); Suspended -> Scheduled and sent to its work
    queue (the flow runs again and its suspend call returns the input). ``run_input`` is checked
    against the schema the pause declared (422 naming the field) before anything is written."""


    run = read_flow_run(store, flow_run_id)
    if run.state is None or run.state.type != StateType.PAUSED:
        raise Conflict(f"only a paused flow run can be resumed; it is {run.state!r}",
                       state=run.state.model_dump(mode="json") if run.state else None)
    details = run.state.state_details
    try:
        check_run_input((details.run_input_keyset or {}).get("schema"), run_input or {})
    except ValueError as exc:
        raise Unprocessable(str(exc)) from None
    key = details.pause_key or DEFAULT_KEY
    if run_input is not None:
        store.put_object(ObjectKind.RUN_INPUT, input_key(run.id, key), {"input": run_input, "at": now().isoformat()})
    if details.pause_reschedule:
        proposed: State = Scheduled(name="Resuming", message="resumed; it runs again from the start")
        if run_input is not None:
            # Also on the state: a flow reading its input over the API (a sandboxed run) finds it there.
            proposed.state_details.run_input_keyset = {"input": json.dumps(run_input), "key": key}
    else:

        proposed = Running(message="resumed")
        if run_input is not None:
            proposed.state_details.run_input_keyset = {"input": json.dumps(run_input)}
    result, moved = transitions.propose(store, RunKind.FLOW, run, proposed)
    if result.status == ResponseStatus.ABORT:
        raise TransitionRefused(result)
    assert isinstance(moved, FlowRun)
    if moved.state is not None and moved.state.type == StateType.FAILED:
        raise Conflict(f"{result.rule}: {result.reason}", status=result.status.value, rule=result.rule,
                       reason=result.reason, state=moved.state.model_dump(mode="json"))
    if moved.state is not None and moved.state.type == StateType.SCHEDULED:
        dispatch_run(store, settings_or_default(settings), moved)
    return moved


def filter_flow_runs(store: Store, request: FlowRunFilter) -> tuple[list[FlowRun], str | None]:
    """A page of the flow runs ``request`` matches and the cursor of the next page (None on the
    last). ``scheduled_before`` counts only with ``state_types``; a cursor this API did not hand
    out is refused (422)."""
    types = tuple(StateType(t) for t in request.state_types or ())
    try:
        return store.page_flow_runs(FlowRunQuery(
            flow_name=request.flow_name, deployment_id=request.deployment_id, state_types=types,
            tags=tuple(request.tags or ()), scheduled_before=request.scheduled_before if types else None,
            created_after=request.created_after, created_before=request.created_before, cursor=request.cursor,
            limit=request.limit))
    except ValueError as exc:
        raise Unprocessable(f"body.cursor: {exc}") from None


def list_flows(store: Store, limit: int = 200) -> list[Flow]:
    flows, _ = store.list_flows(limit=limit)
    return flows


def create_deployment_flow_run(store: Store, settings: Settings, dep_id: str,
                               request: DeploymentRunCreate) -> tuple[FlowRun, bool]:
    """A run of the deployment: parameters merged over its defaults and checked against its
    schema; a paused deployment refuses (409)."""
    dep = read_record(store, ObjectKind.DEPLOYMENT, Deployment, dep_id)
    if dep.paused:
        raise Conflict(f"deployment {dep.flow_name}/{dep.name} is paused; resume it to create runs",
                       deployment_id=dep.id)
    parameters = {**dep.parameters, **request.parameters}
    validate_parameters(dep.parameter_openapi_schema, parameters)
    run, created = create_run_of_flow(store, settings, flow_name=dep.flow_name, name=request.name,
                                    parameters=parameters, tags=[*dep.tags, *request.tags], state=request.state,
                                    idempotency_key=request.idempotency_key, deployment=dep)
    if created:
        dispatch_run(store, settings, run, fresh=True)
    return run, created
