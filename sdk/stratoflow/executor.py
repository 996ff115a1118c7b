"""Executing the flow run a work-pool message names: what the executor Lambda and workers call.

One message, one run:

1. parse the message (a malformed one raises ``InvalidMessage``: it is retried, then kept in the
   pool's dead-letter queue for someone to look at, never dropped silently);
2. read the run: finished, claimed or deleted runs are dropped without running anything (a
   duplicate SQS delivery ends here, or at the claim);
3. a paused pool or queue raises ``QueueMessagePaused``: the caller puts the message back;
4. fetch the deployment's package (cached by sha256, verified), import the entrypoint;
5. ``execute_flow_run``: the conditional Scheduled -> Pending claim, then the flow, with a
   heartbeat, stopping before the deadline;
6. a run left Scheduled (not due yet, AwaitingRetry after a failure or a crash) is sent to its
   queue again for its new time.
"""

from __future__ import annotations

import os
import random
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from stratoflow.control import transitions
from stratoflow.control.deployments import read_deployment
from stratoflow.control.dispatch import dispatch_run
from stratoflow.control.work_pools import read_work_pool, read_work_queue
from stratoflow.deployments.packaging import load_entrypoint, materialize_package
from stratoflow.engine.flow_engine import execute_flow_run, request_cancel
from stratoflow.exceptions import ObjectNotFound, StratoflowError
from stratoflow.models import Deployment, FlowRun, ObjectKind, WorkPool, WorkQueue
from stratoflow.orchestration import RunKind
from stratoflow.packages import package_uri_problem
from stratoflow.sandbox.runtime import RunningChild, execute_isolated
from stratoflow.states import AwaitingConcurrencySlot, Crashed, Failed, StateType, now
from stratoflow.storage import slots as concurrency
from stratoflow.workpools.messages import RunMessage

if TYPE_CHECKING:
    from stratoflow.flows import Flow
    from stratoflow.settings import Settings
    from stratoflow.storage.base import Store

# A run finding its concurrency limit full is sent again after 1-2 times this (jittered).
SLOT_RECHECK_SECONDS = 1.0
_flows: dict[tuple[str, str], Flow[..., Any]] = {}
_flows_lock = threading.Lock()


class InvalidMessage(StratoflowError):
    """The message is not a run message; it is left to SQS's redrive (and the dead-letter queue)."""


class QueueMessagePaused(StratoflowError):
    """The run's pool or queue is paused: the message must go back to the queue and wait."""


class Outcome(StrEnum):
    RAN = "ran"              # claimed and executed; the run reached a final state
    REQUEUED = "requeued"    # left Scheduled (retry, not due yet) and sent again for its new time
    DUPLICATE = "duplicate"  # someone else holds or finished the run: nothing ran
    GONE = "gone"            # the run no longer exists
    FAILED = "failed"        # could not start (package, entrypoint, deployment): the run is Failed


@dataclass(frozen=True)
class MessageResult:
    outcome: Outcome
    flow_run_id: str
    state: str | None = None
    detail: str | None = None
    run_again_at: datetime | None = None


