#!/usr/bin/env python3
"""Deployment throughput: 500 empty deployment runs, trigger to Completed, Stratoflow's local cloud
beside Prefect 3's ``flow.serve``.

    .venv/bin/python bench/deployment_throughput.py                        # both, 500 runs each
    .venv/bin/python bench/deployment_throughput.py --only stratoflow --runs 100   # quick check

Stratoflow: starts the local cloud in a subprocess (``python -m stratoflow.cli dev --port 0
--executor-concurrency 8``: moto, the API function, the executor function fed by the work pools'
SQS queues, the scheduler and the janitor), creates a ``lambda`` work pool, deploys
``empty(i: int = 0) -> int`` from a temporary directory (packaged to S3), then creates the runs with
``create_flow_run_from_deployment`` over the API from a few threads as fast as it can, and polls
the by-state index (``read_flow_runs(deployment_id=..., state_types=["COMPLETED"])``, one request
per poll, never one per run) until every run is Completed.

Prefect: ``bench/peers/prefect_serve_bench.py`` in Prefect's venv (bench/.venvs/prefect): it starts
``prefect server start`` (SQLite) in a subprocess, serves the same flow with ``flow.serve`` in
another, triggers the runs with ``run_deployment(..., timeout=0)`` and waits for them the same way.

Metrics, the same for both, from each run's state history as the server recorded it:

* ``runs_per_s``: runs / (last Completed timestamp - first trigger), wall clock on one machine;
* ``latency_ms``: p50/p95/p99/max of Completed timestamp - Scheduled timestamp (the Scheduled
  state is written when the trigger creates the run);
* ``claim_ms``: p50/p95/p99/max of Pending timestamp - Scheduled timestamp (trigger to claimed);
* ``trigger_s``: how long creating all the runs took, client side.

One JSON line on stdout (benchlib's convention), the same document in
bench/results/deployment_throughput.json; logs of the subprocesses in bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
VENVS = Path(os.environ.get("STRATOFLOW_BENCH_VENVS", BENCH / ".venvs"))
sys.path.insert(0, str(BENCH))
import benchlib  # noqa: E402

FLOW_SOURCE = '''from stratoflow import flow


@flow
def empty(i: int = 0) -> int:
    return i
'''
SYSTEMS = ("stratoflow", "prefect")
EXECUTOR_CONCURRENCY = 8
POOL = "bench"


# -- shared helpers (also used by scheduling_delay.py) -------------------------------------------
def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[k]


def summary_ms(values_s: list[float]) -> dict[str, float | int | None]:
    if not values_s:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    ms = [v * 1000.0 for v in values_s]
    return {
        "n": len(ms),
        "p50": round(statistics.median(ms), 1),
        "p95": round(percentile(ms, 95), 1),
        "p99": round(percentile(ms, 99), 1),
        "max": round(max(ms), 1),
        "mean": round(statistics.fmean(ms), 1),
    }


def load_average() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


@contextmanager
def local_cloud(log_path: Path, executor_concurrency: int = EXECUTOR_CONCURRENCY) -> Iterator[dict[str, str]]:
    """``stratoflow dev --port 0`` in a subprocess with a fresh STRATOFLOW_HOME; yields the
    environment its ``export`` lines print (the SDK in this process then talks to it)."""
    home = Path(tempfile.mkdtemp(prefix="stratoflow-bench-cloud-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRATOFLOW_", "AWS_"))}
    env.update(PYTHONUNBUFFERED="1", STRATOFLOW_HOME=str(home), STRATOFLOW_LOG_TO_CONSOLE="false")
    cmd = [sys.executable, "-m", "stratoflow.cli", "dev", "--port", "0",
           "--executor-concurrency", str(executor_concurrency)]
    print(f"[bench] starting the local cloud: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("w")
    process = subprocess.Popen(cmd, cwd=home, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    lines: list[str] = []
    try:
        for line in process.stdout:
            log.write(line)
            lines.append(line.rstrip("\n"))
            if line.strip() == "ready":
                break
        else:
            raise RuntimeError("the local cloud did not start:\n" + "\n".join(lines[-30:]))

        def drain() -> None:  # keep reading so it never blocks on a full pipe
            for rest in process.stdout or ():
                log.write(rest)
            log.flush()

        threading.Thread(target=drain, daemon=True).start()
        from stratoflow.cli.config import parse_exports

        stack_env = parse_exports(lines)
        os.environ.update(stack_env, STRATOFLOW_HOME=str(home), STRATOFLOW_LOG_TO_CONSOLE="false")
        yield stack_env
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
        shutil.rmtree(home, ignore_errors=True)


def deploy_flow(source: str, entrypoint: str, name: str, **kwargs: Any) -> Any:
    """Write ``source`` into a temp dir and deploy ``entrypoint`` from it to pool POOL."""
    from stratoflow import get_client
    from stratoflow.deployments import deploy

    client = get_client()
    try:
        client.create_work_pool(POOL, type="lambda")
    except Exception as exc:  # already there (a second deployment in the same cloud)
        if "exist" not in str(exc).lower():
            raise
    src = Path(tempfile.mkdtemp(prefix="stratoflow-bench-src-"))
    try:
        (src / entrypoint.split(":")[0]).write_text(source)
        return deploy(entrypoint, name=name, work_pool=POOL, source_dir=src, client=client, **kwargs)
    finally:
        shutil.rmtree(src, ignore_errors=True)


def state_time(run: Any, name: str) -> datetime | None:
    return next((s.timestamp for s in run.state_history if s.name == name), None)


# -- Stratoflow -------------------------------------------------------------------------------------
def stratoflow_side(runs: int, threads: int, timeout: float) -> dict[str, Any]:
    started = time.perf_counter()
    with local_cloud(RESULTS / "deployment_throughput_stratoflow_dev.log"):
        from stratoflow import __version__ as version
        from stratoflow import get_client

        client = get_client()
        dep = deploy_flow(FLOW_SOURCE, "flows.py:empty", "throughput")
        name = f"{dep.flow_name}/{dep.name}"
        # Warm-up: one run end to end (package download and import in the executor), not measured.
        from stratoflow import run_deployment

        warm = run_deployment(name, parameters={"i": -1}, timeout=120)
        if warm.state_type is None or warm.state_type.value != "COMPLETED":
            raise RuntimeError(f"warm-up run did not complete: {warm.state}")
        startup_s = time.perf_counter() - started
        print(f"[bench] stratoflow: cloud up, deployed, warm-up done in {startup_s:.1f}s; triggering {runs} runs",
              file=sys.stderr, flush=True)

        first, trigger_s, created = benchlib.call_from_threads(
            lambda i: client.create_flow_run_from_deployment(name, parameters={"i": i}), runs, threads)
        ids = {r.id for r in created}
        polls = 0
        deadline = time.monotonic() + timeout
        finals: dict[str, Any] = {}
        while True:
            polls += 1
            page = client.read_flow_runs(deployment_id=dep.id, state_types=["COMPLETED", "FAILED", "CRASHED"],
                                         limit=1000)
            finals = {r.id: r for r in page if r.id in ids}
            if len(finals) >= runs or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        observed_s = time.time() - first
        stats = run_stats(list(finals.values()), runs, first, lambda r: r.state_type.value,
                          lambda r: [(s.name, s.timestamp) for s in r.state_history])
        bad = [r for r in finals.values() if r.state_type.value != "COMPLETED"]
        for r in bad[:3]:
            print(f"[bench] stratoflow: run {r.id} ended {r.state_name}: {r.state.message if r.state else ''}",
                  file=sys.stderr)
        results_ok = sum(1 for r in finals.values() if r.state_type.value == "COMPLETED"
                         and r.state is not None and r.state.result() == r.parameters.get("i"))
    return {
        "system": f"stratoflow {version} (local cloud)",
        "key": "stratoflow",
        "version": version,
        "status": "ok",
        "runs": runs,
        "trigger_threads": threads,
        "startup_s": round(startup_s, 2),
        "trigger_s": round(trigger_s, 3),
        "observed_all_done_s": round(observed_s, 3),
        "polls": polls,
        "results_checked": results_ok,
        **stats,
        "notes": (f"stratoflow dev subprocess (moto server + API function + executor function on the lambda "
                  f"pool's SQS queue, --executor-concurrency {EXECUTOR_CONCURRENCY}); runs created with "
                  f"create_flow_run_from_deployment over HTTP from {threads} threads; completion polled with "
                  "one read_flow_runs(state_types=...) per 0.2 s"),
    }


def run_stats(finals: list[Any], runs: int, first_trigger: float, state_of: Callable[[Any], str],
              history_of: Callable[[Any], list[tuple[str, datetime]]]) -> dict[str, Any]:
    """The metrics of the module docstring from the final runs and their state histories."""
    latency: list[float] = []
    claim: list[float] = []
    completed_at: list[float] = []
    for run in finals:
        hist = history_of(run)
        sched = next((t for n, t in hist if n == "Scheduled"), None)
        pending = next((t for n, t in hist if n == "Pending"), None)
        done = next((t for n, t in reversed(hist) if n == "Completed"), None)
        if sched is not None and pending is not None:
            claim.append((pending - sched).total_seconds())
        if sched is not None and done is not None:
            latency.append((done - sched).total_seconds())
            completed_at.append(done.timestamp())
    completed = sum(1 for r in finals if state_of(r) == "COMPLETED")
    span = (max(completed_at) - first_trigger) if completed_at else None
    return {
        "completed": completed,
        "not_completed": runs - completed,
        "first_trigger_to_last_completed_s": None if span is None else round(span, 3),
        "runs_per_s": None if not span or completed < runs else round(runs / span, 2),
        "latency_ms": summary_ms(latency),
        "claim_ms": summary_ms(claim),
    }


# -- Prefect (a subprocess in its venv) ----------------------------------------------------------------
def prefect_side(runs: int, threads: int, timeout: float) -> dict[str, Any]:
    py = VENVS / "prefect" / "bin" / "python"
    row: dict[str, Any] = {"system": "prefect (flow.serve)", "key": "prefect", "status": "unavailable"}
    if not py.exists():
        row["error"] = f"interpreter not found: {py} (run bash bench/setup_peers.sh prefect)"
        return row
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP") and not k.startswith("PREFECT_")}
    cmd = [str(py), str(BENCH / "peers" / "prefect_serve_bench.py"), "--runs", str(runs), "--threads", str(threads),
           "--limit", str(EXECUTOR_CONCURRENCY), "--timeout", str(timeout)]
    log_path = RESULTS / "deployment_throughput_prefect.log"
    print(f"[bench] running prefect: {' '.join(cmd)}", file=sys.stderr, flush=True)
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout + 600, cwd=str(ROOT))
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        log_path.write_text(err)
        row["error"] = f"timed out after {timeout + 600:.0f}s (stderr in {log_path.relative_to(ROOT)})"
        return row
    log_path.write_text(proc.stderr)
    payload = None
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.strip().startswith("{"):
            try:
                payload = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
    if payload is None:
        row["error"] = f"exit code {proc.returncode}, no JSON line; last stderr lines:\n" + "\n".join(
            proc.stderr.strip().splitlines()[-20:])
        return row
    payload.setdefault("key", "prefect")
    return dict(payload)


def ratios(ours: dict[str, Any], peer: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"stratoflow": ours.get("system"), "vs": peer.get("system")}
    a, b = ours.get("runs_per_s"), peer.get("runs_per_s")
    out["runs_per_s"] = round(a / b, 2) if a and b else None  # Stratoflow / X: > 1 = Stratoflow faster
    la, lb = (ours.get("latency_ms") or {}).get("p50"), (peer.get("latency_ms") or {}).get("p50")
    out["latency_p50"] = round(lb / la, 2) if la and lb else None  # X / Stratoflow: > 1 = Stratoflow faster
    ca, cb = (ours.get("claim_ms") or {}).get("p50"), (peer.get("claim_ms") or {}).get("p50")
    out["claim_p50"] = round(cb / ca, 2) if ca and cb else None
    return out


def markdown(doc: dict[str, Any]) -> str:
    lines = [f"Deployment throughput: empty deployment runs (Stratoflow {doc['runs']}, Prefect "
             f"{doc.get('prefect_runs') or doc['runs']}), trigger to Completed "
             f"(load average {doc['machine']['loadavg_at_start']}, {doc['machine']['cpus']} CPUs)", "",
             "| system | runs/s | latency p50 / p95 / p99 ms | claim p50 / p95 / p99 ms | trigger s | completed |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in doc["results"]:
        if r.get("status") != "ok":
            lines.append(f"| {r['system']} | unavailable: {str(r.get('error', '')).splitlines()[0][:200]} "
                         "| | | | |")
            continue
        lat, clm = r.get("latency_ms") or {}, r.get("claim_ms") or {}
        lines.append(f"| {r['system']} | {r.get('runs_per_s')} | {lat.get('p50')} / {lat.get('p95')} / "
                     f"{lat.get('p99')} | {clm.get('p50')} / {clm.get('p95')} / {clm.get('p99')} | "
                     f"{r.get('trigger_s')} | {r.get('completed')}/{r.get('runs')} |")
    for e in doc.get("ratios", []):
        lines.append("")
        lines.append(f"Stratoflow vs {e['vs']}: runs/s x{e['runs_per_s']} (Stratoflow / X), "
                     f"p50 latency x{e['latency_p50']} (X / Stratoflow), claim p50 x{e['claim_p50']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    benchlib.stdout_to_stderr()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(SYSTEMS), help="comma-separated subset of: " + ",".join(SYSTEMS))
    p.add_argument("--runs", type=int, default=500, help="deployment runs per system (default 500)")
    p.add_argument("--prefect-runs", type=int, help="runs for Prefect if not --runs (it manages ~0.1-0.2/s here)")
    p.add_argument("--threads", type=int, default=4, help="triggering threads (default 4)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for all runs, per system")
    p.add_argument("--output", type=Path, default=RESULTS / "deployment_throughput.json")
    args = p.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    if not only or any(s not in SYSTEMS for s in only):
        p.error(f"--only takes a subset of {','.join(SYSTEMS)}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    load = load_average()
    doc: dict[str, Any] = {
        "benchmark": "deployment_throughput",
        "started_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "runs": args.runs,
        "prefect_runs": args.prefect_runs or args.runs,
        "trigger_threads": args.threads,
        "machine": {"cpus": os.cpu_count(), "loadavg_at_start": None if load is None else round(load, 2),
                    "python": sys.version.split()[0]},
        "results": [],
    }
    if "stratoflow" in only:
        try:
            doc["results"].append(stratoflow_side(args.runs, args.threads, args.timeout))
        except Exception as exc:  # reported, and the exit status says so
            doc["results"].append({"system": "stratoflow (local cloud)", "key": "stratoflow", "status": "failed",
                                   "error": f"{type(exc).__name__}: {exc}"})
    if "prefect" in only:
        doc["results"].append(prefect_side(args.prefect_runs or args.runs, args.threads, args.timeout))
    ours = next((r for r in doc["results"] if r["key"] == "stratoflow" and r.get("status") == "ok"), None)
    doc["ratios"] = [ratios(ours, r) for r in doc["results"]
                     if ours is not None and r["key"] != "stratoflow" and r.get("status") == "ok"]
    doc["loadavg_at_end"] = load_average()
    doc["markdown"] = markdown(doc)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(doc, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(doc["markdown"])
    print(doc["markdown"], file=sys.stderr)
    benchlib.emit(doc)
    failed = any(r["key"] == "stratoflow" and r.get("status") != "ok" for r in doc["results"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
