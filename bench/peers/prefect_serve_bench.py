"""Prefect 3 side of bench/deployment_throughput.py. Run with bench/.venvs/prefect/bin/python.

1. ``prefect server start`` (SQLite under a temporary PREFECT_HOME, UI off, analytics off) in a
   subprocess; waits for ``/api/health``.
2. ``empty(i: int = 0) -> int`` written to a temp dir and served by ``empty.serve(name=...,
   limit=N)`` in a second subprocess (Prefect's Runner: it polls the server for scheduled runs of
   its deployment and runs each one in a new Python process). The Runner's poll interval is set
   to 1 s (PREFECT_RUNNER_POLL_FREQUENCY; Prefect's default is 10 s), so its claim latency is
   not dominated by the poll.
3. a warm-up run, then ``--runs`` triggers with ``run_deployment(..., timeout=0)`` from
   ``--threads`` threads, then polls ``count_flow_runs`` (one request per poll) until every run
   is final; then reads each run's state history and emits the metrics deployment_throughput.py
   computes for Stratoflow, as one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import benchlib
from deployment_throughput import summary_ms

FLOW_SOURCE = '''from prefect import flow


@flow
def empty(i: int = 0) -> int:
    return i


if __name__ == "__main__":
    import sys

    empty.serve(name="throughput", limit=int(sys.argv[1]))
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Triggered:
    """What ``trigger_runs`` measured: the created runs, 503 retries and the trigger timings."""

    created: list[Any]
    retries: int
    first: float  # time.time() just before the first trigger
    trigger_s: float


@dataclass
class RunMetrics:
    """Per-run timings read from each triggered run's state history."""

    latency: list[float] = field(default_factory=list)
    claim: list[float] = field(default_factory=list)
    completed_at: list[float] = field(default_factory=list)
    completed: int = 0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=500)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--limit", type=int, default=8, help="flow.serve(limit=...): runs at once")
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--server-timeout", type=float, default=180.0)
    return p.parse_args()


def isolate_prefect_env(home: Path, api: str) -> None:
    """Drop every inherited PREFECT_* variable and point Prefect (and its subprocesses) at our server."""
    for var in [k for k in os.environ if k.startswith("PREFECT_")]:
        os.environ.pop(var, None)
    os.environ.update(
        PREFECT_HOME=str(home), PREFECT_API_URL=api, PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
        PREFECT_UI_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING", PREFECT_SERVER_LOGGING_LEVEL="WARNING",
        PREFECT_RUNNER_POLL_FREQUENCY="1",
    )


def log_tail(home: Path, log: str) -> str:
    return (home / log).read_text()[-3000:]


def spawn_server(prefect_cli: str, home: Path, port: int) -> subprocess.Popen[bytes]:
    """``prefect server start`` in a subprocess, output to ``home/server.log``."""
    with (home / "server.log").open("wb") as server_log:
        return subprocess.Popen([prefect_cli, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                stdout=server_log, stderr=subprocess.STDOUT, cwd=home)


def wait_for_health(server: subprocess.Popen[bytes], home: Path, api: str, server_timeout: float) -> None:
    """Poll ``/api/health`` every 0.5 s until it answers 200; exit if the server dies or the timeout passes."""
    deadline = time.monotonic() + server_timeout
    while True:
        if server.poll() is not None:
            raise SystemExit("prefect server exited with " + str(server.returncode) + ":\n"
                             + log_tail(home, "server.log"))
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"prefect server did not answer /api/health within {server_timeout:.0f}s:\n"
                             + log_tail(home, "server.log"))
        time.sleep(0.5)


def spawn_serve(py: str, home: Path, limit: int) -> subprocess.Popen[bytes]:
    """Write FLOW_SOURCE to ``home/src/flows.py`` and run it (``empty.serve(limit=...)``), output to serve.log."""
    src = home / "src"
    src.mkdir()
    (src / "flows.py").write_text(FLOW_SOURCE)
    with (home / "serve.log").open("wb") as serve_log:
        return subprocess.Popen([py, "flows.py", str(limit)], cwd=src, stdout=serve_log,
                                stderr=subprocess.STDOUT)


