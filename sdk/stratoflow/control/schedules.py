"""What schedules do to the run database: fire a slot, tick, react to a deployment change.

Over the ``Store`` interface and the other ``stratoflow.control`` modules; no boto3 here (EventBridge is
reached through a ``ScheduleProvisioner``, see ``eventbridge.py``).

* ``fire``: the run of one slot (what an EventBridge schedule's target does). Its idempotency
  key is ``schedule:{deployment}:{schedule}:{slot}``, so a slot fired twice makes one run.
* ``tick``: runs for every slot in ``(cursor, now + horizon]`` of the schedules EventBridge
  cannot express (or of every schedule, ``scope="all"``). The cursor is kept per schedule in the
  objects table and written with optimistic versions after the runs exist: a crash between the
  two re-creates nothing (same keys), a restart skips nothing.
* ``on_deployment_changed``: deletes the unstarted future runs a change made wrong (schedule
  removed, changed, deactivated, deployment paused) and provisions the deployment's schedules.

Slots are computed within a ``SlotBudget``: a schedule whose slots cannot be (one stored before
new schedules were checked for it) is skipped with an error logged, never waited for.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal, Protocol

from stratoflow.control.flow_runs import create_deployment_flow_run
from stratoflow.control.records import read_record
from stratoflow.exceptions import Conflict, ObjectAlreadyExists, ObjectNotFound, ObjectVersionConflict, Unprocessable
from stratoflow.models import Deployment, FlowRun, ObjectKind
from stratoflow.schedules.models import DeploymentSchedule
from stratoflow.schedules.slots import (
    ScheduleNotComputable,
    iter_slots,
    next_slots,
    parse_slot_key,
    slot_key,
    slot_key_prefix,
    utc,
)
from stratoflow.schedules.translate import translate
from stratoflow.schemas import DeploymentRunCreate, StateIn
from stratoflow.states import StateDetails, StateType
from stratoflow.storage.base import FlowRunQuery
from stratoflow.storage.eventbridge import EventBridgeProvisioner

if TYPE_CHECKING:
    from stratoflow.settings import Settings
    from stratoflow.storage.base import Store

logger = logging.getLogger("stratoflow.schedules")

AUTO_SCHEDULED_TAG = "auto-scheduled"
# A tick never goes further back than this: after an outage (or a missed resume) the slots
# older than this are skipped rather than fired all at once.
MAX_CATCHUP = timedelta(hours=1)
# Slots created per schedule per tick at most; the cursor stops at the last one and the next
# tick goes on from there.
MAX_SLOTS_PER_TICK = 1000
# An EventBridge invocation's slot is matched to the schedule's slot within this much.
FIRE_TOLERANCE = timedelta(seconds=59)
# The per-minute tick creates the runs of the next minute ahead, so they are on time; a deployment
# change does the same for its tick schedules at once (not at the next tick, up to a minute late).
TICK_HORIZON = timedelta(seconds=60)


class ScheduleProvisioner(Protocol):
    """Where a deployment's schedules are provisioned (EventBridge Scheduler on AWS and in moto)."""

    def sync_deployment(self, deployment: Deployment) -> None:
        """Make the provisioned schedules of ``deployment`` match it (create, update, delete)."""

    def remove_deployment(self, deployment_id: str) -> None:
        """Delete every provisioned schedule of the deployment."""


def default_provisioner(settings: Settings) -> ScheduleProvisioner:

    return EventBridgeProvisioner(settings)


def _now() -> datetime:
    return datetime.now(UTC)


def _find(deployment: Deployment | None, schedule_id: str) -> DeploymentSchedule | None:
    if deployment is None:
        return None
    return next((s for s in deployment.schedules if s.id == schedule_id), None)


def _effective(deployment: Deployment | None, schedule_id: str) -> DeploymentSchedule | None:
    """The schedule if it creates runs now: it exists, is active and its deployment is not paused."""
    found = _find(deployment, schedule_id)
    if found is None or not found.active or deployment is None or deployment.paused:
        return None
    return found


def fingerprint(schedule: DeploymentSchedule) -> str:
    """Changes when what the schedule fires changes (its expression or its parameters)."""
    body = json.dumps({"schedule": schedule.schedule.model_dump(mode="json"), "parameters": schedule.parameters},
                      sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:32]


def _read_deployment(store: Store, deployment_id: str) -> Deployment | None:
    try:
        return read_record(store, ObjectKind.DEPLOYMENT, Deployment, deployment_id)
    except ObjectNotFound:
        return None


