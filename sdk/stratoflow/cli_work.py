"""CLI for running deployments and the work that executes them: ``deployment run --watch``,
``work-pool inspect|queue ...`` and ``worker``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timedelta
from typing import Any

from stratoflow.cli import (
    LogSources,
    _colour,
    _dt,
    _parse_params,
    _print_json,
    _task_table,
    _UsageError,
    table,
    terminal_safe,
)


def _parse_when(value: str | None) -> datetime | None:
    """``--at``: an ISO time (UTC when it names no zone) or ``+SECONDS`` from now."""
    if value is None:
        return None
    from stratoflow.states import now

    if value.startswith("+"):
        try:
            return now() + timedelta(seconds=float(value[1:]))
        except ValueError:
            raise _UsageError(f"--at {value!r}: +SECONDS must be a number") from None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise _UsageError(f"--at {value!r}: not an ISO 8601 time (e.g. 2026-12-01T09:00:00+01:00) or +SECONDS") \
            from None
    if when.tzinfo is None:
        from datetime import UTC

        when = when.replace(tzinfo=UTC)
    return when


def watch_flow_run(flow_run_id: str, *, timeout: float | None = None, json_lines: bool = False,
                   interval: float = 0.5) -> int:
    """Print the run's states and logs as they happen until it is final; exit 0 when Completed."""
    from stratoflow import get_client

    client = get_client()
    sources = LogSources(client, flow_run_id)
    seen_states = 0
    cursor: str | None = None
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        run = client.read_flow_run(flow_run_id)
        # States and logs in one timeline, in the order they happened.
        events: list[tuple[datetime, str]] = []
        for state in run.state_history[seen_states:]:
            if json_lines:
                line = json.dumps({"state": state.model_dump(mode="json")})
            else:
                stamp = state.timestamp.astimezone().strftime("%H:%M:%S.%f")[:-3]
                line = (f"{stamp} | {'flow':<12} | STATE   | {_colour(terminal_safe(state.name), state.type.value)}"
                        + (f" - {terminal_safe(state.message)}" if state.message else ""))
            events.append((state.timestamp, line))
        seen_states = len(run.state_history)
        while True:
            page = client.read_logs(flow_run_id, cursor=cursor, limit=1000)
            events += [(log.timestamp, log.model_dump_json() if json_lines else sources.format(log))
                       for log in page.logs]
            cursor = page.next_cursor or cursor
            if not page.logs:
                break
        for _, line in sorted(events, key=lambda e: e[0]):
            print(line)
        sys.stdout.flush()
        final = run.state is not None and run.state.is_final()
        if final:
            page = client.read_logs(flow_run_id, cursor=cursor, limit=1000)  # flushed with the final state
            for log in page.logs:
                print(log.model_dump_json() if json_lines else sources.format(log))
            if not json_lines:
                tasks = client.read_task_runs(flow_run_id)
                if tasks:
                    print(f"\nTask runs ({len(tasks)})")
                    print(_task_table(tasks))
            return 0 if run.state_type is not None and run.state_type.value == "COMPLETED" else 1
        if deadline is not None and time.monotonic() >= deadline:
            print(f"error: flow run {terminal_safe(flow_run_id)} is still {terminal_safe(run.state_name)} after "
                  f"{timeout:g}s", file=sys.stderr)
            return 3
        time.sleep(interval)


def cmd_deployment_run(args: argparse.Namespace) -> int:
    from stratoflow import get_client
    from stratoflow.settings import get_settings

    params = _parse_params(args.param)
    settings = get_settings()
    if args.watch and settings.resolved_backend == "embedded" and not settings.api_url:
        raise _UsageError("--watch needs something that executes the run: nothing consumes work pools on the "
                          "embedded backend; start `stratoflow dev` and use the settings it prints")
    run = get_client().create_flow_run_from_deployment(
        args.name_or_id, parameters=params, tags=args.tag or (), idempotency_key=args.idempotency_key,
        scheduled_time=_parse_when(args.at))
    if args.json and not args.watch:
        _print_json(run.model_dump(mode="json", exclude={"state_history"}))
        return 0
    if not args.json:
        when = run.state.state_details.scheduled_time if run.state else None
        print(f"Created flow run {run.name!r} ({terminal_safe(run.id)}) of {terminal_safe(run.flow_name)}: "
              f"{_colour(terminal_safe(run.state_name or '-'), run.state_type)}"
              + (f" for {_dt(when)}" if when else ""))
        print(f"  parameters  {json.dumps(run.parameters)}")
        queue = f" / {terminal_safe(run.work_queue_name)}" if run.work_queue_name else ""
        print(f"  work pool   {terminal_safe(run.work_pool_name or '-')}{queue}")
    if not args.watch:
        return 0
    return watch_flow_run(run.id, timeout=args.timeout, json_lines=args.json)


