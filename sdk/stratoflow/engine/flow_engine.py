"""The engine that runs one flow run (``FlowRunEngine``), and the two ways a run starts.

``run_flow`` is a call of a flow (or a subflow): it creates the run. ``execute_flow_run`` is an
executor or worker handed an existing Scheduled run: it claims it. A flow run is then Running
(a created one has its Pending and Running states in the creating write), ends with one
conditional write of its final state, and in between its tasks record themselves. Retries
re-run the flow body after the AwaitingRetry delay the policy chose.
"""

from __future__ import annotations

import ctypes
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from pydantic_core import to_jsonable_python

from stratoflow._timeouts import timeout_scope
from stratoflow.context import FlowRunContext, current_tags, flow_run_ctx
from stratoflow.control import transitions
from stratoflow.engine.task_engine import TaskRunRecorder
from stratoflow.exceptions import FlowRunTimeout, ParameterValidationError
from stratoflow.futures import StratoflowFuture
from stratoflow.logs import RunLogger, get_log_buffer, install_print_hook, print_to_log, run_logger
from stratoflow.models import Flow as FlowRecord
from stratoflow.models import FlowRun, RetryPolicy, TaskRun, new_id
from stratoflow.names import generate_run_name
from stratoflow.orchestration import OrchestrationResult, ResponseStatus, RunKind
from stratoflow.pause import FlowRunSuspended
from stratoflow.settings import Settings, get_settings
from stratoflow.states import (
    Cancelled,
    Completed,
    Crashed,
    Failed,
    Pending,
    Retrying,
    Running,
    State,
    StateType,
    TimedOut,
    now,
)
from stratoflow.storage import get_store
from stratoflow.storage import results as _results

if TYPE_CHECKING:
    from stratoflow.flows import Flow
    from stratoflow.storage.base import Store

# The flow records this process has ensured, by (store, flow name): one write per flow, not per run.
_known_flows: dict[tuple[int, str], FlowRecord] = {}
_known_lock = threading.Lock()


class ExecutorDeadline(BaseException):
    """Raised into a flow run when its executor must stop (Lambda's deadline is near).

    A BaseException so user code's ``except Exception`` does not swallow it."""


class FlowRunCancelled(BaseException):
    """Raised into a running flow body when its run was cancelled (``flow-run cancel``).

    A BaseException so user code's ``except Exception`` does not swallow it."""


# -- cancellation -----------------------------------------------------------------------------------
# Flow bodies executing now, by flow run id: the thread to interrupt when the run is cancelled.
_running_bodies: dict[str, int] = {}
_pending_cancels: set[str] = set()
_bodies_lock = threading.Lock()


def request_cancel(flow_run_id: str) -> bool:
    """Stop the flow body of ``flow_run_id`` if it executes in this process: ``FlowRunCancelled``
    is raised in its thread at its next Python instruction (a blocking call finishes first).
    Returns whether a body was interrupted; otherwise the run stops before its next attempt."""
    with _bodies_lock:
        ident = _running_bodies.get(flow_run_id)
        if ident is None:
            _pending_cancels.add(flow_run_id)
            return False
        del _running_bodies[flow_run_id]
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(FlowRunCancelled))
        return True


class _Body:
    """Registers the flow body's thread for ``request_cancel`` while it runs."""

    def __init__(self, flow_run_id: str) -> None:
        self.flow_run_id = flow_run_id

    def __enter__(self) -> None:
        with _bodies_lock:
            if self.flow_run_id in _pending_cancels:
                _pending_cancels.discard(self.flow_run_id)
                raise FlowRunCancelled()
            _running_bodies[self.flow_run_id] = threading.get_ident()

    def __exit__(self, *exc: object) -> None:
        with _bodies_lock:
            _running_bodies.pop(self.flow_run_id, None)


# -- helpers ----------------------------------------------------------------------------------------
def _ensure_flow_record(store: Store, flow: Flow[..., Any]) -> FlowRecord:
    key = (id(store), flow.name)
    with _known_lock:
        known = _known_flows.get(key)
    if known is None:
        known = store.ensure_flow(FlowRecord(name=flow.name, description=flow.description, tags=sorted(flow.tags)))
        with _known_lock:
            _known_flows[key] = known
    return known


def _flow_run_name(flow: Flow[..., Any], parameters: dict[str, Any]) -> str:
    template = flow.flow_run_name
    if template is None:
        return generate_run_name()
    if callable(template):
        return str(template())
    try:
        return template.format(**parameters)
    except (KeyError, IndexError) as exc:
        raise ValueError(f"flow_run_name {template!r} refers to unknown parameter {exc}") from None