class Heartbeat:
    """Reports that a run is alive every ``interval`` seconds while it executes.

    The beat is its own record (``heartbeat``/run id), not a field of the run: it never races
    with the run's state writes. The janitor treats a Running run whose beat stopped as crashed.
    """

    def __init__(self, store: Store, flow_run_id: str, interval: float, executor: str,
                 on_cancel: Callable[[], None] | None = None) -> None:
        self.store = store
        self.on_cancel = on_cancel
        self.flow_run_id = flow_run_id
        self.interval = interval
        self.executor = executor
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{flow_run_id[:8]}", daemon=True)
        self._cancel_sent = False
        self.beats = 0

    def beat(self) -> None:
        self.store.put_object(ObjectKind.HEARTBEAT, self.flow_run_id,
                              {"at": now().isoformat(), "executor": self.executor})
        self.beats += 1
        self._check_cancelled()

    def _check_cancelled(self) -> None:
        """A run cancelled while it executes is Cancelling: stop its flow body here."""
        if self._cancel_sent:
            return
        run = self.store.read_run(RunKind.FLOW, self.flow_run_id)
        if run.state is not None and run.state.type == StateType.CANCELLING:
            if self.on_cancel is not None:
                self.on_cancel()
            else:

                request_cancel(self.flow_run_id)
            self._cancel_sent = True

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception:  # nosec B112  # a missed beat is not worth killing the run; the next one retries
                continue

    def __enter__(self) -> Heartbeat:
        self.store.put_object(ObjectKind.HEARTBEAT, self.flow_run_id,
                              {"at": now().isoformat(), "executor": self.executor})
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def executor_identity_of(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}"


def executor_identity() -> str:
    """Who runs the flow: the Lambda environment's log stream, or host:pid."""
    return os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME") or executor_identity_of(os.getpid())


def parse_message(body: str) -> RunMessage:
    try:
        return RunMessage.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise InvalidMessage(f"not a run message: {where}: {first.get('msg')}") from None


def package_root(store: Store, settings: Settings, deployment: Deployment) -> Path:
    """The deployment's package, downloaded (only from this stack's bucket), verified and extracted
    in the package cache: where its flow code is imported from."""

    if not deployment.entrypoint:
        raise StratoflowError(f"deployment {deployment.flow_name}/{deployment.name} has no entrypoint")
    if not deployment.package_uri or not deployment.package_sha256:
        raise StratoflowError(f"deployment {deployment.flow_name}/{deployment.name} has no package: deploy it "
                              "with `stratoflow deploy` (or give package_uri and package_sha256)")
    problem = package_uri_problem(deployment.package_uri, deployment.package_sha256, settings.bucket)
    if problem is not None:
        raise StratoflowError(f"deployment {deployment.flow_name}/{deployment.name}: {problem}; refusing to "
                              "download it (deploy it again)")
    return materialize_package(deployment.package_uri, deployment.package_sha256, get_blob=store.get_blob,
                               cache_root=settings.package_cache_dir)


def load_flow(store: Store, settings: Settings, deployment: Deployment) -> Flow[..., Any]:
    """The deployment's flow, imported in this process from its package (``package_root``) and
    kept in memory here: only with ``flow_isolation`` "none" (flow code runs with the runtime)."""

    root = package_root(store, settings, deployment)
    assert deployment.package_sha256 is not None and deployment.entrypoint is not None
    key = (deployment.package_sha256, deployment.entrypoint)
    with _flows_lock:
        cached = _flows.get(key)
    if cached is not None:
        return cached
    flow = load_entrypoint(root, deployment.entrypoint)
    with _flows_lock:
        _flows[key] = flow
    return flow


def _pool_and_queue(store: Store, pool_name: str | None,
                    queue_name: str | None) -> tuple[WorkPool, WorkQueue] | None:
    """The run's work pool and queue records (None if it has none, or they were deleted): read
    once per message, for the pause check and the concurrency limits."""

    if not pool_name:
        return None
    try:
        return read_work_pool(store, pool_name), read_work_queue(store, pool_name, queue_name or "default")
    except ObjectNotFound:
        return None


def _paused(records: tuple[WorkPool, WorkQueue] | None) -> str | None:
    if records is None:
        return None
    pool, queue = records
    if pool.paused:
        return f"work pool {pool.name!r} is paused"
    if queue.paused:
        return f"work queue {pool.name}/{queue.name} is paused"
    return None


