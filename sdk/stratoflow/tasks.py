"""``@task``: the Task object users decorate, call, submit and map.

Each call runs one task run through ``stratoflow.engine.task_engine`` (``run_task``), which
records it with a ``TaskRunRecorder``; ``.submit``/``.map`` start it in the flow run's thread
pool there (``submit_task``). Those engine names stay importable from here, as before.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, cast, overload

from stratoflow.cache_policies import NO_CACHE, CachePolicy, Inputs
from stratoflow.context import TaskRunContext, flow_run_ctx
from stratoflow.engine.task_engine import TaskRunRecorder, run_task, submit_task
from stratoflow.engine.task_engine import verified_cache_lookup as verified_cache_lookup
from stratoflow.futures import StratoflowFuture, StratoflowFutureList
from stratoflow.models import TaskRun
from stratoflow.states import State

if TYPE_CHECKING:
    from stratoflow.context import FlowRunContext

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


# -- the Task object ----------------------------------------------------------------------------
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
        return submit_task(self, parameters, wait_for)

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
            futures.append(submit_task(self, call, wait_for))
        return futures

    def __repr__(self) -> str:
        return f"Task({self.name!r})"


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
