"""Unit tests for apply_transition: the bookkeeping a committed transition implies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from stratoflow.models import FlowRun, TaskRun
from stratoflow.orchestration import apply_transition
from stratoflow.states import (
    AwaitingRetry,
    Cancelled,
    Completed,
    Crashed,
    Failed,
    Paused,
    Pending,
    Retrying,
    Running,
    Scheduled,
    State,
    StateType,
)

T0 = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
SLOT = T0 - timedelta(minutes=5)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_run(kind: str):
    if kind == "flow":
        return FlowRun(name="run", flow_name="flow")
    return TaskRun(name="task-run", task_key="mod.task")


def apply_all(run, states: list[State]):
    for state in states:
        run = apply_transition(run, state)
    return run


@pytest.fixture(params=["flow", "task"])
def run(request):
    return make_run(request.param)


def test_first_transition_from_no_state(run):
    pending = Pending(timestamp=at(0))
    moved = apply_transition(run, pending)
    assert moved.state is pending
    assert moved.state_history == [pending]
    assert moved.run_count == 0
    assert moved.start_time is None
    assert moved.end_time is None
    assert moved.total_run_time == 0.0
    assert moved.updated == at(0)


def test_returns_same_model_class_and_keeps_identity(run):
    moved = apply_transition(run, Pending(timestamp=at(0)))
    assert type(moved) is type(run)
    assert moved.id == run.id
    assert moved.name == run.name


def test_version_is_not_bumped(run):
    moved = apply_all(run, [Pending(timestamp=at(0)), Running(timestamp=at(1))])
    assert moved.version == run.version == 0


def test_run_count_increments_on_each_entry_into_running(run):
    run = apply_transition(run, Scheduled(SLOT, timestamp=at(0)))
    assert run.run_count == 0
    run = apply_transition(run, Pending(timestamp=at(1)))
    assert run.run_count == 0
    run = apply_transition(run, Running(timestamp=at(2)))
    assert run.run_count == 1
    run = apply_transition(run, AwaitingRetry(at(10), timestamp=at(5)))
    assert run.run_count == 1
    run = apply_transition(run, Retrying(timestamp=at(10)))
    assert run.run_count == 2
    run = apply_transition(run, Completed(timestamp=at(12)))
    assert run.run_count == 2


def test_running_to_running_does_not_increment_run_count(run):
    run = apply_all(run, [Pending(timestamp=at(0)), Running(timestamp=at(1))])
    assert run.run_count == 1
    run = apply_transition(run, Retrying(timestamp=at(2)))
    assert run.run_count == 1
    run = apply_transition(run, Running(timestamp=at(3)))
    assert run.run_count == 1


def test_running_from_no_state_counts(run):
    moved = apply_transition(run, Running(timestamp=at(0)))
    assert moved.run_count == 1
    assert moved.start_time == at(0)


def test_start_time_is_first_running_timestamp(run):
    run = apply_all(run, [Scheduled(SLOT, timestamp=at(0)), Pending(timestamp=at(1))])
    assert run.start_time is None
    run = apply_transition(run, Running(timestamp=at(2)))
    assert run.start_time == at(2)
    run = apply_all(run, [Failed(timestamp=at(4)), AwaitingRetry(at(5), timestamp=at(4))])
    run = apply_transition(run, Running(timestamp=at(6)))
    assert run.start_time == at(2)


def test_total_run_time_accumulates_across_running_stretches(run):
    run = apply_all(
        run,
        [
            Scheduled(SLOT, timestamp=at(0)),
            Pending(timestamp=at(1)),
            Running(timestamp=at(2)),
        ],
    )
    assert run.total_run_time == 0.0
    run = apply_transition(run, AwaitingRetry(at(20), timestamp=at(12)))  # 10 s running
    assert run.total_run_time == pytest.approx(10.0)
    run = apply_transition(run, Pending(timestamp=at(20)))
    assert run.total_run_time == pytest.approx(10.0)  # time out of RUNNING does not count
    run = apply_transition(run, Running(timestamp=at(21)))
    assert run.total_run_time == pytest.approx(10.0)
    run = apply_transition(run, Completed(timestamp=at(25.5)))  # 4.5 s running
    assert run.total_run_time == pytest.approx(14.5)
    assert run.run_count == 2


def test_total_run_time_counts_a_stretch_ended_by_pause(run):
    run = apply_all(run, [Running(timestamp=at(0)), Paused(timestamp=at(3))])
    assert run.total_run_time == pytest.approx(3.0)
    run = apply_all(run, [Running(timestamp=at(100)), Completed(timestamp=at(101))])
    assert run.total_run_time == pytest.approx(4.0)


def test_total_run_time_never_goes_negative(run):
    # A clock-skewed timestamp earlier than the RUNNING one adds nothing rather than subtracting.
    run = apply_all(run, [Running(timestamp=at(10)), Completed(timestamp=at(5))])
    assert run.total_run_time == 0.0


@pytest.mark.parametrize("terminal", [Completed, Failed, Cancelled, Crashed])
def test_end_time_set_by_terminal_state(run, terminal):
    run = apply_all(run, [Pending(timestamp=at(0)), Running(timestamp=at(1))])
    assert run.end_time is None
    run = apply_transition(run, terminal(timestamp=at(7)))
    assert run.end_time == at(7)


def test_end_time_not_set_by_non_terminal_states(run):
    run = apply_all(
        run,
        [
            Scheduled(SLOT, timestamp=at(0)),
            Pending(timestamp=at(1)),
            Running(timestamp=at(2)),
            Paused(timestamp=at(3)),
            Running(timestamp=at(4)),
            AwaitingRetry(at(9), timestamp=at(5)),
        ],
    )
    assert run.end_time is None


def test_end_time_is_the_latest_terminal_state_after_a_rerun(run):
    run = apply_all(run, [Running(timestamp=at(0)), Failed(timestamp=at(1))])
    assert run.end_time == at(1)
    run = apply_all(run, [Scheduled(at(2), timestamp=at(2)), Running(timestamp=at(3)), Completed(timestamp=at(9))])
    assert run.end_time == at(9)


def test_history_grows_by_one_each_time_and_keeps_order(run):
    sequence = [
        Scheduled(SLOT, timestamp=at(0)),
        Pending(timestamp=at(1)),
        Running(timestamp=at(2)),
        AwaitingRetry(at(5), timestamp=at(3)),
        Pending(timestamp=at(5)),
        Running(timestamp=at(6)),
        Completed(timestamp=at(7)),
    ]
    for index, state in enumerate(sequence, start=1):
        run = apply_transition(run, state)
        assert len(run.state_history) == index
        assert run.state_history[-1] is state
        assert run.state is state
        assert run.updated == state.timestamp
    assert [s.id for s in run.state_history] == [s.id for s in sequence]


def test_history_appends_to_existing_history():
    existing = [Scheduled(SLOT, timestamp=at(0)), Pending(timestamp=at(1))]
    run = FlowRun(name="r", flow_name="f", state=existing[-1], state_history=list(existing))
    running = Running(timestamp=at(2))
    moved = apply_transition(run, running)
    assert [s.id for s in moved.state_history] == [existing[0].id, existing[1].id, running.id]


def test_expected_start_time_from_first_scheduled_state(run):
    run = apply_transition(run, Scheduled(SLOT, timestamp=at(0)))
    assert run.expected_start_time == SLOT
    run = apply_all(
        run,
        [
            Pending(timestamp=at(1)),
            Running(timestamp=at(2)),
            AwaitingRetry(at(60), timestamp=at(3)),
        ],
    )
    assert run.expected_start_time == SLOT


def test_expected_start_time_unset_without_scheduled_state(run):
    run = apply_all(run, [Pending(timestamp=at(0)), Running(timestamp=at(1)), Completed(timestamp=at(2))])
    assert run.expected_start_time is None


def test_expected_start_time_set_by_a_later_first_scheduled_state(run):
    run = apply_all(run, [Running(timestamp=at(0)), Failed(timestamp=at(1))])
    assert run.expected_start_time is None
    run = apply_transition(run, AwaitingRetry(at(30), timestamp=at(2)))
    assert run.expected_start_time == at(30)


def test_input_run_is_not_mutated(run):
    run = apply_all(run, [Scheduled(SLOT, timestamp=at(0)), Pending(timestamp=at(1))])
    snapshot = run.model_dump()
    history_before = run.state_history
    history_len = len(history_before)

    moved = apply_transition(run, Running(timestamp=at(2)))
    moved = apply_transition(moved, Completed(timestamp=at(3)))

    assert run.model_dump() == snapshot
    assert run.state_history is history_before
    assert len(run.state_history) == history_len
    assert run.state is not None and run.state.type is StateType.PENDING
    assert moved.state_history is not run.state_history
    assert moved.run_count == 1 and run.run_count == 0


def test_other_fields_are_carried_over():
    run = TaskRun(
        name="t",
        task_key="mod.task",
        flow_run_id="flow-1",
        cache_key="ck",
        tags=["a", "b"],
        task_inputs={"x": ["upstream"]},
    )
    moved = apply_transition(run, Pending(timestamp=at(0)))
    assert moved.flow_run_id == "flow-1"
    assert moved.cache_key == "ck"
    assert moved.tags == ["a", "b"]
    assert moved.task_inputs == {"x": ["upstream"]}
    assert moved.retry_policy == run.retry_policy
