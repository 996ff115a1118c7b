"""Run contexts: which flow run / task run the current code executes in."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stratoflow.flows import Flow
    from stratoflow.futures import StratoflowFuture
    from stratoflow.models import FlowRun, TaskRun
    from stratoflow.settings import Settings
    from stratoflow.storage.base import Store
    from stratoflow.tasks import Task


@dataclass
class FlowRunContext:
    flow: Flow[Any, Any]
    flow_run: FlowRun
    store: Store
    settings: Settings
    parameters: dict[str, Any]
    log_prints: bool = False
    _executor: ThreadPoolExecutor | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    futures: list[StratoflowFuture[Any]] = field(default_factory=list)
    _dynamic_keys: dict[str, int] = field(default_factory=dict)

    def executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.settings.task_runner_max_workers,
                    thread_name_prefix=f"stratoflow-{self.flow_run.name}",
                )
            return self._executor

    def next_dynamic_key(self, task_key: str) -> str:
        with self._lock:
            n = self._dynamic_keys.get(task_key, 0)
            self._dynamic_keys[task_key] = n + 1
            return str(n)

    def shutdown(self, wait: bool = True) -> None:
        """Stop the task pool; ``wait=False`` abandons task threads still running (the executor's
        deadline passed: waiting for them could outlive the Lambda invocation)."""
        if self._executor is not None:
            self._executor.shutdown(wait=wait, cancel_futures=not wait)


@dataclass
class TaskRunContext:
    task: Task[Any, Any]
    task_run: TaskRun
    parameters: dict[str, Any]
    log_prints: bool = False


flow_run_ctx: ContextVar[FlowRunContext | None] = ContextVar("stratoflow_flow_run", default=None)
task_run_ctx: ContextVar[TaskRunContext | None] = ContextVar("stratoflow_task_run", default=None)
_tags: ContextVar[tuple[str, ...]] = ContextVar("stratoflow_tags", default=())


def get_run_context() -> FlowRunContext | TaskRunContext | None:
    """The innermost run context: the task run if inside one, else the flow run."""
    return task_run_ctx.get() or flow_run_ctx.get()


@contextlib.contextmanager
def tags(*new_tags: str) -> Iterator[tuple[str, ...]]:
    """Add tags to every flow run and task run created inside this block."""
    current = _tags.get()
    token = _tags.set(tuple(dict.fromkeys((*current, *new_tags))))
    try:
        yield _tags.get()
    finally:
        _tags.reset(token)


def current_tags() -> tuple[str, ...]:
    return _tags.get()
