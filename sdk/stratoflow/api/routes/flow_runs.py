"""Flow runs: create, read, filter, their state history, set_state (and its force route), cancel,
resume, retry, delete (``stratoflow.control.flow_runs``)."""

from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from stratoflow.api._shared import BODY_ERRORS, JSON, FlowRunId, count, responses, with_headers, with_status
from stratoflow.control import flow_runs
from stratoflow.models import FlowRun
from stratoflow.orchestration import RunKind
from stratoflow.schemas import (
    FLOW_RUN_CURSOR_FORMAT,
    Deleted,
    FlowRunCreate,
    FlowRunFilter,
    ResumeIn,
    SetStateForceIn,
    SetStateIn,
    SetStateOut,
)
from stratoflow.settings import get_settings
from stratoflow.states import State
from stratoflow.storage import get_store

TAG = "flow runs"
router = APIGatewayHttpRouter()

_NEXT_CURSOR = {"x-next-cursor": {
    "description": "the cursor of the next page (pass it as `cursor`); absent on the last page",
    "schema": {"type": "string", "format": FLOW_RUN_CURSOR_FORMAT}}}


@router.post("/flow_runs", tags=[TAG], status_code=201,
             summary="Create a flow run (Scheduled for now unless `state` says otherwise)",
             responses=with_status(responses(201, FlowRun, "created", 400, 409, 413, 415), 200, FlowRun,
                                   "an earlier create with the same idempotency key made this run"))
def create_flow_run(body: FlowRunCreate) -> Response[FlowRun]:
    run, created = flow_runs.create_flow_run(get_store(), get_settings(), body)
    if created:
        count("FlowRunsCreated")
    return Response(status_code=201 if created else 200, content_type=JSON, body=run)


@router.get("/flow_runs/<flow_run_id>", tags=[TAG], summary="Read a flow run",
            responses=responses(200, FlowRun, "the flow run", 404))
def read_flow_run(flow_run_id: FlowRunId) -> FlowRun:
    return flow_runs.read_flow_run(get_store(), flow_run_id)


@router.post("/flow_runs/filter", tags=[TAG],
             summary="Flow runs, newest first; the next page's cursor is in the x-next-cursor header",
             responses=with_headers(responses(200, list[FlowRun], "matching flow runs", *BODY_ERRORS), _NEXT_CURSOR))
def filter_flow_runs(body: Annotated[FlowRunFilter | None, Body()] = None) -> Response[list[FlowRun]]:
    runs, next_cursor = flow_runs.filter_flow_runs(get_store(), body or FlowRunFilter())
    headers = {"x-next-cursor": next_cursor} if next_cursor else None
    return Response(status_code=200, content_type=JSON, body=runs, headers=headers)


@router.get("/flow_runs/<flow_run_id>/states", tags=[TAG], summary="State history, oldest first",
            responses=responses(200, list[State], "the states", 404))
def read_flow_run_states(flow_run_id: FlowRunId) -> list[State]:
    return flow_runs.read_flow_run(get_store(), flow_run_id).state_history


@router.post("/flow_runs/<flow_run_id>/set_state", tags=[TAG],
             summary="Propose a state; the orchestration rules decide",
             description="`force: true` is refused (403): forcing is .../set_state/force.",
             responses=responses(200, SetStateOut, "ACCEPT, REJECT (with the state adopted) or WAIT",
                                 400, 403, 404, 409, 413, 415))
def set_flow_run_state(flow_run_id: FlowRunId, body: SetStateIn) -> SetStateOut:
    result = flow_runs.set_state(get_store(), RunKind.FLOW, flow_run_id, body)
    return SetStateOut.from_result(result)


# A route of its own, not a body flag: IAM grants execute-api:Invoke per path, so skipping the
# rules can be allowed to an operator role and refused to everyone else.
@router.post("/flow_runs/<flow_run_id>/set_state/force", tags=[TAG],
             summary="Set a state without the orchestration rules (administrative override)",
             description="Granted separately from .../set_state (docs/api.md). The state is accepted as is.",
             responses=responses(200, SetStateOut, "ACCEPT", 400, 404, 413, 415))
def force_flow_run_state(flow_run_id: FlowRunId, body: SetStateForceIn) -> SetStateOut:
    result = flow_runs.set_state(get_store(), RunKind.FLOW, flow_run_id, body, force=True)
    count("StatesForced")
    return SetStateOut.from_result(result)


@router.post("/flow_runs/<flow_run_id>/cancel", tags=[TAG],
             summary="Cancel: Running/Pending -> Cancelling, Scheduled/Paused -> Cancelled",
             description="A finished run is refused with 409 and the rule's reason; a run already "
                         "Cancelling is returned as is.",
             responses=responses(200, FlowRun, "the run afterwards", 404, 409))
def cancel_flow_run(flow_run_id: FlowRunId) -> FlowRun:
    run = flow_runs.cancel_flow_run(get_store(), flow_run_id)
    count("FlowRunsCancelled")
    return run


@router.post("/flow_runs/<flow_run_id>/resume", tags=[TAG],
             summary="Resume a paused (or suspended) flow run, with input for a pause that waits for it",
             description="Paused -> Running; Suspended -> Scheduled and sent to its work queue. 409 when the "
                         "run is not paused or its pause timed out; 422 naming the field of a bad run_input.",
             responses=responses(200, FlowRun, "resumed", 400, 404, 409, 413, 415))
def resume_flow_run(flow_run_id: FlowRunId, body: ResumeIn) -> FlowRun:
    return flow_runs.resume_flow_run(get_store(), flow_run_id, body.run_input)


@router.post("/flow_runs/<flow_run_id>/retry", tags=[TAG],
             summary="Retry a finished run: it goes back to Scheduled (AwaitingRetry) for now",
             responses=responses(200, FlowRun, "the run afterwards", 404, 409))
def retry_flow_run(flow_run_id: FlowRunId) -> FlowRun:
    return flow_runs.retry_flow_run(get_store(), flow_run_id)


@router.delete("/flow_runs/<flow_run_id>", tags=[TAG],
               summary="Delete a flow run with its task runs and idempotency marker",
               responses=responses(200, Deleted, "deleted", 404))
def delete_flow_run(flow_run_id: FlowRunId) -> Deleted:
    flow_runs.delete_flow_run(get_store(), flow_run_id)
    return Deleted(deleted=flow_run_id)
