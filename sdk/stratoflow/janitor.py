"""The janitor: a periodic sweep that repairs what a dead executor or a missed event leaves behind.

``tick`` runs five small steps, each repairing one kind of failure (see their docstrings):

1. ``mark_late``: Scheduled runs past their time become ``Late`` (nobody has picked them up);
2. ``crash_lost_runs``: Running/Pending deployment runs whose executor stopped beating become
   ``Crashed`` (retried through ``RetryFailedFlows`` and sent again when retries allow), with
   their unfinished task runs and subflow runs;
3. ``finish_cancellations``: Cancelling runs nobody is left to finish become ``Cancelled``;
4. ``release_dead_slots``: concurrency slots held by finished, deleted or dead runs are given back;
5. ``send_due_runs``: Scheduled runs that came within SQS's 15-minute delay are sent.

Every run write goes through the transition gateway's ``propose`` and is conditional on the exact version of the run
the decision was made on: if anyone wrote the run in between (an executor claimed it, a second
janitor got there first), the write is dropped and the run is left for the next tick to look at
again. Slot releases are conditional writes too. So two janitors at once do no harm, and a tick
can be cut short anywhere. Work per tick is bounded (``limit`` runs per step, scanned round-robin
with a cursor kept in the objects table), and one bad record is logged and skipped, never fatal.

No boto3 here: the janitor sees the ``Store`` interface and the dispatch module.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from stratoflow.control import transitions
from stratoflow.control.dispatch import dispatch_due_runs, dispatch_run
from stratoflow.exceptions import ObjectAlreadyExists, ObjectNotFound, ObjectVersionConflict, StaleRunError
from stratoflow.models import FlowRun, ObjectKind, TaskRun
from stratoflow.orchestration import RunKind
from stratoflow.states import LATE_AFTER, Cancelled, Crashed, Late, State, StateType
from stratoflow.states import now as utc_now
from stratoflow.storage import slots as concurrency
from stratoflow.storage.base import FlowRunQuery

if TYPE_CHECKING:
    from stratoflow.settings import Settings
    from stratoflow.storage.base import Store

logger = logging.getLogger("stratoflow.janitor")

# A run whose executor has shown no sign of life (heartbeat or state change) for this long is
# lost. None: derived from the settings, HEARTBEAT_BEATS missed beats and at least the minimum.
HEARTBEAT_TIMEOUT: timedelta | None = None
HEARTBEAT_BEATS = 3
MIN_HEARTBEAT_TIMEOUT = timedelta(seconds=30)
# Runs looked at per step and tick, and slot holders per tick.
LIMIT = 1000
PAGE = 200
# Objects-table kinds the janitor keeps: scan cursors, and holders of a slot first seen idle.
# Subflow runs crashed along with their parent, at most this deep.
MAX_SUBFLOW_DEPTH = 10

ACTIVE = frozenset({StateType.PENDING, StateType.RUNNING})


def heartbeat_timeout(settings: Settings) -> timedelta:
    """``HEARTBEAT_TIMEOUT``, or ``HEARTBEAT_BEATS`` x the heartbeat interval (at least 30 s)."""
    if HEARTBEAT_TIMEOUT is not None:
        return HEARTBEAT_TIMEOUT
    return max(timedelta(seconds=HEARTBEAT_BEATS * settings.heartbeat_interval), MIN_HEARTBEAT_TIMEOUT)


@dataclass
class JanitorReport:
    """What one tick did: the ids it touched, per step, and the records it could not handle."""

    at: str = ""
    late: list[str] = field(default_factory=list)
    crashed: list[str] = field(default_factory=list)        # flow runs found lost (Crashed or AwaitingRetry)
    retried: list[str] = field(default_factory=list)        # of those, left Scheduled (AwaitingRetry) and sent again
    crashed_task_runs: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    cancelled_task_runs: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)       # "<holder>@<limit label>"
    dispatched: int = 0
    errors: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"late": len(self.late), "crashed": len(self.crashed), "retried": len(self.retried),
                "crashed_task_runs": len(self.crashed_task_runs), "cancelled": len(self.cancelled),
                "cancelled_task_runs": len(self.cancelled_task_runs),
                "released": len(self.released), "dispatched": self.dispatched, "errors": len(self.errors)}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "counts": self.counts()}


# -- conditional writes --------------------------------------------------------------------------------
def _propose(store: Store, kind: RunKind, run: FlowRun | TaskRun, proposed: State) -> FlowRun | TaskRun | None:
    """The gateway's ``propose`` on exactly this version of ``run``: the run as moved (by the
    policy's answer, e.g. AwaitingRetry for a Crashed proposal), or None when the policy refused it
    or the run changed meanwhile. A lost race is not retried against the fresh run: that would apply
    the janitor's stale decision to a run someone else just moved (e.g. mark a claimed run Late)."""
    try:
        result, moved = transitions.propose(store, kind, run, proposed, retry_lost_races=False)
    except StaleRunError as exc:
        logger.info("%s run %s changed meanwhile (now %r): left alone", kind.value, run.id, exc.current.state)
        return None
    if not result.writes:
        logger.info("%s run %s: %r not recorded: %s", kind.value, run.id, proposed, result.reason)
        return None
    return moved


