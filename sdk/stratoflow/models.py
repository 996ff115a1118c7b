"""Domain records: what the store keeps and the API returns. Pure pydantic, no I/O."""

from __future__ import annotations

import itertools
import os
import random
import secrets
import uuid
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from stratoflow.schedules.models import DeploymentSchedule
from stratoflow.states import State, StateType, now

_ids = random.Random()  # nosec B311  # ids must be unique, not secret: every API caller can list them, IAM guards access
# A forked process (the sandbox's children, multiprocessing) must not repeat its parent's ids.
os.register_at_fork(after_in_child=_ids.seed)


def new_id() -> str:
    """A random (version 4) UUID. Drawn from a seeded PRNG rather than os.urandom: ids need to
    be unique, not secret, and a syscall per id showed up in per-task overhead."""
    return str(uuid.UUID(int=_ids.getrandbits(128), version=4))


# -- log line ids -------------------------------------------------------------------------------
_seq = itertools.count(1)


def _new_tag() -> str:
    return secrets.token_hex(6)


# This process's part of every log id. A forked child gets its own: it inherits the counter too,
# and the two must not give out the same ids.
_tag = _new_tag()


def _retag() -> None:
    global _tag
    _tag = _new_tag()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_retag)


def log_id(seq: int) -> str:
    """The id of this process's log line number ``seq``: ``<process tag>-<seq, 10 digits>``.

    Stored after the timestamp in the line's key, so a line written twice (a retried batch) is
    one item, and lines of one process with the same timestamp keep their emitted order."""
    return f"{_tag}-{seq:010d}"


def new_log_id() -> str:
    """A fresh id for a line that was made without one."""
    return log_id(next(_seq))


def next_log_seq() -> int:
    """The next number of this process's log lines (ids and the order of equal timestamps)."""
    return next(_seq)



class ObjectKind(StrEnum):
    """Every kind of record in the objects table (``Store.put_object``), named once."""

    DEPLOYMENT = "deployment"
    WORK_POOL = "work_pool"
    WORK_QUEUE = "work_queue"
    CONCURRENCY_LIMIT = "concurrency_limit"  # a tag's limit: its size and the slots held
    SLOTS = "slots"  # a deployment's or work pool's slots (storage.slots)
    HEARTBEAT = "heartbeat"  # the executor holding a running flow run, and when it last said so
    RUN_INPUT = "run_input"  # what a resume of a paused run gave it
    SCHEDULE_CURSOR = "schedule_cursor"  # how far a deployment's schedule has made runs
    SCHEDULER_LOOP_CURSOR = "scheduler_loop_cursor"  # the local scheduler's last tick
    JANITOR_CURSOR = "janitor-cursor"  # where each janitor scan resumes
    JANITOR_SUSPECT = "janitor-slot-suspect"  # a slot holder seen gone once, released when seen twice


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class Flow(_Record):
    id: str = Field(default_factory=new_id)
    name: str
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    created: datetime = Field(default_factory=now)


class RetryPolicy(_Record):
    """How a run is retried; read by the retry rules (Prefect calls it the empirical policy)."""

    retries: int = 0
    # Delay before retry k (1-based) is retry_delays[min(k, len) - 1]; empty means no delay.
    retry_delays: list[float] = Field(default_factory=list)
    retry_jitter_factor: float | None = None

    def delay_for(self, attempt: int) -> float:
        if not self.retry_delays:
            return 0.0
        return float(self.retry_delays[min(attempt, len(self.retry_delays)) - 1])


class _Run(_Record):
    """Fields shared by flow runs and task runs."""

    id: str = Field(default_factory=new_id)
    name: str
    state: State | None = None
    # Every state the run has been in, oldest first. Stored on the run item so a transition
    # and its history entry are one write.
    state_history: list[State] = Field(default_factory=list)
    # Optimistic-locking counter: bumped by every committed write of the run.
    version: int = 0
    run_count: int = 0
    start_time: datetime | None = None
    end_time: datetime | None = None
    total_run_time: float = 0.0
    expected_start_time: datetime | None = None
    tags: list[str] = Field(default_factory=list)
    retry_policy: RetryPolicy = Field(default_factory=RetryPolicy)
    created: datetime = Field(default_factory=now)
    updated: datetime = Field(default_factory=now)

    @property
    def state_type(self) -> StateType | None:
        return self.state.type if self.state else None

    @property
    def state_name(self) -> str | None:
        return self.state.name if self.state else None


