"""The control-plane API: one Powertools ``APIGatewayHttpResolver`` behind an HTTP API (payload 2.0).

This module is the resolver: what every request goes through before and after its route (the
body checks of ``_precheck``, the JSON decoding, the response size cap), the map from domain
errors to statuses, the OpenAPI settings, and ``get_app``. The routes are in ``routes/``, one
Powertools ``Router`` per noun, included here; they parse (Powertools validates bodies, paths and
queries from the pydantic models in ``stratoflow.schemas`` and generates the OpenAPI schema from
them), call the package (``stratoflow.control`` over the ``Store``) and return. Every error body
is ``{"error": "<one line>", ...}``:

=====  =====================================================================================
400    malformed JSON, a body that is not UTF-8/base64
404    unknown flow run / task run / flow / deployment / work pool / queue / limit, unknown route
409    the orchestration rules refused the transition (ABORT): the rule and its reason; a name
       already taken; a paused deployment; a record changed concurrently (a lost race on a run:
       ``current`` holds the stored run)
413    request body over 1 MiB
415    a body that is not ``application/json``
422    wrong types or missing fields, naming the field
500    anything unexpected (logged with the Powertools Logger; the body stays generic)
=====  =====================================================================================

Importing this module imports Powertools, pydantic, the models and the routes, and builds
nothing: the app (its Logger and OpenAPI models) is built on first use, and the store (boto3,
PynamoDB, locally moto) on a route's first ``get_store()``.
"""

import base64
import binascii
import inspect
import json
import threading
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.api_gateway import Route
from aws_lambda_powertools.event_handler.exceptions import NotFoundError, ServiceError
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter
from pydantic import BaseModel, TypeAdapter, ValidationError

from stratoflow import __version__
from stratoflow.api._shared import JSON, METRICS_NAMESPACE, SERVICE, count
from stratoflow.api.errors import describe_validation_errors, error_body, json_type_errors
from stratoflow.api.routes import (
    concurrency_limits,
    deployments,
    engine,
    flow_runs,
    flows,
    health,
    logs,
    task_runs,
    ui,
    work_pools,
)
from stratoflow.exceptions import (
    BadRequest,
    ObjectAlreadyExists,
    ObjectNotFound,
    ObjectVersionConflict,
    RequestRefused,
    StaleRunError,
    TransitionRefused,
    Unprocessable,
)
from stratoflow.schemas import MAX_BODY_BYTES

__all__ = ["MAX_RESPONSE_BYTES", "METRICS_NAMESPACE", "ROUTERS", "SERVICE", "Resolver", "build_app", "get_app"]

# Lambda's synchronous response limit is 6 MB; leave room for headers and the envelope.
MAX_RESPONSE_BYTES = 6 * 1024 * 1024 - 64 * 1024
# Routes whose JSON body is an array; every other body must be an object.
_ARRAY_BODIES = frozenset({("POST", "/logs")})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

# Every route of the API, by module. Powertools tries static routes before dynamic ones, each in
# the order they were included; no two routes of one method match one path, so the order only
# keeps the document's and the resolver's lists stable.
ROUTERS: tuple[APIGatewayHttpRouter, ...] = (
    health.router, engine.router, flow_runs.router, task_runs.router, logs.router, flows.router,
    deployments.router, work_pools.router, concurrency_limits.router, ui.router,
)

_app: "Resolver | None" = None
_app_lock = threading.Lock()


def get_app() -> "Resolver":
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
    (``stratoflow._http``) and the web UI send bodiless POSTs (cancel, retry, pause, resume)
    without one, and a cross-site bodiless POST is stopped where it could arrive unsigned: the
    ``stratoflow ui`` proxy and ``stratoflow dev`` refuse a foreign ``Origin``; on AWS IAM refuses it.

    API Gateway base64-encodes a body that is not UTF-8 (``stratoflow dev`` does the same): such a
    body answers 400 here instead of reaching a field as U+FFFD.
    """
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


class Resolver(APIGatewayHttpResolver):
    """The API's resolver: Powertools' with validation, where the body is decoded strictly
    (``decode_json``), refused early when it cannot be JSON (``_precheck``), and the response
    capped at Lambda's limit; its OpenAPI document requires each discriminator's tag."""

    def __init__(self) -> None:
        super().__init__(enable_validation=True, json_body_deserializer=self.decode_json)
        # Made with the app (the first request), not on import: the handler's import stays cheap.
        self.log = Logger(service=SERVICE)
        self._body_types: dict[Route, TypeAdapter[Any] | None] = {}

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
            self.log.error("response too large", extra={"bytes": len(body), "path": event.get("rawPath")})
            return _json_response(500, error_body(
                f"the response would be {len(body)} bytes, over Lambda's 6 MB limit; ask for fewer items"))
        return response

    def decode_json(self, body: str) -> Any:
        """The request body, parsed as JSON is: no NaN/Infinity, no lone surrogates, an object
        (an array only where the route takes one), of the JSON types the route's schema states."""

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
        route = self.context.get("_route")
        expects_array = route is not None and (route.method, route.path) in _ARRAY_BODIES
        if isinstance(value, list) and not expects_array:
            raise Unprocessable("body: must be a JSON object, not an array")
        if route is not None and value is not None:
            self._check_json_types(route, body, value)
        return value

    def _check_json_types(self, route: Route, body: str, value: Any) -> None:
        """422 for a body value of another JSON type than the schema's, which pydantic's lax
        validation would convert ("5" for an integer, 1 for a boolean), nested records included:
        the API takes the types its OpenAPI document states. A body lax validation refuses anyway
        is left to it, so its answer stays as it was."""
        if route not in self._body_types:
            parameter = inspect.signature(route.func).parameters.get("body")
            self._body_types[route] = None if parameter is None else TypeAdapter(parameter.annotation)
        adapter = self._body_types[route]
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


