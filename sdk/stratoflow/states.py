"""States of flow runs and task runs, named as Prefect users know them.

A state has a *type* (what the orchestration rules reason about) and a *name*
(a finer label a human reads: ``Late`` is a SCHEDULED state, ``Cached`` a COMPLETED one).
This module is pure: no I/O, no boto3.
"""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

_ids = random.Random()  # nosec B311  # ids must be unique, not secret: every API caller can list them, IAM guards access
# A forked process (the sandbox's children, multiprocessing) must not repeat its parent's ids.
os.register_at_fork(after_in_child=_ids.seed)


def _hex_id() -> str:
    return f"{_ids.getrandbits(128):032x}"


def now() -> datetime:
    return datetime.now(UTC)


class StateType(StrEnum):
    SCHEDULED = "SCHEDULED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    CANCELLING = "CANCELLING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    CRASHED = "CRASHED"


TERMINAL_STATES = frozenset(
    {StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED}
)
ALL_STATES = frozenset(StateType)
# Failure-like terminal states: what a retry rule may intercept and a flow's final state counts.
FAILURE_STATES = frozenset({StateType.FAILED, StateType.CRASHED})


class StateDetails(BaseModel):
    """Everything about a state besides its type: timing, linkage and retry hints."""

    model_config = ConfigDict(extra="forbid")

    flow_run_id: str | None = None
    task_run_id: str | None = None
    child_flow_run_id: str | None = None
    scheduled_time: datetime | None = None
    cache_key: str | None = None
    cache_expiration: datetime | None = None
    # Identifies one proposal; a duplicate delivery of the same proposal is recognised by it.
    transition_id: str | None = None
    # False when the engine's retry_condition_fn decided this failure must not be retried.
    retriable: bool | None = None
    pause_timeout: datetime | None = None
    pause_reschedule: bool = False
    pause_key: str | None = None
    run_input_keyset: dict[str, str] | None = None
    untrackable_result: bool = False


