"""Deployment schedules: cron, interval and rrule, as Prefect users write them.

The records and validation (``models``), their slots (``slots.next_slots``) and their translation
to EventBridge Scheduler (``translate.to_eventbridge``) are pure: no boto3. ``service`` creates
runs over the store; ``eventbridge`` provisions schedules. See docs/schedules.md.
"""

from stratoflow.schedules.models import (
    CronSchedule,
    DeploymentSchedule,
    IntervalSchedule,
    RRuleSchedule,
    Schedule,
)
from stratoflow.schedules.slots import next_slots, parse_slot_key, slot_key
from stratoflow.schedules.translate import EventBridgeExpression, Translation, to_eventbridge, translate

__all__ = [
    "CronSchedule",
    "DeploymentSchedule",
    "EventBridgeExpression",
    "IntervalSchedule",
    "RRuleSchedule",
    "Schedule",
    "Translation",
    "next_slots",
    "parse_slot_key",
    "slot_key",
    "to_eventbridge",
    "translate",
]
