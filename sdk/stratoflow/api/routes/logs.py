"""Logs: write a batch, read a flow run's page by page (``stratoflow.control.logs``)."""

from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Query
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from stratoflow.api._shared import JSON, FlowRunId, count, responses
from stratoflow.control import logs as run_logs
from stratoflow.schemas import MAX_LOGS_PER_REQUEST, LogCursor, LogIn, LogPageOut, LogsWritten
from stratoflow.storage import get_store

TAG = "logs"
router = APIGatewayHttpRouter()


@router.post("/logs", tags=[TAG], status_code=201, summary="Write a batch of up to 1000 log lines",
             description="All or nothing: one invalid line (named, e.g. `body.3.timestamp`) refuses the "
                         "batch with 422 and writes none of it. Lines with an `id` and `timestamp` are "
                         "idempotent: sending the batch again stores no copies.",
             responses=responses(201, LogsWritten, "written", 400, 404, 413, 415))
def write_logs(body: Annotated[list[LogIn], Body(max_length=MAX_LOGS_PER_REQUEST)]) -> Response[LogsWritten]:
    written = run_logs.write_logs(get_store(), body)
    count("LogLinesWritten", written)
    return Response(status_code=201, content_type=JSON, body=LogsWritten(written=written))


@router.get("/flow_runs/<flow_run_id>/logs", tags=[TAG], summary="Logs of a flow run in emitted order",
            responses=responses(200, LogPageOut, "a page of logs", 404))
def read_logs(
    flow_run_id: FlowRunId,
    cursor: Annotated[LogCursor | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    min_level: Annotated[int, Query(ge=0, le=100, description="only logs at this level or above")] = 0,
    task_run_id: Annotated[str | None, Query(description="only logs of this task run", max_length=256)] = None,
) -> LogPageOut:
    logs, next_cursor = run_logs.read_logs(get_store(), flow_run_id, cursor=cursor, limit=limit,
                                           min_level=min_level, task_run_id=task_run_id or None)
    return LogPageOut(logs=logs, next_cursor=next_cursor)
