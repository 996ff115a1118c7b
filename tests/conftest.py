"""Shared fixtures: every test gets its own embedded cloud (fresh moto state and journal)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stratoflow.settings import _STACK_VARS, reset_settings


@pytest.fixture(autouse=True)
def stratoflow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "stratoflow-home"
    monkeypatch.setenv("STRATOFLOW_HOME", str(home))
    monkeypatch.setenv("STRATOFLOW_LOG_TO_CONSOLE", "false")
    monkeypatch.setenv("STRATOFLOW_BACKEND", "embedded")
    for var in _STACK_VARS:
        monkeypatch.delenv(var, raising=False)
    reset_settings()
    yield home
    reset_settings()


@pytest.fixture
def client():  # type: ignore[no-untyped-def]
    from stratoflow import get_client

    return get_client()
