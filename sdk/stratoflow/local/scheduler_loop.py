"""The local cloud's EventBridge Scheduler: moto stores schedules but never fires them, so this
loop does, through the same handler Lambda runs (``functions/scheduler/app.py``).

Each ``run_once(now)`` reads the provisioned schedules (``EventBridgeProvisioner.list_provisioned``),
computes the times EventBridge would have fired each enabled one since the loop last looked
(``translate.eventbridge_slots``: cron in its timezone, ``rate()`` from its StartDate), and
invokes the handler once per time with the schedule's input, ``<aws.scheduler.scheduled-time>``
replaced by that time, as EventBridge does.

Where it left off is kept per schedule in the objects table (``scheduler_loop_cursor``), written
after each fired time, so a new loop (a restarted ``stratoflow dev``) goes on from there: no
time is skipped, and a time fired again makes no second run (the slot's idempotency key). A
schedule seen for the first time starts at that moment; a disabled one forgets its position, so
enabling it again does not fire the times it was off. At most ``MAX_CATCHUP`` is caught up.

Time comes from ``clock`` (tests pass a controllable clock and call ``run_once``: no sleeps);
``start()``/``stop()`` run it every ``interval`` seconds in a background thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stratoflow.control.schedules import reconcile
from stratoflow.exceptions import ObjectAlreadyExists, ObjectNotFound, ObjectVersionConflict, StratoflowError
from stratoflow.local.lambda_runtime import FunctionConfig, LocalFunction
from stratoflow.models import ObjectKind
from stratoflow.schedules.translate import eventbridge_slots
from stratoflow.settings import get_settings
from stratoflow.storage import get_store
from stratoflow.storage.eventbridge import EventBridgeProvisioner

if TYPE_CHECKING:
    from stratoflow.settings import Settings
    from stratoflow.storage.base import Store
    from stratoflow.storage.eventbridge import ProvisionedSchedule

logger = logging.getLogger("stratoflow.scheduler_loop")


MAX_CATCHUP = timedelta(hours=1)
MAX_FIRES_PER_SCHEDULE = 1000  # per run_once; the rest follow in the next
REPO_ROOT = Path(__file__).resolve().parents[3]
HANDLER = Path("functions") / "scheduler" / "app.py"


def default_handler_path() -> Path:
    for root in (REPO_ROOT, Path.cwd()):
        if (root / HANDLER).is_file():
            return root / HANDLER
    return REPO_ROOT / HANDLER


def _utc_now() -> datetime:
    return datetime.now(UTC)


def scheduled_time(slot: datetime) -> str:
    """How EventBridge writes ``<aws.scheduler.scheduled-time>``: ``2026-11-30T12:05:00Z``."""
    return slot.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class InvocationFailed(StratoflowError):
    """The scheduler function returned an error."""


class SchedulerLoop:
    def __init__(self, settings: Settings | None = None, *, store_factory: Callable[[], Store] | None = None,
                 clock: Callable[[], datetime] = _utc_now, interval: float = 1.0,
                 invoke: Callable[[dict[str, Any]], Any] | None = None,
                 provisioner: EventBridgeProvisioner | None = None, handler_path: Path | None = None) -> None:

        self.settings = settings or get_settings()
        self._store_factory = store_factory
        self.clock = clock
        self.interval = interval
        self._invoke = invoke
        self._provisioner = provisioner
        self._handler_path = handler_path or default_handler_path()
        self._function: Any = None
        self._cursors: dict[str, datetime] = {}
        self._versions: dict[str, int | None] = {}
        self._forgotten: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- parts ----------------------------------------------------------------------------------
    @property
    def store(self) -> Store:
        if self._store_factory is not None:
            return self._store_factory()

        return get_store()

    @property
    def provisioner(self) -> EventBridgeProvisioner:
        if self._provisioner is None:

            self._provisioner = EventBridgeProvisioner(self.settings)
        return self._provisioner

    def invoke(self, event: dict[str, Any]) -> Any:
        """Run the scheduler function with ``event`` (in the Lambda-like runtime by default)."""
        if self._invoke is not None:
            return self._invoke(event)
        if self._function is None:

            function = LocalFunction(FunctionConfig(handler_path=self._handler_path,
                                                    name=f"{self.settings.table_prefix}-scheduler",
                                                    timeout=300.0, region=self.settings.region))
            function.start()
            self._function = function
        result = self._function.invoke(event)
        if result.error is not None:
            raise InvocationFailed(f"{result.error.get('errorType')}: {result.error.get('errorMessage')}")
        return result.payload

    # -- cursors --------------------------------------------------------------------------------
    def _cursor(self, name: str, now: datetime) -> datetime:
        if name in self._cursors:
            return self._cursors[name]
        try:
            stored = self.store.get_object(ObjectKind.SCHEDULER_LOOP_CURSOR, name)
        except ObjectNotFound:
            self._cursors[name], self._versions[name] = now, None
            self._save(name, now)  # a new loop must not skip what comes after this moment
            return now
        self._versions[name] = stored.version
        at = datetime.fromisoformat(stored.doc["cursor"])
        self._cursors[name] = at
        return at

    def _save(self, name: str, at: datetime) -> None:

        doc = {"cursor": at.isoformat()}
        version = self._versions.get(name)
        try:
            if version is None:
                saved = self.store.put_object(ObjectKind.SCHEDULER_LOOP_CURSOR, name, doc, must_not_exist=True)
            else:
                saved = self.store.put_object(ObjectKind.SCHEDULER_LOOP_CURSOR, name, doc, expected_version=version)
        except (ObjectAlreadyExists, ObjectVersionConflict, ObjectNotFound):
            # Another loop moves this schedule too: take its position (fired slots are idempotent).
            stored = self.store.get_object(ObjectKind.SCHEDULER_LOOP_CURSOR, name)
            saved = self.store.put_object(ObjectKind.SCHEDULER_LOOP_CURSOR, name, {"cursor": max(
                at, datetime.fromisoformat(stored.doc["cursor"])).isoformat()}, expected_version=stored.version)
        self._versions[name] = saved.version
        self._cursors[name] = at
        self._forgotten.discard(name)

    def _forget(self, name: str) -> None:
        self._cursors.pop(name, None)
        self._versions.pop(name, None)
        if name in self._forgotten:
            return
        with contextlib.suppress(ObjectNotFound):
            self.store.delete_object(ObjectKind.SCHEDULER_LOOP_CURSOR, name)
        self._forgotten.add(name)

    # -- one pass -------------------------------------------------------------------------------
    def due(self, schedule: ProvisionedSchedule, now: datetime) -> list[datetime]:

        cursor = max(self._cursor(schedule.name, now), now - MAX_CATCHUP)
        return eventbridge_slots(schedule.as_expression(), cursor, now, limit=MAX_FIRES_PER_SCHEDULE)

    def run_once(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Fire every provisioned time that is due at ``now`` (default: the clock); returns the
        events sent, in order."""
        now = (now or self.clock()).astimezone(UTC)
        sent: list[dict[str, Any]] = []
        with self._lock:
            for schedule in self.provisioner.list_provisioned():
                if not schedule.enabled:
                    self._forget(schedule.name)
                    continue
                for slot in self.due(schedule, now):
                    event = json.loads(json.dumps(schedule.input).replace(
                        "<aws.scheduler.scheduled-time>", scheduled_time(slot)))
                    try:
                        self.invoke(event)
                    except Exception:
                        logger.exception("scheduler function failed for %s at %s; retried next pass",
                                         schedule.name, slot.isoformat())
                        break
                    self._save(schedule.name, slot)
                    sent.append(event)
        return sent

    def reconcile(self) -> int:
        """Provision every deployment's schedules (the embedded cloud forgets them between processes)."""

        return reconcile(self.store, self.settings, self.provisioner)

    # -- background -----------------------------------------------------------------------------
    def start(self, *, reconcile: bool = True) -> None:
        if self._thread is not None:
            return
        if reconcile:
            self.reconcile()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="stratoflow-scheduler-loop", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                logger.exception("scheduler loop pass failed")
            self._stop.wait(self.interval)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._function is not None:
            self._function.close()
            self._function = None

    def __enter__(self) -> SchedulerLoop:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
