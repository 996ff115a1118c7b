"""Sending due flow runs to their work queue's SQS queue.

A run due within SQS's 15-minute delay limit is sent at once with a delay; a run due later is
left in the store and sent by ``dispatch_due_runs`` (the janitor's sweep, and the local stack's
loop) once it comes within that window, so no delay is ever cut short. Each (run, scheduled
time) is sent once: a marker records the send. A duplicate send in a race is harmless: the
executor's claim is a conditional write, so one delivery runs the flow and the rest are dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from stratoflow.control.work_pools import read_work_queue
from stratoflow.exceptions import ObjectNotFound
from stratoflow.models import FlowRun, WorkQueue
from stratoflow.states import StateType, now
from stratoflow.storage.base import FlowRunQuery
from stratoflow.workpools.messages import RunMessage
from stratoflow.workpools.naming import DEFAULT_QUEUE
from stratoflow.workpools.sqs import MAX_DELAY_SECONDS, SqsQueues

if TYPE_CHECKING:
    from stratoflow.settings import Settings
    from stratoflow.storage.base import Store

DISPATCH = "dispatch"


@dataclass(frozen=True)
class Dispatched:
    """``sent`` says whether a message went out now; ``reason`` why not otherwise."""

    sent: bool
    reason: str
    delay_seconds: int = 0
    message_id: str | None = None


def _scheduled_time(run: FlowRun) -> datetime:
    if run.state is not None and run.state.state_details.scheduled_time is not None:
        return run.state.state_details.scheduled_time
    return now()


def _marker_key(run: FlowRun, when: datetime) -> str:
    return f"{run.id}/{when.isoformat()}"


def work_queue_of(store: Store, run: FlowRun) -> WorkQueue:
    assert run.work_pool_name is not None
    return read_work_queue(store, run.work_pool_name, run.work_queue_name or DEFAULT_QUEUE)


def dispatch_run(store: Store, settings: Settings, run: FlowRun, *, at: datetime | None = None,
                 queues: SqsQueues | None = None, force: bool = False, fresh: bool = False) -> Dispatched:
    """Send ``run`` to its work queue if it is Scheduled and due within 15 minutes.

    ``force`` sends even when this (run, time) was sent before: the executor uses it to hand a
    run out again after a not-due delivery. ``fresh`` says the caller has just created the run,
    so no marker can exist yet: it saves the read.
    """
    if run.work_pool_name is None:
        return Dispatched(False, "the run has no work pool (it runs where it is called)")
    if run.state is None or run.state.type != StateType.SCHEDULED:
        return Dispatched(False, f"the run is {run.state!r}, not Scheduled")
    when = _scheduled_time(run)
    delay = max(0.0, (when - (at or now())).total_seconds())
    if delay > MAX_DELAY_SECONDS:
        return Dispatched(False, "due later than SQS's 15-minute delay: sent when it comes due", math.ceil(delay))
    key = _marker_key(run, when)
    if not (force or fresh):
        try:
            store.get_object(DISPATCH, key)
            return Dispatched(False, "already sent")
        except ObjectNotFound:
            pass
    queue = work_queue_of(store, run)
    if queue.queue_url is None:
        return Dispatched(False, f"work queue {queue.work_pool_name}/{queue.name} has no SQS queue")
    message = RunMessage(flow_run_id=run.id, deployment_id=run.deployment_id, work_pool_name=queue.work_pool_name,
                         work_queue_name=queue.name, scheduled_time=when)
    message_id = (queues or SqsQueues(settings)).send(queue.queue_url, message, math.ceil(delay))
    # Written after the send: a crash in between means one more send by the sweep, never none.
    store.put_object(DISPATCH, key, {"message_id": message_id, "queue_url": queue.queue_url,
                                     "sent_at": now().isoformat()})
    return Dispatched(True, "sent", math.ceil(delay), message_id)


# Runs that entered their Scheduled state this recently are left to whoever wrote that state
# (the API, an executor handing a retry out again): it sends them itself, and a sweep racing it
# would only send a duplicate.
SWEEP_GRACE = timedelta(seconds=10)


def dispatch_due_runs(store: Store, settings: Settings, *, at: datetime | None = None,
                      limit: int = 1000) -> int:
    """Send every Scheduled run of a work pool that is due within the next 15 minutes and was
    not sent yet; returns how many were sent. What the janitor runs every minute."""
    at = at or now()
    queues = SqsQueues(settings)
    sent = 0
    cursor: str | None = None
    seen = 0
    while seen < limit:
        runs, cursor = store.page_flow_runs(FlowRunQuery(
            state_types=(StateType.SCHEDULED,), scheduled_before=at + timedelta(seconds=MAX_DELAY_SECONDS),
            limit=min(200, limit - seen), cursor=cursor))
        seen += len(runs)
        for run in runs:
            if run.work_pool_name is None or (run.state is not None and run.state.timestamp > at - SWEEP_GRACE):
                continue
            try:
                if dispatch_run(store, settings, run, at=at, queues=queues).sent:
                    sent += 1
            except ObjectNotFound:
                continue  # its pool or queue was deleted: nothing to send it to
        if cursor is None:
            break
    return sent
