"""Settings: one pydantic-settings object read from ``STRATOFLOW_*`` environment variables.

The backend is chosen once per process:

* ``embedded`` (default when nothing is configured): an in-process local cloud backed by moto,
  journaled to ``$STRATOFLOW_HOME/embedded`` so completed work survives a crash.
* ``aws``: real DynamoDB/S3 (or any endpoint, e.g. ``stratoflow dev``). Chosen with
  ``STRATOFLOW_BACKEND=aws``, or implicitly when a stack is configured
  (``STRATOFLOW_TABLE_PREFIX``, ``STRATOFLOW_BUCKET``, ``STRATOFLOW_API_URL``) or an endpoint
  is set (``STRATOFLOW_AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL``). Plain AWS credentials alone
  do not switch: your tasks may use AWS for their own work.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

_STACK_VARS = ("STRATOFLOW_TABLE_PREFIX", "STRATOFLOW_BUCKET", "STRATOFLOW_API_URL",
               "STRATOFLOW_AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STRATOFLOW_", extra="ignore")

    backend: Literal["auto", "embedded", "aws"] = "auto"
    home: Path = Field(default_factory=lambda: Path.home() / ".stratoflow")
    region: str = Field(default_factory=lambda: os.environ.get("AWS_REGION")
                        or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
    aws_endpoint_url: str | None = Field(default_factory=lambda: os.environ.get("AWS_ENDPOINT_URL"))
    api_url: str | None = None

    # Resource names; the SAM stack's outputs set these.
    table_prefix: str = "stratoflow"
    bucket: str = "stratoflow-local"
    results_prefix: str = "results/"
    # The key that signs results (stratoflow.storage.keys): given directly (hex), or the Secrets
    # Manager secret holding it (the stack's ResultKeySecretArn output). The embedded backend
    # keeps one in the local home.
    result_key: SecretStr | None = None
    result_key_secret: str | None = None

    # Results: inline in the run item up to this size, S3 above it.
    result_inline_max_bytes: int = 16 * 1024
    persist_results: bool = True
    parameters_inline_max_bytes: int = 32 * 1024

    # Logs are buffered and written in batches on this interval (and when the batch fills).
    log_flush_interval: float = 0.5
    log_batch_size: int = 100
    logging_level: str = "INFO"
    log_to_console: bool = True
    log_retention_days: int = 30

    # A running task's state is written as soon as it starts running for longer than this;
    # short tasks are recorded in one write when they finish. 0 writes every transition.
    task_state_flush_after: float = 0.2
    # How a task run that is created already finished is stored: "sync" writes it before the
    # task call returns; "group" appends it to a local outbox file (durable against a crash of
    # the process) and writes batches of 25 in the background. "auto": group on the embedded
    # backend (whose own durability is a local journal anyway), sync on AWS.
    task_commit: Literal["auto", "sync", "group"] = "auto"
    group_commit_interval: float = 0.05
    task_runner_max_workers: int = 16

    # Listing recent flow runs without a filter reads one index partition per day this far back.
    list_days_back: int = 31

    # Embedded backend: fsync the journal on each write (survives power loss, not just a crash).
    embedded_fsync: bool = False

    # Work pools (SQS). A message stays invisible this long while an executor holds it: six
    # times Lambda's 15-minute maximum, as AWS advises for event sources, so a message is never
    # handed to a second consumer while the first still runs it.
    queue_visibility_timeout: int = 5400
    # Deliveries before a message that keeps failing goes to the pool's dead-letter queue.
    queue_max_receive_count: int = 5
    # Executors and workers: where packages are cached (keyed by their sha256), how often a
    # running flow run reports a heartbeat, how long before Lambda's deadline a run is stopped,
    # and the longest retry delay waited out in place (longer ones release the compute).
    # The cache is per user (whoever can write it chooses the code that runs): created 0700,
    # refused when someone else owns it or can write to it (stratoflow.deployments.packaging).
    package_cache_dir: Path = Field(default_factory=lambda: (
        Path(os.environ["XDG_CACHE_HOME"]) / "stratoflow" / "packages" if os.environ.get("XDG_CACHE_HOME")
        else Path("/tmp") / f"stratoflow-packages-{os.getuid() if hasattr(os, 'getuid') else 'user'}"))  # nosec B108  # per-user directory, refused unless this user owns it and no one else can write it (packaging)
    heartbeat_interval: float = 10.0
    # Where a deployment's flow code runs (stratoflow.sandbox): "process" (the default for the
    # executor and workers) runs it in a child process holding none of the runtime's credentials,
    # whose store requests go through the runtime's gateway, scoped to its run; "none" runs it in
    # the runtime's own process (trusted code only). On AWS the child gets the credentials of
    # ``flow_run_role_arn`` when it is set (the template's FlowRunRole), else none.
    flow_isolation: Literal["process", "none"] = "process"
    flow_run_role_arn: str | None = None
    # Set in a sandboxed child only: its bearer token at the runtime's gateway (STRATOFLOW_API_URL).
    runtime_token: SecretStr | None = None
    executor_deadline_margin: float = 15.0
    inline_retry_max: float = 30.0
    # On AWS: the executor function every new `lambda` pool queue is mapped to (SQS event source
    # mapping, made by the API when it creates the queue) and the mapping's MaximumConcurrency.
    # The template sets both for the API function; unset, no mapping is made (the local cloud).
    executor_function_arn: str | None = None
    executor_max_concurrency: int | None = Field(default=None, ge=2, le=1000)

    @property
    def resolved_backend(self) -> Literal["embedded", "aws"]:
        if self.backend != "auto":
            return self.backend
        return "aws" if any(os.environ.get(v) for v in _STACK_VARS) else "embedded"

    @property
    def resolved_task_commit(self) -> Literal["sync", "group"]:
        if self.task_commit != "auto":
            return self.task_commit
        return "group" if self.resolved_backend == "embedded" else "sync"

    def table_name(self, kind: str) -> str:
        return f"{self.table_prefix}-{kind}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget cached settings (tests change the environment between cases)."""
    get_settings.cache_clear()
