"""Pausing a flow run from inside it, and resuming it from outside, as Prefect users know it.

* ``pause_flow_run(timeout=...)`` keeps the process: the run is Paused and the body waits
  (polling the run) until ``resume_flow_run`` moves it back to Running, or fails when the
  timeout passes first.
* ``suspend_flow_run(timeout=...)`` releases the compute: the run is Suspended and the body
  stops (the executor or worker goes on to other work). ``resume_flow_run`` reschedules it;
  the flow runs again from the start (tasks with a cache policy reuse their results) and the
  same ``suspend_flow_run`` call now returns the input it was resumed with.

``wait_for_input`` (a pydantic model) makes the resume carry validated input: what
``resume_flow_run(id, run_input={...})`` passes is checked by the API before the run moves.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from stratoflow.client import get_client
from stratoflow.context import flow_run_ctx
from stratoflow.control import transitions
from stratoflow.control.run_input import DEFAULT_KEY, stored_input
from stratoflow.exceptions import StratoflowError
from stratoflow.orchestration import ResponseStatus, RunKind
from stratoflow.states import Paused, Running, StateType, Suspended

if TYPE_CHECKING:
    from stratoflow.storage.base import Store



class PausedRunTimeout(StratoflowError):
    """The run was not resumed within the pause's timeout."""


class FlowRunSuspended(BaseException):
    """Ends the flow body of a suspended run; the engine leaves the run Suspended."""


def _context() -> Any:

    ctx = flow_run_ctx.get()
    if ctx is None:
        raise StratoflowError("pause_flow_run/suspend_flow_run must be called inside a flow run")
    return ctx


def _input_on_the_run(run: Any, key: str) -> dict[str, Any] | None:
    """The input a resume recorded on the run's state (``Resuming``), for this pause's key, when
    the objects table is out of reach (a flow running over the API)."""

    for state in reversed(run.state_history):
        keyset = state.state_details.run_input_keyset or {}
        if state.state_details.pause_key == key and state.type.value == "PAUSED":
            return None  # the latest pause with this key came after any resume: not resumed yet
        if keyset.get("key") == key and "input" in keyset:
            return dict(json.loads(keyset["input"]))
    return None


def _schema(wait_for_input: type[BaseModel] | None) -> dict[str, Any] | None:
    return wait_for_input.model_json_schema() if wait_for_input is not None else None


def _propose_pause(ctx: Any, timeout: float, key: str, reschedule: bool,
                   wait_for_input: type[BaseModel] | None) -> None:

    state = (Suspended if reschedule else Paused)(timeout_seconds=timeout, pause_key=key)
    schema = _schema(wait_for_input)
    if schema is not None:
        state.state_details.run_input_keyset = {"schema": __import__("json").dumps(schema)}
    result, run = transitions.propose(ctx.store, RunKind.FLOW, ctx.flow_run, state)
    if result.status != ResponseStatus.ACCEPT:
        raise StratoflowError(f"the flow run could not pause: {result.reason}")
    ctx.flow_run = run


def pause_flow_run(timeout: float = 3600, *, wait_for_input: type[BaseModel] | None = None,
                   key: str = DEFAULT_KEY, poll_interval: float = 1.0) -> Any:
    """Pause the current flow run until it is resumed (or ``timeout`` seconds pass: then
    ``PausedRunTimeout``). Returns the resume's input (as ``wait_for_input``) or None."""

    ctx = _context()
    _propose_pause(ctx, timeout, key, reschedule=False, wait_for_input=wait_for_input)
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        run = ctx.store.read_run(RunKind.FLOW, ctx.flow_run.id)
        if run.state is not None and run.state.type != StateType.PAUSED:
            ctx.flow_run = run
            if run.state.type != StateType.RUNNING:
                raise PausedRunTimeout(f"the pause ended in {run.state!r} instead of a resume")
            return _typed(run.state.state_details.run_input_keyset, wait_for_input, ctx.store, run.id, key)
        if time.monotonic() >= deadline:

            _, run = transitions.propose(ctx.store, RunKind.FLOW, run, Running())  # the rule fails a timed-out pause
            ctx.flow_run = run
            raise PausedRunTimeout(f"flow run {run.id} was not resumed within {timeout:g} s")
        time.sleep(delay)
        delay = min(delay * 2, poll_interval)


def suspend_flow_run(timeout: float = 3600, *, wait_for_input: type[BaseModel] | None = None,
                     key: str = DEFAULT_KEY) -> Any:
    """Suspend the current flow run, releasing its executor; when it was resumed already (this is
    the run's next attempt), return the resume's input instead."""
    ctx = _context()
    stored = stored_input(ctx.store, ctx.flow_run.id, key)
    if stored is None:
        stored = _input_on_the_run(ctx.flow_run, key)
    if stored is not None:
        return wait_for_input.model_validate(stored) if wait_for_input is not None else stored
    _propose_pause(ctx, timeout, key, reschedule=True, wait_for_input=wait_for_input)
    raise FlowRunSuspended()


def _typed(keyset: dict[str, str] | None, model: type[BaseModel] | None, store: Store, run_id: str, key: str) -> Any:
    data = stored_input(store, run_id, key)
    if data is None and keyset and "input" in keyset:
        data = __import__("json").loads(keyset["input"])
    if model is None:
        return data
    return model.model_validate(data or {})


def resume_flow_run(flow_run_id: str, run_input: dict[str, Any] | None = None) -> Any:
    """Resume a paused or suspended flow run (through the API or the store), with ``run_input``
    for a pause that waits for input."""

    return get_client().resume_flow_run(flow_run_id, run_input=run_input)


__all__ = ["FlowRunSuspended", "PausedRunTimeout", "ValidationError", "pause_flow_run", "resume_flow_run",
           "suspend_flow_run"]
