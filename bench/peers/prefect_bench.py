"""Prefect 3 side of the Stratoflow benchmark. Run with bench/.venvs/prefect/bin/python.

Prefect runs with its defaults (ephemeral local API server backed by SQLite under a temporary
PREFECT_HOME, default result persistence) and prints one JSON line on stdout.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import benchlib  # noqa: E402

benchlib.stdout_to_stderr()
args = benchlib.parse_args("Prefect 3 workload for the Stratoflow benchmark")

home = tempfile.mkdtemp(prefix="stratoflow-bench-prefect-")
# Never talk to a configured server/Cloud or the user's ~/.prefect: a fresh home and no API URL,
# so Prefect starts its own ephemeral server with a SQLite database in that home.
for var in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE", "PREFECT_PROFILES_PATH",
            "PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL"):
    os.environ.pop(var, None)
os.environ["PREFECT_HOME"] = home
os.environ["PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"] = "true"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ["PREFECT_SERVER_LOGGING_LEVEL"] = "WARNING"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"

t_start = time.perf_counter()

import prefect  # noqa: E402
from prefect import flow, task  # noqa: E402
from prefect.settings import get_current_settings  # noqa: E402

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


def main() -> None:
    # Warm-up: starts the ephemeral server (DB migrations), registers both flows.
    benchlib.check("warm-up flow", many(benchlib.WARMUP_TASKS), benchlib.WARMUP_TASKS)
    empty()
    startup_s = time.perf_counter() - t_start

    empty_s, out = benchlib.timed(empty)
    benchlib.check("empty flow", out, None)
    tasks_s, out = benchlib.timed(many, args.tasks)
    benchlib.check("task flow", out, args.tasks)
    runs_s, _ = benchlib.timed(flow_runs, args.flow_runs)

    settings = get_current_settings()
    storage = Path(settings.results.local_storage_path)
    stored = sum(1 for p in storage.rglob("*") if p.is_file()) if storage.exists() else 0
    persist = settings.results.persist_by_default
    notes = (
        f"ephemeral local API server (subprocess), SQLite at PREFECT_HOME={home}; "
        f"result persistence: Prefect defaults (PREFECT_RESULTS_PERSIST_BY_DEFAULT={persist}, "
        f"{stored} result files written to {storage.name}/); "
        "task/flow run states are recorded by the API server; PREFECT_LOGGING_LEVEL=WARNING"
    )
    benchlib.emit(benchlib.result(
        system=f"prefect {prefect.__version__}",
        version=prefect.__version__,
        startup_s=startup_s,
        empty_flow_s=empty_s,
        tasks=args.tasks,
        flow_tasks_s=tasks_s,
        flow_runs=args.flow_runs,
        flow_runs_s=runs_s,
        notes=notes,
        import_s=round(t_imported - t_start, 4),
        results_persist_by_default=persist,
        result_files_written=stored,
    ))


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(home, ignore_errors=True)
