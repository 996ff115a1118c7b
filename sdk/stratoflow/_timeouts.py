"""Stopping a run that exceeds its ``timeout_seconds``.

In the main thread a real-time timer signal (SIGALRM) interrupts even a blocking call such as
``time.sleep``. In other threads Python offers no such interrupt; a watchdog raises the timeout
asynchronously in the thread, which takes effect at its next Python bytecode (a long blocking C
call finishes first). Nested scopes keep the earliest deadline.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

# Active main-thread deadlines: (monotonic deadline, exception class or foreign handler).
_main_deadlines: list[tuple[float, Any]] = []


# Deadlines that have fired: each raises once. (Re-arming for a fired one fired it again every
# 0.1 ms until its scope ended, and one of those landed in the handler of the first.)
_fired: set[int] = set()


def _arm_main() -> None:
    pending = [d[0] for d in _main_deadlines if id(d) not in _fired]
    if not pending:
        signal.setitimer(signal.ITIMER_REAL, 0)
        return
    signal.setitimer(signal.ITIMER_REAL, max(min(pending) - time.monotonic(), 1e-4))


def _on_alarm(signum: int, frame: Any) -> None:
    now = time.monotonic()
    due = sorted((d for d in _main_deadlines if d[0] <= now + 1e-4 and id(d) not in _fired), key=lambda d: d[0])
    for entry in due:
        _, action = entry
        if isinstance(action, type) and issubclass(action, BaseException):
            _fired.add(id(entry))
            _arm_main()
            raise action("timed out after its timeout_seconds")
        # A timer someone else had set before us (e.g. pytest-timeout): hand it its signal.
        _main_deadlines.remove(entry)
        _arm_main()
        action(signum, frame)
        return
    _arm_main()


@contextlib.contextmanager
def timeout_scope(seconds: float | None, exc_type: type[BaseException]) -> Iterator[None]:
    if not seconds or seconds <= 0:
        yield
        return
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield from _thread_scope(seconds, exc_type)
        return
    previous = signal.getsignal(signal.SIGALRM)
    outermost = previous is not _on_alarm
    foreign: tuple[float, Any] | None = None
    if outermost:
        remaining, _interval = signal.getitimer(signal.ITIMER_REAL)
        if remaining > 0 and callable(previous):
            # Keep the other timer: it fires through us at its own deadline.
            foreign = (time.monotonic() + remaining, previous)
            _main_deadlines.append(foreign)
        signal.signal(signal.SIGALRM, _on_alarm)
    entry = (time.monotonic() + seconds, exc_type)
    _main_deadlines.append(entry)
    _arm_main()
    try:
        yield
    finally:
        _main_deadlines.remove(entry)
        _fired.discard(id(entry))
        if outermost:
            pending = foreign in _main_deadlines if foreign is not None else False
            if foreign is not None and pending:
                _main_deadlines.remove(foreign)
            _arm_main()
            signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)
            if foreign is not None and pending:
                signal.setitimer(signal.ITIMER_REAL, max(foreign[0] - time.monotonic(), 1e-4))
        else:
            _arm_main()


def _thread_scope(seconds: float, exc_type: type[BaseException]) -> Iterator[None]:
    target = threading.get_ident()
    done = threading.Event()
    lock = threading.Lock()

    def fire() -> None:
        with lock:
            if not done.is_set():
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(target), ctypes.py_object(exc_type))

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        with lock:
            done.set()
        timer.cancel()