# -- shared helpers ---------------------------------------------------------------------------------------
def _scan(store: Store, step: str, query: FlowRunQuery, limit: int, report: JanitorReport) -> Iterator[FlowRun]:
    """Up to ``limit`` runs of ``query``, resuming where the previous tick of ``step`` stopped (a
    cursor in the objects table), so a long backlog is covered round-robin over ticks instead of
    the same first runs being looked at every time."""
    try:
        stored = store.get_object(ObjectKind.JANITOR_CURSOR, step)
        cursor: str | None = stored.doc.get("cursor")
    except ObjectNotFound:
        cursor = None
    seen = 0
    while seen < limit:
        try:
            runs, next_cursor = store.page_flow_runs(FlowRunQuery(
                state_types=query.state_types, scheduled_before=query.scheduled_before,
                limit=min(PAGE, limit - seen), cursor=cursor))
        except Exception as exc:
            if cursor is None:
                raise
            # A cursor from an older index layout, say: start again from the beginning.
            logger.warning("janitor %s: cursor unusable (%s); starting over", step, exc)
            report.errors.append(f"{step}: cursor: {type(exc).__name__}: {exc}")
            cursor = None
            continue
        seen += len(runs)
        yield from runs
        cursor = next_cursor
        if cursor is None:
            break
    try:
        store.put_object(ObjectKind.JANITOR_CURSOR, step, {"cursor": cursor})  # None: next tick starts at the beginning
    except Exception as exc:  # only costs fairness, never correctness
        logger.warning("janitor %s: could not save its cursor: %s", step, exc)


def _each(step: str, report: JanitorReport, item_id: str, action: Callable[[], None]) -> None:
    """Run ``action`` for one record; an error is logged and counted, never raised."""
    try:
        action()
    except Exception as exc:
        logger.exception("janitor %s: %s failed", step, item_id)
        report.errors.append(f"{step}: {item_id}: {type(exc).__name__}: {exc}")


def last_heartbeat(store: Store, flow_run_id: str) -> datetime | None:
    """When the run's executor last reported, or None when it never did."""
    try:
        doc = store.get_object(ObjectKind.HEARTBEAT, flow_run_id).doc
    except ObjectNotFound:
        return None
    return datetime.fromisoformat(str(doc["at"]))


def _last_sign_of_life(store: Store, run: FlowRun | TaskRun, flow_run_id: str) -> tuple[datetime, datetime | None]:
    """The later of the flow run's last heartbeat and the time ``run`` entered its state (a run that
    just changed state is alive even if its beat is old); and the heartbeat alone."""
    beat = last_heartbeat(store, flow_run_id)
    entered = run.state.timestamp if run.state is not None else run.updated
    return (max(beat, entered) if beat is not None else entered), beat


def _is_lost(store: Store, run: FlowRun, now: datetime, timeout: timedelta) -> tuple[bool, datetime | None]:
    alive_at, beat = _last_sign_of_life(store, run, run.id)
    return alive_at < now - timeout, beat


# -- the steps -----------------------------------------------------------------------------------------
def mark_late(store: Store, settings: Settings, *, now: datetime | None = None, late_after: timedelta = LATE_AFTER,
              limit: int = LIMIT, report: JanitorReport | None = None) -> list[str]:
    """Repairs: a run nobody picked up at its time (pool paused, no executor or worker, a full
    limit) looking as if all were well. Scheduled runs (state name ``Scheduled``) more than
    ``late_after`` past their scheduled time become ``Late`` (same scheduled time, so the dispatch
    marker and the executor's claim are unaffected). A run claimed meanwhile is left alone."""
    now = now or utc_now()
    report = report if report is not None else JanitorReport()
    marked: list[str] = []
    query = FlowRunQuery(state_types=(StateType.SCHEDULED,), scheduled_before=now - late_after)
    for run in _scan(store, "mark_late", query, limit, report):
        state = run.state
        if state is None or state.name != "Scheduled":
            continue
        when = state.state_details.scheduled_time
        if when is None or when >= now - late_after:
            continue

        def late(run: FlowRun = run, when: datetime = when) -> None:
            if _propose(store, RunKind.FLOW, run, Late(scheduled_time=when)) is not None:
                marked.append(run.id)

        _each("mark_late", report, run.id, late)
    report.late.extend(marked)
    return marked


