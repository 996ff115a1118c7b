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

**Bounded work.** dateutil always iterates a rule from its DTSTART, so each computation walks the
rule once from just before ``after`` (DTSTART moved forward by whole periods, which changes no
slot) instead of from 2020, and charges a ``SlotBudget``: a fixed allowance plus a little per slot
produced, and a deadline. A schedule that needs more (a rule whose days never match spins through
periods inside dateutil without producing anything) raises ``ScheduleNotComputable`` instead of
holding the API or the tick. ``rrule_problem`` refuses such rules before they are stored.
"""

from __future__ import annotations

import functools
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from stratoflow.exceptions import StratoflowError
from stratoflow.schedules.models import (
    MIN_INTERVAL_SECONDS,
    CronSchedule,
    IntervalSchedule,
    RRuleSchedule,
    expand_cron,
)

AnySchedule = CronSchedule | IntervalSchedule | RRuleSchedule
DEFAULT_ANCHOR = datetime(2020, 1, 1)
# A safety bound: next_slots never returns more than this many slots in one call.
MAX_SLOTS = 100_000
SLOT_KEY_PREFIX = "schedule"

# Work one computation may do (``SlotBudget``). A step is ~3 us of dateutil: 50k is ~0.2 s, far
# above what a computation of the tick needs (1000 slots of an every-second rule: ~2000 steps).
MAX_STEPS = 50_000
STEPS_PER_SLOT = 64
# Backstop for the work dateutil does between two steps (a FREQ=SECONDLY rule with BYHOUR scans
# up to a day of seconds there, ~30 ms).
MAX_SECONDS = 2.0
# What a new rrule must stay within (``rrule_problem``): less than the runtime budget, so an
# accepted rule never reaches it. Its next slots are computed from each of PROBES starting points a
# month apart (a rule that fires only in some months spins from the others), each within
# VALIDATION_STEPS, all within VALIDATION_SECONDS; one period may hold VALIDATION_STEPS occurrences.
# The steps decide (the same answer on any machine); the time is a backstop for dateutil's work
# between steps, set far above what the steps allow (a loaded machine must not refuse a cheap rule).
VALIDATION_STEPS = 20_000
VALIDATION_SECONDS = 5.0
PROBES = 13
PROBE_SPACING = timedelta(days=31)

# dateutil's frequencies (dateutil.rrule.YEARLY ... SECONDLY), and the length of the periods that
# have a fixed one in wall time.
YEARLY, MONTHLY, WEEKLY, DAILY, HOURLY, MINUTELY, SECONDLY = range(7)
_FIXED_PERIODS = {WEEKLY: timedelta(weeks=1), DAILY: timedelta(days=1), HOURLY: timedelta(hours=1),
                  MINUTELY: timedelta(minutes=1), SECONDLY: timedelta(seconds=1)}
_DAYS_PER_PERIOD = {YEARLY: 366, MONTHLY: 31, WEEKLY: 7, DAILY: 1}
_FREQ_NAMES = ("YEARLY", "MONTHLY", "WEEKLY", "DAILY", "HOURLY", "MINUTELY", "SECONDLY")


class ScheduleNotComputable(StratoflowError, ValueError):
    """The schedule's slots cannot be computed: dateutil fails on its rule, or (``SlotBudgetExceeded``)
    they take more than a ``SlotBudget``."""


class SlotBudgetExceeded(ScheduleNotComputable):
    """The slots take more work or time than the computation's ``SlotBudget``."""


