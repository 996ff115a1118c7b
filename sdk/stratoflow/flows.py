"""``@flow``: the Flow object and the engine that runs one flow run.

A flow run is created already Running (its Pending and Running states are in the creating
write), ends with one conditional write of its final state, and in between its tasks record
themselves. Retries re-run the flow body after the AwaitingRetry delay the policy chose.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, cast, get_type_hints, overload

from pydantic import ConfigDict, ValidationError, create_model
from pydantic_core import to_jsonable_python

from stratoflow.context import FlowRunContext, current_tags, flow_run_ctx
from stratoflow.control import transitions
from stratoflow.exceptions import FlowRunTimeout, ParameterValidationError, raise_on_name_with_banned_characters
from stratoflow.futures import StratoflowFuture
from stratoflow.logs import get_log_buffer, install_print_hook, print_to_log, run_logger
from stratoflow.models import Flow as FlowRecord
from stratoflow.models import FlowRun, RetryPolicy, TaskRun
from stratoflow.names import generate_run_name
from stratoflow.orchestration import ResponseStatus, RunKind
from stratoflow.pause import FlowRunSuspended
from stratoflow.settings import get_settings
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
from stratoflow.storage import results as _results

if TYPE_CHECKING:
    from stratoflow.storage.base import Store

P = ParamSpec("P")
R = TypeVar("R")

_known_flows: dict[tuple[int, str], FlowRecord] = {}
_known_lock = threading.Lock()


def _file_hash(fn: Callable[..., Any]) -> str | None:
    try:
        path = inspect.getsourcefile(fn)
        if path is None:
            return None
        with open(path, "rb") as fh:
            return hashlib.md5(fh.read(), usedforsecurity=False).hexdigest()
    except (OSError, TypeError):
        return None


class Flow(Generic[P, R]):
    """A Python function whose calls are recorded as flow runs (see ``@flow``)."""

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        version: str | None = None,
        flow_run_name: str | Callable[[], str] | None = None,
        retries: int = 0,
        retry_delay_seconds: float | Iterable[float] | None = None,
        timeout_seconds: float | None = None,
        validate_parameters: bool = True,
        persist_result: bool | None = None,
        log_prints: bool = False,
        tags: Iterable[str] | None = None,
        on_completion: Iterable[Callable[[Flow[..., Any], FlowRun, State], None]] | None = None,
        on_failure: Iterable[Callable[[Flow[..., Any], FlowRun, State], None]] | None = None,
        on_crashed: Iterable[Callable[[Flow[..., Any], FlowRun, State], None]] | None = None,
        on_cancellation: Iterable[Callable[[Flow[..., Any], FlowRun, State], None]] | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError("@flow must decorate a function")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        if timeout_seconds is not None and timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be > 0")
        self.fn = fn
        # As Prefect: a flow's name is a path segment of the API (/flows/<name>), so it must not
        # hold / % & > < (InvalidNameError); a lambda's "<lambda>" becomes "unknown-lambda".
        self.name = name or fn.__name__.replace("_", "-").replace("<lambda>", "unknown-lambda")
        raise_on_name_with_banned_characters(self.name)
        self.description = description or inspect.getdoc(fn)
        self.version = version or _file_hash(fn)
        self.flow_run_name = flow_run_name
        self.retries = retries
        self.retry_delay_seconds = retry_delay_seconds
        self.timeout_seconds = timeout_seconds
        self.should_validate_parameters = validate_parameters
        self.persist_result = persist_result
        self.log_prints = log_prints
        self.tags = set(tags or ())
        self.on_completion_hooks = list(on_completion or ())
        self.on_failure_hooks = list(on_failure or ())
        self.on_crashed_hooks = list(on_crashed or ())
        self.on_cancellation_hooks = list(on_cancellation or ())
        self._signature = inspect.signature(fn)
        self._model: Any = None
        if retry_delay_seconds is None:
            self._retry_delays: list[float] = []
        elif isinstance(retry_delay_seconds, int | float):
            self._retry_delays = [float(retry_delay_seconds)]
        else:
            self._retry_delays = [float(x) for x in retry_delay_seconds]
        functools.update_wrapper(self, fn)

    def with_options(self, **overrides: Any) -> Flow[P, R]:
        options: dict[str, Any] = {
            "name": self.name, "description": self.description, "version": self.version,
            "flow_run_name": self.flow_run_name, "retries": self.retries,
            "retry_delay_seconds": self.retry_delay_seconds, "timeout_seconds": self.timeout_seconds,
            "validate_parameters": self.should_validate_parameters, "persist_result": self.persist_result,
            "log_prints": self.log_prints, "tags": self.tags, "on_completion": self.on_completion_hooks,
            "on_failure": self.on_failure_hooks, "on_crashed": self.on_crashed_hooks,
            "on_cancellation": self.on_cancellation_hooks,
        }
        options.update(overrides)
        return Flow(self.fn, **options)

    # -- parameters ----------------------------------------------------------------------------
    def _parameter_model(self) -> Any:
        if self._model is None:
            try:
                hints = get_type_hints(self.fn)
            except Exception:
                hints = {}
            fields: dict[str, Any] = {}
            for pname, param in self._signature.parameters.items():
                annotation = hints.get(pname, Any)
                if param.kind is inspect.Parameter.VAR_POSITIONAL:
                    annotation = tuple[annotation, ...]  # type: ignore[valid-type]
                elif param.kind is inspect.Parameter.VAR_KEYWORD:
                    annotation = dict[str, annotation]  # type: ignore[valid-type]
                default = ... if param.default is inspect.Parameter.empty else param.default
                fields[pname] = (annotation, default)
            self._model = create_model(
                f"{self.fn.__name__}_parameters", __config__=ConfigDict(arbitrary_types_allowed=True), **fields
            )
        return self._model

    def parameter_schema(self) -> dict[str, Any]:
        """JSON schema of the flow's parameters (what deployments validate against)."""
        return cast(dict[str, Any], self._parameter_model().model_json_schema())

    def validate_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """Coerce and check ``parameters`` against the signature's type hints.

        Raises ParameterValidationError naming each bad field; nothing is created before this.
        """
        unknown = set(parameters) - set(self._signature.parameters)
        if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in self._signature.parameters.values()):
            raise ParameterValidationError(self.name, [
                {"loc": (k,), "msg": "unexpected parameter (not in the flow's signature)"} for k in sorted(unknown)])
        if not self.should_validate_parameters:
            return dict(parameters)
        try:
            model = self._parameter_model().model_validate(parameters)
        except ValidationError as exc:
            raise ParameterValidationError(self.name, cast(list[dict[str, Any]], exc.errors())) from None
        return {name: getattr(model, name) for name in self._signature.parameters if name in parameters
                or self._signature.parameters[name].default is not inspect.Parameter.empty}

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        params = self._signature.parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            unknown = sorted(set(kwargs) - set(params))
            if unknown:
                raise ParameterValidationError(self.name, [
                    {"loc": (k,), "msg": "unexpected parameter (not in the flow's signature)"} for k in unknown])
        try:
            bound = self._signature.bind_partial(*args, **kwargs)
        except TypeError as exc:
            raise ParameterValidationError(self.name, [{"loc": (), "msg": str(exc)}]) from None
        missing = [n for n, p in self._signature.parameters.items()
                   if n not in bound.arguments and p.default is inspect.Parameter.empty
                   and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
        if missing:
            raise ParameterValidationError(self.name, [{"loc": (m,), "msg": "Field required"} for m in missing])
        return dict(bound.arguments)

    def _call_fn(self, parameters: dict[str, Any]) -> Any:
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for name, param in self._signature.parameters.items():
            if name not in parameters:
                continue
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                args.extend(parameters[name])
            elif param.kind is inspect.Parameter.VAR_KEYWORD:
                kwargs.update(parameters[name])
            elif param.kind is inspect.Parameter.POSITIONAL_ONLY:
                args.append(parameters[name])
            else:
                kwargs[name] = parameters[name]
        if inspect.iscoroutinefunction(self.fn):
            return asyncio.run(self.fn(*args, **kwargs))
        return self.fn(*args, **kwargs)

    # -- calling -------------------------------------------------------------------------------
    def __call__(self, *args: Any, return_state: bool = False, **kwargs: Any) -> Any:
        parameters = self.validate_parameters(self._bind(args, kwargs))
        if inspect.iscoroutinefunction(self.fn):
            parent = flow_run_ctx.get()
            return asyncio.to_thread(self._run_and_unwrap, parameters, return_state, parent)
        return self._run_and_unwrap(parameters, return_state, flow_run_ctx.get())

    def _run_and_unwrap(self, parameters: dict[str, Any], return_state: bool, parent: FlowRunContext | None) -> Any:
        token = flow_run_ctx.set(parent)
        try:
            state = run_flow(self, parameters, parent)
        finally:
            flow_run_ctx.reset(token)
        return state if return_state else state.result()

    def deploy(self, name: str, **options: Any) -> Any:
        """Package this flow's source directory to S3 and create or update the deployment ``name``
        (see ``stratoflow.deployments.deploy`` for the options: work_pool, parameters, cron, ...)."""
        from stratoflow.deployments.deploy import deploy

        return deploy(self, name=name, **options)

    def __repr__(self) -> str:
        return f"Flow({self.name!r})"


# -- the engine -------------------------------------------------------------------------------------
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


def _jsonable_parameters(store: Store, settings: Any, run_id: str, parameters: dict[str, Any]) -> tuple[
        dict[str, Any], str | None]:
    import json

    data = to_jsonable_python(parameters, fallback=repr)
    encoded = json.dumps(data).encode()
    if len(encoded) <= settings.parameters_inline_max_bytes:
        return data, None
    uri = store.put_blob(f"parameters/{run_id}.json", encoded)
    return {}, uri


def _final_state_from_return(value: Any, store: Store, settings: Any, persist: bool) -> State:
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
            import logging

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


def run_flow(flow: Flow[..., Any], parameters: dict[str, Any], parent: FlowRunContext | None) -> State:
    """Run ``flow`` with validated ``parameters`` to a final state and return that state."""
    from stratoflow.storage import get_store
    from stratoflow.tasks import TaskRunRecorder

    settings = parent.settings if parent else get_settings()
    store = parent.store if parent else get_store()
    flow_record = _ensure_flow_record(store, flow)
    from stratoflow.models import new_id

    run_id = new_id()
    stored_params, params_ref = _jsonable_parameters(store, settings, run_id, parameters)
    run = FlowRun(
        id=run_id, name=_flow_run_name(flow, parameters), flow_id=flow_record.id, flow_name=flow.name,
        flow_version=flow.version, parameters=stored_params, parameters_ref=params_ref,
        tags=sorted(flow.tags | set(current_tags())),
        retry_policy=RetryPolicy(retries=flow.retries, retry_delays=flow._retry_delays),
        parent_flow_run_id=parent.flow_run.id if parent else None,
    )
    # The subflow stands in its parent as a task run, so the parent's timeline shows it.
    placeholder: TaskRunRecorder | None = None
    if parent is not None:
        placeholder = TaskRunRecorder(store, TaskRun(
            name=f"{flow.name}-{parent.next_dynamic_key('subflow:' + flow.name)}",
            flow_run_id=parent.flow_run.id, task_key=f"subflow:{flow.name}", child_flow_run_id=run.id,
        ), settings.task_state_flush_after)
        placeholder.propose(Pending())
        placeholder.propose(Running(), parent.flow_run.state)
        run.parent_task_run_id = placeholder.run.id

    # Pending then Running, decided by the policy, committed in the creating write.
    run = transitions.create(store, RunKind.FLOW,  # type: ignore[assignment]
                             transitions.decide_new(RunKind.FLOW, run, (Pending(), Running())))
    final = _drive(flow, run, parameters, store, settings, is_subflow=parent is not None)
    if placeholder is not None:
        mirrored = State(type=final.type, name=final.name, message=final.message,
                         result_ref=final.result_ref).with_data(final._data)
        mirrored.state_details.child_flow_run_id = run.id
        placeholder.propose(mirrored)
    return final


class ExecutorDeadline(BaseException):
    """Raised into a flow run when its executor must stop (Lambda's deadline is near).

    A BaseException so user code's ``except Exception`` does not swallow it."""


class FlowRunCancelled(BaseException):
    """Raised into a running flow body when its run was cancelled (``flow-run cancel``).

    A BaseException so user code's ``except Exception`` does not swallow it."""


# Flow bodies executing now, by flow run id: the thread to interrupt when the run is cancelled.
_running_bodies: dict[str, int] = {}
_pending_cancels: set[str] = set()
_bodies_lock = threading.Lock()


def request_cancel(flow_run_id: str) -> bool:
    """Stop the flow body of ``flow_run_id`` if it executes in this process: ``FlowRunCancelled``
    is raised in its thread at its next Python instruction (a blocking call finishes first).
    Returns whether a body was interrupted; otherwise the run stops before its next attempt."""
    import ctypes

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


class RunReleased(Exception):
    """The engine stopped before running again: the run waits in a Scheduled state for a later attempt."""


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


def load_run_parameters(store: Store, run: FlowRun) -> dict[str, Any]:
    if run.parameters_ref:
        import json

        return cast(dict[str, Any], json.loads(store.get_blob(run.parameters_ref)))
    return dict(run.parameters)


def execute_flow_run(
    flow: Flow[..., Any],
    run: FlowRun,
    *,
    store: Store | None = None,
    settings: Any = None,
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
    from stratoflow.storage import get_store

    settings = settings or get_settings()
    store = store or get_store()
    started = time.monotonic()
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
    deadline = started + deadline_seconds if deadline_seconds is not None else None
    final = _drive(flow, running, parameters, store, settings, is_subflow=False, deadline=deadline,
                   inline_retry_max=inline_retry_max)
    after = store.read_run(RunKind.FLOW, running.id)
    assert isinstance(after, FlowRun)
    again = final.state_details.scheduled_time if final.type == StateType.SCHEDULED else None
    return Execution(True, after, final, final.message, run_again_at=again)


def _drive(flow: Flow[..., Any], run: FlowRun, parameters: dict[str, Any], store: Store, settings: Any, *,
           is_subflow: bool, deadline: float | None = None, inline_retry_max: float | None = None) -> State:
    """Run the flow body for a Running ``run`` until a final state (or, for executors, until the
    run is left Scheduled for a later attempt), with retries, hooks and logs."""
    from stratoflow._timeouts import timeout_scope

    logger = run_logger(store, flow_run_id=run.id, task_run_id=None, label=f"Flow run {run.name!r}", kind="flow")
    logger.info("Beginning flow run %r for flow %r", run.name, flow.name)
    ctx = FlowRunContext(flow=flow, flow_run=run, store=store, settings=settings, parameters=parameters,
                         log_prints=flow.log_prints)
    if flow.log_prints:
        install_print_hook()
    persist = flow.persist_result if flow.persist_result is not None else settings.persist_results

    final: State | None = None
    interrupted: BaseException | None = None
    abandoned = False  # task threads left behind at the executor's deadline
    suspended = False
    while final is None:
        token = flow_run_ctx.set(ctx)
        print_token = print_to_log.set(flow.log_prints)
        left = deadline - time.monotonic() if deadline is not None else None
        try:
            if left is not None and left <= 0:
                raise ExecutorDeadline()
            with _Body(run.id), timeout_scope(left, ExecutorDeadline), \
                    timeout_scope(flow.timeout_seconds, FlowRunTimeout):
                value = flow._call_fn(parameters)
            _wait_for_futures(ctx)
            attempt = _final_state_from_return(value, store, settings, persist)
        except FlowRunSuspended:
            suspended = True
            attempt = Crashed()  # not proposed: the run stays Suspended
        except FlowRunCancelled:
            abandoned = True  # its task threads are not waited for
            attempt = Cancelled(message="the flow run was cancelled while it ran")
            logger.warning("Cancelled: the run was stopped by a cancellation request")
        except ExecutorDeadline:
            # Task threads may be stuck: do not wait for them past the deadline.
            abandoned = True
            attempt = Crashed(message="the executor stopped the flow run before its deadline (the Lambda "
                                      "function's timeout): it did not finish in time")
            logger.error("Crashed: %s", attempt.message)
        except FlowRunTimeout:
            _wait_for_futures(ctx)
            attempt = TimedOut(message=f"Flow run exceeded timeout of {flow.timeout_seconds} second(s)")
            attempt.with_data(TimeoutError(attempt.message))
        except Exception as exc:
            _wait_for_futures(ctx)
            logger.error("Encountered exception during execution: %s: %s", type(exc).__name__, exc, exc_info=True)
            attempt = Failed(message=f"Flow run encountered an exception: {type(exc).__name__}: {exc}")
            attempt.result_ref = _results.persist_exception(store, exc, inline_max=settings.result_inline_max_bytes,
                                                            prefix=settings.results_prefix)
            attempt.with_data(exc)
        except BaseException as exc:  # KeyboardInterrupt / SystemExit: record, then let it go on
            interrupted = exc
            attempt = Crashed(message=f"Execution was interrupted by {type(exc).__name__}")
        finally:
            print_to_log.reset(print_token)
            flow_run_ctx.reset(token)
        if suspended:
            # Recorded Suspended by suspend_flow_run: release the compute; a resume runs it again.
            _wait_for_futures(ctx)
            ctx.shutdown()
            logger.info("Suspended: the flow run waits for a resume, then runs again from the start")
            _flush(store, is_subflow)
            assert ctx.flow_run.state is not None
            return ctx.flow_run.state

        result, run = transitions.propose(store, RunKind.FLOW, ctx.flow_run, attempt)  # type: ignore[assignment]
        ctx.flow_run = run
        outcome = result.state or attempt
        if interrupted is None and outcome.type == StateType.SCHEDULED:
            delay = max(((outcome.state_details.scheduled_time or now()) - now()).total_seconds(), 0.0)
            out_of_time = deadline is not None and time.monotonic() + delay >= deadline
            if inline_retry_max is not None and (delay > inline_retry_max or out_of_time):
                # Release the compute: the run waits in AwaitingRetry and is handed out again.
                logger.info("Received non-final state %r when proposing final state %r; the run will be "
                            "attempted again in %.2fs", outcome.name, attempt.name, delay)
                ctx.shutdown(wait=not abandoned)
                _flush(store, is_subflow)
                return outcome
            logger.info("Received non-final state %r when proposing final state %r and will attempt to run "
                        "again in %.2fs", outcome.name, attempt.name, delay)
            if delay > 0:
                time.sleep(delay)
            _, run = transitions.propose(store, RunKind.FLOW, ctx.flow_run, Retrying())  # type: ignore[assignment]
            ctx.flow_run = run
            ctx.futures.clear()
            continue
        if outcome.type == StateType.CANCELLING:
            result, run = transitions.propose(store, RunKind.FLOW, ctx.flow_run, Cancelled(  # type: ignore[assignment]
                message="flow run was cancelled while it ran"))
            ctx.flow_run = run
            outcome = result.state or outcome
        final = attempt if outcome.id == attempt.id else outcome

    ctx.shutdown(wait=not abandoned)
    level = 20 if final.is_completed() else 40
    logger.log(level, "Finished in state %r", final)
    for hook in _hooks_for(flow, final):
        try:
            hook(flow, ctx.flow_run, final)
        except Exception:
            logger.exception("Hook %r failed", getattr(hook, "__name__", hook))
    _flush(store, is_subflow)
    if interrupted is not None:
        raise interrupted
    return final


def _flush(store: Store, is_subflow: bool) -> None:
    if not is_subflow:
        store.flush()
        get_log_buffer(store).flush()


def _wait_for_futures(ctx: FlowRunContext) -> None:
    """Let submitted task runs finish before the flow's final state is decided."""
    for fut in list(ctx.futures):
        fut.wait()


@overload
def flow(__fn: Callable[P, R]) -> Flow[P, R]: ...
@overload
def flow(**kwargs: Any) -> Callable[[Callable[P, R]], Flow[P, R]]: ...


def flow(__fn: Callable[P, R] | None = None, **kwargs: Any) -> Flow[P, R] | Callable[[Callable[P, R]], Flow[P, R]]:
    """Decorate a function as a flow: ``@flow`` or ``@flow(name=..., retries=..., ...)``."""
    if __fn is not None:
        return Flow(__fn, **kwargs)
    return cast(Callable[[Callable[P, R]], Flow[P, R]], lambda fn: Flow(fn, **kwargs))
