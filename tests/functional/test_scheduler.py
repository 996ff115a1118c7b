"""Schedules on the embedded cloud: firing, the tick and its cursors, pausing, changes, EventBridge
provisioning (moto stores the schedules) and the local scheduler loop driven by a fake clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stratoflow.control import deployments, flow_runs
from stratoflow.control import schedules as service
from stratoflow.local.scheduler_loop import SchedulerLoop, default_handler_path, scheduled_time
from stratoflow.models import Deployment, FlowRun, ObjectKind
from stratoflow.schedules.models import CronSchedule, DeploymentSchedule, IntervalSchedule, RRuleSchedule
from stratoflow.schedules.slots import next_slots, parse_slot_key, slot_key
from stratoflow.schemas import DeploymentCreate
from stratoflow.settings import Settings, get_settings
from stratoflow.states import StateType
from stratoflow.storage import get_store
from stratoflow.storage.base import Store
from stratoflow.storage.eventbridge import (
    TICK_SCHEDULE_NAME,
    EventBridgeProvisioner,
    SchedulerConfigError,
    schedule_name,
)

pytestmark = pytest.mark.store_only("drives the store, moto's scheduler and the local loop in-process")

# Simulated time starts after any real timestamp the store writes (deployment.updated is real time).
T0 = datetime(2031, 1, 6, 12, 0, 30, tzinfo=UTC)  # a Monday


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture(autouse=True)
def _fresh_scheduler() -> Iterator[None]:
    """moto's scheduler backend is process-global and the embedded cloud resets only DynamoDB and S3."""
    from moto.backends import get_backend

    get_backend("scheduler").reset()
    yield
    get_backend("scheduler").reset()


@pytest.fixture
def store() -> Store:
    return get_store()


@pytest.fixture
def settings() -> Settings:
    return get_settings()


@pytest.fixture(autouse=True)
def _api_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the API does by itself (``upsert_deployment`` calls ``on_deployment_changed``) runs
    at the simulated start (T0's minute), not at real time."""
    monkeypatch.setattr(service, "_now", lambda: T0.replace(second=0))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch, _api_clock: None) -> FakeClock:
    """The simulated time, also for what the API does by itself (``upsert_deployment`` calls
    ``on_deployment_changed`` with the service's clock)."""
    fake = FakeClock(T0)
    monkeypatch.setattr(service, "_now", fake)
    return fake


@pytest.fixture
def provisioner(settings: Settings, clock: FakeClock) -> EventBridgeProvisioner:
    return EventBridgeProvisioner(settings, now=clock)


def every(cron: str, sid: str = "s1", parameters: dict[str, Any] | None = None, **kw: Any) -> DeploymentSchedule:
    return DeploymentSchedule(id=sid, schedule=CronSchedule(cron=cron, **kw), parameters=parameters or {})


def deploy(store: Store, schedules: list[DeploymentSchedule], name: str = "nightly", **fields: Any) -> Deployment:
    dep, _ = deployments.upsert_deployment(
        store, DeploymentCreate(flow_name="etl", name=name, schedules=schedules, **fields))
    return dep


def change(store: Store, settings: Settings, before: Deployment, provisioner: EventBridgeProvisioner,
           clock: FakeClock, **fields: Any) -> Deployment:
    after, _ = deployments.upsert_deployment(
        store, DeploymentCreate(flow_name=before.flow_name, name=before.name, **fields))
    service.on_deployment_changed(store, settings, before, after, provisioner=provisioner, now=clock())
    return after


def runs_of(store: Store, dep: Deployment) -> list[FlowRun]:
    runs = store.list_flow_runs(deployment_id=dep.id, limit=1000)
    return sorted(runs, key=lambda r: r.expected_start_time or r.created)


def slots_of(runs: list[FlowRun]) -> list[datetime]:
    out = []
    for r in runs:
        assert r.state is not None and r.state.state_details.scheduled_time is not None
        out.append(r.state.state_details.scheduled_time.astimezone(UTC))
    return out


def minute(n: int) -> datetime:
    """The n-th whole minute after T0's minute."""
    return T0.replace(second=0) + timedelta(minutes=n)


