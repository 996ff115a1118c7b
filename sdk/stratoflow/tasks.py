"""``@task``: the Task object and the engine that runs one task run.

A task run's transitions are decided in-process by the task policy (the same pure rules the
API applies) and recorded by a ``TaskRunRecorder``:

* terminal states and retries are committed before the call returns (one conditional write),
  so a completed task's state and result survive a crash of the process;
* a task that starts and finishes within ``task_state_flush_after`` seconds is recorded with
  its whole history (Pending, Running, Completed) in that single write;
* a task still running after that is written as Running by a background flusher, so
  long-running work is visible while it runs.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import heapq
import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, cast, overload

from stratoflow.cache_policies import NO_CACHE, CachePolicy, Inputs
from stratoflow.context import TaskRunContext, current_tags, flow_run_ctx, task_run_ctx
from stratoflow.control import transitions
from stratoflow.exceptions import Abort, StaleRunError, TaskRunTimeout, UpstreamTaskError
from stratoflow.futures import StratoflowFuture, StratoflowFutureList, resolve_futures
from stratoflow.logs import print_to_log, run_logger
from stratoflow.models import CacheEntry, FlowRun, RetryPolicy, TaskRun, expiration_from
from stratoflow.orchestration import CacheWrite, OrchestrationResult, ResponseStatus, RunKind
from stratoflow.settings import get_settings
from stratoflow.states import (
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
    from stratoflow.context import FlowRunContext
    from stratoflow.storage.base import Store

P = ParamSpec("P")
R = TypeVar("R")


# -- retry delay helpers ----------------------------------------------------------------------
def exponential_backoff(backoff_factor: float) -> Callable[[int], list[float]]:
    """``retry_delay_seconds=exponential_backoff(10)`` waits 10, 20, 40, ... seconds."""

    def delays(retries: int) -> list[float]:
        return [backoff_factor * 2**i for i in range(retries)]

    return delays


def _retry_delays(value: float | Iterable[float] | Callable[[int], list[float]] | None, retries: int) -> list[float]:
    if value is None:
        return []
    if callable(value):
        return [float(v) for v in value(retries)]
    if isinstance(value, int | float):
        return [float(value)]
    return [float(v) for v in value]


class unmapped(Generic[R]):
    """Wrap an argument of ``task.map()`` that is passed whole to every mapped run."""

    def __init__(self, value: R) -> None:
        self.value = value

    def __getitem__(self, _: Any) -> R:
        return self.value


# -- recording -------------------------------------------------------------------------------
class _Flusher:
    """One daemon thread that writes the Running state of tasks that run longer than the
    flush threshold (short tasks never reach it and are recorded in one write at the end)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TaskRunRecorder]] = []
        self._cond = threading.Condition()
        self._counter = 0
        self._thread: threading.Thread | None = None

    def schedule(self, delay: float, recorder: TaskRunRecorder) -> None:
        deadline = time.monotonic() + delay
        with self._cond:
            self._counter += 1
            # Wake the thread only if this deadline is the new earliest; waking it for every
            # task would make it compete for the GIL with the flow on every task.
            wake = not self._heap or deadline < self._heap[0][0]
            heapq.heappush(self._heap, (deadline, self._counter, recorder))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="stratoflow-flusher", daemon=True)
                self._thread.start()
            if wake:
                self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                _, _, recorder = heapq.heappop(self._heap)
            recorder.flush_if_running()


_flusher = _Flusher()


def verified_cache_lookup(store: Store) -> Callable[[str], CacheEntry | None]:
    """``store.read_cache`` that answers a miss for an entry whose result this stack's runners did
    not sign (a poisoned entry written through the API): the task then runs instead of loading it."""

    def lookup(key: str) -> CacheEntry | None:
        entry = store.read_cache(key)
        if entry is None:
            return None
        settings = get_settings()
        try:
            signer = store.result_signer()
            if signer is None:
                raise _results.ResultKeyUnavailable(_results.NO_KEY)
            _results.check_ref(entry.state.result_ref, bucket=settings.bucket, prefix=settings.results_prefix,
                               signer=signer, where=f"cache entry {key[:16]}")
        except (_results.ResultIntegrityError, _results.ResultKeyUnavailable) as exc:
            logging.getLogger("stratoflow").warning("cache entry ignored, the task runs: %s", exc)
            return None
        return entry

    return lookup


