"""The orchestration rules, one small class each, and the ordered policies for flows and tasks.

Every rule names the states it governs (FROM_STATES -> TO_STATES) and, in its docstring, the
race or mistake it prevents. The store re-runs the policy whenever a conditional write loses a
race, so each rule only has to be right for the state it is shown.
"""

from __future__ import annotations

from datetime import timedelta

from stratoflow.orchestration.policy import (
    CacheWrite,
    OrchestrationContext,
    OrchestrationResult,
    OrchestrationRule,
    RunKind,
)
from stratoflow.states import (
    ALL_STATES,
    TERMINAL_STATES,
    AwaitingRetry,
    Cached,
    Cancelled,
    Failed,
    State,
    StateType,
)

S = StateType


class PreventDuplicateTransitions(OrchestrationRule):
    """A proposal already recorded (same transition id) is answered with the current state.

    Prevents: a retried HTTP call or a duplicate SQS delivery re-applying a transition that
    already happened, which would bump run_count twice or append the history twice.
    """

    def before_transition(self, ctx: OrchestrationContext) -> OrchestrationResult | None:
        tid = ctx.proposed_state.state_details.transition_id
        if ctx.initial_state is None or tid is None:
            return None
        if any(s.state_details.transition_id == tid for s in ctx.run.state_history) or (
            ctx.initial_state.state_details.transition_id == tid
        ):
            return self.reject(ctx.initial_state, f"transition {tid} was already recorded")
        return None


class HandleTaskTerminalStateTransitions(OrchestrationRule):
    """A task run in a terminal state stays there.

    Prevents: a late or duplicate worker overwriting a Completed task (and its result) with
    Running or Failed after another worker finished it.
    """

    FROM_STATES = frozenset(TERMINAL_STATES)

    def before_transition(self, ctx: OrchestrationContext) -> OrchestrationResult | None:
        return self.abort(ctx, f"task run is already in terminal state {ctx.initial_state!r}")


class HandleFlowTerminalStateTransitions(OrchestrationRule):
    """A flow run in a terminal state may only be rescheduled (a retry or a re-run).

    Prevents: an executor that lost its claim reporting Completed/Failed over a run that was
    already finished, cancelled or crashed; a re-run must go back through SCHEDULED.
    """

    FROM_STATES = frozenset(TERMINAL_STATES)
    TO_STATES = frozenset(ALL_STATES - {S.SCHEDULED})

    def before_transition(self, ctx: OrchestrationContext) -> OrchestrationResult | None:
        return self.abort(
            ctx,
            f"flow run is already in terminal state {ctx.initial_state!r}; only a reschedule may leave it",
        )


class PreventPendingTransitions(OrchestrationRule):
    """Nothing re-enters PENDING once it is pending, running or being cancelled.

    Prevents: double submission, two workers that both picked up the same scheduled run both
    moving it to PENDING and both starting it.
    """

    FROM_STATES = frozenset({S.PENDING, S.RUNNING, S.CANCELLING})
    TO_STATES = frozenset({S.PENDING})

    def before_transition(self, ctx: OrchestrationContext) -> OrchestrationResult | None:
        return self.abort(ctx, f"run is already {ctx.initial_state!r}; it cannot be submitted again")


class PreventDuplicateClaims(OrchestrationRule):
    """A run that is already RUNNING cannot be claimed to RUNNING again.

    Prevents: two executors that received the same SQS message both running the flow. Only the
    first conditional write wins; the second re-reads, sees RUNNING and is aborted here.
    """

    FROM_STATES = frozenset({S.RUNNING})
    TO_STATES = frozenset({S.RUNNING})

    def before_transition(self, ctx: OrchestrationContext) -> OrchestrationResult | None:
        return self.abort(ctx, "run is already running (claimed by another executor)")


class EnforceCancellingToCancelledTransition(OrchestrationRule):
    """A CANCELLING run may only become CANCELLED.

    Prevents: an executor that has not yet noticed the cancellation finishing the run as
    Completed/Failed, or re-claiming it, after a user asked to cancel it.
    """

    FROM_STATES = frozenset({S.CANCELLING})
    TO_STATES = frozenset(ALL_STATES - {S.CANCELLED})

    def before_transition(self, ctx: OrchestrationContext) -> OrchestrationResult | None:
        assert ctx.initial_state is not None
        return self.reject(ctx.initial_state, "run is being cancelled; it may only move to Cancelled")


