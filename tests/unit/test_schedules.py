"""Schedules, pure: validation, slots (DST, day_or, anchors, rrules), slot keys, and the table of
translations to EventBridge Scheduler expressions."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from stratoflow.api.errors import describe_validation_errors
from stratoflow.schedules.models import CronSchedule, DeploymentSchedule, IntervalSchedule, RRuleSchedule
from stratoflow.schedules.slots import next_slots, parse_slot_key, slot_key
from stratoflow.schedules.translate import (
    EventBridgeExpression,
    dst_minutes,
    eventbridge_slots,
    eventbridge_to_unix,
    to_eventbridge,
    translate,
)
from stratoflow.schemas import DeploymentCreate

AFTER = datetime(2026, 1, 5, 0, 0, 30, tzinfo=UTC)  # a Monday


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# -- validation -----------------------------------------------------------------------------------
def _error(schedule: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        DeploymentCreate(name="d", flow_name="f", schedules=[{"schedule": schedule}])  # type: ignore[list-item]
    return describe_validation_errors(info.value.errors())[0]


@pytest.mark.parametrize(("schedule", "message"), [
    ({"type": "cron", "cron": "61 * * * *"}, "schedules.0.schedule.cron: Value error, '61 * * * *' is not a valid"),
    ({"type": "cron", "cron": "0 0 * * * *"}, "schedules.0.schedule.cron: Value error, '0 0 * * * *' has 6 fields"),
    ({"type": "cron", "cron": "0 0 *"}, "schedules.0.schedule.cron: Value error, '0 0 *' has 3 fields"),
    ({"type": "cron", "cron": "@reboot"}, "schedules.0.schedule.cron: Value error, '@reboot': unknown alias"),
    ({"type": "cron", "cron": "H * * * *"}, "schedules.0.schedule.cron: Value error, 'H * * * *': hashed"),
    ({"type": "cron", "cron": "0 0 30 2 *"}, "schedules.0.schedule.cron: Value error, '0 0 30 2 *' never matches"),
    ({"type": "cron", "cron": "0 0 * * *", "timezone": "Mars/Olympus"},
     "schedules.0.schedule.timezone: Value error, 'Mars/Olympus' is not an IANA time zone"),
    ({"type": "cron", "cron": "0 0 * * *", "timezone": "../../etc/passwd"},
     "schedules.0.schedule.timezone: Value error"),
    ({"type": "interval", "interval": 0.5},
     "schedules.0.schedule.interval: Input should be greater than or equal to 1"),
    ({"type": "interval", "interval": 60, "timezone": "Nowhere"}, "schedules.0.schedule.timezone: Value error"),
    ({"type": "rrule", "rrule": "FREQ=SOMETIMES"}, "schedules.0.schedule.rrule: Value error, not a valid RFC 5545"),
    ({"type": "rrule", "rrule": "FREQ=DAILY", "timezone": "X/Y"}, "schedules.0.schedule.timezone: Value error"),
    ({"type": "weekly"}, "schedules.0.schedule: Input tag 'weekly'"),
    ({"type": "cron", "cron": "0 0 * * *", "extra": 1}, "schedules.0.schedule.extra: Extra inputs"),
])
def test_a_bad_schedule_is_refused_naming_the_field(schedule: dict[str, Any], message: str) -> None:
    assert _error(schedule).startswith(message)


@pytest.mark.parametrize("cron", ["* * * * *", "*/15 9-17 * * 1-5", "0 0 L * *", "0 0 * * 5#3", "@hourly", "@daily",
                                  "@weekly", "@monthly", "@yearly", "@annually", "@midnight", "30 2 * * MON,FRI",
                                  "0 12 * * 7", "  0   0 1 * *  "])
def test_valid_crons_are_accepted(cron: str) -> None:
    assert CronSchedule(cron=cron).cron == cron


def test_valid_rrules_and_zones_are_accepted() -> None:
    weekly = "DTSTART;TZID=America/New_York:20260101T090000\nRRULE:FREQ=WEEKLY;BYDAY=MO,WE"
    assert RRuleSchedule(rrule=weekly).rrule == weekly
    daily = RRuleSchedule(rrule="FREQ=DAILY;BYHOUR=9;BYMINUTE=30", timezone="Asia/Kolkata")
    assert (daily.rrule, daily.timezone) == ("FREQ=DAILY;BYHOUR=9;BYMINUTE=30", "Asia/Kolkata")
    interval = IntervalSchedule(interval=1, timezone="America/Argentina/Buenos_Aires")
    assert (interval.interval, interval.timezone) == (1, "America/Argentina/Buenos_Aires")


def test_dumps_keep_the_type() -> None:
    ds = DeploymentSchedule(id="h", schedule=CronSchedule(cron="0 * * * *"))
    dumped = ds.model_dump(exclude_unset=True)
    assert dumped == {"id": "h", "schedule": {"type": "cron", "cron": "0 * * * *"}}
    assert DeploymentSchedule.model_validate(dumped) == ds
    assert "id" not in DeploymentSchedule(schedule=CronSchedule(cron="0 * * * *")).model_fields_set


# -- slot keys ----------------------------------------------------------------------------------------
def test_slot_keys() -> None:
    slot = datetime(2026, 3, 29, 3, 0, tzinfo=datetime.now(UTC).astimezone().tzinfo).astimezone(UTC)
    key = slot_key("dep", "sched", slot)
    assert key == f"schedule:dep:sched:{slot.isoformat()}"
    assert parse_slot_key(key) == ("dep", "sched", slot)
    from zoneinfo import ZoneInfo

    paris = datetime(2026, 1, 1, 10, 0, tzinfo=ZoneInfo("Europe/Paris"))
    assert slot_key("d", "s", paris) == "schedule:d:s:2026-01-01T09:00:00+00:00"  # the same instant, one key
    assert slot_key("d", "s", datetime(2026, 1, 1, 9, 0)) == "schedule:d:s:2026-01-01T09:00:00+00:00"
    for bad in ("", "schedule", "schedule:d", "schedule:d:s", "schedule:d:s:noon", "other:d:s:2026-01-01T00:00:00"):
        assert parse_slot_key(bad) is None


# -- next_slots -----------------------------------------------------------------------------------
def test_cron_slots_are_utc_and_strictly_after() -> None:
    s = CronSchedule(cron="*/15 9-17 * * 1-5")
    got = next_slots(s, utc(2026, 1, 5, 9, 15), count=3)
    assert got == [utc(2026, 1, 5, 9, 30), utc(2026, 1, 5, 9, 45), utc(2026, 1, 5, 10, 0)]
    assert all(t.tzinfo is UTC for t in got)
    friday_evening = next_slots(s, utc(2026, 1, 9, 17, 45), count=1)
    assert friday_evening == [utc(2026, 1, 12, 9, 0)]  # the following Monday


def test_count_until_and_both() -> None:
    s = CronSchedule(cron="0 * * * *")
    assert len(next_slots(s, AFTER, count=5)) == 5
    assert next_slots(s, AFTER, until=utc(2026, 1, 5, 3, 0)) == [utc(2026, 1, 5, h, 0) for h in (1, 2, 3)]
    assert next_slots(s, AFTER, count=2, until=utc(2026, 1, 5, 3, 0)) == [utc(2026, 1, 5, 1, 0), utc(2026, 1, 5, 2, 0)]
    assert next_slots(s, AFTER, count=0) == []
    with pytest.raises(ValueError, match="count or until"):
        next_slots(s, AFTER)


def test_cron_in_a_timezone() -> None:
    s = CronSchedule(cron="0 9 * * *", timezone="America/New_York")
    assert next_slots(s, AFTER, count=1) == [utc(2026, 1, 5, 14, 0)]  # EST = UTC-5
    assert next_slots(s, utc(2026, 7, 1), count=1) == [utc(2026, 7, 1, 13, 0)]  # EDT = UTC-4


def test_cron_dst_spring_forward_fires_after_the_gap() -> None:
    # 2026-03-29 Europe/Paris: 02:00 -> 03:00. croniter fires the skipped 02:30 at 03:00 local.
    s = CronSchedule(cron="30 2 * * *", timezone="Europe/Paris")
    assert next_slots(s, utc(2026, 3, 28, 12), count=3) == [
        utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)]


def test_cron_dst_fall_back_fires_a_repeated_time_twice() -> None:
    # 2026-10-25 Europe/Paris: 03:00 -> 02:00. 02:30 happens twice (CEST, then CET): two slots.
    s = CronSchedule(cron="30 2 * * *", timezone="Europe/Paris")
    assert next_slots(s, utc(2026, 10, 24, 12), count=3) == [
        utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30), utc(2026, 10, 26, 1, 30)]


def test_cron_every_30_minutes_keeps_real_time_through_dst() -> None:
    s = CronSchedule(cron="*/30 * * * *", timezone="Europe/Paris")
    got = next_slots(s, utc(2026, 10, 24, 23, 0), count=6)
    assert got == [utc(2026, 10, 24, 23, 30) + timedelta(minutes=30 * k) for k in range(6)]


def test_day_or() -> None:
    either = CronSchedule(cron="0 0 1 * 1")  # the 1st, or a Monday
    both = CronSchedule(cron="0 0 1 * 1", day_or=False)  # a Monday that is the 1st
    assert next_slots(either, utc(2026, 5, 30), count=3) == [utc(2026, 6, 1), utc(2026, 6, 8), utc(2026, 6, 15)]
    assert next_slots(both, utc(2026, 1, 1), count=2) == [utc(2026, 6, 1), utc(2027, 2, 1)]


def test_cron_aliases() -> None:
    assert next_slots(CronSchedule(cron="@hourly"), AFTER, count=1) == [utc(2026, 1, 5, 1, 0)]
    assert next_slots(CronSchedule(cron="@daily"), AFTER, count=1) == [utc(2026, 1, 6)]
    assert next_slots(CronSchedule(cron="@weekly"), AFTER, count=1) == [utc(2026, 1, 11)]  # Sunday


def test_interval_default_anchor() -> None:
    s = IntervalSchedule(interval=3600)
    assert next_slots(s, AFTER, count=2) == [utc(2026, 1, 5, 1), utc(2026, 1, 5, 2)]
    assert next_slots(s, utc(2026, 1, 5, 1), count=1) == [utc(2026, 1, 5, 2)]  # strictly after


def test_interval_anchors() -> None:
    aware = IntervalSchedule(interval=600, anchor_date=datetime(2026, 1, 1, 0, 7, tzinfo=UTC))
    assert next_slots(aware, AFTER, count=2) == [utc(2026, 1, 5, 0, 7), utc(2026, 1, 5, 0, 17)]
    # a naive anchor is wall time in the schedule's timezone
    naive = IntervalSchedule(interval=86400, anchor_date=datetime(2026, 1, 1, 9, 0), timezone="Europe/Paris")
    assert next_slots(naive, AFTER, count=1) == [utc(2026, 1, 5, 8, 0)]
    # absolute time: across DST the local time moves (09:00 CET -> 10:00 CEST)
    assert next_slots(naive, utc(2026, 4, 1), count=1) == [utc(2026, 4, 1, 8, 0)]
    # an anchor in the future: its first slot is the anchor
    future = IntervalSchedule(interval=60, anchor_date=datetime(2030, 1, 1, tzinfo=UTC))
    assert next_slots(future, AFTER, count=2) == [utc(2030, 1, 1), utc(2030, 1, 1, 0, 1)]


def test_interval_fractions_do_not_drift() -> None:
    s = IntervalSchedule(interval=1.1, anchor_date=datetime(2026, 1, 1, tzinfo=UTC))
    got = next_slots(s, utc(2026, 6, 1), count=3)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for t in got:
        assert ((t - base) // timedelta(microseconds=1)) % 1_100_000 == 0
    assert got[1] - got[0] == timedelta(seconds=1.1)


def test_rrule_default_dtstart_in_the_timezone() -> None:
    s = RRuleSchedule(rrule="FREQ=DAILY;BYHOUR=9", timezone="Europe/Paris")
    assert next_slots(s, AFTER, count=2) == [utc(2026, 1, 5, 8), utc(2026, 1, 6, 8)]
    weekly = RRuleSchedule(rrule="RRULE:FREQ=WEEKLY")  # DTSTART 2020-01-01, a Wednesday, midnight
    assert next_slots(weekly, AFTER, count=1) == [utc(2026, 1, 7)]


def test_rrule_with_its_own_zone_and_count() -> None:
    ny = RRuleSchedule(rrule="DTSTART;TZID=America/New_York:20260101T090000\nRRULE:FREQ=WEEKLY;BYDAY=MO")
    assert next_slots(ny, AFTER, count=2) == [utc(2026, 1, 5, 14), utc(2026, 1, 12, 14)]
    z = RRuleSchedule(rrule="DTSTART:20260105T120000Z\nRRULE:FREQ=HOURLY;COUNT=3")
    assert next_slots(z, AFTER, count=10) == [utc(2026, 1, 5, 12), utc(2026, 1, 5, 13), utc(2026, 1, 5, 14)]
    assert next_slots(z, utc(2026, 1, 6), count=10) == []  # exhausted


def test_rrule_exdate() -> None:
    s = RRuleSchedule(rrule="DTSTART:20260105T000000Z\nRRULE:FREQ=DAILY\nEXDATE:20260106T000000Z")
    assert next_slots(s, AFTER, count=2) == [utc(2026, 1, 7), utc(2026, 1, 8)]


@pytest.mark.parametrize("rule", ["FREQ=MINUTELY;INTERVAL=7", "FREQ=HOURLY;INTERVAL=5;BYMINUTE=15,45",
                                  "FREQ=DAILY;INTERVAL=3;BYHOUR=9,21", "FREQ=SECONDLY;INTERVAL=13"])
def test_rrule_search_near_the_cursor_matches_plain_iteration(rule: str) -> None:
    from dateutil.rrule import rrulestr

    s = RRuleSchedule(rrule=rule)
    after = utc(2020, 1, 9, 17, 3, 1)
    expected = list(itertools.islice((t.replace(tzinfo=UTC) for t in rrulestr(rule, dtstart=datetime(2020, 1, 1))
                                      if t.replace(tzinfo=UTC) > after), 20))
    assert next_slots(s, after, count=20) == expected


def test_rrule_dst_repeated_hour_fires_once() -> None:
    s = RRuleSchedule(rrule="FREQ=HOURLY", timezone="Europe/Paris")
    got = next_slots(s, utc(2026, 10, 24, 23), count=3)
    assert got == [utc(2026, 10, 25, 0), utc(2026, 10, 25, 2), utc(2026, 10, 25, 3)]


# -- translation to EventBridge -----------------------------------------------------------------
TRANSLATIONS: list[tuple[str, str, bool, str | None]] = [
    # cron, timezone, day_or, EventBridge expression (None: the tick)
    ("*/15 9-17 * * 1-5", "UTC", True, "cron(0/15 9-17 ? * MON-FRI *)"),
    ("*/15 9-17 * * 1-5", "Europe/Paris", True, "cron(0/15 9-17 ? * MON-FRI *)"),
    ("0 0 1 * *", "UTC", True, "cron(0 0 1 * ? *)"),
    ("0 12 * * 0", "UTC", True, "cron(0 12 ? * SUN *)"),
    ("0 12 * * 7", "UTC", True, "cron(0 12 ? * SUN *)"),
    ("30 2 * * MON,FRI", "UTC", True, "cron(30 2 ? * MON,FRI *)"),
    ("30 2 * * mon,fri", "UTC", True, "cron(30 2 ? * MON,FRI *)"),
    ("30 2 * * MON,FRI", "Europe/Paris", True, None),  # 02:30 is in Paris's DST window
    ("0 0 1 * 1", "UTC", True, None),  # both days restricted, OR
    ("0 0 1 * 1", "UTC", False, None),  # both days restricted, AND
    ("0 9 * * 1-5", "UTC", False, "cron(0 9 ? * MON-FRI *)"),  # day_or only matters when both are restricted
    ("@hourly", "UTC", True, "cron(0 * * * ? *)"),
    ("@hourly", "Europe/Paris", True, None),
    ("@daily", "UTC", True, "cron(0 0 * * ? *)"),
    ("@daily", "Europe/Paris", True, "cron(0 0 * * ? *)"),
    ("@weekly", "UTC", True, "cron(0 0 ? * SUN *)"),
    ("@monthly", "UTC", True, "cron(0 0 1 * ? *)"),
    ("@yearly", "UTC", True, "cron(0 0 1 1 ? *)"),
    ("* * * * *", "UTC", True, "cron(* * * * ? *)"),
    ("* * * * *", "America/New_York", True, None),
    ("0-59 0-23 1-31 1-12 0-6", "UTC", True, "cron(* * * * ? *)"),
    ("0/5 * * * *", "UTC", True, "cron(0/5 * * * ? *)"),
    ("5-40/10 * * * *", "UTC", True, "cron(5,15,25,35 * * * ? *)"),
    ("5/10 * * * *", "UTC", True, "cron(5/10 * * * ? *)"),
    ("0 */6 * * *", "UTC", True, "cron(0 0/6 * * ? *)"),
    ("0 0 */2 * *", "UTC", True, "cron(0 0 1/2 * ? *)"),
    ("0 0 1,15 * *", "UTC", True, "cron(0 0 1,15 * ? *)"),
    ("0 0 * 1-3,6 *", "UTC", True, "cron(0 0 * 1-3,6 ? *)"),
    ("0 0 1 JAN,JUL *", "UTC", True, "cron(0 0 1 1,7 ? *)"),
    ("0 0 1 1,4,7,10 *", "UTC", True, "cron(0 0 1 1/3 ? *)"),
    ("0,30 * * * *", "UTC", True, "cron(0,30 * * * ? *)"),
    ("0 0 1-31 * 1-5", "UTC", True, "cron(0 0 * * ? *)"),  # OR with every day of the month: every day
    ("0 0 1-31 * 1-5", "UTC", False, "cron(0 0 ? * MON-FRI *)"),  # AND with every day of the month
    ("0 0 1,15 * 0-6", "UTC", False, "cron(0 0 1,15 * ? *)"),
    ("0 0 * * */2", "UTC", True, "cron(0 0 ? * SUN,TUE,THU,SAT *)"),
    ("0 0 * * 5-7", "UTC", True, "cron(0 0 ? * SUN,FRI-SAT *)"),
    ("0 0 * * SAT,SUN", "UTC", True, "cron(0 0 ? * SUN,SAT *)"),
    ("0 0 L * *", "UTC", True, "cron(0 0 L * ? *)"),
    ("0 0 * * 5#3", "UTC", True, "cron(0 0 ? * 6#3 *)"),
    ("0 0 * * 0#1", "UTC", True, "cron(0 0 ? * 1#1 *)"),
    ("0 0 * * 1#1,5#3", "UTC", True, None),
    ("0 2 * * *", "Australia/Lord_Howe", True, None),  # a 30-minute DST shift at 02:00
    ("0 12 * * *", "Australia/Lord_Howe", True, "cron(0 12 * * ? *)"),
    ("0 3 * * *", "Asia/Kolkata", True, "cron(0 3 * * ? *)"),  # no DST
]


@pytest.mark.parametrize(("cron", "tz", "day_or", "expected"), TRANSLATIONS)
def test_cron_translation_table(cron: str, tz: str, day_or: bool, expected: str | None) -> None:
    got = translate(CronSchedule(cron=cron, timezone=tz, day_or=day_or))
    if expected is None:
        assert got.expression is None and got.reason
    else:
        assert got.expression == EventBridgeExpression(expected, tz)


@pytest.mark.parametrize(("cron", "tz", "day_or", "expected"), [t for t in TRANSLATIONS if t[3] is not None])
def test_translated_crons_fire_exactly_croniters_slots(cron: str, tz: str, day_or: bool, expected: str) -> None:
    """EventBridge's expression, evaluated by EventBridge's rules, fires the same 300 times."""
    schedule = CronSchedule(cron=cron, timezone=tz, day_or=day_or)
    expr = to_eventbridge(schedule)
    assert expr is not None
    ours = next_slots(schedule, AFTER, count=300)
    theirs = eventbridge_slots(expr, AFTER, ours[-1])
    assert theirs == ours


@pytest.mark.parametrize(("cron", "day_or", "reason"), [
    ("0 0 1 * 1", True, "OR rule"),
    ("0 0 1 * 1", False, "day_or=False"),
    ("30 2 * * *", True, "changes clocks at 02:30"),
    ("0 0 * * 1#1,5#3", True, "weekday#n"),
])
def test_untranslatable_crons_say_why(cron: str, day_or: bool, reason: str) -> None:
    got = translate(CronSchedule(cron=cron, day_or=day_or, timezone="Europe/Paris"))
    assert got.expression is None and reason in got.reason


@pytest.mark.parametrize(("interval", "anchor", "expected", "reason"), [
    (60, None, "rate(1 minute)", None),
    (300, None, "rate(5 minutes)", None),
    (420, datetime(2026, 1, 1, 0, 3, tzinfo=UTC), "rate(7 minutes)", None),
    (3600, None, "rate(1 hour)", None),
    (7200, None, "rate(2 hours)", None),
    (5400, None, "rate(90 minutes)", None),
    (86400, None, "rate(1 day)", None),
    (172800, None, "rate(2 days)", None),
    (30, None, None, "under EventBridge's one-minute resolution"),
    (90, None, None, "not a whole number of minutes"),
    (60.5, None, None, "not a whole number of minutes"),
    (300, datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC), None, "not on a whole minute"),
])
def test_interval_translation(interval: float, anchor: datetime | None, expected: str | None,
                              reason: str | None) -> None:
    schedule = IntervalSchedule(interval=interval, anchor_date=anchor)
    got = translate(schedule)
    if expected is None:
        assert got.expression is None and reason is not None and reason in got.reason
        return
    assert got.expression == EventBridgeExpression(expected, "UTC", anchor or datetime(2020, 1, 1, tzinfo=UTC))
    ours = next_slots(schedule, AFTER, count=50)
    assert eventbridge_slots(got.expression, AFTER, ours[-1]) == ours


def test_interval_anchor_in_a_timezone_translates_at_its_utc_instant() -> None:
    s = IntervalSchedule(interval=3600, anchor_date=datetime(2026, 1, 1, 9, 30), timezone="Asia/Kolkata")
    expr = to_eventbridge(s)
    assert expr == EventBridgeExpression("rate(1 hour)", "UTC", utc(2026, 1, 1, 4, 0))


def test_rrules_are_never_translated() -> None:
    got = translate(RRuleSchedule(rrule="FREQ=DAILY"))
    assert got.expression is None and "rrule" in got.reason


def test_dst_windows() -> None:
    assert dst_minutes("UTC") == frozenset()
    assert dst_minutes("Asia/Kolkata") == frozenset()
    assert dst_minutes("Europe/Paris") == frozenset(range(120, 180))
    assert dst_minutes("America/New_York") == frozenset(range(60, 180))  # 01:xx repeated, 02:xx skipped


@pytest.mark.parametrize(("eventbridge", "unix"), [
    ("cron(0/15 9-17 ? * MON-FRI *)", "0/15 9-17 * * MON-FRI"),
    ("cron(0 12 ? * 1 *)", "0 12 * * 0"),
    ("cron(0 12 ? * 2-6 *)", "0 12 * * 1-5"),
    ("cron(0 0 ? * 6#3 *)", "0 0 * * 5#3"),
    ("cron(0 0 L * ? *)", "0 0 L * *"),
])
def test_eventbridge_to_unix(eventbridge: str, unix: str) -> None:
    assert eventbridge_to_unix(eventbridge) == unix


@pytest.mark.parametrize("bad", ["rate(5 minutes)", "cron(0 0 * * ?)", "cron(0 0 * * ? 2030)"])
def test_eventbridge_to_unix_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        eventbridge_to_unix(bad)


def test_eventbridge_cron_skips_a_missing_time_and_fires_a_repeated_one_once() -> None:
    expr = EventBridgeExpression("cron(30 2 * * ? *)", "Europe/Paris")
    spring = eventbridge_slots(expr, utc(2026, 3, 28, 12), utc(2026, 3, 31, 12))
    assert spring == [utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)]
    fall = eventbridge_slots(expr, utc(2026, 10, 24, 12), utc(2026, 10, 26, 12))
    assert fall == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]


def test_eventbridge_rate_without_start_date_counts_from_the_epoch() -> None:
    got = eventbridge_slots(EventBridgeExpression("rate(1 minute)"), utc(2026, 1, 1, 0, 0, 30), utc(2026, 1, 1, 0, 3))
    assert got == [utc(2026, 1, 1, 0, 1), utc(2026, 1, 1, 0, 2), utc(2026, 1, 1, 0, 3)]