def flow_run_limits(store: Store, run: FlowRun, deployment: Deployment,
                    records: tuple[WorkPool, WorkQueue] | None = None) -> list[concurrency.Limit]:
    """The concurrency limits a run of ``deployment`` takes a slot of: its deployment's, its work
    queue's and its work pool's, where set. ``records``: the pool and queue, if already read."""
    limits = []
    if deployment.concurrency_limit is not None:
        limits.append(concurrency.deployment_limit(deployment.id, deployment.concurrency_limit))
    records = records or _pool_and_queue(store, run.work_pool_name, run.work_queue_name)
    if records is not None:
        pool, queue = records
        if queue.concurrency_limit is not None:
            limits.append(concurrency.queue_limit(pool.name, queue.name, queue.concurrency_limit))
        if pool.concurrency_limit is not None:
            limits.append(concurrency.pool_limit(pool.name, pool.concurrency_limit))
    return limits


def _execute_isolated(store: Store, settings: Settings, run: FlowRun, deployment: Deployment, root: Path,
                      deadline: float | None) -> MessageResult:
    """Run the flow in a sandboxed process (``stratoflow.sandbox``) and decide from the stored run,
    as this runtime reads it, what became of it: the child's own account is only a message."""

    children: list[RunningChild] = []

    def cancel() -> None:
        for child in children:
            child.cancel()

    assert deployment.entrypoint is not None
    with Heartbeat(store, run.id, settings.heartbeat_interval, executor_identity(), on_cancel=cancel):
        outcome = execute_isolated(store, settings, run, root=root, entrypoint=deployment.entrypoint,
                                   deadline_seconds=deadline, inline_retry_max=settings.inline_retry_max,
                                   on_start=children.append)
    after = store.read_run(RunKind.FLOW, run.id)
    assert isinstance(after, FlowRun)
    if outcome.load_error is not None:
        return _could_not_load(store, after, outcome.load_error)
    if not outcome.claimed:
        if outcome.run_again_at is not None and after.state is not None and after.state.type == StateType.SCHEDULED:
            dispatch_run(store, settings, after, force=True)
            return MessageResult(Outcome.REQUEUED, run.id, after.state_name, outcome.reason, outcome.run_again_at)
        return MessageResult(Outcome.DUPLICATE, run.id, after.state_name, outcome.reason)
    if after.state is not None and after.state.type in (StateType.PENDING, StateType.RUNNING):
        # The child claimed the run and ended without finishing it (killed, or it exited).
        how = "was killed past its deadline" if outcome.killed else f"ended with exit code {outcome.exit_code}"
        _, after = transitions.propose(store, RunKind.FLOW, after, Crashed(
            message=f"the flow's process {how} before the run finished"))
        assert isinstance(after, FlowRun)
    state = after.state
    if state is not None and state.type == StateType.SCHEDULED:
        dispatch_run(store, settings, after, force=True)
        return MessageResult(Outcome.REQUEUED, run.id, after.state_name, state.message,
                             state.state_details.scheduled_time)
    return MessageResult(Outcome.RAN, run.id, after.state_name, outcome.reason or (state.message if state else None))


def _wait_for_slot(store: Store, settings: Settings, run: FlowRun, full: concurrency.Limit) -> MessageResult:
    """The limit is full: the run waits as AwaitingConcurrencySlot and is sent again shortly."""

    when = now() + timedelta(seconds=SLOT_RECHECK_SECONDS * (1 + random.random()))  # nosec B311  # jitter of a recheck time, nothing secret
    result, after = transitions.propose(store, RunKind.FLOW, run, AwaitingConcurrencySlot(
        scheduled_time=when, message=f"the concurrency limit {full.label} ({full.size}) is full"))
    assert isinstance(after, FlowRun)
    if after.state is not None and after.state.type == StateType.SCHEDULED:
        dispatch_run(store, settings, after, force=True)
        return MessageResult(Outcome.REQUEUED, run.id, after.state_name, after.state.message, when)
    return MessageResult(Outcome.DUPLICATE, run.id, after.state_name, result.reason)