# -- fire ----------------------------------------------------------------------------------------
def test_fire_twice_creates_one_run(store: Store, settings: Settings) -> None:
    dep = deploy(store, [every("*/5 * * * *", parameters={"n": 3})], parameters={"n": 1, "m": 2})
    slot = datetime(2031, 1, 6, 12, 5, tzinfo=UTC)
    first = service.fire(store, settings, dep.id, "s1", slot)
    second = service.fire(store, settings, dep.id, "s1", slot)
    assert first is not None and second is not None
    assert first.id == second.id
    runs = runs_of(store, dep)
    assert [r.id for r in runs] == [first.id]
    run = runs[0]
    assert run.state_type == StateType.SCHEDULED
    assert slots_of(runs) == [slot]
    assert run.expected_start_time == slot
    assert run.idempotency_key == slot_key(dep.id, "s1", slot) == f"schedule:{dep.id}:s1:2031-01-06T12:05:00+00:00"
    assert "auto-scheduled" in run.tags
    assert run.parameters == {"n": 3, "m": 2}


def test_fire_snaps_an_eventbridge_time_to_the_slot(store: Store, settings: Settings) -> None:
    dep = deploy(store, [every("*/5 * * * *")])
    run = service.fire(store, settings, dep.id, "s1", datetime(2031, 1, 6, 12, 5, 7, tzinfo=UTC))
    again = service.fire(store, settings, dep.id, "s1", datetime(2031, 1, 6, 12, 4, 58, tzinfo=UTC))
    assert run is not None and again is not None and run.id == again.id
    assert run.idempotency_key == slot_key(dep.id, "s1", datetime(2031, 1, 6, 12, 5, tzinfo=UTC))


@pytest.mark.parametrize("case", ["unknown deployment", "unknown schedule", "inactive", "paused", "not a slot"])
def test_fire_does_nothing_when_it_must_not_run(store: Store, settings: Settings, case: str) -> None:
    active = case != "inactive"
    dep = deploy(store, [DeploymentSchedule(id="s1", schedule=CronSchedule(cron="0 * * * *"), active=active)])
    if case == "paused":
        deployments.set_deployment_paused(store, dep.id, True)
    dep_id = "no-such-deployment" if case == "unknown deployment" else dep.id
    schedule_id = "other" if case == "unknown schedule" else "s1"
    slot = datetime(2031, 1, 6, 12, 30 if case == "not a slot" else 0, tzinfo=UTC)
    assert service.fire(store, settings, dep_id, schedule_id, slot) is None
    assert runs_of(store, dep) == []


# -- tick ----------------------------------------------------------------------------------------
def test_tick_cursor_survives_restart_without_skipping_or_repeating(store: Store, settings: Settings) -> None:
    # An rrule is never on EventBridge: the tick fires it.
    dep = deploy(store, [DeploymentSchedule(id="r", schedule=RRuleSchedule(rrule="FREQ=MINUTELY;INTERVAL=2"))])
    now = minute(0)
    assert service.tick(store, settings, now) == []  # first tick: starts now, no backfill
    created = []
    for n in range(1, 11):
        created += service.tick(store, settings, minute(n))
        assert service.tick(store, settings, minute(n)) == []  # the same tick again: nothing new
    # a gap of 5 minutes (the tick was down): caught up on the next tick
    created += service.tick(store, settings, minute(15))
    runs = runs_of(store, dep)
    assert [r.id for r in runs] == [r.id for r in sorted(created, key=lambda r: r.expected_start_time or r.created)]
    assert slots_of(runs) == [minute(n) for n in range(2, 16, 2)]
    cursor = store.get_object(ObjectKind.SCHEDULE_CURSOR, f"{dep.id}/r")
    assert cursor.doc["cursor"] == minute(15).isoformat()


def test_tick_horizon_creates_runs_ahead_once(store: Store, settings: Settings) -> None:
    dep = deploy(store, [DeploymentSchedule(id="i", schedule=IntervalSchedule(interval=30))])
    # The deployment change made the first minute's runs at once, as a tick would have ahead.
    assert slots_of(runs_of(store, dep)) == [minute(0) + timedelta(seconds=30), minute(1)]
    first = service.tick(store, settings, minute(0), timedelta(minutes=2))
    assert slots_of(sorted(first, key=lambda r: r.expected_start_time or r.created)) == [
        minute(0) + timedelta(seconds=30 * k) for k in range(3, 5)]
    more = service.tick(store, settings, minute(1), timedelta(minutes=2))
    assert slots_of(sorted(more, key=lambda r: r.expected_start_time or r.created)) == [
        minute(2) + timedelta(seconds=30), minute(3)]
    assert len(runs_of(store, dep)) == 6


