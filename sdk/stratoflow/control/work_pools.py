"""Work pools and their queues: an SQS queue per work queue, made before the record."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from stratoflow.control.records import all_records, settings_or_default, write_record
from stratoflow.exceptions import (
    Conflict,
    ObjectAlreadyExists,
    ObjectNotFound,
    UpstreamRefused,
)
from stratoflow.models import (
    ObjectKind,
    WorkPool,
    WorkPoolType,
    WorkQueue,
)
from stratoflow.schemas import (
    WorkPoolCreate,
    WorkQueueCreate,
)
from stratoflow.workpools.mappings import ExecutorMappings, MappingError
from stratoflow.workpools.naming import DEFAULT_QUEUE
from stratoflow.workpools.sqs import SqsQueues

if TYPE_CHECKING:
    from stratoflow.settings import Settings
    from stratoflow.storage.base import Store


def _map_to_executor(settings: Settings, sqs: SqsQueues, queue_url: str) -> None:
    """A `lambda` pool's queue feeds the executor on AWS (see ``workpools.mappings``); made
    before the record, so a pool or queue the API lists is one that runs."""

    mappings = ExecutorMappings(settings)
    if mappings.function_arn is not None:
        try:
            mappings.ensure(sqs.queue_arn(queue_url))
        except MappingError as exc:  # Lambda refused: say so, write no record
            raise UpstreamRefused(str(exc)) from exc


def create_work_pool(store: Store, request: WorkPoolCreate, settings: Settings | None = None) -> WorkPool:
    """The pool record, its dead-letter queue and its ``default`` work queue (an SQS queue each).

    The SQS queues are made first (create_queue is idempotent), so a record never names a queue
    that does not exist; a refused duplicate leaves the existing pool's queues as they were."""

    try:
        read_work_pool(store, request.name)
        raise Conflict(f"work pool {request.name!r} already exists", name=request.name)
    except ObjectNotFound:
        pass
    settings = settings_or_default(settings)
    sqs = SqsQueues(settings)
    queue_url = sqs.ensure_queue(request.name, DEFAULT_QUEUE)
    dlq_url, _ = sqs.ensure_dlq(request.name)
    if request.type == WorkPoolType.LAMBDA:
        _map_to_executor(settings, sqs, queue_url)
    pool = WorkPool(name=request.name, type=request.type, description=request.description,
                    concurrency_limit=request.concurrency_limit, queue_url=queue_url, dlq_url=dlq_url)
    try:
        store.put_object(ObjectKind.WORK_POOL, pool.name, pool.model_dump(mode="json"), must_not_exist=True)
    except ObjectAlreadyExists:
        raise Conflict(f"work pool {pool.name!r} already exists", name=pool.name) from None
    default = WorkQueue(name=DEFAULT_QUEUE, work_pool_name=pool.name, priority=1, queue_url=queue_url)
    with contextlib.suppress(ObjectAlreadyExists):
        store.put_object(ObjectKind.WORK_QUEUE, f"{pool.name}/{DEFAULT_QUEUE}", default.model_dump(mode="json"),
                         must_not_exist=True)
    return pool


def read_work_pool(store: Store, name: str) -> WorkPool:
    return WorkPool.model_validate(store.get_object(ObjectKind.WORK_POOL, name).doc)


def list_work_pools(store: Store) -> list[WorkPool]:
    return [WorkPool.model_validate(o.doc) for o in all_records(store, ObjectKind.WORK_POOL)]


def set_work_pool_paused(store: Store, name: str, paused: bool) -> WorkPool:
    return write_record(
        store, ObjectKind.WORK_POOL, name, WorkPool, "work pool", create=None,
        update=lambda pool, _version: None if pool.paused == paused else pool.model_copy(update={"paused": paused}),
    )[0]


def create_work_queue(store: Store, pool_name: str, request: WorkQueueCreate,
                      settings: Settings | None = None) -> WorkQueue:

    pool = read_work_pool(store, pool_name)
    try:
        read_work_queue(store, pool_name, request.name)
        raise Conflict(f"work queue {request.name!r} already exists in pool {pool_name!r}", name=request.name)
    except ObjectNotFound:
        pass
    settings = settings_or_default(settings)
    sqs = SqsQueues(settings)
    queue_url = sqs.ensure_queue(pool_name, request.name)
    if pool.type == WorkPoolType.LAMBDA:
        _map_to_executor(settings, sqs, queue_url)
    queue = WorkQueue(name=request.name, work_pool_name=pool_name, priority=request.priority,
                      concurrency_limit=request.concurrency_limit, queue_url=queue_url)
    try:
        store.put_object(ObjectKind.WORK_QUEUE, f"{pool_name}/{queue.name}", queue.model_dump(mode="json"),
                         must_not_exist=True)
    except ObjectAlreadyExists:
        raise Conflict(f"work queue {queue.name!r} already exists in pool {pool_name!r}", name=queue.name) from None
    return queue


def set_work_queue_paused(store: Store, pool_name: str, name: str, paused: bool) -> WorkQueue:
    """A paused queue's messages wait in SQS (executors and workers leave them there)."""
    read_work_queue(store, pool_name, name)
    return write_record(
        store, ObjectKind.WORK_QUEUE, f"{pool_name}/{name}", WorkQueue, "work queue", create=None,
        update=lambda queue, _version: None if queue.paused == paused else queue.model_copy(update={"paused": paused}),
    )[0]


def work_pool_status(store: Store, name: str, settings: Settings | None = None) -> dict[str, Any]:
    """The pool and each of its queues with its SQS depth (approximate, as SQS reports it)."""

    pool = read_work_pool(store, name)
    sqs = SqsQueues(settings_or_default(settings))
    queues = []
    for queue in list_work_queues(store, name):
        depth = sqs.depth(queue.queue_url) if queue.queue_url else {}
        queues.append({**queue.model_dump(mode="json"), **depth})
    dead = sqs.depth(pool.dlq_url)["messages_visible"] if pool.dlq_url else 0
    return {"pool": pool.model_dump(mode="json"), "queues": queues, "dead_letter_messages": dead}


def read_work_queue(store: Store, pool_name: str, name: str) -> WorkQueue:
    try:
        return WorkQueue.model_validate(store.get_object(ObjectKind.WORK_QUEUE, f"{pool_name}/{name}").doc)
    except ObjectNotFound:
        raise ObjectNotFound("work queue", f"{pool_name}/{name}") from None


def list_work_queues(store: Store, pool_name: str) -> list[WorkQueue]:
    read_work_pool(store, pool_name)
    stored = all_records(store, ObjectKind.WORK_QUEUE, prefix=f"{pool_name}/")
    queues = [WorkQueue.model_validate(o.doc) for o in stored]
    return sorted(queues, key=lambda q: (q.priority, q.name))
