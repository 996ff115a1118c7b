"""Functional tests: the real engine on the embedded (in-process moto) cloud.

Every test gets a fresh embedded cloud from the autouse ``stratoflow_home`` fixture in
``tests/conftest.py``. The helpers below read what the engine stored, through the public client.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
from _gateway_watch import Watch, watch


@pytest.fixture
def client():  # type: ignore[no-untyped-def]
    """A client on this test's fresh embedded cloud. Requesting it early also builds the store,
    so timing assertions made afterwards do not include the one-off cloud start-up."""
    from stratoflow import get_client

    return get_client()


@pytest.fixture
def only_flow_run(client: Any):  # type: ignore[no-untyped-def]
    """``only_flow_run(name)``: the single stored flow run of flow ``name`` (asserts there is one)."""

    def get(flow_name: str) -> Any:
        runs = client.read_flow_runs(flow_name=flow_name)
        assert len(runs) == 1, f"expected exactly one stored run of {flow_name!r}, found {runs!r}"
        return client.read_flow_run(runs[0].id)

    return get


@pytest.fixture(autouse=True)
def transition_gateway(monkeypatch: pytest.MonkeyPatch) -> Iterator[Watch]:
    """Every test of this tier proves that its state changes went through the one transition
    gateway, and that the gateway's after-commit hook saw each of them (``_gateway_watch``)."""
    with watch(monkeypatch) as w:
        yield w
        w.check()


@pytest.fixture(autouse=True)
def _freeze_survivors():  # type: ignore[no-untyped-def]
    """Each test builds a fresh embedded cloud, and a process keeps every earlier one alive
    (botocore clients and service models: ~150k objects per test). Left alone, every full
    garbage collection walks all of them again and tests get slower as the session goes on.
    Moving the survivors to the permanent generation after each test keeps the cost flat."""
    yield
    gc.collect()
    gc.freeze()
