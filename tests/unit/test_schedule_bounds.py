"""Slot computation is linear in the slots it produces and bounded (asserted on counted work, never
on a clock), and a new rrule firing more often than the minimum interval, or whose slots are too
costly to compute, is refused naming the field, while a stored record with one still loads."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from dateutil import rrule as dateutil_rrule
from pydantic import ValidationError

from stratoflow.api.errors import describe_validation_errors
from stratoflow.models import Deployment
from stratoflow.schedules.models import CronSchedule, DeploymentSchedule, IntervalSchedule, RRuleSchedule
from stratoflow.schedules.slots import (
    MAX_STEPS,
    ScheduleNotComputable,
    SlotBudget,
    SlotBudgetExceeded,
    next_slots,
    rrule_problem,
)
from stratoflow.schemas import DeploymentCreate

NOW = datetime(2026, 5, 1, 12, 0, 0, 500000, tzinfo=UTC)
NEVER = "FREQ=SECONDLY;BYMONTH=2;BYMONTHDAY=30"  # no 30 February: dateutil spins to year 9999
TWICE_A_SECOND = "DTSTART:20300101T000000\nRRULE:FREQ=SECONDLY\nRDATE:20300101T000000.500000"
ALL_HOURS = ",".join(str(h) for h in range(24))
ALL_MINUTES = ",".join(str(m) for m in range(60))


@pytest.fixture
def dateutil_periods(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """How many day-or-shorter periods dateutil's rrule has visited (``_iterinfo.ddayset`` calls),
    whoever drives it: a measure of work that does not depend on how slots.py counts."""
    calls = 0
    plain = dateutil_rrule._iterinfo.ddayset

    def counted(self: Any, *args: Any) -> Any:
        nonlocal calls
        calls += 1
        return plain(self, *args)

    monkeypatch.setattr(dateutil_rrule._iterinfo, "ddayset", counted)
    return lambda: calls


# -- linear ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("count", [10, 100, 1000])
def test_an_rrule_is_walked_once_from_near_after_not_again_for_every_slot(
        dateutil_periods: Callable[[], int], count: int) -> None:
    slots = next_slots(RRuleSchedule(rrule="FREQ=SECONDLY;INTERVAL=60"), NOW, count=count)
    assert slots[0] == datetime(2026, 5, 1, 12, 1, tzinfo=UTC)
    assert len(slots) == count and all(b - a == timedelta(minutes=1) for a, b in itertools.pairwise(slots))
    assert dateutil_periods() <= count + 2  # one period per slot, and the one it starts in


def test_every_two_seconds_takes_a_handful_of_steps_for_three_slots() -> None:
    budget = SlotBudget()
    slots = next_slots(RRuleSchedule(rrule="FREQ=SECONDLY;INTERVAL=2"), NOW, count=3, budget=budget)
    assert slots == [datetime(2026, 5, 1, 12, 0, s, tzinfo=UTC) for s in (2, 4, 6)]
    assert budget.used <= 10


@pytest.mark.parametrize(("schedule", "steps_per_slot"), [
    (IntervalSchedule(interval=1), 1),
    (CronSchedule(cron="* * * * *", timezone="Europe/Paris"), 1),
    (RRuleSchedule(rrule="FREQ=SECONDLY"), 2),
    (RRuleSchedule(rrule="FREQ=SECONDLY", timezone="America/New_York"), 2),
    (RRuleSchedule(rrule="FREQ=WEEKLY;BYDAY=MO,TH;BYHOUR=7"), 2),
])
def test_work_is_linear_in_the_slots_produced(schedule: Any, steps_per_slot: int) -> None:
    for count in (10, 1000):
        budget = SlotBudget()
        assert len(next_slots(schedule, NOW, count=count, budget=budget)) == count
        assert budget.used <= steps_per_slot * count + 8


@pytest.mark.parametrize(("rule", "most"), [
    ("FREQ=WEEKLY;BYDAY=MO", 10),  # DTSTART 2020: weekly rules were walked from there
    ("FREQ=MONTHLY;BYMONTHDAY=1,15;BYHOUR=6", 10),
    ("FREQ=YEARLY;BYMONTH=1,7", 10),
    ("RRULE:FREQ=HOURLY\nEXRULE:FREQ=MINUTELY;BYMINUTE=30", 500),  # the EXRULE walks its minutes, from near NOW
])
def test_rules_start_near_after_not_at_dtstart(rule: str, most: int) -> None:
    budget = SlotBudget()
    assert len(next_slots(RRuleSchedule(rrule=rule), NOW, count=3, budget=budget)) == 3
    assert budget.used <= most


@pytest.mark.parametrize("rule", [
    "FREQ=WEEKLY;INTERVAL=3;BYDAY=SU,WE;BYHOUR=2;BYMINUTE=30",
    "FREQ=MONTHLY;INTERVAL=5;BYMONTHDAY=-1;BYHOUR=2,3",
    "FREQ=MONTHLY;BYDAY=MO;BYSETPOS=1;BYHOUR=6",
    "DTSTART:20200131T100000\nRRULE:FREQ=MONTHLY",  # the 31st: not every month has it, not moved
    "DTSTART:20210315T013000\nRRULE:FREQ=YEARLY;INTERVAL=2;BYHOUR=1,2,3",
    "FREQ=YEARLY;INTERVAL=3;BYWEEKNO=20;BYDAY=TU",
    "DTSTART:20200229T100000\nRRULE:FREQ=YEARLY",
    "RRULE:FREQ=HOURLY;INTERVAL=5\nEXRULE:FREQ=HOURLY;BYHOUR=2,3",
    "FREQ=DAILY;COUNT=5000;BYHOUR=2,3",
])
def test_a_moved_start_fires_the_same_slots_as_dateutil_from_dtstart(rule: str) -> None:
    after = datetime(2026, 11, 17, 3, 4, 5, tzinfo=UTC)
    plain = (t.replace(tzinfo=UTC) for t in dateutil_rrule.rrulestr(rule, forceset=True, dtstart=datetime(2020, 1, 1)))
    assert next_slots(RRuleSchedule(rrule=rule), after, count=25) == list(
        itertools.islice((t for t in plain if t > after), 25))


# -- bounded --------------------------------------------------------------------------------------
def test_a_rule_whose_days_never_match_stops_at_the_budget() -> None:
    budget = SlotBudget(steps=1000)
    with pytest.raises(SlotBudgetExceeded, match=r"too much work to compute \(1000 steps for 0 slots\)"):
        next_slots(RRuleSchedule(rrule=NEVER), NOW, count=1, budget=budget)
    assert budget.used == 1001
    with pytest.raises(ScheduleNotComputable):  # the default budget too
        next_slots(RRuleSchedule(rrule="FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30"), NOW, count=1)


def test_the_deadline_stops_work_between_steps() -> None:
    ticks = itertools.count()
    budget = SlotBudget(steps=10**9, seconds=100, clock=lambda: float(next(ticks)))  # 1 s a step
    with pytest.raises(SlotBudgetExceeded, match="too long to compute"):
        next_slots(RRuleSchedule(rrule=NEVER), NOW, count=1, budget=budget)
    assert budget.used == 101


def test_each_slot_produced_earns_its_steps() -> None:
    every_second = RRuleSchedule(rrule="FREQ=SECONDLY")
    assert len(next_slots(every_second, NOW, count=1000, budget=SlotBudget(steps=50, per_slot=3))) == 1000
    with pytest.raises(SlotBudgetExceeded):  # two steps a slot: one is not enough
        next_slots(every_second, NOW, count=1000, budget=SlotBudget(steps=50, per_slot=1))


def test_a_rule_dateutil_cannot_evaluate_is_not_computable() -> None:
    mixed = RRuleSchedule(rrule="DTSTART:20260101T000000Z\nRRULE:FREQ=DAILY\nRDATE:20260105T000000")
    with pytest.raises(ScheduleNotComputable, match="cannot be evaluated"):
        next_slots(mixed, NOW, count=1)


# -- validation of new schedules -----------------------------------------------------------------
def _refusal(schedule: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        DeploymentCreate(name="d", flow_name="f", schedules=[{"schedule": schedule}])  # type: ignore[list-item]
    return describe_validation_errors(info.value.errors())[0]


@pytest.mark.parametrize(("schedule", "message"), [
    ({"type": "rrule", "rrule": TWICE_A_SECOND},
     "schedules.0.schedule.rrule: Value error, RDATE 2030-01-01T00:00:00.500000 is not on a whole second, so the "
     "rule fires less than 1 s apart"),
    ({"type": "rrule", "rrule": "RDATE:20300101T000000,20300101T000000.250000"},
     "schedules.0.schedule.rrule: Value error, RDATE 2030-01-01T00:00:00.250000 is not on a whole second"),
    ({"type": "interval", "interval": 0.999},
     "schedules.0.schedule.interval: Input should be greater than or equal to 1"),
    ({"type": "rrule", "rrule": NEVER}, "schedules.0.schedule.rrule: Value error, from "),
    ({"type": "rrule", "rrule": "DTSTART:20200101T000000\nRRULE:FREQ=SECONDLY;COUNT=1000000000"},
     "schedules.0.schedule.rrule: Value error, from "),
    ({"type": "rrule", "rrule": f"FREQ=YEARLY;BYHOUR={ALL_HOURS};BYMINUTE={ALL_MINUTES}"},
     "schedules.0.schedule.rrule: Value error, FREQ=YEARLY with these BY parts makes up to 527040 times in one period"),
    ({"type": "rrule", "rrule": "FREQ=MINUTELY;INTERVAL=120;BYHOUR=1"},
     "schedules.0.schedule.rrule: Value error, its rule cannot be evaluated"),
])
def test_a_schedule_too_frequent_or_too_costly_is_refused_naming_the_field(schedule: dict[str, Any],
                                                                            message: str) -> None:
    assert _refusal(schedule).startswith(message)


def test_a_costly_rule_is_told_what_to_do_instead() -> None:
    refusal = _refusal({"type": "rrule", "rrule": NEVER})
    assert "too much work to compute" in refusal and "use a coarser FREQ with BY parts, or UNTIL" in refusal


@pytest.mark.parametrize("schedule", [
    {"type": "interval", "interval": 1},  # the minimum
    {"type": "rrule", "rrule": "FREQ=SECONDLY;INTERVAL=1"},  # the same, as an rrule
    {"type": "rrule", "rrule": "FREQ=SECONDLY", "timezone": "Europe/Paris"},
    {"type": "rrule", "rrule": "RDATE:20300101T000000,20300101T000001"},  # one second apart
    {"type": "rrule", "rrule": f"FREQ=DAILY;BYHOUR=9;BYMINUTE={ALL_MINUTES};BYSECOND={ALL_MINUTES}"},  # 3600 a day
    {"type": "rrule", "rrule": "FREQ=SECONDLY;BYMONTH=2"},  # months of no slot are cheap to skip
    {"type": "rrule", "rrule": "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=29;BYHOUR=9"},  # leap days
    {"type": "rrule", "rrule": "FREQ=DAILY;COUNT=5000"},
    {"type": "rrule", "rrule": "DTSTART:20200101T000000\nRRULE:FREQ=YEARLY;UNTIL=20210101T000000"},  # over: harmless
])
def test_the_smallest_interval_and_cheap_rules_are_accepted(schedule: dict[str, Any]) -> None:
    created = DeploymentCreate(name="d", flow_name="f", schedules=[{"schedule": schedule}])  # type: ignore[list-item]
    assert created.schedules[0].schedule.type == schedule["type"]


def test_a_count_walked_from_dtstart_is_judged_over_the_coming_year() -> None:
    """COUNT counts from DTSTART, so each computation walks from there: a rule cheap today but
    not in a month is refused now, not skipped later."""
    start = f"DTSTART:{NOW:%Y%m%dT%H%M%S}\nRRULE:FREQ=MINUTELY;COUNT="
    assert rrule_problem(RRuleSchedule(rrule=start + "5000"), now=NOW) is None
    problem = rrule_problem(RRuleSchedule(rrule=start + "100000"), now=NOW)
    assert problem is not None and problem.startswith("from 2026-06-01, its slots take too much work")


def test_an_accepted_rule_stays_far_within_the_runtime_budget() -> None:
    """What validation allows (each probe within VALIDATION_STEPS) leaves the tick's budget room."""
    budget = SlotBudget()
    next_slots(RRuleSchedule(rrule="FREQ=SECONDLY;BYMONTH=2"), datetime(2026, 3, 1, tzinfo=UTC), count=1, budget=budget)
    assert budget.used < MAX_STEPS // 10