def _crash_message(beat: datetime | None) -> str:
    last = f"last at {beat.isoformat()}" if beat is not None else "none was ever recorded"
    return (f"the executor stopped reporting heartbeats ({last}): it was lost (Lambda timeout, out of memory, "
            "killed)")


def _finish_children(store: Store, flow_run_id: str, final: Callable[[], State], report: JanitorReport,
                     done: list[str], depth: int = 0) -> None:
    """Move the unfinished task runs of a lost or cancelled flow run, and the subflow runs they
    stand for, to ``final()`` (Crashed, Cancelled): they stopped with their executor, and nothing
    else will ever finish them. Task run ids moved go to ``done``, subflow run ids to the report's
    ``crashed`` or ``cancelled``."""
    for task_run in store.list_task_runs(flow_run_id):
        if task_run.state is None or task_run.state.is_final():
            continue

        def finish(task_run: TaskRun = task_run) -> None:
            if _propose(store, RunKind.TASK, task_run, final()) is not None:
                done.append(task_run.id)
            child_id = task_run.child_flow_run_id
            if child_id is None or depth >= MAX_SUBFLOW_DEPTH:
                return
            try:
                child = store.read_run(RunKind.FLOW, child_id)
            except ObjectNotFound:
                return
            if child.state is None or child.state.is_final():
                return
            moved = _propose(store, RunKind.FLOW, child, final())
            if moved is not None and moved.state is not None:
                (report.cancelled if moved.state.type == StateType.CANCELLED else report.crashed).append(child.id)
            _finish_children(store, child.id, final, report, done, depth + 1)

        _each("children", report, task_run.id, finish)


def crash_lost_runs(store: Store, settings: Settings, *, now: datetime | None = None,
                    timeout: timedelta | None = None, limit: int = LIMIT,
                    report: JanitorReport | None = None) -> list[str]:
    """Repairs: a run whose executor died without a word (Lambda timeout, out of memory, the
    process killed) staying Running forever, and never retried. A Running deployment run (or
    one Pending longer than ``timeout``) whose executor showed no sign of life (heartbeat, or
    the state change itself) for ``timeout`` is proposed ``Crashed``; ``RetryFailedFlows`` turns
    that into AwaitingRetry when retries allow, and the run is then sent to its queue again. Its
    unfinished task runs (and subflow runs) become Crashed too.

    Only deployment runs are judged: their executor beats. A flow called in a user's process has
    no heartbeat, and no way for the janitor to tell whether it is alive."""

    now = now or utc_now()
    timeout = timeout or heartbeat_timeout(settings)
    report = report if report is not None else JanitorReport()
    crashed: list[str] = []
    # By state, oldest first: Running states index their start; Pending ones their scheduled time
    # (at or before their start), so both bounds only drop runs too young to be lost.
    query = FlowRunQuery(state_types=(StateType.RUNNING, StateType.PENDING), scheduled_before=now - timeout)
    for run in _scan(store, "crash_lost_runs", query, limit, report):
        if run.deployment_id is None or run.state is None or run.state.type not in ACTIVE:
            continue

        def crash(run: FlowRun = run) -> None:
            lost, beat = _is_lost(store, run, now, timeout)
            if not lost:
                return
            message = _crash_message(beat)
            moved = _propose(store, RunKind.FLOW, run, Crashed(message=message))
            if moved is None:
                return
            assert isinstance(moved, FlowRun)
            crashed.append(run.id)
            logger.warning("flow run %s lost its executor: now %r", run.id, moved.state)
            _finish_children(store, run.id, lambda: Crashed(message=message), report, report.crashed_task_runs)
            if moved.state is not None and moved.state.type == StateType.SCHEDULED:
                dispatch_run(store, settings, moved, at=now, force=True)
                report.retried.append(run.id)

        _each("crash_lost_runs", report, run.id, crash)
    report.crashed.extend(crashed)
    return crashed


