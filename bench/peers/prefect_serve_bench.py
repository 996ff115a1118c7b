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


def main() -> None:
    benchlib.stdout_to_stderr()
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=500)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--limit", type=int, default=8, help="flow.serve(limit=...): runs at once")
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--server-timeout", type=float, default=180.0)
    args = p.parse_args()

    home = Path(tempfile.mkdtemp(prefix="stratoflow-bench-prefect-serve-"))
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    for var in [k for k in os.environ if k.startswith("PREFECT_")]:
        os.environ.pop(var, None)
    os.environ.update(
        PREFECT_HOME=str(home), PREFECT_API_URL=api, PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
        PREFECT_UI_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING", PREFECT_SERVER_LOGGING_LEVEL="WARNING",
        PREFECT_RUNNER_POLL_FREQUENCY="1",
    )
    py = sys.executable
    prefect_cli = str(Path(py).parent / "prefect")
    procs: list[subprocess.Popen[bytes]] = []
    t_start = time.perf_counter()
    try:
        server_log = (home / "server.log").open("wb")
        server = subprocess.Popen([prefect_cli, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                  stdout=server_log, stderr=subprocess.STDOUT, cwd=home)
        procs.append(server)
        deadline = time.monotonic() + args.server_timeout
        while True:
            if server.poll() is not None:
                raise SystemExit("prefect server exited with " + str(server.returncode) + ":\n"
                                 + (home / "server.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"prefect server did not answer /api/health within {args.server_timeout:.0f}s:\n"
                                 + (home / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        server_up_s = time.perf_counter() - t_start
        print(f"prefect_serve_bench: server up in {server_up_s:.1f}s at {api}", file=sys.stderr, flush=True)

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

        src = home / "src"
        src.mkdir()
        (src / "flows.py").write_text(FLOW_SOURCE)
        serve_log = (home / "serve.log").open("wb")
        serve = subprocess.Popen([py, "flows.py", str(args.limit)], cwd=src, stdout=serve_log,
                                 stderr=subprocess.STDOUT)
        procs.append(serve)
        name = "empty/throughput"
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + args.server_timeout
            while True:
                try:
                    dep = client.read_deployment_by_name(name)
                    break
                except Exception:
                    if serve.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit("flow.serve did not register its deployment:\n"
                                         + (home / "serve.log").read_text()[-3000:]) from None
                    time.sleep(0.5)
            warm = run_deployment(name, parameters={"i": -1}, timeout=300)
            if warm.state is None or warm.state.type != StateType.COMPLETED:
                raise SystemExit(f"warm-up run did not complete: {warm.state}\n"
                                 + (home / "serve.log").read_text()[-3000:])
            startup_s = time.perf_counter() - t_start
            print(f"prefect_serve_bench: served and warmed up in {startup_s:.1f}s; triggering {args.runs}",
                  file=sys.stderr, flush=True)

            created: list[Any] = [None] * args.runs
            errors: list[BaseException] = []
            retries = [0]
            counter = iter(range(args.runs))
            lock = threading.Lock()

            def worker() -> None:
                while True:
                    with lock:
                        i = next(counter, None)
                    if i is None or errors:
                        return
                    for attempt in range(10):
                        try:
                            created[i] = run_deployment(name, parameters={"i": i}, timeout=0)
                            break
                        except Exception as exc:
                            # SQLite under concurrent writers answers 503 (after the client's own
                            # retries); try again, counted in trigger_retries.
                            if "503" not in str(exc) or attempt == 9:
                                errors.append(exc)
                                return
                            with lock:
                                retries[0] += 1
                            time.sleep(0.5 * (attempt + 1))

            threads = [threading.Thread(target=worker) for _ in range(args.threads)]
            first = time.time()
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise errors[0]
            trigger_s = time.perf_counter() - t0
            ids = {r.id for r in created}

            dep_filter = DeploymentFilter(id=DeploymentFilterId(any_=[dep.id]))
            final_types = [StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED]
            final_filter = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=final_types)))
            deadline = time.monotonic() + args.timeout
            polls = 0
            while True:
                polls += 1
                done = client.count_flow_runs(flow_run_filter=final_filter, deployment_filter=dep_filter)
                if done >= args.runs + 1 or time.monotonic() > deadline:  # + the warm-up run
                    break
                time.sleep(0.5)
            observed_s = time.time() - first

            latency: list[float] = []
            claim: list[float] = []
            completed_at: list[float] = []
            completed = 0
            for run_id in ids:
                run = client.read_flow_run(run_id)
                if run.state is not None and run.state.type == StateType.COMPLETED:
                    completed += 1
                hist = sorted(client.read_flow_run_states(run_id), key=lambda s: s.timestamp)
                sched = next((s.timestamp for s in hist if s.type == StateType.SCHEDULED), None)
                pend = next((s.timestamp for s in hist if s.type == StateType.PENDING), None)
                fin = next((s.timestamp for s in reversed(hist) if s.type == StateType.COMPLETED), None)
                if sched and pend:
                    claim.append((pend - sched).total_seconds())
                if sched and fin:
                    latency.append((fin - sched).total_seconds())
                    completed_at.append(fin.timestamp())
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(Exception):
                stop(proc)
        for log in ("server.log", "serve.log"):
            path = home / log
            if path.exists():
                print(f"--- {log} (tail) ---\n" + path.read_text(errors="replace")[-4000:], file=sys.stderr)
        shutil.rmtree(home, ignore_errors=True)

    span = (max(completed_at) - first) if completed_at else None
    benchlib.emit({
        "system": f"prefect {prefect.__version__} (flow.serve)",
        "key": "prefect",
        "version": prefect.__version__,
        "status": "ok",
        "runs": args.runs,
        "trigger_threads": args.threads,
        "serve_limit": args.limit,
        "server_up_s": round(server_up_s, 2),
        "startup_s": round(startup_s, 2),
        "trigger_s": round(trigger_s, 3),
        "trigger_retries_after_503": retries[0],
        "observed_all_done_s": round(observed_s, 3),
        "polls": polls,
        "completed": completed,
        "not_completed": args.runs - completed,
        "first_trigger_to_last_completed_s": None if span is None else round(span, 3),
        "runs_per_s": None if not span or completed < args.runs else round(args.runs / span, 2),
        "latency_ms": summary_ms(latency),
        "claim_ms": summary_ms(claim),
        "measured_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "notes": (f"prefect server start (SQLite, temp PREFECT_HOME, UI off) + flow.serve(limit={args.limit}) "
                  "in subprocesses; each flow run in a new process (Prefect's Runner); "
                  "PREFECT_RUNNER_POLL_FREQUENCY=1 (default 10); triggers run_deployment(timeout=0) from "
                  f"{args.threads} threads"),
    })


if __name__ == "__main__":
    main()
