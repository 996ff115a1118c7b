"""Run logs: ``get_run_logger()``, print capture, and the batching writer.

Records go to a process-wide buffer; a background thread writes them to the logs table every
``log_flush_interval`` seconds or as soon as ``log_batch_size`` are waiting. A run's end flushes
synchronously, so a finished run's logs are all stored when the call returns. A hard crash
loses at most one interval of logs; the run's states are not delayed by logging.

Every line gets its id when it is emitted (``log_id``); stores key lines by timestamp and id, so
a write that is retried (a request whose answer was lost) stores no second copy.
"""

from __future__ import annotations

import builtins
import logging
import sys
import threading
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from stratoflow.context import flow_run_ctx, task_run_ctx
from stratoflow.exceptions import StratoflowError
from stratoflow.models import Log, log_id, next_log_seq
from stratoflow.settings import get_settings
from stratoflow.storage import get_store

if TYPE_CHECKING:
    from stratoflow.storage.base import Store

_print_to_log: ContextVar[bool] = ContextVar("stratoflow_log_prints", default=False)


# Tries of one log line's write before it is given up (and said so on stderr).
WRITE_ATTEMPTS = 3


class LogBuffer:
    def __init__(self, store: Store, interval: float, batch_size: int) -> None:
        self.store = store
        self.interval = interval
        self.batch_size = batch_size
        self._items: list[Log] = []
        self._cond = threading.Condition()
        self._writing = 0
        self._attempts: dict[str, int] = {}
        self._thread = threading.Thread(target=self._loop, name="stratoflow-logs", daemon=True)
        self._thread.start()
        self.errors = 0

    def add(self, log: Log) -> None:
        with self._cond:
            self._items.append(log)
            if len(self._items) >= self.batch_size:
                self._cond.notify_all()

    def _take(self) -> list[Log]:
        items, self._items = self._items, []
        self._writing += len(items)
        return items

    def _write(self, items: list[Log]) -> None:
        try:
            self.store.write_logs(items)
        except Exception as exc:  # never let logging break a run; say so on stderr
            self.errors += 1
            # Writes are idempotent (each line has its id): a failed batch goes back to the front
            # of the buffer and is tried again with the next write, up to WRITE_ATTEMPTS times.
            again: list[Log] = []
            for item in items:
                tries = self._attempts.pop(item.id or "", 0) + 1
                if tries < WRITE_ATTEMPTS:
                    self._attempts[item.id or ""] = tries
                    again.append(item)
            with self._cond:
                self._items[:0] = again
            lost = len(items) - len(again)
            what = f"gave up on {lost} after {WRITE_ATTEMPTS} tries" if lost else "they will be tried again"
            print(f"stratoflow: failed to store {len(items)} log lines ({what}): {exc}", file=sys.stderr)
        else:
            for item in items:
                self._attempts.pop(item.id or "", None)
        finally:
            with self._cond:
                self._writing -= len(items)
                self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: len(self._items) >= self.batch_size, timeout=self.interval)
                items = self._take()
            if items:
                self._write(items)

    def flush(self) -> None:
        """Write everything buffered so far, and wait for writes in flight."""
        with self._cond:
            items = self._take()
        if items:
            self._write(items)
        with self._cond:
            self._cond.wait_for(lambda: self._writing == 0, timeout=30)


_buffer: LogBuffer | None = None
_buffer_lock = threading.Lock()


def get_log_buffer(store: Store) -> LogBuffer:
    """The process's log buffer, writing to ``store`` (one writer thread per process)."""
    global _buffer

    with _buffer_lock:
        if _buffer is None:
            s = get_settings()
            _buffer = LogBuffer(store, s.log_flush_interval, s.log_batch_size)
        elif _buffer.store is not store:
            _buffer.flush()
            _buffer.store = store
        return _buffer


class RunLogHandler(logging.Handler):
    """Sends records that carry run ids (from a run logger) to the store's buffer."""

    def emit(self, record: logging.LogRecord) -> None:
        flow_run_id = getattr(record, "flow_run_id", None)
        task_run_id = getattr(record, "task_run_id", None)
        store = getattr(record, "stratoflow_store", None)
        if store is None or (flow_run_id is None and task_run_id is None):
            return
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            seq = next_log_seq()
            get_log_buffer(store).add(Log(
                flow_run_id=flow_run_id, task_run_id=task_run_id, name=record.name, level=record.levelno,
                message=message, timestamp=datetime.fromtimestamp(record.created, UTC), seq=seq, id=log_id(seq),
            ))
        except Exception:
            self.handleError(record)


class _ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        label = getattr(record, "run_label", None)
        ts = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        prefix = f"{ts} | {record.levelname:<7} | {label} - " if label else f"{ts} | {record.levelname:<7} | "
        text = prefix + record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


_configured = False
_config_lock = threading.Lock()


def setup_logging() -> None:
    """Attach Stratoflow's handlers to the ``stratoflow`` logger once per process."""
    global _configured
    with _config_lock:
        if _configured:
            return

        settings = get_settings()
        root = logging.getLogger("stratoflow")
        root.setLevel(settings.logging_level.upper())
        root.propagate = False
        root.addHandler(RunLogHandler())
        if settings.log_to_console:
            console = logging.StreamHandler(sys.stderr)
            console.setFormatter(_ConsoleFormatter())
            root.addHandler(console)
        _configured = True


class RunLogger(logging.LoggerAdapter):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


def run_logger(
    store: Store, *, flow_run_id: str | None, task_run_id: str | None, label: str, kind: str
) -> RunLogger:
    setup_logging()
    return RunLogger(logging.getLogger(f"stratoflow.{kind}_runs"), {
        "flow_run_id": flow_run_id, "task_run_id": task_run_id, "stratoflow_store": store, "run_label": label,
    })


def get_run_logger() -> RunLogger:
    """The logger of the current task run or flow run; its records are stored with the run."""

    task_ctx = task_run_ctx.get()
    flow_ctx = flow_run_ctx.get()
    if task_ctx is not None:
        tr = task_ctx.task_run
        store = flow_ctx.store if flow_ctx else _store_for_task()
        return run_logger(store, flow_run_id=tr.flow_run_id, task_run_id=tr.id,
                          label=f"Task run {tr.name!r}", kind="task")
    if flow_ctx is not None:
        fr = flow_ctx.flow_run
        return run_logger(flow_ctx.store, flow_run_id=fr.id, task_run_id=None,
                          label=f"Flow run {fr.name!r}", kind="flow")

    raise StratoflowError("get_run_logger() was called outside of a flow run or task run")


def _store_for_task() -> Store:

    return get_store()


# -- print capture (log_prints=True) ---------------------------------------------------------
_original_print = builtins.print


def _print(*args: Any, **kwargs: Any) -> None:
    target = kwargs.get("file")
    if _print_to_log.get() and (target is None or target is sys.stdout):
        sep = kwargs.get("sep", " ")
        sep = " " if sep is None else sep
        try:
            get_run_logger().info(sep.join(str(a) for a in args), extra={"stratoflow_print": True})
            return
        except Exception:  # nosec B110  # no run logger here: print as print would, below
            pass
    _original_print(*args, **kwargs)


def install_print_hook() -> None:
    if builtins.print is not _print:
        builtins.print = _print


print_to_log = _print_to_log
