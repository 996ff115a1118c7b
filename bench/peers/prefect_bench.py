"""Prefect 3 side of the Stratoflow benchmark. Run with bench/.venvs/prefect/bin/python.

Prefect runs with its defaults: an ephemeral local API server (a subprocess started on first use)
backed by SQLite under a temporary PREFECT_HOME, default result persistence, default flow-run
heartbeats. Prints one JSON line on stdout.

Two Prefect behaviours shape the numbers, so the script measures around them rather than
letting one phase leak into the next:

* Task runs are recorded asynchronously: the client emits task-run state events and the
  server's task_run_recorder writes them to SQLite later (on a 2-core machine it falls far
  behind: tens of task runs per second). ``many(n)`` returns long before its task runs are
  recorded. After each task flow the script waits until the server has recorded all of them
  (``recorded_wait_s``) so the backlog does not slow the next phase, and reports
  ``per_task_recorded_ms`` = (task flow + that wait - empty flow) / tasks beside the
  client-visible ``per_task_ms``.
* Since Prefect 3.9 (heartbeat_frequency default 180 s) every flow run starts a heartbeat thread
  that sleeps in 1 s steps and is joined when the run ends, so a sync flow run's wall time is
  rounded up to roughly a whole second. The headline numbers use the defaults; the same
  phases are then repeated with PREFECT_FLOWS_HEARTBEAT_FREQUENCY=None and reported under
  ``variants`` as "heartbeats off".
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import benchlib

benchlib.stdout_to_stderr()
args = benchlib.parse_args("Prefect 3 workload for the Stratoflow benchmark")

home = tempfile.mkdtemp(prefix="stratoflow-bench-prefect-")
# Registered before Prefect is imported, so it runs after Prefect's own exit handlers
# (which stop the ephemeral server) have finished with the database.
atexit.register(shutil.rmtree, home, ignore_errors=True)
# Never talk to a configured server/Cloud or the user's ~/.prefect: a fresh home and no API URL,
# so Prefect starts its own ephemeral server with a SQLite database in that home.
for var in (
    "PREFECT_API_URL",
    "PREFECT_API_KEY",
    "PREFECT_PROFILE",
    "PREFECT_PROFILES_PATH",
    "PREFECT_API_DATABASE_CONNECTION_URL",
    "PREFECT_SERVER_DATABASE_CONNECTION_URL",
    "PREFECT_FLOWS_HEARTBEAT_FREQUENCY",
    "PREFECT_RUNNER_HEARTBEAT_FREQUENCY",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT",
):
    os.environ.pop(var, None)
os.environ["PREFECT_HOME"] = home
os.environ["PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"] = "true"
# The ephemeral server takes ~16-25 s to start on a busy 2-core machine, against a 20 s default
# limit; a larger limit only avoids a spurious failure, it changes no timing.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ["PREFECT_SERVER_LOGGING_LEVEL"] = "WARNING"
# No network here besides package registries: make sure nothing phones home.
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"

RECORD_POLL_S = 0.5

t_start = time.perf_counter()

import prefect  # noqa: E402
from prefect import flow, task  # noqa: E402
from prefect.client.orchestration import get_client  # noqa: E402
from prefect.settings import (  # noqa: E402
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    get_current_settings,
    temporary_settings,
)

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


class Recorder:
    """Waits until the API server has recorded the task runs the client has finished."""

    def __init__(self) -> None:
        self.expected = 0
        self.client = None
        self.error: str | None = None

    def completed_task_runs(self) -> int:
        if self.client is None:
            self.client = get_client(sync_client=True)
            self.client.__enter__()
        body = {"task_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}}
        # No public count method on the sync client; this is the API's /task_runs/count route.
        return int(self.client._client.post("/task_runs/count", json=body).json())

    def wait(self, new_tasks: int, timeout: float) -> tuple[float | None, int | None]:
        """Returns (seconds waited, task runs recorded); (None, n) if not all landed in time."""
        self.expected += new_tasks
        if self.error:
            return None, None
        t0 = time.perf_counter()
        try:
            while True:
                n = self.completed_task_runs()
                if n >= self.expected:
                    return time.perf_counter() - t0, n
                if time.perf_counter() - t0 > timeout:
                    print(
                        f"prefect_bench: only {n}/{self.expected} task runs recorded after {timeout:.0f}s; moving on",
                        file=sys.stderr,
                    )
                    return None, n
                time.sleep(RECORD_POLL_S)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            print(f"prefect_bench: cannot count task runs on the server: {self.error}", file=sys.stderr)
            return None, None

    def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.__exit__(None, None, None)


def phases(rec: Recorder) -> dict:
    """The timed workload: empty flow, flow of N tasks (then wait for recording), M empty flows."""
    empty_s, out = benchlib.timed(empty)
    benchlib.check("empty flow", out, None)
    tasks_s, out = benchlib.timed(many, args.tasks)
    benchlib.check("task flow", out, args.tasks)
    waited, recorded = rec.wait(args.tasks, timeout=max(120.0, 0.5 * args.tasks))
    runs_s, _ = benchlib.timed(flow_runs, args.flow_runs)
    return {
        "empty_flow_s": empty_s,
        "flow_tasks_s": tasks_s,
        "flow_runs_s": runs_s,
        "recorded_wait_s": None if waited is None else round(waited, 4),
        "per_task_recorded_ms": None
        if waited is None
        else round((tasks_s + waited - empty_s) / args.tasks * 1000.0, 4),
        "task_runs_recorded": recorded,
    }


def main() -> None:
    rec = Recorder()
    try:
        # Warm-up: starts the ephemeral server (DB migrations), registers both flows, and waits
        # for the warm-up's task runs to be recorded.
        benchlib.check("warm-up flow", many(benchlib.WARMUP_TASKS), benchlib.WARMUP_TASKS)
        empty()
        rec.wait(benchlib.WARMUP_TASKS, timeout=120.0)
        startup_s = time.perf_counter() - t_start

        settings = get_current_settings()
        heartbeat = settings.flows.heartbeat_frequency
        persist = settings.results.persist_by_default

        default = phases(rec)
        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            no_hb = phases(rec)
    finally:
        rec.close()

    storage = Path(settings.results.local_storage_path)
    stored = sum(1 for p in storage.rglob("*") if p.is_file()) if storage.exists() else 0
    version = prefect.__version__
    notes = (
        f"ephemeral local API server subprocess, SQLite under a temp PREFECT_HOME; "
        f"result persistence: Prefect defaults (PREFECT_RESULTS_PERSIST_BY_DEFAULT={persist}, "
        f"{stored} result files written); task runs recorded asynchronously by the server "
        f"(per_task_recorded_ms waits for them); flow-run heartbeats at the default "
        f"{heartbeat}s (each sync flow run waits up to ~1s joining the heartbeat thread); "
        "PREFECT_LOGGING_LEVEL=WARNING"
    )

    def payload(system: str, r: dict, notes: str, **extra) -> dict:
        return benchlib.result(
            system=system,
            version=version,
            startup_s=startup_s,
            empty_flow_s=r["empty_flow_s"],
            tasks=args.tasks,
            flow_tasks_s=r["flow_tasks_s"],
            flow_runs=args.flow_runs,
            flow_runs_s=r["flow_runs_s"],
            notes=notes,
            per_task_recorded_ms=r["per_task_recorded_ms"],
            recorded_wait_s=r["recorded_wait_s"],
            task_runs_recorded=r["task_runs_recorded"],
            **extra,
        )

    variant = payload(
        f"prefect {version} (heartbeats off)",
        no_hb,
        "same process and server as the headline row, run after it, with "
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY=None (the pre-3.9 default)",
        heartbeat_frequency=None,
    )
    benchlib.emit(
        payload(
            f"prefect {version}",
            default,
            notes,
            import_s=round(t_imported - t_start, 4),
            heartbeat_frequency=heartbeat,
            results_persist_by_default=persist,
            result_files_written=stored,
            variants=[variant],
        )
    )


if __name__ == "__main__":
    main()
