"""The control-plane API: one Powertools ``APIGatewayHttpResolver`` behind an HTTP API (payload 2.0).

Routes parse (Powertools validates bodies, paths and queries from the pydantic models in
``stratoflow.schemas`` and generates the OpenAPI schema from them), call the package
(``stratoflow.control`` over the ``Store``) and return. Every error body is
``{"error": "<one line>", ...}``:

=====  =====================================================================================
400    malformed JSON, a body that is not UTF-8/base64
404    unknown flow run / task run / flow / deployment / work pool / queue / limit, unknown route
409    the orchestration rules refused the transition (ABORT): the rule and its reason; a name
       already taken; a paused deployment; a record changed concurrently
413    request body over 1 MiB
415    a body that is not ``application/json``
422    wrong types or missing fields, naming the field
500    anything unexpected (logged with the Powertools Logger; the body stays generic)
=====  =====================================================================================

Importing this module does nothing but define functions: Powertools, pydantic models, the
store (boto3/PynamoDB) and moto are imported when the app is first built or a route first runs.
"""

import json
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler import APIGatewayHttpResolver

SERVICE = "stratoflow-api"
METRICS_NAMESPACE = "Stratoflow"
# Lambda's synchronous response limit is 6 MB; leave room for headers and the envelope.
MAX_RESPONSE_BYTES = 6 * 1024 * 1024 - 64 * 1024
# Routes whose JSON body is an array; every other body must be an object.
_ARRAY_BODIES = frozenset({("POST", "/logs")})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

_app: "APIGatewayHttpResolver | None" = None
_app_lock = threading.Lock()


def get_app() -> "APIGatewayHttpResolver":
    """The process's app, built on first use (the Lambda handler calls this per request)."""
    global _app
    if _app is None:
        with _app_lock:
            if _app is None:
                _app = build_app()
    return _app


def _json_response(status: int, body: dict[str, Any]) -> dict[str, Any]:
    """An HTTP API (payload 2.0) response, for requests refused before routing."""
    return {"statusCode": status, "headers": {"Content-Type": "application/json"},
            "body": json.dumps(body, separators=(",", ":")), "isBase64Encoded": False}


def _precheck(event: Any) -> dict[str, Any] | None:
    """Refuse oversized, non-JSON and non-UTF-8 bodies before anything parses them.

    A POST/PUT/PATCH/DELETE with a body must say ``Content-Type: application/json``; a body with
    no content type is refused too (415), because that is what a page on another site can send
    without a CORS preflight (CSRF). A request without a body needs no content type: the SDK
    (``_http``) and the web UI send bodiless POSTs (cancel, retry, pause, resume) without one,
    and a cross-site bodiless POST is stopped where it could arrive unsigned: the ``stratoflow
    ui`` proxy and ``stratoflow dev`` refuse a foreign ``Origin``; on AWS IAM refuses it.

    API Gateway base64-encodes a body that is not UTF-8 (``stratoflow dev`` does the same): such a
    body answers 400 here instead of reaching a field as U+FFFD.
    """
    import base64
    import binascii

    from stratoflow.api.errors import error_body
    from stratoflow.schemas import MAX_BODY_BYTES

    body = event.get("body") if isinstance(event, dict) else None
    if not body:
        return None
    encoded = bool(event.get("isBase64Encoded"))
    size = len(body) * 3 // 4 - body[-2:].count("=") if encoded else len(body.encode("utf-8", "surrogatepass"))
    if size > MAX_BODY_BYTES:
        return _json_response(413, error_body(
            f"request body is {size} bytes; the limit is {MAX_BODY_BYTES} (1 MiB)", limit=MAX_BODY_BYTES))
    method = str(((event.get("requestContext") or {}).get("http") or {}).get("method", "")).upper()
    if method not in _BODY_METHODS and method != "DELETE":
        return None
    headers = {str(k).lower(): v for k, v in (event.get("headers") or {}).items()}
    content_type = str(headers.get("content-type", "")).strip().lower()
    if not content_type:
        return _json_response(415, error_body(
            "a request body needs the header Content-Type: application/json (none was sent)"))
    if content_type.split(";", 1)[0].strip() != "application/json":
        return _json_response(415, error_body(
            f"Content-Type {content_type[:100]!r} is not supported; send Content-Type: application/json"))
    if encoded:
        try:
            base64.b64decode(body, validate=True).decode("utf-8")
        except binascii.Error:
            return _json_response(400, error_body("request body is not valid base64"))
        except UnicodeDecodeError:
            return _json_response(400, error_body("request body is not valid UTF-8"))
    return None


