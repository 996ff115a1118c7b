"""The storage interface the services and the engine depend on. No boto3 here.

Runs are written only through ``create_run`` and ``commit_run``; both are single conditional
writes, so a concurrent writer either wins cleanly or gets ``StaleRunError`` with the current
record.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from stratoflow.models import CacheEntry, Flow, FlowRun, Log, TaskRun
from stratoflow.orchestration import RunKind
from stratoflow.states import State, StateType
from stratoflow.storage import slots
from stratoflow.storage.keys import local_signer
from stratoflow.storage.results import Signer


@dataclass(frozen=True)
class FlowRunQuery:
    """Which flow runs to list. Order: with ``state_types``, the time runs entered their state
    (newest first; oldest first with ``scheduled_before``, the due runs); with a deployment, its
    expected start; otherwise creation time, newest first."""

    flow_name: str | None = None
    deployment_id: str | None = None
    state_types: tuple[StateType, ...] = ()
    scheduled_before: datetime | None = None
    tags: tuple[str, ...] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None
    limit: int = 200
    cursor: str | None = None


@dataclass(frozen=True)
class LogPage:
    logs: list[Log]
    # Pass back to read the next page; None when there is nothing more (yet).
    next_cursor: str | None


@dataclass(frozen=True)
class StoredObject:
    """A low-volume record of the objects table: its JSON document and its version (1, 2, ...)."""

    kind: str
    key: str
    doc: dict[str, Any]
    version: int


@dataclass(frozen=True)
class ObjectPage:
    objects: list[StoredObject]
    # Pass back as ``cursor`` for the next page; None when this page was the last.
    next_cursor: str | None


class Store(ABC):
    # True for a store that forwards every write to another process's API (whose transition
    # gateway commits it and runs the after-commit listeners there, where the write happens).
    remote: ClassVar[bool] = False

    # -- flows ------------------------------------------------------------------------------
    @abstractmethod
    def ensure_flow(self, flow: Flow) -> Flow:
        """Create the flow record if it does not exist; return the stored one."""

    @abstractmethod
    def read_flow(self, name: str) -> Flow: ...

    def list_flows(self, *, cursor: str | None = None, limit: int = 200) -> tuple[list[Flow], str | None]:
        """Flows by name, a page at a time; returns ``(flows, next_cursor)``."""
        raise NotImplementedError

    # -- low-volume records (deployments, work pools/queues, concurrency limits) ------------
    # ``kind`` names the record type ("deployment"), ``key`` the record within it. Writes are
    # single conditional puts: ``must_not_exist`` raises ``ObjectAlreadyExists`` when the key
    # is taken; ``expected_version`` raises ``ObjectVersionConflict`` unless the stored version
    # is that one (``ObjectNotFound`` when there is none).
    def put_object(self, kind: str, key: str, doc: dict[str, Any], *, must_not_exist: bool = False,
                   expected_version: int | None = None) -> StoredObject:
        """Write the record; returns it with its new version."""
        raise NotImplementedError

    def get_object(self, kind: str, key: str) -> StoredObject:
        """The record (strongly consistent); ``ObjectNotFound`` when there is none."""
        raise NotImplementedError

    def list_objects(self, kind: str, *, prefix: str = "", cursor: str | None = None,
                     limit: int = 100) -> ObjectPage:
        """Records of ``kind`` whose key starts with ``prefix``, in key order, a page at a time."""
        raise NotImplementedError

    def delete_object(self, kind: str, key: str, *, expected_version: int | None = None) -> None:
        """Remove the record; ``ObjectNotFound`` when there is none."""
        raise NotImplementedError

    # -- concurrency slots of tags (see stratoflow/storage/slots.py) ---------------------------------
    def acquire_tag_slots(self, tags: Sequence[str], holder: str) -> str | None:
        """Take a slot of every tag that has a limit, or none: returns the first full tag."""
        full = slots.acquire_all(self, [slots.tag_limit(t) for t in tags], holder)
        return full.key if full is not None else None

    def release_tag_slots(self, tags: Sequence[str], holder: str) -> None:
        slots.release_all(self, [slots.tag_limit(t) for t in tags], holder)

    # -- runs -------------------------------------------------------------------------------
    @abstractmethod
    def create_run(self, kind: RunKind, run: FlowRun | TaskRun) -> FlowRun | TaskRun:
        """Insert a new run (fails if the id exists). Returns it with version 1."""

    def create_final_task_run(self, run: TaskRun) -> TaskRun:
        """Store a task run that is created already in a final state. Stores may batch these
        (see storage/outbox.py); the default writes it at once."""
        created = self.create_run(RunKind.TASK, run)
        assert isinstance(created, TaskRun)
        return created

    def flush(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing back
        """Write anything the store holds back (batched creates). Default: nothing held."""

    @abstractmethod
    def read_run(self, kind: RunKind, run_id: str) -> FlowRun | TaskRun: ...

    @abstractmethod
    def commit_run(
        self,
        kind: RunKind,
        run: FlowRun | TaskRun,
        new_states: Sequence[State],
        expected_version: int,
        allowed_from: Iterable[StateType | None],
    ) -> FlowRun | TaskRun:
        """One conditional write: ``run`` (already moved through ``new_states``) replaces the
        stored record only if the stored version is ``expected_version`` and its state type is
        in ``allowed_from``; the states are appended to the history in the same write.
        Raises ``StaleRunError`` carrying the current record otherwise."""

    def list_flow_runs(
        self,
        *,
        flow_name: str | None = None,
        deployment_id: str | None = None,
        state_types: Sequence[StateType] | None = None,
        scheduled_before: datetime | None = None,
        tags: Sequence[str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 200,
        cursor: str | None = None,
    ) -> list[FlowRun]:
        """The first page of flow runs matching the filters (see ``FlowRunQuery``)."""
        return self.page_flow_runs(FlowRunQuery(
            flow_name=flow_name, deployment_id=deployment_id, state_types=tuple(state_types or ()),
            scheduled_before=scheduled_before, tags=tuple(tags or ()), created_after=created_after,
            created_before=created_before, limit=limit, cursor=cursor,
        ))[0]

    @abstractmethod
    def page_flow_runs(self, query: FlowRunQuery) -> tuple[list[FlowRun], str | None]:
        """A page of flow runs and the cursor of the next one (None at the end)."""

    @abstractmethod
    def list_task_runs(self, flow_run_id: str) -> list[TaskRun]: ...

    def create_flow_run_idempotent(self, run: FlowRun, key: str) -> tuple[FlowRun, bool]:
        """Create ``run`` unless a run of its flow was already created with idempotency key
        ``key``: one atomic write of the key's marker (put-if-absent) and the run (put-if-absent).
        Returns ``(run, True)``, or ``(the earlier run, False)`` when the key was taken."""
        raise NotImplementedError

    def delete_flow_run(self, flow_run_id: str) -> None:
        """Remove the flow run, its task runs and its idempotency marker (``ObjectNotFound``
        when the run does not exist)."""
        raise NotImplementedError

    # -- logs -------------------------------------------------------------------------------
    @abstractmethod
    def write_logs(self, logs: Sequence[Log]) -> None: ...

    @abstractmethod
    def read_logs(
        self, run_id: str, *, cursor: str | None = None, limit: int = 1000, task_run_id: str | None = None,
        min_level: int = 0,
    ) -> LogPage: ...

    # -- cache ------------------------------------------------------------------------------
    @abstractmethod
    def read_cache(self, key: str) -> CacheEntry | None: ...

    @abstractmethod
    def write_cache(self, entry: CacheEntry) -> None: ...

    # -- blobs (results, large parameters) ----------------------------------------------------
    def result_signer(self) -> Signer | None:
        """What signs and verifies results written through this store: the stack's key when this
        process can read it (``stratoflow.storage.keys``), else None."""

        return local_signer(getattr(self, "settings", None))

    @abstractmethod
    def put_blob(self, key: str, data: bytes) -> str:
        """Store bytes; returns the URI (s3://bucket/key)."""

    @abstractmethod
    def get_blob(self, uri: str) -> bytes: ...