@dataclass
class SlotBudget:
    """How much work one slot computation may do, so no schedule, however written or stored,
    holds a request or a tick. A step is one candidate examined: a croniter time, an interval
    slot, or for an rrule a period dateutil visits or an occurrence it makes. ``steps`` are
    allowed up front and ``per_slot`` more for each slot produced: work stays linear in the slots,
    and a rule that produces nothing stops after ``steps``. ``seconds`` from now is a deadline on
    top (or ``deadline``, a ``clock()`` value, to share one between budgets)."""

    steps: int = MAX_STEPS
    per_slot: int = STEPS_PER_SLOT
    seconds: float = MAX_SECONDS
    clock: Callable[[], float] = time.monotonic
    deadline: float | None = None
    used: int = 0
    slots: int = 0

    def __post_init__(self) -> None:
        if self.deadline is None:
            self.deadline = self.clock() + self.seconds

    def spend(self) -> None:
        self.used += 1
        if self.used > self.steps + self.per_slot * self.slots:
            raise SlotBudgetExceeded(f"its slots take too much work to compute ({self.used - 1} steps "
                                        f"for {self.slots} slots)")
        if self.deadline is not None and self.clock() > self.deadline:
            raise SlotBudgetExceeded(f"its slots take too long to compute (over {self.seconds:g} s for "
                                        f"{self.slots} slots)")


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
               until: datetime | None = None, budget: SlotBudget | None = None) -> list[datetime]:
    """The schedule's slots strictly after ``after``: the first ``count`` of them, or those at or
    before ``until``, or both limits (whichever ends first). One of them is required. Raises
    ``ScheduleNotComputable`` when they take more than ``budget`` (default ``SlotBudget()``)."""
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
    for slot in iter_slots(schedule, after_utc, budget):
        if until_utc is not None and slot > until_utc:
            break
        out.append(slot)
        if len(out) >= limit:
            break
    return out


def iter_slots(schedule: AnySchedule, after: datetime, budget: SlotBudget | None = None) -> Iterator[datetime]:
    """Every slot strictly after ``after``, ascending, in UTC (possibly endless), within ``budget``
    (default: a fresh ``SlotBudget()`` for this iteration)."""
    after = utc(after)
    budget = budget if budget is not None else SlotBudget()
    if isinstance(schedule, CronSchedule):
        source = _cron_slots(schedule, after, budget)
    elif isinstance(schedule, IntervalSchedule):
        source = _interval_slots(schedule, after, budget)
    else:
        source = _rrule_slots(schedule, after, budget)
    last = after
    for slot in source:
        if slot > last:  # strictly increasing whatever the source does around DST
            last = slot
            budget.slots += 1
            yield slot


def _cron_slots(schedule: CronSchedule, after: datetime, budget: SlotBudget) -> Iterator[datetime]:
    # cold start: croniter loads when a cron is first read, not with every model import
    from croniter import croniter

    it = croniter(expand_cron(schedule.cron), after.astimezone(zone(schedule.timezone)), day_or=schedule.day_or)
    while True:
        budget.spend()
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


def _interval_slots(schedule: IntervalSchedule, after: datetime, budget: SlotBudget) -> Iterator[datetime]:
    # Integer microseconds: no float drift however far from the anchor.
    step = round(schedule.interval * 1_000_000)
    anchor = interval_anchor(schedule)
    elapsed = (after - anchor) // timedelta(microseconds=1)
    k = elapsed // step + 1 if elapsed >= 0 else 0
    while True:
        budget.spend()
        yield anchor + timedelta(microseconds=k * step)
        k += 1


# -- rrule ----------------------------------------------------------------------------------------
def parse_rrule(schedule: RRuleSchedule) -> Any:
    """The schedule's ``dateutil.rrule.rruleset`` (DTSTART 2020-01-01 00:00 when it has none)."""
    # cold start: dateutil's rrule loads when an rrule is first read
    from dateutil.rrule import rrulestr

    return rrulestr(schedule.rrule, forceset=True, dtstart=DEFAULT_ANCHOR)


