"""What every route module shares: the OpenAPI ``responses=`` of a route (its success and the
error statuses it can answer, each with its one-line body), the path parameter of a flow run, the
service's names and the metric counter. Here rather than in ``app.py``, which imports the route
modules: a route module importing ``app`` would be a cycle."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Annotated, Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.event_handler import content_types
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.metrics import MetricUnit

from stratoflow.schemas import ErrorOut

SERVICE = "stratoflow-api"
METRICS_NAMESPACE = "Stratoflow"
JSON = content_types.APPLICATION_JSON

# What each error status means, as the document says it; a route module may say it its own way.
ERROR_TEXTS: Mapping[int, str] = {
    400: "malformed JSON", 403: "refused: needs another route (named)", 404: "unknown id",
    409: "transition refused (ABORT)", 413: "body over 1 MiB", 415: "body is not application/json",
    422: "invalid field (named)", 500: "internal error (logged)"}
# The statuses of a route that takes a JSON body and refuses it before parsing (app._precheck).
BODY_ERRORS = (400, 413, 415)

FlowRunId = Annotated[str, Path(description="flow run id", min_length=1, max_length=256)]


def responses(ok: int, model: Any, description: str, *errors: int,
              texts: Mapping[int, str] = ERROR_TEXTS) -> dict[int, Any]:
    """A route's ``responses=``: ``ok`` with ``model`` (none: any JSON), then ``errors`` and the
    422 and 500 every route can answer, each with the error body."""
    content: dict[str, Any] = {"model": model} if model is not None else {}
    out: dict[int, Any] = {ok: {"description": description, "content": {JSON: content}}}
    for code in (*errors, 422, 500):
        out[code] = {"description": texts[code], "content": {JSON: {"model": ErrorOut}}}
    return out


def with_status(declared: dict[int, Any], status: int, model: Any, description: str) -> dict[int, Any]:
    """``declared`` with a second success ``status`` (an update beside a create, an earlier
    create found by its idempotency key)."""
    return {**declared, status: {"description": description, "content": {JSON: {"model": model}}}}


def with_headers(declared: dict[int, Any], headers: dict[str, Any]) -> dict[int, Any]:
    """``declared`` with ``headers`` on its success response (the first status declared)."""
    ok = next(iter(declared))
    return {**declared, ok: {**declared[ok], "headers": headers}}


@cache
def _metrics() -> Metrics:
    # Made on first use, not on import (the handler's import stays cheap). Metrics instances share
    # one metric set: the handler's instance publishes what routes add here.
    return Metrics(namespace=METRICS_NAMESPACE, service=SERVICE)


def count(name: str, value: float = 1) -> None:
    """Add ``value`` to the metric ``name`` (a Count), published when the request ends."""
    _metrics().add_metric(name=name, unit=MetricUnit.Count, value=value)
