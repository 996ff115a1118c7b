"""Flows: list and read (``POST /flows/ensure``, the engine's, is in ``engine``)."""

from typing import Annotated

from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from stratoflow.api._shared import responses
from stratoflow.control import flow_runs
from stratoflow.models import Flow
from stratoflow.storage import get_store

TAG = "flows"
router = APIGatewayHttpRouter()

FlowName = Annotated[str, Path(description="flow name", min_length=1, max_length=256)]


@router.get("/flows", tags=[TAG], summary="Flows, by name", responses=responses(200, list[Flow], "flows"))
def list_flows(limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[Flow]:
    return flow_runs.list_flows(get_store(), limit)


@router.get("/flows/<name>", tags=[TAG], summary="Read a flow by name", responses=responses(200, Flow, "the flow", 404))
def read_flow(name: FlowName) -> Flow:
    return get_store().read_flow(name)
