"""API Gateway (HTTP API, payload format 2.0) as ``stratoflow dev`` emulates it in front of a
Lambda function: the event it builds from an HTTP request on the ``$default`` route and stage,
and the HTTP response it makes of the function's return value.

Kept apart from any server so that the translation, which is where the local cloud must match
AWS exactly, can be used and tested on its own (the dev server, ``bench/api_latency.py``, tests).
Where API Gateway answers by itself, so does the emulation, with its status and a
``{"message": ...}`` body: 503 when the function took longer than the integration timeout, 500
when it failed or returned something that is not a response. For a failing function the body
also carries Lambda's error (``errorType``, ``errorMessage``, ``stackTrace``), which on AWS only
reaches the logs. A body that is not UTF-8 reaches the function base64-encoded, whatever its
content type, as API Gateway sends it (the API handler then answers 400).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

from stratoflow.local.lambda_runtime import ACCOUNT_ID, InvocationResult

API_ID = "stratoflowd"  # requestContext.apiId
MAX_REQUEST_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
INTEGRATION_TIMEOUT = 30.0  # API Gateway HTTP API's longest integration timeout

# Content types whose bodies API Gateway passes as text; every other body (also one without a
# content type, and form posts) reaches the function base64-encoded with isBase64Encoded true.
_TEXT_TYPES = ("application/json", "application/xml", "application/javascript")
# Connection-level headers: not part of the request the function sees, nor taken from its response.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
                         "upgrade"})
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


# -- API Gateway: request -> event -----------------------------------------------------------------
def is_text_content_type(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media.startswith("text/") or media in _TEXT_TYPES


def _gateway_time(now: datetime) -> str:
    return f"{now.day:02d}/{_MONTHS[now.month - 1]}/{now.year}:{now:%H:%M:%S} +0000"


def new_gateway_request_id() -> str:
    """An id in API Gateway's style (``JKJaXmPLvHcESHA=``)."""
    return base64.b64encode(secrets.token_bytes(10)).decode()


def build_http_api_event(
    *,
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    source_ip: str,
    server_port: int,
    request_id: str,
    protocol: str = "HTTP/1.1",
    now: datetime | None = None,
) -> dict[str, Any]:
    """The event API Gateway (HTTP API, payload format 2.0) sends for a request on ``$default``.

    Header names are lower-cased and repeated headers joined with commas; the ``Cookie`` header
    becomes the ``cookies`` list; the path is URL-decoded (``rawPath`` too, as HTTP APIs do), the
    query string is passed raw and parsed (values decoded, repeats comma-joined); keys API
    Gateway leaves out when empty (``cookies``, ``queryStringParameters``, ``body``) are left out.
    """
    now = now or datetime.now(UTC)
    if target.startswith("/"):
        raw_path, _, raw_query = target.partition("?")
    else:  # absolute form (a proxy's request line)
        parts = urlsplit(target)
        raw_path, raw_query = parts.path or "/", parts.query
    raw_query = raw_query.partition("#")[0]
    merged: dict[str, str] = {}
    cookies: list[str] = []
    chunked = False
    for name, value in headers:
        key = name.lower()
        if key == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
            continue
        if key in _HOP_BY_HOP:
            chunked = chunked or key == "transfer-encoding"
            continue
        merged[key] = f"{merged[key]},{value}" if key in merged else value
    if chunked:  # the function sees the assembled body's length
        merged.pop("content-length", None)
        if body:
            merged["content-length"] = str(len(body))
    merged["x-forwarded-for"] = f"{merged['x-forwarded-for']}, {source_ip}" if "x-forwarded-for" in merged \
        else source_ip
    merged["x-forwarded-port"] = str(server_port)
    merged["x-forwarded-proto"] = "http"
    merged.setdefault("x-amzn-trace-id", f"Root=1-{int(now.timestamp()):08x}-{secrets.token_hex(12)}")
    domain = merged.get("host") or f"127.0.0.1:{server_port}"
    path = unquote(raw_path)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": raw_query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = merged
    if raw_query:
        params: dict[str, str] = {}
        for key, value in parse_qsl(raw_query, keep_blank_values=True):
            params[key] = f"{params[key]},{value}" if key in params else value
        event["queryStringParameters"] = params
    event["requestContext"] = {
        "accountId": ACCOUNT_ID,
        "apiId": API_ID,
        "domainName": domain,
        "domainPrefix": domain.split(":", 1)[0].split(".", 1)[0],
        "http": {"method": method.upper(), "path": path, "protocol": protocol, "sourceIp": source_ip,
                 "userAgent": merged.get("user-agent", "")},
        "requestId": request_id,
        "routeKey": "$default",
        "stage": "$default",
        "time": _gateway_time(now),
        "timeEpoch": int(now.timestamp() * 1000),
    }
    if body:
        text = _utf8_or_none(body) if is_text_content_type(merged.get("content-type")) else None
        if text is not None:
            event["body"] = text
            event["isBase64Encoded"] = False
        else:  # also a "text" body that is not UTF-8: API Gateway base64-encodes it, never mangles it
            event["body"] = base64.b64encode(body).decode()
            event["isBase64Encoded"] = True
    else:
        event["isBase64Encoded"] = False
    return event