def cmd_work_pool_inspect(args: argparse.Namespace) -> int:
    from stratoflow import get_client

    status = get_client().read_work_pool_status(args.name)
    if args.json:
        _print_json(status)
        return 0
    pool = status["pool"]
    print(f"Work pool {pool['name']!r} ({terminal_safe(pool['type'])}, {'paused' if pool['paused'] else 'active'})")
    print(f"  concurrency limit  {pool.get('concurrency_limit') if pool.get('concurrency_limit') is not None else '-'}")
    print(f"  dead letters       {status['dead_letter_messages']}")
    rows = [(q["name"], q["priority"], "paused" if q["paused"] else "active",
             "-" if q.get("concurrency_limit") is None else q["concurrency_limit"], q.get("messages_visible", "-"),
             q.get("messages_in_flight", "-"), q.get("messages_delayed", "-")) for q in status["queues"]]
    print(table(rows, ["QUEUE", "PRIORITY", "STATUS", "LIMIT", "WAITING", "IN FLIGHT", "DELAYED"]))
    return 0


def cmd_work_queue_create(args: argparse.Namespace) -> int:
    from stratoflow import get_client

    queue = get_client().create_work_queue(args.pool, args.name, priority=args.priority, concurrency_limit=args.limit)
    if args.json:
        _print_json(queue.model_dump(mode="json"))
    else:
        print(f"Created work queue {terminal_safe(queue.work_pool_name)}/{terminal_safe(queue.name)} "
              f"(priority {queue.priority})")
    return 0


def cmd_work_queue_pause(args: argparse.Namespace) -> int:
    from stratoflow import get_client

    client = get_client()
    pause = args.queue_action == "pause"
    queue = client.pause_work_queue(args.pool, args.name) if pause else client.resume_work_queue(args.pool, args.name)
    if args.json:
        _print_json(queue.model_dump(mode="json"))
    else:
        print(f"Work queue {terminal_safe(queue.work_pool_name)}/{terminal_safe(queue.name)} is "
              f"{'paused' if queue.paused else 'active'}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    import logging

    from stratoflow.worker import Worker, install_signal_handlers

    if args.limit < 1:
        raise _UsageError("--limit must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(levelname)-7s | %(message)s")
    worker = Worker(args.pool, queues=args.queue or (), limit=args.limit, grace_seconds=args.grace)
    install_signal_handlers(worker)
    print(f"Worker polling work pool {args.pool!r}"
          + (f" (queues {', '.join(args.queue)})" if args.queue else "") + f", up to {args.limit} run(s) at once",
          flush=True)
    worker.serve()
    print(f"Worker stopped: {len(worker.finished)} run(s) finished, {len(worker.released)} released", flush=True)
    return 0


def register(sub: Any, deployment: Any, work_pool: Any) -> None:
    """Add the commands to the top-level parser (``sub``) and the deployment/work-pool groups."""
    p = deployment.add_parser("run", help="create a flow run of a deployment (by id or FLOW/NAME); --watch follows it")
    p.add_argument("name_or_id", metavar="NAME_OR_ID")
    p.add_argument("--param", "-p", action="append", metavar="KEY=VALUE",
                   help="a parameter (repeatable); VALUE is read as JSON when it is valid JSON, else as a string")
    p.add_argument("--tag", action="append", help="a tag for the run (repeatable)")
    p.add_argument("--idempotency-key", help="a second run with the same key returns the first run")
    p.add_argument("--at", metavar="TIME", help="when to run: ISO 8601 time or +SECONDS (default now)")
    p.add_argument("--watch", "-w", action="store_true", help="stream states and logs until the run ends "
                   "(exit 0 when it completes, 1 otherwise)")
    p.add_argument("--timeout", type=float, help="with --watch: give up after this many seconds (exit 3)")
    p.set_defaults(fn=cmd_deployment_run)

    p = work_pool.add_parser("inspect", help="a pool with its queues, their depth and dead letters")
    p.add_argument("name")
    p.set_defaults(fn=cmd_work_pool_inspect)
    queue = work_pool.add_parser("queue", help="work queues of a pool").add_subparsers(
        dest="queue_action", required=True)
    p = queue.add_parser("create", help="create a queue (an SQS queue) in a pool")
    p.add_argument("pool")
    p.add_argument("name")
    p.add_argument("--priority", type=int, default=1, help="1 is served first (default 1)")
    p.add_argument("--limit", type=int, help="concurrency limit of the queue")
    p.set_defaults(fn=cmd_work_queue_create)
    for action in ("pause", "resume"):
        p = queue.add_parser(action, help=f"{action} a queue (its messages wait in SQS)")
        p.add_argument("pool")
        p.add_argument("name")
        p.set_defaults(fn=cmd_work_queue_pause)

    p = sub.add_parser("worker", help="execute the runs of a work pool in this process (flows longer than Lambda's "
                       "15 minutes)")
    p.add_argument("--pool", required=True, help="the work pool to poll")
    p.add_argument("--queue", action="append", help="only this queue of the pool (repeatable; default all)")
    p.add_argument("--limit", type=int, default=4, help="flow runs at once (default 4)")
    p.add_argument("--grace", type=float, default=30.0,
                   help="on SIGTERM, seconds to let running flows finish before releasing them (default 30)")
    p.set_defaults(fn=cmd_worker)
