"""Stratoflow side of the benchmark. Run with the project's interpreter (.venv/bin/python).

Uses only the public API (``from stratoflow import flow, task``) with the embedded default
backend (in-process moto, journaled under $STRATOFLOW_HOME, which is pointed at a fresh
temporary directory before stratoflow is imported). Same workload, same order and same JSON
line as bench/peers/prefect_bench.py and bench/peers/dbos_bench.py.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib

benchlib.stdout_to_stderr()
args = benchlib.parse_args("Stratoflow workload for the benchmark")

home = tempfile.mkdtemp(prefix="stratoflow-bench-stratoflow-")
atexit.register(shutil.rmtree, home, ignore_errors=True)
os.environ["STRATOFLOW_HOME"] = home
# The embedded default unless the caller explicitly chose another backend.
os.environ.setdefault("STRATOFLOW_BACKEND", "embedded")
# Same console noise level as the peers (Prefect: PREFECT_LOGGING_LEVEL=WARNING).
os.environ.setdefault("STRATOFLOW_LOGGING_LEVEL", "WARNING")

t_start = time.perf_counter()

import stratoflow  # noqa: E402
from stratoflow import flow, task  # noqa: E402

t_imported = time.perf_counter()


@task
def inc(x):
    return x + 1


@flow
def many(n):
    x = 0
    for _ in range(n):
        x = inc(x)
    return x


@flow
def empty():
    return None


def flow_runs(m):
    for _ in range(m):
        empty()


def _describe_settings() -> str:
    """Best-effort description of the settings that matter for the comparison."""
    try:
        s = stratoflow.get_settings()
        return f"backend={s.resolved_backend}, persist_results={s.persist_results}, embedded_fsync={s.embedded_fsync}"
    except Exception:  # settings API still moving; the numbers don't depend on this
        return f"STRATOFLOW_BACKEND={os.environ.get('STRATOFLOW_BACKEND')}"


def main() -> None:
    # Warm-up: the embedded backend's start-up (moto, tables, journal) and both flows' first run.
    benchlib.check("warm-up flow", many(benchlib.WARMUP_TASKS), benchlib.WARMUP_TASKS)
    empty()
    startup_s = time.perf_counter() - t_start

    empty_s, out = benchlib.timed(empty)
    benchlib.check("empty flow", out, None)
    tasks_s, out = benchlib.timed(many, args.tasks)
    benchlib.check("task flow", out, args.tasks)
    runs_s, _ = benchlib.timed(flow_runs, args.flow_runs)

    version = getattr(stratoflow, "__version__", "unknown")
    notes = (
        f"embedded local backend (in-process moto) under a temp STRATOFLOW_HOME; "
        f"{_describe_settings()}; STRATOFLOW_LOGGING_LEVEL="
        f"{os.environ.get('STRATOFLOW_LOGGING_LEVEL')}"
    )
    benchlib.emit(
        benchlib.result(
            system=f"stratoflow {version}",
            version=version,
            startup_s=startup_s,
            empty_flow_s=empty_s,
            tasks=args.tasks,
            flow_tasks_s=tasks_s,
            flow_runs=args.flow_runs,
            flow_runs_s=runs_s,
            notes=notes,
            import_s=round(t_imported - t_start, 4),
        )
    )


if __name__ == "__main__":
    main()
