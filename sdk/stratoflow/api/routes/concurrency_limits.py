"""Concurrency limits by tag: create-or-change, list, read, delete, and taking and giving back a
task run's slots (``stratoflow.control.concurrency_limits``; slots are the store's atomic writes)."""

from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from stratoflow.api._shared import BODY_ERRORS, JSON, responses, with_status
from stratoflow.control import concurrency_limits
from stratoflow.models import ConcurrencyLimit
from stratoflow.schemas import ConcurrencyLimitCreate, Deleted, SlotsAnswer, SlotsRequest
from stratoflow.storage import get_store

TAG = "concurrency limits"
router = APIGatewayHttpRouter()

Tag = Annotated[str, Path(description="the tag the limit applies to", min_length=1, max_length=256)]


@router.post("/concurrency_limits", tags=[TAG], status_code=201,
             summary="Create the limit of a tag, or change it (slots held stay held)",
             responses=with_status(responses(201, ConcurrencyLimit, "created", 400, 409, 413, 415),
                                   200, ConcurrencyLimit, "updated"))
def upsert_concurrency_limit(body: ConcurrencyLimitCreate) -> Response[ConcurrencyLimit]:
    limit, created = concurrency_limits.upsert_concurrency_limit(get_store(), body)
    return Response(status_code=201 if created else 200, content_type=JSON, body=limit)


@router.post("/concurrency_limits/increment", tags=[TAG],
             summary="Take a slot of every tag's limit for a task run, or none",
             description="Atomic per limit (conditional writes); taking again with the same holder is a no-op. "
                         "`acquired` false names the first full tag and takes nothing.",
             responses=responses(200, SlotsAnswer, "taken or refused", *BODY_ERRORS))
def increment_slots(body: SlotsRequest) -> SlotsAnswer:
    full = get_store().acquire_tag_slots(body.tags, body.holder)
    return SlotsAnswer(acquired=full is None, full=full)


@router.post("/concurrency_limits/decrement", tags=[TAG], summary="Give back a task run's slots",
             responses=responses(200, SlotsAnswer, "given back", *BODY_ERRORS))
def decrement_slots(body: SlotsRequest) -> SlotsAnswer:
    get_store().release_tag_slots(body.tags, body.holder)
    return SlotsAnswer(acquired=False)


@router.get("/concurrency_limits", tags=[TAG], summary="Concurrency limits, by tag",
            responses=responses(200, list[ConcurrencyLimit], "limits"))
def list_concurrency_limits() -> list[ConcurrencyLimit]:
    return concurrency_limits.list_concurrency_limits(get_store())


@router.get("/concurrency_limits/<tag>", tags=[TAG], summary="Read the limit of a tag",
            responses=responses(200, ConcurrencyLimit, "the limit", 404))
def read_concurrency_limit(tag: Tag) -> ConcurrencyLimit:
    return concurrency_limits.read_concurrency_limit(get_store(), tag)


@router.delete("/concurrency_limits/<tag>", tags=[TAG], summary="Delete the limit of a tag",
               responses=responses(200, Deleted, "deleted", 404))
def delete_concurrency_limit(tag: Tag) -> Deleted:
    concurrency_limits.delete_concurrency_limit(get_store(), tag)
    return Deleted(deleted=tag)
