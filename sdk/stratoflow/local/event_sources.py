"""What Lambda's SQS event source mapping does, for the local cloud: poll queues, invoke the
function with an SQS event, delete what succeeded, leave the rest to SQS.

Consumers poll the queues of every `lambda` work pool (a paused pool or queue is skipped: its
messages wait) in priority order, up to ``concurrency`` invocations at once. A record listed in
the function's ``batchItemFailures`` (or every record, when the invocation fails or times out)
is not deleted, so SQS hands it out again after its visibility timeout, as on AWS.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from stratoflow.control import work_pools
from stratoflow.models import WorkPoolType
from stratoflow.workpools.sqs import QueueTarget, ReceivedMessage, SqsQueues

if TYPE_CHECKING:
    from stratoflow.local.lambda_runtime import InvocationResult


def sqs_event(messages: Sequence[ReceivedMessage], region: str) -> dict[str, Any]:
    """The event Lambda builds for a batch of SQS messages."""
    return {"Records": [{
        "messageId": m.message_id,
        "receiptHandle": m.receipt_handle,
        "body": m.body,
        "attributes": m.attributes,
        "messageAttributes": {},
        "md5OfBody": m.md5_of_body,
        "eventSource": "aws:sqs",
        "eventSourceARN": m.target.arn,
        "awsRegion": region,
    } for m in messages]}


def failed_ids(result: InvocationResult, messages: Sequence[ReceivedMessage]) -> set[str]:
    """Message ids to leave in the queue: the partial batch response's, or all on an error."""
    if result.error is not None or result.timed_out or result.abandoned or not isinstance(result.payload, dict):
        return {m.message_id for m in messages}
    failures = result.payload.get("batchItemFailures") or []
    return {str(f.get("itemIdentifier")) for f in failures if isinstance(f, dict)}


def lambda_pool_targets(store_factory: Callable[[], Any], queues: SqsQueues) -> list[QueueTarget]:
    """Queues of unpaused `lambda` pools, unpaused, with their priorities."""

    store = store_factory()
    targets: list[QueueTarget] = []
    for pool in work_pools.list_work_pools(store):
        if pool.type != WorkPoolType.LAMBDA or pool.paused:
            continue
        for queue in work_pools.list_work_queues(store, pool.name):
            if queue.paused or not queue.queue_url:
                continue
            targets.append(QueueTarget(queue.queue_url, queues.arn_of(queue.queue_url), pool.name, queue.name,
                                       queue.priority))
    return targets


class SqsEventSource:
    """Feeds a ``LocalFunction`` from SQS queues, like an event source mapping with batch size
    ``batch_size`` and maximum concurrency ``concurrency``."""

    def __init__(self, invoke: Callable[[dict[str, Any]], InvocationResult], queues: SqsQueues,
                 targets: Callable[[], list[QueueTarget]], *, region: str, batch_size: int = 1,
                 concurrency: int = 2, wait_seconds: int = 1, refresh_seconds: float = 2.0,
                 on_result: Callable[[list[ReceivedMessage], InvocationResult], None] | None = None) -> None:
        self.invoke = invoke
        self.queues = queues
        self.targets = targets
        self.region = region
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.wait_seconds = wait_seconds
        self.refresh_seconds = refresh_seconds
        self.on_result = on_result
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._targets: list[QueueTarget] = []
        self._targets_lock = threading.Lock()
        self._refreshed = 0.0
        self._slots = threading.Condition()
        self._inflight = 0
        self.invocations = 0

    def _current_targets(self) -> list[QueueTarget]:

        with self._targets_lock:
            if time.monotonic() - self._refreshed >= self.refresh_seconds:
                with contextlib.suppress(Exception):  # the store may be starting or stopping
                    self._targets = self.targets()
                self._refreshed = time.monotonic()
            return list(self._targets)

    def _deliver(self, messages: list[ReceivedMessage]) -> None:
        try:
            result = self.invoke(sqs_event(messages, self.region))
            self.invocations += 1
            failed = failed_ids(result, messages)
            for message in messages:
                if message.message_id not in failed:
                    self.queues.delete(message.target.url, message.receipt_handle)
            if self.on_result is not None:
                self.on_result(messages, result)
        finally:
            with self._slots:
                self._inflight -= 1
                self._slots.notify_all()

    def _loop(self) -> None:
        """One poller; invocations run in up to ``concurrency`` threads (an event source mapping's
        maximum concurrency). It long-polls only while nothing is running."""

        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="sqs-event-source") as pool:
            while not self._stop.is_set():
                with self._slots:
                    while self._inflight >= self.concurrency and not self._stop.is_set():
                        self._slots.wait(0.2)
                    free = self.concurrency - self._inflight
                    busy = self._inflight > 0
                if self._stop.is_set():
                    break
                try:
                    targets = self._current_targets()
                    if not targets:
                        self._stop.wait(0.2)
                        continue
                    messages = self.queues.receive_by_priority(
                        targets, min(free * self.batch_size, 10), 0 if busy else self.wait_seconds)
                except Exception:
                    self._stop.wait(0.5)
                    continue
                if not messages:
                    if busy:
                        self._stop.wait(0.05)
                    continue
                for i in range(0, len(messages), self.batch_size):
                    with self._slots:
                        self._inflight += 1
                    pool.submit(self._deliver, messages[i:i + self.batch_size])

    def start(self) -> SqsEventSource:
        thread = threading.Thread(target=self._loop, name="sqs-event-source", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self, timeout: float = 5.0) -> list[threading.Thread]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        left = [t for t in self._threads if t.is_alive()]
        self._threads = []
        return left
