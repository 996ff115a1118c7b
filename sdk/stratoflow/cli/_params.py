"""Arguments more than one command reads: ``--json``, ``--param KEY=VALUE``, ``--at TIME``, and the
error a malformed one raises (exit 2, one line)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from stratoflow.states import now

JsonOption = Annotated[bool, typer.Option(
    "--json", help="Print JSON instead of a table (also: stratoflow --json ...).")]
ParamOption = Annotated[list[str] | None, typer.Option(
    "--param", "-p", metavar="KEY=VALUE",
    help="A parameter (repeatable); VALUE is read as JSON when it is valid JSON, else as a string.")]


class CliUsageError(Exception):
    """A malformed argument: main() prints it on one line and exits 2 (argparse's code for usage)."""


def parse_params(pairs: Sequence[str] | None) -> dict[str, Any]:
    """``k=v`` pairs; a value that is valid JSON is taken as JSON (``n=3`` is 3), else as a string."""
    params: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise CliUsageError(f"--param {pair!r} is not KEY=VALUE")
        try:
            params[key.strip()] = json.loads(raw)
        except ValueError:
            params[key.strip()] = raw
    return params


def parse_when(value: str | None) -> datetime | None:
    """``--at``: an ISO time (UTC when it names no zone) or ``+SECONDS`` from now."""
    if value is None:
        return None
    if value.startswith("+"):
        try:
            return now() + timedelta(seconds=float(value[1:]))
        except ValueError:
            raise CliUsageError(f"--at {value!r}: +SECONDS must be a number") from None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise CliUsageError(f"--at {value!r}: not an ISO 8601 time (e.g. 2026-12-01T09:00:00+01:00) or +SECONDS") \
            from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def exclusive(given: dict[str, Any]) -> None:
    """argparse's mutually exclusive group: refuse a second option of the group (keys: the options
    as typed, in the group's order)."""
    chosen = [name for name, value in given.items() if value not in (None, False)]
    if len(chosen) > 1:
        raise CliUsageError(f"argument {chosen[1]}: not allowed with argument {chosen[0]}")