class PreventRunningTasksFromStoppedFlows(OrchestrationRule):
    """A task may only start while its flow run is RUNNING.

    Prevents: tasks submitted just before a cancel or pause starting afterwards. A task of a
    cancelled flow becomes Cancelled; any other stopped flow aborts the start.
    """

    TO_STATES = frozenset({S.RUNNING})

    def before_transition(self, ctx: OrchestrationContext) -> OrchestrationResult | None:
        parent = ctx.parent_flow_run_state
        if parent is None or parent.type == S.RUNNING:
            return None
        if parent.type in (S.CANCELLING, S.CANCELLED):
            return self.reject(
                Cancelled(message=f"flow run is {parent.name}; task run not started"),
                f"flow run is {parent.name}",
            )
        return self.abort(ctx, f"flow run is {parent.name}, not Running; task runs cannot start")


class HandlePausingFlows(OrchestrationRule):
    """Only a RUNNING flow run can pause, and task runs never pause.

    Prevents: pausing a run that has not started or has already finished, which would leave it
    waiting for a resume that can never continue it.
    """

    TO_STATES = frozenset({S.PAUSED})

    def before_transition(self, ctx: OrchestrationContext) -> OrchestrationResult | None:
        if ctx.kind == RunKind.TASK:
            return self.abort(ctx, "task runs cannot be paused; pause the flow run")
        if ctx.initial_type not in (S.RUNNING, S.PAUSED):
            return self.abort(ctx, f"only a running flow run can pause (it is {ctx.initial_state!r})")
        if ctx.initial_type == S.PAUSED:
            return self.abort(ctx, "flow run is already paused")
        return None


class HandleResumingPausedFlows(OrchestrationRule):
    """A paused run whose pause timed out fails instead of resuming.

    Prevents: a late resume bringing back a run whose caller already gave up on it.
    """

    FROM_STATES = frozenset({S.PAUSED})
    TO_STATES = frozenset({S.RUNNING, S.PENDING, S.SCHEDULED})

    def before_transition(self, ctx: OrchestrationContext) -> OrchestrationResult | None:
        assert ctx.initial_state is not None
        deadline = ctx.initial_state.state_details.pause_timeout
        if deadline is not None and deadline < ctx.now:
            return self.reject(Failed(message="the pause timed out before the run was resumed"),
                               "pause timed out")
        return None


class WaitForScheduledTime(OrchestrationRule):
    """A scheduled run does not start before its scheduled time: the caller is told to wait.

    Prevents: early starts when a queue delivers a run (or a retry) ahead of its slot.
    """

    FROM_STATES = frozenset({S.SCHEDULED})
    TO_STATES = frozenset({S.PENDING, S.RUNNING})

    def before_transition(self, ctx: OrchestrationContext) -> OrchestrationResult | None:
        assert ctx.initial_state is not None
        scheduled = ctx.initial_state.state_details.scheduled_time
        if scheduled is None:
            return None
        delay = (scheduled - ctx.now).total_seconds()
        if delay > 0:
            return self.wait(ctx, delay, f"scheduled to start in {delay:.3f}s at {scheduled.isoformat()}")
        return None


class CopyScheduledTime(OrchestrationRule):
    """The scheduled time travels from the SCHEDULED state onto the state that leaves it.

    Prevents: losing the slot time of a run (its lateness, its idempotency slot) once it starts.
    """

    FROM_STATES = frozenset({S.SCHEDULED})
    TO_STATES = frozenset({S.PENDING, S.RUNNING})

    def before_transition(self, ctx: OrchestrationContext) -> OrchestrationResult | None:
        assert ctx.initial_state is not None
        details = ctx.proposed_state.state_details
        if details.scheduled_time is None:
            details.scheduled_time = ctx.initial_state.state_details.scheduled_time
        return None


class CacheRetrieval(OrchestrationRule):
    """A task with a valid cache entry for its key is answered with the cached state.

    Prevents: recomputing a result the cache already holds, including when two runs with the
    same inputs race (the second start finds the first one's entry).
    """

    TO_STATES = frozenset({S.RUNNING})

    def before_transition(self, ctx: OrchestrationContext) -> OrchestrationResult | None:
        key = ctx.proposed_state.state_details.cache_key
        if ctx.kind != RunKind.TASK or not key or ctx.refresh_cache or ctx.cache_lookup is None:
            return None
        entry = ctx.cache_lookup(key)
        if entry is None or not entry.is_valid(ctx.now):
            return None
        cached = Cached(
            cache_key=key, cache_expiration=entry.expiration, result_ref=entry.state.result_ref,
            message=f"cached result from key {key[:16]}",
        )
        return self.reject(cached, "valid cache entry found")


