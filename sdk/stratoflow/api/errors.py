"""The one body shape of the API's errors, ``{"error": "<one line>", ...}``, and the one-line
description of a validation failure. The error classes are domain errors (``stratoflow.exceptions``:
``RequestRefused`` and its subclasses), raised by the service layer and mapped to their status by
``stratoflow.api.app``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def error_body(message: str, **extra: Any) -> dict[str, Any]:
    # One line, always: callers show it as is.
    return {"error": " ".join(message.split()), **extra}


def _loc(loc: Iterable[Any]) -> str:
    parts = [str(p) for p in loc]
    return ".".join(parts) if parts else "request"


def describe_validation_errors(errors: Sequence[Mapping[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """One line naming the first offending field (and how many more), plus a sanitized list.

    The list keeps location, message and type; the offending input is left out (it may be large
    or sensitive), as Powertools does.
    """
    details = [{"loc": _loc(e.get("loc", ())), "msg": str(e.get("msg", "invalid value")), "type": e.get("type")}
               for e in errors]
    if not details:
        return "invalid request", details
    first = details[0]
    if first["type"] == "missing" and first["loc"] == "body":
        line = "body: a JSON body is required"
    else:
        line = f"{first['loc']}: {first['msg']}"
    if len(details) > 1:
        line += f" (and {len(details) - 1} more)"
    return line, details


def json_type_errors(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Of a strict validation's errors, those of a value of another JSON type than its field's
    ("5" or true for an integer, 1 for a boolean, a number for a date-time). The others are left
    to lax validation: past a validator that hands its handler a parsed value, strict validation is
    Python's and refuses a date-time string. A whole float (3.0) is an integer, as in JSON Schema."""

    def wrong_type(error: Mapping[str, Any]) -> bool:
        kind, value = str(error.get("type", "")), error.get("input")
        if kind.startswith("int_"):
            return not (isinstance(value, int) and not isinstance(value, bool)) and not (
                isinstance(value, float) and value.is_integer())
        if kind.startswith("float_"):
            return isinstance(value, bool) or not isinstance(value, int | float)
        if kind.startswith("bool_"):
            return not isinstance(value, bool)
        if kind.startswith(("datetime_", "date_", "time_")):
            return not isinstance(value, str)
        return False

    return [dict(e) for e in errors if wrong_type(e)]
