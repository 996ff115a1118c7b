"""The runtime's side of running one flow run in a sandboxed process.

``execute_isolated`` grants the run a token at the gateway, hands the job to the zygote
(``stratoflow.sandbox.runner``), waits for the child (killing its process group past the
deadline), and returns what happened. The caller (the executor) then reads the run from its own
store and decides from that, never from what the child said: the child's summary only carries
messages.

The zygote's environment is the runtime's minus every credential and secret (``scrubbed_env``);
a child gets the gateway's URL, its token and, when ``flow_run_role_arn`` is set, temporary
credentials of that role (``sts:AssumeRole``, cached while valid) for its own AWS calls.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from stratoflow.exceptions import StratoflowError
from stratoflow.models import FlowRun
from stratoflow.sandbox.gateway import get_gateway
from stratoflow.settings import Settings
from stratoflow.storage import aws as _aws
from stratoflow.storage.base import Store

logger = logging.getLogger("stratoflow.sandbox")

# Never passed to flow code: the runtime's credentials, its result key and how it reaches AWS.
_SECRET_PREFIXES = ("AWS_ACCESS_KEY", "AWS_SECRET", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_CONTAINER_",
                    "AWS_WEB_IDENTITY", "AWS_ROLE_", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_LAMBDA_RUNTIME_API",
                    "STRATOFLOW_RESULT_KEY", "STRATOFLOW_API_URL", "STRATOFLOW_RUNTIME_TOKEN",
                    "STRATOFLOW_AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL")
# A child's AWS SDK finds no credentials anywhere unless the flow-run role's are given.
_NO_AMBIENT_CREDENTIALS = {"AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_CONFIG_FILE": os.devnull,
                           "AWS_EC2_METADATA_DISABLED": "true"}
KILL_GRACE_SECONDS = 10.0


def scrubbed_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if environ is None else environ)
    for name in list(env):
        if name.upper().startswith(_SECRET_PREFIXES):
            del env[name]
    env.update(_NO_AMBIENT_CREDENTIALS)
    return env


@dataclass
class _Job:
    id: str
    started: threading.Event = field(default_factory=threading.Event)
    exited: threading.Event = field(default_factory=threading.Event)
    pid: int | None = None
    exit_code: int | None = None


class Zygote:
    """The zygote process and the reader of its reports."""

    def __init__(self) -> None:
        self.jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        self.process = subprocess.Popen(  # nosec B603  # argv list, no shell: this interpreter running stratoflow's own runner, environment scrubbed
            [sys.executable, "-m", "stratoflow.sandbox.runner"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=scrubbed_env(), close_fds=True)
        self._reader = threading.Thread(target=self._read, name="stratoflow-sandbox-zygote", daemon=True)
        self._reader.start()

    def alive(self) -> bool:
        return self.process.poll() is None

    def submit(self, job: dict[str, Any]) -> _Job:
        entry = _Job(str(job["id"]))
        with self._lock:
            self.jobs[entry.id] = entry
        assert self.process.stdin is not None
        with self._lock:
            self.process.stdin.write((json.dumps(job) + "\n").encode())
            self.process.stdin.flush()
        return entry

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                job = self.jobs.get(str(message.get("job")))
            if job is None:
                continue
            if "pid" in message:
                job.pid = int(message["pid"])
                job.started.set()
            if "exit" in message:
                job.exit_code = int(message["exit"])
                with self._lock:
                    self.jobs.pop(job.id, None)
                job.exited.set()
        # The zygote died: its children's reports will never come.
        with self._lock:
            orphans, self.jobs = list(self.jobs.values()), {}
        for job in orphans:
            job.started.set()
            job.exited.set()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()


_zygote: Zygote | None = None
_zygote_lock = threading.Lock()


def get_zygote() -> Zygote:
    global _zygote
    with _zygote_lock:
        if _zygote is None or not _zygote.alive():
            _zygote = Zygote()
        return _zygote


@dataclass
class IsolatedExecution:
    """What the sandboxed child did: its exit code and its own summary (messages only)."""

    exit_code: int | None
    summary: dict[str, Any]
    claimed: bool
    killed: bool = False

    @property
    def load_error(self) -> str | None:
        value = self.summary.get("load_error")
        return str(value) if value else None

    @property
    def reason(self) -> str | None:
        value = self.summary.get("reason")
        return str(value) if value else None

    @property
    def run_again_at(self) -> datetime | None:
        value = self.summary.get("run_again_at")
        try:
            return datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            return None


class RunningChild:
    """A started child: ``cancel()`` asks its flow body to stop, ``kill()`` ends it."""

    def __init__(self, job: _Job) -> None:
        self.job = job

    def signal(self, signum: int) -> None:
        pid = self.job.pid
        if pid is None or self.job.exited.is_set():
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signum) if signum == signal.SIGKILL else os.kill(pid, signum)

    def cancel(self) -> None:
        self.signal(signal.SIGUSR1)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)


def execute_isolated(store: Store, settings: Settings, run: FlowRun, *, root: Path, entrypoint: str,
                     deadline_seconds: float | None, inline_retry_max: float,
                     on_start: Any = None) -> IsolatedExecution:
    """Run ``run`` (Scheduled) with ``entrypoint`` from ``root`` in a sandboxed child and wait for it.
    ``on_start(child)`` is called once the child exists (the heartbeat's cancel goes to it)."""
    gateway = get_gateway(store, settings)
    grant = gateway.grant(run.id)
    env = {
        **{k: v for k, v in scrubbed_env().items() if k.startswith("STRATOFLOW_")},
        "STRATOFLOW_BACKEND": "aws", "STRATOFLOW_API_URL": gateway.url,
        "STRATOFLOW_RUNTIME_TOKEN": grant.token, "STRATOFLOW_BUCKET": settings.bucket,
        "STRATOFLOW_RESULTS_PREFIX": settings.results_prefix, "STRATOFLOW_TABLE_PREFIX": settings.table_prefix,
        "STRATOFLOW_REGION": settings.region, "STRATOFLOW_TASK_COMMIT": "sync",
        "STRATOFLOW_HOME": str(settings.home), "STRATOFLOW_FLOW_ISOLATION": "none",
        **flow_run_credentials(settings, run.id),
    }
    # The deadline as a wall-clock time: the child starts a moment later and must end by the same time.
    deadline_at = None if deadline_seconds is None else time.time() + deadline_seconds
    job = {"id": uuid.uuid4().hex, "env": env, "run": run.model_dump(mode="json"), "root": str(root),
           "entrypoint": entrypoint, "deadline_at": deadline_at, "inline_retry_max": inline_retry_max}
    try:
        entry = get_zygote().submit(job)
        if not entry.started.wait(30):
            raise StratoflowError("the sandbox did not start the flow's process within 30 s")
        child = RunningChild(entry)
        if on_start is not None:
            on_start(child)
        limit = None if deadline_seconds is None else deadline_seconds + KILL_GRACE_SECONDS
        killed = False
        if not entry.exited.wait(limit):
            logger.error("flow run %s: its process outlived the deadline; killed", run.id)
            child.kill()
            killed = True
            entry.exited.wait(10)
        # The child posts its summary just before it exits; give the report a moment to land.
        grant.done.wait(0 if entry.exit_code not in (0, None) else 2)
        return IsolatedExecution(entry.exit_code, dict(grant.summary or {}), grant.claimed, killed)
    finally:
        gateway.revoke(grant)


# -- the flow-run role ---------------------------------------------------------------------------------
_credentials: dict[str, tuple[float, dict[str, str]]] = {}
_credentials_lock = threading.Lock()


def flow_run_credentials(settings: Settings, run_id: str) -> dict[str, str]:
    """Temporary credentials of ``flow_run_role_arn`` for flow code (empty when unset): assumed
    once and reused until 5 minutes before they expire."""
    role = settings.flow_run_role_arn
    if not role:
        return {}
    with _credentials_lock:
        cached = _credentials.get(role)
        if cached is not None and cached[0] - time.time() > 300:
            return dict(cached[1])

        answer = _aws.client("sts", settings).assume_role(
            RoleArn=role, RoleSessionName=f"stratoflow-{run_id}"[:64], DurationSeconds=3600)["Credentials"]
        expires = answer["Expiration"]
        expiry = expires.timestamp() if isinstance(expires, datetime) else \
            (datetime.now(UTC) + timedelta(hours=1)).timestamp()
        creds = {"AWS_ACCESS_KEY_ID": answer["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": answer["SecretAccessKey"],
                 "AWS_SESSION_TOKEN": answer["SessionToken"], "AWS_REGION": settings.region,
                 "AWS_DEFAULT_REGION": settings.region}
        _credentials[role] = (expiry, creds)
        return dict(creds)
