"""A flow run's logs: ``stratoflow flow-run logs [--follow]``, and the live view of
``stratoflow deployment run --watch`` (its states and logs in one timeline until it ends).

Lines are ``TIME | SOURCE | LEVEL | MESSAGE``, every field a run wrote escaped by ``terminal_safe``;
``--json`` prints each log as one JSON line instead (a stream, so JSON Lines, not one document).
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.status import Status
from rich.text import Text

from stratoflow.cli import _output
from stratoflow.cli._output import safe, state_text
from stratoflow.cli._params import JsonOption
from stratoflow.cli.task_runs import print_task_runs
from stratoflow.client import StratoflowClient, get_client
from stratoflow.exceptions import StratoflowError

LEVELS = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}


def parse_level(level: str | None) -> int:
    """``--level`` by name (any case); no level is every log."""
    if level is None:
        return 0
    names = {v: k for k, v in LEVELS.items()}
    if level.upper() in names:
        return names[level.upper()]
    raise StratoflowError(f"--level must be one of {', '.join(LEVELS.values())}, not {level!r}")


def log_text(log: Any, source: str | None = None) -> Text:
    """``TIME | SOURCE | LEVEL | MESSAGE``; the level coloured on a terminal."""
    stamp = log.timestamp.astimezone().strftime("%H:%M:%S.%f")[:-3]
    level = LEVELS.get(log.level, str(log.level))
    parts: list[str | Text] = [f"{stamp} | "]
    if source is not None:
        shown = _output.terminal_safe(source)
        parts.append(safe(f"{shown:<12} | "))
    parts += [Text(f"{level:<7}", style=_output.LEVEL_STYLES.get(level, "")), " | ", safe(log.message)]
    return Text.assemble(*parts)


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

    def text(self, log: Any) -> Text:
        return log_text(log, self(log))

    def format(self, log: Any) -> str:
        """The line as plain text (for callers that print it themselves)."""
        return self.text(log).plain


def _print_logs(logs: list[Any], sources: LogSources, as_json: bool, console: Console) -> None:
    for log in logs:
        if as_json:
            _output.print_json_line(log.model_dump_json())
        else:
            console.print(sources.text(log))


def flow_run_logs(
    flow_run_id: Annotated[str, typer.Argument(metavar="ID", help="The flow run's id.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new logs until the run ends.")] = False,
    level: Annotated[str | None, typer.Option(help="Minimum level (DEBUG, INFO, WARNING, ERROR).")] = None,
    interval: Annotated[float, typer.Option(hidden=True)] = 1.0,
    json_: JsonOption = False,
) -> int:
    """Print a flow run's logs in order."""
    as_json = _output.wants_json(json_)
    client = get_client()
    run = client.read_flow_run(flow_run_id)  # 404 early with a clear message
    min_level = parse_level(level)
    sources = LogSources(client, run.id)
    console = _output.stdout()
    cursor: str | None = None
    while True:
        page = client.read_logs(run.id, cursor=cursor, min_level=min_level, limit=1000)
        _print_logs(page.logs, sources, as_json, console)
        cursor = page.next_cursor or cursor
        if page.logs:
            continue
        if not follow:
            return 0
        state = client.read_flow_run(run.id).state
        if state is not None and state.is_final():
            # One last read after the run ended, for logs flushed with its final state.
            page = client.read_logs(run.id, cursor=cursor, min_level=min_level)
            _print_logs(page.logs, sources, as_json, console)
            return 0
        time.sleep(interval)


# -- deployment run --watch -----------------------------------------------------------------------
class _Watch:
    """What a watch has printed so far: the states seen and the log cursor."""

    def __init__(self, client: StratoflowClient, flow_run_id: str, console: Console, json_lines: bool) -> None:
        self.client = client
        self.flow_run_id = flow_run_id
        self.console = console
        self.json_lines = json_lines
        self.sources = LogSources(client, flow_run_id)
        self.seen_states = 0
        self.cursor: str | None = None

    def _state_line(self, state: Any) -> str | Text:
        if self.json_lines:
            return json.dumps({"state": state.model_dump(mode="json")})
        stamp = state.timestamp.astimezone().strftime("%H:%M:%S.%f")[:-3]
        message: list[str | Text] = [" - ", safe(state.message)] if state.message else []
        return Text.assemble(f"{stamp} | {'flow':<12} | STATE   | ", state_text(state.name, state.type), *message)

    def _log_line(self, log: Any) -> str | Text:
        return log.model_dump_json() if self.json_lines else self.sources.text(log)

    def _emit(self, line: str | Text) -> None:
        if isinstance(line, str):
            _output.print_json_line(line)
        else:
            self.console.print(line)

    def print_new(self, run: Any) -> None:
        """States and logs since the last call, in one timeline in the order they happened."""
        events: list[tuple[datetime, str | Text]] = [
            (state.timestamp, self._state_line(state)) for state in run.state_history[self.seen_states:]]
        self.seen_states = len(run.state_history)
        while True:
            page = self.client.read_logs(self.flow_run_id, cursor=self.cursor, limit=1000)
            events += [(log.timestamp, self._log_line(log)) for log in page.logs]
            self.cursor = page.next_cursor or self.cursor
            if not page.logs:
                break
        for _, line in sorted(events, key=lambda e: e[0]):
            self._emit(line)

    def finish(self) -> None:
        """Logs flushed with the final state, then the task runs (not in JSON Lines)."""
        page = self.client.read_logs(self.flow_run_id, cursor=self.cursor, limit=1000)
        for log in page.logs:
            self._emit(self._log_line(log))
        if not self.json_lines:
            tasks = self.client.read_task_runs(self.flow_run_id)
            if tasks:
                print_task_runs(tasks)


def _progress(run: Any, started: float) -> Text:
    return Text.assemble("flow run ", safe(run.name), ": ", state_text(run.state_name, run.state_type),
                         f" ({time.monotonic() - started:.0f}s)")


def _follow(watch: _Watch, spinner: Status | None, timeout: float | None, interval: float) -> Any:
    """Poll until the run is final (returns it) or ``timeout`` passes (returns None)."""
    started = time.monotonic()
    while True:
        run = watch.client.read_flow_run(watch.flow_run_id)
        watch.print_new(run)
        if run.state is not None and run.state.is_final():
            return run
        if timeout is not None and time.monotonic() - started >= timeout:
            _output.error(f"flow run {watch.flow_run_id} is still {run.state_name} after {timeout:g}s")
            return None
        if spinner is not None:
            spinner.update(_progress(run, started))
        time.sleep(interval)


def watch_flow_run(flow_run_id: str, *, timeout: float | None = None, json_lines: bool = False,
                   interval: float = 0.5) -> int:
    """Print the run's states and logs as they happen until it is final, with a spinner on a
    terminal saying where it is; exit 0 when it completed, 1 when it ended otherwise, 3 on timeout."""
    console = _output.stdout()
    watch = _Watch(get_client(), flow_run_id, console, json_lines)
    waiting = Text.assemble("waiting for flow run ", safe(flow_run_id))
    with _output.status(console, waiting, enabled=not json_lines) as spinner:
        run = _follow(watch, spinner, timeout, interval)
    if run is None:
        return 3
    watch.finish()
    return 0 if run.state_type is not None and run.state_type.value == "COMPLETED" else 1