def wait_for_deployment(client: Any, name: str, serve: subprocess.Popen[bytes], home: Path,
                        server_timeout: float) -> Any:
    """Poll until ``flow.serve`` has registered deployment ``name``; exit if it dies or the timeout passes."""
    deadline = time.monotonic() + server_timeout
    while True:
        try:
            return client.read_deployment_by_name(name)
        except Exception:
            if serve.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("flow.serve did not register its deployment:\n"
                                 + log_tail(home, "serve.log")) from None
            time.sleep(0.5)


def warm_up(run_deployment: Any, state_type: Any, name: str, home: Path) -> None:
    """One run of the served deployment, waited for (up to 300 s); exit unless it completed."""
    warm = run_deployment(name, parameters={"i": -1}, timeout=300)
    if warm.state is None or warm.state.type != state_type.COMPLETED:
        raise SystemExit(f"warm-up run did not complete: {warm.state}\n"
                         + log_tail(home, "serve.log"))


def trigger_runs(run_deployment: Any, name: str, runs: int, threads: int) -> Triggered:
    """``runs`` x ``run_deployment(name, timeout=0)`` from ``threads`` threads, retrying 503s (up to 10 tries)."""
    retries = [0]
    lock = threading.Lock()

    def create(i: int) -> Any:
        for attempt in range(10):
            try:
                return run_deployment(name, parameters={"i": i}, timeout=0)
            except Exception as exc:
                # SQLite under concurrent writers answers 503 (after the client's own
                # retries); try again, counted in trigger_retries.
                if "503" not in str(exc) or attempt == 9:
                    raise
                with lock:
                    retries[0] += 1
                time.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")

    first, trigger_s, created = benchlib.call_from_threads(create, runs, threads)
    return Triggered(created=created, retries=retries[0], first=first, trigger_s=trigger_s)


def poll_until_final(client: Any, dep_filter: Any, final_filter: Any, expected: int, timeout: float) -> int:
    """``count_flow_runs`` every 0.5 s until ``expected`` runs are final or ``timeout`` passes; returns the polls."""
    deadline = time.monotonic() + timeout
    polls = 0
    while True:
        polls += 1
        done = client.count_flow_runs(flow_run_filter=final_filter, deployment_filter=dep_filter)
        if done >= expected or time.monotonic() > deadline:
            return polls
        time.sleep(0.5)


def collect_run_metrics(client: Any, ids: set[Any], state_type: Any) -> RunMetrics:
    """Read each run and its state history: completed count, claim (SCHEDULED->PENDING) and latency
    (SCHEDULED->last COMPLETED) in seconds, and the completion times."""
    m = RunMetrics()
    for run_id in ids:
        run = client.read_flow_run(run_id)
        if run.state is not None and run.state.type == state_type.COMPLETED:
            m.completed += 1
        hist = sorted(client.read_flow_run_states(run_id), key=lambda s: s.timestamp)
        sched = next((s.timestamp for s in hist if s.type == state_type.SCHEDULED), None)
        pend = next((s.timestamp for s in hist if s.type == state_type.PENDING), None)
        fin = next((s.timestamp for s in reversed(hist) if s.type == state_type.COMPLETED), None)
        if sched and pend:
            m.claim.append((pend - sched).total_seconds())
        if sched and fin:
            m.latency.append((fin - sched).total_seconds())
            m.completed_at.append(fin.timestamp())
    return m


def cleanup(procs: list[subprocess.Popen[bytes]], home: Path) -> None:
    """Stop the subprocesses (last started first), print the tails of their logs, remove the temp home."""
    for proc in reversed(procs):
        with contextlib.suppress(Exception):
            stop(proc)
    for log in ("server.log", "serve.log"):
        path = home / log
        if path.exists():
            print(f"--- {log} (tail) ---\n" + path.read_text(errors="replace")[-4000:], file=sys.stderr)
    shutil.rmtree(home, ignore_errors=True)