class State(BaseModel):
    """A state with an optional result (by reference) and a human message."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=lambda: _hex_id())
    type: StateType
    name: str = ""
    timestamp: datetime = Field(default_factory=now)
    message: str | None = None
    state_details: StateDetails = Field(default_factory=StateDetails)
    # Reference to a persisted result (inline bytes or an S3 key); see stratoflow.storage.results.
    result_ref: dict[str, Any] | None = None
    # The value in this process's memory, when the state was produced here (not serialized).
    _data: Any = PrivateAttr(default=None)
    _has_data: bool = PrivateAttr(default=False)

    def with_data(self, value: Any) -> State:
        self._data = value
        self._has_data = True
        return self

    def model_post_init(self, __context: Any) -> None:
        if not self.name:
            self.name = self.type.value.capitalize()
        if self.state_details.transition_id is None:
            self.state_details.transition_id = _hex_id()

    # -- predicates -------------------------------------------------------------------------
    def is_scheduled(self) -> bool:
        return self.type == StateType.SCHEDULED

    def is_pending(self) -> bool:
        return self.type == StateType.PENDING

    def is_running(self) -> bool:
        return self.type == StateType.RUNNING

    def is_paused(self) -> bool:
        return self.type == StateType.PAUSED

    def is_cancelling(self) -> bool:
        return self.type == StateType.CANCELLING

    def is_completed(self) -> bool:
        return self.type == StateType.COMPLETED

    def is_failed(self) -> bool:
        return self.type == StateType.FAILED

    def is_crashed(self) -> bool:
        return self.type == StateType.CRASHED

    def is_cancelled(self) -> bool:
        return self.type == StateType.CANCELLED

    def is_final(self) -> bool:
        return self.type in TERMINAL_STATES

    # -- results ----------------------------------------------------------------------------
    def result(self, raise_on_failure: bool = True) -> Any:
        """The run's return value; for a failed state, raise the stored exception.

        Loading goes through the active result store (inline or S3), so a state read back
        with ``get_client()`` in another process gives the same value.
        """
        # The one import from the core into storage (pyproject.toml: ignore_imports), at call time:
        # State.result() loads a stored result, as Prefect's does.
        from stratoflow.storage.results import load_state_result

        return load_state_result(self, raise_on_failure=raise_on_failure)

    def fresh_copy(self, **updates: Any) -> State:
        """A new state with the same type/name/details but a new id, timestamp and transition."""
        details = self.state_details.model_copy(update={"transition_id": _hex_id()})
        data: dict[str, Any] = {
            "type": self.type,
            "name": self.name,
            "message": self.message,
            "state_details": details,
            "result_ref": self.result_ref,
        }
        data.update(updates)
        return State(**data)

    def __repr__(self) -> str:
        # Prefect's display: Completed(), Failed('...'), Late('...', type=SCHEDULED) for named states.
        parts = [repr(self.message)] if self.message else []
        if self.name.upper() != self.type.value:
            parts.append(f"type={self.type.value}")
        return f"{self.name}({', '.join(parts)})"

    __str__ = __repr__


def _state(type_: StateType, name: str | None, **kwargs: Any) -> State:
    details = kwargs.pop("state_details", None) or StateDetails()
    for key in list(kwargs):
        if key in StateDetails.model_fields:
            setattr(details, key, kwargs.pop(key))
    return State(type=type_, name=name or "", state_details=details, **kwargs)


def Scheduled(scheduled_time: datetime | None = None, name: str = "Scheduled", **kw: Any) -> State:
    return _state(StateType.SCHEDULED, name, scheduled_time=scheduled_time or now(), **kw)


# A Scheduled run this far past its scheduled time is Late (the janitor marks it; the UI lists it).
LATE_AFTER = timedelta(seconds=15)


def Late(scheduled_time: datetime | None = None, **kw: Any) -> State:
    return Scheduled(scheduled_time, name="Late", **kw)


def AwaitingRetry(scheduled_time: datetime | None = None, **kw: Any) -> State:
    return Scheduled(scheduled_time, name="AwaitingRetry", **kw)


def AwaitingConcurrencySlot(scheduled_time: datetime | None = None, **kw: Any) -> State:
    return Scheduled(scheduled_time, name="AwaitingConcurrencySlot", **kw)


def Pending(**kw: Any) -> State:
    return _state(StateType.PENDING, None, **kw)


def Running(**kw: Any) -> State:
    return _state(StateType.RUNNING, None, **kw)


def Retrying(**kw: Any) -> State:
    return _state(StateType.RUNNING, "Retrying", **kw)


def Paused(
    timeout_seconds: float | None = None, pause_key: str | None = None, reschedule: bool = False, **kw: Any
) -> State:
    timeout = now() + timedelta(seconds=timeout_seconds) if timeout_seconds is not None else None
    return _state(
        StateType.PAUSED, kw.pop("name", None), pause_timeout=timeout, pause_key=pause_key,
        pause_reschedule=reschedule, **kw,
    )


def Suspended(timeout_seconds: float | None = None, pause_key: str | None = None, **kw: Any) -> State:
    return Paused(timeout_seconds, pause_key, reschedule=True, name="Suspended", **kw)


def Cancelling(**kw: Any) -> State:
    return _state(StateType.CANCELLING, None, **kw)


def Completed(**kw: Any) -> State:
    return _state(StateType.COMPLETED, None, **kw)


def Cached(**kw: Any) -> State:
    return _state(StateType.COMPLETED, "Cached", **kw)


def Failed(**kw: Any) -> State:
    return _state(StateType.FAILED, None, **kw)


def TimedOut(**kw: Any) -> State:
    return _state(StateType.FAILED, "TimedOut", **kw)


def Cancelled(**kw: Any) -> State:
    return _state(StateType.CANCELLED, None, **kw)


def Crashed(**kw: Any) -> State:
    return _state(StateType.CRASHED, None, **kw)


__all__ = [
    "ALL_STATES",
    "FAILURE_STATES",
    "TERMINAL_STATES",
    "AwaitingConcurrencySlot",
    "AwaitingRetry",
    "Cached",
    "Cancelled",
    "Cancelling",
    "Completed",
    "Crashed",
    "Failed",
    "Late",
    "Paused",
    "Pending",
    "Retrying",
    "Running",
    "Scheduled",
    "State",
    "StateDetails",
    "StateType",
    "Suspended",
    "TimedOut",
    "now",
]
