"""``stratoflow`` command line: readable tables on a terminal, JSON with ``--json``.

Errors exit non-zero with one line on stderr saying what was wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from stratoflow.exceptions import ObjectNotFound, StratoflowError

_COLOURS = {
    "COMPLETED": "32", "FAILED": "31", "CRASHED": "35", "CANCELLED": "90", "CANCELLING": "90",
    "RUNNING": "34", "PENDING": "37", "SCHEDULED": "33", "PAUSED": "33",
}
_LEVELS = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}


def _escape_table() -> dict[int, str]:
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    controls = [*range(0x20), 0x7F, *range(0x80, 0xA0)]  # C0, DEL, C1 (0x9b is a CSI on some terminals)
    escapes = {c: named.get(chr(c), f"\\x{c:02x}") for c in controls}
    # Line/paragraph separators and bidi overrides/isolates: they reorder or break what is shown.
    escapes.update({c: f"\\u{c:04x}" for c in (0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A))})
    return escapes


_ESCAPES = _escape_table()


def terminal_safe(value: Any) -> str:
    """``str(value)`` fit for a terminal: control characters as escapes (a newline as the two
    characters ``\\n``, ESC as ``\\x1b``, C1 controls, bidi overrides), other text as it is.

    Everything the CLI prints that a run, a flow or an API client wrote (log messages, names,
    state messages, tags) goes through this: a raw newline would forge log lines and an escape
    sequence would drive the user's terminal. Backslashes are left alone (paths stay readable),
    so a literal ``\\n`` and an escaped newline look alike. ``--json`` output is JSON instead.
    """
    return str(value).translate(_ESCAPES)


def _colour(text: str, state_type: str | None) -> str:
    if not sys.stdout.isatty() or state_type not in _COLOURS:
        return text
    return f"\033[{_COLOURS[state_type]}m{text}\033[0m"


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str], colour_col: int | None = None,
          colour_keys: Sequence[str | None] | None = None) -> str:
    """Render rows as an aligned text table (colour applied after padding so widths stay right);
    cells are ``terminal_safe``-escaped, so a name with a newline stays on its row."""
    cells = [[str(h) for h in headers]] + [["" if c is None else terminal_safe(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        parts = []
        for i, c in enumerate(row):
            padded = c.ljust(widths[i])
            if n > 0 and colour_col == i and colour_keys is not None:
                padded = _colour(padded, colour_keys[n - 1])
            parts.append(padded)
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _dt(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.2f}s"


def _run_duration(run: Any) -> float | None:
    if run.start_time is None:
        return None
    end = run.end_time or datetime.now(UTC)
    return (end - run.start_time).total_seconds()


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


# -- commands -------------------------------------------------------------------------------------
def cmd_version(args: argparse.Namespace) -> int:
    from stratoflow import __version__
    from stratoflow.settings import get_settings

    s = get_settings()
    info = {"version": __version__, "backend": s.resolved_backend, "home": str(s.home), "region": s.region,
            "table_prefix": s.table_prefix, "bucket": s.bucket, "api_url": s.api_url,
            "python": sys.version.split()[0]}
    if args.json:
        _print_json(info)
    else:
        for k, v in info.items():
            print(f"{k:<13} {v}")
    return 0


def cmd_flow_run_ls(args: argparse.Namespace) -> int:
    from stratoflow import get_client

    runs = get_client().read_flow_runs(flow_name=args.flow, state_types=args.state or None, limit=args.limit)
    if args.json:
        _print_json([r.model_dump(mode="json", exclude={"state_history"}) for r in runs])
        return 0
    rows = [(r.id, r.flow_name, r.name, r.state_name, _dt(r.start_time or r.created), _duration(_run_duration(r)))
            for r in runs]
    print(table(rows, ["ID", "FLOW", "NAME", "STATE", "STARTED", "DURATION"], 3, [r.state_type for r in runs]))
    return 0


def cmd_flow_run_inspect(args: argparse.Namespace) -> int:
    from stratoflow import get_client

    client = get_client()
    run = client.read_flow_run(args.id)
    if args.json:
        _print_json(run.model_dump(mode="json"))
        return 0
    print(f"Flow run {run.name!r} ({terminal_safe(run.id)})")
    print(f"  flow        {terminal_safe(run.flow_name)}")
    print(f"  state       {_colour(terminal_safe(run.state_name or '-'), run.state_type)}"
          + (f" - {terminal_safe(run.state.message)}" if run.state and run.state.message else ""))
    print(f"  parameters  {json.dumps(run.parameters)}")
    print(f"  run count   {run.run_count}    duration {_duration(_run_duration(run))}")
    print(f"  tags        {terminal_safe(', '.join(run.tags) or '-')}")
    print("\nState history")
    print(table([(_dt(s.timestamp), s.name, s.message or "") for s in run.state_history],
                ["TIME", "STATE", "MESSAGE"], 1, [s.type.value for s in run.state_history]))
    tasks = client.read_task_runs(run.id)
    if tasks:
        print(f"\nTask runs ({len(tasks)})")
        print(_task_table(tasks))
    return 0


def _task_table(tasks: Sequence[Any]) -> str:
    rows = [(t.name, t.state_name, t.run_count, _duration(_run_duration(t)), t.id) for t in tasks]
    return table(rows, ["TASK RUN", "STATE", "RUNS", "DURATION", "ID"], 1, [t.state_type for t in tasks])


def cmd_task_run_ls(args: argparse.Namespace) -> int:
    from stratoflow import get_client

    tasks = get_client().read_task_runs(args.flow_run)
    if args.json:
        _print_json([t.model_dump(mode="json", exclude={"state_history"}) for t in tasks])
        return 0
    print(_task_table(tasks))
    return 0


def _format_log(log: Any, source: str | None = None) -> str:
    ts = log.timestamp.astimezone().strftime("%H:%M:%S.%f")[:-3]
    source = None if source is None else terminal_safe(source)
    where = f"{source:<{max(len(source), 12)}} | " if source is not None else ""
    return f"{ts} | {where}{_LEVELS.get(log.level, log.level):<7} | {terminal_safe(log.message)}"


class LogSources:
    """Who wrote a log line: the task run's name, or ``flow``. Task runs are read once, and again
    only when a line names one not seen yet (a run still going makes new ones)."""

    def __init__(self, client: Any, flow_run_id: str) -> None:
        self.client = client
        self.flow_run_id = flow_run_id
        self.names: dict[str, str] = {}

    def __call__(self, log: Any) -> str:
        if not log.task_run_id:
            return "flow"
        if log.task_run_id not in self.names:
            self.names.update({t.id: t.name for t in self.client.read_task_runs(self.flow_run_id)})
        return self.names.get(log.task_run_id, log.task_run_id[:8])

    def format(self, log: Any) -> str:
        return _format_log(log, self(log))


def cmd_flow_run_logs(args: argparse.Namespace) -> int:
    from stratoflow import get_client

    client = get_client()
    run = client.read_flow_run(args.id)  # 404 early with a clear message
    min_level = _parse_level(args.level)
    sources = LogSources(client, run.id)
    cursor: str | None = None
    while True:
        page = client.read_logs(run.id, cursor=cursor, min_level=min_level, limit=1000)
        for log in page.logs:
            if args.json:
                print(log.model_dump_json())
            else:
                print(sources.format(log))
        cursor = page.next_cursor or cursor
        if page.logs:
            continue
        if not args.follow:
            return 0
        if client.read_flow_run(run.id).state is not None and client.read_flow_run(run.id).state.is_final():  # type: ignore[union-attr]
            # One last read after the run ended, for logs flushed with its final state.
            page = client.read_logs(run.id, cursor=cursor, min_level=min_level)
            for log in page.logs:
                print(log.model_dump_json() if args.json else sources.format(log))
            return 0
        time.sleep(args.interval)


def _parse_level(level: str | None) -> int:
    if level is None:
        return 0
    names = {v: k for k, v in _LEVELS.items()}
    if level.upper() in names:
        return names[level.upper()]
    raise StratoflowError(f"--level must be one of {', '.join(_LEVELS.values())}, not {level!r}")


def _print_run_state(run: Any, verb: str) -> None:
    state = run.state
    print(f"{verb} flow run {run.name!r} ({terminal_safe(run.id)}): now "
          f"{_colour(terminal_safe(state.name) if state else '-', run.state_type)}")


def cmd_flow_run_cancel(args: argparse.Namespace) -> int:
    from stratoflow import get_client

    run = get_client().cancel_flow_run(args.id)
    if args.json:
        _print_json(run.model_dump(mode="json", exclude={"state_history"}))
    else:
        _print_run_state(run, "Cancelled" if run.state_type == "CANCELLED" else "Cancelling")
    return 0


def cmd_flow_run_retry(args: argparse.Namespace) -> int:
    from stratoflow import get_client

    run = get_client().retry_flow_run(args.id)
    if args.json:
        _print_json(run.model_dump(mode="json", exclude={"state_history"}))
    else:
        _print_run_state(run, "Retrying")
    return 0


def cmd_deployment_ls(args: argparse.Namespace) -> int:
    from stratoflow import get_client

    deps = get_client().read_deployments(flow_name=args.flow, limit=args.limit)
    if args.json:
        _print_json([d.model_dump(mode="json") for d in deps])
        return 0
    rows = [(d.id, f"{d.flow_name}/{d.name}", d.version, "paused" if d.paused else "active", d.work_pool_name or "-",
             ", ".join(d.tags) or "-") for d in deps]
    print(table(rows, ["ID", "NAME", "VERSION", "STATUS", "WORK POOL", "TAGS"]))
    return 0


def cmd_deployment_inspect(args: argparse.Namespace) -> int:
    from stratoflow import get_client

    d = get_client().read_deployment(args.id)
    if args.json:
        _print_json(d.model_dump(mode="json"))
        return 0
    print(f"Deployment {terminal_safe(d.flow_name)}/{terminal_safe(d.name)} ({terminal_safe(d.id)})")
    print(f"  version     {d.version}    {'paused' if d.paused else 'active'}")
    print(f"  entrypoint  {terminal_safe(d.entrypoint or '-')}")
    print(f"  work pool   {terminal_safe(d.work_pool_name or '-')}"
          + (f" / {terminal_safe(d.work_queue_name)}" if d.work_queue_name else ""))
    print(f"  parameters  {json.dumps(d.parameters)}")
    print(f"  schema      {json.dumps(d.parameter_openapi_schema) if d.parameter_openapi_schema else '-'}")
    print(f"  tags        {terminal_safe(', '.join(d.tags) or '-')}")
    print(f"  updated     {_dt(d.updated)}")
    return 0


def _parse_params(pairs: Sequence[str] | None) -> dict[str, Any]:
    """``k=v`` pairs; a value that is valid JSON is taken as JSON (``n=3`` is 3), else as a string."""
    params: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise _UsageError(f"--param {pair!r} is not KEY=VALUE")
        try:
            params[key.strip()] = json.loads(raw)
        except ValueError:
            params[key.strip()] = raw
    return params


class _UsageError(Exception):
    """A malformed argument: exit 2 with one line."""


def _pool_table(pools: Sequence[Any]) -> str:
    rows = [(p.name, p.type.value, "paused" if p.paused else "active",
             "-" if p.concurrency_limit is None else p.concurrency_limit, _dt(p.created)) for p in pools]
    return table(rows, ["NAME", "TYPE", "STATUS", "LIMIT", "CREATED"])


def cmd_work_pool_ls(args: argparse.Namespace) -> int:
    from stratoflow import get_client

    pools = get_client().read_work_pools()
    if args.json:
        _print_json([p.model_dump(mode="json") for p in pools])
    else:
        print(_pool_table(pools))
    return 0


def cmd_work_pool_create(args: argparse.Namespace) -> int:
    from stratoflow import get_client

    pool = get_client().create_work_pool(args.name, type=args.type, concurrency_limit=args.limit)
    if args.json:
        _print_json(pool.model_dump(mode="json"))
    else:
        print(f"Created work pool {pool.name!r} (type {pool.type.value}"
              + (f", limit {pool.concurrency_limit}" if pool.concurrency_limit is not None else "") + ")")
    return 0


def cmd_work_pool_pause(args: argparse.Namespace) -> int:
    from stratoflow import get_client

    client = get_client()
    pool = client.pause_work_pool(args.name) if args.action == "pause" else client.resume_work_pool(args.name)
    if args.json:
        _print_json(pool.model_dump(mode="json"))
    else:
        print(f"Work pool {pool.name!r} is {'paused' if pool.paused else 'active'}")
    return 0


def cmd_concurrency_limit_create(args: argparse.Namespace) -> int:
    from stratoflow import get_client

    limit = get_client().create_concurrency_limit(args.tag, args.limit)
    if args.json:
        _print_json(limit.model_dump(mode="json"))
    else:
        print(f"Concurrency limit of tag {limit.tag!r}: {limit.limit} (version {limit.version})")
    return 0


def cmd_concurrency_limit_ls(args: argparse.Namespace) -> int:
    from stratoflow import get_client

    limits = get_client().read_concurrency_limits()
    if args.json:
        _print_json([c.model_dump(mode="json") for c in limits])
        return 0
    rows = [(c.tag, c.limit, len(c.active_slots), _dt(c.updated)) for c in limits]
    print(table(rows, ["TAG", "LIMIT", "ACTIVE", "UPDATED"]))
    return 0


def cmd_concurrency_limit_delete(args: argparse.Namespace) -> int:
    from stratoflow import get_client

    get_client().delete_concurrency_limit(args.tag)
    if args.json:
        _print_json({"deleted": args.tag})
    else:
        print(f"Deleted the concurrency limit of tag {args.tag!r}")
    return 0


def _add_object_commands(sub: Any, fr: Any) -> tuple[Any, Any]:
    """flow-run cancel|retry, deployment, work-pool and concurrency-limit commands."""
    p = fr.add_parser("cancel", help="cancel a flow run (Running/Pending -> Cancelling, Scheduled -> Cancelled)")
    p.add_argument("id")
    p.set_defaults(fn=cmd_flow_run_cancel)
    p = fr.add_parser("retry", help="retry a finished flow run (-> Scheduled, AwaitingRetry)")
    p.add_argument("id")
    p.set_defaults(fn=cmd_flow_run_retry)

    dp = sub.add_parser("deployment", help="deployments").add_subparsers(dest="action", required=True)
    p = dp.add_parser("ls", help="list deployments")
    p.add_argument("--flow", help="only deployments of this flow")
    p.add_argument("--limit", type=int, default=200)
    p.set_defaults(fn=cmd_deployment_ls)
    p = dp.add_parser("inspect", help="show a deployment (by id or FLOW/NAME)")
    p.add_argument("id", metavar="NAME_OR_ID")
    p.set_defaults(fn=cmd_deployment_inspect)
    wp = sub.add_parser("work-pool", help="work pools").add_subparsers(dest="action", required=True)
    p = wp.add_parser("ls", help="list work pools")
    p.set_defaults(fn=cmd_work_pool_ls)
    p = wp.add_parser("create", help="create a work pool (its `default` queue and dead-letter queue on SQS)")
    p.add_argument("name")
    p.add_argument("--type", choices=["lambda", "process"], default="lambda")
    p.add_argument("--limit", type=int, help="concurrency limit of the pool")
    p.set_defaults(fn=cmd_work_pool_create)
    for action in ("pause", "resume"):
        p = wp.add_parser(action, help=f"{action} a work pool")
        p.add_argument("name")
        p.set_defaults(fn=cmd_work_pool_pause)

    cl = sub.add_parser("concurrency-limit", help="concurrency limits by tag").add_subparsers(
        dest="action", required=True)
    p = cl.add_parser("create", help="create the limit of a tag, or change it")
    p.add_argument("tag")
    p.add_argument("limit", type=int)
    p.set_defaults(fn=cmd_concurrency_limit_create)
    p = cl.add_parser("ls", help="list concurrency limits")
    p.set_defaults(fn=cmd_concurrency_limit_ls)
    p = cl.add_parser("delete", help="delete the limit of a tag")
    p.add_argument("tag")
    p.set_defaults(fn=cmd_concurrency_limit_delete)
    return dp, wp


def cmd_dev(args: argparse.Namespace) -> int:
    """Run the local cloud over HTTP until Ctrl-C or SIGTERM (see stratoflow/local/devstack.py)."""
    import gc
    import signal
    import threading

    from stratoflow.local.devstack import DevStack

    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    stack = DevStack(port=args.port, moto_port=args.moto_port, handler=args.handler,
                     function_timeout=args.timeout, executor=not args.no_executor,
                     executor_concurrency=args.executor_concurrency)
    try:
        started = time.perf_counter()
        stack.start()
        urls = stack.urls
        print(f"Stratoflow dev stack (up in {time.perf_counter() - started:.1f}s)")
        print(f"  API       {urls.api}  <- {stack.handler_spec}")
        print(f"  UI        {urls.api}/ui/")
        print(f"  AWS       {urls.moto}  (moto: tables {stack.table_prefix}-*, bucket {stack.bucket})")
        if stack.executor_enabled:
            print(f"  executor  {stack.executor_config.handler_path}  <- the SQS queues of every `lambda` work "
                  f"pool (up to {stack.executor_config.max_concurrency} at once); schedules fire on time")
        print("\nPoint the SDK and the CLI in another shell at it:")
        from stratoflow.cli_config import export_line

        for name, value in stack.env().items():
            print(f"  {export_line(name, value)}")
        print("\nCtrl-C stops it.")
        print("ready", flush=True)
        while not stop.wait(1.0):  # a signal wakes it at once on POSIX (within the second on Windows)
            pass
    finally:
        try:
            stack.stop()  # bounded (every join has a timeout); a repeated signal does not cut it short
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            # The process ends next: spare it a last collection over moto's and botocore's many
            # objects (about half a second).
            gc.freeze()
    print("stopped", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stratoflow", description="Stratoflow: serverless workflow orchestration")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("version", help="show version and configuration")
    p.set_defaults(fn=cmd_version)

    fr = sub.add_parser("flow-run", help="inspect flow runs").add_subparsers(dest="action", required=True)
    p = fr.add_parser("ls", help="list flow runs, newest first")
    p.add_argument("--flow", help="only runs of this flow")
    p.add_argument("--state", action="append", type=str.upper, help="only runs in this state type (repeatable)")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(fn=cmd_flow_run_ls)
    p = fr.add_parser("inspect", help="show a flow run, its state history and task runs")
    p.add_argument("id")
    p.set_defaults(fn=cmd_flow_run_inspect)
    p = fr.add_parser("logs", help="print a flow run's logs in order")
    p.add_argument("id")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new logs until the run ends")
    p.add_argument("--level", help="minimum level (DEBUG, INFO, WARNING, ERROR)")
    p.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    p.set_defaults(fn=cmd_flow_run_logs)

    p = sub.add_parser("dev", help="run the local cloud over HTTP: moto server, provisioned resources, the API")
    p.add_argument("--port", type=int, default=4200, help="port of the API (default 4200; 0 picks a free one)")
    p.add_argument("--moto-port", type=int, default=0, help="port of the moto server (default 0: a free one)")
    p.add_argument("--handler", metavar="PATH:ATTR",
                   help="the API's Lambda handler (default <repo>/functions/api/app.py:lambda_handler)")
    p.add_argument("--timeout", type=float, default=30.0, help="the function's timeout in seconds (default 30)")
    p.add_argument("--no-executor", action="store_true",
                   help="do not consume work pools, fire schedules or send due runs (the API alone)")
    p.add_argument("--executor-concurrency", type=int, default=4,
                   help="flow runs the local executor function runs at once (default 4)")
    p.set_defaults(fn=cmd_dev)

    tr = sub.add_parser("task-run", help="inspect task runs").add_subparsers(dest="action", required=True)
    p = tr.add_parser("ls", help="list the task runs of a flow run")
    p.add_argument("--flow-run", required=True)
    p.set_defaults(fn=cmd_task_run_ls)

    dp, wp = _add_object_commands(sub, fr)
    from stratoflow import cli_config, cli_deploy, cli_schedules, cli_ui, cli_work

    cli_config.register(sub)
    cli_work.register(sub, dp, wp)
    cli_deploy.register(sub)
    cli_ui.register(sub)
    cli_schedules.register_deployment_subcommands(dp)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "state", None):
        from stratoflow.states import StateType

        bad = [s for s in args.state if s not in StateType.__members__]
        if bad:
            print(f"error: --state {bad[0]!r} is not one of {', '.join(StateType.__members__)}", file=sys.stderr)
            return 2
    try:
        return int(args.fn(args))
    except ObjectNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except StratoflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except _UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # pydantic's ValidationError: an argument the API would refuse (422)
        errors = getattr(exc, "errors", None)
        if errors is None:
            raise
        from stratoflow.api.errors import describe_validation_errors

        print(f"error: {describe_validation_errors(errors())[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`stratoflow flow-run logs ID | head`): stop quietly, as cat does.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
