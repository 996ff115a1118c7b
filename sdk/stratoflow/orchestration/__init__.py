"""Orchestration: which proposed state transitions are allowed. Pure Python, no I/O.

``orchestrate(ctx)`` runs the ordered policy for the run's kind and returns ACCEPT, REJECT
(with the state to adopt), WAIT (with a delay) or ABORT, each with the rule and its reason.
``apply_transition(run, state)`` does the bookkeeping a committed transition implies.
"""

from stratoflow.orchestration.policy import (
    CacheWrite,
    OrchestrationContext,
    OrchestrationResult,
    OrchestrationRule,
    ResponseStatus,
    RunKind,
    apply_transition,
    orchestrate,
)
from stratoflow.orchestration.rules import FLOW_POLICY, TASK_POLICY

__all__ = [
    "FLOW_POLICY",
    "TASK_POLICY",
    "CacheWrite",
    "OrchestrationContext",
    "OrchestrationResult",
    "OrchestrationRule",
    "ResponseStatus",
    "RunKind",
    "apply_transition",
    "orchestrate",
]
