"""Unit tests for the orchestration rules and the flow/task policies (pure, no I/O).

The first part checks every (from, to) pair for both policies against an expectation table
written from the rules' docstrings. The rest targets each rule on its own.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stratoflow.models import CacheEntry, FlowRun, RetryPolicy, TaskRun
from stratoflow.orchestration import (
    FLOW_POLICY,
    TASK_POLICY,
    CacheWrite,
    OrchestrationContext,
    OrchestrationResult,
    ResponseStatus,
    RunKind,
    apply_transition,
    orchestrate,
)
from stratoflow.states import (
    AwaitingRetry,
    Cancelled,
    Cancelling,
    Completed,
    Crashed,
    Failed,
    Late,
    Paused,
    Pending,
    Retrying,
    Running,
    Scheduled,
    State,
    StateDetails,
    StateType,
    Suspended,
    TimedOut,
)

T = StateType
ACCEPT = ResponseStatus.ACCEPT
REJECT = ResponseStatus.REJECT
WAIT = ResponseStatus.WAIT
ABORT = ResponseStatus.ABORT

NOW = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
PAST = NOW - timedelta(hours=1)

# Written out rather than imported so the table does not lean on the code under test.
TERMINAL = frozenset({T.COMPLETED, T.FAILED, T.CANCELLED, T.CRASHED})
POLICIES = {RunKind.FLOW: FLOW_POLICY, RunKind.TASK: TASK_POLICY}


# -- helpers ---------------------------------------------------------------------------------


def make_run(
    kind: RunKind,
    state: State | None = None,
    *,
    history: list[State] | None = None,
    run_count: int | None = None,
    retry_policy: RetryPolicy | None = None,
    deployment_id: str | None = None,
) -> FlowRun | TaskRun:
    """A run in ``state`` whose bookkeeping is consistent with it (run_count >= 1 when RUNNING)."""
    if history is None:
        history = [state] if state is not None else []
    if run_count is None:
        run_count = 1 if state is not None and state.type is T.RUNNING else 0
    common = {
        "state": state,
        "state_history": history,
        "run_count": run_count,
        "retry_policy": retry_policy or RetryPolicy(),
    }
    if kind is RunKind.FLOW:
        return FlowRun(name="run", flow_name="flow", deployment_id=deployment_id, **common)
    return TaskRun(name="task-run", task_key="mod.task", flow_run_id="flow-run-1", **common)


# Default parent flow run state: Running for task runs, none for flow runs.
RUNNING_PARENT: Any = object()


def make_ctx(
    kind: RunKind,
    run: FlowRun | TaskRun,
    proposed: State,
    *,
    parent: State | None = RUNNING_PARENT,
    now: datetime = NOW,
    **kwargs: Any,
) -> OrchestrationContext:
    if parent is RUNNING_PARENT:
        parent = Running() if kind is RunKind.TASK else None
    return OrchestrationContext(
        kind=kind, run=run, proposed_state=proposed, now=now, parent_flow_run_state=parent, **kwargs
    )


def decide(kind: RunKind, run, proposed: State, **kwargs: Any) -> OrchestrationResult:
    return orchestrate(make_ctx(kind, run, proposed, **kwargs), POLICIES[kind])


def fresh(type_: StateType, **details) -> State:
    """A brand-new state of ``type_`` (new id and transition id), scheduled in the past."""
    details.setdefault("scheduled_time", PAST)
    return State(type=type_, state_details=StateDetails(**details))


def scheduled_in_past() -> State:
    return Scheduled(PAST)


def build(factory: Callable[[], State] | None) -> State | None:
    return factory() if factory is not None else None


# Current states of a run that has not started yet (None: no state at all).
NOT_STARTED = [
    pytest.param(None, id="None"),
    pytest.param(Pending, id="Pending"),
    pytest.param(scheduled_in_past, id="Scheduled"),
]
# Proposals that resume a paused flow run.
RESUMES = [
    pytest.param(Running, id="Running"),
    pytest.param(Pending, id="Pending"),
    pytest.param(lambda: Scheduled(NOW), id="Scheduled"),
]


def assert_accepted(result: OrchestrationResult, proposed: State) -> None:
    assert result.status is ACCEPT, (result.rule, result.reason)
    assert result.state is proposed
    assert result.writes is True
    assert result.rule is None


def assert_aborted(result: OrchestrationResult, run, rule: str) -> None:
    assert result.status is ABORT, (result.rule, result.reason)
    assert result.rule == rule
    assert result.state is run.state
    assert result.writes is False
    assert result.reason


def assert_rejected_with_current(result: OrchestrationResult, run, rule: str) -> None:
    assert result.status is REJECT, (result.rule, result.reason)
    assert result.rule == rule
    assert result.state is run.state
    assert result.writes is False
    assert result.reason


def assert_rejected_with_new(result: OrchestrationResult, run, rule: str, type_: StateType) -> State:
    assert result.status is REJECT, (result.rule, result.reason)
    assert result.rule == rule
    assert result.state is not None
    assert result.state.type is type_
    assert run.state is None or result.state.id != run.state.id
    assert result.writes is True
    assert result.reason
    return result.state


# -- the full transition matrix --------------------------------------------------------------


@dataclass(frozen=True)
class Expectation:
    status: ResponseStatus
    rule: str | None = None


def expected(kind: RunKind, from_type: StateType | None, to_type: StateType) -> Expectation:
    """What the policy answers for a fresh proposal ``from_type -> to_type``.

    Derived from the rule docstrings, for a run whose current state is scheduled in the past,
    with no retries, no cache and (for tasks) a Running parent flow run.
    """
    # A terminal run: a task stays there; a flow may only be rescheduled (retry / re-run).
    if from_type in TERMINAL:
        if kind is RunKind.TASK:
            return Expectation(ABORT, "HandleTaskTerminalStateTransitions")
        if to_type is T.SCHEDULED:
            return Expectation(ACCEPT)
        return Expectation(ABORT, "HandleFlowTerminalStateTransitions")
    # A CANCELLING run may only become CANCELLED; anything else is answered with Cancelling
    # (checked before the Pending rule, as Prefect does).
    if from_type is T.CANCELLING:
        if to_type is T.CANCELLED:
            return Expectation(ACCEPT)
        return Expectation(REJECT, "EnforceCancellingToCancelledTransition")
    # Nothing re-enters PENDING once it is pending or running.
    if to_type is T.PENDING and from_type in (T.PENDING, T.RUNNING):
        return Expectation(ABORT, "PreventPendingTransitions")
    # A RUNNING run cannot be claimed to RUNNING again.
    if from_type is T.RUNNING and to_type is T.RUNNING:
        return Expectation(ABORT, "PreventDuplicateClaims")
    # Only a RUNNING flow run can pause; task runs never pause.
    if to_type is T.PAUSED:
        if kind is RunKind.FLOW and from_type is T.RUNNING:
            return Expectation(ACCEPT)
        return Expectation(ABORT, "HandlePausingFlows")
    # Everything else: scheduled time passed, parent Running, no cache, no retries, no timeout.
    return Expectation(ACCEPT)


FROM_TYPES: list[StateType | None] = [None, *StateType]
MATRIX = [
    pytest.param(kind, from_type, to_type, id=f"{kind.value}-{from_type}-to-{to_type}")
    for kind in (RunKind.FLOW, RunKind.TASK)
    for from_type in FROM_TYPES
    for to_type in StateType
]


def test_matrix_covers_every_pair():
    assert len(MATRIX) == 2 * (len(StateType) + 1) * len(StateType)


@pytest.mark.parametrize(("kind", "from_type", "to_type"), MATRIX)
def test_transition_matrix(kind, from_type, to_type):
    initial = fresh(from_type) if from_type is not None else None
    run = make_run(kind, initial)
    proposed = State(type=to_type)
    result = decide(kind, run, proposed, parent=Running() if kind is RunKind.TASK else None)
    want = expected(kind, from_type, to_type)

    assert result.status is want.status, (result.rule, result.reason)
    assert result.rule == want.rule
    if want.status is ACCEPT:
        assert result.state is proposed
        assert result.writes is True
        assert result.delay_seconds is None
    else:
        # Every non-accept in this table answers with the run's current state.
        assert result.state is initial
        assert result.writes is False
        assert result.reason


# -- PreventDuplicateTransitions ------------------------------------------------------------


@pytest.fixture(params=[RunKind.FLOW, RunKind.TASK], ids=lambda k: k.value)
def kind(request) -> RunKind:
    return request.param


def test_duplicate_of_current_state_is_rejected_with_current(kind):
    current = Running()
    run = make_run(kind, current, history=[Pending(), current])
    # A re-delivery of the proposal that put the run in its current state.
    duplicate = Running(transition_id=current.state_details.transition_id)
    result = decide(kind, run, duplicate)
    assert_rejected_with_current(result, run, "PreventDuplicateTransitions")


def test_duplicate_of_current_state_not_in_history_is_rejected(kind):
    current = Running()
    run = make_run(kind, current, history=[])
    duplicate = Completed(transition_id=current.state_details.transition_id)
    assert_rejected_with_current(decide(kind, run, duplicate), run, "PreventDuplicateTransitions")


def test_duplicate_of_older_history_entry_is_rejected_with_current(kind):
    scheduled, pending, running = Scheduled(PAST), Pending(), Running()
    run = make_run(kind, running, history=[scheduled, pending, running])
    # Completed would otherwise be accepted: the transition id alone makes it a duplicate.
    stale = Completed(transition_id=pending.state_details.transition_id)
    result = decide(kind, run, stale)
    assert_rejected_with_current(result, run, "PreventDuplicateTransitions")
    assert "already recorded" in result.reason


def test_redelivered_proposal_after_commit_is_rejected(kind):
    run = make_run(kind, Pending())
    proposal = Running()
    first = decide(kind, run, proposal)
    assert_accepted(first, proposal)
    run = apply_transition(run, first.state)

    again = decide(kind, run, proposal)
    assert_rejected_with_current(again, run, "PreventDuplicateTransitions")
    assert again.state is proposal


def test_new_transition_id_is_not_a_duplicate(kind):
    running = Running()
    run = make_run(kind, running, history=[Pending(), running])
    proposed = running.fresh_copy(type=T.COMPLETED, name="Completed")
    assert_accepted(decide(kind, run, proposed), proposed)


def test_duplicate_check_skipped_for_run_without_state(kind):
    run = make_run(kind, None)
    proposed = Pending()
    assert_accepted(decide(kind, run, proposed), proposed)


# -- terminal states ---------------------------------------------------------------------------


@pytest.mark.parametrize("terminal", [Completed, Failed, Cancelled, Crashed])
@pytest.mark.parametrize("to_type", list(StateType), ids=str)
def test_task_terminal_states_abort_everything(terminal, to_type):
    run = make_run(RunKind.TASK, terminal())
    result = decide(RunKind.TASK, run, State(type=to_type))
    assert_aborted(result, run, "HandleTaskTerminalStateTransitions")
    assert "terminal" in result.reason


@pytest.mark.parametrize("terminal", [Completed, Failed, Cancelled, Crashed])
def test_task_terminal_blocks_even_a_cache_hit_or_reschedule(terminal):
    run = make_run(RunKind.TASK, terminal(), retry_policy=RetryPolicy(retries=3))
    entry = CacheEntry(key="k", state=Completed(result_ref={"v": 1}))
    result = decide(RunKind.TASK, run, Running(cache_key="k"), cache_lookup=lambda key: entry)
    assert_aborted(result, run, "HandleTaskTerminalStateTransitions")
    result = decide(RunKind.TASK, run, AwaitingRetry(NOW))
    assert_aborted(result, run, "HandleTaskTerminalStateTransitions")


@pytest.mark.parametrize("terminal", [Completed, Failed, Cancelled, Crashed])
@pytest.mark.parametrize("to_type", sorted(set(StateType) - {T.SCHEDULED}), ids=str)
def test_flow_terminal_states_abort_all_but_scheduled(terminal, to_type):
    run = make_run(RunKind.FLOW, terminal())
    result = decide(RunKind.FLOW, run, State(type=to_type))
    assert_aborted(result, run, "HandleFlowTerminalStateTransitions")


@pytest.mark.parametrize("terminal", [Completed, Failed, Cancelled, Crashed])
@pytest.mark.parametrize("scheduled", [Scheduled, AwaitingRetry])
def test_flow_terminal_state_may_be_rescheduled(terminal, scheduled):
    run = make_run(RunKind.FLOW, terminal())
    proposed = scheduled(NOW + timedelta(minutes=1))
    assert_accepted(decide(RunKind.FLOW, run, proposed), proposed)


# -- PreventPendingTransitions -----------------------------------------------------------------


@pytest.mark.parametrize("from_state", [Pending, Running])
def test_pending_reentry_is_aborted(kind, from_state):
    run = make_run(kind, from_state())
    result = decide(kind, run, Pending())
    assert_aborted(result, run, "PreventPendingTransitions")
    assert "cannot be submitted again" in result.reason


def test_pending_from_cancelled_is_aborted(kind):
    # CANCELLED is also terminal; the terminal rule runs first and aborts it.
    run = make_run(kind, Cancelled())
    result = decide(kind, run, Pending())
    assert result.status is ABORT
    assert result.state is run.state


@pytest.mark.parametrize("from_state", [None, scheduled_in_past, Paused])
def test_pending_allowed_from_scheduled_paused_or_nothing(kind, from_state):
    run = make_run(kind, build(from_state))
    proposed = Pending()
    assert_accepted(decide(kind, run, proposed), proposed)


# -- PreventDuplicateClaims ----------------------------------------------------------------


@pytest.mark.parametrize("proposal", [Running, Retrying])
def test_running_to_running_is_aborted(kind, proposal):
    run = make_run(kind, Running())
    result = decide(kind, run, proposal())
    assert_aborted(result, run, "PreventDuplicateClaims")


def test_second_claim_after_first_commit_is_aborted(kind):
    run = make_run(kind, Pending())
    first = Running()
    run = apply_transition(run, decide(kind, run, first).state)
    assert run.run_count == 1
    result = decide(kind, run, Running())
    assert_aborted(result, run, "PreventDuplicateClaims")


# -- EnforceCancellingToCancelledTransition ----------------------------------------------------


def test_cancelling_to_cancelled_is_accepted(kind):
    run = make_run(kind, Cancelling())
    proposed = Cancelled()
    assert_accepted(decide(kind, run, proposed), proposed)


@pytest.mark.parametrize(
    "to_type",
    sorted(set(StateType) - {T.CANCELLED, T.PENDING}),
    ids=str,
)
def test_cancelling_to_anything_else_is_rejected_with_current(kind, to_type):
    run = make_run(kind, Cancelling())
    result = decide(kind, run, State(type=to_type))
    assert_rejected_with_current(result, run, "EnforceCancellingToCancelledTransition")
    assert result.state.type is T.CANCELLING


def test_cancelling_to_pending_is_rejected_with_cancelling(kind):
    # EnforceCancellingToCancelledTransition runs before PreventPendingTransitions (as in
    # Prefect): a resubmission of a run being cancelled is answered with Cancelling.
    run = make_run(kind, Cancelling())
    result = decide(kind, run, Pending())
    assert_rejected_with_current(result, run, "EnforceCancellingToCancelledTransition")


def test_cancelling_task_cannot_start_even_with_running_parent():
    run = make_run(RunKind.TASK, Cancelling())
    result = decide(RunKind.TASK, run, Running(), parent=Running())
    assert_rejected_with_current(result, run, "EnforceCancellingToCancelledTransition")


def test_cancelling_task_in_cancelled_flow_is_answered_with_cancelling():
    # The cancelling rule runs before the parent-flow rule: the task is told it is Cancelling
    # (nothing written) rather than being handed a new Cancelled state.
    run = make_run(RunKind.TASK, Cancelling())
    result = decide(RunKind.TASK, run, Running(), parent=Cancelled())
    assert_rejected_with_current(result, run, "EnforceCancellingToCancelledTransition")


# -- PreventRunningTasksFromStoppedFlows ---------------------------------------------------


@pytest.mark.parametrize("parent", [Cancelling, Cancelled], ids=["Cancelling", "Cancelled"])
def test_task_start_in_cancelled_flow_is_rejected_with_cancelled(parent):
    run = make_run(RunKind.TASK, Pending())
    parent_state = parent()
    result = decide(RunKind.TASK, run, Running(), parent=parent_state)
    state = assert_rejected_with_new(result, run, "PreventRunningTasksFromStoppedFlows", T.CANCELLED)
    assert state.name == "Cancelled"
    assert parent_state.name in (state.message or "")
    assert parent_state.name in result.reason


@pytest.mark.parametrize(
    "parent",
    [Paused, Suspended, Completed, Failed, Crashed, Pending, scheduled_in_past],
    ids=["Paused", "Suspended", "Completed", "Failed", "Crashed", "Pending", "Scheduled"],
)
def test_task_start_in_stopped_flow_is_aborted(parent):
    run = make_run(RunKind.TASK, Pending())
    result = decide(RunKind.TASK, run, Running(), parent=parent())
    assert_aborted(result, run, "PreventRunningTasksFromStoppedFlows")


@pytest.mark.parametrize("from_state", NOT_STARTED)
def test_task_start_outside_any_flow_is_accepted(from_state):
    run = make_run(RunKind.TASK, build(from_state))
    proposed = Running()
    result = decide(RunKind.TASK, run, proposed, parent=None)
    assert_accepted(result, proposed)


def test_task_start_in_running_flow_is_accepted():
    run = make_run(RunKind.TASK, Pending())
    proposed = Running()
    assert_accepted(decide(RunKind.TASK, run, proposed, parent=Running()), proposed)


@pytest.mark.parametrize("to_state", [Completed, Failed, Cancelled, Crashed])
def test_task_may_finish_while_flow_is_cancelling(to_state):
    # The parent rule governs only starts (TO RUNNING).
    run = make_run(RunKind.TASK, Running())
    proposed = to_state()
    assert_accepted(decide(RunKind.TASK, run, proposed, parent=Cancelling()), proposed)


def test_flow_policy_ignores_parent_state():
    run = make_run(RunKind.FLOW, Pending())
    proposed = Running()
    assert_accepted(decide(RunKind.FLOW, run, proposed, parent=Cancelled()), proposed)


# -- HandlePausingFlows ---------------------------------------------------------------------


@pytest.mark.parametrize("pause", [Paused, Suspended, lambda: Paused(timeout_seconds=30, pause_key="k")])
def test_running_flow_can_pause(pause):
    run = make_run(RunKind.FLOW, Running())
    proposed = pause()
    assert_accepted(decide(RunKind.FLOW, run, proposed), proposed)


def test_paused_flow_cannot_pause_again():
    run = make_run(RunKind.FLOW, Paused())
    result = decide(RunKind.FLOW, run, Paused())
    assert_aborted(result, run, "HandlePausingFlows")
    assert "already paused" in result.reason


@pytest.mark.parametrize("from_state", NOT_STARTED)
def test_flow_that_is_not_running_cannot_pause(from_state):
    run = make_run(RunKind.FLOW, build(from_state))
    result = decide(RunKind.FLOW, run, Suspended())
    assert_aborted(result, run, "HandlePausingFlows")


@pytest.mark.parametrize("from_state", [None, Pending, Running, Paused])
def test_task_runs_never_pause(from_state):
    run = make_run(RunKind.TASK, build(from_state))
    result = decide(RunKind.TASK, run, Paused())
    assert_aborted(result, run, "HandlePausingFlows")
    assert "task runs cannot be paused" in result.reason


# -- HandleResumingPausedFlows ---------------------------------------------------------------


def paused_until(deadline: datetime | None, *, reschedule: bool = False) -> State:
    return State(
        type=T.PAUSED,
        state_details=StateDetails(pause_timeout=deadline, pause_reschedule=reschedule, pause_key="k"),
    )


@pytest.mark.parametrize("resume", RESUMES)
def test_resume_after_pause_timeout_fails(resume):
    run = make_run(RunKind.FLOW, paused_until(NOW - timedelta(seconds=1)))
    result = decide(RunKind.FLOW, run, resume())
    state = assert_rejected_with_new(result, run, "HandleResumingPausedFlows", T.FAILED)
    assert state.name == "Failed"
    assert "timed out" in (state.message or "")


@pytest.mark.parametrize("resume", RESUMES)
def test_resume_before_pause_timeout_is_accepted(resume):
    run = make_run(RunKind.FLOW, paused_until(NOW + timedelta(seconds=1)))
    proposed = resume()
    assert_accepted(decide(RunKind.FLOW, run, proposed), proposed)


def test_resume_without_pause_timeout_is_accepted():
    run = make_run(RunKind.FLOW, paused_until(None))
    proposed = Running()
    assert_accepted(decide(RunKind.FLOW, run, proposed), proposed)


def test_resume_timeout_is_judged_against_ctx_now():
    deadline = NOW + timedelta(minutes=5)
    run = make_run(RunKind.FLOW, paused_until(deadline))
    early = decide(RunKind.FLOW, run, Running(), now=deadline - timedelta(seconds=1))
    assert early.status is ACCEPT
    late = decide(RunKind.FLOW, run, Running(), now=deadline + timedelta(seconds=1))
    assert late.status is REJECT
    assert late.state is not None and late.state.type is T.FAILED


@pytest.mark.parametrize("to_state", [Cancelled, Cancelling, Completed])
def test_timed_out_pause_may_still_be_cancelled_or_finished(to_state):
    run = make_run(RunKind.FLOW, paused_until(NOW - timedelta(hours=1)))
    proposed = to_state()
    assert_accepted(decide(RunKind.FLOW, run, proposed), proposed)


# -- WaitForScheduledTime -----------------------------------------------------------------


@pytest.mark.parametrize("to_state", [Pending, Running])
@pytest.mark.parametrize("remaining", [0.25, 30.0, 3600.0])
def test_start_before_scheduled_time_waits(kind, to_state, remaining):
    scheduled = Scheduled(NOW + timedelta(seconds=remaining))
    run = make_run(kind, scheduled)
    result = decide(kind, run, to_state())
    assert result.status is WAIT
    assert result.rule == "WaitForScheduledTime"
    assert result.delay_seconds == pytest.approx(remaining)
    assert result.state is scheduled
    assert result.writes is False
    assert result.reason


@pytest.mark.parametrize("to_state", [Pending, Running])
@pytest.mark.parametrize("offset", [0.0, -0.001, -3600.0])
def test_start_at_or_after_scheduled_time_is_accepted(kind, to_state, offset):
    run = make_run(kind, Scheduled(NOW + timedelta(seconds=offset)))
    proposed = to_state()
    assert_accepted(decide(kind, run, proposed), proposed)


def test_scheduled_state_without_time_does_not_wait(kind):
    run = make_run(kind, State(type=T.SCHEDULED))
    proposed = Running()
    assert_accepted(decide(kind, run, proposed), proposed)


@pytest.mark.parametrize("to_state", [Cancelled, Completed, Failed, Crashed, Cancelling, lambda: Scheduled(NOW)])
def test_future_schedule_does_not_block_other_transitions(kind, to_state):
    run = make_run(kind, Scheduled(NOW + timedelta(hours=1)))
    proposed = to_state()
    assert_accepted(decide(kind, run, proposed), proposed)


def test_late_run_starts_immediately(kind):
    run = make_run(kind, Late(NOW - timedelta(minutes=10)))
    proposed = Pending()
    assert_accepted(decide(kind, run, proposed), proposed)


def test_awaiting_retry_waits_until_its_time(kind):
    run = make_run(kind, AwaitingRetry(NOW + timedelta(seconds=12)), run_count=1)
    result = decide(kind, run, Running())
    assert result.status is WAIT
    assert result.delay_seconds == pytest.approx(12.0)


def test_cancelled_parent_beats_waiting_for_a_task():
    run = make_run(RunKind.TASK, Scheduled(NOW + timedelta(hours=1)))
    result = decide(RunKind.TASK, run, Running(), parent=Cancelled())
    assert_rejected_with_new(result, run, "PreventRunningTasksFromStoppedFlows", T.CANCELLED)


# -- CopyScheduledTime ----------------------------------------------------------------------


@pytest.mark.parametrize("to_state", [Pending, Running])
def test_scheduled_time_is_copied_onto_proposed_state(kind, to_state):
    slot = NOW - timedelta(minutes=3)
    run = make_run(kind, Scheduled(slot))
    proposed = to_state()
    assert proposed.state_details.scheduled_time is None
    result = decide(kind, run, proposed)
    assert_accepted(result, proposed)
    assert result.state.state_details.scheduled_time == slot


def test_proposed_scheduled_time_is_not_overwritten(kind):
    own = NOW - timedelta(seconds=5)
    run = make_run(kind, Scheduled(NOW - timedelta(minutes=3)))
    proposed = Running(scheduled_time=own)
    result = decide(kind, run, proposed)
    assert_accepted(result, proposed)
    assert result.state.state_details.scheduled_time == own


def test_scheduled_time_not_copied_from_other_states(kind):
    pending = Pending(scheduled_time=NOW - timedelta(minutes=3))
    run = make_run(kind, pending)
    proposed = Running()
    result = decide(kind, run, proposed)
    assert_accepted(result, proposed)
    assert result.state.state_details.scheduled_time is None


def test_scheduled_time_not_copied_to_non_start_states(kind):
    run = make_run(kind, Scheduled(NOW - timedelta(minutes=3)))
    proposed = Cancelled()
    assert_accepted(decide(kind, run, proposed), proposed)
    assert proposed.state_details.scheduled_time is None


# -- CacheRetrieval -------------------------------------------------------------------------


class FakeCache:
    def __init__(self, entries: dict[str, CacheEntry] | None = None):
        self.entries = entries or {}
        self.lookups: list[str] = []

    def __call__(self, key: str) -> CacheEntry | None:
        self.lookups.append(key)
        return self.entries.get(key)


RESULT_REF = {"kind": "s3", "key": "results/abc"}


def cache_with(expiration: datetime | None, key: str = "ck-0123456789abcdef-long") -> FakeCache:
    entry = CacheEntry(key=key, state=Completed(result_ref=RESULT_REF), expiration=expiration)
    return FakeCache({key: entry})


@pytest.mark.parametrize("from_state", NOT_STARTED)
@pytest.mark.parametrize("expiration", [NOW + timedelta(hours=1), None], ids=["expires-later", "never-expires"])
def test_valid_cache_entry_answers_with_cached_state(from_state, expiration):
    key = "ck-0123456789abcdef-long"
    cache = cache_with(expiration, key)
    run = make_run(RunKind.TASK, build(from_state))
    ctx = make_ctx(RunKind.TASK, run, Running(cache_key=key), cache_lookup=cache)
    result = orchestrate(ctx, TASK_POLICY)

    state = assert_rejected_with_new(result, run, "CacheRetrieval", T.COMPLETED)
    assert state.name == "Cached"
    assert state.result_ref == RESULT_REF
    assert state.state_details.cache_key == key
    assert state.state_details.cache_expiration == expiration
    assert state.is_final()
    assert cache.lookups == [key]
    # A cache hit must not publish the result again.
    assert ctx.effects == []


def test_expired_cache_entry_is_ignored():
    cache = cache_with(NOW - timedelta(seconds=1))
    run = make_run(RunKind.TASK, Pending())
    proposed = Running(cache_key="ck-0123456789abcdef-long")
    assert_accepted(decide(RunKind.TASK, run, proposed, cache_lookup=cache), proposed)
    assert cache.lookups == ["ck-0123456789abcdef-long"]


def test_cache_validity_is_judged_against_ctx_now():
    expiration = NOW + timedelta(minutes=1)
    cache = cache_with(expiration)
    run = make_run(RunKind.TASK, Pending())
    before = decide(RunKind.TASK, run, Running(cache_key="ck-0123456789abcdef-long"), cache_lookup=cache)
    assert before.status is REJECT
    after = decide(
        RunKind.TASK,
        run,
        Running(cache_key="ck-0123456789abcdef-long"),
        cache_lookup=cache,
        now=expiration + timedelta(seconds=1),
    )
    assert after.status is ACCEPT


def test_cache_miss_is_accepted():
    cache = FakeCache()
    run = make_run(RunKind.TASK, Pending())
    proposed = Running(cache_key="missing")
    assert_accepted(decide(RunKind.TASK, run, proposed, cache_lookup=cache), proposed)
    assert cache.lookups == ["missing"]


def test_refresh_cache_skips_lookup():
    cache = cache_with(None)
    run = make_run(RunKind.TASK, Pending())
    proposed = Running(cache_key="ck-0123456789abcdef-long")
    result = decide(RunKind.TASK, run, proposed, cache_lookup=cache, refresh_cache=True)
    assert_accepted(result, proposed)
    assert cache.lookups == []


def test_no_cache_key_skips_lookup():
    cache = cache_with(None)
    run = make_run(RunKind.TASK, Pending())
    proposed = Running()
    assert_accepted(decide(RunKind.TASK, run, proposed, cache_lookup=cache), proposed)
    assert cache.lookups == []


def test_no_cache_lookup_is_accepted():
    run = make_run(RunKind.TASK, Pending())
    proposed = Running(cache_key="ck")
    assert_accepted(decide(RunKind.TASK, run, proposed, cache_lookup=None), proposed)


def test_flows_never_consult_the_cache():
    cache = cache_with(None)
    run = make_run(RunKind.FLOW, Pending())
    proposed = Running(cache_key="ck-0123456789abcdef-long")
    assert_accepted(decide(RunKind.FLOW, run, proposed, cache_lookup=cache), proposed)
    assert cache.lookups == []


def test_cache_is_only_consulted_on_start():
    cache = cache_with(None)
    run = make_run(RunKind.TASK, Running())
    proposed = Completed(cache_key="ck-0123456789abcdef-long")
    assert_accepted(decide(RunKind.TASK, run, proposed, cache_lookup=cache), proposed)
    assert cache.lookups == []


def test_cache_not_consulted_while_waiting_for_schedule():
    cache = cache_with(None)
    run = make_run(RunKind.TASK, Scheduled(NOW + timedelta(seconds=5)))
    result = decide(RunKind.TASK, run, Running(cache_key="ck-0123456789abcdef-long"), cache_lookup=cache)
    assert result.status is WAIT
    assert cache.lookups == []


def test_cached_state_can_be_committed():
    cache = cache_with(None)
    run = make_run(RunKind.TASK, Pending())
    result = decide(RunKind.TASK, run, Running(cache_key="ck-0123456789abcdef-long"), cache_lookup=cache)
    committed = apply_transition(run, result.state)
    assert committed.state is result.state
    assert committed.run_count == 0
    assert committed.end_time == result.state.timestamp


# -- CacheInsertion -------------------------------------------------------------------------


def run_completion(kind: RunKind, proposed: State, from_state: State | None = None):
    run = make_run(kind, from_state if from_state is not None else Running())
    ctx = make_ctx(kind, run, proposed)
    return orchestrate(ctx, POLICIES[kind]), ctx


def test_completion_with_key_and_result_asks_for_cache_write():
    expiration = NOW + timedelta(days=1)
    proposed = Completed(cache_key="ck", cache_expiration=expiration, result_ref=RESULT_REF)
    result, ctx = run_completion(RunKind.TASK, proposed)
    assert_accepted(result, proposed)
    assert ctx.effects == [CacheWrite("ck", proposed, expiration)]
    assert ctx.effects[0].state is proposed


def test_cache_write_without_expiration():
    proposed = Completed(cache_key="ck", result_ref=RESULT_REF)
    result, ctx = run_completion(RunKind.TASK, proposed)
    assert result.status is ACCEPT
    assert ctx.effects == [CacheWrite("ck", proposed, None)]


@pytest.mark.parametrize(
    "proposed",
    [
        lambda: Completed(result_ref=RESULT_REF),
        lambda: Completed(cache_key="ck"),
        lambda: Completed(cache_key="", result_ref=RESULT_REF),
        lambda: Completed(),
    ],
    ids=["no-key", "no-result", "empty-key", "neither"],
)
def test_no_cache_write_without_key_and_result(proposed):
    state = proposed()
    result, ctx = run_completion(RunKind.TASK, state)
    assert_accepted(result, state)
    assert ctx.effects == []


def test_flows_never_write_the_cache():
    proposed = Completed(cache_key="ck", result_ref=RESULT_REF)
    result, ctx = run_completion(RunKind.FLOW, proposed)
    assert_accepted(result, proposed)
    assert ctx.effects == []


def test_cache_write_only_for_completion_from_running():
    proposed = Completed(cache_key="ck", result_ref=RESULT_REF)
    result, ctx = run_completion(RunKind.TASK, proposed, from_state=Pending())
    assert_accepted(result, proposed)
    assert ctx.effects == []


@pytest.mark.parametrize("to_state", [Failed, Crashed, Cancelled])
def test_no_cache_write_for_non_completed(to_state):
    proposed = to_state(cache_key="ck", result_ref=RESULT_REF)
    _, ctx = run_completion(RunKind.TASK, proposed)
    assert ctx.effects == []


def test_no_cache_write_when_completion_is_rejected():
    running = Running()
    run = make_run(RunKind.TASK, running)
    duplicate = Completed(cache_key="ck", result_ref=RESULT_REF, transition_id=running.state_details.transition_id)
    ctx = make_ctx(RunKind.TASK, run, duplicate)
    result = orchestrate(ctx, TASK_POLICY)
    assert result.status is REJECT
    assert ctx.effects == []


# -- RetryFailedTasks -----------------------------------------------------------------------


def failing_task(run_count: int, **policy) -> TaskRun:
    return make_run(RunKind.TASK, Running(), run_count=run_count, retry_policy=RetryPolicy(**policy))


@pytest.mark.parametrize("run_count", [1, 2])
def test_task_with_retries_left_is_rescheduled(run_count):
    run = failing_task(run_count, retries=2, retry_delays=[10])
    proposed = Failed(message="boom")
    result = decide(RunKind.TASK, run, proposed)
    state = assert_rejected_with_new(result, run, "RetryFailedTasks", T.SCHEDULED)
    assert state.name == "AwaitingRetry"
    assert state.state_details.scheduled_time == NOW + timedelta(seconds=10)
    assert state.message == "boom"
    assert f"retry {run_count} of 2" in result.reason


def test_task_out_of_retries_fails():
    run = failing_task(3, retries=2, retry_delays=[10])
    proposed = Failed(message="boom")
    assert_accepted(decide(RunKind.TASK, run, proposed), proposed)


def test_task_without_retries_fails():
    run = failing_task(1)
    proposed = Failed()
    assert_accepted(decide(RunKind.TASK, run, proposed), proposed)


def test_task_retry_without_delays_is_due_now():
    run = failing_task(1, retries=1)
    result = decide(RunKind.TASK, run, Failed())
    assert result.status is REJECT
    assert result.state.state_details.scheduled_time == NOW


@pytest.mark.parametrize(
    ("run_count", "delay"),
    [(1, 1.0), (2, 5.0), (3, 30.0), (4, 30.0), (5, 30.0)],
)
def test_retry_delays_are_indexed_by_attempt_and_last_repeats(run_count, delay):
    run = failing_task(run_count, retries=5, retry_delays=[1, 5, 30])
    result = decide(RunKind.TASK, run, Failed())
    assert result.status is REJECT
    assert result.state.state_details.scheduled_time == NOW + timedelta(seconds=delay)


def test_not_retriable_failure_is_not_retried():
    run = failing_task(1, retries=3, retry_delays=[10])
    proposed = Failed(message="bad input", retriable=False)
    assert_accepted(decide(RunKind.TASK, run, proposed), proposed)


@pytest.mark.parametrize("retriable", [True, None])
def test_retriable_true_or_unset_is_retried(retriable):
    run = failing_task(1, retries=1)
    result = decide(RunKind.TASK, run, Failed(retriable=retriable))
    assert result.status is REJECT
    assert result.rule == "RetryFailedTasks"


def test_timed_out_task_is_retried():
    run = failing_task(1, retries=1, retry_delays=[2])
    result = decide(RunKind.TASK, run, TimedOut(message="took too long"))
    assert result.status is REJECT
    assert result.state.name == "AwaitingRetry"
    assert result.state.message == "took too long"


def test_retry_state_keeps_failure_message_and_result_ref():
    run = failing_task(1, retries=1)
    ref = {"kind": "inline", "value": "serialised exception"}
    result = decide(RunKind.TASK, run, Failed(message="ValueError: nope", result_ref=ref))
    assert result.state.message == "ValueError: nope"
    assert result.state.result_ref == ref


def test_crashed_task_is_not_retried():
    run = failing_task(1, retries=3)
    proposed = Crashed()
    assert_accepted(decide(RunKind.TASK, run, proposed), proposed)


@pytest.mark.parametrize("from_state", [Pending, scheduled_in_past], ids=["Pending", "Scheduled"])
def test_failure_before_running_is_not_retried(from_state):
    run = make_run(RunKind.TASK, from_state(), retry_policy=RetryPolicy(retries=3))
    proposed = Failed()
    assert_accepted(decide(RunKind.TASK, run, proposed), proposed)


def test_task_retry_loop_runs_retries_plus_one_times():
    """Drive a task through its whole life: with retries=2 it runs three times, then fails."""
    run = make_run(RunKind.TASK, None, retry_policy=RetryPolicy(retries=2, retry_delays=[5]))
    clock = NOW
    attempts: list[str] = []
    for _ in range(10):
        for proposal in (Pending(), Running()):
            result = decide(RunKind.TASK, run, proposal, now=clock)
            if result.status is WAIT:
                clock += timedelta(seconds=result.delay_seconds)
                result = decide(RunKind.TASK, run, proposal, now=clock)
            assert result.status is ACCEPT, (result.rule, result.reason)
            run = apply_transition(run, result.state)
        result = decide(RunKind.TASK, run, Failed(message="boom"), now=clock)
        run = apply_transition(run, result.state)
        attempts.append(run.state.name)
        if run.state.is_final():
            break
    assert attempts == ["AwaitingRetry", "AwaitingRetry", "Failed"]
    assert run.run_count == 3
    assert run.state.message == "boom"
    assert clock == NOW + timedelta(seconds=10)


# -- jitter ---------------------------------------------------------------------------------


def jittered_delays(factor: float, base: float, samples: int, seed: int = 1234) -> list[float]:
    rng = random.Random(seed)
    run = failing_task(1, retries=1, retry_delays=[base], retry_jitter_factor=factor)
    delays = []
    for _ in range(samples):
        result = decide(RunKind.TASK, run, Failed(), rng=rng)
        assert result.status is REJECT
        delays.append((result.state.state_details.scheduled_time - NOW).total_seconds())
    return delays


@pytest.mark.parametrize("factor", [0.1, 0.5, 1.0])
def test_jitter_stays_within_bounds_and_keeps_mean(factor):
    base = 100.0
    delays = jittered_delays(factor, base, samples=2000)
    low, high = base * (1 - factor), base * (1 + factor)
    assert all(low - 1e-6 <= d <= high + 1e-6 for d in delays)
    assert len(set(delays)) > 1000  # it really is jittered
    # Std of the mean is about base * factor / sqrt(3 * 2000) < 1.3 s.
    assert statistics.fmean(delays) == pytest.approx(base, abs=4.0)


def test_jitter_factor_above_one_keeps_mean():
    # The rule promises "Mean stays at `delay`; the longest wait is delay * (1 + factor)". With
    # factor > 1 the lower bound is clamped at 0, which moves the mean up to delay * (1 + f) / 2.
    base, factor = 100.0, 1.5
    delays = jittered_delays(factor, base, samples=2000)
    assert all(0.0 <= d <= base * (1 + factor) + 1e-6 for d in delays)
    assert statistics.fmean(delays) == pytest.approx(base, abs=6.0)


def test_jitter_is_deterministic_for_a_seed():
    assert jittered_delays(0.5, 60.0, samples=20, seed=7) == jittered_delays(0.5, 60.0, samples=20, seed=7)
    assert jittered_delays(0.5, 60.0, samples=20, seed=7) != jittered_delays(0.5, 60.0, samples=20, seed=8)


def test_jitter_does_not_apply_to_zero_delay():
    run = failing_task(1, retries=1, retry_jitter_factor=0.5)
    result = decide(RunKind.TASK, run, Failed(), rng=random.Random(0))
    assert result.state.state_details.scheduled_time == NOW


# -- RetryFailedFlows -----------------------------------------------------------------------


def failing_flow(run_count: int = 1, deployment_id: str | None = None, **policy) -> FlowRun:
    return make_run(
        RunKind.FLOW,
        Running(),
        run_count=run_count,
        retry_policy=RetryPolicy(**policy),
        deployment_id=deployment_id,
    )


@pytest.mark.parametrize("deployment_id", [None, "dep-1"])
def test_failed_flow_with_retries_is_rescheduled(deployment_id):
    run = failing_flow(1, deployment_id, retries=1, retry_delays=[30])
    result = decide(RunKind.FLOW, run, Failed(message="flow blew up"))
    state = assert_rejected_with_new(result, run, "RetryFailedFlows", T.SCHEDULED)
    assert state.name == "AwaitingRetry"
    assert state.message == "flow blew up"
    assert state.state_details.scheduled_time == NOW + timedelta(seconds=30)


def test_failed_flow_out_of_retries_fails():
    run = failing_flow(2, retries=1)
    proposed = Failed()
    assert_accepted(decide(RunKind.FLOW, run, proposed), proposed)


def test_failed_flow_not_retriable_fails():
    run = failing_flow(1, retries=1)
    proposed = Failed(retriable=False)
    assert_accepted(decide(RunKind.FLOW, run, proposed), proposed)


def test_crashed_deployment_flow_is_retried():
    run = failing_flow(1, "dep-1", retries=2, retry_delays=[3])
    result = decide(RunKind.FLOW, run, Crashed(message="executor died"))
    state = assert_rejected_with_new(result, run, "RetryFailedFlows", T.SCHEDULED)
    assert state.name == "AwaitingRetry"
    assert state.message == "executor died"
    assert state.state_details.scheduled_time == NOW + timedelta(seconds=3)


def test_crashed_interactive_flow_is_not_retried():
    run = failing_flow(1, None, retries=2)
    proposed = Crashed(message="executor died")
    assert_accepted(decide(RunKind.FLOW, run, proposed), proposed)


def test_crashed_deployment_flow_out_of_retries_crashes():
    run = failing_flow(3, "dep-1", retries=2)
    proposed = Crashed()
    assert_accepted(decide(RunKind.FLOW, run, proposed), proposed)


def test_flow_retry_uses_flow_rule_not_task_rule():
    run = failing_flow(1, retries=1)
    result = decide(RunKind.FLOW, run, Failed())
    assert result.rule == "RetryFailedFlows"


def test_failed_flow_from_pending_is_not_retried():
    run = make_run(RunKind.FLOW, Pending(), retry_policy=RetryPolicy(retries=3))
    proposed = Failed()
    assert_accepted(decide(RunKind.FLOW, run, proposed), proposed)


def test_flow_retry_then_restart():
    """The AwaitingRetry state is committed, waits for its time, then the run starts again."""
    run = failing_flow(1, "dep-1", retries=1, retry_delays=[20])
    result = decide(RunKind.FLOW, run, Failed(message="first attempt"))
    run = apply_transition(run, result.state)
    assert run.state.name == "AwaitingRetry"
    assert run.end_time is None

    early = decide(RunKind.FLOW, run, Running())
    assert early.status is WAIT
    assert early.delay_seconds == pytest.approx(20.0)

    on_time = Running()
    result = decide(RunKind.FLOW, run, on_time, now=NOW + timedelta(seconds=20))
    assert_accepted(result, on_time)
    run = apply_transition(run, result.state)
    assert run.run_count == 2
    assert on_time.state_details.scheduled_time == NOW + timedelta(seconds=20)

    final = Failed(message="second attempt")
    assert_accepted(decide(RunKind.FLOW, run, final), final)


# -- framework -------------------------------------------------------------------------------


def test_orchestrate_does_not_mutate_the_run(kind):
    run = make_run(kind, Running(), retry_policy=RetryPolicy(retries=1))
    snapshot = run.model_dump()
    decide(kind, run, Failed())
    decide(kind, run, Completed())
    assert run.model_dump() == snapshot


def test_empty_policy_accepts():
    run = make_run(RunKind.FLOW, Running())
    proposed = Running()
    assert_accepted(orchestrate(make_ctx(RunKind.FLOW, run, proposed), ()), proposed)