def _create_run(store: Store, settings: Settings, deployment: Deployment, schedule: DeploymentSchedule,
                slot: datetime) -> tuple[FlowRun, bool] | None:


    request = DeploymentRunCreate(
        parameters=dict(schedule.parameters),
        state=StateIn(type=StateType.SCHEDULED, state_details=StateDetails(scheduled_time=slot)),
        idempotency_key=slot_key(deployment.id, schedule.id, slot),
        tags=[AUTO_SCHEDULED_TAG],
    )
    try:
        return create_deployment_flow_run(store, settings, deployment.id, request)
    except Conflict:  # paused between our read and the write
        return None


def snap_slot(schedule: DeploymentSchedule, slot: datetime,
              tolerance: timedelta = FIRE_TOLERANCE) -> datetime | None:
    """The schedule's slot nearest ``slot`` within ``tolerance``, else None."""
    slot = utc(slot)
    candidates = next_slots(schedule.schedule, slot - tolerance - timedelta(microseconds=1),
                            until=slot + tolerance, count=4)
    if not candidates:
        return None
    return min(candidates, key=lambda s: abs(s - slot))


def fire(store: Store, settings: Settings, deployment_id: str, schedule_id: str, slot: datetime) -> FlowRun | None:
    """The run of ``slot`` (created, or the one an earlier firing created); None, and nothing
    written, when the deployment is gone or paused, the schedule gone or inactive, or ``slot``
    is not one of the schedule's slots (a stale invocation of a changed schedule)."""
    deployment = _read_deployment(store, deployment_id)
    schedule = _effective(deployment, schedule_id)
    if deployment is None or schedule is None:
        logger.info("not firing %s/%s at %s: deployment or schedule gone, paused or inactive",
                    deployment_id, schedule_id, slot)
        return None
    try:
        exact = snap_slot(schedule, slot)
    except ScheduleNotComputable as exc:
        logger.error("not firing %s/%s at %s: %s", deployment_id, schedule_id, slot, exc)
        return None
    if exact is None:
        logger.warning("not firing %s/%s: %s is not a slot of the schedule", deployment_id, schedule_id, slot)
        return None
    made = _create_run(store, settings, deployment, schedule, exact)
    return made[0] if made is not None else None


# -- tick ---------------------------------------------------------------------------------------
def _deployments(store: Store) -> Iterator[Deployment]:

    cursor: str | None = None
    while True:
        page = store.list_objects(ObjectKind.DEPLOYMENT, cursor=cursor, limit=500)
        for obj in page.objects:
            yield Deployment.model_validate(obj.doc)
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def cursor_key(deployment_id: str, schedule_id: str) -> str:
    return f"{deployment_id}/{schedule_id}"


@dataclass(frozen=True)
class _Cursor:
    at: datetime
    fingerprint: str
    version: int | None  # None: not stored yet
    fresh: bool = False  # not stored yet for this definition: store it even if no slot came
    deployment_version: int | None = None  # the version whose change last restarted it


def _read_cursor(store: Store, deployment: Deployment, schedule: DeploymentSchedule, now: datetime) -> _Cursor:
    fp = fingerprint(schedule)
    try:
        stored = store.get_object(ObjectKind.SCHEDULE_CURSOR, cursor_key(deployment.id, schedule.id))
    except ObjectNotFound:
        stored = None
    if stored is not None and stored.doc.get("fingerprint") == fp:
        at = max(utc(datetime.fromisoformat(stored.doc["cursor"])), now - MAX_CATCHUP)
        return _Cursor(at, fp, stored.version, deployment_version=stored.doc.get("deployment_version"))
    # First tick of this schedule (or of its new definition): from when the deployment last
    # changed if that was recent (a slot between the change and this tick is not lost), else now.
    updated = utc(deployment.updated)
    start = updated if now - MAX_CATCHUP <= updated <= now else now
    return _Cursor(start, fp, stored.version if stored is not None else None, fresh=True)


def _write_cursor(store: Store, deployment: Deployment, schedule: DeploymentSchedule, cursor: _Cursor,
                  at: datetime) -> bool:

    doc = {"cursor": at.isoformat(), "fingerprint": cursor.fingerprint, "deployment_id": deployment.id,
           "schedule_id": schedule.id, "deployment_version": cursor.deployment_version}
    key = cursor_key(deployment.id, schedule.id)
    try:
        if cursor.version is None:
            store.put_object(ObjectKind.SCHEDULE_CURSOR, key, doc, must_not_exist=True)
        else:
            store.put_object(ObjectKind.SCHEDULE_CURSOR, key, doc, expected_version=cursor.version)
    except (ObjectAlreadyExists, ObjectVersionConflict, ObjectNotFound):
        # Another tick moved it (its runs have the same keys as ours): theirs stands.
        return False
    return True