def test_a_deployment_change_makes_the_next_minute_of_tick_runs_at_once(
        store: Store, settings: Settings, clock: FakeClock, provisioner: EventBridgeProvisioner) -> None:
    """A schedule EventBridge cannot express (here every 5 s) starts on time after a deploy, not
    at the next per-minute tick; one EventBridge fires itself gets no run ahead."""
    fast = DeploymentSchedule(id="fast", schedule=IntervalSchedule(interval=5))
    dep = deploy(store, [fast, every("*/5 * * * *", sid="eb")])
    made = runs_of(store, dep)
    assert slots_of(made) == [clock() + timedelta(seconds=5 * k) for k in range(1, 13)]
    assert all(":fast:" in (r.idempotency_key or "") for r in made)
    # Once only: the same change seen again, and the tick after it, add nothing.
    service.on_deployment_changed(store, settings, None, dep, provisioner=provisioner, now=clock())
    assert service.tick(store, settings, clock(), service.TICK_HORIZON) == []
    assert len(runs_of(store, dep)) == 12
    # A paused deployment gets none.
    other = deploy(store, [fast], name="paused-one", paused=True)
    assert runs_of(store, other) == []


def test_tick_skips_translatable_schedules_unless_asked(store: Store, settings: Settings) -> None:
    dep = deploy(store, [every("* * * * *")])
    service.tick(store, settings, minute(0))
    assert service.tick(store, settings, minute(3)) == []
    service.tick(store, settings, minute(0), scope="all")
    assert len(service.tick(store, settings, minute(3), scope="all")) == 3
    assert len(runs_of(store, dep)) == 3


def test_tick_never_backfills_more_than_the_catchup(store: Store, settings: Settings) -> None:
    dep = deploy(store, [DeploymentSchedule(id="r", schedule=RRuleSchedule(rrule="FREQ=MINUTELY"))])
    service.tick(store, settings, minute(0))
    created = service.tick(store, settings, minute(0) + timedelta(days=3))
    assert len(created) == 60  # the last hour only
    assert len(runs_of(store, dep)) == 1 + 60  # and the first minute's, made when it was deployed


# -- pausing and changing ----------------------------------------------------------------------
def test_pausing_the_deployment_stops_new_runs_and_removes_future_ones(
        store: Store, settings: Settings, clock: FakeClock, provisioner: EventBridgeProvisioner) -> None:
    dep = deploy(store, [DeploymentSchedule(id="r", schedule=RRuleSchedule(rrule="FREQ=MINUTELY"))])
    service.tick(store, settings, clock())
    service.tick(store, settings, clock.advance(minutes=3), timedelta(minutes=5))  # 3 past + 5 future
    assert len(runs_of(store, dep)) == 8
    paused = deployments.set_deployment_paused(store, dep.id, True)
    service.on_deployment_changed(store, settings, dep, paused, provisioner=provisioner, now=clock())
    assert slots_of(runs_of(store, dep)) == [minute(1), minute(2), minute(3)]  # the future ones are gone
    assert service.tick(store, settings, clock.advance(minutes=10)) == []
    resumed = deployments.set_deployment_paused(store, dep.id, False)
    service.on_deployment_changed(store, settings, paused, resumed, provisioner=provisioner, now=clock())
    # From the resume on, no slot of the pause; the resume made the next minute's run at once.
    assert slots_of(runs_of(store, dep)) == [minute(1), minute(2), minute(3), minute(14)]
    assert service.tick(store, settings, clock()) == []
    made = service.tick(store, settings, clock.advance(minutes=2))
    assert slots_of(sorted(made, key=lambda r: r.expected_start_time or r.created)) == [minute(15)]


