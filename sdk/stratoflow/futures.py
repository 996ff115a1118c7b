"""Futures returned by ``task.submit()`` and ``task.map()``."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from stratoflow.exceptions import UpstreamTaskError
from stratoflow.orchestration import RunKind
from stratoflow.states import Pending, State
from stratoflow.storage import get_store

R = TypeVar("R")


class StratoflowFuture(Generic[R]):
    """A task run executing in the flow's thread pool. ``result()`` waits and returns its value
    (raising its exception if it failed), ``wait()`` waits, ``state`` is its state now."""

    def __init__(self, task_run_id: str, inner: concurrent.futures.Future[State], name: str) -> None:
        self.task_run_id = task_run_id
        self.name = name
        self._inner = inner

    def wait(self, timeout: float | None = None) -> None:
        concurrent.futures.wait([self._inner], timeout=timeout)

    @property
    def state(self) -> State:
        if self._inner.done():
            return self._inner.result()

        try:
            run = get_store().read_run(RunKind.TASK, self.task_run_id)
        except Exception:
            run = None
        if run is not None and run.state is not None:
            return run.state

        return Pending()

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> R:
        try:
            state = self._inner.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"task run {self.name!r} did not finish within {timeout}s") from None
        return state.result(raise_on_failure=raise_on_failure)

    def done(self) -> bool:
        return self._inner.done()

    def add_done_callback(self, fn: Any) -> None:
        self._inner.add_done_callback(lambda _f: fn(self))

    def __repr__(self) -> str:
        return f"StratoflowFuture({self.name!r}, done={self.done()})"


class StratoflowFutureList(list[StratoflowFuture[R]]):
    """The futures of a ``map``: ``result()`` gives the values in order."""

    def wait(self, timeout: float | None = None) -> None:
        concurrent.futures.wait([f._inner for f in self], timeout=timeout)

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> list[R]:
        return [f.result(timeout=timeout, raise_on_failure=raise_on_failure) for f in self]


def wait(futures: Iterable[StratoflowFuture[Any]], timeout: float | None = None) -> None:
    concurrent.futures.wait([f._inner for f in futures], timeout=timeout)


def resolve_futures(value: Any, _depth: int = 0) -> tuple[Any, list[StratoflowFuture[Any]]]:
    """Replace futures (and states) inside lists/tuples/sets/dicts with their results.

    Returns the resolved value and the futures it waited on. Raises UpstreamTaskError naming the
    first upstream that did not complete.
    """

    seen: list[StratoflowFuture[Any]] = []

    def visit(v: Any, depth: int) -> Any:
        if isinstance(v, StratoflowFuture):
            seen.append(v)
            state = v._inner.result()
            if not state.is_completed():
                raise UpstreamTaskError(f"upstream task run {v.name!r} did not complete: {state!r}")
            return state.result()
        if isinstance(v, State):
            if not v.is_completed():
                raise UpstreamTaskError(f"upstream state {v!r} did not complete")
            return v.result()
        if depth > 10:
            return v
        if isinstance(v, list):
            return [visit(x, depth + 1) for x in v]
        if isinstance(v, tuple) and not hasattr(v, "_fields"):
            return tuple(visit(x, depth + 1) for x in v)
        if isinstance(v, dict):
            return {k: visit(x, depth + 1) for k, x in v.items()}
        if isinstance(v, set | frozenset):
            return type(v)(visit(x, depth + 1) for x in v)
        return v

    return visit(value, _depth), seen