def _utf8_or_none(body: bytes) -> str | None:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


# -- API Gateway: function result -> response -------------------------------------------------------
class GatewayResponse(NamedTuple):
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class InvalidResponse(Exception):
    """The function's return value is not a response API Gateway can send."""


def json_response(status: int, data: dict[str, Any]) -> GatewayResponse:
    return GatewayResponse(status, [("content-type", "application/json")], json.dumps(data).encode())


def _header_value(name: str, value: Any) -> str:
    text = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
    if "\r" in text or "\n" in text or "\r" in name or "\n" in name:
        raise InvalidResponse(f"header {name!r} contains a line break")
    return text


def response_from_payload(payload: Any, payload_json: str) -> GatewayResponse:
    """The HTTP response API Gateway makes of a function's return value (payload format 2.0).

    A JSON object with ``statusCode`` is a full response (``headers``, ``cookies`` -> one
    ``Set-Cookie`` each, ``body``, ``isBase64Encoded``; ``multiValueHeaders`` is a 1.0 field and
    ignored; no content type means ``text/plain; charset=utf-8``). Anything else is the body of a
    200 ``application/json`` response: a string as it is, other values as their JSON.
    """
    if not (isinstance(payload, dict) and "statusCode" in payload):
        text = payload if isinstance(payload, str) else payload_json
        return GatewayResponse(200, [("content-type", "application/json")], text.encode())
    status = payload["statusCode"]
    if isinstance(status, str) and status.strip().isdigit():
        status = int(status)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise InvalidResponse(f"statusCode must be an HTTP status code, not {payload['statusCode']!r}")
    headers_in = payload.get("headers") or {}
    if not isinstance(headers_in, dict):
        raise InvalidResponse(f"headers must be an object of strings, not {type(headers_in).__name__}")
    headers = [(str(k).lower(), _header_value(str(k), v)) for k, v in headers_in.items()
               if v is not None and str(k).lower() not in _HOP_BY_HOP | {"content-length"}]
    cookies = payload.get("cookies") or []
    if not isinstance(cookies, list) or not all(isinstance(c, str) for c in cookies):
        raise InvalidResponse("cookies must be a list of strings")
    headers += [("set-cookie", _header_value("set-cookie", c)) for c in cookies]
    if not any(k == "content-type" for k, _ in headers):
        headers.append(("content-type", "text/plain; charset=utf-8"))
    body_in = payload.get("body")
    if body_in is None:
        body = b""
    elif not isinstance(body_in, str):
        raise InvalidResponse(f"body must be a string, not {type(body_in).__name__} (serialize it, e.g. json.dumps)")
    elif payload.get("isBase64Encoded"):
        try:
            body = base64.b64decode(body_in, validate=True)
        except ValueError as exc:
            raise InvalidResponse(f"isBase64Encoded is true but the body is not base64: {exc}") from exc
    else:
        body = body_in.encode()
    return GatewayResponse(status, headers, body)


def response_from_invocation(result: InvocationResult) -> GatewayResponse:
    if result.abandoned:
        return json_response(503, {"message": "Service Unavailable"})
    if result.error is not None:
        return json_response(500, {"message": "Internal Server Error", **result.error,
                                    "requestId": result.request_id})
    try:
        return response_from_payload(result.payload, result.payload_json)
    except InvalidResponse as exc:
        return json_response(500, {"message": "Internal Server Error", "errorType": "InvalidResponse",
                                    "errorMessage": f"the function's response is not a valid API Gateway "
                                                    f"response: {exc}", "requestId": result.request_id})