def tick(store: Store, settings: Settings, now: datetime, horizon: timedelta = timedelta(0), *,
         scope: Literal["tick", "all"] = "tick") -> list[FlowRun]:
    """Create the runs of every slot in ``(cursor, now + horizon]`` of each active schedule of
    each unpaused deployment, and advance the cursors. ``scope="tick"`` (what the per-minute
    EventBridge tick does) covers only the schedules EventBridge cannot express, which have no
    schedule of their own; ``"all"`` covers every schedule. Returns the runs it created."""
    now = utc(now)
    created: list[FlowRun] = []
    for deployment in _deployments(store):
        created += _tick_deployment(store, settings, deployment, now, now + horizon, scope)
    return created


def _tick_deployment(store: Store, settings: Settings, deployment: Deployment, now: datetime, until: datetime,
                     scope: Literal["tick", "all"]) -> list[FlowRun]:

    created: list[FlowRun] = []
    if deployment.paused:
        return created
    for schedule in deployment.schedules:
        if not schedule.active:
            continue
        if scope == "tick" and translate(schedule.schedule).on_eventbridge:
            continue
        cursor = _read_cursor(store, deployment, schedule, now)
        try:
            slots = next_slots(schedule.schedule, cursor.at, until=until, count=MAX_SLOTS_PER_TICK)
        except ScheduleNotComputable as exc:  # stored before such schedules were refused
            logger.error("schedule %s of deployment %s skipped: %s", schedule.id, deployment.id, exc)
            continue
        reached = until if len(slots) < MAX_SLOTS_PER_TICK else slots[-1]
        done = cursor.at  # the last slot handled
        for slot in slots:
            try:
                made = _create_run(store, settings, deployment, schedule, slot)
            except Unprocessable as exc:  # e.g. its parameters break the deployment's schema
                logger.error("schedule %s of deployment %s: slot %s skipped: %s", schedule.id, deployment.id,
                             slot.isoformat(), exc)
                done = slot
                continue
            except Exception:
                logger.exception("schedule %s of deployment %s: stopping at slot %s", schedule.id,
                                 deployment.id, slot.isoformat())
                reached = done
                break
            if made is None:  # the deployment was paused meanwhile
                reached = done
                break
            done = slot
            if made[1]:
                created.append(made[0])
        if reached > cursor.at or cursor.fresh:
            _write_cursor(store, deployment, schedule, cursor, reached)
    return created


# -- changes ------------------------------------------------------------------------------------
def _future_runs(store: Store, deployment_id: str, now: datetime) -> Iterator[FlowRun]:
    """Unstarted (Scheduled) auto-scheduled runs of the deployment expected after ``now``."""

    cursor: str | None = None
    while True:
        runs, cursor = store.page_flow_runs(FlowRunQuery(deployment_id=deployment_id, tags=(AUTO_SCHEDULED_TAG,),
                                                         limit=200, cursor=cursor))
        for run in runs:  # newest expected start first
            start = run.expected_start_time
            if start is not None and utc(start) <= now:
                return
            if run.state_type == StateType.SCHEDULED:
                yield run
        if cursor is None:
            return


def _still_valid(run: FlowRun, deployment: Deployment, schedule: DeploymentSchedule | None) -> bool:
    """Whether ``run`` is what ``schedule`` (of ``deployment``) would create now."""
    if schedule is None or run.idempotency_key is None or run.parameters_ref is not None:
        return False
    parsed = parse_slot_key(run.idempotency_key)
    if parsed is None:
        return False
    slot = parsed[2]
    try:
        if next(iter_slots(schedule.schedule, slot - timedelta(microseconds=1)), None) != slot:
            return False
    except ScheduleNotComputable:  # cannot tell: keep the run rather than delete a good one
        return True
    return run.parameters == {**deployment.parameters, **schedule.parameters}


