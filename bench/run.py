#!/usr/bin/env python3
"""Benchmark Stratoflow beside Prefect 3 and DBOS Transact in one run.

    python bench/run.py [--quick] [--only stratoflow,prefect,dbos] [--skip-setup] [--skip-deployments]

Installs the peers into bench/.venvs/ (bench/setup_peers.sh, idempotent), runs each system's
script as a subprocess (Stratoflow with this interpreter, each peer with its own venv's
python), prints a table of start-up, per-task and per-flow-run overhead with
"Stratoflow vs X" ratios, and writes everything to bench/results/latest.json.

Then the deployment benchmarks, each a script of its own run with this interpreter:
deployment_throughput.py (empty deployment runs, trigger to Completed, on the local cloud beside
Prefect's flow.serve) and scheduling_delay.py (slot time to Running for an every-second schedule);
their documents go under "deployments" in latest.json and their markdown is printed.

A peer that cannot be installed or run is reported as unavailable; the run goes on.
Exit status is non-zero only when Stratoflow itself (if selected) fails.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
VENVS = Path(os.environ.get("STRATOFLOW_BENCH_VENVS", BENCH / ".venvs"))
SYSTEMS = ("stratoflow", "prefect", "dbos")
PEERS = ("prefect", "dbos")
QUICK = {"tasks": 100, "flow_runs": 10}
FULL = {"tasks": 1000, "flow_runs": 50}
# Deployment runs per system in deployment_throughput.py (Prefect's flow.serve manages about
# 0.1-0.2 runs/s on the 2-core bench machine, so it gets fewer by default).
DEPLOYMENT_RUNS = {"quick": (100, 10), "full": (500, 40)}
DEPLOYMENT_SCRIPTS = ("deployment_throughput.py", "scheduling_delay.py")


def script_for(system: str) -> Path:
    return BENCH / "stratoflow_bench.py" if system == "stratoflow" else BENCH / "peers" / f"{system}_bench.py"


def python_for(system: str) -> Path:
    return Path(sys.executable) if system == "stratoflow" else VENVS / system / "bin" / "python"


def child_env(system: str) -> dict[str, str]:
    env = dict(os.environ)
    if system != "stratoflow":
        # The peer venvs must not see the project's packages or venv.
        for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
            env.pop(var, None)
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    return env


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_setup(only: list[str]) -> None:
    peers = [p for p in only if p in PEERS]
    if not peers:
        return
    print(f"== setting up peers ({', '.join(peers)}) with bench/setup_peers.sh", flush=True)
    t0 = time.perf_counter()
    try:
        rc = subprocess.call(["bash", str(BENCH / "setup_peers.sh"), *peers])
    except OSError as exc:
        print(f"!! setup_peers.sh could not start: {exc}", flush=True)
        return
    if rc != 0:
        print(f"!! setup_peers.sh exited {rc}; peers that failed to install will be marked unavailable", flush=True)
    print(f"== setup done in {time.perf_counter() - t0:.1f}s", flush=True)


def run_system(
    system: str, tasks: int, flow_runs: int, timeout: float, extra_env: dict[str, str] | None = None, label: str = ""
) -> dict[str, Any]:
    py, script = python_for(system), script_for(system)
    name = f"{system}{label}"
    row: dict[str, Any] = {"key": system, "system": name, "status": "unavailable"}
    if not py.exists():
        row["error"] = f"interpreter not found: {py} (did bench/setup_peers.sh fail?)"
        return row
    cmd = [str(py), str(script), "--tasks", str(tasks), "--flow-runs", str(flow_runs)]
    log_path = RESULTS / f"{name.replace(' ', '_').strip('()').replace('(', '').replace(')', '')}.log"
    env = child_env(system)
    env.update(extra_env or {})
    shown = " ".join(f"{k}={v}" for k, v in (extra_env or {}).items())
    print(f"== running {name}: {shown + ' ' if shown else ''}{' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=str(BENCH.parent))
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        log_path.write_text(stderr)
        row["error"] = f"timed out after {timeout:.0f}s (stderr in {log_path.relative_to(BENCH.parent)})"
        return row
    except OSError as exc:
        row["error"] = f"could not start {py}: {exc}"
        return row
    wall = time.perf_counter() - t0
    log_path.write_text(proc.stderr)
    payload = None
    for line in reversed(proc.stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                payload = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
    if proc.returncode != 0 or payload is None:
        why = f"exit code {proc.returncode}" if proc.returncode != 0 else "no JSON line on stdout"
        row["error"] = f"{why}; last stderr lines:\n{tail(proc.stderr) or '(empty)'}"
        if system == "stratoflow" and "No module named 'stratoflow'" in proc.stderr:
            row["error"] += (
                f"\n(hint: {py} cannot import stratoflow; run this with the project's "
                "interpreter, e.g. .venv/bin/python bench/run.py)"
            )
        return row
    if label:
        payload["system"] = f"{payload.get('system', system)}{label}"
    payload.update(key=system, status="ok", process_wall_s=round(wall, 2))
    print(f"   {name}: done in {wall:.1f}s", flush=True)
    return payload


FSYNC_LABEL = " (fsync each write)"


def run_deployment_benchmarks(args: argparse.Namespace, only: list[str]) -> dict[str, Any]:
    """deployment_throughput.py then scheduling_delay.py; {script stem: its JSON document or an error}."""
    runs, prefect_runs = DEPLOYMENT_RUNS["quick" if args.quick else "full"]
    runs = args.deployment_runs or runs
    prefect_runs = args.prefect_deployment_runs or prefect_runs
    systems = ",".join(s for s in ("stratoflow", "prefect") if s in only) or "stratoflow"
    commands = {
        "deployment_throughput": ["--only", systems, "--runs", str(runs), "--prefect-runs", str(prefect_runs)],
        "scheduling_delay": ["--slots", "10" if args.quick else "30"],
    }
    out: dict[str, Any] = {}
    for script in DEPLOYMENT_SCRIPTS:
        stem = script.removesuffix(".py")
        cmd = [sys.executable, str(BENCH / script), *commands[stem]]
        print(f"== running {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=child_env("stratoflow"), capture_output=True, text=True,
                                  timeout=args.timeout * 2, cwd=str(BENCH.parent))
        except subprocess.TimeoutExpired:
            out[stem] = {"status": "failed", "error": f"timed out after {args.timeout * 2:.0f}s"}
            continue
        (RESULTS / f"{stem}.log").write_text(proc.stderr)
        doc = None
        for line in reversed(proc.stdout.strip().splitlines()):
            if line.strip().startswith("{"):
                try:
                    doc = json.loads(line)
                    break
                except json.JSONDecodeError:
                    continue
        if doc is None:
            out[stem] = {"status": "failed",
                         "error": f"exit code {proc.returncode}; last stderr lines:\n{tail(proc.stderr) or '(empty)'}"}
            print(f"!! {stem} failed: {out[stem]['error']}", flush=True)
            continue
        doc["process_wall_s"] = round(time.perf_counter() - t0, 1)
        out[stem] = doc
        print(doc.get("markdown", ""), flush=True)
    return out


def run_repeated(
    system: str,
    sizes: dict[str, int],
    args: argparse.Namespace,
    extra_env: dict[str, str] | None = None,
    label: str = "",
) -> dict[str, Any]:
    runs = []
    for i in range(args.repeat):
        if args.repeat > 1:
            print(f"== {system}{label}: repeat {i + 1}/{args.repeat}", flush=True)
        row = run_system(system, sizes["tasks"], sizes["flow_runs"], args.timeout, extra_env, label)
        if row["status"] != "ok":
            print(f"!! {row['system']} unavailable: {row['error']}", flush=True)
            return row
        runs.append(row)
    return median_of(runs)


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Combine repeated runs of one script: the median of every numeric field (variants too)."""
    if len(runs) == 1:
        return runs[0]
    out = dict(runs[0])
    for k, v in runs[0].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            vals = [r[k] for r in runs if isinstance(r.get(k), (int, float))]
            out[k] = round(statistics.median(vals), 4)
    if runs[0].get("variants"):
        out["variants"] = [
            median_of([r["variants"][i] for r in runs if len(r.get("variants") or []) > i])
            for i in range(len(runs[0]["variants"]))
        ]
    out["repeats"] = len(runs)
    out["per_task_ms_runs"] = [r.get("per_task_ms") for r in runs]
    out["per_flow_run_ms_runs"] = [r.get("per_flow_run_ms") for r in runs]
    return out


