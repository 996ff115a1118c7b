"""Debian's chromium for the browser tests: installed once per machine by the test setup itself.

Two xdist workers may reach this at once: an exclusive ``fcntl`` lock on a file in the temp
directory makes the second wait for the first's ``apt-get`` instead of running its own.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
LOCK_FILE = Path(tempfile.gettempdir()) / "stratoflow-e2e-chromium.lock"
INSTALL_TIMEOUT = 900.0


class ChromiumUnavailable(Exception):
    """Why chromium cannot be had here (the tests skip with this message)."""


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["apt-get", *args], env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
                          check=False)


def _tail(result: subprocess.CompletedProcess[str]) -> str:
    text = (result.stderr or result.stdout or "").strip().splitlines()
    return " / ".join(text[-3:]) if text else f"exit code {result.returncode}"


def ensure_chromium() -> Path:
    """``/usr/bin/chromium``, installing Debian's package when it is missing and we may."""
    if CHROMIUM.exists():
        return CHROMIUM
    if shutil.which("apt-get") is None:
        raise ChromiumUnavailable("apt-get is not on PATH")
    if os.geteuid() != 0:
        raise ChromiumUnavailable(f"not root (uid {os.geteuid()}), apt-get cannot install packages")
    with LOCK_FILE.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if CHROMIUM.exists():  # another worker installed it while we waited
                return CHROMIUM
            install = ("install", "-y", "--no-install-recommends", "chromium")
            result = _apt(*install)
            if result.returncode != 0:
                update = _apt("update")
                if update.returncode != 0:
                    raise ChromiumUnavailable(f"apt-get update failed: {_tail(update)}")
                result = _apt(*install)
            if result.returncode != 0 or not CHROMIUM.exists():
                raise ChromiumUnavailable(f"apt-get install chromium failed: {_tail(result)}")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return CHROMIUM
