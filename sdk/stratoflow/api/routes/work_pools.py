"""Work pools and their queues: create, list, read, pause, resume, and a pool's status
(``stratoflow.control.work_pools``)."""

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from stratoflow.api._shared import JSON, responses
from stratoflow.control import work_pools
from stratoflow.models import WorkPool, WorkQueue
from stratoflow.schemas import WorkPoolCreate, WorkQueueCreate
from stratoflow.storage import get_store

TAG = "work pools"
router = APIGatewayHttpRouter()

PoolName = Annotated[str, Path(description="work pool name", min_length=1, max_length=64)]
QueueName = Annotated[str, Path(description="work queue name", min_length=1, max_length=64)]
_WITH_SQS = " Creates the SQS queue (redriving to the pool's dead-letter queue) before the record."


@router.post("/work_pools", tags=[TAG], status_code=201, summary="Create a work pool",
             description="409 when the name is taken. The pool gets a `default` queue." + _WITH_SQS,
             responses=responses(201, WorkPool, "created", 400, 409, 413, 415))
def create_work_pool(body: WorkPoolCreate) -> Response[WorkPool]:
    pool = work_pools.create_work_pool(get_store(), body)
    return Response(status_code=201, content_type=JSON, body=pool)


@router.get("/work_pools", tags=[TAG], summary="Work pools, by name",
            responses=responses(200, list[WorkPool], "work pools"))
def list_work_pools() -> list[WorkPool]:
    return work_pools.list_work_pools(get_store())


@router.get("/work_pools/<name>", tags=[TAG], summary="Read a work pool",
            responses=responses(200, WorkPool, "the work pool", 404))
def read_work_pool(name: PoolName) -> WorkPool:
    return work_pools.read_work_pool(get_store(), name)


@router.post("/work_pools/<name>/pause", tags=[TAG], summary="Pause a work pool",
             responses=responses(200, WorkPool, "paused", 404))
def pause_work_pool(name: PoolName) -> WorkPool:
    return work_pools.set_work_pool_paused(get_store(), name, True)


@router.post("/work_pools/<name>/resume", tags=[TAG], summary="Resume a work pool",
             responses=responses(200, WorkPool, "resumed", 404))
def resume_work_pool(name: PoolName) -> WorkPool:
    return work_pools.set_work_pool_paused(get_store(), name, False)


@router.post("/work_pools/<name>/queues", tags=[TAG], status_code=201, summary="Create a queue in a work pool",
             description="409 when the pool already has a queue of that name." + _WITH_SQS,
             responses=responses(201, WorkQueue, "created", 400, 404, 409, 413, 415))
def create_work_queue(name: PoolName, body: WorkQueueCreate) -> Response[WorkQueue]:
    queue = work_pools.create_work_queue(get_store(), name, body)
    return Response(status_code=201, content_type=JSON, body=queue)


@router.get("/work_pools/<name>/queues", tags=[TAG], summary="Queues of a work pool, by priority",
            responses=responses(200, list[WorkQueue], "queues", 404))
def list_work_queues(name: PoolName) -> list[WorkQueue]:
    return work_pools.list_work_queues(get_store(), name)


@router.post("/work_pools/<name>/queues/<queue>/pause", tags=[TAG], summary="Pause a work queue",
             description="Its messages wait in SQS until it is resumed.",
             responses=responses(200, WorkQueue, "paused", 404))
def pause_work_queue(name: PoolName, queue: QueueName) -> WorkQueue:
    return work_pools.set_work_queue_paused(get_store(), name, queue, True)


@router.post("/work_pools/<name>/queues/<queue>/resume", tags=[TAG], summary="Resume a work queue",
             responses=responses(200, WorkQueue, "resumed", 404))
def resume_work_queue(name: PoolName, queue: QueueName) -> WorkQueue:
    return work_pools.set_work_queue_paused(get_store(), name, queue, False)


@router.get("/work_pools/<name>/status", tags=[TAG],
            summary="A pool with the depth of each queue (SQS's approximate counts) and its dead letters",
            responses=responses(200, dict[str, Any], "status", 404))
def work_pool_status(name: PoolName) -> dict[str, Any]:
    return work_pools.work_pool_status(get_store(), name)
