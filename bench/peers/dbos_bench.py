"""DBOS Transact side of the Stratoflow benchmark. Run with bench/.venvs/dbos/bin/python.

DBOS runs in-process with a SQLite system database in a temporary directory. Every
``@DBOS.step()`` is checkpointed (its output written to the system database) before the
workflow moves on, which is what makes it the durable peer to compare with. Prints one JSON line.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import benchlib

benchlib.stdout_to_stderr()
args = benchlib.parse_args("DBOS Transact workload for the Stratoflow benchmark")

home = tempfile.mkdtemp(prefix="stratoflow-bench-dbos-")
db_path = os.path.join(home, "dbos_sys.sqlite")
# Make sure no DBOS Cloud / Conductor environment leaks in.
for var in ("DBOS__CLOUD", "DBOS__CONDUCTOR_KEY", "DBOS_SYSTEM_DATABASE_URL", "DBOS_DATABASE_URL"):
    os.environ.pop(var, None)

t_start = time.perf_counter()

from importlib.metadata import version as _dist_version  # noqa: E402

from dbos import DBOS  # noqa: E402

t_imported = time.perf_counter()

DBOS(
    config={
        "name": "stratoflow-bench",
        "system_database_url": f"sqlite:///{db_path}",
        "log_level": "WARNING",
    }
)


@DBOS.step()
def inc(x):
    return x + 1


@DBOS.workflow()
def many(n):
    x = 0
    for _ in range(n):
        x = inc(x)
    return x


@DBOS.workflow()
def empty():
    return None


def flow_runs(m):
    for _ in range(m):
        empty()


def main() -> None:
    DBOS.launch()  # creates/migrates the SQLite system database
    # Warm-up, as for the other systems: one small workflow with a few steps, one empty one.
    benchlib.check("warm-up workflow", many(benchlib.WARMUP_TASKS), benchlib.WARMUP_TASKS)
    empty()
    startup_s = time.perf_counter() - t_start

    empty_s, out = benchlib.timed(empty)
    benchlib.check("empty workflow", out, None)
    tasks_s, out = benchlib.timed(many, args.tasks)
    benchlib.check("step workflow", out, args.tasks)
    runs_s, _ = benchlib.timed(flow_runs, args.flow_runs)

    # How many step checkpoints actually landed in the system database (not timed).
    steps_recorded = None
    journal = "?"
    try:
        import sqlite3

        with sqlite3.connect(db_path) as con:
            journal = con.execute("PRAGMA journal_mode").fetchone()[0]
            steps_recorded = con.execute("SELECT COUNT(*) FROM operation_outputs").fetchone()[0]
    except Exception as exc:  # table name is an implementation detail; report, don't fail
        print(f"dbos_bench: could not count step checkpoints: {exc}", file=sys.stderr)

    ver = _dist_version("dbos")
    notes = (
        f"in-process, SQLite system database in a temp dir (journal_mode={journal}, "
        "synchronous left at the SQLite default); "
        "each @DBOS.step output checkpointed to the system DB before the next step runs; "
        "workflow status rows written at start and end of each workflow; log_level=WARNING"
    )
    benchlib.emit(
        benchlib.result(
            system=f"dbos {ver}",
            version=ver,
            startup_s=startup_s,
            empty_flow_s=empty_s,
            tasks=args.tasks,
            flow_tasks_s=tasks_s,
            flow_runs=args.flow_runs,
            flow_runs_s=runs_s,
            notes=notes,
            import_s=round(t_imported - t_start, 4),
            step_checkpoints_recorded=steps_recorded,
        )
    )


if __name__ == "__main__":
    try:
        main()
    finally:
        try:
            DBOS.destroy()
        finally:
            shutil.rmtree(home, ignore_errors=True)
