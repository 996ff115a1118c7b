"""``stratoflow worker``: a long-running process that executes the runs of a `process` work pool.

For flows that outlive Lambda's 15 minutes. It long-polls the pool's SQS queues (highest
priority first), runs each flow run in a child process (so a cancelled or stuck run can be
killed without the worker), keeps the message invisible while the child runs, and deletes it
when the child is done. At most ``limit`` runs at once.

SIGTERM/SIGINT: stop taking work, give running children ``grace_seconds`` to finish, then stop
them and *release* their runs: the run goes back to Scheduled (forced, with a message saying
so) and its message becomes visible at once, so another worker takes it over. Nothing is lost,
and nothing runs twice at the same time: the run's claim is a conditional write.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from stratoflow.control import transitions, work_pools
from stratoflow.exceptions import ObjectNotFound, StratoflowError
from stratoflow.executor import QueueMessagePaused, executor_identity_of, handle_message
from stratoflow.models import FlowRun, ObjectKind, WorkPoolType
from stratoflow.orchestration import RunKind
from stratoflow.sandbox.runner import harden
from stratoflow.settings import Settings, get_settings
from stratoflow.states import Cancelled, Scheduled, StateType
from stratoflow.storage import get_server_store
from stratoflow.workpools.messages import RunMessage
from stratoflow.workpools.sqs import QueueTarget, ReceivedMessage, SqsQueues

logger = logging.getLogger("stratoflow.worker")
# The message stays invisible this long and is extended while its run goes on.
VISIBILITY_SECONDS = 120
# A cancelled run's child gets this long to stop by itself before the worker kills it.
CANCEL_GRACE = 10.0


@dataclass
class _Job:
    message: ReceivedMessage
    flow_run_id: str
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)
    extended: float = field(default_factory=time.monotonic)
    checked: float = 0.0
    cancel_seen: float | None = None


class Worker:
    def __init__(self, pool: str, *, queues: Sequence[str] = (), limit: int = 4, grace_seconds: float = 30.0,
                 wait_seconds: int = 10, settings: Settings | None = None, python: str | None = None) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.pool = pool
        self.queue_names = list(queues)
        self.limit = limit
        self.grace_seconds = grace_seconds
        self.wait_seconds = wait_seconds
        self.settings = settings or get_settings()
        self.python = python or sys.executable
        self.sqs = SqsQueues(self.settings)
        self.jobs: dict[str, _Job] = {}
        self.finished: list[tuple[str, int]] = []  # (flow run id, child exit code)
        self.released: list[str] = []
        self._stopping = threading.Event()

    # -- queues ---------------------------------------------------------------------------------
    def targets(self) -> list[QueueTarget]:
        """The pool's unpaused queues (or the named ones), by priority; none while the pool is paused."""

        store = get_server_store()
        pool = work_pools.read_work_pool(store, self.pool)
        if pool.paused:
            return []
        queues = work_pools.list_work_queues(store, self.pool)
        if self.queue_names:
            unknown = set(self.queue_names) - {q.name for q in queues}
            if unknown:
                raise StratoflowError(f"work pool {self.pool!r} has no queue {sorted(unknown)[0]!r}")
            queues = [q for q in queues if q.name in self.queue_names]
        return [QueueTarget(q.queue_url, self.sqs.arn_of(q.queue_url), self.pool, q.name, q.priority)
                for q in queues if q.queue_url and not q.paused]

    def check_pool(self) -> None:

        pool = work_pools.read_work_pool(get_server_store(), self.pool)
        if pool.type != WorkPoolType.PROCESS:
            logger.warning("work pool %r is a %r pool: its runs are meant for the executor function",
                           self.pool, pool.type.value)

    # -- running --------------------------------------------------------------------------------
    def _spawn(self, message: ReceivedMessage) -> None:
        try:
            run_id = RunMessage.model_validate_json(message.body).flow_run_id
        except ValueError:
            run_id = "?"
        env = dict(os.environ)
        process = subprocess.Popen([self.python, "-m", "stratoflow.worker", "--child"], env=env,  # nosec B603  # argv list, no shell: this interpreter running stratoflow's own worker child
                                   stdin=subprocess.PIPE)
        assert process.stdin is not None
        process.stdin.write(message.body.encode())
        process.stdin.close()
        self.sqs.change_visibility(message.target.url, message.receipt_handle, VISIBILITY_SECONDS)
        self.jobs[message.message_id] = _Job(message, run_id, process)
        logger.info("started flow run %s (queue %s, pid %d)", run_id, message.target.queue, process.pid)

    def _reap(self) -> None:
        for key, job in list(self.jobs.items()):
            code = job.process.poll()
            if code is None:
                self._enforce_cancel(job)
                if time.monotonic() - job.extended > VISIBILITY_SECONDS / 3:
                    self.sqs.change_visibility(job.message.target.url, job.message.receipt_handle,
                                               VISIBILITY_SECONDS)
                    job.extended = time.monotonic()
                continue
            del self.jobs[key]
            self.finished.append((job.flow_run_id, code))
            if code == 0:
                self.sqs.delete(job.message.target.url, job.message.receipt_handle)
            elif code == CHILD_PAUSED:
                # The pool or queue was paused after the message was taken: back in the queue.
                self.sqs.change_visibility(job.message.target.url, job.message.receipt_handle, 30)
            else:
                logger.error("flow run %s: child exited with %d; the message returns to the queue",
                             job.flow_run_id, code)
                self.sqs.change_visibility(job.message.target.url, job.message.receipt_handle, 0)

    def _enforce_cancel(self, job: _Job) -> None:
        """A cancelled run whose child did not stop by itself (its flow is stuck in a blocking
        call) is killed after ``CANCEL_GRACE`` seconds and recorded Cancelled."""

        if time.monotonic() - job.checked < 2.0:
            return
        job.checked = time.monotonic()
        store = get_server_store()
        try:
            run = store.read_run(RunKind.FLOW, job.flow_run_id)
        except ObjectNotFound:
            return
        if run.state is None or run.state.type != StateType.CANCELLING:
            return
        if job.cancel_seen is None:
            job.cancel_seen = time.monotonic()
            return
        if time.monotonic() - job.cancel_seen < CANCEL_GRACE:
            return
        job.process.kill()
        job.process.wait()
        assert isinstance(run, FlowRun)
        transitions.propose(store, RunKind.FLOW, run, Cancelled(
            message="the worker killed the flow run's process after it was cancelled"))
        logger.warning("killed flow run %s after its cancellation", job.flow_run_id)

    def run_once(self, wait_seconds: int | None = None) -> int:
        """Reap finished children and take up to the free slots in new messages; returns how many."""
        self._reap()
        free = self.limit - len(self.jobs)
        if free <= 0 or self._stopping.is_set():
            return 0
        targets = self.targets()
        if not targets:
            return 0
        wait = self.wait_seconds if wait_seconds is None else wait_seconds
        messages = self.sqs.receive_by_priority(targets, free, wait if not self.jobs else min(wait, 1))
        for message in messages:
            self._spawn(message)
        return len(messages)

    def stop(self) -> None:
        self._stopping.set()

    def serve(self) -> None:
        """Poll until ``stop()`` (or SIGTERM/SIGINT), then finish or release the runs in hand."""
        self.check_pool()
        while not self._stopping.is_set():
            try:
                taken = self.run_once()
            except StratoflowError:
                raise
            except Exception as exc:  # the API or SQS hiccupped: wait and poll again
                logger.warning("polling failed: %s", exc)
                taken = 0
            if not taken:
                self._stopping.wait(0.2)
        self.shutdown()

    def shutdown(self) -> None:
        deadline = time.monotonic() + self.grace_seconds
        while self.jobs and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.1)
        self._reap()
        for job in list(self.jobs.values()):
            self.release(job)
        self.jobs.clear()

    def release(self, job: _Job) -> None:
        """Stop the child and hand its run back: Scheduled (forced) and its message visible again.

        Only a run this child holds (its heartbeat names the child) is forced back; a child that
        had not claimed its run yet just returns the message, and one whose run is held by
        someone else (a duplicate delivery) or finished drops it."""

        job.process.terminate()
        try:
            job.process.wait(10)
        except subprocess.TimeoutExpired:
            job.process.kill()
            job.process.wait()
        store = get_server_store()
        url, receipt = job.message.target.url, job.message.receipt_handle
        try:
            run = store.read_run(RunKind.FLOW, job.flow_run_id)
        except ObjectNotFound:
            self.sqs.delete(url, receipt)
            return
        assert isinstance(run, FlowRun)
        if run.state is None or run.state.type == StateType.SCHEDULED:
            self.sqs.change_visibility(url, receipt, 0)
            return
        if run.state.is_final():
            self.sqs.delete(url, receipt)
            return
        try:
            holder = store.get_object(ObjectKind.HEARTBEAT, run.id).doc.get("executor")
        except ObjectNotFound:
            holder = None
        if holder != executor_identity_of(job.process.pid):
            self.sqs.delete(url, receipt)  # a duplicate: the run is someone else's
            return
        transitions.propose(store, RunKind.FLOW, run, Scheduled(
            message="released by a worker that shut down; it runs again from the start"), force=True)
        self.sqs.change_visibility(url, receipt, 0)
        self.released.append(job.flow_run_id)
        logger.warning("released flow run %s at shutdown", job.flow_run_id)


CHILD_PAUSED = 75  # EX_TEMPFAIL: try again later


def child_main() -> int:
    """Run the one message read from stdin (the worker's child process)."""

    harden()  # the flow runs in a sandboxed child: it may not read this runtime's memory or environment
    body = sys.stdin.read()
    try:
        result = handle_message(body, store=get_server_store(), settings=get_settings())
    except QueueMessagePaused:
        return CHILD_PAUSED
    print(f"flow run {result.flow_run_id}: {result.outcome.value} ({result.state})", file=sys.stderr)
    return 0


def install_signal_handlers(worker: Worker) -> None:
    def on_signal(signum: int, frame: Any) -> None:
        logger.warning("received %s: finishing or releasing %d run(s)", signal.Signals(signum).name,
                       len(worker.jobs))
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        sys.exit(child_main())
    sys.exit("usage: stratoflow worker --pool POOL (python -m stratoflow.worker is the worker's child)")
