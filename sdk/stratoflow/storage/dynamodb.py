"""The Store on DynamoDB (PynamoDB models) and S3.

Tables, from the access patterns:

``<prefix>-flow-runs``  hash ``id``. GSIs: ``by-deployment`` (deployment_id, expected_start),
    ``by-state`` (state_shard = "<TYPE>#<n>", state_time): runs by state and due scheduled runs,
    write-sharded so thousands of Running runs never share one partition,
    ``by-flow`` (flow_name, created), ``by-day`` (created_day, created): recent runs.
``<prefix>-task-runs``  hash ``id``. GSI ``by-flow-run`` (flow_run_id, created).
``<prefix>-logs``       hash ``run_id`` (the flow run), range ``sk`` = time#id (the line's id), TTL.
``<prefix>-objects``    hash ``pk``, range ``sk``: flows (``FLOW#<name>``), cache entries (TTL),
    idempotency markers (``IDEMPOTENCY#<hash>``) and the low-volume records of ``put_object``:
    pk ``OBJ#<kind>``, sk the record's key (deployments, work pools/queues, concurrency limits),
    so listing a kind is one Query, paged in key order.

A run item holds the record as JSON (``doc``), its state history as a list, and the few
attributes the indexes and conditions need. Writes use PynamoDB's VersionAttribute: every
transition is one PutItem of the whole item, conditioned on the version and the allowed
from-states (``commit_run`` says why a full write is safe).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import heapq
import itertools
import json
import threading
import uuid
import zlib
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pynamodb.attributes import (
    ListAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
    VersionAttribute,
)
from pynamodb.connection.base import BOTOCORE_EXCEPTIONS
from pynamodb.constants import ALL_OLD, ITEM, PUT_ITEM
from pynamodb.exceptions import DeleteError, DoesNotExist, GetError, PutError, TransactWriteError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from stratoflow.exceptions import (
    ObjectAlreadyExists,
    ObjectNotFound,
    ObjectVersionConflict,
    PayloadTooLarge,
    StaleRunError,
    StratoflowError,
)
from stratoflow.models import CacheEntry, Flow, FlowRun, Log, TaskRun
from stratoflow.orchestration import RunKind
from stratoflow.settings import Settings, get_settings
from stratoflow.states import State, StateType
from stratoflow.storage import aws as _aws
from stratoflow.storage.base import FlowRunQuery, LogPage, ObjectPage, Store, StoredObject
from stratoflow.storage.blobs import S3Blobs
from stratoflow.storage.outbox import TaskRunOutbox, recover

STATE_SHARDS = 4


def _iso(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if dt else None


def _shard(run_id: str) -> int:
    return zlib.crc32(run_id.encode()) % STATE_SHARDS


class _Models:
    """PynamoDB model classes bound to one set of table names and one connection.

    Built per settings (table names come from the environment), so the classes are created in
    a function rather than at import time.
    """

    def __init__(self, settings: Settings) -> None:
        cloud = _aws.embedded_cloud(settings)
        meta: dict[str, Any] = {"region": settings.region, "billing_mode": "PAY_PER_REQUEST",
                                "max_retry_attempts": 5}
        if cloud is not None:
            meta.update(_aws.EMBEDDED_CREDENTIALS)
        elif settings.aws_endpoint_url:
            meta["host"] = settings.aws_endpoint_url

        def _meta(table: str) -> type:
            return type("Meta", (), {"table_name": settings.table_name(table), **meta})

        def _index(name: str) -> type:
            return type("Meta", (), {"index_name": name, "projection": AllProjection()})

        class ByDeployment(GlobalSecondaryIndex["FlowRunItem"]):
            Meta = _index("by-deployment")
            deployment_id = UnicodeAttribute(hash_key=True)
            expected_start = UnicodeAttribute(range_key=True)

        class ByState(GlobalSecondaryIndex["FlowRunItem"]):
            Meta = _index("by-state")
            state_shard = UnicodeAttribute(hash_key=True)
            state_time = UnicodeAttribute(range_key=True)

        class ByFlow(GlobalSecondaryIndex["FlowRunItem"]):
            Meta = _index("by-flow")
            flow_name = UnicodeAttribute(hash_key=True)
            created = UnicodeAttribute(range_key=True)

        class ByDay(GlobalSecondaryIndex["FlowRunItem"]):
            Meta = _index("by-day")
            created_day = UnicodeAttribute(hash_key=True)
            created = UnicodeAttribute(range_key=True)

        class FlowRunItem(Model):
            Meta = _meta("flow-runs")  # type: ignore[assignment]
            id = UnicodeAttribute(hash_key=True)
            version = VersionAttribute()
            doc = UnicodeAttribute()
            history = ListAttribute(of=UnicodeAttribute, default=list)
            state_type = UnicodeAttribute(null=True)
            state_name = UnicodeAttribute(null=True)
            state_shard = UnicodeAttribute(null=True)
            state_time = UnicodeAttribute(null=True)
            flow_name = UnicodeAttribute()
            deployment_id = UnicodeAttribute(null=True)
            expected_start = UnicodeAttribute(null=True)
            created = UnicodeAttribute()
            created_day = UnicodeAttribute()
            by_deployment = ByDeployment()
            by_state = ByState()
            by_flow = ByFlow()
            by_day = ByDay()

        class ByFlowRun(GlobalSecondaryIndex["TaskRunItem"]):
            Meta = _index("by-flow-run")
            flow_run_id = UnicodeAttribute(hash_key=True)
            created = UnicodeAttribute(range_key=True)

        class TaskRunItem(Model):
            Meta = _meta("task-runs")  # type: ignore[assignment]
            id = UnicodeAttribute(hash_key=True)
            version = VersionAttribute()
            doc = UnicodeAttribute()
            history = ListAttribute(of=UnicodeAttribute, default=list)
            state_type = UnicodeAttribute(null=True)
            state_name = UnicodeAttribute(null=True)
            flow_run_id = UnicodeAttribute(null=True)
            created = UnicodeAttribute()
            by_flow_run = ByFlowRun()

        class LogItem(Model):
            Meta = _meta("logs")  # type: ignore[assignment]
            run_id = UnicodeAttribute(hash_key=True)
            sk = UnicodeAttribute(range_key=True)
            task_run_id = UnicodeAttribute(null=True)
            level = NumberAttribute()
            name = UnicodeAttribute()
            message = UnicodeAttribute()
            ts = UnicodeAttribute()
            seq = NumberAttribute(null=True)  # absent on lines written before ids (sk time#writer#seq)
            expires_at = TTLAttribute(null=True)

        class ObjectItem(Model):
            Meta = _meta("objects")  # type: ignore[assignment]
            pk = UnicodeAttribute(hash_key=True)
            sk = UnicodeAttribute(range_key=True)
            doc = UnicodeAttribute()
            expires_at = TTLAttribute(null=True)
            # Set by put_object (not a VersionAttribute: flows and cache entries are written
            # without one, and put_object states its own conditions).
            version = NumberAttribute(null=True)

        self.FlowRunItem = FlowRunItem
        self.TaskRunItem = TaskRunItem
        self.LogItem = LogItem
        self.ObjectItem = ObjectItem
        self.all: tuple[type[Model], ...] = (FlowRunItem, TaskRunItem, LogItem, ObjectItem)
        if cloud is not None:
            for model in self.all:
                cloud.attach(model._get_connection().connection.client)


class DynamoDBStore(S3Blobs, Store):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.models = _Models(settings)
        self._writer_id = uuid.uuid4().hex[:8]
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._outbox: TaskRunOutbox | None = None

    def start_outbox(self) -> None:
        """Group commit for finished task runs (see storage/outbox.py); recovers outboxes left
        by processes that died first."""
        directory = self.settings.home / "outbox" / self.settings.table_prefix
        recover(directory, self._write_task_batch)
        self._outbox = TaskRunOutbox(self._write_task_batch, directory, fsync=self.settings.embedded_fsync,
                                     interval=self.settings.group_commit_interval)

    def _write_task_batch(self, runs: list[TaskRun]) -> None:
        # Unconditional puts are right here: each id is new and was never written (see outbox.py).
        with self.models.TaskRunItem.batch_write() as batch:
            for run in runs:
                batch.save(self._item(RunKind.TASK, run, 1))

    def create_final_task_run(self, run: TaskRun) -> TaskRun:
        if self._outbox is None:
            return super().create_final_task_run(run)
        self._outbox.add(run)
        return run.model_copy(update={"version": 1})

    def flush(self) -> None:
        if self._outbox is not None:
            self._outbox.drain()

    def close(self) -> None:
        if self._outbox is not None:
            self._outbox.close()
            self._outbox = None

    # -- provisioning (embedded backend and `stratoflow dev`; SAM owns the tables on AWS) ---
    def ensure_resources(self) -> None:
        for model in self.models.all:
            if not model.exists():
                model.create_table(wait=True)
                if model in (self.models.LogItem, self.models.ObjectItem):
                    model._get_connection().connection.client.update_time_to_live(
                        TableName=model.Meta.table_name,  # type: ignore[attr-defined]
                        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"},
                    )
        s3 = _aws.client("s3", self.settings)
        try:
            s3.head_bucket(Bucket=self.settings.bucket)
        except Exception:
            kwargs: dict[str, Any] = {"Bucket": self.settings.bucket}
            if self.settings.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.settings.region}
            s3.create_bucket(**kwargs)

    # -- flows ------------------------------------------------------------------------------
    def ensure_flow(self, flow: Flow) -> Flow:
        """The stored flow of that name, created from ``flow`` if there is none. Read first: every
        run asks, and all but the first find it (one GetItem instead of a refused PutItem and a
        GetItem); the conditional put settles a race between two first runs. The first call of a
        process is also where a missing stack shows, so it says what to do."""
        try:
            return self.read_flow(flow.name)
        except ObjectNotFound:
            pass
        except GetError as exc:
            self._raise_if_no_table(exc)
            raise
        item = self.models.ObjectItem(f"FLOW#{flow.name}", "-", doc=flow.model_dump_json())
        try:
            item.save(condition=self.models.ObjectItem.pk.does_not_exist())
            return flow
        except PutError as exc:
            self._raise_if_no_table(exc)
            if not _conditional_failure(exc):
                raise
            return self.read_flow(flow.name)

    def _raise_if_no_table(self, exc: Exception) -> None:
        if getattr(exc, "cause_response_code", None) == "ResourceNotFoundException":
            where = self.settings.aws_endpoint_url or f"region {self.settings.region}"
            raise StratoflowError(
                f"DynamoDB table {self.settings.table_name('objects')!r} does not exist at {where}: deploy "
                "the stack (sam deploy) and set STRATOFLOW_TABLE_PREFIX from its outputs"
            ) from None

    def read_flow(self, name: str) -> Flow:
        try:
            item = self.models.ObjectItem.get(f"FLOW#{name}", "-")
        except DoesNotExist:
            raise ObjectNotFound("flow", name) from None
        return Flow.model_validate_json(item.doc)

    def list_flows(self, *, cursor: str | None = None, limit: int = 200) -> tuple[list[Flow], str | None]:
        # Flows are keyed FLOW#<name> (one partition each), so this is a filtered Scan: fine for
        # the few hundred flows a team has; it reads cache entries too, page by page.
        m = self.models.ObjectItem
        flows: list[Flow] = []
        for item in m.scan(m.pk.startswith("FLOW#"), consistent_read=True):
            flows.append(Flow.model_validate_json(item.doc))
        flows.sort(key=lambda f: f.name)
        # A Scan has no order across pages: read every page, then cut in name order.
        if cursor:
            flows = [f for f in flows if f.name > cursor]
        page = flows[:limit]
        return page, (page[-1].name if len(flows) > limit else None)

    # -- low-volume records ---------------------------------------------------------------
    @staticmethod
    def _object_pk(kind: str) -> str:
        return f"OBJ#{kind}"

    def _stored(self, kind: str, item: Any) -> StoredObject:
        return StoredObject(kind=kind, key=item.sk, doc=json.loads(item.doc), version=int(item.version or 1))

    def put_object(self, kind: str, key: str, doc: dict[str, Any], *, must_not_exist: bool = False,
                   expected_version: int | None = None) -> StoredObject:
        m = self.models.ObjectItem
        version = 1 if expected_version is None else expected_version + 1
        doc = {**doc, "version": version} if "version" in doc else doc
        item = m(self._object_pk(kind), key, doc=json.dumps(doc, separators=(",", ":"), default=str),
                 version=version)
        condition: Any = None
        if must_not_exist:
            condition = m.pk.does_not_exist()
        elif expected_version is not None:
            condition = m.version == expected_version
        try:
            item.save(condition=condition)
        except PutError as exc:
            if not _conditional_failure(exc):
                raise
            if must_not_exist:
                raise ObjectAlreadyExists(f"{kind} {key!r} already exists") from None
            self.get_object(kind, key)  # ObjectNotFound when it is gone
            raise ObjectVersionConflict(kind, key, expected_version) from None
        return StoredObject(kind=kind, key=key, doc=doc, version=version)

    def get_object(self, kind: str, key: str) -> StoredObject:
        try:
            item = self.models.ObjectItem.get(self._object_pk(kind), key, consistent_read=True)
        except DoesNotExist:
            raise ObjectNotFound(kind.replace("_", " "), key) from None
        return self._stored(kind, item)

    def list_objects(self, kind: str, *, prefix: str = "", cursor: str | None = None,
                     limit: int = 100) -> ObjectPage:
        m = self.models.ObjectItem
        condition: Any = None
        if prefix:
            lower = f"{cursor}\x00" if cursor and cursor >= prefix else prefix
            condition = m.sk.between(lower, prefix + "\U0010ffff")
        elif cursor:
            condition = m.sk > cursor
        items = list(m.query(self._object_pk(kind), condition, limit=limit + 1, consistent_read=True))
        objects = [self._stored(kind, it) for it in items[:limit]]
        more = len(items) > limit
        return ObjectPage(objects, objects[-1].key if more and objects else None)

    def delete_object(self, kind: str, key: str, *, expected_version: int | None = None) -> None:
        m = self.models.ObjectItem
        condition: Any = m.pk.exists()
        if expected_version is not None:
            condition = condition & (m.version == expected_version)
        try:
            m(self._object_pk(kind), key).delete(condition=condition)
        except DeleteError as exc:
            if not _conditional_failure(exc):
                raise
            self.get_object(kind, key)
            raise ObjectVersionConflict(kind, key, expected_version) from None

    # -- runs -------------------------------------------------------------------------------
    def _model(self, kind: RunKind) -> Any:
        return self.models.FlowRunItem if kind == RunKind.FLOW else self.models.TaskRunItem

    def _attrs(self, kind: RunKind, run: FlowRun | TaskRun) -> dict[str, Any]:
        state = run.state
        attrs: dict[str, Any] = {
            "doc": run.model_dump_json(exclude={"state_history", "version"}),
            "state_type": state.type.value if state else None,
            "state_name": state.name if state else None,
        }
        if kind == RunKind.FLOW:
            assert isinstance(run, FlowRun)
            attrs["state_shard"] = f"{state.type.value}#{_shard(run.id)}" if state else None
            attrs["state_time"] = _iso(
                (state.state_details.scheduled_time or state.timestamp) if state else None)
            attrs["expected_start"] = _iso(run.expected_start_time or run.created)
        return attrs

    def _item(self, kind: RunKind, run: FlowRun | TaskRun, version: int | None) -> Any:
        created = _iso(run.created) or ""
        attrs = self._attrs(kind, run)
        attrs = {k: v for k, v in attrs.items() if v is not None}
        if kind == RunKind.FLOW:
            assert isinstance(run, FlowRun)
            attrs.update(flow_name=run.flow_name, created_day=created[:10])
            if run.deployment_id:
                attrs["deployment_id"] = run.deployment_id
        else:
            assert isinstance(run, TaskRun)
            if run.flow_run_id:
                attrs["flow_run_id"] = run.flow_run_id
        item = self._model(kind)(run.id, history=[s.model_dump_json() for s in run.state_history],
                                 created=created, **attrs)
        if version is not None:
            item.version = version
        return item

    def create_run(self, kind: RunKind, run: FlowRun | TaskRun) -> FlowRun | TaskRun:
        item = self._item(kind, run, None)
        # PynamoDB adds "version does not exist" for a new item and sets version 1.
        try:
            item.save()
        except PutError as exc:
            _refuse_oversized(exc, kind, run)
            raise
        return run.model_copy(update={"version": item.version})

    def _from_item(self, kind: RunKind, item: Any) -> FlowRun | TaskRun:
        cls = FlowRun if kind == RunKind.FLOW else TaskRun
        data = json.loads(item.doc)
        data["state_history"] = [json.loads(s) for s in (item.history or [])]
        data["version"] = item.version
        return cls.model_validate(data)

    def read_run(self, kind: RunKind, run_id: str) -> FlowRun | TaskRun:
        if kind == RunKind.TASK:
            self.flush()  # read our own batched writes
        try:
            item = self._model(kind).get(run_id, consistent_read=True)
        except DoesNotExist:
            raise ObjectNotFound(f"{kind.value} run", run_id) from None
        return self._from_item(kind, item)

    def commit_run(
        self,
        kind: RunKind,
        run: FlowRun | TaskRun,
        new_states: Sequence[State],
        expected_version: int,
        allowed_from: Iterable[StateType | None],
    ) -> FlowRun | TaskRun:
        # One PutItem of the whole record (its history already holds ``new_states``). PynamoDB's
        # VersionAttribute adds "version = expected" and bumps it; we add the from-state clause.
        # Writing the full item rather than an UpdateItem is safe because every writer of a run
        # goes through this version check, and it is several times cheaper to apply.
        model = self._model(kind)
        item = self._item(kind, run, expected_version)
        allowed = [t.value for t in allowed_from if t is not None]
        condition = model.state_type.is_in(*allowed) if allowed else None
        if None in allowed_from:
            missing = model.state_type.does_not_exist()
            condition = missing if condition is None else (condition | missing)
        try:
            _put_returning_old_item(item, condition)
        except PutError as exc:
            _refuse_oversized(exc, kind, run)
            if not _conditional_failure(exc):
                raise
            old = _old_item(exc)
            current = self._from_item(kind, model.from_raw_data(old)) if old else self.read_run(kind, run.id)
            raise StaleRunError(current) from None
        return run.model_copy(update={"version": item.version})

    def page_flow_runs(self, query: FlowRunQuery) -> tuple[list[FlowRun], str | None]:
        """A page of flow runs and the cursor of the next page (None at the end).

        Order: by state, the time the run entered its state (newest first; oldest first for
        due runs, ``scheduled_before``); by deployment, expected start; otherwise creation time,
        newest first. Every index query is read lazily and merged, so a page costs about the
        items it returns plus those the filters drop.
        """
        q = query
        flow_name, deployment_id, state_types, tags = q.flow_name, q.deployment_id, q.state_types, q.tags
        scheduled_before, created_after, created_before = q.scheduled_before, q.created_after, q.created_before
        limit, cursor = q.limit, q.cursor
        m = self.models.FlowRunItem
        created_after, created_before, scheduled_before = (
            _utc(created_after), _utc(created_before), _utc(scheduled_before))
        ascending = scheduled_before is not None
        sort_attr: str
        streams: list[Iterator[Any]]
        if state_types:
            sort_attr = "state_time"
            upper = _iso(scheduled_before) if scheduled_before else None
            streams = [iter(m.by_state.query(f"{st.value}#{shard}", m.state_time <= upper if upper else None,
                                             scan_index_forward=ascending, page_size=100))
                       for st in state_types for shard in range(STATE_SHARDS)]
        elif deployment_id:
            sort_attr = "expected_start"
            streams = [iter(m.by_deployment.query(deployment_id, scan_index_forward=False, page_size=100))]
        elif flow_name:
            sort_attr = "created"
            streams = [iter(m.by_flow.query(flow_name, scan_index_forward=False, page_size=100))]
        else:
            sort_attr = "created"
            # One index partition per day, newest first, at most list_days_back days: the window
            # is clamped to what can hold runs (nothing before 1970, nothing after now).
            floor = datetime(1970, 1, 1, tzinfo=UTC)
            newest = max(min(created_before or datetime.now(UTC), datetime.now(UTC)), floor)
            days_back = self.settings.list_days_back
            if created_after is not None:
                days_back = min(days_back, max((newest.date() - max(created_after, floor).date()).days, 0))
            days = [(newest - timedelta(days=i)).strftime("%Y-%m-%d") for i in range(days_back + 1)
                    if (newest - floor).days >= i]
            streams = [itertools.chain.from_iterable(
                m.by_day.query(d, scan_index_forward=False, page_size=100) for d in days)]

        def key_of(item: Any) -> tuple[str, str]:
            return (getattr(item, sort_attr) or "", item.id)

        merged = heapq.merge(*streams, key=key_of, reverse=not ascending)
        after = _decode_cursor(cursor)
        wanted_tags = set(tags or ())
        lo, hi = _iso(created_after), _iso(created_before)
        runs: list[FlowRun] = []
        last_key: tuple[str, str] | None = None
        for item in merged:
            k = key_of(item)
            if after is not None and ((k >= after) if not ascending else (k <= after)):
                continue
            if (lo and item.created < lo) or (hi and item.created >= hi):
                continue
            run = self._from_item(RunKind.FLOW, item)
            assert isinstance(run, FlowRun)
            if (flow_name is not None and run.flow_name != flow_name) or (
                    deployment_id is not None and run.deployment_id != deployment_id) or (
                    wanted_tags and not wanted_tags <= set(run.tags)):
                continue
            runs.append(run)
            last_key = k
            if len(runs) >= limit:
                break
        else:
            return runs, None
        return runs, _encode_cursor(last_key)

    @staticmethod
    def idempotency_pk(flow_name: str, key: str) -> str:
        digest = hashlib.sha256(json.dumps([flow_name, key]).encode()).hexdigest()
        return f"IDEMPOTENCY#{digest}"

    def create_flow_run_idempotent(self, run: FlowRun, key: str) -> tuple[FlowRun, bool]:
        # cold start: loaded on the first idempotent create
        from pynamodb.transactions import TransactWrite

        m = self.models.ObjectItem
        pk = self.idempotency_pk(run.flow_name, key)
        run = run.model_copy(update={"idempotency_key": key})
        doc = {"flow_name": run.flow_name, "idempotency_key": key, "flow_run_id": run.id,
               "run": run.model_dump(mode="json")}
        marker = m(pk, "-", doc=json.dumps(doc, separators=(",", ":")))
        item = self._item(RunKind.FLOW, run, None)
        connection = self.models.FlowRunItem._get_connection().connection
        for _ in range(3):
            try:
                with TransactWrite(connection=connection) as transaction:
                    transaction.save(marker, condition=m.pk.does_not_exist())
                    # The run's VersionAttribute adds "version does not exist" (a new item).
                    transaction.save(item)
                return run.model_copy(update={"version": item.version}), True
            except TransactWriteError as exc:
                reasons = getattr(exc, "cancellation_reasons", None) or []
                first = reasons[0] if reasons else None
                if first is None or getattr(first, "code", None) != "ConditionalCheckFailed":
                    raise
            earlier = self._run_of_marker(pk)
            if earlier is not None:
                return earlier, False
            # The marker vanished again (its run was deleted meanwhile): try again.
        raise StratoflowError(f"concurrent creates with idempotency key {key!r} keep conflicting; retry later")

    def read_idempotent_run(self, flow_name: str, key: str) -> FlowRun | None:
        """The run an earlier create with this flow name and idempotency key made, if any."""
        return self._run_of_marker(self.idempotency_pk(flow_name, key))

    def _run_of_marker(self, pk: str) -> FlowRun | None:
        m = self.models.ObjectItem
        try:
            marker = m.get(pk, "-", consistent_read=True)
        except DoesNotExist:
            return None
        doc = json.loads(marker.doc)
        try:
            run = self.read_run(RunKind.FLOW, doc["flow_run_id"])
        except ObjectNotFound:
            # A marker written by the earlier two-write create whose run never landed: finish
            # that creation from the run the marker holds.
            pending = FlowRun.model_validate(doc["run"])
            try:
                run = self.create_run(RunKind.FLOW, pending)
            except PutError as exc:
                if not _conditional_failure(exc):
                    raise
                run = self.read_run(RunKind.FLOW, pending.id)
        assert isinstance(run, FlowRun)
        return run

    def delete_flow_run(self, flow_run_id: str) -> None:
        run = self.read_run(RunKind.FLOW, flow_run_id)
        assert isinstance(run, FlowRun)
        tasks = self.list_task_runs(flow_run_id)
        if tasks:
            with self.models.TaskRunItem.batch_write() as batch:
                for task in tasks:
                    batch.delete(self.models.TaskRunItem(task.id))  # BatchWrite deletes are unconditional
        if run.idempotency_key is not None:
            m = self.models.ObjectItem
            with contextlib.suppress(DeleteError):
                m(self.idempotency_pk(run.flow_name, run.idempotency_key), "-").delete(
                    condition=m.doc.contains(run.id))
        try:
            self.models.FlowRunItem(flow_run_id).delete(condition=self.models.FlowRunItem.id.exists(),
                                                        add_version_condition=False)
        except DeleteError as exc:
            if not _conditional_failure(exc):
                raise
            raise ObjectNotFound("flow run", flow_run_id) from None

    def list_task_runs(self, flow_run_id: str) -> list[TaskRun]:
        self.flush()
        m = self.models.TaskRunItem
        runs = [self._from_item(RunKind.TASK, it) for it in m.by_flow_run.query(flow_run_id)]
        return runs  # type: ignore[return-value]

    # -- logs -------------------------------------------------------------------------------
    def _next_seq(self) -> int:
        with self._seq_lock:
            self._seq += 1
            return self._seq

    def write_logs(self, logs: Sequence[Log]) -> None:
        """Put each line under ``sk = time#id``: writing a line again (a retried batch) replaces
        it instead of adding a copy. Lines without an id get one here (``writer-seq``), which
        cannot be retried safely. Every item is built before the first write, so a line that
        cannot be stored (a timestamp whose TTL overflows) fails the call with nothing written."""
        if not logs:
            return
        m = self.models.LogItem
        ttl = timedelta(days=self.settings.log_retention_days)
        # By key: BatchWriteItem refuses a request that names one key twice (after writing the
        # chunks before it); the last copy of a line wins.
        items: dict[tuple[str, str], Any] = {}
        for log in logs:
            run_id = log.flow_run_id or log.task_run_id or "orphan"
            seq = log.seq or self._next_seq()
            line_id = log.id or f"{self._writer_id}-{seq:010d}"
            at = log.timestamp if log.timestamp.tzinfo is not None else log.timestamp.replace(tzinfo=UTC)
            try:
                stamp, expires = _iso(at) or "", at + ttl
            except OverflowError:
                raise ValueError(f"log line {line_id}: timestamp {at.isoformat()} is out of range") from None
            items[(run_id, f"{stamp}#{line_id}")] = m(
                run_id, f"{stamp}#{line_id}", task_run_id=log.task_run_id, level=log.level, name=log.name,
                message=log.message, ts=stamp, seq=seq, expires_at=expires,
            )
        with m.batch_write() as batch:
            for item in items.values():
                batch.save(item)

    def read_logs(
        self, run_id: str, *, cursor: str | None = None, limit: int = 1000, task_run_id: str | None = None,
        min_level: int = 0,
    ) -> LogPage:
        m = self.models.LogItem
        cond = m.sk > cursor if cursor else None
        filt = None
        if task_run_id is not None:
            filt = m.task_run_id == task_run_id
        if min_level:
            lvl = m.level >= min_level
            filt = lvl if filt is None else (filt & lvl)
        logs: list[Log] = []
        last_sk = cursor
        result = m.query(run_id, cond, filter_condition=filt, limit=limit, consistent_read=True)
        for it in result:
            last_sk = it.sk
            line_id = it.sk.partition("#")[2]
            if it.seq is not None:
                seq = int(it.seq)
            else:  # written before ids: sk = time#writer#seq
                tail = line_id.rsplit("#", 1)[-1]
                seq = int(tail) if tail.isdigit() else 0
            logs.append(Log(flow_run_id=run_id, task_run_id=it.task_run_id, name=it.name, level=int(it.level),
                            message=it.message, timestamp=datetime.fromisoformat(it.ts), seq=seq, id=line_id))
            if len(logs) >= limit:
                break
        return LogPage(logs, last_sk)

    # -- cache ------------------------------------------------------------------------------
    def read_cache(self, key: str) -> CacheEntry | None:
        try:
            item = self.models.ObjectItem.get(f"CACHE#{key}", "-", consistent_read=True)
        except DoesNotExist:
            return None
        entry = CacheEntry.model_validate_json(item.doc)
        return entry if entry.is_valid() else None

    def write_cache(self, entry: CacheEntry) -> None:
        self.models.ObjectItem(f"CACHE#{entry.key}", "-", doc=entry.model_dump_json(),
                               expires_at=entry.expiration).save()


def _utc(value: datetime | None) -> datetime | None:
    """Naive datetimes from callers are taken as UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _encode_cursor(key: tuple[str, str] | None) -> str | None:
    if key is None:
        return None
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