@functools.cache
def _counting_rule_type() -> type:
    """dateutil's ``rrule`` charging ``self.budget`` a step for every occurrence it makes and every
    period it visits. The periods are counted in dateutil's own loop (``rrule._iter`` run with a
    per-period helper that counts), because a rule whose days never match
    (``FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30``) spins there until year 9999 without producing
    anything: seconds inside a single ``next()``."""
    # cold start: dateutil's rrule loads when an rrule is first read
    from dateutil import rrule as du

    # No __slots__ of its own: _iterinfo.__init__ sets every name in self.__slots__ (its own list).
    class CountingIterInfo(du._iterinfo):
        def ydayset(self, year: int, month: int, day: int) -> Any:
            self.rrule.budget.spend()
            return super().ydayset(year, month, day)

        def mdayset(self, year: int, month: int, day: int) -> Any:
            self.rrule.budget.spend()
            return super().mdayset(year, month, day)

        def wdayset(self, year: int, month: int, day: int) -> Any:
            self.rrule.budget.spend()
            return super().wdayset(year, month, day)

        def ddayset(self, year: int, month: int, day: int) -> Any:
            self.rrule.budget.spend()
            return super().ddayset(year, month, day)

    plain = du.rrule._iter
    counted = types.FunctionType(plain.__code__, {**vars(du), "_iterinfo": CountingIterInfo}, plain.__name__,
                                 plain.__defaults__, plain.__closure__)

    class CountingRule(du.rrule):
        budget: SlotBudget

        def _iter(self) -> Iterator[datetime]:
            for when in counted(self):
                self.budget.spend()
                yield when

    return CountingRule


def _plus_months(when: datetime, months: int) -> datetime:
    years, month0 = divmod(when.month - 1 + months, 12)
    return when.replace(year=when.year + years, month=month0 + 1)


def moved_dtstart(rule: Any, start: datetime) -> datetime:
    """``rule``'s DTSTART moved forward by whole periods to at most ``start``, so dateutil walks
    at most one period to get there. The rule fires the same times from there on: its periods
    keep their phase, and what DTSTART implies when a BY part is absent (time of day, weekday, day
    of month) is unchanged. Kept where that does not hold: COUNT (counted from the real DTSTART),
    a monthly DTSTART after the 28th and a yearly one on 29 February (not every period has it)."""
    dtstart: datetime = rule._dtstart
    if rule._count is not None or (dtstart.tzinfo is None) != (start.tzinfo is None):
        return dtstart
    first = dtstart.replace(tzinfo=None)
    target = (start.astimezone(dtstart.tzinfo) if dtstart.tzinfo is not None else start).replace(tzinfo=None)
    if target <= first:
        return dtstart
    freq, n = rule._freq, rule._interval
    if freq in _FIXED_PERIODS:
        step = _FIXED_PERIODS[freq] * n
        moved = first + (target - first) // step * step
    elif (freq == MONTHLY and first.day <= 28) or (freq == YEARLY and (first.month, first.day) != (2, 29)):
        months = n * (12 if freq == YEARLY else 1)
        whole = ((target.year - first.year) * 12 + target.month - first.month) // months * months
        moved = _plus_months(first, whole)
        if moved > target:
            moved = _plus_months(first, whole - months)
    else:
        return dtstart
    return moved.replace(tzinfo=dtstart.tzinfo)


def counted_rules(rules: Any, start: datetime, budget: SlotBudget) -> Any:
    """A copy of the rruleset ``rules`` whose RRULEs and EXRULEs start near ``start`` (wall time,
    with a zone when the rule has one) and charge ``budget``."""
    # cold start: dateutil's rrule loads when an rrule is first read
    from dateutil.rrule import rruleset

    rule_type = _counting_rule_type()

    def counted(rule: Any) -> Any:
        copy = rule_type(freq=rule._freq, dtstart=moved_dtstart(rule, start), interval=rule._interval,
                         wkst=rule._wkst, count=rule._count, until=rule._until, **rule._original_rule)
        copy.budget = budget
        return copy

    out = rruleset()
    for rule in rules._rrule:
        out.rrule(counted(rule))
    for rule in rules._exrule:
        out.exrule(counted(rule))
    for when in rules._rdate:
        out.rdate(when)
    for when in rules._exdate:
        out.exdate(when)
    return out


def rule_zone(rules: Any) -> tzinfo | None:
    """The zone an rruleset's times carry (DTSTART with ``TZID=`` or ``Z``), None for wall times."""
    for when in [*(r._dtstart for r in (*rules._rrule, *rules._exrule)), *rules._rdate]:
        if when.tzinfo is not None:
            return when.tzinfo
    return None