class CacheInsertion(OrchestrationRule):
    """A task that completes with a cache key records its result under that key.

    Prevents: a cache that never fills; the write happens only after the COMPLETED state is
    committed, so a failed commit never publishes a result.
    """

    FROM_STATES = frozenset({S.RUNNING})
    TO_STATES = frozenset({S.COMPLETED})

    def before_transition(self, ctx: OrchestrationContext) -> OrchestrationResult | None:
        details = ctx.proposed_state.state_details
        if ctx.kind == RunKind.TASK and details.cache_key and ctx.proposed_state.result_ref is not None:
            ctx.effects.append(CacheWrite(details.cache_key, ctx.proposed_state, details.cache_expiration))
        return None


def _retry_state(ctx: OrchestrationContext) -> tuple[State, str] | None:
    """The AwaitingRetry state for a failure with retries left, and why; None when none are left."""
    policy = ctx.run.retry_policy
    proposed = ctx.proposed_state
    if policy.retries <= 0 or proposed.state_details.retriable is False or ctx.run.run_count > policy.retries:
        return None
    delay = policy.delay_for(ctx.run.run_count)
    if policy.retry_jitter_factor and delay > 0:
        # Mean stays at `delay`; the longest wait is delay * (1 + factor).
        factor = policy.retry_jitter_factor
        if factor <= 1:
            delay *= ctx.rng.uniform(1 - factor, 1 + factor)
        elif ctx.rng.random() < factor / (1 + factor):
            # Above 1 a symmetric band would go negative; splitting below/above the delay with
            # these odds keeps the mean at `delay` and the maximum at delay * (1 + factor).
            delay *= ctx.rng.uniform(0.0, 1.0)
        else:
            delay *= ctx.rng.uniform(1.0, 1 + factor)
    retry = AwaitingRetry(
        scheduled_time=ctx.now + timedelta(seconds=delay),
        message=proposed.message,
    )
    retry.result_ref = proposed.result_ref
    return retry, f"retry {ctx.run.run_count} of {policy.retries} in {delay:.3f}s"


class RetryFailedTasks(OrchestrationRule):
    """A failed task with retries left is rescheduled as AwaitingRetry after its delay.

    Prevents: losing a retry when the worker that ran the attempt dies after reporting the
    failure: the retry is recorded in the same write that records the failure.
    """

    FROM_STATES = frozenset({S.RUNNING})
    TO_STATES = frozenset({S.FAILED})

    def applies(self, ctx: OrchestrationContext) -> bool:
        return ctx.kind == RunKind.TASK and super().applies(ctx)

    def before_transition(self, ctx: OrchestrationContext) -> OrchestrationResult | None:
        retry = _retry_state(ctx)
        return None if retry is None else self.reject(*retry)


class RetryFailedFlows(OrchestrationRule):
    """A failed flow run with retries left is rescheduled as AwaitingRetry after its delay.

    A CRASHED deployment run (its executor died) is retried too, since a worker will pick it up
    again; an interactive run that crashed is not, as nobody would resume it.
    """

    FROM_STATES = frozenset({S.RUNNING})
    TO_STATES = frozenset({S.FAILED, S.CRASHED})

    def applies(self, ctx: OrchestrationContext) -> bool:
        if ctx.kind != RunKind.FLOW or not super().applies(ctx):
            return False
        if ctx.proposed_state.type == S.CRASHED:
            return getattr(ctx.run, "deployment_id", None) is not None
        return True

    def before_transition(self, ctx: OrchestrationContext) -> OrchestrationResult | None:
        retry = _retry_state(ctx)
        return None if retry is None else self.reject(*retry)


TASK_POLICY: tuple[type[OrchestrationRule], ...] = (
    PreventDuplicateTransitions,
    HandleTaskTerminalStateTransitions,
    EnforceCancellingToCancelledTransition,
    PreventPendingTransitions,
    PreventDuplicateClaims,
    PreventRunningTasksFromStoppedFlows,
    HandlePausingFlows,
    WaitForScheduledTime,
    CopyScheduledTime,
    CacheRetrieval,
    RetryFailedTasks,
    CacheInsertion,
)

FLOW_POLICY: tuple[type[OrchestrationRule], ...] = (
    PreventDuplicateTransitions,
    HandleFlowTerminalStateTransitions,
    EnforceCancellingToCancelledTransition,
    PreventPendingTransitions,
    PreventDuplicateClaims,
    HandlePausingFlows,
    HandleResumingPausedFlows,
    WaitForScheduledTime,
    CopyScheduledTime,
    RetryFailedFlows,
)

__all__ = [name for name in dir() if name[0].isupper() and name not in {"S"}]
