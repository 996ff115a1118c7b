"""The engine that runs one task run (``TaskRunEngine``) and the recorder that stores it.

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
import contextvars
import heapq
import inspect
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from stratoflow._timeouts import timeout_scope
from stratoflow.cache_policies import NO_CACHE
from stratoflow.context import TaskRunContext, current_tags, flow_run_ctx, task_run_ctx
from stratoflow.control import transitions
from stratoflow.exceptions import Abort, StaleRunError, TaskRunTimeout, UpstreamTaskError
from stratoflow.futures import StratoflowFuture, resolve_futures
from stratoflow.logs import RunLogger, print_to_log, run_logger
from stratoflow.models import CacheEntry, FlowRun, RetryPolicy, TaskRun, expiration_from, new_id
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
from stratoflow.storage import get_store
from stratoflow.storage import results as _results

if TYPE_CHECKING:
    from stratoflow.context import FlowRunContext
    from stratoflow.storage.base import Store
    from stratoflow.tasks import Task


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


# -- running -----------------------------------------------------------------------------------
def _call_user_fn(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    if inspect.iscoroutinefunction(fn):
        return asyncio.run(fn(**kwargs))
    return fn(**kwargs)


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


class TaskRunEngine:
    """One task run, from Pending to its final state (``run``).

    Pending, then its upstreams, cache key and tags' concurrency slots; then attempts until the
    policy answers a final state: ``begin_run`` (Running, or Retrying after AwaitingRetry), the
    call, and one of ``handle_success`` / ``handle_exception`` / ``handle_timeout``, whose state
    is proposed, or ``handle_crash``, which records the interruption and lets it go on.
    """

    def __init__(self, task: Task[..., Any], parameters: dict[str, Any], flow_ctx: FlowRunContext | None,
                 run_id: str | None = None) -> None:
        self.task = task
        self.parameters = parameters
        self.flow_ctx = flow_ctx
        self.settings = flow_ctx.settings if flow_ctx else get_settings()
        self.store = flow_ctx.store if flow_ctx else get_store()
        flow_run = flow_ctx.flow_run if flow_ctx else None
        dynamic_key = flow_ctx.next_dynamic_key(task.task_key) if flow_ctx else "0"
        self.name = _task_run_name(task, parameters, dynamic_key)
        run = TaskRun(
            id=run_id or new_id(), name=self.name, flow_run_id=flow_run.id if flow_run else None,
            task_key=task.task_key, dynamic_key=dynamic_key, tags=sorted(set(task.tags) | set(current_tags())),
            retry_policy=RetryPolicy(retries=task.retries, retry_delays=task._retry_delays,
                                     retry_jitter_factor=task.retry_jitter_factor),
            task_inputs=_upstream_ids(parameters),
        )
        self.run_id = run.id
        self.tags = run.tags
        self.recorder = TaskRunRecorder(self.store, run, self.settings.task_state_flush_after)
        self.logger: RunLogger = run_logger(self.store, flow_run_id=run.flow_run_id, task_run_id=run.id,
                                            label=f"Task run {self.name!r}", kind="task")
        # Set by resolve_inputs once the upstreams are in: what the function is called with.
        self.resolved: dict[str, Any] = {}
        self.task_ctx = TaskRunContext(task=task, task_run=run, parameters=self.resolved)
        self.cache_key: str | None = None
        self.persist = False

    # -- the run ---------------------------------------------------------------------------------
    def run(self, wait_for: Any) -> State:
        """Run to a final state and return it (never raises the task's exception)."""
        self.recorder.propose(Pending())
        # Upstreams first: a task whose inputs did not complete fails without running.
        try:
            self.resolve_inputs(wait_for)
        except UpstreamTaskError as exc:
            return self.handle_upstream_failure(exc)
        self.cache_key = self.compute_cache_key()
        persist_result = self.task.persist_result
        self.persist = persist_result if persist_result is not None else (
            self.settings.persist_results or self.cache_key is not None)
        # Tags with a concurrency limit: wait (Pending) for a slot of each; given back however it ends.
        slots = self.take_tag_slots() if self.tags else False
        try:
            final = self.run_attempts()
        finally:
            if slots:
                self.store.release_tag_slots(self.tags, self.run_id)
        return self.end_run(final)

    def parent_state(self) -> State | None:
        """The parent flow run's state now: the policy checks it before the task may run."""
        return self.flow_ctx.flow_run.state if self.flow_ctx else None

    @property
    def log_prints(self) -> bool:
        """The task's ``log_prints``, or its flow's when the task leaves it unset."""
        if self.task.log_prints is not None:
            return self.task.log_prints
        return self.flow_ctx.log_prints if self.flow_ctx else False

    def resolve_inputs(self, wait_for: Any) -> None:
        """Wait for ``wait_for`` and the futures in the parameters, then take their results
        (``UpstreamTaskError`` when one did not complete)."""
        if wait_for is not None:
            waits = wait_for if isinstance(wait_for, list | tuple | set) else [wait_for]
            resolve_futures(list(waits))
        self.resolved, _ = resolve_futures(self.parameters)
        self.task_ctx = TaskRunContext(task=self.task, task_run=self.recorder.run, parameters=self.resolved)

    def handle_upstream_failure(self, exc: UpstreamTaskError) -> State:
        """Fail the run without calling the function (not retriable: its inputs will not change)."""
        state = self.recorder.propose(Failed(message=str(exc), retriable=False)).state or self.recorder.run.state
        assert state is not None
        self.logger.error("Finished in state %r", state)
        return state

    def compute_cache_key(self) -> str | None:
        """The cache key from ``cache_key_fn`` or the cache policy; one that cannot be computed
        means the task runs without caching, not that it fails."""
        task = self.task
        try:
            if task.cache_key_fn is not None:
                return task.cache_key_fn(self.task_ctx, self.resolved)
            if task.cache_policy is not NO_CACHE:
                return task.cache_policy.compute_key(task, self.resolved, self.flow_ctx)
        except Exception as exc:
            self.logger.warning("Could not compute a cache key (%s: %s); the task runs without caching",
                                type(exc).__name__, exc)
        return None

    def take_tag_slots(self) -> bool:
        """Block until a slot of every limited tag is held (polling with backoff up to 2 s); True
        when slots are held (the caller gives them back)."""
        delay = 0.05
        waited = False
        while True:
            full = self.store.acquire_tag_slots(self.tags, self.run_id)
            if full is None:
                return True
            if not waited:
                self.logger.info("Waiting for a concurrency slot of tag %r", full)
                waited = True
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def run_attempts(self) -> State:
        """Attempt until a final state, waiting out the AwaitingRetry delays the policy chose."""
        proposal: State = Running(cache_key=self.cache_key)
        while True:
            refused = self.begin_run(proposal)
            if refused is not None:
                return refused
            attempt = self.call_task_fn()
            outcome = self.recorder.propose(attempt).state or attempt
            if outcome.type != StateType.SCHEDULED:
                return outcome if outcome.id != attempt.id else attempt
            self.wait_for_retry(outcome, attempt)
            proposal = Retrying(cache_key=self.cache_key)

    def begin_run(self, proposal: State) -> State | None:
        """Propose ``proposal`` (Running or Retrying) until the policy accepts it: None, the function
        may be called. A final state it answers instead (a cached result) ends the run."""
        while True:
            response = self.recorder.propose(proposal, self.parent_state(), refresh_cache=self.task.refresh_cache)
            if response.status == ResponseStatus.WAIT:
                time.sleep(max(response.delay_seconds or 0.0, 0.0))
                continue
            if response.status == ResponseStatus.ABORT:
                raise Abort(f"task run {self.name!r} was not started: {response.reason}")
            if response.status != ResponseStatus.REJECT:
                return None
            assert response.state is not None
            if response.state.is_final():
                return response.state
            proposal = Running(cache_key=self.cache_key)

    def wait_for_retry(self, outcome: State, attempt: State) -> None:
        """Sleep until the AwaitingRetry state's scheduled time."""
        delay = ((outcome.state_details.scheduled_time or now()) - now()).total_seconds()
        self.logger.info("Received non-final state %r when proposing final state %r and will attempt to "
                         "run again in %.2fs", outcome.name, attempt.name, max(delay, 0))
        if delay > 0:
            time.sleep(delay)

    # -- one call of the function -----------------------------------------------------------------
    def call_task_fn(self) -> State:
        """Call the function once and turn its outcome into the state to propose."""
        self.task_ctx.task_run = self.recorder.run
        try:
            return self._call_in_context()
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: record it, then let it go on
            self.handle_crash(exc)
            raise

    def _call_in_context(self) -> State:
        token = task_run_ctx.set(self.task_ctx)
        print_token = print_to_log.set(self.log_prints)
        try:
            with timeout_scope(self.task.timeout_seconds, TaskRunTimeout):
                value = _call_user_fn(self.task.fn, self.resolved)
        except TaskRunTimeout:
            return self.handle_timeout()
        except Exception as exc:
            return self.handle_exception(exc)
        finally:
            print_to_log.reset(print_token)
            task_run_ctx.reset(token)
        return self.handle_success(value)

    def handle_success(self, value: Any) -> State:
        """Completed with ``value`` as result, persisted when the task or its cache needs it."""
        # The cache entry's lifetime counts from completion, when the entry is written.
        state = Completed(cache_key=self.cache_key, cache_expiration=expiration_from(self.task.cache_expiration))
        if self.persist:
            try:
                state.result_ref = _results.persist_value(
                    self.store, value, inline_max=self.settings.result_inline_max_bytes,
                    prefix=self.settings.results_prefix, key=f"{self.task_ctx.task_run.id}-{state.id}",
                )
            except Exception as exc:
                if self.task.persist_result:
                    return Failed(message=f"result could not be persisted ({type(exc).__name__}: {exc}); "
                                          "return something picklable or set persist_result=False",
                                  retriable=False).with_data(exc)
                self.logger.warning("Result of type %s is not persisted (%s); it is available in this process only",
                                    type(value).__name__, exc)
                state.state_details.cache_key = None
        return state.with_data(value)

    def handle_exception(self, exc: Exception) -> State:
        """Failed with the exception as result (called in the ``except`` block: the log has its traceback)."""
        self.logger.error("Task run failed with exception: %s: %s", type(exc).__name__, exc, exc_info=True)
        state = Failed(message=f"Task run encountered an exception {type(exc).__name__}: {exc}")
        return self._failed(state, exc)

    def handle_timeout(self) -> State:
        """TimedOut: the call outlived the task's ``timeout_seconds``."""
        state = TimedOut(message=f"Task run exceeded timeout of {self.task.timeout_seconds} second(s)")
        return self._failed(state, TimeoutError(state.message))

    def handle_crash(self, exc: BaseException) -> None:
        """Record Crashed at once (the process may be going down), before the interruption goes on."""
        crashed = Crashed(message=f"Execution was interrupted: {type(exc).__name__}")
        self.recorder.propose(crashed)
        self.recorder.flush()
        self.logger.error("Crashed: execution was interrupted by %s", type(exc).__name__)

    def _failed(self, state: State, exc: BaseException) -> State:
        """``state`` with the exception as its result; ``retry_condition_fn`` decides whether it is retried."""
        task = self.task
        state.result_ref = _results.persist_exception(self.store, exc, inline_max=self.settings.result_inline_max_bytes,
                                                      prefix=self.settings.results_prefix)
        if task.retry_condition_fn is not None and task.retries:
            try:
                state.state_details.retriable = bool(task.retry_condition_fn(task, self.task_ctx.task_run, state))
            except Exception:
                self.logger.exception("retry_condition_fn raised; the failure is not retried")
                state.state_details.retriable = False
        return state.with_data(exc)

    # -- the end -----------------------------------------------------------------------------------
    def end_run(self, final: State) -> State:
        """Store what is not stored yet, log the final state and call the matching hooks."""
        self.recorder.flush()
        if final.is_completed():
            self.logger.info("Finished in state %r", final)
            self.call_hooks(self.task.on_completion_hooks, final)
        else:
            self.logger.error("Finished in state %r", final)
            if final.type in (StateType.FAILED, StateType.CRASHED):
                self.call_hooks(self.task.on_failure_hooks, final)
        return final

    def call_hooks(self, hooks: list[Callable[..., None]], state: State) -> None:
        """Call each hook; one that raises is logged and does not change the run's state."""
        for hook in hooks:
            try:
                hook(self.task, self.recorder.run, state)
            except Exception:
                self.logger.exception("Hook %r failed", getattr(hook, "__name__", hook))


def run_task(
    task: Task[..., Any],
    parameters: dict[str, Any],
    wait_for: Any,
    flow_ctx: FlowRunContext | None,
    run_id: str | None = None,
) -> State:
    """Run one task run to a final state and return it (never raises the task's exception)."""
    return TaskRunEngine(task, parameters, flow_ctx, run_id).run(wait_for)


_standalone_lock = threading.Lock()
_standalone_pool: ThreadPoolExecutor | None = None


def _standalone_executor() -> ThreadPoolExecutor:
    """The process's pool for task runs submitted outside any flow run."""
    global _standalone_pool
    with _standalone_lock:
        if _standalone_pool is None:
            _standalone_pool = ThreadPoolExecutor(max_workers=get_settings().task_runner_max_workers,
                                                  thread_name_prefix="stratoflow-tasks")
        return _standalone_pool


def submit_task(task: Task[..., Any], parameters: dict[str, Any], wait_for: Any) -> StratoflowFuture[Any]:
    """Start a task run in the flow run's thread pool (a process-wide one outside flows), in a copy
    of the caller's context; its future is returned at once and the flow waits for it at its end."""
    flow_ctx = flow_run_ctx.get()
    executor = flow_ctx.executor() if flow_ctx is not None else _standalone_executor()
    run_id = new_id()
    ctx = contextvars.copy_context()
    inner = executor.submit(ctx.run, run_task, task, parameters, wait_for, flow_ctx, run_id)
    future: StratoflowFuture[Any] = StratoflowFuture(run_id, inner, task.name)
    if flow_ctx is not None:
        flow_ctx.futures.append(future)
    return future