def test_changing_a_schedule_removes_its_unstarted_future_runs(
        store: Store, settings: Settings, clock: FakeClock, provisioner: EventBridgeProvisioner) -> None:
    keep = DeploymentSchedule(id="keep", schedule=RRuleSchedule(rrule="FREQ=MINUTELY;INTERVAL=5"))
    old = DeploymentSchedule(id="chg", schedule=RRuleSchedule(rrule="FREQ=MINUTELY;INTERVAL=2"))
    dep = deploy(store, [keep, old])
    service.tick(store, settings, clock())
    service.tick(store, settings, clock.advance(minutes=4), timedelta(minutes=10))
    before_runs = runs_of(store, dep)
    past = [r for r in before_runs if (r.expected_start_time or T0) <= clock()]
    keep_future = {r.id for r in before_runs if "keep" in (r.idempotency_key or "") and r not in past}
    assert past and keep_future
    new = DeploymentSchedule(id="chg", schedule=RRuleSchedule(rrule="FREQ=MINUTELY;INTERVAL=3"))
    old_future = {r.idempotency_key for r in before_runs if ":chg:" in (r.idempotency_key or "")
                  and (r.expected_start_time or T0) > clock()}
    after = change(store, settings, dep, provisioner, clock, schedules=[keep, new])
    remaining = runs_of(store, dep)
    ids = {r.id for r in remaining}
    assert {r.id for r in past} <= ids  # runs already due stay
    assert keep_future <= ids  # the unchanged schedule's future runs stay
    # of the changed schedule's future runs only those at a slot of the new rule stay (every 6 minutes)
    new_slots = set(next_slots(new.schedule, clock(), until=clock() + timedelta(minutes=10)))
    chg_future = {r.idempotency_key: r for r in remaining if ":chg:" in (r.idempotency_key or "")
                  and (r.expected_start_time or T0) > clock()}
    assert set(chg_future) == {k for k in old_future if k and parse_slot_key(k)[2] in new_slots}  # type: ignore[index]
    assert len(chg_future) < len(old_future)
    # calling it again changes nothing; the next tick creates the new rule's slots from the change on
    service.on_deployment_changed(store, settings, dep, after, provisioner=provisioner, now=clock())
    assert {r.id for r in runs_of(store, dep)} == ids
    service.tick(store, settings, clock.advance(minutes=3), timedelta(minutes=10))
    chg_slots = sorted(slots_of([r for r in runs_of(store, dep) if ":chg:" in (r.idempotency_key or "")
                                 and (r.expected_start_time or T0) > minute(4)]))
    assert chg_slots == next_slots(new.schedule, minute(4), until=clock() + timedelta(minutes=10))
    assert len(set(chg_slots)) == len(chg_slots)


def test_removing_or_deactivating_a_schedule_removes_its_future_runs(
        store: Store, settings: Settings, clock: FakeClock, provisioner: EventBridgeProvisioner) -> None:
    a = DeploymentSchedule(id="a", schedule=RRuleSchedule(rrule="FREQ=MINUTELY"))
    b = DeploymentSchedule(id="b", schedule=RRuleSchedule(rrule="FREQ=MINUTELY;INTERVAL=2"))
    dep = deploy(store, [a, b])
    service.tick(store, settings, clock(), timedelta(minutes=6))
    assert {r.idempotency_key.split(":")[2] for r in runs_of(store, dep) if r.idempotency_key} == {"a", "b"}
    after = change(store, settings, dep, provisioner, clock, schedules=[a.model_copy(update={"active": False})])
    assert runs_of(store, dep) == []
    assert after.schedules[0].active is False


def test_manual_runs_are_never_deleted(store: Store, settings: Settings, clock: FakeClock,
                                      provisioner: EventBridgeProvisioner) -> None:
    from stratoflow.schemas import DeploymentRunCreate, StateIn
    from stratoflow.states import StateDetails

    dep = deploy(store, [DeploymentSchedule(id="a", schedule=RRuleSchedule(rrule="FREQ=MINUTELY"))])
    manual, _ = flow_runs.create_deployment_flow_run(store, settings, dep.id, DeploymentRunCreate(state=StateIn(
        type=StateType.SCHEDULED, state_details=StateDetails(scheduled_time=clock() + timedelta(hours=1)))))
    change(store, settings, dep, provisioner, clock, schedules=[])
    assert [r.id for r in runs_of(store, dep)] == [manual.id]


