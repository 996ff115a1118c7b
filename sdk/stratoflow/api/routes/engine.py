"""Routes the run engine needs to work through the API (``stratoflow.storage.api_store``).

The engine decides transitions locally (as it does over the store) and sends the outcome; the
server never trusts it: ``stratoflow.control.engine_runs`` re-proposes every state it is asked to
record to the orchestration policy and refuses (409, with the rule and its reason) anything the
policy would not have produced. Writes are the store's conditional writes, so a lost race answers
409 with the current record (``current``).

=====================================  =====================================================
POST /flows/ensure                     create the flow record if absent; the stored one
                                       (GET /flows/<name> is in ``flows``)
POST /runs/<kind>/create               a new flow/task run with its state history (replayed)
GET  /runs/<kind>/<id>                 a run
POST /runs/<kind>/<id>/commit          new states onto the stored run (version-checked)
GET  /cache/<key>, PUT /cache/<key>    task cache entries (``control.cache_entries``)
=====================================  =====================================================
"""

from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from stratoflow.api._parsing import RunKeys, parse_kind, parse_run
from stratoflow.api._shared import BODY_ERRORS, ERROR_TEXTS, JSON, responses
from stratoflow.control import cache_entries, engine_runs
from stratoflow.models import CacheEntry, Flow
from stratoflow.schemas import ObjectName
from stratoflow.settings import get_settings
from stratoflow.states import State, StateType
from stratoflow.storage import get_store

TAG = "engine"
router = APIGatewayHttpRouter()

MAX_STATES_PER_REQUEST = 200
_TEXTS = {**ERROR_TEXTS,
          409: "refused by the policy (rule and reason), or a lost race (`current` holds the stored run)"}


class FlowIn(BaseModel):
    """What a client may set on a flow record (the server assigns id and created)."""

    model_config = ConfigDict(extra="forbid")
    name: ObjectName  # a path segment of GET /flows/<name>: Prefect's banned characters are refused
    description: Annotated[str, Field(max_length=10_000)] | None = None
    tags: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(default_factory=list, max_length=100)


# A run as the engine sends it: a FlowRun (kind flow) or a TaskRun (kind task), validated as the
# path's kind says (``parse_run``), with ``RunKeys``; the schema names both records (which the
# responses define) and the keys' bounds.
RUN_SCHEMA: dict[str, Any] = {"allOf": [{"anyOf": [{"$ref": "#/components/schemas/FlowRun"},
                                                   {"$ref": "#/components/schemas/TaskRun"}]},
                                        # A run without an id gets one: none is required.
                                        {k: v for k, v in RunKeys.model_json_schema().items() if k != "required"}],
                              "description": "a FlowRun for kind flow, a TaskRun for kind task"}
# A created run carries the history it is replayed from: at least one state.
NEW_RUN_SCHEMA: dict[str, Any] = {"allOf": [RUN_SCHEMA, {"required": ["state_history"],
                                                         "properties": {"state_history": {"minItems": 1}}}]}
# What a cache entry must be besides a CacheEntry: a Completed state with its result.
CACHE_ENTRY_SCHEMA: dict[str, Any] = {"allOf": [
    {"$ref": "#/components/schemas/CacheEntry"},
    {"properties": {"state": {"required": ["type", "result_ref"],
                              "properties": {"type": {"const": StateType.COMPLETED.value},
                                             "result_ref": {"type": "object"}}}}}]}


class CommitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run: Annotated[dict[str, Any], WithJsonSchema(RUN_SCHEMA)] = Field(
        description="the run record after the transition")
    new_states: list[State] = Field(min_length=1, max_length=MAX_STATES_PER_REQUEST)
    expected_version: int = Field(ge=1)
    allowed_from: list[StateType | None] = Field(max_length=len(StateType) + 1)


Kind = Annotated[Literal["flow", "task"], Path(description="flow or task")]
RunId = Annotated[str, Path(description="run id", min_length=1, max_length=256)]
Key = Annotated[str, Path(description="cache key or flow name", min_length=1, max_length=1024)]


@router.post("/flows/ensure", tags=[TAG], summary="Create the flow record if absent; the stored one",
             responses=responses(200, Flow, "the stored flow", *BODY_ERRORS, texts=_TEXTS))
def ensure_flow(body: FlowIn) -> Flow:
    return get_store().ensure_flow(Flow(name=body.name, description=body.description, tags=body.tags))


@router.post("/runs/<kind>/create", tags=[TAG], status_code=201,
             summary="Create a run with its state history, replayed through the policy",
             responses=responses(201, dict[str, Any], "the created run", *BODY_ERRORS, 404, 409, texts=_TEXTS))
def create_run(kind: Kind, body: Annotated[dict[str, Any], Body(), WithJsonSchema(NEW_RUN_SCHEMA)]) -> Response[Any]:
    run_kind = parse_kind(kind)
    run = engine_runs.create_run(get_store(), get_settings(), run_kind, parse_run(run_kind, body, "body"))
    return Response(status_code=201, content_type=JSON, body=run.model_dump(mode="json"))


@router.get("/runs/<kind>/<run_id>", tags=[TAG], summary="Read a run",
            responses=responses(200, dict[str, Any], "the run", 404, texts=_TEXTS))
def read_run(kind: Kind, run_id: RunId) -> Response[Any]:
    run = get_store().read_run(parse_kind(kind), run_id)
    return Response(status_code=200, content_type=JSON, body=run.model_dump(mode="json"))


@router.post("/runs/<kind>/<run_id>/commit", tags=[TAG],
             summary="Record new states of a run: version-checked, replayed through the policy",
             responses=responses(200, dict[str, Any], "the committed run", *BODY_ERRORS, 404, 409, texts=_TEXTS))
def commit_run(kind: Kind, run_id: RunId, body: CommitIn) -> Response[Any]:
    run_kind = parse_kind(kind)
    run = parse_run(run_kind, body.run, "body.run")
    committed = engine_runs.commit_run(get_store(), get_settings(), run_kind, run_id, run, body.new_states,
                                       body.expected_version, body.allowed_from)
    return Response(status_code=200, content_type=JSON, body=committed.model_dump(mode="json"))


@router.get("/cache/<key>", tags=[TAG], summary="A valid cache entry (404 when none)",
            responses=responses(200, CacheEntry, "the entry", 404, texts=_TEXTS))
def read_cache(key: Key) -> CacheEntry:
    return cache_entries.read_cache_entry(get_store(), key)


@router.put("/cache/<key>", tags=[TAG], summary="Write a cache entry",
            responses=responses(200, CacheEntry, "the entry written", *BODY_ERRORS, 404, texts=_TEXTS))
def write_cache(key: Key, body: Annotated[CacheEntry, Body(), WithJsonSchema(CACHE_ENTRY_SCHEMA)]) -> CacheEntry:
    return cache_entries.write_cache_entry(get_store(), get_settings(), key, body)
