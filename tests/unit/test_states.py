"""Unit tests for stratoflow.states: constructors, identities, predicates and serialisation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from stratoflow import states
from stratoflow.states import (
    ALL_STATES,
    FAILURE_STATES,
    TERMINAL_STATES,
    AwaitingConcurrencySlot,
    AwaitingRetry,
    Cached,
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
WHEN = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)

# constructor, expected type, expected name
CONSTRUCTORS = [
    (Scheduled, T.SCHEDULED, "Scheduled"),
    (Late, T.SCHEDULED, "Late"),
    (AwaitingRetry, T.SCHEDULED, "AwaitingRetry"),
    (AwaitingConcurrencySlot, T.SCHEDULED, "AwaitingConcurrencySlot"),
    (Pending, T.PENDING, "Pending"),
    (Running, T.RUNNING, "Running"),
    (Retrying, T.RUNNING, "Retrying"),
    (Paused, T.PAUSED, "Paused"),
    (Suspended, T.PAUSED, "Suspended"),
    (Cancelling, T.CANCELLING, "Cancelling"),
    (Completed, T.COMPLETED, "Completed"),
    (Cached, T.COMPLETED, "Cached"),
    (Failed, T.FAILED, "Failed"),
    (TimedOut, T.FAILED, "TimedOut"),
    (Cancelled, T.CANCELLED, "Cancelled"),
    (Crashed, T.CRASHED, "Crashed"),
]
CONSTRUCTOR_IDS = [name for _, _, name in CONSTRUCTORS]

TERMINAL = {T.COMPLETED, T.FAILED, T.CANCELLED, T.CRASHED}


@pytest.mark.parametrize(("ctor", "type_", "name"), CONSTRUCTORS, ids=CONSTRUCTOR_IDS)
def test_constructor_type_and_name(ctor, type_, name):
    state = ctor()
    assert state.type is type_
    assert state.name == name
    assert state.id
    assert state.state_details.transition_id
    assert state.timestamp.tzinfo is not None


def test_every_state_type_has_a_constructor():
    assert {type_ for _, type_, _ in CONSTRUCTORS} == set(StateType)


@pytest.mark.parametrize("type_", list(StateType), ids=str)
def test_default_name_is_capitalised_type(type_):
    state = State(type=type_)
    assert state.name == type_.value.capitalize()


def test_explicit_name_is_kept():
    assert State(type=T.SCHEDULED, name="Custom").name == "Custom"


def test_state_sets_and_constants():
    assert set(ALL_STATES) == set(StateType)
    assert set(TERMINAL_STATES) == TERMINAL
    assert set(FAILURE_STATES) == {T.FAILED, T.CRASHED}


@pytest.mark.parametrize(("ctor", "type_", "name"), CONSTRUCTORS, ids=CONSTRUCTOR_IDS)
def test_is_final_only_for_terminal_types(ctor, type_, name):
    assert ctor().is_final() is (type_ in TERMINAL)


@pytest.mark.parametrize("type_", list(StateType), ids=str)
def test_predicates(type_):
    state = State(type=type_)
    predicates = {
        T.SCHEDULED: state.is_scheduled,
        T.PENDING: state.is_pending,
        T.RUNNING: state.is_running,
        T.PAUSED: state.is_paused,
        T.CANCELLING: state.is_cancelling,
        T.COMPLETED: state.is_completed,
        T.FAILED: state.is_failed,
        T.CANCELLED: state.is_cancelled,
        T.CRASHED: state.is_crashed,
    }
    for predicate_type, predicate in predicates.items():
        assert predicate() is (predicate_type == type_), predicate_type


# -- scheduled-type constructors ------------------------------------------------------------


@pytest.mark.parametrize("ctor", [Scheduled, Late, AwaitingRetry, AwaitingConcurrencySlot])
def test_scheduled_constructors_keep_explicit_time(ctor):
    assert ctor(WHEN).state_details.scheduled_time == WHEN
    assert ctor(scheduled_time=WHEN).state_details.scheduled_time == WHEN


@pytest.mark.parametrize("ctor", [Scheduled, Late, AwaitingRetry, AwaitingConcurrencySlot])
def test_scheduled_constructors_default_to_now(ctor):
    before = states.now()
    scheduled = ctor().state_details.scheduled_time
    after = states.now()
    assert scheduled is not None
    assert before <= scheduled <= after


def test_non_scheduled_constructors_have_no_scheduled_time():
    assert Pending().state_details.scheduled_time is None
    assert Running().state_details.scheduled_time is None


# -- pause constructors ---------------------------------------------------------------------


def test_paused_without_timeout():
    state = Paused()
    assert state.state_details.pause_timeout is None
    assert state.state_details.pause_reschedule is False
    assert state.state_details.pause_key is None


def test_paused_with_timeout_and_key():
    before = states.now()
    state = Paused(timeout_seconds=60, pause_key="approve")
    after = states.now()
    deadline = state.state_details.pause_timeout
    assert deadline is not None
    assert before + timedelta(seconds=60) <= deadline <= after + timedelta(seconds=60)
    assert state.state_details.pause_key == "approve"
    assert state.state_details.pause_reschedule is False


def test_paused_reschedule_flag():
    assert Paused(reschedule=True).state_details.pause_reschedule is True


def test_suspended_reschedules():
    state = Suspended(timeout_seconds=5, pause_key="k")
    assert state.type is T.PAUSED
    assert state.name == "Suspended"
    assert state.state_details.pause_reschedule is True
    assert state.state_details.pause_key == "k"
    assert state.state_details.pause_timeout is not None


# -- keyword routing -------------------------------------------------------------------------


def test_detail_keywords_go_to_state_details_and_others_to_state():
    ref = {"kind": "inline", "value": "abc"}
    state = Completed(
        cache_key="key-1",
        cache_expiration=WHEN,
        task_run_id="t-1",
        flow_run_id="f-1",
        retriable=False,
        message="done",
        result_ref=ref,
    )
    details = state.state_details
    assert details.cache_key == "key-1"
    assert details.cache_expiration == WHEN
    assert details.task_run_id == "t-1"
    assert details.flow_run_id == "f-1"
    assert details.retriable is False
    assert state.message == "done"
    assert state.result_ref == ref


def test_explicit_transition_id_is_kept():
    assert Running(transition_id="tid-1").state_details.transition_id == "tid-1"
    details = StateDetails(transition_id="tid-2")
    assert State(type=T.RUNNING, state_details=details).state_details.transition_id == "tid-2"


def test_unknown_fields_are_rejected():
    with pytest.raises(ValidationError):
        State(type=T.RUNNING, bogus=1)
    with pytest.raises(ValidationError):
        StateDetails(bogus=1)


def test_type_is_validated():
    assert State(type="COMPLETED").type is T.COMPLETED
    with pytest.raises(ValidationError):
        State(type="DONE")


# -- identity --------------------------------------------------------------------------------


def test_every_state_gets_unique_ids():
    made = [ctor() for ctor, _, _ in CONSTRUCTORS for _ in range(5)]
    ids = {s.id for s in made}
    transition_ids = {s.state_details.transition_id for s in made}
    assert len(ids) == len(made)
    assert len(transition_ids) == len(made)


def test_fresh_copy_has_new_identity_and_same_content():
    original = Failed(
        message="boom",
        result_ref={"kind": "inline", "value": "x"},
        task_run_id="t-1",
        retriable=False,
    )
    original_tid = original.state_details.transition_id
    copy = original.fresh_copy()

    assert copy.id != original.id
    assert copy.state_details.transition_id != original_tid
    assert copy.type is original.type
    assert copy.name == original.name
    assert copy.message == original.message
    assert copy.result_ref == original.result_ref
    assert copy.state_details.task_run_id == "t-1"
    assert copy.state_details.retriable is False
    assert copy.timestamp >= original.timestamp
    # The original is untouched.
    assert original.state_details.transition_id == original_tid
    assert copy.state_details is not original.state_details


def test_fresh_copy_keeps_custom_name_and_applies_updates():
    original = AwaitingRetry(WHEN, message="first")
    copy = original.fresh_copy(message="second")
    assert copy.name == "AwaitingRetry"
    assert copy.type is T.SCHEDULED
    assert copy.state_details.scheduled_time == WHEN
    assert copy.message == "second"
    assert original.message == "first"


def test_fresh_copies_are_distinct_from_each_other():
    original = Running()
    copies = [original.fresh_copy() for _ in range(10)]
    assert len({c.id for c in copies}) == 10
    assert len({c.state_details.transition_id for c in copies}) == 10


# -- serialisation ---------------------------------------------------------------------------


@pytest.mark.parametrize(("ctor", "type_", "name"), CONSTRUCTORS, ids=CONSTRUCTOR_IDS)
def test_json_round_trip(ctor, type_, name):
    state = ctor(message="hello", result_ref={"kind": "inline", "value": [1, 2, 3]}, task_run_id="t-1")
    restored = State.model_validate_json(state.model_dump_json())
    assert restored == state
    assert restored.type is type_
    assert restored.name == name
    assert restored.id == state.id
    assert restored.state_details.transition_id == state.state_details.transition_id
    assert restored.timestamp == state.timestamp
    assert restored.timestamp.tzinfo is not None


def test_json_round_trip_with_all_details():
    details = StateDetails(
        flow_run_id="f",
        task_run_id="t",
        child_flow_run_id="c",
        scheduled_time=WHEN,
        cache_key="k",
        cache_expiration=WHEN + timedelta(days=1),
        transition_id="tid",
        retriable=True,
        pause_timeout=WHEN + timedelta(minutes=5),
        pause_reschedule=True,
        pause_key="pk",
        run_input_keyset={"a": "b"},
        untrackable_result=True,
    )
    state = State(type=T.PAUSED, name="Suspended", timestamp=WHEN, message="m", state_details=details)
    restored = State.model_validate_json(state.model_dump_json())
    assert restored == state
    assert restored.state_details == details


def test_repr_mentions_name_and_message():
    # The exact display format is not pinned; it must name the state and show its message.
    text = repr(Cached(message="hit"))
    assert text.startswith("Cached(")
    assert "hit" in text
    assert str(Running()).startswith("Running(")