class TaskRunRecorder:
    """Applies the task policy to one task run in memory and commits it to the store."""

    def __init__(self, store: Store, run: TaskRun, flush_after: float) -> None:
        self.store = store
        self.run = run
        self.flush_after = flush_after
        self._stored_version: int | None = None
        self._stored_type: StateType | None = None
        self._unflushed: list[State] = []
        self._effects: list[CacheWrite] = []
        self._lock = threading.RLock()

    def propose(
        self, proposed: State, parent_state: State | None = None, refresh_cache: bool = False
    ) -> OrchestrationResult:
        with self._lock:
            decision = transitions.decide(
                RunKind.TASK, self.run, proposed, parent_flow_run_state=parent_state,
                cache_lookup=verified_cache_lookup(self.store), refresh_cache=refresh_cache,
            )
            if not decision.moved:
                return decision.result
            state = decision.result.state
            assert state is not None and isinstance(decision.run, TaskRun)
            self.run = decision.run
            self._unflushed.append(state)
            self._effects.extend(decision.effects)
            if self.flush_after <= 0 or state.is_final() or state.type in (StateType.SCHEDULED, StateType.PAUSED):
                self._flush()
            elif state.type == StateType.RUNNING:
                _flusher.schedule(self.flush_after, self)
            return decision.result

    def flush_if_running(self) -> None:
        with self._lock:
            if self._unflushed and self.run.state_type == StateType.RUNNING:
                self._flush()

    def flush(self) -> None:
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        if not self._unflushed:
            return
        stored: FlowRun | TaskRun
        if self._stored_version is None and self.run.state is not None and self.run.state.is_final():
            stored = transitions.create_final_task(self.store, self.run)
        elif self._stored_version is None:
            stored = transitions.create(self.store, RunKind.TASK, self.run)
        else:
            try:
                stored = transitions.commit(self.store, RunKind.TASK, self.run, self._unflushed,
                                            self._stored_version, {self._stored_type})
            except StaleRunError as exc:
                # Someone else (an operator forcing a state through the API) wrote this task
                # run since our last flush: re-propose what we have not stored onto theirs.
                current = exc.current
                for state in self._unflushed:
                    _, current = transitions.propose(self.store, RunKind.TASK, current, state.fresh_copy())
                stored = current
        for effect in self._effects:
            self.store.write_cache(CacheEntry(key=effect.key, state=effect.state, expiration=effect.expiration))
        self._effects = []
        self._stored_version = stored.version
        self._stored_type = stored.state_type
        assert isinstance(stored, TaskRun)
        self.run = stored
        self._unflushed = []


