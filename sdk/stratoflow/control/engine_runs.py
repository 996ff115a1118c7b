"""Runs as the run engine records them through the API (``stratoflow.storage.api_store``): a new
run with its state history, and new states onto a stored run.

The engine decides transitions locally and sends the outcome; it is never trusted: every state it
asks to record is re-proposed to the orchestration policy (``transitions.replay``), from an empty
run (a create) or from the stored run (a commit), and anything the policy would not have produced
is refused (``TransitionRefused``). Result and parameters references are checked before anything
is written (``check_refs``): what a client sends is never deserialised later unless a runner of
this stack wrote it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from stratoflow.control import transitions
from stratoflow.exceptions import Conflict, StaleRunError, Unprocessable
from stratoflow.models import FlowRun, TaskRun
from stratoflow.orchestration import RunKind
from stratoflow.states import State, StateType
from stratoflow.storage.keys import local_signer
from stratoflow.storage.results import ResultIntegrityError, check_ref, check_uri

if TYPE_CHECKING:
    from stratoflow.settings import Settings
    from stratoflow.storage.base import Store

# The bookkeeping of a run, which the policy's replay decides, never the engine.
_RESET: dict[str, Any] = {"state": None, "state_history": [], "run_count": 0, "start_time": None, "end_time": None,
                          "total_run_time": 0.0}

# Flow runs this environment has seen exist: a flow's many task runs are checked once (a Lambda
# environment is reused across requests). Only existence is cached, never state.
_known_flow_runs: dict[str, None] = {}
_KNOWN_MAX = 10_000
_known_lock = threading.Lock()


def _remember_flow_run(flow_run_id: str) -> None:
    with _known_lock:
        if len(_known_flow_runs) >= _KNOWN_MAX:
            _known_flow_runs.pop(next(iter(_known_flow_runs)))
        _known_flow_runs[flow_run_id] = None


def forget_flow_run(flow_run_id: str) -> None:
    """Called when a flow run is deleted, so its task runs are refused again (404)."""
    with _known_lock:
        _known_flow_runs.pop(flow_run_id, None)


def check_refs(settings: Settings, states: Sequence[State], where: str, run: FlowRun | TaskRun | None = None,
               run_where: str = "body", *, indexed: bool = True) -> None:
    """Refuse (422, naming the field) any result reference a runner of this stack did not write,
    and a parameters reference outside the stack's bucket: what a client sends is never trusted
    to be deserialised later (see ``stratoflow.storage.results``)."""
    try:
        # The API holds the key (template.yaml): it verifies. One without it still checks the shape,
        # and readers verify before they load anything.
        signer = local_signer(settings) if any(s.result_ref is not None for s in states) else None
        for i, state in enumerate(states):
            if state.result_ref is not None:
                check_ref(state.result_ref, bucket=settings.bucket, prefix=settings.results_prefix, signer=signer,
                          where=f"{where}.{i}.result_ref" if indexed else f"{where}.result_ref")
        if isinstance(run, FlowRun) and run.parameters_ref is not None:
            check_uri(run.parameters_ref, bucket=settings.bucket, prefix="parameters/",
                      where=f"{run_where}.parameters_ref")
    except ResultIntegrityError as exc:
        raise Unprocessable(str(exc)) from None


def _check_flow_run_exists(store: Store, run: FlowRun | TaskRun) -> None:
    """``ObjectNotFound`` (404) for a task run of an unknown flow run."""
    if isinstance(run, TaskRun) and run.flow_run_id is not None and run.flow_run_id not in _known_flow_runs:
        store.read_run(RunKind.FLOW, run.flow_run_id)
        _remember_flow_run(run.flow_run_id)


def create_run(store: Store, settings: Settings, kind: RunKind, run: FlowRun | TaskRun) -> FlowRun | TaskRun:
    """Create ``run`` (of ``kind``) with its state history replayed through the policy from an
    empty run; ``Conflict`` when a run of that id exists (the store's create is conditional)."""
    if not run.state_history:
        raise Unprocessable("body.state_history: a run is created with at least one state")
    if run.state is not None and run.state.id != run.state_history[-1].id:
        raise Unprocessable("body.state: must be the last state of state_history")
    check_refs(settings, run.state_history, "body.state_history", run)
    _check_flow_run_exists(store, run)
    empty = run.model_copy(update={**_RESET, "version": 0})
    replayed = transitions.replay(kind, empty, run.state_history).model_copy(update={"updated": run.updated})
    try:
        if isinstance(replayed, TaskRun) and replayed.state is not None and replayed.state.is_final():
            return transitions.create_final_task(store, replayed)
        return transitions.create(store, kind, replayed)
    except Exception as exc:
        if getattr(exc, "cause_response_code", None) != "ConditionalCheckFailedException":
            raise
        raise Conflict(f"{kind.value} run {run.id!r} already exists") from None


def _same_states(a: Sequence[State], b: Sequence[State]) -> bool:
    return [s.id for s in a] == [s.id for s in b]


def commit_run(store: Store, settings: Settings, kind: RunKind, run_id: str, run: FlowRun | TaskRun,
               new_states: Sequence[State], expected_version: int,
               allowed_from: Sequence[StateType | None]) -> FlowRun | TaskRun:
    """Record ``run`` (the stored run moved through ``new_states``) if the stored one is still at
    ``expected_version`` in a state of ``allowed_from``; ``StaleRunError`` with the stored run
    otherwise. The bookkeeping recorded is the policy's replay; the other fields are the engine's."""
    if run.id != run_id:
        raise Unprocessable(f"body.run.id: {run.id!r} is not the run of the path ({run_id!r})")
    stored = store.read_run(kind, run_id)
    if stored.version != expected_version or stored.state_type not in set(allowed_from):
        raise StaleRunError(stored)
    if not _same_states(run.state_history, [*stored.state_history, *new_states]):
        raise Unprocessable("body.run.state_history: must be the stored history followed by new_states")
    check_refs(settings, new_states, "body.new_states", run, "body.run")
    replayed = transitions.replay(kind, stored, new_states)
    final = run.model_copy(update={
        **{k: getattr(replayed, k) for k in (*_RESET, "expected_start_time")}, "updated": run.updated})
    return transitions.commit(store, kind, final, new_states, expected_version, allowed_from)
