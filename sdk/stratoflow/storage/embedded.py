"""The embedded backend: moto's AWS emulation inside this process, scoped to Stratoflow's clients.

Unlike ``moto.mock_aws()``, nothing global is patched: only the botocore clients Stratoflow
creates are routed to moto, so boto3 calls in your own tasks still reach real AWS.

Durability: every successful mutating request (DynamoDB writes, S3 puts/deletes) is appended to
a journal file, under the same lock that applies it, before the caller gets its answer. A new
process replays the journal, so a completed task's state and result survive a crash of the
process that ran it. ``STRATOFLOW_EMBEDDED_FSYNC=true`` also fsyncs each append (survives power
loss, costs a disk flush per write).
"""

from __future__ import annotations

import base64
import json
import os
import threading
from pathlib import Path
from typing import Any

_MUTATING_DYNAMODB = frozenset({
    "PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems",
    "CreateTable", "UpdateTable", "DeleteTable", "UpdateTimeToLive",
})


# Queues survive a restart (a work pool's record names them); messages do not: nothing consumes
# work pools in the embedded backend (that is `stratoflow dev`'s executor).
_MUTATING_SQS = frozenset({"CreateQueue", "SetQueueAttributes", "DeleteQueue"})


def _is_mutating(request: Any) -> bool:
    target = request.headers.get("X-Amz-Target")
    if isinstance(target, bytes):
        target = target.decode()
    if target and target.startswith("DynamoDB_"):
        return target.split(".", 1)[1] in _MUTATING_DYNAMODB
    if target and target.startswith("AmazonSQS."):
        return target.split(".", 1)[1] in _MUTATING_SQS
    is_s3 = ".s3." in request.url or "//s3." in request.url
    return is_s3 and request.method in ("PUT", "POST", "DELETE")


class EmbeddedCloud:
    """One per process and home directory: moto's backends, a lock and the journal."""

    def __init__(self, home: Path, fsync: bool = False) -> None:
        # cold start: moto loads only for the embedded backend
        from moto.core.botocore_stubber import BotocoreStubber

        self.home = home
        self.fsync = fsync
        self._lock = threading.Lock()
        self._stubber = BotocoreStubber()
        self._stubber.enabled = True
        self.home.mkdir(parents=True, exist_ok=True)
        self.journal_path = self.home / "journal.jsonl"
        self.replayed = self._replay()
        self._fd: int | None = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    # botocore calls this for every request of an attached client ("before-send" event).
    def __call__(self, event_name: str, request: Any, **kwargs: Any) -> Any:
        # cold start: botocore's signer loads only in a process that calls the API
        from botocore.awsrequest import AWSResponse
        from moto.core.botocore_stubber import MockRawResponse

        if hasattr(request.body, "read"):  # a stream: make it bytes so it can be journaled too
            request.body = request.body.read()
        with self._lock:
            if self._fd is None:
                raise RuntimeError(f"the embedded cloud at {self.home} was closed (another home is active)")
            response = self._stubber.process_request(request)
            if response is None:
                return None
            status, headers, body = response
            if status < 300 and request.method != "GET" and _is_mutating(request):
                self._append(request)
        return AWSResponse(request.url, status, headers, MockRawResponse(body))

    def attach(self, client: Any) -> Any:
        """Route ``client``'s requests here. Requests go unsigned: nothing checks signatures
        in-process, and signing was a tenth of the cost of every write."""
        # cold start: botocore's signer loads only in a process that calls the API
        from botocore import UNSIGNED

        client.meta.events.register("before-send", self)
        client.meta.events.register("choose-signer", lambda **_: UNSIGNED)
        return client

    def _append(self, request: Any) -> None:
        body = request.body
        if isinstance(body, str):
            body = body.encode()
        entry = {
            "m": request.method,
            "u": request.url,
            "h": {k: (v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()},
            "b": base64.b64encode(body or b"").decode(),
        }
        assert self._fd is not None
        os.write(self._fd, (json.dumps(entry, separators=(",", ":")) + "\n").encode())
        if self.fsync:
            os.fsync(self._fd)

    def _replay(self) -> int:
        """Re-apply the journal to moto. Entries that fail now (e.g. a table another process
        created first) failed against the same state before, so they are skipped."""
        if not self.journal_path.exists():
            return 0
        # cold start: botocore's signer loads only in a process that calls the API
        from botocore.awsrequest import AWSPreparedRequest, HTTPHeaders

        count = 0
        good_end = 0
        with open(self.journal_path, "rb") as fh:
            for line in fh:
                if not line.endswith(b"\n"):
                    break  # torn final write from a crash: the request never got its answer
                good_end += len(line)
                entry = json.loads(line)
                headers = HTTPHeaders()
                for k, v in entry["h"].items():
                    headers[k] = v
                req = AWSPreparedRequest(entry["m"], entry["u"], headers, base64.b64decode(entry["b"]), False)
                self._stubber.process_request(req)
                count += 1
        if good_end < self.journal_path.stat().st_size:
            # Drop the torn tail so new entries start on a line of their own.
            os.truncate(self.journal_path, good_end)
        return count

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


_current: EmbeddedCloud | None = None
_current_lock = threading.Lock()


def _reset_moto() -> None:
    # cold start: moto loads only for the embedded backend
    from moto.backends import get_backend

    for service in ("dynamodb", "s3", "sqs", "scheduler"):
        get_backend(service).reset()


def get_embedded_cloud(home: Path, fsync: bool = False) -> EmbeddedCloud:
    """The process's embedded cloud for ``home``.

    moto's backends are process-global, so one home is active at a time: switching to another
    home (tests do) clears moto and replays that home's journal.
    """
    global _current
    home = home.expanduser().resolve()
    with _current_lock:
        if _current is not None and _current.home == home:
            return _current
        if _current is not None:
            _current.close()
            _current = None
            _reset_moto()
        _current = EmbeddedCloud(home, fsync=fsync)
        return _current


def forget_embedded_cloud() -> None:
    """Close the process's embedded cloud and clear moto (tests that share the process)."""
    global _current
    with _current_lock:
        if _current is not None:
            _current.close()
            _current = None
        _reset_moto()
