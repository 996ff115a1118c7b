"""Deployment schedules: cron, interval and rrule, as Prefect users write them. Pure: no boto3."""

from stratoflow.schedules.models import (
    CronSchedule,
    DeploymentSchedule,
    IntervalSchedule,
    RRuleSchedule,
    Schedule,
)

__all__ = ["CronSchedule", "DeploymentSchedule", "IntervalSchedule", "RRuleSchedule", "Schedule"]
