"""Routes the run engine needs to work through the API (``stratoflow.storage.api_store``).

The engine decides transitions locally (as it does over the store) and sends the outcome; the
server never trusts it: every state it is asked to record is re-proposed to the orchestration
policy, from the stored run (a commit) or from an empty run (a create), and anything the policy
would not have produced is refused with 409 and the rule's reason. Writes are the store's
conditional writes, so a lost race answers 409 with the current record (``current``).

=====================================  =====================================================
POST /flows/ensure                     create the flow record if absent; the stored one
                                       (GET /flows/<name> is in app.py)
POST /runs/<kind>/create               a new flow/task run with its state history (replayed)
GET  /runs/<kind>/<id>                 a run
POST /runs/<kind>/<id>/commit          new states onto the stored run (version-checked)
GET  /cache/<key>, PUT /cache/<key>    task cache entries
=====================================  =====================================================
"""

import json
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from stratoflow.control import transitions
from stratoflow.exceptions import Conflict, NotFound, Unprocessable
from stratoflow.models import CacheEntry, Flow, FlowRun, TaskRun
from stratoflow.orchestration import RunKind
from stratoflow.schemas import ObjectName
from stratoflow.states import State, StateType

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler import APIGatewayHttpResolver

MAX_STATES_PER_REQUEST = 200
_RESET: dict[str, Any] = {"state": None, "state_history": [], "run_count": 0, "start_time": None, "end_time": None,
          "total_run_time": 0.0}


class FlowIn(BaseModel):
    """What a client may set on a flow record (the server assigns id and created)."""

    model_config = ConfigDict(extra="forbid")
    name: ObjectName  # a path segment of GET /flows/<name>: Prefect's banned characters are refused
    description: Annotated[str, Field(max_length=10_000)] | None = None
    tags: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(default_factory=list, max_length=100)


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


# A run as the engine sends it: a FlowRun (kind flow) or a TaskRun (kind task), validated as the
# path's kind says (``_parse_run``), with ``RunKeys``; the schema names both records (which the
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


class CacheEntryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: State
    expiration: Any = None


def _model(kind: RunKind) -> "type[FlowRun] | type[TaskRun]":
    return FlowRun if kind == RunKind.FLOW else TaskRun


def _parse_kind(kind: str) -> RunKind:

    try:
        return RunKind(kind)
    except ValueError:
        raise Unprocessable(f"path.kind: unknown run kind {kind!r}; use 'flow' or 'task'") from None


def _parse_run(kind: RunKind, data: dict[str, Any], where: str) -> FlowRun | TaskRun:
    """The run in ``data``, validated with JSON's types (strict, as every body: "3" is no integer)."""
    from pydantic import ValidationError

    from stratoflow.api.errors import describe_validation_errors, json_type_errors

    model = _model(kind)
    try:
        run = model.model_validate_json(json.dumps(data), strict=True)
        RunKeys.model_validate(run.model_dump(include=set(RunKeys.model_fields)))
        return run
    except ValidationError as exc:
        errors = json_type_errors(exc.errors())
    try:
        if not errors:  # only whole floats for integers, which JSON Schema reads as integers too
            run = model.model_validate(data)
            RunKeys.model_validate(run.model_dump(include=set(RunKeys.model_fields)))
            return run
    except ValidationError as exc:
        errors = list(exc.errors())  # type: ignore[arg-type]
    line, details = describe_validation_errors([{**e, "loc": (where, *e.get("loc", ()))} for e in errors])
    raise Unprocessable(line, errors=details)


def check_refs(states: Sequence[State], where: str, run: FlowRun | TaskRun | None = None,
               run_where: str = "body", *, indexed: bool = True) -> None:
    """Refuse (422, naming the field) any result reference a runner of this stack did not write,
    and a parameters reference outside the stack's bucket: what a client sends is never trusted
    to be deserialised later (see ``stratoflow.storage.results``)."""
    from stratoflow.settings import get_settings
    from stratoflow.storage.keys import local_signer
    from stratoflow.storage.results import ResultIntegrityError, check_ref, check_uri

    settings = get_settings()
    try:
        # The API holds the key (template.yaml): it verifies. One without it still checks the shape,
        # and readers verify before they load anything.
        signer = local_signer(settings) if any(s.result_ref is not None for s in states) else None
        for i, state in enumerate(states):
            if state.result_ref is not None:
                check_ref(state.result_ref, bucket=settings.bucket, prefix=settings.results_prefix, signer=signer,
                          where=f"{where}.{i}.result_ref" if indexed else f"{where}.result_ref")
        if isinstance(run, FlowRun) and run.parameters_ref is not None:
            check_uri(run.parameters_ref, bucket=settings.bucket, prefix="parameters/",
                      where=f"{run_where}.parameters_ref")
    except ResultIntegrityError as exc:
        raise Unprocessable(str(exc)) from None


