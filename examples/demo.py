"""`make demo`: run the examples on the embedded local cloud and show what was recorded.

Everything printed after the runs is read back from the (moto) DynamoDB tables through
``get_client()``, the same way you would inspect runs of a deployed stack.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOME = ROOT / ".stratoflow" / "demo"

# A fresh embedded cloud for every demo, before stratoflow reads its settings.
shutil.rmtree(HOME, ignore_errors=True)
os.environ["STRATOFLOW_HOME"] = str(HOME)
os.environ.setdefault("STRATOFLOW_LOG_TO_CONSOLE", "false")
os.environ.setdefault("STRATOFLOW_BACKEND", "embedded")
sys.path.insert(0, str(ROOT / "examples"))

from etl import etl  # noqa: E402
from scheduled import quarter_hour_report  # noqa: E402
from subflow_caching import global_report  # noqa: E402

from stratoflow import get_client  # noqa: E402
from stratoflow.cli import _colour, _duration, _run_duration, table  # noqa: E402


def main() -> int:
    started = time.perf_counter()
    print("Stratoflow demo: embedded local cloud (moto, in-process), journal at", HOME / "embedded")
    from stratoflow.storage import get_store

    t0 = time.perf_counter()
    get_store()  # imports moto and creates the tables and bucket on first use
    print(f"  local cloud up in {time.perf_counter() - t0:.2f}s (tables and bucket created)")
    runs = []
    for label, fn in (("etl", etl), ("global-report", global_report), ("quarter-hour-report", quarter_hour_report)):
        t0 = time.perf_counter()
        state = fn(return_state=True)
        print(f"  ran {label:<20} -> {_colour(state.name, state.type.value)} in {time.perf_counter() - t0:.2f}s"
              f"  result={state.result(raise_on_failure=False)!r}")
        runs.append(state)

    client = get_client()
    flow_runs = sorted(client.read_flow_runs(limit=50), key=lambda r: r.created)
    print("\nFlow runs (read back from DynamoDB)")
    print(table(
        [(r.flow_name, r.name, r.state_name, r.run_count, _duration(_run_duration(r)),
          len(client.read_task_runs(r.id)), "subflow" if r.parent_flow_run_id else "") for r in flow_runs],
        ["FLOW", "RUN", "STATE", "RUNS", "DURATION", "TASKS", ""], 2, [r.state_type for r in flow_runs],
    ))

    for run in flow_runs:
        tasks = client.read_task_runs(run.id)
        kind = "subflow run" if run.parent_flow_run_id else "flow run"
        print(f"\nTask runs of {kind} {run.flow_name} / {run.name}")
        print(table(
            [(t.name, t.state_name, t.run_count, _duration(_run_duration(t)),
              " -> ".join(s.name for s in t.state_history)) for t in tasks],
            ["TASK RUN", "STATE", "RUNS", "DURATION", "STATE HISTORY"], 1, [t.state_type for t in tasks],
        ))
        print(f"\nLogs of {kind} {run.flow_name} / {run.name}")
        for log in client.iter_logs(run.id):
            first_line = log.message.splitlines()[0]
            print(f"  {log.timestamp.astimezone().strftime('%H:%M:%S.%f')[:-3]}  {log.name.split('.')[-1]:<9}"
                  f" {first_line}")

    print("\nUI: not built yet (the UI issue adds it; `stratoflow dev` will print its address).")
    print("CLI: .venv/bin/stratoflow flow-run ls   (with STRATOFLOW_HOME=" + str(HOME) + ")")
    ok = all(s.is_completed() for s in runs)
    print(f"\nDemo finished in {time.perf_counter() - started:.1f}s: "
          f"{'all flows completed' if ok else 'some flows did not complete'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
