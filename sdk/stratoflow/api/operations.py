"""What the API routes do, over the ``Store``: no HTTP here, so the routes stay parse-call-return.

Every operation validates all of its input before its first write, so a refused request leaves
nothing behind.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from stratoflow.api.errors import ApiError, Conflict, NotFound, Unprocessable
from stratoflow.api.schemas import FlowRunCreate, LogIn, SetStateIn
from stratoflow.exceptions import ObjectNotFound, TransitionRefused
from stratoflow.models import Flow, FlowRun, Log, TaskRun, new_id
from stratoflow.orchestration import (
    FLOW_POLICY,
    OrchestrationContext,
    OrchestrationResult,
    ResponseStatus,
    RunKind,
    apply_transition,
    orchestrate,
)
from stratoflow.services import set_run_state
from stratoflow.states import Scheduled, State

if TYPE_CHECKING:
    from stratoflow.settings import Settings
    from stratoflow.storage.base import Store

# A Lambda response may be 6 MB; log pages are cut to stay well below it.
MAX_LOG_PAGE_BYTES = 4 * 1024 * 1024

_ADJECTIVES = ("amber", "brisk", "calm", "daring", "eager", "fuzzy", "gentle", "hidden", "icy", "jolly", "keen",
               "lively", "mellow", "nimble", "olive", "proud", "quiet", "rapid", "silver", "tidy", "urban",
               "vivid", "witty", "young", "zesty")
_ANIMALS = ("alpaca", "badger", "cheetah", "dingo", "egret", "falcon", "gecko", "heron", "ibis", "jackal", "koala",
            "lemur", "marmot", "newt", "otter", "puffin", "quokka", "raven", "seal", "tapir", "urchin", "vole",
            "walrus", "yak", "zebra")


def _run_name() -> str:
    return f"{random.choice(_ADJECTIVES)}-{random.choice(_ANIMALS)}"


# -- runs ---------------------------------------------------------------------------------------
def read_flow_run(store: Store, flow_run_id: str) -> FlowRun:
    run = store.read_run(RunKind.FLOW, flow_run_id)
    assert isinstance(run, FlowRun)
    return run


def read_task_run(store: Store, task_run_id: str) -> TaskRun:
    run = store.read_run(RunKind.TASK, task_run_id)
    assert isinstance(run, TaskRun)
    return run


def read_task_runs(store: Store, flow_run_id: str) -> list[TaskRun]:
    read_flow_run(store, flow_run_id)  # 404 for an unknown flow run rather than an empty list
    return sorted(store.list_task_runs(flow_run_id), key=lambda r: (r.start_time or r.created, r.created))


def set_state(store: Store, kind: RunKind, run_id: str, request: SetStateIn) -> OrchestrationResult:
    """Propose the state; ACCEPT/REJECT/WAIT are answers, ABORT raises ``TransitionRefused``."""
    proposed = request.state.to_state()
    parent_state: State | None = None
    run: FlowRun | TaskRun = store.read_run(kind, run_id)
    if isinstance(run, TaskRun) and run.flow_run_id:
        try:
            parent_state = store.read_run(RunKind.FLOW, run.flow_run_id).state
        except ObjectNotFound:
            parent_state = None
    result, _ = set_run_state(store, kind, run, proposed, force=request.force, parent_flow_run_state=parent_state)
    if result.status == ResponseStatus.ABORT:
        raise TransitionRefused(result)
    return result


def create_flow_run(store: Store, settings: Settings, request: FlowRunCreate) -> tuple[FlowRun, bool]:
    """Create a flow run; returns ``(run, created)``. ``created`` is False when an earlier create
    with the same flow name and idempotency key made the run (nothing is written then)."""
    # 1. Everything that can refuse the request, before any write.
    proposed = request.state.to_state() if request.state is not None else Scheduled()
    run = FlowRun(id=new_id(), name=request.name or _run_name(), flow_name=request.flow_name,
                  parameters=request.parameters, tags=sorted(set(request.tags)),
                  idempotency_key=request.idempotency_key)
    decision = orchestrate(OrchestrationContext(kind=RunKind.FLOW, run=run, proposed_state=proposed), FLOW_POLICY)
    if decision.status != ResponseStatus.ACCEPT or decision.state is None:
        raise TransitionRefused(decision)
    run = apply_transition(run, decision.state)
    encoded = json.dumps(request.parameters, separators=(",", ":")).encode()

    marker: _IdempotencyMarker | None = None
    if request.idempotency_key is not None:
        marker = _IdempotencyMarker(store, request.flow_name, request.idempotency_key)
        existing = marker.existing_run()
        if existing is not None:
            return existing, False

    # 2. Writes: the flow record (once per flow), large parameters, the marker, the run.
    flow = store.ensure_flow(Flow(name=request.flow_name))
    run.flow_id = flow.id
    if len(encoded) > settings.parameters_inline_max_bytes:
        run.parameters = {}
        run.parameters_ref = store.put_blob(f"parameters/{run.id}.json", encoded)
    if marker is not None:
        winner = marker.claim(run)
        if winner is not None:
            return winner, False
    try:
        created = store.create_run(RunKind.FLOW, run)
    except Exception:
        recovered = marker.settle_failed_create(run) if marker is not None else None
        if recovered is None:
            raise
        return recovered, True
    assert isinstance(created, FlowRun)
    return created, True


class _IdempotencyMarker:
    """``IDEMPOTENCY#<hash of flow name and key>`` in the objects table, written with a
    conditional put before the run. It holds the whole run record, so if the process dies between
    the marker and the run, the next request with the same key finishes the creation instead of
    making a second run.

    Uses the DynamoDB store's PynamoDB models directly: the ``Store`` interface has no
    idempotent create yet (it should be one TransactWriteItems of marker + run).
    """

    def __init__(self, store: Store, flow_name: str, key: str) -> None:
        from stratoflow.storage.dynamodb import DynamoDBStore

        if not isinstance(store, DynamoDBStore):
            raise ApiError("idempotency keys need the DynamoDB store", status_code=501)
        self.store = store
        self.model: Any = store.models.ObjectItem
        digest = hashlib.sha256(json.dumps([flow_name, key]).encode()).hexdigest()
        self.pk = f"IDEMPOTENCY#{digest}"
        self.flow_name = flow_name
        self.key = key

    def _run_of(self, item: Any) -> FlowRun:
        doc = json.loads(item.doc)
        try:
            return read_flow_run(self.store, doc["flow_run_id"])
        except ObjectNotFound:
            # The creator stopped between the marker and the run: finish its creation.
            return self._create_or_read(FlowRun.model_validate(doc["run"]))

    def _create_or_read(self, run: FlowRun) -> FlowRun:
        from pynamodb.exceptions import PutError

        try:
            created = self.store.create_run(RunKind.FLOW, run)
        except PutError as exc:
            if not _conditional_failure(exc):
                raise
            return read_flow_run(self.store, run.id)
        assert isinstance(created, FlowRun)
        return created

    def existing_run(self) -> FlowRun | None:
        from pynamodb.exceptions import DoesNotExist

        try:
            item = self.model.get(self.pk, "-", consistent_read=True)
        except DoesNotExist:
            return None
        return self._run_of(item)

    def claim(self, run: FlowRun) -> FlowRun | None:
        """Write the marker for ``run``; if another request won the key first, return its run."""
        from pynamodb.exceptions import PutError

        doc = {"flow_name": self.flow_name, "idempotency_key": self.key, "flow_run_id": run.id,
               "run": run.model_dump(mode="json")}
        item = self.model(self.pk, "-", doc=json.dumps(doc, separators=(",", ":")))
        for _ in range(3):
            try:
                item.save(condition=self.model.pk.does_not_exist())
                return None
            except PutError as exc:
                if not _conditional_failure(exc):
                    raise
            winner = self.existing_run()
            if winner is not None:
                return winner
            # The winner's marker vanished again (its create failed and was rolled back): try again.
        raise Conflict("concurrent creates with this idempotency key keep failing; retry later")

    def settle_failed_create(self, run: FlowRun) -> FlowRun | None:
        """The run's write failed after the marker was written. If a concurrent request finished
        the creation from the marker, return that run; otherwise remove the marker (so nothing is
        left behind) and return None for the caller to re-raise the failure."""
        try:
            return read_flow_run(self.store, run.id)
        except ObjectNotFound:
            pass
        # If this fails too, the marker stays as a record of intent: the next request with the key
        # completes the creation from it.
        with contextlib.suppress(Exception):
            self.model(self.pk, "-").delete(condition=self.model.doc.contains(run.id))
        return None


def _conditional_failure(exc: Exception) -> bool:
    return getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException"


# -- logs ---------------------------------------------------------------------------------------
def write_logs(store: Store, entries: Sequence[LogIn]) -> int:
    """Write a batch of logs after checking every flow run they name exists."""
    logs: list[Log] = [entry.to_log() for entry in entries]
    missing = [rid for rid in dict.fromkeys(e.flow_run_id for e in entries) if not _flow_run_exists(store, rid)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise NotFound(f"flow run {missing[0]!r} not found{more}", missing=missing[:20])
    store.write_logs(logs)
    return len(logs)


def _flow_run_exists(store: Store, flow_run_id: str) -> bool:
    try:
        store.read_run(RunKind.FLOW, flow_run_id)
    except ObjectNotFound:
        return False
    return True


def encode_cursor(position: str | None) -> str | None:
    return base64.urlsafe_b64encode(position.encode()).decode().rstrip("=") if position else None


def decode_cursor(cursor: str | None) -> str | None:
    if not cursor:
        return None
    try:
        position = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        position = ""
    if "#" not in position:  # every log position is time#writer#seq
        raise Unprocessable("query.cursor: not a cursor this API returned")
    return position


def read_logs(store: Store, flow_run_id: str, *, cursor: str | None, limit: int, min_level: int,
              task_run_id: str | None = None) -> tuple[list[Log], str | None]:
    """A page of the run's logs in emitted order, cut so the response stays far below Lambda's
    6 MB limit (a smaller page is read when messages are large)."""
    read_flow_run(store, flow_run_id)
    position = decode_cursor(cursor)
    while True:
        page = store.read_logs(flow_run_id, cursor=position, limit=limit, min_level=min_level, task_run_id=task_run_id)
        size = sum(len(log.message.encode("utf-8", "surrogatepass")) + 256 for log in page.logs)
        if size <= MAX_LOG_PAGE_BYTES or limit == 1:
            return page.logs, encode_cursor(page.next_cursor)
        limit = max(1, limit // 2)