class FlowRun(_Run):
    flow_id: str | None = None
    flow_name: str
    flow_version: str | None = None
    deployment_id: str | None = None
    work_pool_name: str | None = None
    work_queue_name: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    # Set when parameters were too large for the item and live in S3.
    parameters_ref: str | None = None
    parent_flow_run_id: str | None = None
    parent_task_run_id: str | None = None
    idempotency_key: str | None = None
    heartbeat: datetime | None = None


class TaskRun(_Run):
    flow_run_id: str | None = None
    task_key: str
    dynamic_key: str = "0"
    cache_key: str | None = None
    cache_expiration: datetime | None = None
    # Names of upstream task runs per parameter, for lineage in the UI.
    task_inputs: dict[str, list[str]] = Field(default_factory=dict)
    # Set on the placeholder task run that stands for a subflow in its parent.
    child_flow_run_id: str | None = None


class Deployment(_Record):
    id: str = Field(default_factory=new_id)
    name: str
    flow_name: str
    # The flow's record, made when the deployment is: its runs need not look it up.
    flow_id: str | None = None
    version: int = 1
    description: str | None = None
    entrypoint: str | None = None
    package_uri: str | None = None
    package_sha256: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    parameter_openapi_schema: dict[str, Any] = Field(default_factory=dict)
    work_pool_name: str | None = None
    work_queue_name: str | None = None
    tags: list[str] = Field(default_factory=list)
    paused: bool = False
    concurrency_limit: int | None = None
    schedules: list[DeploymentSchedule] = Field(default_factory=list)
    # Where the package's paths are rooted: the entrypoint is relative to it.
    path: str | None = None
    created: datetime = Field(default_factory=now)
    updated: datetime = Field(default_factory=now)


class WorkPoolType(StrEnum):
    LAMBDA = "lambda"
    PROCESS = "process"


class WorkPool(_Record):
    id: str = Field(default_factory=new_id)
    name: str
    type: WorkPoolType = WorkPoolType.LAMBDA
    description: str | None = None
    paused: bool = False
    concurrency_limit: int | None = None
    queue_url: str | None = None
    dlq_url: str | None = None
    created: datetime = Field(default_factory=now)


class WorkQueue(_Record):
    id: str = Field(default_factory=new_id)
    name: str
    work_pool_name: str
    priority: int = 1
    paused: bool = False
    concurrency_limit: int | None = None
    queue_url: str | None = None
    created: datetime = Field(default_factory=now)


class ConcurrencyLimit(_Record):
    """At most ``limit`` task runs tagged ``tag`` run at once; ``active_slots`` holds the ids
    of the task runs holding a slot now."""

    id: str = Field(default_factory=new_id)
    tag: str
    limit: int = Field(ge=0)
    active_slots: list[str] = Field(default_factory=list)
    version: int = 1
    created: datetime = Field(default_factory=now)
    updated: datetime = Field(default_factory=now)


class Log(_Record):
    flow_run_id: str | None = None
    task_run_id: str | None = None
    name: str = "stratoflow"
    level: int = 20
    message: str
    timestamp: datetime = Field(default_factory=now)
    # Tie-breaker so logs with the same timestamp keep the order they were emitted in.
    seq: int = 0
    # Given when the line is emitted (stratoflow.logs.new_log_id) and part of its storage key, so
    # writing the same line again (a retried request) replaces it instead of adding a copy.
    id: str | None = None


class CacheEntry(_Record):
    key: str
    state: State
    expiration: datetime | None = None

    def is_valid(self, at: datetime | None = None) -> bool:
        return self.expiration is None or self.expiration > (at or now())


def expiration_from(delta: timedelta | None) -> datetime | None:
    return now() + delta if delta is not None else None
