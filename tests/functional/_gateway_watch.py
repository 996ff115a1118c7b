"""Proof, on every functional test, that every state change passes the transition gateway.

``watch()`` wraps the run writes of every store backend (``create_run``, ``commit_run``,
``create_final_task_run``, ``create_flow_run_idempotent``) and listens to the gateway's
after-commit hook. Two things must hold when a test ends:

* every run write made by package code above the storage layer was called from
  ``stratoflow/control/transitions.py`` (tests may write runs directly to set a scene, and the
  storage layer composes its own primitives, e.g. the outbox's batch writes);
* every write the gateway made to a store that commits (not a remote one) was followed by exactly
  one after-commit notice for that run and version: the hook sees every transition.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import stratoflow
from stratoflow.control import transitions
from stratoflow.storage.api_store import ApiStore
from stratoflow.storage.dynamodb import DynamoDBStore

PACKAGE = Path(stratoflow.__file__).resolve().parent
GATEWAY = PACKAGE / "control" / "transitions.py"
STORAGE = PACKAGE / "storage"
WRITES = ("create_run", "commit_run", "create_final_task_run", "create_flow_run_idempotent")


class Watch:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bypasses: list[str] = []
        self.written: Counter[tuple[str, int]] = Counter()
        self.noticed: Counter[tuple[str, int]] = Counter()
        self.gateway_writes = 0

    def check(self) -> None:
        assert not self.bypasses, "run writes that bypassed the transition gateway:\n" + "\n".join(self.bypasses)
        for _ in range(50):  # a write on another thread may be between its store call and its notice
            with self.lock:
                if self.written == self.noticed:
                    return
            time.sleep(0.02)
        with self.lock:
            missing = self.written - self.noticed
            extra = self.noticed - self.written
        raise AssertionError(f"gateway writes without exactly one after-commit notice: missing {dict(missing)}, "
                             f"extra {dict(extra)}")


def _caller() -> Path:
    frame = sys._getframe(2)  # the caller of the wrapped store method
    return Path(frame.f_code.co_filename).resolve()


def _wrap(watch: Watch, cls: type, name: str) -> Callable[..., Any]:
    original = cls.__dict__[name]

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        caller = _caller()
        result = original(self, *args, **kwargs)
        from_gateway = caller == GATEWAY
        inside_package = caller.is_relative_to(PACKAGE) and not caller.is_relative_to(STORAGE)
        if inside_package and not from_gateway:
            frame = sys._getframe(1)
            with watch.lock:
                watch.bypasses.append(f"{cls.__name__}.{name} called from {caller}:{frame.f_lineno}")
        if from_gateway and not self.remote:
            run, created = result if name == "create_flow_run_idempotent" else (result, True)
            if created:
                with watch.lock:
                    watch.written[(run.id, run.version)] += 1
                    watch.gateway_writes += 1
        return result

    return wrapper


@contextmanager
def watch(monkeypatch: Any) -> Iterator[Watch]:
    w = Watch()
    for cls in (DynamoDBStore, ApiStore):
        for name in WRITES:
            if name in cls.__dict__:
                monkeypatch.setattr(cls, name, _wrap(w, cls, name))

    def notice(event: transitions.Committed) -> None:
        with w.lock:
            w.noticed[(event.run.id, event.run.version)] += 1

    remove = transitions.on_commit(notice)
    try:
        yield w
    finally:
        remove()
