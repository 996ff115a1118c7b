"""Concurrent proposals against the store: conditional writes plus the policy let exactly one
writer win each transition, and duplicates or forbidden transitions change nothing."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from stratoflow.control import transitions
from stratoflow.models import FlowRun, TaskRun
from stratoflow.orchestration import OrchestrationResult, ResponseStatus, RunKind, apply_transition
from stratoflow.states import Completed, Paused, Running, Scheduled, State, StateType, now
from stratoflow.storage import get_store


@pytest.fixture
def store() -> Any:
    return get_store()


def new_scheduled_flow_run(store: Any, name: str = "racer") -> FlowRun:
    run = FlowRun(name=name, flow_name="race-flow")
    run = apply_transition(run, Scheduled(scheduled_time=now() - timedelta(seconds=1)))
    created = store.create_run(RunKind.FLOW, run)
    assert created.version == 1
    return created  # type: ignore[no-any-return]


def race(store: Any, run_id: str, n: int, make_state: Callable[[int], State],
         kind: RunKind = RunKind.FLOW) -> list[OrchestrationResult]:
    """``n`` threads, released together, each proposing ``make_state(i)`` for the stored run."""
    barrier = threading.Barrier(n)

    def attempt(i: int) -> OrchestrationResult:
        state = make_state(i)
        barrier.wait()
        result, _ = transitions.propose(store, kind, run_id, state)
        return result

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(attempt, range(n)))


def statuses(results: list[OrchestrationResult]) -> Counter[ResponseStatus]:
    return Counter(r.status for r in results)


def test_32_claims_of_one_scheduled_run_have_one_winner(store: Any) -> None:
    run = new_scheduled_flow_run(store)

    claims = race(store, run.id, 32, lambda i: Running())
    assert statuses(claims) == {ResponseStatus.ACCEPT: 1, ResponseStatus.ABORT: 31}
    assert {r.rule for r in claims if r.status == ResponseStatus.ABORT} == {"PreventDuplicateClaims"}
    winner = next(r for r in claims if r.status == ResponseStatus.ACCEPT)

    stored = store.read_run(RunKind.FLOW, run.id)
    assert stored.version == 2
    assert stored.run_count == 1
    assert stored.state.id == winner.state.id

    finishes = race(store, run.id, 32, lambda i: Completed(message=f"finisher {i}"))
    assert statuses(finishes)[ResponseStatus.ACCEPT] == 1
    assert sum(1 for r in finishes if r.writes) == 1
    assert {r.rule for r in finishes if r.status != ResponseStatus.ACCEPT} == {"HandleFlowTerminalStateTransitions"}
    finisher = next(r for r in finishes if r.status == ResponseStatus.ACCEPT)

    stored = store.read_run(RunKind.FLOW, run.id)
    assert [s.name for s in stored.state_history] == ["Scheduled", "Running", "Completed"]
    assert len({s.id for s in stored.state_history}) == 3
    assert stored.state.id == finisher.state.id
    assert stored.state.message == finisher.state.message
    assert stored.version == 3
    assert stored.run_count == 1


def test_each_step_of_a_contended_sequence_has_exactly_one_winner(store: Any) -> None:
    run = new_scheduled_flow_run(store)
    steps = 20
    versions = [run.version]
    winners: list[str] = []

    for step in range(steps):
        target: Callable[[int], State] = (lambda i: Running()) if step % 2 == 0 else (lambda i: Paused())
        results = race(store, run.id, 8, target)
        counts = statuses(results)
        assert counts[ResponseStatus.ACCEPT] == 1, f"step {step}: {counts}"
        assert counts[ResponseStatus.ABORT] == 7, f"step {step}: {counts}"
        winners.append(next(r.state.id for r in results if r.status == ResponseStatus.ACCEPT))
        stored = store.read_run(RunKind.FLOW, run.id)
        versions.append(stored.version)
        assert stored.state.id == winners[-1]

    stored = store.read_run(RunKind.FLOW, run.id)
    history = stored.state_history
    assert len(history) == steps + 1
    assert [s.id for s in history[1:]] == winners
    assert [s.type for s in history[1:]] == [StateType.RUNNING if k % 2 == 0 else StateType.PAUSED
                                             for k in range(steps)]
    assert versions == list(range(1, steps + 2))  # one write per step, strictly increasing
    assert stored.run_count == steps // 2


def test_duplicate_delivery_sequential_is_recorded_once(store: Any) -> None:
    run = new_scheduled_flow_run(store)
    proposal = Running()
    results = [transitions.propose(store, RunKind.FLOW, run.id, proposal)[0] for _ in range(10)]
    # A redelivery is a different object carrying the same transition id (e.g. from a queue).
    redelivered = State.model_validate_json(proposal.model_dump_json())
    results.append(transitions.propose(store, RunKind.FLOW, run.id, redelivered)[0])

    assert results[0].status == ResponseStatus.ACCEPT
    assert all(r.status == ResponseStatus.REJECT and not r.writes for r in results[1:])
    assert {r.rule for r in results[1:]} == {"PreventDuplicateTransitions"}

    stored = store.read_run(RunKind.FLOW, run.id)
    assert stored.version == 2
    assert stored.run_count == 1
    tid = proposal.state_details.transition_id
    assert [s.state_details.transition_id for s in stored.state_history].count(tid) == 1
    assert [s.name for s in stored.state_history] == ["Scheduled", "Running"]


def test_duplicate_delivery_concurrent_is_recorded_once(store: Any) -> None:
    run = new_scheduled_flow_run(store)
    proposal = Running()
    results = race(store, run.id, 10, lambda i: proposal)
    assert statuses(results) == {ResponseStatus.ACCEPT: 1, ResponseStatus.REJECT: 9}
    assert sum(1 for r in results if r.writes) == 1

    stored = store.read_run(RunKind.FLOW, run.id)
    assert stored.version == 2
    assert stored.run_count == 1
    assert [s.name for s in stored.state_history] == ["Scheduled", "Running"]
    assert stored.state.state_details.transition_id == proposal.state_details.transition_id


def test_forbidden_transition_is_aborted_and_changes_nothing(store: Any) -> None:
    run = new_scheduled_flow_run(store)
    for state in (Running(), Completed()):
        result, _ = transitions.propose(store, RunKind.FLOW, run.id, state)
        assert result.status == ResponseStatus.ACCEPT
    before = store.read_run(RunKind.FLOW, run.id)
    assert before.version == 3

    result, returned = transitions.propose(store, RunKind.FLOW, run.id, Running())
    assert result.status == ResponseStatus.ABORT
    assert result.rule == "HandleFlowTerminalStateTransitions"
    assert result.reason and "terminal state" in result.reason
    assert not result.writes
    assert returned.version == before.version

    after = store.read_run(RunKind.FLOW, run.id)
    assert after.version == before.version
    assert after.state.id == before.state.id and after.state.type == StateType.COMPLETED
    assert [s.id for s in after.state_history] == [s.id for s in before.state_history]
    assert after.run_count == 1


def test_forbidden_task_transition_is_aborted_and_changes_nothing(store: Any) -> None:
    run = TaskRun(name="racing-task", task_key="racing-task")
    for state in (Running(), Completed()):
        run = apply_transition(run, state)
    run = store.create_run(RunKind.TASK, run)

    result, _ = transitions.propose(store, RunKind.TASK, run.id, Running())
    assert result.status == ResponseStatus.ABORT
    assert result.rule == "HandleTaskTerminalStateTransitions"
    assert result.reason and "terminal state" in result.reason
    after = store.read_run(RunKind.TASK, run.id)
    assert after.version == 1
    assert [s.name for s in after.state_history] == ["Running", "Completed"]


def test_a_lost_commit_answers_with_the_winners_run_without_a_second_read(store: Any,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """DynamoDB returns the stored item with the failed condition (ReturnValuesOnConditionCheckFailure):
    the loser learns the current run from its own write."""
    from stratoflow.exceptions import StaleRunError
    from stratoflow.states import Pending

    run = new_scheduled_flow_run(store)
    winner = transitions.decide(RunKind.FLOW, run, Pending())
    assert winner.result.state is not None
    won = store.commit_run(RunKind.FLOW, winner.run, [winner.result.state], run.version, {run.state_type})
    reads: list[str] = []
    monkeypatch.setattr(type(store), "read_run", lambda self, kind, run_id: reads.append(run_id))
    loser = transitions.decide(RunKind.FLOW, run, Running())  # decided on the version the winner moved
    assert loser.result.state is not None
    with pytest.raises(StaleRunError) as lost:
        store.commit_run(RunKind.FLOW, loser.run, [loser.result.state], run.version, {run.state_type})
    assert reads == []
    current = lost.value.current
    assert (current.version, current.state_type) == (won.version, StateType.PENDING)
    assert [s.id for s in current.state_history] == [s.id for s in won.state_history]