def _error(status: int, body: dict[str, Any]) -> Response[Any]:
    return Response(status_code=status, content_type=JSON, body=body)


def _map_domain_errors(app: Resolver) -> None:
    """The status of each domain error (``stratoflow.exceptions``, the store's) a route lets through."""

    @app.exception_handler(RequestRefused)
    def on_refused_request(exc: RequestRefused) -> Response[Any]:
        return _error(exc.status_code, exc.body())

    @app.exception_handler(ObjectNotFound)
    def on_not_found(exc: ObjectNotFound) -> Response[Any]:
        return _error(404, error_body(str(exc), kind=exc.kind, id=exc.key))

    @app.exception_handler(ObjectAlreadyExists)
    def on_exists(exc: ObjectAlreadyExists) -> Response[Any]:
        return _error(409, error_body(str(exc)))

    @app.exception_handler(ObjectVersionConflict)
    def on_version_conflict(exc: ObjectVersionConflict) -> Response[Any]:
        return _error(409, error_body(str(exc), kind=exc.kind, id=exc.key))

    @app.exception_handler(StaleRunError)
    def on_stale_run(exc: StaleRunError) -> Response[Any]:
        # Only the engine's commit lets one through (propose retries its lost races).
        current = exc.current
        return _error(409, error_body(str(exc), current=current.model_dump(mode="json"), kind=type(current).__name__))

    @app.exception_handler(TransitionRefused)
    def on_refused(exc: TransitionRefused) -> Response[Any]:
        result = exc.result
        count("TransitionsAborted")
        return _error(409, error_body(
            f"{result.rule}: {result.reason}", status=result.status.value, rule=result.rule, reason=result.reason,
            state=result.state.model_dump(mode="json") if result.state is not None else None))



def _map_request_errors(app: Resolver) -> None:
    """The status of what Powertools refuses (validation, content type, no route) and of anything
    unexpected (500, logged; the body names only the request id)."""

    @app.exception_handler(RequestValidationError)
    def on_invalid(exc: RequestValidationError) -> Response[Any]:
        errors = list(exc.errors())
        if any(tuple(e.get("loc", ()))[:1] == ("response",) for e in errors):
            # Powertools reports a response that fails its own schema this way: our bug, not the caller's.
            app.log.error("response failed validation", extra={"errors": str(errors)[:2000]})
            return _error(500, error_body("internal error: the response did not match its schema"))
        if any(e.get("type") == "json_invalid" for e in errors):
            return _error(400, error_body("malformed JSON body"))
        line, details = describe_validation_errors(errors)
        return _error(422, error_body(line, errors=details))

    @app.exception_handler(RequestUnsupportedContentType)
    def on_content_type(exc: RequestUnsupportedContentType) -> Response[Any]:
        return _error(415, error_body("unsupported content type; send application/json"))

    @app.exception_handler([UnicodeDecodeError, binascii.Error])
    def on_undecodable(exc: Exception) -> Response[Any]:
        # _precheck refuses such bodies of POST/PUT/PATCH/DELETE; this covers any other method's.
        what = "UTF-8" if isinstance(exc, UnicodeDecodeError) else "base64"
        return _error(400, error_body(f"request body is not valid {what}"))

    @app.not_found
    def on_no_route(exc: NotFoundError) -> Response[Any]:
        event = app.current_event
        return _error(404, error_body(f"no route for {event.http_method} {event.path}"))

    @app.exception_handler(ServiceError)
    def on_service_error(exc: ServiceError) -> Response[Any]:
        return _error(exc.status_code, error_body(str(exc.msg)))

    @app.exception_handler(Exception)
    def on_unexpected(exc: Exception) -> Response[Any]:
        app.log.exception("unhandled error in %s %s", app.current_event.http_method, app.current_event.path)
        request_id = getattr(app.lambda_context, "aws_request_id", None)
        return _error(500, error_body("internal error", request_id=request_id))


def _serve_openapi(app: Resolver) -> None:
    """The document's settings, ``GET /openapi.json`` (made once, then served as is) and ``/docs``."""
    app.configure_openapi(
        title="Stratoflow API", version=__version__,
        description="Control plane of Stratoflow: flow runs, task runs, state transitions and logs. "
                    "Every error body is {\"error\": \"<one line>\", ...}.",
    )
    schema_cache: list[str] = []

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_json():  # no return annotation: the schema string is returned as is, unvalidated
        if not schema_cache:
            schema_cache.append(app.get_openapi_json_schema())
        return Response(status_code=200, content_type=JSON, body=schema_cache[0])

    app.enable_swagger(path="/docs", compress=True)


def build_app() -> Resolver:
    """A new resolver with every route, error handler and the OpenAPI/Swagger routes. Each call
    includes the same routers (the sandbox gateway builds its own app beside ``get_app``'s):
    a router only refers to the last app that included it for the current event, which
    Powertools keeps on the class anyway, so either app resolves any route."""
    app = Resolver()
    _map_domain_errors(app)
    _map_request_errors(app)
    _serve_openapi(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
