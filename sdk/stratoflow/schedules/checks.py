"""What a schedule being created or changed must be beyond its record's validation (which a
deployment stored before these limits must still pass, to load)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, ValidationError

from stratoflow.schedules.models import DeploymentSchedule, RRuleSchedule
from stratoflow.schedules.slots import rrule_problem


def check_new_schedule(schedule: DeploymentSchedule) -> DeploymentSchedule:
    """What a schedule being created or changed must also be: an rrule must fire at least
    ``MIN_INTERVAL_SECONDS`` apart and have slots computable within limits (``slots.rrule_problem``).
    Not part of the record's validation, so a deployment stored before these limits still loads."""
    spec = schedule.schedule
    if isinstance(spec, RRuleSchedule):
        problem = rrule_problem(spec)
        if problem is not None:
            raise ValidationError.from_exception_data("DeploymentSchedule", [{
                "type": "value_error", "loc": ("schedule", "rrule"), "input": spec.rrule,
                "ctx": {"error": ValueError(problem)}}])
    return schedule


# A schedule in a create or update request: checked by ``check_new_schedule`` as well.
DeploymentScheduleIn = Annotated[DeploymentSchedule, AfterValidator(check_new_schedule)]
