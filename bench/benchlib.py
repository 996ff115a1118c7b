"""Shared plumbing for the benchmark scripts (stdlib only: it runs in every peer's venv).

Each benchmark script (``stratoflow_bench.py``, ``peers/prefect_bench.py``, ``peers/dbos_bench.py``)
does the same thing in the same order:

1. ``stdout_to_stderr()`` first, so anything a library prints goes to stderr and the script's
   stdout carries exactly one JSON line.
2. import the system and do a warm-up flow run with a few tasks (server start, DB migrations,
   imports); that whole stretch is ``startup_s``.
3. time one empty flow run (``empty_flow_s``), one flow of N sequential tasks
   (``flow_1000_tasks_s``) and M empty flow runs back to back (``flow_runs_s``).
4. ``emit()`` the JSON line with the derived overheads:
   per_task_ms = (flow_1000_tasks_s - empty_flow_s) / N * 1000, per_flow_run_ms = flow_runs_s / M * 1000.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

DEFAULT_TASKS = 1000
DEFAULT_FLOW_RUNS = 50
WARMUP_TASKS = 3

_real_stdout_fd: int | None = None


def stdout_to_stderr() -> None:
    """Point fd 1 (and ``sys.stdout``) at stderr; ``emit`` writes to the saved real stdout."""
    global _real_stdout_fd
    if _real_stdout_fd is not None:
        return
    sys.stdout.flush()
    _real_stdout_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr


def parse_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--tasks", type=int, default=DEFAULT_TASKS, help=f"sequential tasks in the big flow (default {DEFAULT_TASKS})"
    )
    p.add_argument(
        "--flow-runs",
        type=int,
        default=DEFAULT_FLOW_RUNS,
        help=f"empty flow runs called back to back (default {DEFAULT_FLOW_RUNS})",
    )
    args = p.parse_args(argv)
    if args.tasks < 1 or args.flow_runs < 1:
        p.error("--tasks and --flow-runs must be >= 1")
    return args


def timed(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def check(what: str, got: Any, expected: Any) -> None:
    if got != expected:
        raise SystemExit(f"benchmark sanity check failed: {what} returned {got!r}, expected {expected!r}")


def result(
    *,
    system: str,
    version: str,
    startup_s: float,
    empty_flow_s: float,
    tasks: int,
    flow_tasks_s: float,
    flow_runs: int,
    flow_runs_s: float,
    notes: str,
    **extra: Any,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "system": system,
        "version": version,
        "startup_s": round(startup_s, 4),
        "empty_flow_s": round(empty_flow_s, 5),
        "tasks": tasks,
        "flow_1000_tasks_s": round(flow_tasks_s, 4),
        "per_task_ms": round((flow_tasks_s - empty_flow_s) / tasks * 1000.0, 4),
        "flow_runs": flow_runs,
        "flow_runs_s": round(flow_runs_s, 4),
        "per_flow_run_ms": round(flow_runs_s / flow_runs * 1000.0, 4),
        "notes": notes,
    }
    out.update(extra)
    out.setdefault("python", platform.python_version())
    return out


def emit(payload: dict[str, Any]) -> None:
    line = json.dumps(payload, sort_keys=False) + "\n"
    sys.stderr.flush()
    if _real_stdout_fd is None:
        sys.stdout.write(line)
        sys.stdout.flush()
    else:
        os.write(_real_stdout_fd, line.encode())


def call_from_threads(create: Callable[[int], Any], runs: int, threads: int) -> tuple[float, float, list[Any]]:
    """Call ``create(i)`` for i in range(runs) from ``threads`` threads; (first wall time, seconds,
    results in order). The first error stops the other threads and is raised."""
    created: list[Any] = [None] * runs
    errors: list[BaseException] = []
    next_i = iter(range(runs))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                i = next(next_i, None)
            if i is None or errors:
                return
            try:
                created[i] = create(i)
            except BaseException as exc:
                errors.append(exc)
                return

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    first = time.time()
    t0 = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]
    return first, time.perf_counter() - t0, created
