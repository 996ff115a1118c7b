"""`make demo`: the examples deployed to the local cloud and run through it, end to end.

1. starts the local cloud (`stratoflow dev`: moto, the API function, the executor function fed
   by the work pools' SQS queues, the scheduler and the janitor) in a subprocess;
2. creates the `default` work pool and deploys examples/stratoflow.yaml (packages to S3);
3. triggers the ETL and the subflow/caching deployments over the API and lets the scheduler
   fire the every-5-seconds deployment twice;
4. prints the final states, a per-task timing table and the logs, read back over the API, and
   the UI address; then stops the cloud (``--keep`` leaves it running until Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
HOME = ROOT / ".stratoflow" / "demo"


def start_cloud() -> tuple[subprocess.Popen[str], dict[str, str], list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRATOFLOW_", "AWS_"))}
    env.update(PYTHONUNBUFFERED="1", STRATOFLOW_HOME=str(HOME), STRATOFLOW_LOG_TO_CONSOLE="false")
    process = subprocess.Popen([sys.executable, "-m", "stratoflow.cli", "dev", "--port", "0"], cwd=HOME, env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        if line.strip() == "ready":
            break
    else:
        raise SystemExit("the local cloud did not start:\n" + "\n".join(lines))
    # Keep draining its log so it never blocks on a full pipe.
    threading.Thread(target=lambda: [lines.append(x.rstrip("\n")) for x in process.stdout or ()], daemon=True).start()
    from stratoflow.cli.config import parse_exports

    stack_env = parse_exports(lines)
    return process, stack_env, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the local cloud running until Ctrl-C")
    args = parser.parse_args()

    shutil.rmtree(HOME, ignore_errors=True)
    HOME.mkdir(parents=True)
    started = time.perf_counter()
    print("==> starting the local cloud (stratoflow dev)", flush=True)
    process, stack_env, lines = start_cloud()
    try:
        return run_demo(stack_env, started, process, lines, keep=args.keep)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


def run_demo(stack_env: dict[str, str], started: float, process: subprocess.Popen[str], lines: list[str], *,
             keep: bool) -> int:
    os.environ.update(stack_env, STRATOFLOW_HOME=str(HOME), STRATOFLOW_LOG_TO_CONSOLE="false")
    from stratoflow import get_client, run_deployment
    from stratoflow.cli._output import duration as _duration
    from stratoflow.cli._output import echo, state_text, table
    from stratoflow.cli._output import run_duration as _run_duration
    from stratoflow.cli.logs import LogSources
    from stratoflow.deployments import deploy_project

    api = stack_env["STRATOFLOW_API_URL"]
    print(f"    up in {time.perf_counter() - started:.1f}s: API {api}, UI {api}/ui/", flush=True)

    client = get_client()
    print("==> creating work pool 'default' (an SQS queue + dead-letter queue, consumed by the executor function)")
    client.create_work_pool("default", type="lambda")
    print("==> deploying examples/stratoflow.yaml")
    deployments = deploy_project(EXAMPLES / "stratoflow.yaml", client=client,
                                 progress=lambda line: print(f"    {line}", flush=True))
    for dep in deployments:
        schedules = ", ".join(s.schedule.type for s in dep.schedules) or "-"
        print(f"    {dep.flow_name}/{dep.name}  v{dep.version}  pool {dep.work_pool_name}  schedules: {schedules}")

    print("==> triggering etl/demo and global-report/demo (run_deployment: API -> SQS -> executor)", flush=True)
    t0 = time.perf_counter()
    runs = {}
    threads = [threading.Thread(target=lambda n=name: runs.__setitem__(n, run_deployment(n, timeout=120)))
               for name in ("etl/demo", "global-report/demo")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"    both finished {time.perf_counter() - t0:.1f}s after the trigger")

    print("==> waiting for the scheduler to fire quarter-hour-report/every-5s twice (a 5 s interval is below "
          "EventBridge's minute: the per-minute tick creates its runs a minute ahead; the deploy made the first "
          "minute's)", flush=True)
    scheduled = wait_for_scheduled_runs(client, "quarter-hour-report/every-5s", count=2, timeout=60)
    client.pause_deployment("quarter-hour-report/every-5s")
    print("    paused it again (its unstarted runs are removed)")
    from stratoflow.control.schedules import upcoming

    slots = upcoming(client.read_deployment("quarter-hour-report/every-quarter-hour"), count=3)
    print("    quarter-hour-report/every-quarter-hour fires next at "
          + ", ".join(f"{when.astimezone():%H:%M}" for _, when in slots) + " (local time)")

    print("\nFlow runs")
    all_runs = [*runs.values(), *scheduled]
    rows = []
    for run in all_runs:
        run = client.read_flow_run(run.id)
        claimed = next((s.timestamp for s in run.state_history if s.name == "Pending"), None)
        wait = (claimed - run.state_history[0].timestamp).total_seconds() if claimed else None
        rows.append((run.flow_name, run.name, run.state_name, _duration(_run_duration(run)), _duration(wait),
                     len(client.read_task_runs(run.id))))
    print(table(rows, ["FLOW", "RUN", "STATE", "DURATION", "QUEUED", "TASKS"], 2,
                [client.read_flow_run(r.id).state_type for r in all_runs]))

    etl = runs["etl/demo"]
    print(f"\nTask runs of {etl.flow_name}/{etl.name}")
    tasks = client.read_task_runs(etl.id)
    start = min((t.start_time for t in tasks if t.start_time), default=None)
    task_rows = [(t.name, t.state_name, t.run_count, f"+{(t.start_time - start).total_seconds() * 1000:.0f} ms"
                  if t.start_time and start else "-", _duration(_run_duration(t))) for t in tasks]
    print(table(task_rows, ["TASK RUN", "STATE", "RUNS", "STARTED", "DURATION"], 1, [t.state_type for t in tasks]))

    print(f"\nLogs of {etl.flow_name}/{etl.name}")
    sources = LogSources(client, etl.id)
    for log in client.iter_logs(etl.id):
        print(sources.format(log))

    ok = all(client.read_flow_run(r.id).state_type is not None and client.read_flow_run(r.id).state_type.value
             == "COMPLETED" for r in all_runs)
    print()
    echo(state_text("All runs completed", "COMPLETED") if ok else state_text("Some runs did not complete", "FAILED"),
         f" ({time.perf_counter() - started:.1f}s in all).")
    print(f"UI: {api}/ui/  (runs, timelines, logs, deployments, work pools)")
    if keep:
        print("The local cloud keeps running (Ctrl-C stops it). In another shell:")
        for name, value in stack_env.items():
            print(f"  export {name}={value}")
        try:
            while process.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    else:
        print("The local cloud stops now; `make demo ARGS=--keep` or `stratoflow dev` keeps one running.")
    if not ok:
        print("\n".join(lines[-40:]), file=sys.stderr)
    return 0 if ok else 1


def wait_for_scheduled_runs(client: object, name: str, count: int, timeout: float) -> list[object]:
    from stratoflow.states import StateType

    dep = client.read_deployment(name)  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    while True:
        runs = client.read_flow_runs(deployment_id=dep.id, limit=50)  # type: ignore[attr-defined]
        done = [r for r in runs if r.state_type == StateType.COMPLETED]
        if len(done) >= count or time.monotonic() > deadline:
            return sorted(done, key=lambda r: r.created)[:count]
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
