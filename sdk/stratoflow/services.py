"""Services the engine and the API handlers call: the policy applied over the store.

No boto3 here: this module sees only the ``Store`` interface.
"""

from __future__ import annotations

from stratoflow.exceptions import StaleRunError
from stratoflow.models import CacheEntry, FlowRun, TaskRun
from stratoflow.orchestration import (
    FLOW_POLICY,
    TASK_POLICY,
    OrchestrationContext,
    OrchestrationResult,
    ResponseStatus,
    RunKind,
    apply_transition,
    orchestrate,
)
from stratoflow.states import State
from stratoflow.storage.base import Store

MAX_RACE_ATTEMPTS = 50


def policy_for(kind: RunKind) -> tuple[type, ...]:
    return FLOW_POLICY if kind == RunKind.FLOW else TASK_POLICY


def set_run_state(
    store: Store,
    kind: RunKind,
    run: FlowRun | TaskRun | str,
    proposed: State,
    *,
    force: bool = False,
    parent_flow_run_state: State | None = None,
    refresh_cache: bool = False,
) -> tuple[OrchestrationResult, FlowRun | TaskRun]:
    """Propose ``proposed`` for a stored run and commit the outcome in one conditional write.

    A lost race (someone else wrote the run first) re-reads the run and re-applies the policy
    to what is there now, so the answer is always about the current state. ``force`` skips
    the policy (administrative overrides) but still writes conditionally.
    """
    current = store.read_run(kind, run) if isinstance(run, str) else run
    for _ in range(MAX_RACE_ATTEMPTS):
        ctx = OrchestrationContext(
            kind=kind, run=current, proposed_state=proposed,
            parent_flow_run_state=parent_flow_run_state,
            cache_lookup=store.read_cache, refresh_cache=refresh_cache,
        )
        if force:
            result = OrchestrationResult(ResponseStatus.ACCEPT, proposed, reason="forced", writes=True)
        else:
            result = orchestrate(ctx, policy_for(kind))
        if not result.writes or result.state is None:
            return result, current
        moved = apply_transition(current, result.state)
        try:
            committed = store.commit_run(kind, moved, [result.state], current.version, {current.state_type})
        except StaleRunError as exc:
            current = exc.current
            continue
        for effect in ctx.effects:
            store.write_cache(CacheEntry(key=effect.key, state=effect.state, expiration=effect.expiration))
        return result, committed
    raise RuntimeError(f"gave up after {MAX_RACE_ATTEMPTS} lost races on run {current.id}")