def emit_result(args: argparse.Namespace, version: str, server_up_s: float, startup_s: float, trig: Triggered,
                observed_s: float, polls: int, m: RunMetrics) -> None:
    span = (max(m.completed_at) - trig.first) if m.completed_at else None
    benchlib.emit({
        "system": f"prefect {version} (flow.serve)",
        "key": "prefect",
        "version": version,
        "status": "ok",
        "runs": args.runs,
        "trigger_threads": args.threads,
        "serve_limit": args.limit,
        "server_up_s": round(server_up_s, 2),
        "startup_s": round(startup_s, 2),
        "trigger_s": round(trig.trigger_s, 3),
        "trigger_retries_after_503": trig.retries,
        "observed_all_done_s": round(observed_s, 3),
        "polls": polls,
        "completed": m.completed,
        "not_completed": args.runs - m.completed,
        "first_trigger_to_last_completed_s": None if span is None else round(span, 3),
        "runs_per_s": None if not span or m.completed < args.runs else round(args.runs / span, 2),
        "latency_ms": summary_ms(m.latency),
        "claim_ms": summary_ms(m.claim),
        "measured_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "notes": (f"prefect server start (SQLite, temp PREFECT_HOME, UI off) + flow.serve(limit={args.limit}) "
                  "in subprocesses; each flow run in a new process (Prefect's Runner); "
                  "PREFECT_RUNNER_POLL_FREQUENCY=1 (default 10); triggers run_deployment(timeout=0) from "
                  f"{args.threads} threads"),
    })


def main() -> None:
    benchlib.stdout_to_stderr()
    args = parse_args()

    home = Path(tempfile.mkdtemp(prefix="stratoflow-bench-prefect-serve-"))
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    isolate_prefect_env(home, api)
    py = sys.executable
    prefect_cli = str(Path(py).parent / "prefect")
    procs: list[subprocess.Popen[bytes]] = []
    t_start = time.perf_counter()
    try:
        server = spawn_server(prefect_cli, home, port)
        procs.append(server)
        wait_for_health(server, home, api, args.server_timeout)
        server_up_s = time.perf_counter() - t_start
        print(f"prefect_serve_bench: server up in {server_up_s:.1f}s at {api}", file=sys.stderr, flush=True)

        # Prefect is only installed in the peer venv (bench/.venvs/prefect): never import it at module level.
        import prefect
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import (
            DeploymentFilter,
            DeploymentFilterId,
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType
        from prefect.deployments import run_deployment

        serve = spawn_serve(py, home, args.limit)
        procs.append(serve)
        name = "empty/throughput"
        with get_client(sync_client=True) as client:
            dep = wait_for_deployment(client, name, serve, home, args.server_timeout)
            warm_up(run_deployment, StateType, name, home)
            startup_s = time.perf_counter() - t_start
            print(f"prefect_serve_bench: served and warmed up in {startup_s:.1f}s; triggering {args.runs}",
                  file=sys.stderr, flush=True)

            trig = trigger_runs(run_deployment, name, args.runs, args.threads)
            ids = {r.id for r in trig.created}

            dep_filter = DeploymentFilter(id=DeploymentFilterId(any_=[dep.id]))
            final_types = [StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED]
            final_filter = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=final_types)))
            polls = poll_until_final(client, dep_filter, final_filter, args.runs + 1, args.timeout)  # + warm-up run
            observed_s = time.time() - trig.first

            metrics = collect_run_metrics(client, ids, StateType)
    finally:
        cleanup(procs, home)

    emit_result(args, prefect.__version__, server_up_s, startup_s, trig, observed_s, polls, metrics)


if __name__ == "__main__":
    main()