def _wall_start(after: datetime, tz: tzinfo) -> datetime:
    """The first wall time in ``tz`` that can fire after ``after``. A wall time w fires at
    w - offset(w), so every wall time before ``after`` + the smallest offset around it (the one
    before a gap, or after clocks go back) fires at or before ``after``."""
    day = timedelta(days=1)
    offsets = [(after + d).astimezone(tz).utcoffset() or timedelta(0) for d in (-day, timedelta(0), day)]
    return (after + min(offsets)).replace(tzinfo=None)


def _rrule_slots(schedule: RRuleSchedule, after: datetime, budget: SlotBudget) -> Iterator[datetime]:
    try:
        rules = parse_rrule(schedule)
        own = rule_zone(rules)
        tz = own or zone(schedule.timezone)
        start = _wall_start(after, tz)
        walk = iter(counted_rules(rules, start if own is None else start.replace(tzinfo=own), budget))
        while True:
            try:
                when = next(walk)
            except StopIteration:
                return
            yield utc(when if when.tzinfo is not None else when.replace(tzinfo=tz))
    except ScheduleNotComputable:
        raise
    except (ValueError, TypeError, OverflowError) as exc:  # dateutil's, e.g. naive and aware times mixed
        raise ScheduleNotComputable(f"its rule cannot be evaluated: {exc}") from None


# -- validation of a new rrule ------------------------------------------------------------------
def _per_period(rule: Any) -> int:
    """At most how many occurrences one period of ``rule`` holds (what a walk from a moved
    DTSTART may cross before reaching its start)."""
    freq = rule._freq
    if freq == SECONDLY:
        return 1
    size = len(rule._bysecond or range(60))
    if freq <= HOURLY:
        size *= len(rule._byminute or range(60))
    if freq <= DAILY:
        size *= len(rule._byhour or range(24)) * _DAYS_PER_PERIOD[freq]
    return min(size, len(rule._bysetpos)) if rule._bysetpos else size


def rrule_problem(schedule: RRuleSchedule, now: datetime | None = None) -> str | None:
    """Why a new rrule is refused, or None.

    * It fires less than ``MIN_INTERVAL_SECONDS`` (1 s) apart. A rule makes whole seconds
      (dateutil drops fractions) and distinct whole seconds are at least 1 s apart, so only an RDATE
      with a fraction of a second can: that is the exact test.
    * One period holds more than ``VALIDATION_STEPS`` occurrences (``FREQ=YEARLY`` with every
      hour, minute and second listed): each computation would walk up to a period.
    * Its next slots after each of ``PROBES`` points, a month apart from ``now``, cannot be
      computed within ``VALIDATION_STEPS`` each and ``VALIDATION_SECONDS`` in all: days that
      rarely or never match, a long COUNT walked from DTSTART, or a rule dateutil cannot evaluate.
    """
    assert MIN_INTERVAL_SECONDS <= 1, "the RDATE test below is exact only down to dateutil's 1 s resolution"
    try:
        rules = parse_rrule(schedule)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        return f"not a valid RFC 5545 recurrence rule: {exc}"
    for when in rules._rdate:
        if when.microsecond:
            return (f"RDATE {when.isoformat()} is not on a whole second, so the rule fires less than "
                    f"{MIN_INTERVAL_SECONDS:g} s apart (the minimum interval between slots)")
    for rule in (*rules._rrule, *rules._exrule):
        size = _per_period(rule)
        if size > VALIDATION_STEPS:
            return (f"FREQ={_FREQ_NAMES[rule._freq]} with these BY parts makes up to {size} times in one period "
                    f"(at most {VALIDATION_STEPS}); use a shorter FREQ")
    now = utc(now or datetime.now(UTC))
    deadline = time.monotonic() + VALIDATION_SECONDS
    for k in range(PROBES):
        probe = now + k * PROBE_SPACING
        budget = SlotBudget(steps=VALIDATION_STEPS, seconds=VALIDATION_SECONDS, deadline=deadline)
        try:
            next_slots(schedule, probe, count=2, budget=budget)
        except SlotBudgetExceeded as exc:
            return (f"from {probe:%Y-%m-%d}, {exc}: a rule whose days rarely or never match, or a long COUNT "
                    "walked from DTSTART, is refused (use a coarser FREQ with BY parts, or UNTIL)")
        except ScheduleNotComputable as exc:
            return str(exc)
    return None
