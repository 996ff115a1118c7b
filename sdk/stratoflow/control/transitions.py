"""The transition gateway: the only code that asks the policy, moves a run and commits it.

Every state a run ever records passes through here: the engine's proposals (``decide`` in
memory, then ``create`` / ``commit``), the API's ``set_state`` and creates, the executor, the
worker, the janitor, the scheduler and the task-run outbox (``create_final_task``). A commit is
one conditional write (the stored version and the allowed from-states), so two writers never
both move the same version of a run.

After a commit lands, ``on_commit`` listeners run with what was written (``Committed``): the one
point where events, automations and metrics see every transition. A store that only forwards to
another process's gateway (``Store.remote``: the API-backed store, the sandbox's) does not call
them: that gateway does, where the write happens.

No boto3 here: this module sees only the ``Store`` interface.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from stratoflow.exceptions import StaleRunError, TransitionRefused
from stratoflow.models import CacheEntry, FlowRun, TaskRun
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
from stratoflow.states import State, StateType
from stratoflow.storage.base import Store

MAX_RACE_ATTEMPTS = 50
logger = logging.getLogger("stratoflow.transitions")

Run = FlowRun | TaskRun


@dataclass(frozen=True)
class Committed:
    """One write the gateway committed: the run as stored and the states that write added."""

    kind: RunKind
    run: Run
    states: tuple[State, ...]
    created: bool


Listener = Callable[[Committed], None]
_listeners: list[Listener] = []
_listeners_lock = threading.Lock()


def on_commit(listener: Listener) -> Callable[[], None]:
    """Call ``listener`` after every commit in this process; returns the function that removes it.

    Listeners run after the write, on the committing thread; one that raises is logged and the
    others still run (the transition has happened whatever a listener does)."""
    with _listeners_lock:
        _listeners.append(listener)

    def remove() -> None:
        with _listeners_lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return remove


def _committed(store: Store, kind: RunKind, run: Run, states: Sequence[State], *, created: bool) -> None:
    if store.remote or not _listeners:
        return
    event = Committed(kind=kind, run=run, states=tuple(states), created=created)
    for listener in list(_listeners):
        try:
            listener(event)
        except Exception:
            logger.exception("an after-commit listener failed on %s run %s", kind.value, run.id)


def policy_for(kind: RunKind) -> tuple[type, ...]:
    return FLOW_POLICY if kind == RunKind.FLOW else TASK_POLICY


@dataclass
class Decision:
    """The policy's answer to one proposal, and the run moved by it (in memory, not yet stored)."""

    result: OrchestrationResult
    run: Run
    effects: list[CacheWrite] = field(default_factory=list)

    @property
    def moved(self) -> bool:
        return self.result.writes and self.result.state is not None


def decide(kind: RunKind, run: Run, proposed: State, *, force: bool = False,
           parent_flow_run_state: State | None = None,
           cache_lookup: Callable[[str], CacheEntry | None] | None = None,
           refresh_cache: bool = False) -> Decision:
    """Ask the policy about ``proposed`` for ``run`` and move the run by its answer, in memory.

    ``force`` skips the rules (administrative overrides; the write stays conditional)."""
    ctx = OrchestrationContext(kind=kind, run=run, proposed_state=proposed,
                               parent_flow_run_state=parent_flow_run_state, cache_lookup=cache_lookup,
                               refresh_cache=refresh_cache)
    if force:
        result = OrchestrationResult(ResponseStatus.ACCEPT, proposed, reason="forced", writes=True)
    else:
        result = orchestrate(ctx, policy_for(kind))
    if not result.writes or result.state is None:
        return Decision(result, run)
    return Decision(result, apply_transition(run, result.state), list(ctx.effects))


def decide_new(kind: RunKind, run: Run, proposals: Iterable[State]) -> Run:
    """A new run moved through ``proposals``, each of which the policy must accept as proposed
    (``TransitionRefused`` otherwise); nothing is stored."""
    for proposed in proposals:
        decision = decide(kind, run, proposed)
        if decision.result.status != ResponseStatus.ACCEPT or decision.result.state is None:
            raise TransitionRefused(decision.result)
        run = decision.run
    return run


