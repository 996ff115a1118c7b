"""Cache policies: how a task's cache key is computed from what it runs with.

Caching is opt-in: a task caches only with ``cache_policy=`` or ``cache_key_fn=``. Policies
combine with ``+`` (``INPUTS + TASK_SOURCE``); a key is a SHA-256 over the parts.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import pickle  # nosec B403  # pickle.dumps only, to hash task inputs into a cache key; nothing is unpickled here
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic_core import to_jsonable_python

if TYPE_CHECKING:
    from stratoflow.context import FlowRunContext
    from stratoflow.tasks import Task


def _stable_bytes(value: Any) -> bytes:

    try:
        return json.dumps(to_jsonable_python(value), sort_keys=True, separators=(",", ":")).encode()
    except Exception:
        try:
            return pickle.dumps(value, protocol=4)
        except Exception as exc:
            raise ValueError(f"inputs cannot be hashed for caching: {exc}") from exc


class CachePolicy:
    def parts(self, task: Task[..., Any], inputs: dict[str, Any], flow_ctx: FlowRunContext | None) -> list[bytes]:
        raise NotImplementedError

    def compute_key(self, task: Task[..., Any], inputs: dict[str, Any], flow_ctx: FlowRunContext | None) -> str | None:
        parts = self.parts(task, inputs, flow_ctx)
        if not parts:
            return None
        digest = hashlib.sha256(task.task_key.encode())
        for part in parts:
            digest.update(b"\0" + part)
        return digest.hexdigest()

    def __add__(self, other: CachePolicy) -> CachePolicy:
        return _Compound((*_flatten(self), *_flatten(other)))


def _flatten(p: CachePolicy) -> tuple[CachePolicy, ...]:
    return p.policies if isinstance(p, _Compound) else (p,)


@dataclass(frozen=True)
class _Compound(CachePolicy):
    policies: tuple[CachePolicy, ...]

    def parts(self, task: Task[..., Any], inputs: dict[str, Any], flow_ctx: FlowRunContext | None) -> list[bytes]:
        return [b for p in self.policies for b in p.parts(task, inputs, flow_ctx)]


@dataclass(frozen=True)
class Inputs(CachePolicy):
    """The task's arguments (minus ``exclude``)."""

    exclude: tuple[str, ...] = ()

    def parts(self, task: Task[..., Any], inputs: dict[str, Any], flow_ctx: FlowRunContext | None) -> list[bytes]:
        kept = {k: v for k, v in inputs.items() if k not in self.exclude}
        return [b"inputs:" + _stable_bytes(kept)]


class TaskSource(CachePolicy):
    """The task function's source code: editing the task invalidates its cache."""

    def parts(self, task: Task[..., Any], inputs: dict[str, Any], flow_ctx: FlowRunContext | None) -> list[bytes]:
        try:
            return [b"source:" + inspect.getsource(task.fn).encode()]
        except (OSError, TypeError):
            return [b"source:" + task.task_key.encode()]


class FlowParameters(CachePolicy):
    def parts(self, task: Task[..., Any], inputs: dict[str, Any], flow_ctx: FlowRunContext | None) -> list[bytes]:
        return [b"flow-params:" + _stable_bytes(flow_ctx.parameters if flow_ctx else {})]


class RunId(CachePolicy):
    """The flow run: results are reused only within one flow run (and its retries)."""

    def parts(self, task: Task[..., Any], inputs: dict[str, Any], flow_ctx: FlowRunContext | None) -> list[bytes]:
        return [b"run:" + (flow_ctx.flow_run.id.encode() if flow_ctx else b"-")]


class _NoCache(CachePolicy):
    def parts(self, task: Task[..., Any], inputs: dict[str, Any], flow_ctx: FlowRunContext | None) -> list[bytes]:
        return []


INPUTS = Inputs()
TASK_SOURCE = TaskSource()
FLOW_PARAMETERS = FlowParameters()
RUN_ID = RunId()
NO_CACHE = _NoCache()
DEFAULT = INPUTS + TASK_SOURCE + RUN_ID
