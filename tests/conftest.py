"""Shared fixtures: every test gets its own clean backend.

By default that is a fresh embedded cloud (in-process moto, its own journal) per test.

With ``STRATOFLOW_TEST_BACKEND=api`` the same tests run through the control-plane API instead:
each pytest process (each xdist worker) starts one ``stratoflow dev`` subprocess for the session,
every test runs with ``STRATOFLOW_API_URL`` and the stack's settings (so the engine and
``get_client()`` go over HTTP), and the stack's state is wiped before each test (moto reset,
tables and bucket created again). Tests that need the in-process store are marked
``@pytest.mark.store_only("why")`` (or listed in ``_STORE_ONLY`` below) and skipped in that mode.
"""

from __future__ import annotations

import importlib.util
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from stratoflow.settings import _STACK_VARS, reset_settings

API_MODE = os.environ.get("STRATOFLOW_TEST_BACKEND", "").strip().lower() == "api"
if os.environ.get("STRATOFLOW_TEST_BACKEND", "").strip().lower() not in ("", "api", "store", "embedded"):
    raise pytest.UsageError("STRATOFLOW_TEST_BACKEND is 'api' or unset (the embedded store)")

# Tests of modules the API mode runs that cannot run over the API, by test function name, with
# the reason (for tests in files this conftest does not own; new tests use the marker instead).
_STORE_ONLY: dict[str, str] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "store_only(reason): needs the in-process store (store.models, the embedded journal, crashing the "
        "embedded process); skipped when STRATOFLOW_TEST_BACKEND=api")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not API_MODE:
        return
    for item in items:
        marker = item.get_closest_marker("store_only")
        name = getattr(item, "originalname", item.name)
        if marker is None and name not in _STORE_ONLY:
            continue
        reason = _STORE_ONLY.get(name)
        if marker is not None:
            reason = marker.args[0] if marker.args else marker.kwargs.get("reason", reason)
        item.add_marker(pytest.mark.skip(
            reason=f"store only (STRATOFLOW_TEST_BACKEND=api): {reason or 'needs the in-process store'}"))


# -- the embedded store (default) -------------------------------------------------------------------
def _embedded_env(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRATOFLOW_HOME", str(home))
    monkeypatch.setenv("STRATOFLOW_LOG_TO_CONSOLE", "false")
    monkeypatch.setenv("STRATOFLOW_BACKEND", "embedded")
    for var in _STACK_VARS:
        monkeypatch.delenv(var, raising=False)


# -- the API (STRATOFLOW_TEST_BACKEND=api) ----------------------------------------------------------
def _stack_helpers() -> ModuleType:
    """tests/integration/conftest.py (the ``stratoflow dev`` launcher), loaded under its own name:
    pytest imports it as a conftest too, and two modules called ``conftest`` must not collide."""
    name = "_stratoflow_test_dev_stack"
    module = __import__("sys").modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parent / "integration" / "conftest.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        __import__("sys").modules[name] = module
        spec.loader.exec_module(module)
    return module


class ApiBackend:
    """A session's ``stratoflow dev`` and what wipes it between tests."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack
        self.env: dict[str, str] = dict(stack.env)
        self._store: Any = None
        self._result_key: str | None = None

    def reset(self) -> None:
        """Forget everything: moto's state goes, the tables and bucket are created again."""
        from stratoflow.settings import Settings
        from stratoflow.storage import aws as _aws
        from stratoflow.storage.dynamodb import DynamoDBStore
        from stratoflow.storage.keys import ensure_result_key_secret

        settings = Settings()  # the stack's (read from the environment the test fixture just set)
        secret = self.env["STRATOFLOW_RESULT_KEY_SECRET"]
        if self._result_key is None:  # the stack's processes keep the key they read: keep the same one
            self._result_key = _aws.client("secretsmanager", settings).get_secret_value(
                SecretId=secret)["SecretString"]
        request = urllib.request.Request(f"{self.stack.moto_url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
        if self._store is None:
            self._store = DynamoDBStore(settings)
        self._store.ensure_resources()
        ensure_result_key_secret(settings, secret, self._result_key)

    def stop(self) -> None:
        code = self.stack.stop()
        if code != 0:
            print(f"stratoflow dev exited with {code}:\n{self.stack.output.text()}")


@pytest.fixture(scope="session")
def api_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiBackend | None]:
    """The session's ``stratoflow dev`` in API mode; None otherwise."""
    if not API_MODE:
        yield None
        return
    helpers = _stack_helpers()
    backend = ApiBackend(helpers.launch_dev_stack(["--port", "0"], tmp_path_factory.mktemp("api-mode-stack")))
    yield backend
    backend.stop()


def _api_env(backend: ApiBackend, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("STRATOFLOW_", "AWS_")):
            monkeypatch.delenv(name, raising=False)
    for name, value in backend.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("STRATOFLOW_HOME", str(home))
    monkeypatch.setenv("STRATOFLOW_LOG_TO_CONSOLE", "false")


def _forget_client_caches() -> None:
    """Caches of this process that would outlive the stack's reset: AWS clients, and the flow
    records the engine has ensured (keyed by the store object, which stays the same over the API)."""
    from stratoflow.engine import flow_engine as flows
    from stratoflow.storage import aws as _aws

    _aws.clear_clients()
    with flows._known_lock:
        flows._known_flows.clear()


@pytest.fixture(autouse=True)
def stratoflow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api_backend: ApiBackend | None) -> Iterator[Path]:
    home = tmp_path / "stratoflow-home"
    if api_backend is None:
        _embedded_env(home, monkeypatch)
        reset_settings()
        yield home
        reset_settings()
        return
    _api_env(api_backend, home, monkeypatch)
    reset_settings()
    _forget_client_caches()
    api_backend.reset()
    from stratoflow.storage import get_store
    from stratoflow.storage.api_store import ApiStore

    assert isinstance(get_store(), ApiStore), "STRATOFLOW_TEST_BACKEND=api but the store is not the API's"
    yield home
    reset_settings()
    _forget_client_caches()


@pytest.fixture
def client():  # type: ignore[no-untyped-def]
    from stratoflow import get_client

    return get_client()


@pytest.fixture
def restore_imports(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Undo what ``load_entrypoint`` does to the process: package roots on ``sys.path``, and the
    modules of the tests' temporary directories in ``sys.modules`` (stratoflow's own stay loaded)."""
    import sys

    monkeypatch.setattr(sys, "path", list(sys.path))
    base = str(tmp_path_factory.getbasetemp())
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if str(getattr(sys.modules[name], "__file__", None) or "").startswith(base):
            del sys.modules[name]
