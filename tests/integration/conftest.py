"""Integration tests: the local cloud (``stratoflow dev``) over real HTTP.

Each stack runs as a subprocess (``python -m stratoflow.cli dev``): moto's backends are
process-global, and the embedded backend of the other tests lives in this process. The fixtures
read the URLs and settings from the ``export`` lines the command prints and wait for ``ready``.
"""

from __future__ import annotations

import http.client
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import pytest

from stratoflow.cli.config import parse_exports

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_HANDLER = REPO_ROOT / "functions" / "api" / "app.py"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


class HttpResponse(NamedTuple):
    status: int
    headers: list[tuple[str, str]]  # as sent: repeated headers stay separate
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


class _Output:
    """Collects the subprocess's output lines on a thread (a full pipe would block it)."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.closed = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))
            if line.strip() == "ready":
                self.ready.set()
        self.closed.set()

    def text(self) -> str:
        return "\n".join(self.lines)


class DevStackProcess:
    """A running ``stratoflow dev``: its URLs, the environment it printed, plain HTTP helpers."""

    def __init__(self, process: subprocess.Popen[str], output: _Output) -> None:
        self.process = process
        self.output = output
        self.env: dict[str, str] = parse_exports(output.lines)
        self.api_url = self.env["STRATOFLOW_API_URL"]
        self.moto_url = self.env["STRATOFLOW_AWS_ENDPOINT_URL"]

    def connection(self, timeout: float = 20.0) -> http.client.HTTPConnection:
        parts = urlsplit(self.api_url)
        return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)

    def request(self, method: str, path: str, *, headers: Sequence[tuple[str, str]] | Mapping[str, str] = (),
                body: bytes | None = None, connection: http.client.HTTPConnection | None = None,
                timeout: float = 20.0) -> HttpResponse:
        """One request; headers as pairs so a name can repeat. Pass ``connection`` to reuse one."""
        conn = connection or self.connection(timeout)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            pairs = headers.items() if isinstance(headers, Mapping) else headers
            for name, value in pairs:
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            response = conn.getresponse()
            return HttpResponse(response.status, response.getheaders(), response.read())
        finally:
            if connection is None:
                conn.close()

    def stop(self, sig: int = signal.SIGINT, timeout: float = STOP_TIMEOUT) -> int:
        """Send ``sig`` and wait for the exit code; kill after ``timeout``."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.output.closed.wait(5)
        return self.process.returncode


def dev_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "stratoflow.cli", "dev", *args]


def subprocess_env(home: Path) -> dict[str, str]:
    """This environment without Stratoflow or AWS settings (the stack sets its own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRATOFLOW_", "AWS_"))}
    env.update(PYTHONUNBUFFERED="1", STRATOFLOW_HOME=str(home), STRATOFLOW_LOG_TO_CONSOLE="false")
    return env


def launch_dev_stack(args: Sequence[str], home: Path, ready_timeout: float = READY_TIMEOUT) -> DevStackProcess:
    """Start ``stratoflow dev`` with ``args`` and wait for its ``ready`` line."""
    home.mkdir(parents=True, exist_ok=True)
    command = dev_command(*args)
    process = subprocess.Popen(command, cwd=home, env=subprocess_env(home), stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    output = _Output(process.stdout)
    deadline = time.monotonic() + ready_timeout
    while not output.ready.wait(0.05):
        if process.poll() is not None or time.monotonic() > deadline:
            break
    if not output.ready.is_set():
        exited = process.poll()
        if exited is None:
            process.kill()
            process.wait()
        output.closed.wait(5)
        why = (f"exited with code {exited}" if exited is not None
               else f"did not print 'ready' within {ready_timeout:.0f} s")
        pytest.fail(f"`{shlex.join(command)}` {why}. Its output:\n{output.text()}", pytrace=False)
    return DevStackProcess(process, output)


@pytest.fixture(scope="session")
def dev_stack_launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., DevStackProcess]]:
    """``launch(*args)`` starts a stack; whatever is still running at the end of the session is stopped."""
    launched: list[DevStackProcess] = []

    def launch(*args: str) -> DevStackProcess:
        stack = launch_dev_stack(args, tmp_path_factory.mktemp("dev-stack"))
        launched.append(stack)
        return stack

    yield launch
    for stack in launched:
        stack.stop()


@pytest.fixture(scope="session")
def dev_stack(dev_stack_launcher: Callable[..., DevStackProcess]) -> Iterator[DevStackProcess]:
    """``stratoflow dev`` with the default handler (functions/api/app.py), for the session."""
    if not DEFAULT_HANDLER.is_file():
        pytest.skip("functions/api/app.py not present")
    stack = dev_stack_launcher("--port", "0")
    yield stack
    code = stack.stop()
    assert code == 0, f"stratoflow dev exited with {code}:\n{stack.output.text()}"


@pytest.fixture
def over_api(dev_stack: DevStackProcess, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """This process's SDK pointed at the session's stack (``get_store()`` is its ApiStore)."""
    from stratoflow.settings import reset_settings
    from stratoflow.storage import aws as _aws
    from stratoflow.storage import get_store
    from stratoflow.storage.api_store import ApiStore

    for name in list(os.environ):
        if name.startswith("STRATOFLOW_") or name.startswith("AWS_"):
            monkeypatch.delenv(name, raising=False)
    for name, value in dev_stack.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("STRATOFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("STRATOFLOW_LOG_TO_CONSOLE", "false")
    reset_settings()
    _aws.clear_clients()
    store = get_store()
    assert isinstance(store, ApiStore)
    yield store
    reset_settings()
    _aws.clear_clients()