# -- the Task object ----------------------------------------------------------------------------
def _call_user_fn(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    if inspect.iscoroutinefunction(fn):
        return asyncio.run(fn(**kwargs))
    return fn(**kwargs)


def _source_hash(fn: Callable[..., Any]) -> str:
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        source = getattr(fn, "__qualname__", repr(fn))
    return hashlib.sha256(source.encode()).hexdigest()[:16]


class Task(Generic[P, R]):
    """A Python function whose calls are recorded as task runs (see ``@task``)."""

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        tags: Iterable[str] | None = None,
        version: str | None = None,
        cache_policy: CachePolicy | None = None,
        cache_key_fn: Callable[[TaskRunContext, dict[str, Any]], str | None] | None = None,
        cache_expiration: timedelta | None = None,
        refresh_cache: bool = False,
        task_run_name: str | Callable[[], str] | None = None,
        retries: int = 0,
        retry_delay_seconds: float | Iterable[float] | Callable[[int], list[float]] | None = None,
        retry_jitter_factor: float | None = None,
        retry_condition_fn: Callable[[Task[..., Any], TaskRun, State], bool] | None = None,
        persist_result: bool | None = None,
        timeout_seconds: float | None = None,
        log_prints: bool | None = None,
        on_completion: Iterable[Callable[[Task[..., Any], TaskRun, State], None]] | None = None,
        on_failure: Iterable[Callable[[Task[..., Any], TaskRun, State], None]] | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError("@task must decorate a function")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        if retry_jitter_factor is not None and retry_jitter_factor < 0:
            raise ValueError("retry_jitter_factor must be >= 0")
        if timeout_seconds is not None and timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be > 0")
        self.fn = fn
        self.name = name or fn.__name__
        self.description = description or inspect.getdoc(fn)
        self.tags = set(tags or ())
        self.version = version
        self.cache_key_fn = cache_key_fn
        self.cache_policy = cache_policy if cache_policy is not None else NO_CACHE
        self.cache_expiration = cache_expiration
        self.refresh_cache = refresh_cache
        self.task_run_name = task_run_name
        self.retries = retries
        self.retry_delay_seconds = retry_delay_seconds
        self.retry_jitter_factor = retry_jitter_factor
        self.retry_condition_fn = retry_condition_fn
        self.persist_result = persist_result
        self.timeout_seconds = timeout_seconds
        self.log_prints = log_prints
        self.on_completion_hooks = list(on_completion or ())
        self.on_failure_hooks = list(on_failure or ())
        self.task_key = f"{getattr(fn, '__qualname__', self.name)}-{_source_hash(fn)[:8]}"
        self._signature = inspect.signature(fn)
        self._retry_delays = _retry_delays(retry_delay_seconds, retries)
        functools.update_wrapper(self, fn)

    def with_options(self, **overrides: Any) -> Task[P, R]:
        """A copy of this task with some options changed."""
        options: dict[str, Any] = {
            "name": self.name, "description": self.description, "tags": self.tags, "version": self.version,
            "cache_policy": self.cache_policy, "cache_key_fn": self.cache_key_fn,
            "cache_expiration": self.cache_expiration, "refresh_cache": self.refresh_cache,
            "task_run_name": self.task_run_name, "retries": self.retries,
            "retry_delay_seconds": self.retry_delay_seconds, "retry_jitter_factor": self.retry_jitter_factor,
            "retry_condition_fn": self.retry_condition_fn, "persist_result": self.persist_result,
            "timeout_seconds": self.timeout_seconds, "log_prints": self.log_prints,
            "on_completion": self.on_completion_hooks, "on_failure": self.on_failure_hooks,
        }
        options.update(overrides)
        return Task(self.fn, **options)

    def on_completion(self, fn: Callable[..., None]) -> Callable[..., None]:
        self.on_completion_hooks.append(fn)
        return fn

    def on_failure(self, fn: Callable[..., None]) -> Callable[..., None]:
        self.on_failure_hooks.append(fn)
        return fn

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"task {self.name!r}: {exc}") from None
        bound.apply_defaults()
        return dict(bound.arguments)

    # -- calling ----------------------------------------------------------------------------
    def __call__(self, *args: Any, return_state: bool = False, wait_for: Any = None, **kwargs: Any) -> Any:
        parameters = self._bind(args, kwargs)
        if inspect.iscoroutinefunction(self.fn):
            return asyncio.to_thread(self._call_sync, parameters, return_state, wait_for, flow_run_ctx.get())
        return self._call_sync(parameters, return_state, wait_for, flow_run_ctx.get())

    def _call_sync(self, parameters: dict[str, Any], return_state: bool, wait_for: Any,
                   flow_ctx: FlowRunContext | None) -> Any:
        token = flow_run_ctx.set(flow_ctx)
        try:
            state = run_task(self, parameters, wait_for, flow_ctx)
        finally:
            flow_run_ctx.reset(token)
        if return_state:
            return state
        return state.result()

    def submit(self, *args: Any, wait_for: Any = None, **kwargs: Any) -> StratoflowFuture[R]:
        """Run in the flow's thread pool; returns a future at once."""
        parameters = self._bind(args, kwargs)
        return self._submit(parameters, wait_for)

    def _submit(self, parameters: dict[str, Any], wait_for: Any) -> StratoflowFuture[R]:
        import contextvars

        from stratoflow.models import new_id

        flow_ctx = flow_run_ctx.get()
        executor = flow_ctx.executor() if flow_ctx is not None else _standalone_executor()
        run_id = new_id()
        ctx = contextvars.copy_context()
        inner = executor.submit(ctx.run, run_task, self, parameters, wait_for, flow_ctx, run_id)
        future: StratoflowFuture[R] = StratoflowFuture(run_id, inner, self.name)
        if flow_ctx is not None:
            flow_ctx.futures.append(future)
        return future

    def map(self, *args: Any, wait_for: Any = None, **kwargs: Any) -> StratoflowFutureList[R]:
        """Submit one task run per element of the iterable arguments (``unmapped`` ones are
        passed whole). All iterables must have the same length."""
        parameters = self._bind(args, kwargs)
        iterables: dict[str, list[Any]] = {}
        static: dict[str, Any] = {}
        for key, value in parameters.items():
            if isinstance(value, unmapped):
                static[key] = value.value
            elif isinstance(value, StratoflowFuture | str | bytes | dict):
                static[key] = value
            elif isinstance(value, Iterable):
                iterables[key] = list(value)
            else:
                static[key] = value
        if not iterables:
            raise ValueError(f"task {self.name!r}: map() needs at least one iterable argument")
        lengths = {k: len(v) for k, v in iterables.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"task {self.name!r}: map() iterables differ in length: {lengths}")
        n = next(iter(lengths.values()))
        futures: StratoflowFutureList[R] = StratoflowFutureList()
        for i in range(n):
            call = {**static, **{k: v[i] for k, v in iterables.items()}}
            futures.append(self._submit(call, wait_for))
        return futures

    def __repr__(self) -> str:
        return f"Task({self.name!r})"