def handle_message(
    body: str,
    *,
    store: Store,
    settings: Settings,
    remaining_seconds: Callable[[], float] | None = None,
) -> MessageResult:
    """Execute the run ``body`` names (see the module docstring). ``remaining_seconds`` is the
    time left before the caller is stopped (Lambda's remaining time); None runs without a deadline."""
    message = parse_message(body)
    try:
        run = store.read_run(RunKind.FLOW, message.flow_run_id)
    except ObjectNotFound:
        return MessageResult(Outcome.GONE, message.flow_run_id, detail="the flow run was deleted")
    assert isinstance(run, FlowRun)
    if run.state is None or run.state.type != StateType.SCHEDULED:
        return MessageResult(Outcome.DUPLICATE, run.id, run.state_name, f"the run is {run.state!r}: nothing to do")
    records = _pool_and_queue(store, message.work_pool_name, message.work_queue_name)
    reason = _paused(records)
    if reason is not None:
        raise QueueMessagePaused(reason)
    try:
        deployment, code = _code_of(store, settings, run)
    except Exception as exc:
        return _could_not_load(store, run, f"{type(exc).__name__}: {exc}")
    if (run.work_pool_name, run.work_queue_name or "default") != (message.work_pool_name, message.work_queue_name):
        records = None  # the run was moved since the message was sent: its own records count
    limits = flow_run_limits(store, run, deployment, records)
    full = concurrency.acquire_all(store, limits, run.id)
    if full is not None:
        return _wait_for_slot(store, settings, run, full)
    deadline = None
    if remaining_seconds is not None:
        deadline = max(remaining_seconds() - settings.executor_deadline_margin, 0.0)
    try:
        if isinstance(code, Path):
            return _execute_isolated(store, settings, run, deployment, code, deadline)
        return _execute_in_process(store, settings, run, code, deadline)
    finally:
        concurrency.release_all(store, limits, run.id)


def _code_of(store: Store, settings: Settings, run: FlowRun) -> tuple[Deployment, Path | Flow[..., Any]]:
    """The run's deployment and its code: the package's directory when flows run sandboxed (their
    code is imported in their own process only, never here), else the flow imported here."""

    if run.deployment_id is None:
        raise StratoflowError("the run has no deployment: nothing says which code to run")
    deployment = read_deployment(store, run.deployment_id)
    if settings.flow_isolation == "process":
        return deployment, package_root(store, settings, deployment)
    return deployment, load_flow(store, settings, deployment)


def _could_not_load(store: Store, run: FlowRun, why: str) -> MessageResult:
    """The flow's code could not be fetched or imported. One delivery records the failure
    (conditional from Scheduled); duplicates see it done."""
    result, after = transitions.propose(store, RunKind.FLOW, run, Failed(message=f"could not load the flow: {why}"))
    failed = result.state is not None and result.state.type == StateType.FAILED
    return MessageResult(Outcome.FAILED if failed else Outcome.DUPLICATE, run.id, after.state_name, why)


def _execute_in_process(store: Store, settings: Settings, run: FlowRun, flow: Flow[..., Any],
                        deadline: float | None) -> MessageResult:
    """``flow_isolation`` "none": the flow runs here, with the runtime's rights."""

    with Heartbeat(store, run.id, settings.heartbeat_interval, executor_identity()):
        execution = execute_flow_run(flow, run, store=store, settings=settings, deadline_seconds=deadline,
                                     inline_retry_max=settings.inline_retry_max)
    state_name = execution.state.name if execution.state is not None else None
    if execution.run_again_at is not None and execution.run.state is not None \
            and execution.run.state.type == StateType.SCHEDULED:
        dispatch_run(store, settings, execution.run, force=True)
        return MessageResult(Outcome.REQUEUED, run.id, state_name, execution.reason, execution.run_again_at)
    if not execution.claimed:
        return MessageResult(Outcome.DUPLICATE, run.id, state_name, execution.reason)
    return MessageResult(Outcome.RAN, run.id, state_name, execution.reason)
