"""Deployments: create-or-update, filter, read, pause, resume, and a run of one
(``stratoflow.control.deployments``; the run is ``control.flow_runs``')."""

from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from stratoflow.api._shared import BODY_ERRORS, JSON, count, responses, with_status
from stratoflow.control import deployments, flow_runs
from stratoflow.models import Deployment, FlowRun
from stratoflow.schemas import DeploymentCreate, DeploymentFilter, DeploymentRunCreate
from stratoflow.settings import get_settings
from stratoflow.storage import get_store

TAG = "deployments"
router = APIGatewayHttpRouter()

DeploymentId = Annotated[str, Path(description="deployment id", min_length=1, max_length=256)]


@router.post("/deployments", tags=[TAG], status_code=201,
             summary="Create a deployment, or update the one with the same (flow_name, name)",
             description="An update replaces the given fields and bumps `version`.",
             responses=with_status(responses(201, Deployment, "created", 400, 404, 409, 413, 415),
                                   200, Deployment, "updated"))
def upsert_deployment(body: DeploymentCreate) -> Response[Deployment]:
    deployment, created = deployments.upsert_deployment(get_store(), body)
    return Response(status_code=201 if created else 200, content_type=JSON, body=deployment)


@router.post("/deployments/filter", tags=[TAG], summary="Deployments, by flow name and name",
             responses=responses(200, list[Deployment], "matching deployments", *BODY_ERRORS))
def filter_deployments(body: Annotated[DeploymentFilter | None, Body()] = None) -> list[Deployment]:
    return deployments.filter_deployments(get_store(), body or DeploymentFilter())


@router.get("/deployments/<deployment_id>", tags=[TAG], summary="Read a deployment",
            responses=responses(200, Deployment, "the deployment", 404))
def read_deployment(deployment_id: DeploymentId) -> Deployment:
    return deployments.read_deployment(get_store(), deployment_id)


@router.post("/deployments/<deployment_id>/pause", tags=[TAG],
             summary="Pause: no new runs are created from it", responses=responses(200, Deployment, "paused", 404))
def pause_deployment(deployment_id: DeploymentId) -> Deployment:
    return deployments.set_deployment_paused(get_store(), deployment_id, True)


@router.post("/deployments/<deployment_id>/resume", tags=[TAG], summary="Resume a paused deployment",
             responses=responses(200, Deployment, "resumed", 404))
def resume_deployment(deployment_id: DeploymentId) -> Deployment:
    return deployments.set_deployment_paused(get_store(), deployment_id, False)


@router.post("/deployments/<deployment_id>/create_flow_run", tags=[TAG], status_code=201,
             summary="Create a run of the deployment",
             description="Parameters are merged over the deployment's defaults and validated against its "
                         "parameter_openapi_schema (422 names the parameter). A paused deployment refuses (409).",
             responses=with_status(responses(201, FlowRun, "created", 400, 404, 409, 413, 415), 200, FlowRun,
                                   "an earlier create with the same idempotency key made this run"))
def create_deployment_flow_run(deployment_id: DeploymentId,
                               body: Annotated[DeploymentRunCreate | None, Body()] = None) -> Response[FlowRun]:
    run, created = flow_runs.create_deployment_flow_run(get_store(), get_settings(), deployment_id,
                                                         body or DeploymentRunCreate())
    if created:
        count("FlowRunsCreated")
    return Response(status_code=201 if created else 200, content_type=JSON, body=run)