# Flow runs this environment has seen exist: a flow's many task runs are checked once (a Lambda
# environment is reused across requests). Only existence is cached, never state.
_known_flow_runs: dict[str, None] = {}
_KNOWN_MAX = 10_000


_known_lock = threading.Lock()


def _remember_flow_run(flow_run_id: str) -> None:
    with _known_lock:
        if len(_known_flow_runs) >= _KNOWN_MAX:
            _known_flow_runs.pop(next(iter(_known_flow_runs)))
        _known_flow_runs[flow_run_id] = None


def forget_flow_run(flow_run_id: str) -> None:
    """Called when a flow run is deleted, so its task runs are refused again (404)."""
    with _known_lock:
        _known_flow_runs.pop(flow_run_id, None)


def _same_states(a: Sequence[State], b: Sequence[State]) -> bool:
    return [s.id for s in a] == [s.id for s in b]


def register(app: "APIGatewayHttpResolver") -> None:
    """Add the engine routes to ``app`` (called once from ``build_app``)."""
    from aws_lambda_powertools.event_handler import Response, content_types
    from aws_lambda_powertools.event_handler.openapi.params import Body, Path

    from stratoflow.api.errors import error_body
    from stratoflow.exceptions import StaleRunError
    from stratoflow.schemas import ErrorOut
    from stratoflow.storage import get_store

    JSON = content_types.APPLICATION_JSON
    Kind = Annotated[Literal["flow", "task"], Path(description="flow or task")]
    texts = {400: "malformed JSON", 404: "unknown id", 409: "refused by the policy (rule and reason), or a lost "
             "race (`current` holds the stored run)", 413: "body over 1 MiB", 415: "body is not application/json",
             422: "invalid field (named)", 500: "internal error (logged)"}

    def responses(ok: int, model: Any, description: str, *errors: int) -> dict[int, Any]:
        out: dict[int, Any] = {ok: {"description": description, "content": {JSON: {"model": model}}}}
        for code in (*errors, 422, 500):
            out[code] = {"description": texts[code], "content": {JSON: {"model": ErrorOut}}}
        return out

    body_errors = (400, 413, 415)
    RunId = Annotated[str, Path(description="run id", min_length=1, max_length=256)]
    Key = Annotated[str, Path(description="cache key or flow name", min_length=1, max_length=1024)]

    def stale(exc: StaleRunError) -> Response[Any]:
        current = exc.current
        return Response(status_code=409, content_type=JSON, body=error_body(
            str(exc), current=current.model_dump(mode="json"), kind=type(current).__name__))

    @app.post("/flows/ensure", tags=["engine"], summary="Create the flow record if absent; the stored one",
              responses=responses(200, Flow, "the stored flow", *body_errors))
    def ensure_flow(body: FlowIn) -> Flow:
        return get_store().ensure_flow(Flow(name=body.name, description=body.description, tags=body.tags))

    @app.post("/runs/<kind>/create", tags=["engine"], status_code=201,
              summary="Create a run with its state history, replayed through the policy",
              responses=responses(201, dict[str, Any], "the created run", *body_errors, 404, 409))
    def create_run(kind: Kind,
                   body: Annotated[dict[str, Any], Body(), WithJsonSchema(NEW_RUN_SCHEMA)]) -> Response[Any]:
        run_kind = _parse_kind(kind)
        run = _parse_run(run_kind, body, "body")
        if not run.state_history:
            raise Unprocessable("body.state_history: a run is created with at least one state")
        if run.state is not None and run.state.id != run.state_history[-1].id:
            raise Unprocessable("body.state: must be the last state of state_history")
        check_refs(run.state_history, "body.state_history", run)
        store = get_store()
        if isinstance(run, TaskRun) and run.flow_run_id is not None and run.flow_run_id not in _known_flow_runs:
            store.read_run(RunKind.FLOW, run.flow_run_id)  # 404 for an unknown flow run
            _remember_flow_run(run.flow_run_id)
        empty = run.model_copy(update={**_RESET, "version": 0})
        replayed = transitions.replay(run_kind, empty, run.state_history).model_copy(update={"updated": run.updated})
        created: FlowRun | TaskRun
        try:
            # The store's create is conditional on the id being new.
            if isinstance(replayed, TaskRun) and replayed.state is not None and replayed.state.is_final():
                created = transitions.create_final_task(store, replayed)
            else:
                created = transitions.create(store, run_kind, replayed)
        except Exception as exc:
            if getattr(exc, "cause_response_code", None) != "ConditionalCheckFailedException":
                raise
            raise Conflict(f"{run_kind.value} run {run.id!r} already exists") from None
        return Response(status_code=201, content_type=JSON, body=created.model_dump(mode="json"))

    @app.get("/runs/<kind>/<run_id>", tags=["engine"], summary="Read a run",
             responses=responses(200, dict[str, Any], "the run", 404))
    def read_run(kind: Kind, run_id: RunId) -> Response[Any]:
        run = get_store().read_run(_parse_kind(kind), run_id)
        return Response(status_code=200, content_type=JSON, body=run.model_dump(mode="json"))

    @app.post("/runs/<kind>/<run_id>/commit", tags=["engine"],
              summary="Record new states of a run: version-checked, replayed through the policy",
              responses=responses(200, dict[str, Any], "the committed run", *body_errors, 404, 409))
    def commit_run(kind: Kind, run_id: RunId, body: CommitIn) -> Response[Any]:
        run_kind = _parse_kind(kind)
        proposed_run = _parse_run(run_kind, body.run, "body.run")
        if proposed_run.id != run_id:
            raise Unprocessable(f"body.run.id: {proposed_run.id!r} is not the run of the path ({run_id!r})")
        store = get_store()
        stored = store.read_run(run_kind, run_id)
        if stored.version != body.expected_version or stored.state_type not in set(body.allowed_from):
            return stale(StaleRunError(stored))
        if not _same_states(proposed_run.state_history, [*stored.state_history, *body.new_states]):
            raise Unprocessable("body.run.state_history: must be the stored history followed by new_states")
        check_refs(body.new_states, "body.new_states", proposed_run, "body.run")
        replayed = transitions.replay(run_kind, stored, body.new_states)
        # Bookkeeping comes from the replay; the other fields are the engine's record.
        final = proposed_run.model_copy(update={
            **{k: getattr(replayed, k) for k in (*_RESET, "expected_start_time")},
            "updated": proposed_run.updated})
        try:
            committed = transitions.commit(store, run_kind, final, body.new_states, body.expected_version,
                                           body.allowed_from)
        except StaleRunError as exc:
            return stale(exc)
        return Response(status_code=200, content_type=JSON, body=committed.model_dump(mode="json"))

    @app.get("/cache/<key>", tags=["engine"], summary="A valid cache entry (404 when none)",
             responses=responses(200, CacheEntry, "the entry", 404))
    def read_cache(key: Key) -> CacheEntry:
        entry = get_store().read_cache(key)
        if entry is None:
            raise NotFound(f"cache entry {key!r} not found", kind="cache entry", id=key)
        return entry

    @app.put("/cache/<key>", tags=["engine"], summary="Write a cache entry",
             responses=responses(200, CacheEntry, "the entry written", *body_errors, 404))
    def write_cache(key: Key, body: Annotated[CacheEntry, Body(), WithJsonSchema(CACHE_ENTRY_SCHEMA)]) -> CacheEntry:
        if body.key != key:
            raise Unprocessable(f"body.key: {body.key!r} is not the key of the path ({key!r})")
        if body.state.type != StateType.COMPLETED:
            raise Unprocessable("body.state: only a Completed state can be cached")
        if body.state.result_ref is None:
            raise Unprocessable("body.state.result_ref: a cache entry needs the result it stands for")
        check_refs([body.state], "body.state", indexed=False)
        get_store().write_cache(body)
        return body
