"""What every command prints: Rich tables and lines for people, JSON for scripts.

Three rules hold for all output:

* user data (names, messages, tags, ids) goes through ``terminal_safe`` and into a
  ``rich.text.Text``, never a markup string, so ``[red]x`` prints as ``[red]x`` and an escape
  sequence cannot drive the terminal;
* when stdout is not a terminal the console is very wide and colourless, so a pipe or a test reads
  whole values (tables neither wrap nor truncate) and no colour codes;
* ``--json`` (before or after the command) prints one JSON document with ``print``: no Rich, no colour.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

from rich.cells import cell_len
from rich.console import Console, RenderableType
from rich.status import Status
from rich.table import Table
from rich.text import Text

STATE_STYLES = {
    "COMPLETED": "green", "FAILED": "red", "CRASHED": "magenta", "CANCELLED": "bright_black",
    "CANCELLING": "bright_black", "RUNNING": "blue", "PENDING": "white", "SCHEDULED": "yellow", "PAUSED": "yellow",
}
LEVEL_STYLES = {"WARNING": "yellow", "ERROR": "red", "CRITICAL": "bold red", "DEBUG": "bright_black"}
# Wide enough that no value a script reads is wrapped when stdout is a pipe or a file.
PIPE_WIDTH = 100_000

# The root ``--json`` (``stratoflow --json flow-run ls``), set by the root callback for one call of main().
JSON_DEFAULT: ContextVar[bool] = ContextVar("stratoflow_cli_json", default=False)


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


def safe(value: Any, style: str | None = None) -> Text:
    """User data as Rich text: escaped by ``terminal_safe`` and never read as markup."""
    return Text("" if value is None else terminal_safe(value), style=style or "")


def state_text(name: Any, state_type: Any) -> Text:
    """A state's name in its colour (the colour shows on a terminal only)."""
    key = getattr(state_type, "value", state_type)
    return safe("-" if name is None else name, STATE_STYLES.get(str(key)))


def wants_json(flag: bool) -> bool:
    """The command's own ``--json`` or the root one."""
    return flag or JSON_DEFAULT.get()


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """The reader went away (``stratoflow flow-run ls | head``): let main() stop quietly with
        exit 0 as for any other write, as ``cat`` does, instead of Rich's ``SystemExit(1)``."""
        self.quiet = True
        raise BrokenPipeError


def make_console(file: IO[str]) -> Console:
    """A console on ``file``: colour and the terminal's width on a TTY; no colour and no wrapping
    otherwise. Markup, emoji codes and highlighting are off: only ``Text`` styles colour anything."""
    tty = file.isatty()
    return _Console(file=file, force_terminal=tty, color_system="auto" if tty else None,
                   width=None if tty else PIPE_WIDTH, markup=False, emoji=False, highlight=False, soft_wrap=True)


def stdout() -> Console:
    """A console on the current ``sys.stdout`` (made per call: tests swap ``sys.stdout``)."""
    return make_console(sys.stdout)


def stderr() -> Console:
    return make_console(sys.stderr)


def echo(*parts: str | Text, console: Console | None = None) -> None:
    """One line to stdout from plain strings (our own words) and ``Text`` (user data, styled)."""
    (console or stdout()).print(Text.assemble(*parts))


def field(label: str, *value: str | Text) -> Text:
    """``  label       value``: one line of an ``inspect`` (the label bold on a terminal)."""
    return Text.assemble("  ", (f"{label:<11}", "bold"), " ", *value)


def print_json(data: Any) -> None:
    """One JSON document on stdout: plain ``print``, so never a colour code or a wrapped line."""
    print(json.dumps(data, indent=2, default=str))


def print_json_line(text: str) -> None:
    """One JSON Lines record (log streams: ``flow-run logs --json``, ``deployment run --watch --json``)."""
    print(text)


def error(message: str) -> None:
    """``error: <message>`` as one line on stderr."""
    stderr().print(Text.assemble(("error:", "bold red"), " ", terminal_safe(message)))