def test_a_stored_deployment_with_a_refused_rrule_still_loads() -> None:
    """Records are read without the checks new schedules get: a deployment stored before them
    must stay readable (the tick skips the schedule; see tests/functional)."""
    stored = Deployment(name="legacy", flow_name="etl", schedules=[
        DeploymentSchedule(id="never", schedule=RRuleSchedule(rrule=NEVER))]).model_dump(mode="json")
    assert Deployment.model_validate(stored).schedules[0].schedule.rrule == NEVER  # type: ignore[union-attr]
    with pytest.raises(ValidationError, match=r"schedules\.0\.schedule\.rrule"):
        DeploymentCreate(name="legacy", flow_name="etl", schedules=stored["schedules"])


def test_deploy_refuses_it_before_building_anything() -> None:
    from stratoflow import flow
    from stratoflow.deployments import DeploymentError
    from stratoflow.deployments.deploy import build_schedules

    @flow
    def etl() -> None:
        return None

    refusal = r"^schedule 0: schedule\.rrule: Value error, RDATE 2030-01-01T00:00:00\.5"
    with pytest.raises(DeploymentError, match=refusal):
        build_schedules(etl, "nightly", {}, [{"rrule": TWICE_A_SECOND}], None, None, None)
    assert [s.schedule.type for s in build_schedules(etl, "nightly", {}, [{"rrule": "FREQ=SECONDLY"}], None, None,
                                                     None)] == ["rrule"]