def _jsonable_parameters(store: Store, settings: Settings, run_id: str, parameters: dict[str, Any]) -> tuple[
        dict[str, Any], str | None]:
    """The parameters as stored on the run, or (when too large to inline) ``{}`` and the blob holding them."""
    data = to_jsonable_python(parameters, fallback=repr)
    encoded = json.dumps(data).encode()
    if len(encoded) <= settings.parameters_inline_max_bytes:
        return data, None
    uri = store.put_blob(f"parameters/{run_id}.json", encoded)
    return {}, uri


def load_run_parameters(store: Store, run: FlowRun) -> dict[str, Any]:
    if run.parameters_ref:
        return cast(dict[str, Any], json.loads(store.get_blob(run.parameters_ref)))
    return dict(run.parameters)


def _final_state_from_return(value: Any, store: Store, settings: Settings, persist: bool) -> State:
    """Prefect's rules: a returned State is used as is; returned futures/states decide by
    whether any of them failed; anything else is Completed with the value as result."""
    if isinstance(value, State):
        return value
    items: list[Any] | None = None
    if isinstance(value, StratoflowFuture):
        items = [value]
    elif isinstance(value, list | tuple | set) and value and all(
            isinstance(v, StratoflowFuture | State) for v in value):
        items = list(value)
    if items is not None:
        states = [i._inner.result() if isinstance(i, StratoflowFuture) else i for i in items]
        bad = [s for s in states if not s.is_completed()]
        if bad:
            return Failed(message=f"{len(bad)}/{len(states)} states failed.")
        resolved = [s.result() for s in states]
        value = resolved[0] if isinstance(value, StratoflowFuture) else type(value)(resolved)
    state = Completed()
    if persist:
        try:
            state.result_ref = _results.persist_value(store, value, inline_max=settings.result_inline_max_bytes,
                                                      prefix=settings.results_prefix)
        except Exception as exc:
            logging.getLogger("stratoflow.flow_runs").warning(
                "Result of type %s is not persisted (%s: %s); it is available in this process only",
                type(value).__name__, type(exc).__name__, exc)
            state.state_details.untrackable_result = True
    return state.with_data(value)


def _hooks_for(flow: Flow[..., Any], state: State) -> list[Callable[..., None]]:
    if state.is_completed():
        return flow.on_completion_hooks
    if state.type == StateType.FAILED:
        return flow.on_failure_hooks
    if state.type == StateType.CRASHED:
        return flow.on_crashed_hooks
    if state.type == StateType.CANCELLED:
        return flow.on_cancellation_hooks
    return []


def _wait_for_futures(ctx: FlowRunContext) -> None:
    """Let submitted task runs finish before the flow's final state is decided."""
    for fut in list(ctx.futures):
        fut.wait()


