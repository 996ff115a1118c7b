"""The web UI on the API function: its static assets under ``/ui/`` and the read-only aggregates
its pages need under ``/ui/api/`` (same resolver, so the same IAM auth on AWS).

* ``GET /ui`` redirects to ``/ui/`` (relative ``Location``, so a stage prefix survives);
  ``GET /ui/`` is ``index.html``; ``GET /ui/<name>`` is one file of ``stratoflow/ui/static``,
  with its content type, a strong ETag (``If-None-Match`` answers 304), ``Cache-Control`` and
  gzip when the browser accepts it (a gzipped or binary body is sent base64-encoded, as API
  Gateway's payload 2.0 expects). Unknown names and anything that is not a plain file name of
  that folder are a 404.
* ``GET /ui/api/dashboard?hours=24`` and ``GET /ui/api/flow_runs/<id>/timeline``: what the
  dashboard and the Gantt chart draw (``stratoflow.control.ui_views``), as gzipped JSON.
"""

import json
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from stratoflow.api._shared import ERROR_TEXTS, JSON, responses
from stratoflow.api.errors import error_body
from stratoflow.control import ui_views
from stratoflow.states import now
from stratoflow.storage import get_store
from stratoflow.ui import CACHE_CONTROL, etag_matches, load_asset

TAG = "ui"
router = APIGatewayHttpRouter()

# The page loads only its own files and talks only to its own origin (the log download is a blob: URL).
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; "
                           "base-uri 'none'; frame-ancestors 'none'; form-action 'none'")
_TEXTS = {**ERROR_TEXTS, 404: "unknown flow run", 422: "invalid parameter (named)"}


def _header(name: str) -> str | None:
    """The request's header ``name`` (lower case), whatever case the client sent it in."""
    headers = router.current_event.headers or {}
    for key, value in headers.items():
        if key.lower() == name:
            return str(value)
    return None


def _serve(name: str) -> Response[Any]:
    """The asset ``name`` with its caching headers: 304 when the browser holds it, gzip when it
    takes it; 404 for anything that is not one of the UI's files."""
    asset = load_asset(name)
    if asset is None:
        return Response(status_code=404, content_type=JSON, body=error_body(f"no UI asset {name!r}"))
    headers = {"ETag": asset.etag, "Cache-Control": CACHE_CONTROL, "Vary": "Accept-Encoding",
               "X-Content-Type-Options": "nosniff"}
    if asset.content_type.startswith("text/html"):
        headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    if etag_matches(_header("if-none-match"), asset.etag):
        return Response(status_code=304, content_type=None, headers=headers, body=None)
    body: str | bytes
    if asset.gzipped is not None and "gzip" in (_header("accept-encoding") or ""):
        body = asset.gzipped  # bytes: Powertools sends it base64-encoded (isBase64Encoded)
        headers["Content-Encoding"] = "gzip"
    elif asset.is_text:
        body = asset.data.decode("utf-8")
    else:
        body = asset.data
    return Response(status_code=200, content_type=asset.content_type, headers=headers, body=body)


def _json(payload: dict[str, Any]) -> Response[Any]:
    text = json.dumps(payload, separators=(",", ":"))
    # compress=True gzips when the request accepts it (the body then goes base64-encoded).
    return Response(status_code=200, content_type=JSON, body=text, compress=True,
                    headers={"Cache-Control": "no-store", "Vary": "Accept-Encoding"})


@router.get("/ui", include_in_schema=False)
def ui_redirect():  # no return annotation: a plain response, unvalidated
    return Response(status_code=308, content_type=None, headers={"Location": "ui/"}, body="")


@router.get("/ui/", include_in_schema=False)
def ui_index():
    return _serve("index.html")


@router.get("/ui/<name>", include_in_schema=False)
def ui_asset(name: str):
    return _serve(name)


@router.get("/ui/api/dashboard", tags=[TAG], summary="The UI dashboard: runs of the last hours by state, "
            "failing deployments, late runs, work pools",
            responses=responses(200, None, "counts by state and time bucket, failing deployments, late runs, "
                                "work pools", texts=_TEXTS))
def ui_dashboard(hours: Annotated[int, Query(ge=1, le=ui_views.DASHBOARD_MAX_HOURS)] = 24):
    return _json(ui_views.dashboard(get_store(), hours=hours, now=now()))


@router.get("/ui/api/flow_runs/<flow_run_id>/timeline", tags=[TAG],
            summary="The task runs of a flow run, reduced to what the UI's timeline draws",
            responses=responses(200, None, "the task runs in start order", 404, texts=_TEXTS))
def ui_timeline(flow_run_id: Annotated[str, Path(min_length=1, max_length=256)]):
    return _json(ui_views.timeline(get_store(), flow_run_id))