def _decode_cursor(cursor: str | None) -> tuple[str, str] | None:
    """The position a page ended at. A cursor that does not decode is refused by name."""
    if not cursor:
        return None
    try:
        sort_value, run_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return str(sort_value), str(run_id)
    except (ValueError, TypeError):
        raise ValueError(f"cursor {cursor[:40]!r} is not one this API returned") from None


def _conditional_failure(exc: Exception) -> bool:
    return getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException"


def _refuse_oversized(exc: PutError, kind: RunKind, run: FlowRun | TaskRun) -> None:
    """A run whose record would pass DynamoDB's 400 KB item limit (its state history and details
    are in the item) is refused as too large, nothing written, rather than failing as a 5xx."""
    if (getattr(exc, "cause_response_code", None) == "ValidationException"
            and "Item size has exceeded" in str(getattr(exc, "cause_response_message", ""))):
        raise PayloadTooLarge(f"{kind.value} run {run.id}: its record (state history and state details) would "
                              "pass DynamoDB's 400 KB item limit; nothing was written") from None


def _put_returning_old_item(item: Any, condition: Any) -> None:
    """``item.save(condition)`` (with PynamoDB's version condition), asking DynamoDB to return the
    stored item when the condition fails (``ReturnValuesOnConditionCheckFailure=ALL_OLD``): a lost
    race then costs no second read. PynamoDB's ``save`` has no parameter for it, so this is its
    body with the one argument added."""
    args, kwargs = item._get_save_args(condition=condition)
    connection = type(item)._get_connection()
    operation = connection.connection.get_operation_kwargs(
        connection.table_name, args[0], range_key=kwargs.get("range_key"), key=ITEM,
        attributes=kwargs["attributes"], condition=kwargs.get("condition"),
        return_values_on_condition_failure=ALL_OLD)
    try:
        connection.connection.dispatch(PUT_ITEM, operation)
    except BOTOCORE_EXCEPTIONS as exc:
        raise PutError("Failed to put item", exc) from exc
    item.update_local_version_attribute()


