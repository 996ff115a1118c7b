"""Translate a schedule to an EventBridge Scheduler expression, or say why it cannot be.

Pure: no boto3. The rules (docs/schedules.md has the full table):

* Unix cron (5 fields, croniter's meaning) -> ``cron(min hour dom month dow year)``: the year is
  ``*``; exactly one of day-of-month / day-of-week is ``?``; day-of-week is written with names
  (``SUN``..``SAT``: Unix 0 and 7 are both ``SUN``, EventBridge numbers days 1-7 from Sunday, so
  names leave no room for an off-by-one); every other field is rewritten from the set of values
  croniter expands it to: ``*`` when it is every value, ``start/step`` when it is an arithmetic
  progression running to the field's end, else a list of values and ``a-b`` ranges. ``L`` as the
  whole day-of-month stays ``L``; a single ``weekday#n`` becomes EventBridge's ``d#n``.
* Not translated (the per-minute tick computes those slots with croniter instead):
  both day-of-month and day-of-week restricted (cron's OR rule with ``day_or=True``, AND with
  ``day_or=False``: EventBridge can express neither); a cron whose wall times fall in a DST
  transition window of its timezone (EventBridge skips a wall time that does not exist and fires
  a repeated one once; croniter moves the first to after the gap and fires the second twice);
  other croniter extensions; an expression over EventBridge's 256 characters.
* interval -> ``rate(N minutes|hours|days)`` with ``StartDate`` at the anchor (EventBridge starts
  a rate schedule at its StartDate, so the slots are ``anchor + k * interval`` exactly) when the
  interval is a whole number of minutes and the anchor is on a whole minute; otherwise not.
* rrule: never (evaluated by the tick).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from stratoflow.schedules.models import CronSchedule, IntervalSchedule, RRuleSchedule, expand_cron
from stratoflow.schedules.slots import AnySchedule, interval_anchor, utc, zone

MAX_EXPRESSION_LENGTH = 256
DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")  # Unix 0..6; EventBridge 1..7
# Years scanned for a timezone's DST transitions.
DST_SCAN_YEARS = (2000, 2060)


@dataclass(frozen=True)
class EventBridgeExpression:
    """What a Scheduler schedule needs: ``ScheduleExpression``, ``ScheduleExpressionTimezone``
    and, for ``rate()``, the anchor its ``StartDate`` is aligned to."""

    expression: str
    timezone: str = "UTC"
    start_date: datetime | None = None


@dataclass(frozen=True)
class Translation:
    expression: EventBridgeExpression | None
    reason: str  # why it is not on EventBridge; for a translation, a one-line note of how

    @property
    def on_eventbridge(self) -> bool:
        return self.expression is not None


def to_eventbridge(schedule: AnySchedule) -> EventBridgeExpression | None:
    """The EventBridge expression that fires exactly the schedule's slots, else None (the
    schedule is then fired by the per-minute tick; ``translate`` says why)."""
    return translate(schedule).expression


def translate(schedule: AnySchedule) -> Translation:
    if isinstance(schedule, CronSchedule):
        return _translate_cron(schedule)
    if isinstance(schedule, IntervalSchedule):
        return _translate_interval(schedule)
    assert isinstance(schedule, RRuleSchedule)
    return Translation(None, "rrule schedules are evaluated by the tick (EventBridge has no rrule)")


# -- cron -------------------------------------------------------------------------------------
def _render(values: Sequence[Any], lo: int, hi: int, *, allow_step: bool = True) -> str:
    if values == ["*"]:
        return "*"
    nums = sorted({int(v) for v in values})
    if len(nums) == hi - lo + 1:
        return "*"
    if allow_step and len(nums) >= 3:
        step = nums[1] - nums[0]
        if step > 1 and nums == list(range(nums[0], hi + 1, step)):
            return f"{nums[0]}/{step}"
    parts: list[str] = []
    start = prev = nums[0]
    for n in [*nums[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ",".join(parts)


def _render_days(values: Sequence[int]) -> str:
    nums = sorted({int(v) % 7 for v in values})
    parts: list[str] = []
    start = prev = nums[0]
    for n in [*nums[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(DAY_NAMES[start] if start == prev else f"{DAY_NAMES[start]}-{DAY_NAMES[prev]}")
        if n is not None:
            start = prev = n
    return ",".join(parts)


def _is_ints(values: Sequence[Any]) -> bool:
    return all(isinstance(v, int) for v in values)


def _collapse_full_days(day_or: bool, dom: list[Any], dow: list[Any],
                        nth: dict[Any, Any]) -> tuple[list[Any], list[Any], dict[Any, Any]]:
    """croniter keeps a full range (1-31, 0-6) as a restriction when the other day field is
    restricted too. With OR a full one matches every day; with AND it adds nothing."""
    dom_full = _is_ints(dom) and {int(d) for d in dom} == set(range(1, 32))
    dow_full = _is_ints(dow) and not nth and {int(d) % 7 for d in dow} == set(range(7))
    if day_or and (dom_full or dow_full):
        return ["*"], ["*"], {}
    if not day_or and dom_full:
        return ["*"], dow, nth
    if not day_or and dow_full:
        return dom, ["*"], nth
    return dom, dow, nth


def _day_of_month_text(dom: list[Any], dow_restricted: bool) -> str | Translation:
    if dom == ["*"]:
        return "*" if not dow_restricted else "?"
    if dom == ["l"]:
        return "L"
    if _is_ints(dom):
        return _render(dom, 1, 31)
    return Translation(None, f"the day-of-month field {dom!r} mixes 'L' with days; EventBridge cannot")


def _day_of_week_text(dow: list[Any], nth: dict[Any, Any]) -> str | Translation:
    if dow == ["*"]:
        return "?"
    if not _is_ints(dow):
        return Translation(None, f"the day-of-week field {dow!r} uses a croniter extension EventBridge lacks")
    if not nth:
        return _render_days(dow)
    if len(dow) != 1 or len(nth) != 1 or len(next(iter(nth.values()))) != 1:
        return Translation(None, "several weekday#n terms; EventBridge takes one")
    return f"{int(dow[0]) % 7 + 1}#{next(iter(next(iter(nth.values()))))}"


def _translate_cron(schedule: CronSchedule) -> Translation:
    # cold start: croniter loads when a cron is first read, not with every model import
    from croniter import croniter

    cron = expand_cron(schedule.cron)
    expanded, nth = croniter.expand(cron)
    minutes, hours, dom, months, dow = (list(f) for f in expanded)
    for name, values in (("minute", minutes), ("hour", hours), ("month", months)):
        if values != ["*"] and not _is_ints(values):
            return Translation(None, f"the {name} field {values!r} uses a croniter extension EventBridge lacks")
    if dom != ["*"] and dow != ["*"]:
        dom, dow, nth = _collapse_full_days(schedule.day_or, dom, dow, nth)
    if dom != ["*"] and dow != ["*"]:
        rule = ("either day (cron's OR rule, day_or=True)" if schedule.day_or
                else "both days (day_or=False)")
        return Translation(None, f"day-of-month and day-of-week are both restricted and runs fire on {rule}; "
                                 "EventBridge needs one of them to be '?'")
    dom_text = _day_of_month_text(dom, dow != ["*"])
    dow_text = _day_of_week_text(dow, nth)
    for problem in (dom_text, dow_text):
        if isinstance(problem, Translation):
            return problem
    expression = (f"cron({_render(minutes, 0, 59)} {_render(hours, 0, 23)} {dom_text} "
                  f"{_render(months, 1, 12)} {dow_text} *)")
    if len(expression) > MAX_EXPRESSION_LENGTH:
        return Translation(None, f"the EventBridge expression would be {len(expression)} characters; "
                                 f"the limit is {MAX_EXPRESSION_LENGTH}")
    window = _dst_clash(schedule.timezone, minutes, hours)
    if window is not None:
        return Translation(None, f"{schedule.timezone} changes clocks at {window} local time and this cron fires "
                                 "then: EventBridge skips a wall time that does not exist and fires a repeated "
                                 "one once, croniter does not")
    return Translation(EventBridgeExpression(expression, schedule.timezone), "cron translated field by field")


@functools.lru_cache(maxsize=128)
def dst_minutes(timezone: str) -> frozenset[int]:
    """Minutes of the local day (0..1439) that fall in a skipped or repeated interval of some DST
    change of ``timezone`` in ``DST_SCAN_YEARS``; empty for zones without changes."""
    tz = zone(timezone)
    start = datetime(DST_SCAN_YEARS[0], 1, 1, tzinfo=UTC)
    end = datetime(DST_SCAN_YEARS[1], 1, 1, tzinfo=UTC)
    out: set[int] = set()
    t = start
    prev_offset = t.astimezone(tz).utcoffset()
    day = timedelta(days=1)
    while t < end:
        nxt = t + day
        offset = nxt.astimezone(tz).utcoffset()
        if offset != prev_offset:
            lo_s, hi_s = int(t.timestamp()), int(nxt.timestamp())  # bisect to the second of the change
            while hi_s - lo_s > 1:
                mid_s = (lo_s + hi_s) // 2
                if datetime.fromtimestamp(mid_s, UTC).astimezone(tz).utcoffset() == prev_offset:
                    lo_s = mid_s
                else:
                    hi_s = mid_s
            hi = datetime.fromtimestamp(hi_s, UTC)
            assert prev_offset is not None and offset is not None
            wall_old = (hi + prev_offset).replace(tzinfo=None)
            wall_new = (hi + offset).replace(tzinfo=None)
            first, last = (wall_old, wall_new) if wall_new > wall_old else (wall_new, wall_old)
            m = first.replace(second=0, microsecond=0)
            while m < last:
                out.add(m.hour * 60 + m.minute)
                m += timedelta(minutes=1)
            prev_offset = offset
        t = nxt
    return frozenset(out)


def _dst_clash(timezone: str, minutes: Sequence[Any], hours: Sequence[Any]) -> str | None:
    affected = dst_minutes(timezone)
    if not affected:
        return None
    mins = range(60) if minutes == ["*"] else [int(m) for m in minutes]
    hrs = range(24) if hours == ["*"] else [int(h) for h in hours]
    hits = sorted(h * 60 + m for h in hrs for m in mins if h * 60 + m in affected)
    if not hits:
        return None
    return f"{hits[0] // 60:02d}:{hits[0] % 60:02d}"


# -- interval ---------------------------------------------------------------------------------
def _translate_interval(schedule: IntervalSchedule) -> Translation:
    seconds = schedule.interval
    if seconds < 60:
        return Translation(None, f"every {seconds:g} s is under EventBridge's one-minute resolution")
    if seconds != int(seconds) or int(seconds) % 60:
        return Translation(None, f"{seconds:g} s is not a whole number of minutes; rate() counts whole minutes")
    anchor = interval_anchor(schedule)
    if anchor.second or anchor.microsecond:
        return Translation(None, f"the anchor {anchor.isoformat()} is not on a whole minute; EventBridge's rate() "
                                 "would fire on different seconds")
    minutes = int(seconds) // 60
    if minutes % 1440 == 0:
        value, unit = minutes // 1440, "day"
    elif minutes % 60 == 0:
        value, unit = minutes // 60, "hour"
    else:
        value, unit = minutes, "minute"
    expression = f"rate({value} {unit}{'' if value == 1 else 's'})"
    return Translation(EventBridgeExpression(expression, "UTC", start_date=anchor),
                       "rate() with StartDate on the anchor's phase")


# -- evaluating an EventBridge expression (the local cloud's stand-in for EventBridge) -------------
_CRON = re.compile(r"^cron\((.+)\)$")
_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def eventbridge_to_unix(expression: str) -> str:
    """The Unix cron (croniter syntax) firing the same times as an EventBridge ``cron(...)``."""
    match = _CRON.match(expression.strip())
    if match is None:
        raise ValueError(f"{expression!r} is not a cron() expression")
    fields = match.group(1).split()
    if len(fields) != 6:
        raise ValueError(f"{expression!r} needs 6 fields")
    minute, hour, dom, month, dow, year = fields
    if year != "*":
        raise ValueError(f"{expression!r}: only '*' is supported for the year")
    if dom == "?":
        dom = "*"
    if dow == "?":
        dow = "*"
    elif dow != "*":
        def day(token: str) -> str:
            if token.isdigit():
                return str(int(token) - 1)
            return token
        parts = []
        for part in dow.split(","):
            if "#" in part:
                d, _, n = part.partition("#")
                parts.append(f"{day(d)}#{n}")
            else:
                parts.append("-".join(day(t) for t in part.split("-")))
        dow = ",".join(parts)
    return f"{minute} {hour} {dom} {month} {dow}"


def eventbridge_slots(expr: EventBridgeExpression, after: datetime, until: datetime,
                      limit: int = 10_000) -> list[datetime]:
    """The times EventBridge fires ``expr`` in (after, until], in UTC, as the Scheduler documents
    it: cron in its timezone (a wall time that does not exist is skipped, a repeated one fires
    once), rate() every N units from StartDate (from the epoch when it has none)."""
    after, until = utc(after), utc(until)
    out: list[datetime] = []
    rate = _RATE.match(expr.expression.strip())
    if rate is not None:
        step = timedelta(seconds=int(rate.group(1)) * _UNIT_SECONDS[rate.group(2).rstrip("s")])
        start = utc(expr.start_date) if expr.start_date else datetime(1970, 1, 1, tzinfo=UTC)
        k = max(0, (after - start) // step + 1)
        while len(out) < limit:
            slot = start + k * step
            if slot > until:
                break
            if slot > after:
                out.append(slot)
            k += 1
        return out
    for slot in _eventbridge_cron(expr, after):
        if slot > until or len(out) >= limit:
            break
        out.append(slot)
    return out


def _eventbridge_cron(expr: EventBridgeExpression, after: datetime) -> Iterator[datetime]:
    # cold start: croniter loads when a cron is first read, not with every model import
    from croniter import croniter

    tz = zone(expr.timezone)
    unix = eventbridge_to_unix(expr.expression)
    it = croniter(unix, after.astimezone(tz))
    last = after
    while True:
        local = it.get_next(datetime)
        wall = local.replace(tzinfo=None)
        if not croniter.match(unix, wall):
            continue  # croniter moved a wall time that does not exist: EventBridge skips it
        if local.fold == 1 and wall.replace(tzinfo=tz, fold=0).utcoffset() != wall.replace(
                tzinfo=tz, fold=1).utcoffset():
            continue  # the second occurrence of a repeated wall time: EventBridge fires once
        slot = utc(local)
        if slot > last:
            last = slot
            yield slot
