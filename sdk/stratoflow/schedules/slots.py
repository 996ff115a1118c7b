"""When a schedule fires: ``next_slots`` for cron, interval and rrule schedules, and the
idempotency key of a slot. Pure: no boto3, no I/O.

Every slot is a timezone-aware UTC ``datetime``, strictly after ``after``.

* **cron** is evaluated by croniter in the schedule's timezone, with ``day_or``. Daylight saving
  time is handled the way croniter does it: a wall time skipped when clocks go forward fires at
  the first valid time after the gap (``30 2 * * *`` in Europe/Paris on 2026-03-29 fires at 03:00
  local), and a wall time repeated when clocks go back fires twice, once in each offset (02:30
  CEST and 02:30 CET on 2026-10-25). Every-N-minutes schedules keep firing every N real minutes
  through both transitions.
* **interval**: ``anchor + k * interval`` for whole k, in absolute time (an interval of 86400 s
  is 24 hours, so across a DST change its local wall time moves by an hour; use cron for "9:00
  local every day"). A naive anchor is wall time in the schedule's timezone; the default anchor
  is 2020-01-01 00:00 there.
* **rrule**: dateutil's rrule, iterated in wall time of the schedule's timezone when DTSTART has
  no zone (or is absent: 2020-01-01 00:00), or in DTSTART's own zone when it has one (``TZID=``
  or ``Z``). A wall time that does not exist is taken with the offset before the gap, a repeated
  one fires once (its first occurrence).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from stratoflow.schedules.models import CronSchedule, IntervalSchedule, RRuleSchedule, expand_cron

AnySchedule = CronSchedule | IntervalSchedule | RRuleSchedule
DEFAULT_ANCHOR = datetime(2020, 1, 1)
# A safety bound: next_slots never returns more than this many slots in one call.
MAX_SLOTS = 100_000
SLOT_KEY_PREFIX = "schedule"


@functools.lru_cache(maxsize=256)
def zone(name: str) -> tzinfo:
    return UTC if name == "UTC" else ZoneInfo(name)


def utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive value is taken as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def slot_key(deployment_id: str, schedule_id: str, slot: datetime) -> str:
    """The idempotency key of the run for ``slot``: ``schedule:{deployment}:{schedule}:{UTC iso}``."""
    return f"{SLOT_KEY_PREFIX}:{deployment_id}:{schedule_id}:{utc(slot).isoformat()}"


def slot_key_prefix(deployment_id: str, schedule_id: str) -> str:
    return f"{SLOT_KEY_PREFIX}:{deployment_id}:{schedule_id}:"


def parse_slot_key(key: str) -> tuple[str, str, datetime] | None:
    """``(deployment_id, schedule_id, slot)`` of a key ``slot_key`` made, else None."""
    prefix, sep, rest = key.partition(":")
    if prefix != SLOT_KEY_PREFIX or not sep:
        return None
    dep_id, sep1, rest = rest.partition(":")
    schedule_id, sep2, stamp = rest.partition(":")
    if not (sep1 and sep2 and dep_id and schedule_id):
        return None
    try:
        return dep_id, schedule_id, utc(datetime.fromisoformat(stamp))
    except ValueError:
        return None


def next_slots(schedule: AnySchedule, after: datetime, *, count: int | None = None,
               until: datetime | None = None) -> list[datetime]:
    """The schedule's slots strictly after ``after``: the first ``count`` of them, or those at or
    before ``until``, or both limits (whichever ends first). One of them is required."""
    if count is None and until is None:
        raise ValueError("next_slots needs count or until")
    if count is not None and count < 0:
        raise ValueError("count must be >= 0")
    limit = MAX_SLOTS if count is None else min(count, MAX_SLOTS)
    after_utc = utc(after)
    until_utc = utc(until) if until is not None else None
    out: list[datetime] = []
    if limit == 0:
        return out
    for slot in iter_slots(schedule, after_utc):
        if until_utc is not None and slot > until_utc:
            break
        out.append(slot)
        if len(out) >= limit:
            break
    return out


def iter_slots(schedule: AnySchedule, after: datetime) -> Iterator[datetime]:
    """Every slot strictly after ``after``, ascending, in UTC (possibly endless)."""
    after = utc(after)
    if isinstance(schedule, CronSchedule):
        source = _cron_slots(schedule, after)
    elif isinstance(schedule, IntervalSchedule):
        source = _interval_slots(schedule, after)
    else:
        source = _rrule_slots(schedule, after)
    last = after
    for slot in source:
        if slot > last:  # strictly increasing whatever the source does around DST
            last = slot
            yield slot


def _cron_slots(schedule: CronSchedule, after: datetime) -> Iterator[datetime]:
    from croniter import croniter

    it = croniter(expand_cron(schedule.cron), after.astimezone(zone(schedule.timezone)), day_or=schedule.day_or)
    while True:
        try:
            nxt = it.get_next(datetime)
        except Exception:
            return
        yield utc(nxt)


def interval_anchor(schedule: IntervalSchedule) -> datetime:
    anchor = schedule.anchor_date or DEFAULT_ANCHOR
    if anchor.tzinfo is None:
        anchor = anchor.replace(tzinfo=zone(schedule.timezone))
    return utc(anchor)


def _interval_slots(schedule: IntervalSchedule, after: datetime) -> Iterator[datetime]:
    # Integer microseconds: no float drift however far from the anchor.
    step = round(schedule.interval * 1_000_000)
    anchor = interval_anchor(schedule)
    elapsed = (after - anchor) // timedelta(microseconds=1)
    k = elapsed // step + 1 if elapsed >= 0 else 0
    while True:
        yield anchor + timedelta(microseconds=k * step)
        k += 1


def parse_rrule(schedule: RRuleSchedule) -> object:
    from dateutil.rrule import rrulestr

    return rrulestr(schedule.rrule, forceset=True, dtstart=DEFAULT_ANCHOR)


# dateutil iterates a rule from its DTSTART on every call: a minutely rule anchored in 2020 walks
# millions of occurrences. A rule without COUNT whose period has a fixed wall-clock length (daily
# and shorter) fires the same times from DTSTART + k whole periods, so DTSTART is moved to just
# before where the search starts. (Weekly and longer rules have few occurrences; COUNT counts
# from DTSTART, so those rules are left alone.)
_PERIODS = {3: timedelta(days=1), 4: timedelta(hours=1), 5: timedelta(minutes=1), 6: timedelta(seconds=1)}


def _moved_near(rules: object, target: datetime) -> object:
    from dateutil.rrule import rrule, rruleset

    members = getattr(rules, "_rrule", None)
    if not isinstance(rules, rruleset) or not members:
        return rules
    moved = rruleset()
    for member in members:
        period = _PERIODS.get(member._freq)
        start = member._dtstart
        if (period is not None and member._count is None and start is not None
                and (start.tzinfo is None) == (target.tzinfo is None) and start < target):
            step = period * member._interval
            member = member.replace(dtstart=start + ((target - start) // step) * step)
        assert isinstance(member, rrule)
        moved.rrule(member)
    for when in getattr(rules, "_rdate", []):
        moved.rdate(when)
    for rule in getattr(rules, "_exrule", []):
        moved.exrule(rule)
    for when in getattr(rules, "_exdate", []):
        moved.exdate(when)
    return moved


def _rrule_slots(schedule: RRuleSchedule, after: datetime) -> Iterator[datetime]:
    rules = parse_rrule(schedule)
    first = next(iter(rules), None)  # type: ignore[call-overload]
    if first is None:
        return
    if first.tzinfo is not None:  # DTSTART carries its own zone: iterate in it
        cursor = after.astimezone(first.tzinfo)
        rules = _moved_near(rules, cursor - timedelta(hours=3))
        while True:
            nxt = rules.after(cursor)  # type: ignore[attr-defined]
            if nxt is None:
                return
            yield utc(nxt)
            cursor = nxt
    tz = zone(schedule.timezone)
    # Wall time: step back three hours (more than any DST shift) so a slot just after ``after``
    # whose wall time is earlier (a repeated hour) is not missed; iter_slots drops the rest.
    cursor_naive = after.astimezone(tz).replace(tzinfo=None) - timedelta(hours=3)
    rules = _moved_near(rules, cursor_naive)
    while True:
        nxt = rules.after(cursor_naive)  # type: ignore[attr-defined]
        if nxt is None:
            return
        yield utc(nxt.replace(tzinfo=tz))
        cursor_naive = nxt
