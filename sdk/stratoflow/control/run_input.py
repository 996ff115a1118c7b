"""The input a resume gives a paused or suspended flow run: checked against the schema the pause
declared, stored under the run and the pause's key, and read back by the waiting flow."""

from __future__ import annotations

import json
from typing import Any

from stratoflow.exceptions import ObjectNotFound, StratoflowError
from stratoflow.models import ObjectKind
from stratoflow.safe_jsonschema import RegexBudgetExceeded, UnsafeSchema, validation_errors
from stratoflow.storage.base import Store

DEFAULT_KEY = "pause-1"


def input_key(flow_run_id: str, key: str) -> str:
    return f"{flow_run_id}/{key}"


def stored_input(store: Store, flow_run_id: str, key: str) -> dict[str, Any] | None:
    """The input a resume stored for this pause, or None (not resumed yet, or the objects table
    is the server's: a flow running over the API finds its input on the run's state instead)."""
    try:
        return dict(store.get_object(ObjectKind.RUN_INPUT, input_key(flow_run_id, key)).doc.get("input") or {})
    except ObjectNotFound:
        return None
    except StratoflowError:  # over the API the objects table is the server's: input comes via the run
        return None


def check_run_input(schema_json: str | None, run_input: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the field when ``run_input`` breaks the pause's schema."""
    if not schema_json:
        return
    schema = json.loads(schema_json)
    # The schema comes from flow code: patterns run on RE2 under a budget and no $ref is fetched,
    # so no pause can hold the API's resume request (stratoflow.safe_jsonschema).
    try:
        found = validation_errors(schema, run_input)
    except UnsafeSchema as exc:
        raise ValueError(f"run_input: the pause's schema cannot be checked safely: {exc.message}") from None
    except RegexBudgetExceeded as exc:
        raise ValueError(f"run_input: too costly to check against the pause's patterns ({exc})") from None
    # Errors about a given field first, then missing ones (named by the missing field).
    errors = sorted(found, key=lambda e: (not e.absolute_path, [str(p) for p in e.absolute_path]))
    if errors:
        err = errors[0]
        path = [str(p) for p in err.absolute_path]
        if not path and err.validator == "required":
            path = [p for p in err.validator_value if p not in run_input][:1]
        raise ValueError(f"{'.'.join(['run_input', *path])}: {err.message}")
