"""SQS queue names for pools and queues: deterministic, within SQS's 80 characters."""

from __future__ import annotations

import hashlib

_MAX = 80


def _fit(name: str) -> str:
    if len(name) <= _MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[:_MAX - 11]}-{digest}"


def queue_name(prefix: str, pool: str, queue: str) -> str:
    """``<prefix>-<pool>--<queue>``: the double dash keeps (pool, queue) pairs distinct."""
    return _fit(f"{prefix}-{pool}--{queue}")


def dlq_name(prefix: str, pool: str) -> str:
    return _fit(f"{prefix}-{pool}--dlq")


DEFAULT_QUEUE = "default"
