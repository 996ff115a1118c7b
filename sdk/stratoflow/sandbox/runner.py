"""The flow's process: ``python -m stratoflow.sandbox.runner``, a zygote that forks one child per run.

The runtime (``stratoflow.sandbox.runtime``) starts the zygote once, with an environment holding
none of its credentials nor the result key, and hands it jobs as JSON lines on stdin. The zygote
has the engine imported already, so a child costs a ``fork`` instead of an interpreter start
(~0.4 s). It never runs flow code itself, and is single-threaded so forking it is safe.

A child (one flow run): leaves the zygote's pipes and session, sets its run's environment
(the gateway's URL and token; the flow-run role's credentials when the runtime has them),
imports the deployment's entrypoint, runs ``execute_flow_run`` against the gateway, posts a
summary to ``/_runtime/done`` and exits. ``SIGUSR1`` asks it to cancel the flow body.

Zygote → runtime messages (JSON lines on stdout): ``{"job": id, "pid": n}`` when a child is
forked, ``{"job": id, "exit": code}`` when it ends (negative: killed by that signal).

On Linux both are made non-dumpable (``PR_SET_DUMPABLE`` 0): another process of the same user,
such as a later run's flow code, can then neither ptrace them nor read their ``/proc`` memory
or environment.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import selectors
import signal
import sys
import time
from pathlib import Path
from typing import Any

# Imported here so the zygote has the engine loaded and a child costs only a fork: the task engine
# and the sandbox's store are what every run uses without naming them.
import stratoflow.storage.sandbox_store
import stratoflow.tasks  # noqa: F401
from stratoflow.deployments.packaging import load_entrypoint
from stratoflow.engine.flow_engine import execute_flow_run, request_cancel
from stratoflow.logs import get_log_buffer
from stratoflow.models import FlowRun
from stratoflow.settings import get_settings, reset_settings
from stratoflow.storage import aws as _aws
from stratoflow.storage import get_store


def harden() -> bool:
    """Make this process non-dumpable (Linux): no ptrace, no /proc/<pid>/mem or environ for
    other processes of the same user. Whether it worked."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(4, 0, 0, 0, 0)) == 0  # PR_SET_DUMPABLE = 4
    except (OSError, AttributeError):
        return False


class _Zygote:
    """The zygote's loop: jobs in on stdin (JSON lines), a fork per job, reports out on stdout."""

    def __init__(self) -> None:
        self.children: dict[int, str] = {}
        self.out = sys.stdout
        self.stdin_fd = sys.stdin.fileno()
        self.pending = b""
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)  # SIGCHLD wakes the select below
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.stdin_fd, selectors.EVENT_READ, "job")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        self.own_fds = (self.stdin_fd, self.out.fileno(), self.wake_r, wake_w, self.selector.fileno())

    def say(self, message: dict[str, Any]) -> None:
        self.out.write(json.dumps(message) + "\n")
        self.out.flush()

    def serve(self) -> int:
        while True:
            for key, _ in self.selector.select(timeout=5.0):
                if key.data == "wake":
                    os.read(self.wake_r, 512)
                elif not self.read_jobs():
                    self.kill_children()
                    return 0
            self.reap()

    def read_jobs(self) -> bool:
        """Fork a child for each whole job line available; False when the runtime went away.
        Unbuffered: a buffered readline would leave queued jobs unseen until more bytes come."""
        chunk = os.read(self.stdin_fd, 65536)
        if not chunk:
            return False
        *lines, self.pending = (self.pending + chunk).split(b"\n")
        for job in (json.loads(line) for line in lines if line.strip()):
            pid = os.fork()
            if pid == 0:
                os._exit(_child(job, self.own_fds))
            self.children[pid] = str(job["id"])
            self.say({"job": job["id"], "pid": pid})
        return True

    def kill_children(self) -> None:
        """The runtime stopped or was killed: nobody can report these runs any more."""
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            job_id = self.children.pop(pid, None)
            if job_id is not None:
                self.say({"job": job_id, "exit": os.waitstatus_to_exitcode(status)})


def zygote_main() -> int:
    harden()
    return _Zygote().serve()


def _child(job: dict[str, Any], zygote_fds: tuple[int, ...]) -> int:
    """The forked child: detach from the zygote, then run the job. Returns the exit code."""
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(2, 1)  # flow prints go to the runtime's stderr (CloudWatch on Lambda), not the zygote's pipe
        for fd in zygote_fds:
            if fd > 2:
                with contextlib.suppress(OSError):
                    os.close(fd)
        os.setsid()
        if sys.platform.startswith("linux"):  # the zygote dies (killed with its runtime): so does the flow
            ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        sys.stdin = open(os.devnull)  # noqa: SIM115 - the child's whole life
        sys.stdout = sys.stderr
        return run_job(job)
    except BaseException as exc:  # nothing may escape a forked child into the zygote's loop
        try:
            sys.stderr.write(f"stratoflow sandbox: the flow process failed: {type(exc).__name__}: {exc}\n")
        finally:
            return 70  # noqa: B012 - the child ends here whatever happened


def run_job(job: dict[str, Any]) -> int:
    """Run one flow run against the gateway (the process is already this run's)."""
    for name in [n for n in os.environ if n.startswith("STRATOFLOW_")]:
        del os.environ[name]  # the zygote's may be stale: the job carries the runtime's current ones
    os.environ.update(job["env"])

    reset_settings()
    _aws.clear_clients()

    run = FlowRun.model_validate(job["run"])
    signal.signal(signal.SIGUSR1, lambda *_: request_cancel(run.id))
    store = get_store()
    try:
        flow = load_entrypoint(Path(job["root"]), job["entrypoint"])
    except Exception as exc:
        _done(store, {"load_error": f"{type(exc).__name__}: {exc}"})
        return 3
    settings = get_settings()
    deadline_at = job.get("deadline_at")
    execution = execute_flow_run(flow, run, store=store, settings=settings,
                                 deadline_seconds=None if deadline_at is None else max(deadline_at - time.time(), 0.0),
                                 inline_retry_max=float(job.get("inline_retry_max") or settings.inline_retry_max))
    store.flush()
    get_log_buffer(store).flush()  # the process ends with os._exit: nothing is flushed at exit
    _done(store, {"claimed": execution.claimed, "state": execution.state.type.value if execution.state else None,
                  "state_name": execution.state.name if execution.state else None, "reason": execution.reason,
                  "run_again_at": execution.run_again_at.isoformat() if execution.run_again_at else None})
    return 0


def _done(store: Any, summary: dict[str, Any]) -> None:
    store.http.request("POST", "/_runtime/done", json_body=summary)


if __name__ == "__main__":
    sys.exit(zygote_main())
