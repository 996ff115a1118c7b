"""Browser tests of the web UI: headless Debian chromium driven by Playwright's sync API against
one ``stratoflow dev`` stack (a subprocess on free ports, started with the integration tier's
launcher) for the whole session.

Chromium: ``/usr/bin/chromium``; when it is missing and this process is root with ``apt-get``,
the session installs Debian's ``chromium`` package once (a file lock keeps xdist workers from
installing it twice), else every test here is skipped with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _chromium import ChromiumUnavailable, ensure_chromium
from _e2e_support import StackClient

_SUPPORT = Path(__file__).parent


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    try:
        return ensure_chromium()
    except ChromiumUnavailable as exc:
        pytest.skip(f"needs Debian's chromium at /usr/bin/chromium; apt-get unavailable: {exc}")


@pytest.fixture(scope="session")
def browser(chromium_path: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_path), headless=True,
                                             args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def ui_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackClient]:
    """One ``stratoflow dev`` for the session (``--port 0``: a free port, so it never collides)."""
    sys_modules = __import__("sys").modules
    helpers = sys_modules.get("_stratoflow_test_dev_stack")
    if helpers is None:
        import importlib.util

        spec = importlib.util.spec_from_file_location(
            "_stratoflow_test_dev_stack", _SUPPORT.parent / "integration" / "conftest.py")
        assert spec is not None and spec.loader is not None
        helpers = importlib.util.module_from_spec(spec)
        sys_modules["_stratoflow_test_dev_stack"] = helpers
        spec.loader.exec_module(helpers)
    stack = helpers.launch_dev_stack(["--port", "0"], tmp_path_factory.mktemp("ui-stack"))
    yield StackClient(stack.env)
    code = stack.stop()
    assert code == 0, f"stratoflow dev exited with {code}:\n{stack.output.text()}"


@pytest.fixture
def over_stack(ui_stack: StackClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[StackClient]:
    """This process's SDK pointed at the stack (``STRATOFLOW_API_URL`` ...): a ``@flow`` called
    here records its runs, task runs and logs through the API."""
    from stratoflow.settings import reset_settings
    from stratoflow.storage import aws as _aws

    for name in list(os.environ):
        if name.startswith(("STRATOFLOW_", "AWS_")):
            monkeypatch.delenv(name, raising=False)
    for name, value in ui_stack.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("STRATOFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("STRATOFLOW_LOG_TO_CONSOLE", "false")
    reset_settings()
    _aws.clear_clients()
    yield ui_stack
    reset_settings()
    _aws.clear_clients()


@pytest.fixture
def page(browser: Any, ui_stack: StackClient) -> Iterator[Any]:
    """A fresh page (own context) that accepts confirm() dialogs and fails the test on a JS error."""
    context = browser.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True)
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: dialog.accept())
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The first browser test may install Debian's chromium (apt-get update + install can take a few
    minutes on a fresh machine): give this tier more than the suite's 300 s per test."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(1200))