# -- EventBridge provisioning (moto) ----------------------------------------------------------
def test_scheduler_client_works_on_the_embedded_backend(settings: Settings) -> None:
    from stratoflow.storage import aws as _aws

    client = _aws.client("scheduler", settings)
    assert client.list_schedule_groups()["ScheduleGroups"] is not None


def test_provisioning_creates_updates_and_deletes(store: Store, settings: Settings, clock: FakeClock,
                                                  provisioner: EventBridgeProvisioner) -> None:
    dep = deploy(store, [every("*/15 9-17 * * 1-5", timezone="Europe/Paris")])
    service.on_deployment_changed(store, settings, None, dep, provisioner=provisioner, now=clock())
    name = schedule_name(dep.id, "s1")
    assert len(name) <= 64
    [got] = provisioner.list_provisioned()
    assert (got.name, got.expression, got.timezone, got.state) == (
        name, "cron(0/15 9-17 ? * MON-FRI *)", "Europe/Paris", "ENABLED")
    assert got.input == {"deployment_id": dep.id, "schedule_id": "s1", "slot": "<aws.scheduler.scheduled-time>"}
    raw = provisioner._client().get_schedule(Name=name, GroupName=settings.table_prefix)
    assert raw["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert raw["Target"]["Arn"].endswith(":function:stratoflow-scheduler")
    # the same sync again: nothing changes
    service.on_deployment_changed(store, settings, dep, dep, provisioner=provisioner, now=clock())
    assert provisioner.list_provisioned() == [got]

    changed = change(store, settings, dep, provisioner, clock, schedules=[every("0 12 * * 7")])
    [got] = provisioner.list_provisioned()
    assert (got.expression, got.timezone, got.state) == ("cron(0 12 ? * SUN *)", "UTC", "ENABLED")

    inactive = change(store, settings, changed, provisioner, clock, schedules=[
        DeploymentSchedule(id="s1", schedule=CronSchedule(cron="0 12 * * 7"), active=False)])
    assert [p.state for p in provisioner.list_provisioned()] == ["DISABLED"]
    reactivated = change(store, settings, inactive, provisioner, clock, schedules=[every("0 12 * * 7")])
    paused = deployments.set_deployment_paused(store, dep.id, True)
    service.on_deployment_changed(store, settings, reactivated, paused, provisioner=provisioner, now=clock())
    assert [p.state for p in provisioner.list_provisioned()] == ["DISABLED"]
    resumed = deployments.set_deployment_paused(store, dep.id, False)
    service.on_deployment_changed(store, settings, paused, resumed, provisioner=provisioner, now=clock())
    assert [p.state for p in provisioner.list_provisioned()] == ["ENABLED"]

    change(store, settings, resumed, provisioner, clock, schedules=[])
    assert provisioner.list_provisioned() == []


def test_untranslatable_schedules_use_the_tick_schedule(store: Store, settings: Settings, clock: FakeClock,
                                                        provisioner: EventBridgeProvisioner) -> None:
    dep = deploy(store, [every("0 0 1 * 1", sid="both-days"), every("0 * * * *", sid="hourly")])
    service.on_deployment_changed(store, settings, None, dep, provisioner=provisioner, now=clock())
    by_name = {p.name: p for p in provisioner.list_provisioned()}
    assert set(by_name) == {TICK_SCHEDULE_NAME, schedule_name(dep.id, "hourly")}
    tick = by_name[TICK_SCHEDULE_NAME]
    assert (tick.expression, tick.state, tick.input) == (
        "rate(1 minute)", "ENABLED", {"tick": True, "time": "<aws.scheduler.scheduled-time>"})
    # a schedule that moves from EventBridge to the tick loses its own EventBridge schedule
    change(store, settings, dep, provisioner, clock, schedules=[every("0 * * * *", sid="hourly", day_or=True),
                                                                 every("30 2 * * *", sid="both-days",
                                                                       timezone="Europe/Paris")])
    by_name = {p.name: p for p in provisioner.list_provisioned()}
    assert set(by_name) == {TICK_SCHEDULE_NAME, schedule_name(dep.id, "hourly")}


def test_rate_schedules_start_on_the_anchor_phase(store: Store, settings: Settings, clock: FakeClock,
                                                  provisioner: EventBridgeProvisioner) -> None:
    anchor = datetime(2030, 1, 1, 0, 7, tzinfo=UTC)
    dep = deploy(store, [DeploymentSchedule(id="i", schedule=IntervalSchedule(interval=600, anchor_date=anchor))])
    service.on_deployment_changed(store, settings, None, dep, provisioner=provisioner, now=clock())
    [got] = provisioner.list_provisioned()
    assert got.expression == "rate(10 minutes)"
    assert got.start_date == datetime(2031, 1, 6, 12, 7, tzinfo=UTC)  # first slot after T0 on the anchor's phase


def test_provisioning_on_aws_needs_the_target(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("STRATOFLOW_SCHEDULER_TARGET_ARN", "STRATOFLOW_SCHEDULER_ROLE_ARN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    provisioner = EventBridgeProvisioner(Settings(backend="aws", aws_endpoint_url=None))
    with pytest.raises(SchedulerConfigError, match="STRATOFLOW_SCHEDULER_TARGET_ARN"):
        provisioner._arns()
    explicit = EventBridgeProvisioner(Settings(backend="aws", aws_endpoint_url=None), target_arn="arn:t",
                                      role_arn="arn:r")
    assert explicit._arns() == ("arn:t", "arn:r")


# -- the scheduler function ---------------------------------------------------------------------
def test_scheduler_function_fires_ticks_and_refuses_bad_events(store: Store) -> None:
    from stratoflow.local.lambda_runtime import FunctionConfig, LocalFunction

    dep = deploy(store, [every("*/5 * * * *")])
    with LocalFunction(FunctionConfig(handler_path=default_handler_path(), name="scheduler")) as fn:
        fired = fn.invoke({"deployment_id": dep.id, "schedule_id": "s1", "slot": "2031-01-06T12:05:00Z"})
        assert fired.error is None
        assert fired.payload["fired"] is True and fired.payload["slot"] == "2031-01-06T12:05:00+00:00"
        again = fn.invoke({"deployment_id": dep.id, "schedule_id": "s1", "slot": "2031-01-06T12:05:00Z"})
        assert again.payload["flow_run_id"] == fired.payload["flow_run_id"]
        ticked = fn.invoke({"tick": True, "time": "2031-01-06T12:06:00Z"})
        assert ticked.error is None and ticked.payload == {"tick": "2031-01-06T12:06:00+00:00", "created": []}
        bad = fn.invoke({"deployment_id": dep.id, "slot": "2031-01-06T12:05:00Z"})
        assert bad.error is not None and bad.error["errorType"] == "BadEvent"
        bad_time = fn.invoke({"deployment_id": dep.id, "schedule_id": "s1", "slot": "yesterday"})
        assert bad_time.error is not None and "slot" in bad_time.error["errorMessage"]
    assert len(runs_of(store, dep)) == 1


# -- the local loop -----------------------------------------------------------------------------
def test_every_minute_for_ten_minutes_through_the_loop_with_a_restart(
        store: Store, settings: Settings, clock: FakeClock, provisioner: EventBridgeProvisioner) -> None:
    dep = deploy(store, [every("* * * * *")])
    service.on_deployment_changed(store, settings, None, dep, provisioner=provisioner, now=clock())
    loop = SchedulerLoop(settings, clock=clock, provisioner=provisioner)
    sent = loop.run_once()  # 12:00:30: nothing due yet
    for _ in range(4):
        clock.advance(minutes=1)
        sent += loop.run_once()
        sent += loop.run_once()  # twice at the same time: nothing more
    clock.advance(seconds=50)  # 12:05:20
    sent += loop.run_once()
    loop.stop()
    # a new loop (a restarted `stratoflow dev`) after a gap of two minutes
    clock.advance(minutes=2)
    loop = SchedulerLoop(settings, clock=clock, provisioner=provisioner)
    sent += loop.run_once()  # 12:07:20: 12:06 and 12:07
    for _ in range(3):
        clock.advance(minutes=1)
        sent += loop.run_once()
    loop.stop()
    # clock is at 12:10:20
    runs = runs_of(store, dep)
    assert slots_of(runs) == [minute(n) for n in range(1, 11)]
    assert len({r.idempotency_key for r in runs}) == 10
    assert [e["slot"] for e in sent] == [scheduled_time(minute(n)) for n in range(1, 11)]


def test_the_loop_fires_tick_schedules_through_the_same_handler(
        store: Store, settings: Settings, clock: FakeClock, provisioner: EventBridgeProvisioner,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRATOFLOW_SCHEDULER_HORIZON_SECONDS", "0")
    dep = deploy(store, [DeploymentSchedule(id="r", schedule=RRuleSchedule(rrule="FREQ=MINUTELY"))])
    service.on_deployment_changed(store, settings, None, dep, provisioner=provisioner, now=clock())
    loop = SchedulerLoop(settings, clock=clock, provisioner=provisioner)
    loop.run_once()
    for n in range(10):
        if n == 5:
            loop.stop()
            loop = SchedulerLoop(settings, clock=clock, provisioner=provisioner)
        clock.advance(minutes=1)
        sent = loop.run_once()
        assert sent == [{"tick": True, "time": scheduled_time(minute(n + 1))}]
    loop.stop()
    runs = runs_of(store, dep)
    assert slots_of(runs) == [minute(n) for n in range(1, 11)]


def test_the_loop_stops_firing_a_paused_deployment(
        store: Store, settings: Settings, clock: FakeClock, provisioner: EventBridgeProvisioner) -> None:
    dep = deploy(store, [every("* * * * *")])
    service.on_deployment_changed(store, settings, None, dep, provisioner=provisioner, now=clock())
    loop = SchedulerLoop(settings, clock=clock, provisioner=provisioner)
    loop.run_once()
    clock.advance(minutes=2)
    loop.run_once()
    paused = deployments.set_deployment_paused(store, dep.id, True)
    service.on_deployment_changed(store, settings, dep, paused, provisioner=provisioner, now=clock())
    clock.advance(minutes=3)
    assert loop.run_once() == []
    resumed = deployments.set_deployment_paused(store, dep.id, False)
    service.on_deployment_changed(store, settings, paused, resumed, provisioner=provisioner, now=clock())
    loop.run_once()  # enabled again: starts from now, the paused minutes are not fired
    clock.advance(minutes=2)
    loop.run_once()
    loop.stop()
    assert slots_of(runs_of(store, dep)) == [minute(1), minute(2), minute(6), minute(7)]


def test_the_loop_in_a_background_thread(store: Store, settings: Settings, clock: FakeClock,
                                         provisioner: EventBridgeProvisioner) -> None:
    import threading

    dep = deploy(store, [every("* * * * *")])
    fired = threading.Event()
    events: list[dict[str, Any]] = []

    def invoke(event: dict[str, Any]) -> None:
        events.append(event)
        fired.set()

    loop = SchedulerLoop(settings, clock=clock, provisioner=provisioner, interval=0.01, invoke=invoke)
    loop.start()  # reconciles: provisions the deployment's schedule
    try:
        assert [p.name for p in provisioner.list_provisioned()] == [schedule_name(dep.id, "s1")]
        clock.advance(minutes=1)
        assert fired.wait(10)
    finally:
        loop.stop()
    assert events[0] == {"deployment_id": dep.id, "schedule_id": "s1", "slot": scheduled_time(minute(1))}


def test_upcoming(store: Store) -> None:
    dep = deploy(store, [every("0 9 * * 1-5", sid="weekdays", timezone="Europe/Paris"),
                         DeploymentSchedule(id="off", schedule=CronSchedule(cron="* * * * *"), active=False),
                         DeploymentSchedule(id="i", schedule=IntervalSchedule(interval=43200))])
    got = service.upcoming(dep, T0, 2)
    assert got == [("i", datetime(2031, 1, 7, 0, 0, tzinfo=UTC)), ("weekdays", datetime(2031, 1, 7, 8, 0, tzinfo=UTC)),
                   ("i", datetime(2031, 1, 7, 12, 0, tzinfo=UTC)), ("weekdays", datetime(2031, 1, 8, 8, 0, tzinfo=UTC))]
    assert service.upcoming(dep.model_copy(update={"paused": True}), T0, 2) == []


def test_importing_the_scheduler_function_touches_no_aws() -> None:
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, sys.argv[1]); import app; "
            "bad = [m for m in ('boto3', 'moto', 'pynamodb', 'stratoflow.storage.dynamodb') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code, str(default_handler_path().parent)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
