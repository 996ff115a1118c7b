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

_main_deadlines: list[tuple[float, type[BaseException]]] = []


def _arm_main() -> None:
    if not _main_deadlines:
        signal.setitimer(signal.ITIMER_REAL, 0)
        return
    deadline, _ = min(_main_deadlines, key=lambda d: d[0])
    signal.setitimer(signal.ITIMER_REAL, max(deadline - time.monotonic(), 1e-4))


def _on_alarm(signum: int, frame: object) -> None:
    now = time.monotonic()
    due = [d for d in _main_deadlines if d[0] <= now + 1e-4]
    if due:
        raise due[0][1]("timed out after its timeout_seconds")
    _arm_main()


@contextlib.contextmanager
def timeout_scope(seconds: float | None, exc_type: type[BaseException]) -> Iterator[None]:
    if not seconds or seconds <= 0:
        yield
        return
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        previous = signal.getsignal(signal.SIGALRM)
        if previous not in (signal.SIG_DFL, _on_alarm, None, signal.SIG_IGN):
            yield from _thread_scope(seconds, exc_type)
            return
        entry = (time.monotonic() + seconds, exc_type)
        signal.signal(signal.SIGALRM, _on_alarm)
        _main_deadlines.append(entry)
        _arm_main()
        try:
            yield
        finally:
            _main_deadlines.remove(entry)
            _arm_main()
            if not _main_deadlines:
                signal.signal(signal.SIGALRM, previous or signal.SIG_DFL)
    else:
        yield from _thread_scope(seconds, exc_type)


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
