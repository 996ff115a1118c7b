#!/usr/bin/env python3
"""Scheduling delay on the local cloud: slot time to Running for an every-second interval schedule.

    .venv/bin/python bench/scheduling_delay.py               # 30 slots
    .venv/bin/python bench/scheduling_delay.py --slots 60 --interval 2

Starts ``stratoflow dev --port 0 --executor-concurrency 8`` in a subprocess (see
deployment_throughput.py), deploys ``tick(i: int = 0) -> int`` from a temporary directory with an
interval schedule (1 s by default; the shortest Stratoflow accepts), waits until ``--slots`` runs
whose slot came after the first ``--skip`` slots have completed, then pauses the deployment.

The scheduler loop of ``stratoflow dev`` plays EventBridge Scheduler: it fires each slot through the
scheduler function, which creates the run (idempotency key = deployment, schedule, slot) and sends
it to the pool's SQS queue; the executor function claims and runs it. For each run:

* ``slot``: the run's ``expected_start_time`` (the Scheduled state's ``scheduled_time``);
* ``created_ms``  = Scheduled state timestamp - slot (the schedule firing and the run being created);
* ``claim_ms``    = Pending timestamp - slot;
* ``running_ms``  = Running timestamp - slot: **the scheduling delay**, reported as p50/p95/max.

No Prefect comparison (a Prefect server and ``flow.serve`` with an interval schedule would measure
the Runner's poll interval, 10 s by default, more than anything else; see the README).
One JSON line on stdout, the same document in bench/results/scheduling_delay.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import benchlib  # noqa: E402
from deployment_throughput import RESULTS, deploy_flow, load_average, local_cloud, summary_ms  # noqa: E402

FLOW_SOURCE = '''from stratoflow import flow


@flow
def tick(i: int = 0) -> int:
    return i
'''


def measure(slots: int, skip: int, interval: float, timeout: float) -> dict[str, Any]:
    started = time.perf_counter()
    with local_cloud(RESULTS / "scheduling_delay_dev.log"):
        from stratoflow import __version__ as version
        from stratoflow import get_client

        client = get_client()
        dep = deploy_flow(FLOW_SOURCE, "ticks.py:tick", "every-second", interval=interval)
        deployed_at = time.time()
        print(f"[bench] deployed with an interval of {interval}s after {time.perf_counter() - started:.1f}s; "
              f"waiting for {skip + slots} slots", file=sys.stderr, flush=True)
        deadline = time.monotonic() + timeout
        runs: list[Any] = []
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(deployment_id=dep.id, limit=1000)
            done = [r for r in runs if r.state is not None and r.state.is_final()]
            if len(done) >= skip + slots:
                break
            time.sleep(1.0)
        client.pause_deployment(dep.id)
        runs = [client.read_flow_run(r.id) for r in runs if r.state is not None and r.state.is_final()]
    runs.sort(key=lambda r: r.expected_start_time or r.created)
    measured = runs[skip:skip + slots]
    created, claim, running, rows = [], [], [], []
    for r in measured:
        slot = r.expected_start_time
        if slot is None:
            sched = next((s for s in r.state_history if s.name == "Scheduled"), None)
            slot = sched.state_details.scheduled_time if sched else None
        if slot is None:
            continue
        t = {s.name: s.timestamp for s in reversed(r.state_history)}  # first occurrence wins
        row: dict[str, Any] = {"slot": slot.isoformat(), "state": r.state_name}
        for key, name, into in (("created_ms", "Scheduled", created), ("claim_ms", "Pending", claim),
                                ("running_ms", "Running", running)):
            if name in t:
                delta = (t[name] - slot).total_seconds()
                into.append(delta)
                row[key] = round(delta * 1000.0, 1)
        rows.append(row)
    slot_times = sorted(r.expected_start_time for r in measured if r.expected_start_time)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(slot_times)]
    return {
        "system": f"stratoflow {version} (local cloud)",
        "key": "stratoflow",
        "status": "ok",
        "interval_s": interval,
        "slots_measured": len(rows),
        "slots_skipped": skip,
        "completed": sum(1 for r in measured if r.state_name == "Completed"),
        "missing_or_doubled_slots": sum(1 for g in gaps if abs(g - interval) > 1e-6),
        "scheduling_delay_ms": summary_ms(running),
        # The schedule's first slots queue up behind the cloud's cold start; the tail shows the steady state.
        "scheduling_delay_last_20_ms": summary_ms(running[-20:]),
        "claim_ms": summary_ms(claim),
        "created_ms": summary_ms(created),
        "deployed_at": datetime.fromtimestamp(deployed_at).astimezone().isoformat(timespec="seconds"),
        "runs": rows,
        "notes": ("stratoflow dev subprocess: its scheduler loop (1 s tick) fires the interval schedule through the "
                  "scheduler function, the run goes through the pool's SQS queue to the executor function "
                  "(--executor-concurrency 8); delay = Running timestamp - slot (expected_start_time)"),
    }


def main(argv: list[str] | None = None) -> int:
    benchlib.stdout_to_stderr()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slots", type=int, default=30, help="slots measured (default 30)")
    p.add_argument("--skip", type=int, default=2, help="first slots left out as a warm-up (default 2)")
    p.add_argument("--interval", type=float, default=1.0, help="schedule interval in seconds (default 1)")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--output", type=Path, default=RESULTS / "scheduling_delay.json")
    args = p.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    load = load_average()
    doc: dict[str, Any] = {
        "benchmark": "scheduling_delay",
        "started_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "loadavg_at_start": None if load is None else round(load, 2),
                    "python": sys.version.split()[0]},
    }
    try:
        doc["results"] = [measure(args.slots, args.skip, args.interval, args.timeout)]
    except Exception as exc:
        doc["results"] = [{"system": "stratoflow (local cloud)", "key": "stratoflow", "status": "failed",
                           "error": f"{type(exc).__name__}: {exc}"}]
    doc["loadavg_at_end"] = load_average()
    r = doc["results"][0]
    if r["status"] == "ok":
        d, c = r["scheduling_delay_ms"], r["created_ms"]
        doc["markdown"] = (
            f"Scheduling delay (slot -> Running), interval {r['interval_s']} s, {r['slots_measured']} slots: "
            f"p50 {d['p50']} ms, p95 {d['p95']} ms, max {d['max']} ms (slot -> run created: p50 {c['p50']} ms); "
            f"{r['completed']} completed, {r['missing_or_doubled_slots']} missing/doubled slots\n")
    else:
        doc["markdown"] = f"Scheduling delay: failed: {r['error']}\n"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(doc, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(doc["markdown"])
    print(doc["markdown"], file=sys.stderr)
    benchlib.emit(doc)
    return 0 if r["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