def flatten(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per measured configuration: each script's headline row, then its variants."""
    out = []
    for row in rows:
        variants = row.pop("variants", None) or []
        out.append(row)
        for v in variants:
            v.update(key=row["key"], status="ok", variant=True)
            out.append(v)
    return out


def ratio(peer: float | None, ours: float | None) -> float | None:
    if peer is None or ours is None or peer <= 0 or ours <= 0:
        return None
    return peer / ours


def describe(r: float | None) -> str:
    if r is None:
        return "n/a"
    return f"{r:.1f}x faster" if r >= 1 else f"{1 / r:.1f}x slower"


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(headers: list[str], body: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(padded)

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in body)])


def compute_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """X / Stratoflow for every peer row X, for each Stratoflow configuration that ran."""
    ours_rows = [r for r in rows if r["key"] == "stratoflow" and r["status"] == "ok"]
    peers = [r for r in rows if r["key"] != "stratoflow" and r["status"] == "ok"]
    out = []
    for ours in ours_rows or [None]:
        label = "Stratoflow" + (FSYNC_LABEL if ours and ours["system"].endswith(FSYNC_LABEL) else "")
        for r in peers:
            entry: dict[str, Any] = {"stratoflow": label, "vs": r["system"]}
            if ours is None:
                entry.update(per_task=None, per_flow_run=None)
            else:
                entry["per_task"] = ratio(r.get("per_task_ms"), ours.get("per_task_ms"))
                entry["per_flow_run"] = ratio(r.get("per_flow_run_ms"), ours.get("per_flow_run_ms"))
                if r.get("per_task_recorded_ms") is not None:
                    entry["per_task_recorded"] = ratio(r["per_task_recorded_ms"], ours.get("per_task_ms"))
            out.append(entry)
    return out