def _old_item(exc: PutError) -> dict[str, Any] | None:
    """The item a failed conditional put found (None when DynamoDB did not return it). PynamoDB's
    own error keeps only the response's ``Error``; botocore's, which it was raised from, has ``Item``."""
    error: BaseException | None = exc.cause
    while error is not None:
        old = (getattr(error, "response", None) or {}).get("Item")
        if isinstance(old, dict) and old:
            return old
        error = error.__cause__ or error.__context__
    return None


_store: DynamoDBStore | None = None
_store_lock = threading.Lock()


@atexit.register
def _close_store() -> None:
    """Drain the outbox of the process's store on a normal exit."""
    if _store is not None:
        _store.close()
_store_key: tuple[Any, ...] | None = None


def get_dynamodb_store(settings: Settings | None = None) -> DynamoDBStore:
    """The process's store; rebuilt when the settings it was built from change (tests)."""
    global _store, _store_key
    settings = settings or get_settings()
    key = (settings.resolved_backend, settings.home, settings.table_prefix, settings.bucket,
           settings.region, settings.aws_endpoint_url)
    with _store_lock:
        if _store is None or _store_key != key:
            if _store is not None:
                _store.close()
            store = DynamoDBStore(settings)
            if settings.resolved_backend == "embedded":
                store.ensure_resources()
            if settings.resolved_task_commit == "group":
                store.start_outbox()
            _store, _store_key = store, key
        return _store