_standalone_lock = threading.Lock()
_standalone_pool: Any = None


def _standalone_executor() -> Any:
    global _standalone_pool
    from concurrent.futures import ThreadPoolExecutor

    with _standalone_lock:
        if _standalone_pool is None:
            _standalone_pool = ThreadPoolExecutor(max_workers=get_settings().task_runner_max_workers,
                                                  thread_name_prefix="stratoflow-tasks")
        return _standalone_pool


# -- the engine -----------------------------------------------------------------------------------
def _task_run_name(task: Task[..., Any], parameters: dict[str, Any], dynamic_key: str) -> str:
    template = task.task_run_name
    if template is None:
        return f"{task.name}-{dynamic_key}"
    if callable(template):
        return str(template())
    try:
        return template.format(**parameters)
    except (KeyError, IndexError) as exc:
        raise ValueError(f"task_run_name {template!r} refers to unknown parameter {exc}") from None


def _upstream_ids(parameters: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in parameters.items():
        values = value if isinstance(value, list | tuple) else [value]
        ids = [v.task_run_id for v in values if isinstance(v, StratoflowFuture)]
        if ids:
            out[key] = ids
    return out


def _run_hooks(hooks: list[Callable[..., None]], task: Task[..., Any], run: TaskRun, state: State,
               logger: Any) -> None:
    for hook in hooks:
        try:
            hook(task, run, state)
        except Exception:
            logger.exception("Hook %r failed", getattr(hook, "__name__", hook))


def run_task(
    task: Task[..., Any],
    parameters: dict[str, Any],
    wait_for: Any,
    flow_ctx: FlowRunContext | None,
    run_id: str | None = None,
) -> State:
    """Run one task run to a final state and return it (never raises the task's exception)."""
    from stratoflow.storage import get_store

    settings = flow_ctx.settings if flow_ctx else get_settings()
    store = flow_ctx.store if flow_ctx else get_store()
    flow_run = flow_ctx.flow_run if flow_ctx else None
    dynamic_key = flow_ctx.next_dynamic_key(task.task_key) if flow_ctx else "0"
    name = _task_run_name(task, parameters, dynamic_key)
    from stratoflow.models import new_id

    run = TaskRun(
        id=run_id or new_id(), name=name, flow_run_id=flow_run.id if flow_run else None, task_key=task.task_key,
        dynamic_key=dynamic_key, tags=sorted(set(task.tags) | set(current_tags())),
        retry_policy=RetryPolicy(retries=task.retries, retry_delays=task._retry_delays,
                                 retry_jitter_factor=task.retry_jitter_factor),
        task_inputs=_upstream_ids(parameters),
    )
    recorder = TaskRunRecorder(store, run, settings.task_state_flush_after)
    logger = run_logger(store, flow_run_id=run.flow_run_id, task_run_id=run.id, label=f"Task run {name!r}",
                        kind="task")
    recorder.propose(Pending())

    def parent_state() -> State | None:
        return flow_ctx.flow_run.state if flow_ctx else None

    # Upstreams first: a task whose inputs did not complete fails without running.
    try:
        if wait_for is not None:
            waits = wait_for if isinstance(wait_for, list | tuple | set) else [wait_for]
            resolve_futures(list(waits))
        resolved, _ = resolve_futures(parameters)
    except UpstreamTaskError as exc:
        state = recorder.propose(Failed(message=str(exc), retriable=False)).state or recorder.run.state
        assert state is not None
        logger.error("Finished in state %r", state)
        return state

    cache_key: str | None = None
    task_ctx = TaskRunContext(task=task, task_run=recorder.run, parameters=resolved)
    try:
        if task.cache_key_fn is not None:
            cache_key = task.cache_key_fn(task_ctx, resolved)
        elif task.cache_policy is not NO_CACHE:
            cache_key = task.cache_policy.compute_key(task, resolved, flow_ctx)
    except Exception as exc:
        logger.warning("Could not compute a cache key (%s: %s); the task runs without caching",
                       type(exc).__name__, exc)
        cache_key = None
    persist = task.persist_result if task.persist_result is not None else (
        settings.persist_results or cache_key is not None)

    # Tags with a concurrency limit: wait (Pending) for a slot of each; given back however it ends.
    slots = _take_tag_slots(store, run.tags, run.id, logger) if run.tags else False
    try:
        final = _run_attempts(task, recorder, parent_state, resolved, task_ctx, store, settings, persist, cache_key,
                              logger, flow_ctx, name)
    finally:
        if slots:
            store.release_tag_slots(run.tags, run.id)
    recorder.flush()
    if final.is_completed():
        logger.info("Finished in state %r", final)
        _run_hooks(task.on_completion_hooks, task, recorder.run, final, logger)
    else:
        logger.error("Finished in state %r", final)
        if final.type in (StateType.FAILED, StateType.CRASHED):
            _run_hooks(task.on_failure_hooks, task, recorder.run, final, logger)
    return final


def _take_tag_slots(store: Store, tags: list[str], holder: str, logger: Any) -> bool:
    """Block until a slot of every limited tag is held (polling with backoff up to 2 s); True
    when slots are held (the caller gives them back)."""
    delay = 0.05
    waited = False
    while True:
        full = store.acquire_tag_slots(tags, holder)
        if full is None:
            return True
        if not waited:
            logger.info("Waiting for a concurrency slot of tag %r", full)
            waited = True
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def _run_attempts(task: Task[..., Any], recorder: TaskRunRecorder, parent_state: Callable[[], State | None],
                  resolved: dict[str, Any], task_ctx: TaskRunContext, store: Store, settings: Any, persist: bool,
                  cache_key: str | None, logger: Any, flow_ctx: FlowRunContext | None, name: str) -> State:
    """Propose Running and execute until a final state, waiting out retries."""
    proposal: State = Running(cache_key=cache_key)
    final: State | None = None
    while final is None:
        response = recorder.propose(proposal, parent_state(), refresh_cache=task.refresh_cache)
        if response.status == ResponseStatus.WAIT:
            time.sleep(max(response.delay_seconds or 0.0, 0.0))
            continue
        if response.status == ResponseStatus.ABORT:
            raise Abort(f"task run {name!r} was not started: {response.reason}")
        if response.status == ResponseStatus.REJECT:
            assert response.state is not None
            if response.state.is_final():
                final = response.state
                break
            proposal = Running(cache_key=cache_key)
            continue

        task_ctx.task_run = recorder.run
        try:
            attempt_state = _execute(task, resolved, task_ctx, store, settings, persist, cache_key, logger, flow_ctx)
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: record it, then let it go on
            crashed = Crashed(message=f"Execution was interrupted: {type(exc).__name__}")
            recorder.propose(crashed)
            recorder.flush()
            logger.error("Crashed: execution was interrupted by %s", type(exc).__name__)
            raise
        response = recorder.propose(attempt_state)
        outcome = response.state or attempt_state
        if outcome.type == StateType.SCHEDULED:  # AwaitingRetry: wait for its time, then retry
            delay = ((outcome.state_details.scheduled_time or now()) - now()).total_seconds()
            logger.info("Received non-final state %r when proposing final state %r and will attempt to "
                        "run again in %.2fs", outcome.name, attempt_state.name, max(delay, 0))
            if delay > 0:
                time.sleep(delay)
            proposal = Retrying(cache_key=cache_key)
            continue
        final = outcome if outcome.id != attempt_state.id else attempt_state
    return final


def _execute(
    task: Task[..., Any],
    resolved: dict[str, Any],
    task_ctx: TaskRunContext,
    store: Store,
    settings: Any,
    persist: bool,
    cache_key: str | None,
    logger: Any,
    flow_ctx: FlowRunContext | None,
) -> State:
    """Call the function once and turn its outcome into the state to propose."""
    log_prints = task.log_prints if task.log_prints is not None else (flow_ctx.log_prints if flow_ctx else False)
    token = task_run_ctx.set(task_ctx)
    print_token = print_to_log.set(log_prints)
    try:
        with _timeout(task.timeout_seconds):
            value = _call_user_fn(task.fn, resolved)
    except TaskRunTimeout:
        state = TimedOut(message=f"Task run exceeded timeout of {task.timeout_seconds} second(s)")
        exc_obj: BaseException = TimeoutError(state.message)
        return _failed(task, task_ctx, state, exc_obj, store, settings, logger)
    except Exception as exc:
        logger.error("Task run failed with exception: %s: %s", type(exc).__name__, exc, exc_info=True)
        state = Failed(message=f"Task run encountered an exception {type(exc).__name__}: {exc}")
        return _failed(task, task_ctx, state, exc, store, settings, logger)
    finally:
        print_to_log.reset(print_token)
        task_run_ctx.reset(token)

    # The cache entry's lifetime counts from completion, when the entry is written.
    state = Completed(cache_key=cache_key, cache_expiration=expiration_from(task.cache_expiration))
    if persist:
        try:
            state.result_ref = _results.persist_value(
                store, value, inline_max=settings.result_inline_max_bytes,
                prefix=settings.results_prefix, key=f"{task_ctx.task_run.id}-{state.id}",
            )
        except Exception as exc:
            if task.persist_result:
                return Failed(message=f"result could not be persisted ({type(exc).__name__}: {exc}); "
                                      "return something picklable or set persist_result=False",
                              retriable=False).with_data(exc)
            logger.warning("Result of type %s is not persisted (%s); it is available in this process only",
                           type(value).__name__, exc)
            state.state_details.cache_key = None
    return state.with_data(value)


def _failed(task: Task[..., Any], task_ctx: TaskRunContext, state: State, exc: BaseException, store: Store,
            settings: Any, logger: Any) -> State:
    state.result_ref = _results.persist_exception(store, exc, inline_max=settings.result_inline_max_bytes,
                                                  prefix=settings.results_prefix)
    if task.retry_condition_fn is not None and task.retries:
        try:
            state.state_details.retriable = bool(task.retry_condition_fn(task, task_ctx.task_run, state))
        except Exception:
            logger.exception("retry_condition_fn raised; the failure is not retried")
            state.state_details.retriable = False
    return state.with_data(exc)


def _timeout(seconds: float | None) -> Any:
    from stratoflow._timeouts import timeout_scope

    return timeout_scope(seconds, TaskRunTimeout)


@overload
def task(__fn: Callable[P, R]) -> Task[P, R]: ...
@overload
def task(**kwargs: Any) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(__fn: Callable[P, R] | None = None, **kwargs: Any) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    """Decorate a function as a task: ``@task`` or ``@task(retries=3, ...)``."""
    if __fn is not None:
        return Task(__fn, **kwargs)
    return cast(Callable[[Callable[P, R]], Task[P, R]], lambda fn: Task(fn, **kwargs))


__all__ = ["Inputs", "Task", "TaskRunRecorder", "exponential_backoff", "task", "unmapped"]
