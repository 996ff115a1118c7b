"""The transition gateway's after-commit hook: every state a run records is noticed once, after
its write, whoever proposed it; a failing listener changes nothing; a remote store's writes are
noticed by the server that commits them, not by the client."""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any
from unittest import mock

import pytest

from stratoflow import flow, get_client, task
from stratoflow.control import transitions
from stratoflow.models import FlowRun
from stratoflow.orchestration import RunKind
from stratoflow.states import Pending, Running, Scheduled, StateType


@task
def double(x: int) -> int:
    return 2 * x


@flow
def hooked(n: int) -> int:
    return sum(double(i) for i in range(n))


def test_every_recorded_state_is_noticed_once_after_its_write() -> None:
    seen: dict[str, list[str]] = defaultdict(list)
    stored_at_notice: list[bool] = []
    store = get_client().store

    def listener(event: transitions.Committed) -> None:
        seen[event.run.id] += [s.id for s in event.states]
        assert event.run.state is not None and event.run.state.id == event.states[-1].id
        if event.kind == RunKind.FLOW:  # task runs may still sit in the outbox, which a read drains
            stored_at_notice.append(store.read_run(RunKind.FLOW, event.run.id).version >= event.run.version)

    remove = transitions.on_commit(listener)
    try:
        assert hooked(3) == 6
    finally:
        remove()
    client = get_client()
    run = client.read_flow_runs(flow_name="hooked")[0]
    runs = [client.read_flow_run(run.id), *client.read_task_runs(run.id)]
    assert len(runs) == 4
    for r in runs:
        assert seen[r.id] == [s.id for s in r.state_history], r.name
    assert stored_at_notice and all(stored_at_notice)


def test_a_failing_listener_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    notices: list[str] = []

    def broken(event: transitions.Committed) -> None:
        raise RuntimeError("listener bug")

    removers = [transitions.on_commit(broken), transitions.on_commit(lambda e: notices.append(e.run.id))]
    try:
        with caplog.at_level(logging.ERROR, logger="stratoflow.transitions"):
            assert hooked(2) == 2
    finally:
        for remove in removers:
            remove()
    run = get_client().read_flow_runs(flow_name="hooked")[0]
    assert run.state_type == StateType.COMPLETED and run.id in notices
    assert any("after-commit listener failed" in r.getMessage() for r in caplog.records)


def test_a_removed_listener_hears_nothing_more() -> None:
    notices: list[Any] = []
    remove = transitions.on_commit(notices.append)
    remove()
    remove()  # twice is harmless
    hooked(1)
    assert notices == []


def test_a_remote_stores_writes_are_not_noticed_by_the_client() -> None:
    """An API-backed store forwards the write; the server's gateway notices it where it commits."""
    notices: list[Any] = []
    run = transitions.decide_new(RunKind.FLOW, FlowRun(name="r", flow_name="f"), [Scheduled()])
    remote = mock.Mock(remote=True)
    remote.create_run.return_value = run
    remove = transitions.on_commit(notices.append)
    try:
        assert transitions.create(remote, RunKind.FLOW, run) is run
    finally:
        remove()
    remote.create_run.assert_called_once_with(RunKind.FLOW, run)
    assert notices == []


def test_propose_notices_the_policy_answer_not_the_proposal() -> None:
    """A Running proposed for a Scheduled run is recorded as what the policy made of it; the
    notice carries the recorded states."""
    store = get_client().store
    created = transitions.create(store, RunKind.FLOW, transitions.decide_new(
        RunKind.FLOW, FlowRun(name="r", flow_name="noticed"), [Scheduled()]))
    notices: list[transitions.Committed] = []
    remove = transitions.on_commit(notices.append)
    try:
        _, claimed = transitions.propose(store, RunKind.FLOW, created, Pending())
        _, running = transitions.propose(store, RunKind.FLOW, claimed, Running())
    finally:
        remove()
    assert [n.run.version for n in notices] == [claimed.version, running.version]
    assert [[s.type for s in n.states] for n in notices] == [[StateType.PENDING], [StateType.RUNNING]]
    assert not any(n.created for n in notices)


def test_the_watch_catches_a_write_that_bypasses_the_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-test proof is not blind: package code writing a run itself is reported, and so is a
    gateway write whose notice never came."""
    from _gateway_watch import PACKAGE, watch

    store = get_client().store
    run = transitions.decide_new(RunKind.FLOW, FlowRun(name="r", flow_name="bypass"), [Scheduled()])
    sneaky = compile("store.create_run(kind, run)", str(PACKAGE / "executor.py"), "exec")
    with watch(monkeypatch) as w:
        exec(sneaky, {"store": store, "kind": RunKind.FLOW, "run": run})
        with pytest.raises(AssertionError, match="bypassed the transition gateway"):
            w.check()
    with watch(monkeypatch) as w:
        monkeypatch.setattr(transitions, "_committed", lambda *a, **k: None)
        transitions.create(store, RunKind.FLOW, run.model_copy(update={"id": "other-" + run.id}))
        with pytest.raises(AssertionError, match="without exactly one after-commit notice"):
            w.check()