def delete_stale_runs(store: Store, deployment: Deployment, now: datetime | None = None,
                      schedule_ids: Iterable[str] | None = None) -> list[str]:
    """Delete the unstarted future runs of the deployment's schedules that its current
    definition would not create (schedule removed, changed, inactive, deployment paused).
    Returns the deleted run ids."""
    now = utc(now or _now())
    wanted = set(schedule_ids) if schedule_ids is not None else None
    deleted: list[str] = []
    for run in list(_future_runs(store, deployment.id, now)):
        parsed = parse_slot_key(run.idempotency_key or "")
        if parsed is None or parsed[0] != deployment.id:
            continue
        schedule_id = parsed[1]
        if wanted is not None and schedule_id not in wanted:
            continue
        if not run.idempotency_key or not run.idempotency_key.startswith(slot_key_prefix(deployment.id, schedule_id)):
            continue
        if _still_valid(run, deployment, _effective(deployment, schedule_id)):
            continue
        try:
            store.delete_flow_run(run.id)
        except ObjectNotFound:
            continue
        deleted.append(run.id)
    return deleted


def _restart_cursor(store: Store, deployment: Deployment, schedule: DeploymentSchedule, now: datetime) -> None:
    """Start the schedule's tick cursor at ``now``, once per deployment version (a second call
    for the same change leaves the cursor where the tick has moved it)."""

    key = cursor_key(deployment.id, schedule.id)
    doc = {"cursor": now.isoformat(), "fingerprint": fingerprint(schedule), "deployment_id": deployment.id,
           "schedule_id": schedule.id, "deployment_version": deployment.version}
    for _ in range(5):
        try:
            stored = store.get_object(ObjectKind.SCHEDULE_CURSOR, key)
        except ObjectNotFound:
            try:
                store.put_object(ObjectKind.SCHEDULE_CURSOR, key, doc, must_not_exist=True)
                return
            except ObjectAlreadyExists:
                continue
        if stored.doc.get("deployment_version") == deployment.version:
            return
        try:
            store.put_object(ObjectKind.SCHEDULE_CURSOR, key, doc, expected_version=stored.version)
            return
        except (ObjectVersionConflict, ObjectNotFound):
            continue


def on_deployment_changed(store: Store, settings: Settings, before: Deployment | None, after: Deployment, *,
                          provisioner: ScheduleProvisioner | None = None, now: datetime | None = None) -> None:
    """Bring runs, tick cursors and provisioned schedules in line with ``after`` (called after the
    write). Safe to call twice: it deletes only runs ``after`` would not create, restarts the tick
    cursor of a schedule that started or changed at ``now`` once per deployment version (so the
    tick fires neither the slots it was paused for nor those of its old definition), and
    provisioning converges."""
    now = utc(now or _now())
    ids = {s.id for s in after.schedules} | ({s.id for s in before.schedules} if before is not None else set())
    delete_stale_runs(store, after, now, ids)
    restarted = False
    for schedule_id in ids:
        old, new = _effective(before, schedule_id), _effective(after, schedule_id)
        if old is not None and new is not None and fingerprint(old) == fingerprint(new):
            continue
        if new is None:  # stopped: no cursor until it starts again
            with contextlib.suppress(ObjectNotFound):
                store.delete_object(ObjectKind.SCHEDULE_CURSOR, cursor_key(after.id, schedule_id))
            continue
        # Started or changed: the tick fires it from now on (not the slots it was off or different).
        _restart_cursor(store, after, new, now)
        restarted = True
    (provisioner or default_provisioner(settings)).sync_deployment(after)
    if restarted and not after.paused:
        # The tick's schedules get their next minute of runs now, as the tick would have made
        # them ahead: a schedule every few seconds starts on time, not at the next tick.
        _tick_deployment(store, settings, after, now, now + TICK_HORIZON, "tick")


def reconcile(store: Store, settings: Settings, provisioner: ScheduleProvisioner | None = None) -> int:
    """Provision every deployment's schedules again (the embedded cloud does not keep them across
    processes); returns how many deployments were synced."""
    target = provisioner or default_provisioner(settings)
    count = 0
    for deployment in _deployments(store):
        target.sync_deployment(deployment)
        count += 1
    return count


def upcoming(deployment: Deployment, now: datetime | None = None, count: int = 10) -> list[tuple[str, datetime]]:
    """The next ``count`` slots of each active schedule, merged in time order, as
    ``(schedule_id, slot)``; empty for a paused deployment."""
    now = utc(now or _now())
    if deployment.paused:
        return []
    out: list[tuple[str, datetime]] = []
    for schedule in deployment.schedules:
        if schedule.active:
            try:
                out.extend((schedule.id, slot) for slot in next_slots(schedule.schedule, now, count=count))
            except ScheduleNotComputable as exc:
                logger.warning("schedule %s of deployment %s: no upcoming slots: %s", schedule.id, deployment.id, exc)
    out.sort(key=lambda item: (item[1], item[0]))
    return out