def build_table(rows: Sequence[Sequence[Any]], headers: Sequence[str], colour_col: int | None = None,
                colour_keys: Sequence[Any] | None = None, *, rule: str = "-") -> Table:
    """A header, a rule of ``rule`` under each header, then one row per record; columns two spaces
    apart, no borders (what ``cut``/``awk`` and the tests read). Column ``colour_col`` takes the
    colour of the state type in ``colour_keys`` (one per row).

    On a narrow terminal only columns with spaces in them (messages, tags, times) wrap, at the
    spaces; a column of single words (ids, names, states) keeps its values whole."""
    cells = [[safe(c) for c in row] for row in rows]
    columns = [[r[i] for r in cells] for i in range(len(headers))]
    widths = [max([len(h), *(c.cell_len for c in column)]) for h, column in zip(headers, columns, strict=True)]
    table = Table(box=None, padding=(0, 1), pad_edge=False, show_header=True, header_style="bold",
                  show_edge=False, expand=False)
    for header, column in zip(headers, columns, strict=True):
        table.add_column(header, overflow="fold", no_wrap=not any(" " in c.plain for c in column))
    table.add_row(*(Text(rule * w, style="bright_black", no_wrap=True, overflow="crop") for w in widths))
    for n, row in enumerate(cells):
        if colour_col is not None and colour_keys is not None:
            key = getattr(colour_keys[n], "value", colour_keys[n])
            row[colour_col].stylize(STATE_STYLES.get(str(key), ""))
        table.add_row(*row)
    return table


def _least_width(renderable: RenderableType) -> int:
    """The narrowest a ``build_table`` table prints without cutting a value: whole single-word
    (no_wrap) columns, the longest word of the others; two spaces between columns. Its row 0 is
    the rule, which is cropped to whatever width its column gets."""
    if not isinstance(renderable, Table):
        return 0
    widths = []
    for column in renderable.columns:
        texts = [Text(str(column.header)), *(c for c in list(column.cells)[1:] if isinstance(c, Text))]
        words = (t.cell_len for t in texts) if column.no_wrap else (
            cell_len(word) for t in texts for word in t.plain.split())
        widths.append(max(words, default=0))
    return sum(widths) + 2 * max(len(widths) - 1, 0)


def render(renderable: RenderableType, console: Console | None = None) -> str:
    """``renderable`` as the console would print it, each line's trailing padding removed. Never
    narrower than it can be without cutting a value: a table wider than the terminal is printed
    whole, and the terminal wraps its lines."""
    console = console or stdout()
    console.width = max(console.width, _least_width(renderable))  # print's own width= cannot exceed the console's
    with console.capture() as captured:
        console.print(renderable)
    return "\n".join(line.rstrip() for line in captured.get().splitlines())


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str], colour_col: int | None = None,
          colour_keys: Sequence[Any] | None = None) -> str:
    """The table as text (coloured only when stdout is a terminal); cells are ``terminal_safe``-
    escaped, so a name with a newline stays on its row and the columns stay aligned."""
    console = stdout()
    rule = "─" if console.is_terminal and (console.encoding or "").lower().startswith("utf") else "-"
    return render(build_table(rows, headers, colour_col, colour_keys, rule=rule), console)


def print_table(rows: Sequence[Sequence[Any]], headers: Sequence[str], colour_col: int | None = None,
                colour_keys: Sequence[Any] | None = None) -> None:
    print(table(rows, headers, colour_col, colour_keys))


@contextmanager
def status(console: Console, message: str | Text, *, enabled: bool = True) -> Iterator[Status | None]:
    """A spinner with ``message`` at the bottom of a terminal while the block runs; ``None`` (and
    nothing shown) when the console is not a terminal or not ``enabled``, so pipes, logs and JSON
    get plain lines only."""
    if not (enabled and console.is_terminal):
        yield None
        return
    with console.status(message, spinner="dots") as shown:
        yield shown


# -- values -------------------------------------------------------------------------------------------
def dt(value: datetime | None) -> str:
    """A time in the local zone, to the second."""
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.2f}s"


def run_duration(run: Any) -> float | None:
    """Seconds a flow or task run has run (until now while it still runs)."""
    if run.start_time is None:
        return None
    end = run.end_time or datetime.now(UTC)
    return float((end - run.start_time).total_seconds())
