"""The ``Store`` over the control-plane API (``STRATOFLOW_API_URL``).

Runs, flows, logs and cache entries go through the API (``stratoflow.api.routes.engine`` and the
public routes), which re-checks every transition against the orchestration policy and writes
with the store's conditional writes. Blobs (results, large parameters) go straight to S3 with
the caller's own credentials, as they may be far larger than an API request.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from stratoflow._http import ApiConflict, HttpTransport, get_transport, quote_segment
from stratoflow.exceptions import ObjectNotFound, StaleRunError, StratoflowError
from stratoflow.models import CacheEntry, Flow, FlowRun, Log, TaskRun, new_log_id
from stratoflow.orchestration import RunKind
from stratoflow.settings import Settings
from stratoflow.states import State, StateType
from stratoflow.storage.base import FlowRunQuery, LogPage, ObjectPage, Store, StoredObject
from stratoflow.storage.blobs import S3Blobs

logger = logging.getLogger("stratoflow.api_store")

# The API takes up to 1000 log lines and 1 MiB per request; stay below both.
_LOG_BATCH = 500
_LOG_BATCH_BYTES = 512 * 1024
# The API refuses a whole batch for one message over 64 KiB (schemas.MAX_LOG_MESSAGE_BYTES):
# longer ones are cut to fit here, so one huge line does not cost its neighbours.
_LOG_MESSAGE_BYTES = 64 * 1024
_CUT = "... [cut: the message was {} bytes]"


def _fit(message: str) -> str:
    data = message.encode("utf-8", "surrogatepass")
    if len(data) <= _LOG_MESSAGE_BYTES:
        return message
    note = _CUT.format(len(data))
    return data[:_LOG_MESSAGE_BYTES - len(note)].decode("utf-8", "ignore") + note


def _run_of(kind: RunKind, data: Any) -> FlowRun | TaskRun:
    return (FlowRun if kind == RunKind.FLOW else TaskRun).model_validate(data)


class ApiStore(S3Blobs, Store):
    """The store over the Stratoflow API: the server's transition gateway commits every write."""

    remote = True

    def __init__(self, settings: Settings, transport: HttpTransport | None = None) -> None:
        if not settings.api_url:
            raise StratoflowError("ApiStore needs STRATOFLOW_API_URL")
        self.settings = settings
        token = settings.runtime_token.get_secret_value() if settings.runtime_token is not None else None
        self.http = transport or get_transport(settings.api_url, settings.region, token)

    # -- flows ------------------------------------------------------------------------------
    def ensure_flow(self, flow: Flow) -> Flow:
        # The server assigns id and created: the body is what a client may set.
        body = flow.model_dump(mode="json", include={"name", "description", "tags"})
        return Flow.model_validate(self.http.request("POST", "/flows/ensure", json_body=body))

    def read_flow(self, name: str) -> Flow:
        return Flow.model_validate(self.http.request("GET", f"/flows/{quote_segment(name)}"))

    def list_flows(self, *, cursor: str | None = None, limit: int = 200) -> tuple[list[Flow], str | None]:
        """``GET /flows``: one page of up to 1000 flows (the route has no cursor yet)."""
        if cursor is not None:
            return [], None
        data = self.http.request("GET", "/flows", query={"limit": max(1, min(limit, 1000))})
        return [Flow.model_validate(f) for f in data], None

    # -- runs -------------------------------------------------------------------------------
    def delete_flow_run(self, flow_run_id: str) -> None:
        self.http.request("DELETE", f"/flow_runs/{quote_segment(flow_run_id)}")

    def create_run(self, kind: RunKind, run: FlowRun | TaskRun) -> FlowRun | TaskRun:
        try:
            data = self.http.request("POST", f"/runs/{kind.value}/create", json_body=run.model_dump(mode="json"))
        except ApiConflict:
            # A retried request whose first attempt was written: the stored run is ours if its
            # history is the one we sent.
            existing = self.read_run(kind, run.id)
            if [s.id for s in existing.state_history] == [s.id for s in run.state_history]:
                return existing
            raise
        return _run_of(kind, data)

    def read_run(self, kind: RunKind, run_id: str) -> FlowRun | TaskRun:
        return _run_of(kind, self.http.request("GET", f"/runs/{kind.value}/{quote_segment(run_id)}"))

    def commit_run(
        self,
        kind: RunKind,
        run: FlowRun | TaskRun,
        new_states: Sequence[State],
        expected_version: int,
        allowed_from: Iterable[StateType | None],
    ) -> FlowRun | TaskRun:
        body = {
            "run": run.model_dump(mode="json"),
            "new_states": [s.model_dump(mode="json") for s in new_states],
            "expected_version": expected_version,
            "allowed_from": [None if t is None else t.value for t in allowed_from],
        }
        try:
            data = self.http.request("POST", f"/runs/{kind.value}/{quote_segment(run.id)}/commit", json_body=body)
        except ApiConflict as exc:
            current = exc.body.get("current") if isinstance(exc.body, dict) else None
            if current is None:
                raise
            current_run = _run_of(kind, current)
            # A retried request whose first attempt was written: that is our commit.
            ids = [s.id for s in run.state_history]
            if [s.id for s in current_run.state_history] == ids and current_run.version == expected_version + 1:
                return current_run
            raise StaleRunError(current_run) from None
        return _run_of(kind, data)

    def page_flow_runs(self, query: FlowRunQuery) -> tuple[list[FlowRun], str | None]:
        q = query
        flow_name, deployment_id, state_types, tags = q.flow_name, q.deployment_id, q.state_types, q.tags
        scheduled_before, created_after, created_before = q.scheduled_before, q.created_after, q.created_before
        limit, cursor = q.limit, q.cursor
        body: dict[str, Any] = {"limit": max(1, min(limit, 1000))}
        for key, value in (("flow_name", flow_name), ("deployment_id", deployment_id), ("cursor", cursor)):
            if value is not None:
                body[key] = value
        if state_types:
            body["state_types"] = [t.value for t in state_types]
            if scheduled_before is not None:
                body["scheduled_before"] = scheduled_before.isoformat()
        if tags:
            body["tags"] = list(tags)
        for key, when in (("created_after", created_after), ("created_before", created_before)):
            if when is not None:
                body[key] = when.isoformat()
        headers: dict[str, str] = {}
        data = self.http.request("POST", "/flow_runs/filter", json_body=body, response_headers=headers)
        return [FlowRun.model_validate(r) for r in data], headers.get("x-next-cursor")

    def list_task_runs(self, flow_run_id: str) -> list[TaskRun]:
        try:
            data = self.http.request("GET", f"/flow_runs/{quote_segment(flow_run_id)}/task_runs")
        except ObjectNotFound:
            return []
        return [TaskRun.model_validate(r) for r in data]

    # -- logs -------------------------------------------------------------------------------
    def write_logs(self, logs: Sequence[Log]) -> None:
        """``POST /logs`` in batches. Every line carries its id and timestamp, so a batch the
        transport sends again (its answer was lost, or a 5xx) stores no duplicate lines."""
        batch: list[dict[str, Any]] = []
        size = 0
        for log in logs:
            if not log.flow_run_id:
                # The API keeps logs by flow run; a task called outside any flow has none.
                logger.debug("log line without a flow run is not sent to the API: %s", log.message[:80])
                continue
            item = {"flow_run_id": log.flow_run_id, "task_run_id": log.task_run_id, "name": log.name,
                    "level": log.level, "message": _fit(log.message), "timestamp": log.timestamp.isoformat(),
                    "id": log.id or new_log_id()}
            item_size = len(json.dumps(item))
            if batch and (len(batch) >= _LOG_BATCH or size + item_size > _LOG_BATCH_BYTES):
                self.http.request("POST", "/logs", json_body=batch)
                batch, size = [], 0
            batch.append(item)
            size += item_size
        if batch:
            self.http.request("POST", "/logs", json_body=batch)

    def read_logs(
        self, run_id: str, *, cursor: str | None = None, limit: int = 1000, task_run_id: str | None = None,
        min_level: int = 0,
    ) -> LogPage:
        query = {"cursor": cursor, "limit": max(1, min(limit, 1000)), "task_run_id": task_run_id,
                 "min_level": min_level or None}
        data = self.http.request("GET", f"/flow_runs/{quote_segment(run_id)}/logs", query=query)
        return LogPage([Log.model_validate(x) for x in data["logs"]], data.get("next_cursor"))

    # -- cache ------------------------------------------------------------------------------
    def read_cache(self, key: str) -> CacheEntry | None:
        try:
            data = self.http.request("GET", f"/cache/{quote_segment(key)}")
        except ObjectNotFound:
            return None
        entry = CacheEntry.model_validate(data)
        return entry if entry.is_valid() else None

    def write_cache(self, entry: CacheEntry) -> None:
        self.http.request("PUT", f"/cache/{quote_segment(entry.key)}", json_body=entry.model_dump(mode="json"))

    # Blobs (results, large parameters) go straight to S3: see storage/blobs.py.

    # -- not over the API ------------------------------------------------------------------------
    # The objects table (deployments, work pools/queues, concurrency limits, idempotency markers)
    # is the server's: the API has a route per operation on those records, not a generic one, so
    # ``StratoflowClient`` calls those routes and these say so instead of NotImplementedError.
    def _server_side(self, what: str) -> StratoflowError:
        return StratoflowError(f"{what} is not available over the API (STRATOFLOW_API_URL): use get_client(), "
                               "whose methods call the API's routes")

    def put_object(self, kind: str, key: str, doc: dict[str, Any], *, must_not_exist: bool = False,
                   expected_version: int | None = None) -> StoredObject:
        raise self._server_side("put_object")

    def get_object(self, kind: str, key: str) -> StoredObject:
        raise self._server_side("get_object")

    def list_objects(self, kind: str, *, prefix: str = "", cursor: str | None = None,
                     limit: int = 100) -> ObjectPage:
        raise self._server_side("list_objects")

    def delete_object(self, kind: str, key: str, *, expected_version: int | None = None) -> None:
        raise self._server_side("delete_object")

    def create_flow_run_idempotent(self, run: FlowRun, key: str) -> tuple[FlowRun, bool]:
        raise self._server_side("create_flow_run_idempotent (POST /flow_runs with an idempotency_key)")

    def acquire_tag_slots(self, tags: Sequence[str], holder: str) -> str | None:
        data = self.http.request("POST", "/concurrency_limits/increment", json_body={"tags": list(tags),
                                                                                   "holder": holder})
        return None if data.get("acquired") else str(data.get("full"))

    def release_tag_slots(self, tags: Sequence[str], holder: str) -> None:
        self.http.request("POST", "/concurrency_limits/decrement", json_body={"tags": list(tags), "holder": holder})

    # -- beyond the Store interface -----------------------------------------------------------
    def set_state(self, kind: RunKind, run_id: str, state: State, *, force: bool = False) -> dict[str, Any]:
        """``POST /<kind>_runs/<id>/set_state``: the server applies the policy. ABORT raises
        ``TransitionRefused`` with the rule and its reason; otherwise the response body. ``force``
        posts to ``.../set_state/force``, a route of its own so that IAM can grant it apart."""
        body = {"state": {"type": state.type.value, "name": state.name, "message": state.message,
                          "state_details": state.state_details.model_dump(mode="json")}}
        path = f"/{kind.value}_runs/{quote_segment(run_id)}/set_state" + ("/force" if force else "")
        data: dict[str, Any] = self.http.request("POST", path, json_body=body)
        return data
