"""Task runs: read, filter, the task runs of a flow run, set_state (and its force route)
(``stratoflow.control.task_runs``; set_state is ``control.flow_runs``' for either kind)."""

from typing import Annotated

from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from stratoflow.api._shared import FlowRunId, count, responses
from stratoflow.control import flow_runs, task_runs
from stratoflow.models import TaskRun
from stratoflow.orchestration import RunKind
from stratoflow.schemas import SetStateForceIn, SetStateIn, SetStateOut, TaskRunFilter
from stratoflow.storage import get_store

TAG = "task runs"
router = APIGatewayHttpRouter()

TaskRunId = Annotated[str, Path(description="task run id", min_length=1, max_length=256)]


@router.get("/flow_runs/<flow_run_id>/task_runs", tags=[TAG], summary="Task runs of a flow run",
            responses=responses(200, list[TaskRun], "task runs in start order", 404))
def read_task_runs(flow_run_id: FlowRunId) -> list[TaskRun]:
    return task_runs.read_task_runs(get_store(), flow_run_id)


@router.get("/task_runs/<task_run_id>", tags=[TAG], summary="Read a task run",
            responses=responses(200, TaskRun, "the task run", 404))
def read_task_run(task_run_id: TaskRunId) -> TaskRun:
    return task_runs.read_task_run(get_store(), task_run_id)


@router.post("/task_runs/<task_run_id>/set_state", tags=[TAG],
             summary="Propose a state; the orchestration rules decide",
             description="`force: true` is refused (403): forcing is .../set_state/force.",
             responses=responses(200, SetStateOut, "ACCEPT, REJECT (with the state adopted) or WAIT",
                                 400, 403, 404, 409, 413, 415))
def set_task_run_state(task_run_id: TaskRunId, body: SetStateIn) -> SetStateOut:
    result = flow_runs.set_state(get_store(), RunKind.TASK, task_run_id, body)
    return SetStateOut.from_result(result)


# A route of its own for the same reason as the flow run's (IAM grants it separately).
@router.post("/task_runs/<task_run_id>/set_state/force", tags=[TAG],
             summary="Set a state without the orchestration rules (administrative override)",
             description="Granted separately from .../set_state (docs/api.md). The state is accepted as is.",
             responses=responses(200, SetStateOut, "ACCEPT", 400, 404, 413, 415))
def force_task_run_state(task_run_id: TaskRunId, body: SetStateForceIn) -> SetStateOut:
    result = flow_runs.set_state(get_store(), RunKind.TASK, task_run_id, body, force=True)
    count("StatesForced")
    return SetStateOut.from_result(result)


@router.post("/task_runs/filter", tags=[TAG], summary="Task runs of a flow run, by state type",
             responses=responses(200, list[TaskRun], "task runs in start order", 400, 404, 413, 415))
def filter_task_runs(body: TaskRunFilter) -> list[TaskRun]:
    return task_runs.filter_task_runs(get_store(), body)