# -- the engine -------------------------------------------------------------------------------------
class FlowRunEngine:
    """Drives one Running flow run to its final state (``run``), with retries, hooks and logs; for
    executors, possibly only until the run is left Scheduled for a later attempt.

    Each attempt runs the body once (``call_flow_fn``) and turns its end into the state to propose:
    ``handle_success``, ``handle_exception``, ``handle_timeout``, ``handle_cancellation``,
    ``handle_deadline`` or ``handle_crash``; a body that suspended its run ends the engine at once
    (``handle_suspension``). The policy's answer decides what follows: the end (``end_run``),
    another attempt after the AwaitingRetry delay (``retry``), or the compute released (``release``).
    """

    def __init__(self, flow: Flow[..., Any], run: FlowRun, parameters: dict[str, Any], store: Store,
                 settings: Settings, *, is_subflow: bool, deadline: float | None = None,
                 inline_retry_max: float | None = None) -> None:
        self.flow = flow
        self.run_id = run.id
        self.parameters = parameters
        self.store = store
        self.settings = settings
        self.is_subflow = is_subflow
        self.deadline = deadline  # time.monotonic() by which the executor must stop
        self.inline_retry_max = inline_retry_max  # longer retry delays release the compute (executors)
        self.logger: RunLogger = run_logger(store, flow_run_id=run.id, task_run_id=None,
                                            label=f"Flow run {run.name!r}", kind="flow")
        self.ctx = FlowRunContext(flow=flow, flow_run=run, store=store, settings=settings, parameters=parameters,
                                  log_prints=flow.log_prints)
        self.persist = flow.persist_result if flow.persist_result is not None else settings.persist_results
        # A KeyboardInterrupt / SystemExit: recorded Crashed, then raised again at the end.
        self.interrupted: BaseException | None = None
        # Task threads left behind (cancelled, or at the executor's deadline): not waited for.
        self.abandoned = False

    def run(self) -> State:
        """Attempt until the run's final state (or, for executors, its release) and return it."""
        self.begin_run()
        while True:
            attempt = self.call_flow_fn()
            if attempt is None:
                return self.handle_suspension()
            outcome = self.set_state(attempt).state or attempt
            if self.interrupted is None and outcome.type == StateType.SCHEDULED:
                delay = max(((outcome.state_details.scheduled_time or now()) - now()).total_seconds(), 0.0)
                if self.should_release(delay):
                    return self.release(outcome, attempt, delay)
                self.retry(outcome, attempt, delay)
                continue
            if outcome.type == StateType.CANCELLING:
                outcome = self.set_state(Cancelled(message="flow run was cancelled while it ran")).state or outcome
            return self.end_run(attempt if outcome.id == attempt.id else outcome)

    def begin_run(self) -> None:
        """The run is Running already (created so, or claimed): announce it and capture prints."""
        self.logger.info("Beginning flow run %r for flow %r", self.ctx.flow_run.name, self.flow.name)
        if self.flow.log_prints:
            install_print_hook()

    def set_state(self, state: State) -> OrchestrationResult:
        """Propose ``state`` in one conditional write; the context follows the stored run."""
        result, run = transitions.propose(self.store, RunKind.FLOW, self.ctx.flow_run, state)
        self.ctx.flow_run = cast(FlowRun, run)
        return result

    # -- one attempt -------------------------------------------------------------------------------
    def call_flow_fn(self) -> State | None:
        """Run the body once in the run's context, under its timeout and the executor's deadline;
        the state to propose, or None when the body suspended the run."""
        token = flow_run_ctx.set(self.ctx)
        print_token = print_to_log.set(self.flow.log_prints)
        left = self.deadline - time.monotonic() if self.deadline is not None else None
        try:
            if left is not None and left <= 0:
                raise ExecutorDeadline()
            with _Body(self.run_id), timeout_scope(left, ExecutorDeadline), \
                    timeout_scope(self.flow.timeout_seconds, FlowRunTimeout):
                value = self.flow._call_fn(self.parameters)
            return self.handle_success(value)
        except FlowRunSuspended:
            return None
        except FlowRunCancelled:
            return self.handle_cancellation()
        except ExecutorDeadline:
            return self.handle_deadline()
        except FlowRunTimeout:
            return self.handle_timeout()
        except Exception as exc:
            return self.handle_exception(exc)
        except BaseException as exc:  # KeyboardInterrupt / SystemExit: record, then let it go on
            return self.handle_crash(exc)
        finally:
            print_to_log.reset(print_token)
            flow_run_ctx.reset(token)

    def handle_success(self, value: Any) -> State:
        """The body returned: once its task runs are done, the return value decides the state."""
        _wait_for_futures(self.ctx)
        return _final_state_from_return(value, self.store, self.settings, self.persist)

    def handle_exception(self, exc: Exception) -> State:
        """Failed with the exception as result (called in the ``except`` block: the log has its traceback)."""
        _wait_for_futures(self.ctx)
        self.logger.error("Encountered exception during execution: %s: %s", type(exc).__name__, exc, exc_info=True)
        state = Failed(message=f"Flow run encountered an exception: {type(exc).__name__}: {exc}")
        state.result_ref = _results.persist_exception(self.store, exc, inline_max=self.settings.result_inline_max_bytes,
                                                      prefix=self.settings.results_prefix)
        return state.with_data(exc)

    def handle_timeout(self) -> State:
        """TimedOut: the body outlived the flow's ``timeout_seconds``."""
        _wait_for_futures(self.ctx)
        state = TimedOut(message=f"Flow run exceeded timeout of {self.flow.timeout_seconds} second(s)")
        return state.with_data(TimeoutError(state.message))

    def handle_cancellation(self) -> State:
        """Cancelled while the body ran (``request_cancel``): its task threads are not waited for."""
        self.abandoned = True
        state = Cancelled(message="the flow run was cancelled while it ran")
        self.logger.warning("Cancelled: the run was stopped by a cancellation request")
        return state

    def handle_deadline(self) -> State:
        """Crashed: the executor must stop. Task threads may be stuck: do not wait for them past the deadline."""
        self.abandoned = True
        state = Crashed(message="the executor stopped the flow run before its deadline (the Lambda "
                                "function's timeout): it did not finish in time")
        self.logger.error("Crashed: %s", state.message)
        return state

    def handle_crash(self, exc: BaseException) -> State:
        """Crashed by an interruption (KeyboardInterrupt, SystemExit), which ``end_run`` raises again."""
        self.interrupted = exc
        return Crashed(message=f"Execution was interrupted by {type(exc).__name__}")

    def handle_suspension(self) -> State:
        """Recorded Suspended by suspend_flow_run: release the compute; a resume runs it again."""
        _wait_for_futures(self.ctx)
        self.ctx.shutdown()
        self.logger.info("Suspended: the flow run waits for a resume, then runs again from the start")
        self.flush()
        assert self.ctx.flow_run.state is not None
        return self.ctx.flow_run.state

    # -- after an attempt --------------------------------------------------------------------------
    def should_release(self, delay: float) -> bool:
        """An executor does not sleep through a long retry delay, nor past its deadline."""
        out_of_time = self.deadline is not None and time.monotonic() + delay >= self.deadline
        return self.inline_retry_max is not None and (delay > self.inline_retry_max or out_of_time)

    def release(self, outcome: State, attempt: State, delay: float) -> State:
        """Release the compute: the run waits in AwaitingRetry and is handed out again."""
        self.logger.info("Received non-final state %r when proposing final state %r; the run will be "
                         "attempted again in %.2fs", outcome.name, attempt.name, delay)
        self.ctx.shutdown(wait=not self.abandoned)
        self.flush()
        return outcome

    def retry(self, outcome: State, attempt: State, delay: float) -> None:
        """Sleep through the AwaitingRetry delay, then go Retrying for the next attempt."""
        self.logger.info("Received non-final state %r when proposing final state %r and will attempt to run "
                         "again in %.2fs", outcome.name, attempt.name, delay)
        if delay > 0:
            time.sleep(delay)
        self.set_state(Retrying())
        self.ctx.futures.clear()

    def end_run(self, final: State) -> State:
        """Stop the task pool, log the final state, call the hooks, write out; an interruption goes on."""
        self.ctx.shutdown(wait=not self.abandoned)
        level = logging.INFO if final.is_completed() else logging.ERROR
        self.logger.log(level, "Finished in state %r", final)
        self.call_hooks(final)
        self.flush()
        if self.interrupted is not None:
            raise self.interrupted
        return final

    def call_hooks(self, final: State) -> None:
        """The hooks for the final state's type; one that raises is logged and changes nothing."""
        for hook in _hooks_for(self.flow, final):
            try:
                hook(self.flow, self.ctx.flow_run, final)
            except Exception:
                self.logger.exception("Hook %r failed", getattr(hook, "__name__", hook))

    def flush(self) -> None:
        """A top-level run writes out the store's batch and the logs; a subflow leaves that to its parent."""
        if not self.is_subflow:
            self.store.flush()
            get_log_buffer(self.store).flush()