def replay(kind: RunKind, run: Run, states: Sequence[State]) -> Run:
    """``run`` moved through ``states`` (recorded by a client), each accepted by the policy as it
    stands; raises ``TransitionRefused`` for the first one the policy would not have produced.

    Judged now: the engine proposes a retry's Running only once its scheduled time has come (it
    may reuse a proposal made earlier, so the state's own timestamp can be older). Cache lookups
    are the engine's decision (the entry may have expired since); the parent flow's state is
    checked by the engine when the task starts."""
    for state in states:
        result = decide(kind, run, state.model_copy(deep=True)).result
        if result.status != ResponseStatus.ACCEPT:
            wanted = "ABORT" if result.status == ResponseStatus.ABORT else f"{result.status.value} (not ACCEPT)"
            reason = result.reason or "refused"
            raise TransitionRefused(replace(result, status=ResponseStatus.ABORT, rule=result.rule or "policy",
                                            reason=f"{state.type.value} was refused: {wanted}: {reason}"))
        run = apply_transition(run, state)
    return run


def create(store: Store, kind: RunKind, run: Run) -> Run:
    """Insert a new run with the history it was given (fails if the id exists)."""
    created = store.create_run(kind, run)
    _committed(store, kind, created, created.state_history, created=True)
    return created


def create_final_task(store: Store, run: TaskRun) -> TaskRun:
    """Insert a task run created already final; the store may batch it (its outbox)."""
    created = store.create_final_task_run(run)
    _committed(store, RunKind.TASK, created, created.state_history, created=True)
    return created


def create_idempotent(store: Store, run: FlowRun, key: str) -> tuple[FlowRun, bool]:
    """Insert ``run`` unless a run of its flow was created with idempotency key ``key``."""
    created, new = store.create_flow_run_idempotent(run, key)
    if new:
        _committed(store, RunKind.FLOW, created, created.state_history, created=True)
    return created, new


def commit(store: Store, kind: RunKind, run: Run, new_states: Sequence[State], expected_version: int,
           allowed_from: Iterable[StateType | None], effects: Sequence[CacheWrite] = ()) -> Run:
    """Record ``run`` (already moved through ``new_states``) if the stored version is still
    ``expected_version``; ``StaleRunError`` with the current run otherwise. ``effects`` (cache
    entries the transition implies) are written once the run is."""
    committed = store.commit_run(kind, run, new_states, expected_version, allowed_from)
    for effect in effects:
        store.write_cache(CacheEntry(key=effect.key, state=effect.state, expiration=effect.expiration))
    _committed(store, kind, committed, new_states, created=False)
    return committed


def propose(store: Store, kind: RunKind, run: Run | str, proposed: State, *, force: bool = False,
            parent_flow_run_state: State | None = None, refresh_cache: bool = False,
            retry_lost_races: bool = True) -> tuple[OrchestrationResult, Run]:
    """Propose ``proposed`` for a stored run and commit the outcome in one conditional write.

    A lost race (someone else wrote the run first) re-reads the run and re-applies the policy
    to what is there now, so the answer is always about the current state. With
    ``retry_lost_races=False`` the ``StaleRunError`` reaches the caller instead: the janitor's
    decisions are about the version it read, and must not be applied to a run someone else
    just moved (e.g. marking a freshly claimed run Late)."""
    current = store.read_run(kind, run) if isinstance(run, str) else run
    for _ in range(MAX_RACE_ATTEMPTS):
        decision = decide(kind, current, proposed, force=force, parent_flow_run_state=parent_flow_run_state,
                          cache_lookup=store.read_cache, refresh_cache=refresh_cache)
        if not decision.moved:
            return decision.result, current
        assert decision.result.state is not None
        try:
            committed = commit(store, kind, decision.run, [decision.result.state], current.version,
                               {current.state_type}, decision.effects)
        except StaleRunError as exc:
            if not retry_lost_races:
                raise
            current = exc.current
            continue
        return decision.result, committed
    raise RuntimeError(f"gave up after {MAX_RACE_ATTEMPTS} lost races on run {current.id}")