def report(rows: list[dict[str, Any]], ratios: list[dict[str, Any]], tasks: int, flow_runs: int) -> None:
    print()
    print(
        f"Workload: A = one flow of {tasks} sequential trivial tasks; B = {flow_runs} empty flow runs; "
        "after a warm-up run."
    )
    print("per-task ms = (A - one empty flow run) / tasks;  per-flow-run ms = B / flow runs")
    print()
    body = []
    for r in rows:
        if r["status"] != "ok":
            body.append([r["system"], "unavailable", "-", "-", "-", "-", "-"])
            continue
        body.append(
            [
                r["system"],
                str(r.get("version", "?")),
                fmt(r.get("startup_s"), 2),
                fmt(r.get("empty_flow_s", 0) * 1000 if r.get("empty_flow_s") is not None else None, 2),
                fmt(r.get("per_task_ms"), 3),
                fmt(r.get("per_task_recorded_ms"), 3),
                fmt(r.get("per_flow_run_ms"), 2),
            ]
        )
    print(
        table(
            [
                "system",
                "version",
                "startup s",
                "empty flow ms",
                "per-task ms",
                "per-task ms (recorded)",
                "per-flow-run ms",
            ],
            body,
        )
    )
    if any(r.get("per_task_recorded_ms") is not None for r in rows):
        print(
            "\n'recorded': Prefect records task runs asynchronously on its server; this column adds the wait "
            "until\nthe server has recorded every task run. DBOS checkpoints each step (an fsync'd SQLite "
            "commit) before\nit returns; Stratoflow's embedded journal fsyncs only with STRATOFLOW_EMBEDDED_FSYNC"
            "=true (the\n'fsync each write' row)."
        )
    if ratios:
        print()
        rbody = []
        for e in ratios:
            cells = [f"{e['stratoflow']} vs {e['vs']}", describe(e.get("per_task")), describe(e.get("per_flow_run"))]
            cells.append(describe(e["per_task_recorded"]) if "per_task_recorded" in e else "-")
            rbody.append(cells)
        print(table(["ratio (X / Stratoflow)", "per task", "per flow run", "per task (recorded)"], rbody))
    print()
    for r in rows:
        if r["status"] == "ok":
            if r.get("notes"):
                print(f"* {r['system']}: {r['notes']}")
        else:
            print(f"! {r['system']} unavailable: {r.get('error')}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"small sizes for a smoke run ({QUICK['tasks']} tasks, {QUICK['flow_runs']} flow runs)",
    )
    p.add_argument("--only", default=",".join(SYSTEMS), help="comma-separated subset of: " + ",".join(SYSTEMS))
    p.add_argument("--skip-setup", action="store_true", help="don't run bench/setup_peers.sh")
    p.add_argument("--tasks", type=int, help="override the number of sequential tasks")
    p.add_argument("--flow-runs", type=int, help="override the number of empty flow runs")
    p.add_argument(
        "--no-fsync-variant",
        action="store_true",
        help="skip the second Stratoflow run with STRATOFLOW_EMBEDDED_FSYNC=true",
    )
    p.add_argument(
        "--repeat", type=int, default=1, help="run each system this many times and report the median of each number"
    )
    p.add_argument("--timeout", type=float, default=1800.0, help="per-system time limit in seconds")
    p.add_argument("--skip-deployments", action="store_true",
                   help="don't run deployment_throughput.py and scheduling_delay.py")
    p.add_argument("--deployment-runs", type=int,
                   help=f"Stratoflow deployment runs (default {DEPLOYMENT_RUNS['full'][0]}, quick "
                        f"{DEPLOYMENT_RUNS['quick'][0]})")
    p.add_argument("--prefect-deployment-runs", type=int,
                   help=f"Prefect deployment runs (default {DEPLOYMENT_RUNS['full'][1]}, quick "
                        f"{DEPLOYMENT_RUNS['quick'][1]})")
    p.add_argument("--output", type=Path, default=RESULTS / "latest.json", help="where to write the JSON results")
    args = p.parse_args(argv)

    only = [s.strip().lower() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in SYSTEMS]
    if unknown or not only:
        p.error(f"--only takes a comma-separated subset of {','.join(SYSTEMS)}; got {args.only!r}")
    sizes = dict(QUICK if args.quick else FULL)
    if args.tasks:
        sizes["tasks"] = args.tasks
    if args.flow_runs:
        sizes["flow_runs"] = args.flow_runs

    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    RESULTS.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if load is not None and load > 0.5:
        print(
            f"warning: load average is {load:.2f} before the run; other processes compete for the "
            f"{os.cpu_count()} CPUs and will skew the numbers",
            flush=True,
        )
    started = _dt.datetime.now(_dt.UTC)
    if not args.skip_setup:
        run_setup(only)

    raw = []
    for system in SYSTEMS:
        if system not in only:
            continue
        row = run_repeated(system, sizes, args)
        if system == "stratoflow" and row["status"] == "ok" and not args.no_fsync_variant:
            # Like-for-like durability with DBOS, whose SQLite commits fsync every step.
            durable = run_repeated(system, sizes, args, {"STRATOFLOW_EMBEDDED_FSYNC": "true"}, FSYNC_LABEL)
            if durable["status"] == "ok":
                durable.pop("variants", None)
                row.setdefault("variants", []).append(durable)
        raw.append(row)
    rows = flatten(raw)
    ratios = compute_ratios(rows)
    report(rows, ratios, sizes["tasks"], sizes["flow_runs"])
    deployments = {} if args.skip_deployments or "stratoflow" not in only else run_deployment_benchmarks(args, only)

    doc = {
        "started_at": started.isoformat(timespec="seconds"),
        "quick": args.quick,
        "tasks": sizes["tasks"],
        "flow_runs": sizes["flow_runs"],
        "repeat": args.repeat,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_at_start": load,
            "runner_python": platform.python_version(),
        },
        "results": rows,
        "ratios": ratios,
        "deployments": deployments,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nresults written to {args.output}")

    ours = next((r for r in rows if r["key"] == "stratoflow"), None)
    return 1 if ours is not None and ours["status"] != "ok" else 0


if __name__ == "__main__":
    sys.exit(main())