# -- a call of a flow ---------------------------------------------------------------------------------
def run_flow(flow: Flow[..., Any], parameters: dict[str, Any], parent: FlowRunContext | None) -> State:
    """Run ``flow`` with validated ``parameters`` to a final state and return that state."""
    settings = parent.settings if parent else get_settings()
    store = parent.store if parent else get_store()
    run = _new_flow_run(flow, parameters, parent, store, settings)
    placeholder: TaskRunRecorder | None = None
    if parent is not None:
        placeholder = _open_placeholder(flow, run, parent, store, settings)
        run.parent_task_run_id = placeholder.run.id

    # Pending then Running, decided by the policy, committed in the creating write.
    run = cast(FlowRun, transitions.create(store, RunKind.FLOW,
                                           transitions.decide_new(RunKind.FLOW, run, (Pending(), Running()))))
    final = FlowRunEngine(flow, run, parameters, store, settings, is_subflow=parent is not None).run()
    if placeholder is not None:
        mirrored = State(type=final.type, name=final.name, message=final.message,
                         result_ref=final.result_ref).with_data(final._data)
        mirrored.state_details.child_flow_run_id = run.id
        placeholder.propose(mirrored)
    return final


def _new_flow_run(flow: Flow[..., Any], parameters: dict[str, Any], parent: FlowRunContext | None, store: Store,
                  settings: Settings) -> FlowRun:
    """The run a call creates (not stored yet), with the flow's record ensured and large parameters in a blob."""
    flow_record = _ensure_flow_record(store, flow)
    run_id = new_id()
    stored_params, params_ref = _jsonable_parameters(store, settings, run_id, parameters)
    return FlowRun(
        id=run_id, name=_flow_run_name(flow, parameters), flow_id=flow_record.id, flow_name=flow.name,
        flow_version=flow.version, parameters=stored_params, parameters_ref=params_ref,
        tags=sorted(flow.tags | set(current_tags())),
        retry_policy=RetryPolicy(retries=flow.retries, retry_delays=flow._retry_delays),
        parent_flow_run_id=parent.flow_run.id if parent else None,
    )