def finish_cancellations(store: Store, settings: Settings, *, now: datetime | None = None,
                         timeout: timedelta | None = None, limit: int = LIMIT,
                         report: JanitorReport | None = None) -> list[str]:
    """Repairs: a run stuck in Cancelling because nobody is left to finish the cancellation. A
    deployment run whose executor stopped (no heartbeat or state change for ``timeout``: it died,
    or the run was cancelled before any executor started it), or a run without a deployment
    Cancelling for longer than ``timeout`` (its process would have finished it by then), becomes
    ``Cancelled``."""
    now = now or utc_now()
    timeout = timeout or heartbeat_timeout(settings)
    report = report if report is not None else JanitorReport()
    cancelled: list[str] = []
    query = FlowRunQuery(state_types=(StateType.CANCELLING,), scheduled_before=now - timeout)
    for run in _scan(store, "finish_cancellations", query, limit, report):
        if run.state is None or run.state.type != StateType.CANCELLING:
            continue

        def cancel(run: FlowRun = run) -> None:
            assert run.state is not None
            if run.deployment_id is None:
                if run.state.timestamp >= now - timeout:
                    return
                reason = "the run has no deployment, and its process did not finish the cancellation"
            else:
                lost, beat = _is_lost(store, run, now, timeout)
                if not lost:
                    return
                reason = (f"its executor stopped (last heartbeat at {beat.isoformat()})" if beat is not None
                          else "no executor was running it")
            message = f"cancelled by the janitor: {reason}"
            if _propose(store, RunKind.FLOW, run, Cancelled(message=message)) is not None:
                cancelled.append(run.id)
                _finish_children(store, run.id, lambda: Cancelled(message=message), report,
                                 report.cancelled_task_runs)

        _each("finish_cancellations", report, run.id, cancel)
    report.cancelled.extend(cancelled)
    return cancelled


def _holder_verdict(store: Store, limit: concurrency.Limit, holder: str, now: datetime,
                    timeout: timedelta) -> tuple[str, str | None]:
    """("release" | "idle" | "keep", the id of the state seen) for one slot holder.

    ``idle``: the holder is neither finished nor visibly running (Scheduled, Paused, Cancelling,
    with no live executor). That is also how a run looks in the instant between an executor
    taking its slot and claiming it, so an idle holder is released only once it has stayed idle
    (the same state) for ``timeout``."""
    kind = RunKind.FLOW if limit.kind == ObjectKind.SLOTS else RunKind.TASK
    try:
        run = store.read_run(kind, holder)
    except ObjectNotFound:
        return "release", None
    if run.state is None:
        return "idle", None
    if run.state.is_final():
        return "release", run.state.id
    if isinstance(run, TaskRun):
        if run.flow_run_id is None:
            return "keep", run.state.id
        try:
            flow_run = store.read_run(RunKind.FLOW, run.flow_run_id)
        except ObjectNotFound:
            return "release", run.state.id
        assert isinstance(flow_run, FlowRun)
        if flow_run.state is None or flow_run.state.is_final():
            return "release", run.state.id
    else:
        assert isinstance(run, FlowRun)
        flow_run = run
    if flow_run.deployment_id is None:
        # A flow run in a user's process: no heartbeat to judge it by.
        return ("keep" if run.state.type in ACTIVE else "idle"), run.state.id
    alive_at, _ = _last_sign_of_life(store, run, flow_run.id)
    if alive_at >= now - timeout:
        return "keep", run.state.id
    return ("release" if run.state.type in ACTIVE else "idle"), run.state.id


def release_dead_slots(store: Store, settings: Settings, *, now: datetime | None = None,
                       timeout: timedelta | None = None, limit: int = LIMIT,
                       report: JanitorReport | None = None) -> list[str]:
    """Repairs: a concurrency slot leaked by a run that ended without giving it back (its
    executor died, a release failed), which would shrink the limit for good. For every
    deployment/queue/pool limit (holders are flow runs) and tag limit (holders are task runs),
    a holder that is deleted or finished, or Pending/Running with its executor silent for
    ``timeout``, is released; one that stays idle (Scheduled, Paused, Cancelling, no live
    executor) for ``timeout`` is released too. Each release is a conditional write."""
    now = now or utc_now()
    timeout = timeout or heartbeat_timeout(settings)
    report = report if report is not None else JanitorReport()
    released: list[str] = []
    looked = 0
    suspects_kept: set[str] = set()
    for lim, holders in concurrency.all_limits(store):
        for holder in holders:
            if looked >= limit:
                break
            looked += 1
            key = f"{lim.kind}:{lim.key}:{holder}"

            def check(lim: concurrency.Limit = lim, holder: str = holder, key: str = key) -> None:
                verdict, state_id = _holder_verdict(store, lim, holder, now, timeout)
                if verdict == "idle" and not _idle_long_enough(store, key, state_id, now, timeout):
                    suspects_kept.add(key)
                    return
                if verdict == "keep":
                    return
                if concurrency.release(store, lim, holder):
                    released.append(f"{holder}@{lim.label}")
                    logger.warning("released the slot of %s in %s (%s)", holder, lim.label, verdict)

            _each("release_dead_slots", report, key, check)
    _forget_suspects(store, suspects_kept, report)
    report.released.extend(released)
    return released


