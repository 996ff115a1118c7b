"""The rule framework: contexts, responses, the policy runner and transition bookkeeping."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import ClassVar, TypeVar

from stratoflow.models import CacheEntry, FlowRun, TaskRun, _Run
from stratoflow.states import ALL_STATES, State, StateType, now

R = TypeVar("R", bound=_Run)
_RNG = random.Random()  # nosec B311  # retry jitter, nothing secret
# A forked process (the sandbox's children, multiprocessing) must not repeat its parent's ids.
os.register_at_fork(after_in_child=_RNG.seed)


class ResponseStatus(StrEnum):
    ACCEPT = "ACCEPT"
    REJECT = "REJECT"
    WAIT = "WAIT"
    ABORT = "ABORT"


class RunKind(StrEnum):
    FLOW = "flow"
    TASK = "task"


@dataclass(frozen=True)
class CacheWrite:
    """Side effect asked for by a rule: store this state under a cache key after commit."""

    key: str
    state: State
    expiration: datetime | None


@dataclass
class OrchestrationContext:
    """Everything a rule may look at. Rules read it and answer; they never do I/O themselves."""

    kind: RunKind
    run: FlowRun | TaskRun
    proposed_state: State
    now: datetime = field(default_factory=now)
    # State of the parent flow run, for task runs inside a flow (None outside any flow).
    parent_flow_run_state: State | None = None
    # Looks up a cache entry by key; injected by the caller so rules stay pure.
    cache_lookup: Callable[[str], CacheEntry | None] | None = None
    refresh_cache: bool = False
    rng: random.Random = field(default_factory=lambda: _RNG)
    effects: list[CacheWrite] = field(default_factory=list)

    @property
    def initial_state(self) -> State | None:
        return self.run.state

    @property
    def initial_type(self) -> StateType | None:
        return self.run.state.type if self.run.state else None


@dataclass(frozen=True)
class OrchestrationResult:
    """What the policy decided. ``state`` is the state the run is in afterwards.

    ``writes`` says whether committing the result records a new state: always for ACCEPT,
    for REJECT only when the state to adopt is not the current one.
    """

    status: ResponseStatus
    state: State | None
    reason: str | None = None
    rule: str | None = None
    delay_seconds: float | None = None
    writes: bool = False


class OrchestrationRule:
    """One rule: the from/to states it governs and what it answers for them.

    ``FROM_STATES`` may contain ``None`` for "the run has no state yet". Subclasses implement
    ``before_transition`` and return None to let the proposal through.
    """

    FROM_STATES: ClassVar[frozenset[StateType | None]] = frozenset({*ALL_STATES, None})
    TO_STATES: ClassVar[frozenset[StateType]] = frozenset(ALL_STATES)

    def applies(self, ctx: OrchestrationContext) -> bool:
        return ctx.initial_type in self.FROM_STATES and ctx.proposed_state.type in self.TO_STATES

    def before_transition(self, ctx: OrchestrationContext) -> OrchestrationResult | None:
        raise NotImplementedError

    # Helpers so rules read as sentences.
    def reject(self, state: State, reason: str) -> OrchestrationResult:
        return OrchestrationResult(ResponseStatus.REJECT, state, reason, type(self).__name__)

    def wait(self, ctx: OrchestrationContext, delay: float, reason: str) -> OrchestrationResult:
        return OrchestrationResult(ResponseStatus.WAIT, ctx.initial_state, reason, type(self).__name__, delay)

    def abort(self, ctx: OrchestrationContext, reason: str) -> OrchestrationResult:
        return OrchestrationResult(ResponseStatus.ABORT, ctx.initial_state, reason, type(self).__name__)


def orchestrate(ctx: OrchestrationContext, policy: Sequence[type[OrchestrationRule]]) -> OrchestrationResult:
    """Run ``policy`` in order; the first rule that does not accept decides."""
    for rule_cls in policy:
        rule = rule_cls()
        if not rule.applies(ctx):
            continue
        response = rule.before_transition(ctx)
        if response is not None:
            if response.status == ResponseStatus.REJECT and response.state is not None:
                current_id = ctx.initial_state.id if ctx.initial_state else None
                response = replace(response, writes=response.state.id != current_id)
            return response
    return OrchestrationResult(ResponseStatus.ACCEPT, ctx.proposed_state, writes=True)


def apply_transition(run: R, state: State) -> R:
    """Return ``run`` moved to ``state`` with its bookkeeping done (does not bump ``version``).

    run_count counts entries into RUNNING; start_time is the first of them; total_run_time adds
    each stretch spent RUNNING; end_time is set by a terminal state; the history grows by one.
    """
    previous = run.state
    updates: dict[str, object] = {
        "state": state,
        "state_history": [*run.state_history, state],
        "updated": state.timestamp,
    }
    if state.type == StateType.RUNNING and (previous is None or previous.type != StateType.RUNNING):
        updates["run_count"] = run.run_count + 1
        if run.start_time is None:
            updates["start_time"] = state.timestamp
    if previous is not None and previous.type == StateType.RUNNING:
        elapsed = (state.timestamp - previous.timestamp).total_seconds()
        updates["total_run_time"] = run.total_run_time + max(elapsed, 0.0)
    if state.is_final():
        updates["end_time"] = state.timestamp
    if state.type == StateType.SCHEDULED and run.expected_start_time is None:
        updates["expected_start_time"] = state.state_details.scheduled_time
    return run.model_copy(update=updates)