def _discriminated(node: Any, tags: dict[str, str]) -> None:
    """Collect into ``tags`` (component name -> property) what every discriminator under ``node`` maps."""
    from pydantic import BaseModel

    if isinstance(node, BaseModel):
        found = getattr(node, "discriminator", None)
        if found is not None and found.mapping:
            for ref in found.mapping.values():
                tags[ref.rsplit("/", 1)[-1]] = found.propertyName
        children: Any = node.__dict__.values()
    elif isinstance(node, dict):
        children = node.values()
    elif isinstance(node, list | tuple):
        children = node
    else:
        return
    for value in children:
        _discriminated(value, tags)


def _require_discriminators(document: Any) -> None:
    """Add each discriminator's ``propertyName`` to ``required`` of the component schemas its
    mapping names, in the OpenAPI model ``document`` (Powertools' pydantic models, walked whole)."""

    components = (document.components.schemas or {}) if document.components else {}
    tags: dict[str, str] = {}  # component name -> the property that must be there
    _discriminated(document, tags)
    for name, prop in tags.items():
        target = components.get(name)
        required = getattr(target, "required", None)
        if target is not None and hasattr(target, "required") and prop not in (required or []):
            target.required = [*(required or []), prop]


def build_app() -> "APIGatewayHttpResolver":
    """A new resolver with every route, error handler and the OpenAPI/Swagger routes."""
    import binascii
    import inspect
    from typing import Annotated

    from aws_lambda_powertools import Logger, Metrics
    from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
    from aws_lambda_powertools.event_handler.exceptions import NotFoundError, ServiceError
    from aws_lambda_powertools.event_handler.openapi.exceptions import (
        RequestUnsupportedContentType,
        RequestValidationError,
    )
    from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
    from aws_lambda_powertools.metrics import MetricUnit
    from pydantic import TypeAdapter, ValidationError

    from stratoflow import __version__
    from stratoflow.api.errors import (
        describe_validation_errors,
        error_body,
        json_type_errors,
    )
    from stratoflow.control import flow_runs, task_runs
    from stratoflow.control import logs as run_logs
    from stratoflow.exceptions import BadRequest, ObjectNotFound, RequestRefused, TransitionRefused, Unprocessable
    from stratoflow.models import FlowRun, TaskRun
    from stratoflow.orchestration import RunKind
    from stratoflow.schemas import (
        FLOW_RUN_CURSOR_FORMAT,
        MAX_LOGS_PER_REQUEST,
        ErrorOut,
        FlowRunCreate,
        FlowRunFilter,
        Health,
        LogCursor,
        LogIn,
        LogPageOut,
        LogsWritten,
        SetStateForceIn,
        SetStateIn,
        SetStateOut,
    )
    from stratoflow.settings import get_settings
    from stratoflow.states import State, StateType
    from stratoflow.storage import get_store

    logger = Logger(service=SERVICE)
    # Metrics instances share one metric set: the handler's instance publishes what routes add here.
    metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE)
    JSON = content_types.APPLICATION_JSON

    def decode_json(body: str) -> Any:
        def no_constants(name: str) -> Any:
            raise BadRequest(f"malformed JSON body: {name} is not a JSON value")

        try:
            value = json.loads(body, parse_constant=no_constants)
        except json.JSONDecodeError as exc:
            raise BadRequest(f"malformed JSON body: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
        except RecursionError:
            raise BadRequest("malformed JSON body: nested too deeply") from None
        if "\\u" in body:
            # JSON may carry a lone UTF-16 surrogate ("\ud800"); nothing downstream can store it.
            try:
                json.dumps(value, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                raise BadRequest("malformed JSON body: lone UTF-16 surrogate in a string") from None
        route = app.context.get("_route")
        expects_array = route is not None and (route.method, route.path) in _ARRAY_BODIES
        if isinstance(value, list) and not expects_array:
            raise Unprocessable("body: must be a JSON object, not an array")
        if route is not None and value is not None:
            check_json_types(route, body, value)
        return value

    body_types: dict[Any, TypeAdapter[Any] | None] = {}

    def check_json_types(route: Any, body: str, value: Any) -> None:
        """422 for a body value of another JSON type than the schema's, which pydantic's lax
        validation would convert ("5" for an integer, 1 for a boolean), nested records included:
        the API takes the types its OpenAPI document states. A body lax validation refuses anyway
        is left to it, so its answer stays as it was."""
        if route not in body_types:
            parameter = inspect.signature(route.func).parameters.get("body")
            body_types[route] = None if parameter is None else TypeAdapter(parameter.annotation)
        adapter = body_types[route]
        if adapter is None:
            return
        try:
            adapter.validate_json(body, strict=True)
        except ValidationError as strict:
            if any(e["type"] == "json_invalid" for e in strict.errors()):
                return  # a body json.loads reads but pydantic's parser does not (nested too deep)
            errors = json_type_errors(strict.errors())
            if not errors:
                return
            try:
                adapter.validate_python(value)
            except ValidationError:
                return
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None

    class Resolver(APIGatewayHttpResolver):
        def get_openapi_schema(self, **kwargs: Any) -> Any:
            """Powertools' document (for /openapi.json and /docs alike), where a discriminator's
            property is required in each schema it maps to: validation needs the tag (a schedule's
            ``type``), which pydantic's schema leaves optional because it has a default."""
            document = super().get_openapi_schema(**kwargs)
            _require_discriminators(document)
            return document

        def resolve(self, event: Any, context: Any) -> dict[str, Any]:
            early = _precheck(event)
            if early is not None:
                return early
            response = super().resolve(event, context)
            body = response.get("body")
            if isinstance(body, str) and len(body) > MAX_RESPONSE_BYTES:
                logger.error("response too large", extra={"bytes": len(body), "path": event.get("rawPath")})
                return _json_response(500, error_body(
                    f"the response would be {len(body)} bytes, over Lambda's 6 MB limit; ask for fewer items"))
            return response

    app = Resolver(enable_validation=True, json_body_deserializer=decode_json)
    app.configure_openapi(
        title="Stratoflow API", version=__version__,
        description="Control plane of Stratoflow: flow runs, task runs, state transitions and logs. "
                    "Every error body is {\"error\": \"<one line>\", ...}.",
    )

    def with_headers(declared: dict[int, Any], headers: dict[str, Any]) -> dict[int, Any]:
        """``declared`` with ``headers`` on its success response (the first status declared)."""
        ok = next(iter(declared))
        return {**declared, ok: {**declared[ok], "headers": headers}}

    def responses(ok: int, model: Any, description: str, *errors: int) -> dict[int, Any]:
        texts = {400: "malformed JSON", 403: "refused: needs another route (named)", 404: "unknown id",
                 409: "transition refused (ABORT)",
                 413: "body over 1 MiB", 415: "body is not application/json", 422: "invalid field (named)",
                 500: "internal error (logged)"}
        out: dict[int, Any] = {ok: {"description": description, "content": {JSON: {"model": model}}}}
        for code in (*errors, 422, 500):
            out[code] = {"description": texts[code], "content": {JSON: {"model": ErrorOut}}}
        return out

    def count(name: str, value: float = 1) -> None:
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)

    # -- errors ---------------------------------------------------------------------------------
    def error(status: int, body: dict[str, Any]) -> Response[Any]:
        return Response(status_code=status, content_type=JSON, body=body)

    @app.exception_handler(RequestRefused)
    def on_refused_request(exc: RequestRefused) -> Response[Any]:
        return error(exc.status_code, exc.body())

    @app.exception_handler(ObjectNotFound)
    def on_not_found(exc: ObjectNotFound) -> Response[Any]:
        return error(404, error_body(str(exc), kind=exc.kind, id=exc.key))

    @app.exception_handler(TransitionRefused)
    def on_refused(exc: TransitionRefused) -> Response[Any]:
        result = exc.result
        count("TransitionsAborted")
        return error(409, error_body(
            f"{result.rule}: {result.reason}", status=result.status.value, rule=result.rule, reason=result.reason,
            state=result.state.model_dump(mode="json") if result.state is not None else None))

    @app.exception_handler(RequestValidationError)
    def on_invalid(exc: RequestValidationError) -> Response[Any]:
        errors = list(exc.errors())
        if any(tuple(e.get("loc", ()))[:1] == ("response",) for e in errors):
            # Powertools reports a response that fails its own schema this way: our bug, not the caller's.
            logger.error("response failed validation", extra={"errors": str(errors)[:2000]})
            return error(500, error_body("internal error: the response did not match its schema"))
        if any(e.get("type") == "json_invalid" for e in errors):
            return error(400, error_body("malformed JSON body"))
        line, details = describe_validation_errors(errors)
        return error(422, error_body(line, errors=details))

    @app.exception_handler(RequestUnsupportedContentType)
    def on_content_type(exc: RequestUnsupportedContentType) -> Response[Any]:
        return error(415, error_body("unsupported content type; send application/json"))

    @app.exception_handler([UnicodeDecodeError, binascii.Error])
    def on_undecodable(exc: Exception) -> Response[Any]:
        # _precheck refuses such bodies of POST/PUT/PATCH/DELETE; this covers any other method's.
        what = "UTF-8" if isinstance(exc, UnicodeDecodeError) else "base64"
        return error(400, error_body(f"request body is not valid {what}"))

    @app.not_found
    def on_no_route(exc: NotFoundError) -> Response[Any]:
        event = app.current_event
        return error(404, error_body(f"no route for {event.http_method} {event.path}"))

    @app.exception_handler(ServiceError)
    def on_service_error(exc: ServiceError) -> Response[Any]:
        return error(exc.status_code, error_body(str(exc.msg)))

    @app.exception_handler(Exception)
    def on_unexpected(exc: Exception) -> Response[Any]:
        logger.exception("unhandled error in %s %s", app.current_event.http_method, app.current_event.path)
        request_id = getattr(app.lambda_context, "aws_request_id", None)
        return error(500, error_body("internal error", request_id=request_id))

    # -- meta -----------------------------------------------------------------------------------
    @app.get("/health", tags=["meta"], summary="Liveness check (does not touch the store)")
    def health() -> Health:
        return Health(version=__version__)

    schema_cache: list[str] = []

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_json():  # no return annotation: the schema string is returned as is, unvalidated
        if not schema_cache:
            schema_cache.append(app.get_openapi_json_schema())
        return Response(status_code=200, content_type=JSON, body=schema_cache[0])

    from stratoflow.api.engine_routes import register as _register_engine_routes
    _register_engine_routes(app)
    app.enable_swagger(path="/docs", compress=True)

    # -- flow runs ------------------------------------------------------------------------------
    FlowRunId = Annotated[str, Path(description="flow run id", min_length=1, max_length=256)]
    TaskRunId = Annotated[str, Path(description="task run id", min_length=1, max_length=256)]

    @app.post("/flow_runs", tags=["flow runs"], status_code=201,
              summary="Create a flow run (Scheduled for now unless `state` says otherwise)",
              responses={**responses(201, FlowRun, "created", 400, 409, 413, 415),
                         200: {"description": "an earlier create with the same idempotency key made this run",
                               "content": {JSON: {"model": FlowRun}}}})
    def create_flow_run(body: FlowRunCreate) -> Response[FlowRun]:
        run, created = flow_runs.create_flow_run(get_store(), get_settings(), body)
        if created:
            count("FlowRunsCreated")
        return Response(status_code=201 if created else 200, content_type=JSON, body=run)

    @app.get("/flow_runs/<flow_run_id>", tags=["flow runs"], summary="Read a flow run",
             responses=responses(200, FlowRun, "the flow run", 404))
    def read_flow_run(flow_run_id: FlowRunId) -> FlowRun:
        return flow_runs.read_flow_run(get_store(), flow_run_id)

    @app.post("/flow_runs/filter", tags=["flow runs"],
              summary="Flow runs, newest first; the next page's cursor is in the x-next-cursor header",
              responses=with_headers(responses(200, list[FlowRun], "matching flow runs", 400, 413, 415), {
                  "x-next-cursor": {"description": "the cursor of the next page (pass it as `cursor`); absent on the "
                                                   "last page", "schema": {"type": "string",
                                                                           "format": FLOW_RUN_CURSOR_FORMAT}}}))
    def filter_flow_runs(body: Annotated[FlowRunFilter | None, Body()] = None) -> Response[list[FlowRun]]:
        body = body or FlowRunFilter()
        from stratoflow.storage.base import FlowRunQuery

        types = [StateType(t) for t in body.state_types] if body.state_types else None
        try:
            runs, next_cursor = get_store().page_flow_runs(FlowRunQuery(
                flow_name=body.flow_name, deployment_id=body.deployment_id, state_types=tuple(types or ()),
                tags=tuple(body.tags or ()), scheduled_before=body.scheduled_before if types else None,
                created_after=body.created_after, created_before=body.created_before, cursor=body.cursor,
                limit=body.limit))
        except ValueError as exc:  # a cursor this API did not hand out
            raise Unprocessable(f"body.cursor: {exc}") from None
        headers = {"x-next-cursor": next_cursor} if next_cursor else None
        return Response(status_code=200, content_type=JSON, body=runs, headers=headers)

    @app.get("/flow_runs/<flow_run_id>/states", tags=["flow runs"], summary="State history, oldest first",
             responses=responses(200, list[State], "the states", 404))
    def read_flow_run_states(flow_run_id: FlowRunId) -> list[State]:
        return flow_runs.read_flow_run(get_store(), flow_run_id).state_history

    @app.post("/flow_runs/<flow_run_id>/set_state", tags=["flow runs"],
              summary="Propose a state; the orchestration rules decide",
              description="`force: true` is refused (403): forcing is .../set_state/force.",
              responses=responses(200, SetStateOut, "ACCEPT, REJECT (with the state adopted) or WAIT",
                                  400, 403, 404, 409, 413, 415))
    def set_flow_run_state(flow_run_id: FlowRunId, body: SetStateIn) -> SetStateOut:
        result = flow_runs.set_state(get_store(), RunKind.FLOW, flow_run_id, body)
        return SetStateOut.from_result(result)

    # A route of its own, not a body flag: IAM grants execute-api:Invoke per path, so skipping the
    # rules can be allowed to an operator role and refused to everyone else.
    @app.post("/flow_runs/<flow_run_id>/set_state/force", tags=["flow runs"],
              summary="Set a state without the orchestration rules (administrative override)",
              description="Granted separately from .../set_state (docs/api.md). The state is accepted as is.",
              responses=responses(200, SetStateOut, "ACCEPT", 400, 404, 413, 415))
    def force_flow_run_state(flow_run_id: FlowRunId, body: SetStateForceIn) -> SetStateOut:
        result = flow_runs.set_state(get_store(), RunKind.FLOW, flow_run_id, body, force=True)
        count("StatesForced")
        return SetStateOut.from_result(result)

    @app.get("/flow_runs/<flow_run_id>/task_runs", tags=["task runs"], summary="Task runs of a flow run",
             responses=responses(200, list[TaskRun], "task runs in start order", 404))
    def read_task_runs(flow_run_id: FlowRunId) -> list[TaskRun]:
        return task_runs.read_task_runs(get_store(), flow_run_id)

    # -- task runs ------------------------------------------------------------------------------
    @app.get("/task_runs/<task_run_id>", tags=["task runs"], summary="Read a task run",
             responses=responses(200, TaskRun, "the task run", 404))
    def read_task_run(task_run_id: TaskRunId) -> TaskRun:
        return task_runs.read_task_run(get_store(), task_run_id)

    @app.post("/task_runs/<task_run_id>/set_state", tags=["task runs"],
              summary="Propose a state; the orchestration rules decide",
              description="`force: true` is refused (403): forcing is .../set_state/force.",
              responses=responses(200, SetStateOut, "ACCEPT, REJECT (with the state adopted) or WAIT",
                                  400, 403, 404, 409, 413, 415))
    def set_task_run_state(task_run_id: TaskRunId, body: SetStateIn) -> SetStateOut:
        result = flow_runs.set_state(get_store(), RunKind.TASK, task_run_id, body)
        return SetStateOut.from_result(result)

    @app.post("/task_runs/<task_run_id>/set_state/force", tags=["task runs"],
              summary="Set a state without the orchestration rules (administrative override)",
              description="Granted separately from .../set_state (docs/api.md). The state is accepted as is.",
              responses=responses(200, SetStateOut, "ACCEPT", 400, 404, 413, 415))
    def force_task_run_state(task_run_id: TaskRunId, body: SetStateForceIn) -> SetStateOut:
        result = flow_runs.set_state(get_store(), RunKind.TASK, task_run_id, body, force=True)
        count("StatesForced")
        return SetStateOut.from_result(result)

    # -- logs -----------------------------------------------------------------------------------
    @app.post("/logs", tags=["logs"], status_code=201, summary="Write a batch of up to 1000 log lines",
              description="All or nothing: one invalid line (named, e.g. `body.3.timestamp`) refuses the "
                          "batch with 422 and writes none of it. Lines with an `id` and `timestamp` are "
                          "idempotent: sending the batch again stores no copies.",
              responses=responses(201, LogsWritten, "written", 400, 404, 413, 415))
    def write_logs(body: Annotated[list[LogIn], Body(max_length=MAX_LOGS_PER_REQUEST)]) -> Response[LogsWritten]:
        written = run_logs.write_logs(get_store(), body)
        count("LogLinesWritten", written)
        return Response(status_code=201, content_type=JSON, body=LogsWritten(written=written))

    @app.get("/flow_runs/<flow_run_id>/logs", tags=["logs"], summary="Logs of a flow run in emitted order",
             responses=responses(200, LogPageOut, "a page of logs", 404))
    def read_logs(
        flow_run_id: FlowRunId,
        cursor: Annotated[LogCursor | None, Query(description="next_cursor of the previous page")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
        min_level: Annotated[int, Query(ge=0, le=100, description="only logs at this level or above")] = 0,
        task_run_id: Annotated[str | None, Query(description="only logs of this task run", max_length=256)] = None,
    ) -> LogPageOut:
        logs, next_cursor = run_logs.read_logs(get_store(), flow_run_id, cursor=cursor, limit=limit,
                                               min_level=min_level, task_run_id=task_run_id or None)
        return LogPageOut(logs=logs, next_cursor=next_cursor)

    _register_object_routes(app, responses, count)
    __import__("stratoflow.api.ui_routes", fromlist=["register_ui_routes"]).register_ui_routes(app)  # web UI
    return app


def _register_object_routes(app: Any, responses: Any, count: Any) -> None:
    """Flows, flow-run cancel/retry/delete, task-run filter, deployments, work pools and queues,
    concurrency limits. Records live in the objects table (see ``Store.put_object``)."""
    from typing import Annotated

    from aws_lambda_powertools.event_handler import Response, content_types
    from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query

    from stratoflow.api.errors import error_body
    from stratoflow.control import concurrency_limits, deployments, flow_runs, task_runs, work_pools
    from stratoflow.exceptions import ObjectAlreadyExists, ObjectVersionConflict
    from stratoflow.models import ConcurrencyLimit, Deployment, Flow, FlowRun, TaskRun, WorkPool, WorkQueue
    from stratoflow.schemas import (
        ConcurrencyLimitCreate,
        Deleted,
        DeploymentCreate,
        DeploymentFilter,
        DeploymentRunCreate,
        ResumeIn,
        SlotsAnswer,
        SlotsRequest,
        TaskRunFilter,
        WorkPoolCreate,
        WorkQueueCreate,
    )
    from stratoflow.settings import get_settings
    from stratoflow.storage import get_store

    JSON = content_types.APPLICATION_JSON

    @app.exception_handler(ObjectAlreadyExists)
    def on_exists(exc: ObjectAlreadyExists) -> Response[Any]:
        return Response(status_code=409, content_type=JSON, body=error_body(str(exc)))

    @app.exception_handler(ObjectVersionConflict)
    def on_version_conflict(exc: ObjectVersionConflict) -> Response[Any]:
        return Response(status_code=409, content_type=JSON, body=error_body(str(exc), kind=exc.kind, id=exc.key))

    FlowRunId = Annotated[str, Path(description="flow run id", min_length=1, max_length=256)]
    FlowName = Annotated[str, Path(description="flow name", min_length=1, max_length=256)]
    DeploymentId = Annotated[str, Path(description="deployment id", min_length=1, max_length=256)]
    PoolName = Annotated[str, Path(description="work pool name", min_length=1, max_length=64)]
    Tag = Annotated[str, Path(description="the tag the limit applies to", min_length=1, max_length=256)]
    with_sqs = " Creates the SQS queue (redriving to the pool's dead-letter queue) before the record."

    # -- flows ------------------------------------------------------------------------------------
    @app.get("/flows", tags=["flows"], summary="Flows, by name",
             responses=responses(200, list[Flow], "flows"))
    def list_flows(limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[Flow]:
        return flow_runs.list_flows(get_store(), limit)

    @app.get("/flows/<name>", tags=["flows"], summary="Read a flow by name",
             responses=responses(200, Flow, "the flow", 404))
    def read_flow(name: FlowName) -> Flow:
        return get_store().read_flow(name)

    # -- flow runs: cancel, retry, delete -----------------------------------------------------------
    @app.post("/flow_runs/<flow_run_id>/cancel", tags=["flow runs"],
              summary="Cancel: Running/Pending -> Cancelling, Scheduled/Paused -> Cancelled",
              description="A finished run is refused with 409 and the rule's reason; a run already "
                          "Cancelling is returned as is.",
              responses=responses(200, FlowRun, "the run afterwards", 404, 409))
    def cancel_flow_run(flow_run_id: FlowRunId) -> FlowRun:
        run = flow_runs.cancel_flow_run(get_store(), flow_run_id)
        count("FlowRunsCancelled")
        return run

    @app.post("/flow_runs/<flow_run_id>/resume", tags=["flow runs"],
              summary="Resume a paused (or suspended) flow run, with input for a pause that waits for it",
              description="Paused -> Running; Suspended -> Scheduled and sent to its work queue. 409 when the "
                          "run is not paused or its pause timed out; 422 naming the field of a bad run_input.",
              responses=responses(200, FlowRun, "resumed", 400, 404, 409, 413, 415))
    def resume_flow_run(flow_run_id: FlowRunId, body: ResumeIn) -> FlowRun:
        return flow_runs.resume_flow_run(get_store(), flow_run_id, body.run_input)

    @app.post("/flow_runs/<flow_run_id>/retry", tags=["flow runs"],
              summary="Retry a finished run: it goes back to Scheduled (AwaitingRetry) for now",
              responses=responses(200, FlowRun, "the run afterwards", 404, 409))
    def retry_flow_run(flow_run_id: FlowRunId) -> FlowRun:
        return flow_runs.retry_flow_run(get_store(), flow_run_id)

    @app.delete("/flow_runs/<flow_run_id>", tags=["flow runs"],
                summary="Delete a flow run with its task runs and idempotency marker",
                responses=responses(200, Deleted, "deleted", 404))
    def delete_flow_run(flow_run_id: FlowRunId) -> Deleted:
        from stratoflow.api.engine_routes import forget_flow_run

        flow_runs.delete_flow_run(get_store(), flow_run_id)
        forget_flow_run(flow_run_id)
        return Deleted(deleted=flow_run_id)

    # -- task runs ---------------------------------------------------------------------------------
    @app.post("/task_runs/filter", tags=["task runs"], summary="Task runs of a flow run, by state type",
              responses=responses(200, list[TaskRun], "task runs in start order", 400, 404, 413, 415))
    def filter_task_runs(body: TaskRunFilter) -> list[TaskRun]:
        return task_runs.filter_task_runs(get_store(), body)

    # -- deployments -------------------------------------------------------------------------------
    @app.post("/deployments", tags=["deployments"], status_code=201,
              summary="Create a deployment, or update the one with the same (flow_name, name)",
              description="An update replaces the given fields and bumps `version`.",
              responses={**responses(201, Deployment, "created", 400, 404, 409, 413, 415),
                         200: {"description": "updated", "content": {JSON: {"model": Deployment}}}})
    def upsert_deployment(body: DeploymentCreate) -> Response[Deployment]:
        deployment, created = deployments.upsert_deployment(get_store(), body)
        return Response(status_code=201 if created else 200, content_type=JSON, body=deployment)

    @app.post("/deployments/filter", tags=["deployments"], summary="Deployments, by flow name and name",
              responses=responses(200, list[Deployment], "matching deployments", 400, 413, 415))
    def filter_deployments(body: Annotated[DeploymentFilter | None, Body()] = None) -> list[Deployment]:
        return deployments.filter_deployments(get_store(), body or DeploymentFilter())

    @app.get("/deployments/<deployment_id>", tags=["deployments"], summary="Read a deployment",
             responses=responses(200, Deployment, "the deployment", 404))
    def read_deployment(deployment_id: DeploymentId) -> Deployment:
        return deployments.read_deployment(get_store(), deployment_id)

    @app.post("/deployments/<deployment_id>/pause", tags=["deployments"],
              summary="Pause: no new runs are created from it", responses=responses(200, Deployment, "paused", 404))
    def pause_deployment(deployment_id: DeploymentId) -> Deployment:
        return deployments.set_deployment_paused(get_store(), deployment_id, True)

    @app.post("/deployments/<deployment_id>/resume", tags=["deployments"], summary="Resume a paused deployment",
              responses=responses(200, Deployment, "resumed", 404))
    def resume_deployment(deployment_id: DeploymentId) -> Deployment:
        return deployments.set_deployment_paused(get_store(), deployment_id, False)

    @app.post("/deployments/<deployment_id>/create_flow_run", tags=["deployments"], status_code=201,
              summary="Create a run of the deployment",
              description="Parameters are merged over the deployment's defaults and validated against its "
                          "parameter_openapi_schema (422 names the parameter). A paused deployment refuses (409).",
              responses={**responses(201, FlowRun, "created", 400, 404, 409, 413, 415),
                         200: {"description": "an earlier create with the same idempotency key made this run",
                               "content": {JSON: {"model": FlowRun}}}})
    def create_deployment_flow_run(deployment_id: DeploymentId,
                                   body: Annotated[DeploymentRunCreate | None, Body()] = None) -> Response[FlowRun]:
        run, created = flow_runs.create_deployment_flow_run(get_store(), get_settings(), deployment_id,
                                                      body or DeploymentRunCreate())
        if created:
            count("FlowRunsCreated")
        return Response(status_code=201 if created else 200, content_type=JSON, body=run)

    # -- work pools and queues ---------------------------------------------------------------------
    @app.post("/work_pools", tags=["work pools"], status_code=201, summary="Create a work pool",
              description="409 when the name is taken. The pool gets a `default` queue." + with_sqs,
              responses=responses(201, WorkPool, "created", 400, 409, 413, 415))
    def create_work_pool(body: WorkPoolCreate) -> Response[WorkPool]:
        pool = work_pools.create_work_pool(get_store(), body)
        return Response(status_code=201, content_type=JSON, body=pool)

    @app.get("/work_pools", tags=["work pools"], summary="Work pools, by name",
             responses=responses(200, list[WorkPool], "work pools"))
    def list_work_pools() -> list[WorkPool]:
        return work_pools.list_work_pools(get_store())

    @app.get("/work_pools/<name>", tags=["work pools"], summary="Read a work pool",
             responses=responses(200, WorkPool, "the work pool", 404))
    def read_work_pool(name: PoolName) -> WorkPool:
        return work_pools.read_work_pool(get_store(), name)

    @app.post("/work_pools/<name>/pause", tags=["work pools"], summary="Pause a work pool",
              responses=responses(200, WorkPool, "paused", 404))
    def pause_work_pool(name: PoolName) -> WorkPool:
        return work_pools.set_work_pool_paused(get_store(), name, True)

    @app.post("/work_pools/<name>/resume", tags=["work pools"], summary="Resume a work pool",
              responses=responses(200, WorkPool, "resumed", 404))
    def resume_work_pool(name: PoolName) -> WorkPool:
        return work_pools.set_work_pool_paused(get_store(), name, False)

    @app.post("/work_pools/<name>/queues", tags=["work pools"], status_code=201,
              summary="Create a queue in a work pool",
              description="409 when the pool already has a queue of that name." + with_sqs,
              responses=responses(201, WorkQueue, "created", 400, 404, 409, 413, 415))
    def create_work_queue(name: PoolName, body: WorkQueueCreate) -> Response[WorkQueue]:
        queue = work_pools.create_work_queue(get_store(), name, body)
        return Response(status_code=201, content_type=JSON, body=queue)

    @app.get("/work_pools/<name>/queues", tags=["work pools"], summary="Queues of a work pool, by priority",
             responses=responses(200, list[WorkQueue], "queues", 404))
    def list_work_queues(name: PoolName) -> list[WorkQueue]:
        return work_pools.list_work_queues(get_store(), name)

    QueueName = Annotated[str, Path(description="work queue name", min_length=1, max_length=64)]

    @app.post("/work_pools/<name>/queues/<queue>/pause", tags=["work pools"], summary="Pause a work queue",
              description="Its messages wait in SQS until it is resumed.",
              responses=responses(200, WorkQueue, "paused", 404))
    def pause_work_queue(name: PoolName, queue: QueueName) -> WorkQueue:
        return work_pools.set_work_queue_paused(get_store(), name, queue, True)

    @app.post("/work_pools/<name>/queues/<queue>/resume", tags=["work pools"], summary="Resume a work queue",
              responses=responses(200, WorkQueue, "resumed", 404))
    def resume_work_queue(name: PoolName, queue: QueueName) -> WorkQueue:
        return work_pools.set_work_queue_paused(get_store(), name, queue, False)

    @app.get("/work_pools/<name>/status", tags=["work pools"],
             summary="A pool with the depth of each queue (SQS's approximate counts) and its dead letters",
             responses=responses(200, dict[str, Any], "status", 404))
    def work_pool_status(name: PoolName) -> dict[str, Any]:
        return work_pools.work_pool_status(get_store(), name)

    # -- concurrency limits ------------------------------------------------------------------------
    @app.post("/concurrency_limits", tags=["concurrency limits"], status_code=201,
              summary="Create the limit of a tag, or change it (slots held stay held)",
              responses={**responses(201, ConcurrencyLimit, "created", 400, 409, 413, 415),
                         200: {"description": "updated", "content": {JSON: {"model": ConcurrencyLimit}}}})
    def upsert_concurrency_limit(body: ConcurrencyLimitCreate) -> Response[ConcurrencyLimit]:
        limit, created = concurrency_limits.upsert_concurrency_limit(get_store(), body)
        return Response(status_code=201 if created else 200, content_type=JSON, body=limit)

    @app.post("/concurrency_limits/increment", tags=["concurrency limits"],
              summary="Take a slot of every tag's limit for a task run, or none",
              description="Atomic per limit (conditional writes); taking again with the same holder is a no-op. "
                          "`acquired` false names the first full tag and takes nothing.",
              responses=responses(200, SlotsAnswer, "taken or refused", 400, 413, 415))
    def increment_slots(body: SlotsRequest) -> SlotsAnswer:
        full = get_store().acquire_tag_slots(body.tags, body.holder)
        return SlotsAnswer(acquired=full is None, full=full)

    @app.post("/concurrency_limits/decrement", tags=["concurrency limits"],
              summary="Give back a task run's slots",
              responses=responses(200, SlotsAnswer, "given back", 400, 413, 415))
    def decrement_slots(body: SlotsRequest) -> SlotsAnswer:
        get_store().release_tag_slots(body.tags, body.holder)
        return SlotsAnswer(acquired=False)

    @app.get("/concurrency_limits", tags=["concurrency limits"], summary="Concurrency limits, by tag",
             responses=responses(200, list[ConcurrencyLimit], "limits"))
    def list_concurrency_limits() -> list[ConcurrencyLimit]:
        return concurrency_limits.list_concurrency_limits(get_store())

    @app.get("/concurrency_limits/<tag>", tags=["concurrency limits"], summary="Read the limit of a tag",
             responses=responses(200, ConcurrencyLimit, "the limit", 404))
    def read_concurrency_limit(tag: Tag) -> ConcurrencyLimit:
        return concurrency_limits.read_concurrency_limit(get_store(), tag)

    @app.delete("/concurrency_limits/<tag>", tags=["concurrency limits"], summary="Delete the limit of a tag",
                responses=responses(200, Deleted, "deleted", 404))
    def delete_concurrency_limit(tag: Tag) -> Deleted:
        concurrency_limits.delete_concurrency_limit(get_store(), tag)
        return Deleted(deleted=tag)