def _open_placeholder(flow: Flow[..., Any], run: FlowRun, parent: FlowRunContext, store: Store,
                      settings: Settings) -> TaskRunRecorder:
    """The subflow stands in its parent as a task run, so the parent's timeline shows it: Running now,
    the subflow's final state when it ends."""
    placeholder = TaskRunRecorder(store, TaskRun(
        name=f"{flow.name}-{parent.next_dynamic_key('subflow:' + flow.name)}",
        flow_run_id=parent.flow_run.id, task_key=f"subflow:{flow.name}", child_flow_run_id=run.id,
    ), settings.task_state_flush_after)
    placeholder.propose(Pending())
    placeholder.propose(Running(), parent.flow_run.state)
    return placeholder


# -- an executor's run ----------------------------------------------------------------------------------
@dataclass
class Execution:
    """What ``execute_flow_run`` did with an existing run.

    ``claimed`` is False when another executor owns the run (or it is finished or cancelled):
    nothing ran. ``state`` is the run's state afterwards; when it is a Scheduled state
    (AwaitingRetry after a crash or a failure with retries left, or a run that is not due yet),
    ``run_again_at`` says when it should be attempted again.
    """

    claimed: bool
    run: FlowRun
    state: State | None
    reason: str | None = None
    run_again_at: datetime | None = None


def execute_flow_run(
    flow: Flow[..., Any],
    run: FlowRun,
    *,
    store: Store | None = None,
    settings: Settings | None = None,
    deadline_seconds: float | None = None,
    inline_retry_max: float = 30.0,
) -> Execution:
    """Claim an existing (Scheduled) flow run and run it: what executors and workers call.

    The claim is the conditional Scheduled -> Pending write: of several executors handed the
    same run (duplicate SQS deliveries), exactly one wins; the others get ``claimed=False`` and
    must not run anything. ``deadline_seconds`` bounds the whole execution: before it passes
    the run is stopped and recorded Crashed (and rescheduled if its retries allow). Retry
    delays longer than ``inline_retry_max`` are not slept through: the run is left
    AwaitingRetry and ``run_again_at`` tells the caller when to hand it out again.
    """
    settings = settings or get_settings()
    store = store or get_store()
    started = time.monotonic()
    claim = _claim(flow, run, store)
    if isinstance(claim, Execution):
        return claim
    running, parameters = claim
    deadline = started + deadline_seconds if deadline_seconds is not None else None
    final = FlowRunEngine(flow, running, parameters, store, settings, is_subflow=False, deadline=deadline,
                          inline_retry_max=inline_retry_max).run()
    after = store.read_run(RunKind.FLOW, running.id)
    assert isinstance(after, FlowRun)
    again = final.state_details.scheduled_time if final.type == StateType.SCHEDULED else None
    return Execution(True, after, final, final.message, run_again_at=again)


def _claim(flow: Flow[..., Any], run: FlowRun, store: Store) -> Execution | tuple[FlowRun, dict[str, Any]]:
    """Scheduled -> Pending (the claim), the parameters checked, then Running: the running run and its
    parameters, or the Execution to return when this executor is not to run it."""
    # The flow's code decides its retries and version; they go on the run with the claim.
    run = run.model_copy(update={"retry_policy": RetryPolicy(retries=flow.retries, retry_delays=flow._retry_delays),
                                 "flow_version": flow.version})
    result, claimed = transitions.propose(store, RunKind.FLOW, run, Pending())
    assert isinstance(claimed, FlowRun)
    if result.status == ResponseStatus.WAIT:
        when = now() + timedelta(seconds=result.delay_seconds or 0)
        return Execution(False, claimed, claimed.state, result.reason, run_again_at=when)
    if result.status != ResponseStatus.ACCEPT:
        return Execution(False, claimed, claimed.state, result.reason or f"run is {claimed.state!r}")
    try:
        parameters = flow.validate_parameters(load_run_parameters(store, claimed))
    except ParameterValidationError as exc:
        _, failed = transitions.propose(store, RunKind.FLOW, claimed, Failed(message=str(exc)))
        assert isinstance(failed, FlowRun)
        return Execution(True, failed, failed.state, "invalid parameters")
    result, running = transitions.propose(store, RunKind.FLOW, claimed, Running())
    assert isinstance(running, FlowRun)
    if result.status != ResponseStatus.ACCEPT:
        return Execution(True, running, running.state, result.reason)
    return running, parameters
