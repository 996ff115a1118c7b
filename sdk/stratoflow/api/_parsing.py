"""Parsing what the engine routes take as free-form JSON (a run of either kind): the path's run
kind, and the run validated as that kind with JSON's types and the store's key bounds. Failures
are 422s naming the field, as Powertools' own validation answers."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stratoflow.api.errors import describe_validation_errors, json_type_errors
from stratoflow.exceptions import Unprocessable
from stratoflow.models import FlowRun, TaskRun
from stratoflow.orchestration import RunKind

_Key = Annotated[str, Field(min_length=1, max_length=256)]


class RunKeys(BaseModel):
    """The fields of a run the store keys it by or reads another record by (its table's key, an
    index's, its flow run's): DynamoDB refuses an empty key and a long one (2 KiB), so a run sent
    here keeps them to names of 1 to 256 characters, where the records themselves do not bound them."""

    model_config = ConfigDict(extra="allow")

    id: _Key
    flow_name: _Key | None = None
    deployment_id: _Key | None = None
    flow_run_id: _Key | None = None


def parse_kind(kind: str) -> RunKind:
    """The ``RunKind`` of the path's ``kind``; 422 for another word."""
    try:
        return RunKind(kind)
    except ValueError:
        raise Unprocessable(f"path.kind: unknown run kind {kind!r}; use 'flow' or 'task'") from None


def _validated(model: type[FlowRun] | type[TaskRun], data: dict[str, Any], *, strict: bool) -> FlowRun | TaskRun:
    run = (model.model_validate_json(json.dumps(data), strict=True) if strict else model.model_validate(data))
    RunKeys.model_validate(run.model_dump(include=set(RunKeys.model_fields)))
    return run


def parse_run(kind: RunKind, data: dict[str, Any], where: str) -> FlowRun | TaskRun:
    """The run in ``data`` (at ``where`` in the request), validated with JSON's types (strict, as
    every body: "3" is no integer), then with ``RunKeys``; 422 naming the field otherwise."""
    model = FlowRun if kind == RunKind.FLOW else TaskRun
    try:
        return _validated(model, data, strict=True)
    except ValidationError as exc:
        errors = json_type_errors(exc.errors())
    try:
        if not errors:  # only whole floats for integers, which JSON Schema reads as integers too
            return _validated(model, data, strict=False)
    except ValidationError as exc:
        errors = list(exc.errors())  # type: ignore[arg-type]
    line, details = describe_validation_errors([{**e, "loc": (where, *e.get("loc", ()))} for e in errors])
    raise Unprocessable(line, errors=details)
