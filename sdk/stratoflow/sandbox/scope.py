"""What flow code may ask its runtime to do: the scope of one flow run (pure, no I/O).

Flow code runs in a child process without the runtime's credentials (``stratoflow.sandbox``);
every store operation it makes is an API request to the runtime's gateway, which lets through
only what running *this* flow run needs:

* reads (``GET``, and the ``filter`` POSTs) of anything: a flow may look at other runs, as
  ``run_deployment`` waits for the run it started;
* writes to its own flow run, the task runs it creates and the subflow runs those create
  (``runs/<kind>/create`` adds the new id to the scope), its logs, its concurrency slots;
* cache entries (a result's signature is checked by the API as for any writer), running another
  deployment (``run_deployment``), ensuring a flow record;
* blobs under the results prefix, and its own runs' parameter objects.

Everything else (deployments, work pools, other runs, forced states, deletes) is refused, with
the reason. ``allow`` answers; ``admit`` records what a successful create added.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

READ_POSTS = frozenset({("flow_runs", "filter"), ("task_runs", "filter"), ("deployments", "filter")})


@dataclass
class RunScope:
    """The runs one sandboxed flow run may write (its own, and what it creates)."""

    flow_run_ids: set[str]
    task_run_ids: set[str] = field(default_factory=set)
    results_prefix: str = "results/"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def has_flow(self, run_id: Any) -> bool:
        with self._lock:
            return isinstance(run_id, str) and run_id in self.flow_run_ids

    def has_task(self, run_id: Any) -> bool:
        with self._lock:
            return isinstance(run_id, str) and run_id in self.task_run_ids

    def add(self, kind: str, run_id: str) -> None:
        with self._lock:
            (self.flow_run_ids if kind == "flow" else self.task_run_ids).add(run_id)


def segments(path: str) -> list[str]:
    return [unquote(p) for p in path.split("?", 1)[0].strip("/").split("/")] if path.strip("/") else []


def allow(scope: RunScope, method: str, path: str, body: Any) -> str | None:
    """None when the request is within ``scope``; otherwise why it is refused (one line)."""
    method = method.upper()
    parts = segments(path)
    if method in ("GET", "HEAD"):
        return None  # reads; the gateway checks a blob's uri itself (readable_blob)
    if method == "POST" and tuple(parts) in READ_POSTS:
        return None
    reason = _write(scope, method, parts, body if isinstance(body, Mapping) else {}, body)
    if reason is None:
        return None
    return f"flow code may not {method} /{'/'.join(parts)}: {reason}"


def _write(scope: RunScope, method: str, parts: list[str], doc: Mapping[str, Any], body: Any) -> str | None:
    match (method, parts):
        case ("POST", ["flows", "ensure"]) | ("PUT", ["cache", _]) | ("POST", ["deployments", _, "create_flow_run"]):
            return None
        case ("POST", ["_runtime", "sign" | "verify" | "done"]):
            return None
        case ("POST", ["runs", "task", "create"]):
            return None if scope.has_flow(doc.get("flow_run_id")) else "a task run of another flow run"
        case ("POST", ["runs", "flow", "create"]):
            subflow = scope.has_flow(doc.get("parent_flow_run_id")) or scope.has_task(doc.get("parent_task_run_id"))
            return None if subflow else "a flow run that is not a subflow of this run"
        case ("POST", ["runs", "flow", run_id, "commit"]) | ("POST", ["flow_runs", run_id, "set_state"]):
            return None if scope.has_flow(run_id) else "another flow run"
        case ("POST", ["runs", "task", run_id, "commit"]) | ("POST", ["task_runs", run_id, "set_state"]):
            return None if scope.has_task(run_id) else "another task run"
        case ("POST", ["logs"]):
            return _logs(scope, body)
        case ("POST", ["concurrency_limits", "increment" | "decrement"]):
            return None if scope.has_task(doc.get("holder")) or scope.has_flow(doc.get("holder")) else \
                "slots held by another run"
        case ("PUT", ["_runtime", "blobs", *key]):
            return blob_key_reason(scope, "/".join(key))
    return "outside what running this flow run needs (the runtime's scope)"


def _logs(scope: RunScope, body: Any) -> str | None:
    if not isinstance(body, list):
        return None  # the API answers 422 for the shape
    for line in body:
        if not isinstance(line, Mapping):
            continue
        if not scope.has_flow(line.get("flow_run_id")):
            return "logs of another flow run"
        task_run_id = line.get("task_run_id")
        if task_run_id is not None and not scope.has_task(task_run_id):
            return "logs of another task run"
    return None


def blob_key_reason(scope: RunScope, key: str) -> str | None:
    """Why flow code may not write the blob ``key`` (None: it may)."""
    if any(part in ("", ".", "..") for part in key.split("/")):
        return f"{key!r} is not a plain key"
    if key.startswith(scope.results_prefix):
        return None
    if key.startswith("parameters/") and key.endswith(".json") and scope.has_flow(key[len("parameters/"):-5]):
        return None
    return f"blob {key!r} is neither a result nor this run's parameters"


def readable_blob(scope: RunScope, bucket: str, uri: str) -> str | None:
    """Why flow code may not read ``uri`` (None: it may): results and parameters of this stack."""
    for prefix in (scope.results_prefix, "parameters/"):
        base = f"s3://{bucket}/{prefix}"
        if uri.startswith(base) and not any(p in ("", ".", "..") for p in uri[len(base):].split("/")):
            return None
    return f"{uri!r} is not a result or parameters object of this stack"


def admit(scope: RunScope, method: str, path: str, body: Any, status: int) -> None:
    """After a successful create, the new run belongs to the scope."""
    parts = segments(path)
    if method.upper() == "POST" and status < 300 and len(parts) == 3 and parts[0] == "runs" and \
            parts[2] == "create" and isinstance(body, Mapping) and isinstance(body.get("id"), str):
        scope.add(parts[1], body["id"])