def _idle_long_enough(store: Store, key: str, state_id: str | None, now: datetime, timeout: timedelta) -> bool:
    """Whether this holder was first seen idle, in this same state, at least ``timeout`` ago;
    records the first sighting otherwise."""
    try:
        seen = store.get_object(ObjectKind.JANITOR_SUSPECT, key)
        if seen.doc.get("state_id") == state_id:
            return datetime.fromisoformat(str(seen.doc["since"])) <= now - timeout
        store.put_object(ObjectKind.JANITOR_SUSPECT, key, {"since": now.isoformat(), "state_id": state_id},
                         expected_version=seen.version)
    except ObjectNotFound:
        with contextlib.suppress(ObjectAlreadyExists):  # another janitor recorded it first
            store.put_object(ObjectKind.JANITOR_SUSPECT, key, {"since": now.isoformat(), "state_id": state_id},
                             must_not_exist=True)
    except ObjectVersionConflict:
        pass
    return False


def _forget_suspects(store: Store, keep: set[str], report: JanitorReport) -> None:
    """Drop idle sightings of holders that are no longer idle (released, running again)."""
    cursor: str | None = None
    for _ in range(10):
        page = store.list_objects(ObjectKind.JANITOR_SUSPECT, cursor=cursor, limit=PAGE)
        for obj in page.objects:
            if obj.key in keep:
                continue
            try:
                store.delete_object(ObjectKind.JANITOR_SUSPECT, obj.key, expected_version=obj.version)
            except (ObjectNotFound, ObjectVersionConflict):
                continue
            except Exception as exc:
                report.errors.append(f"release_dead_slots: {obj.key}: {type(exc).__name__}: {exc}")
        cursor = page.next_cursor
        if cursor is None:
            break


def send_due_runs(store: Store, settings: Settings, *, now: datetime | None = None, limit: int = LIMIT,
                  report: JanitorReport | None = None) -> int:
    """Repairs: a run whose time comes later than SQS's 15-minute delay limit (a long retry delay,
    AwaitingRetry or AwaitingConcurrencySlot far ahead, a run scheduled for tomorrow) never being
    sent, and a send lost between writing the run and the SQS call. Scheduled runs of a work pool
    due within 15 minutes and not sent yet are sent (``dispatch_due_runs``)."""

    report = report if report is not None else JanitorReport()
    sent = dispatch_due_runs(store, settings, at=now or utc_now(), limit=limit)
    report.dispatched += sent
    return sent


STEPS = ("mark_late", "crash_lost_runs", "finish_cancellations", "release_dead_slots", "send_due_runs")


def tick(store: Store, settings: Settings, *, now: datetime | None = None, late_after: timedelta = LATE_AFTER,
         timeout: timedelta | None = None, limit: int = LIMIT) -> JanitorReport:
    """One sweep: every step in order (crashes before slots, so a lost run's slot goes in the same
    tick; sends last, so runs retried here go out now). A failing step is logged and the next
    one runs; the report says what was done and what failed."""
    now = now or utc_now()
    report = JanitorReport(at=now.isoformat())
    steps: list[tuple[str, Callable[[], object]]] = [
        ("mark_late", lambda: mark_late(store, settings, now=now, late_after=late_after, limit=limit,
                                        report=report)),
        ("crash_lost_runs", lambda: crash_lost_runs(store, settings, now=now, timeout=timeout, limit=limit,
                                                    report=report)),
        ("finish_cancellations", lambda: finish_cancellations(store, settings, now=now, timeout=timeout,
                                                              limit=limit, report=report)),
        ("release_dead_slots", lambda: release_dead_slots(store, settings, now=now, timeout=timeout, limit=limit,
                                                          report=report)),
        ("send_due_runs", lambda: send_due_runs(store, settings, now=now, limit=limit, report=report)),
    ]
    for name, step in steps:
        try:
            step()
        except Exception as exc:
            logger.exception("janitor step %s failed", name)
            report.errors.append(f"{name}: {type(exc).__name__}: {exc}")
    return report


__all__ = [
    "HEARTBEAT_TIMEOUT",
    "LATE_AFTER",
    "STEPS",
    "JanitorReport",
    "crash_lost_runs",
    "finish_cancellations",
    "heartbeat_timeout",
    "last_heartbeat",
    "mark_late",
    "release_dead_slots",
    "send_due_runs",
    "tick",
]
