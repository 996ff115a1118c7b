"""Storage: the narrow ``Store`` interface (``base``) and its backends: DynamoDB + S3
(``dynamodb``, embedded moto or AWS), the API (``api_store``, for a process that reaches the stack
only over HTTP) and the sandbox's (``sandbox_store``, an API store through the runtime's gateway).
Backends are small primitives; the logic they share lives in ``Store``'s public methods."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from stratoflow.settings import Settings, get_settings
from stratoflow.storage.base import LogPage, Store

if TYPE_CHECKING:
    from stratoflow.storage.api_store import ApiStore

__all__ = ["LogPage", "Store", "get_api_store", "get_server_store", "get_store", "using_store"]

_forced: ContextVar[Store | None] = ContextVar("stratoflow_store", default=None)


@contextmanager
def using_store(store: Store) -> Iterator[Store]:
    """``get_store()`` answers ``store`` in this context: the sandbox gateway serves a flow's API
    requests with the runtime's own store, whatever the process's settings say."""
    token = _forced.set(store)
    try:
        yield store
    finally:
        _forced.reset(token)


def get_store() -> Store:
    """The process's store for the current settings: over the API when ``STRATOFLOW_API_URL``
    is set, else DynamoDB + S3 directly (embedded moto or real AWS)."""
    forced = _forced.get()
    if forced is not None:
        return forced
    if get_settings().api_url:
        return get_api_store()
    # cold start: a process that reaches the stack over the API (a sandboxed flow, a client) never
    # loads PynamoDB and boto3's DynamoDB machinery; the API's handler loads them on first use.
    from stratoflow.storage.dynamodb import get_dynamodb_store

    return get_dynamodb_store()


def get_server_store() -> Store:
    """DynamoDB + S3 directly, even when an API URL is configured: what the control plane's own
    processes use (the executor function, workers, the janitor), which hold IAM access to the
    tables and run server-side operations (work pools, dispatch, heartbeats) themselves."""
    from stratoflow.storage.dynamodb import get_dynamodb_store  # cold start: as in get_store

    return get_dynamodb_store()


_store: ApiStore | None = None
_store_key: tuple[Any, ...] | None = None
_store_lock = threading.Lock()


def get_api_store(settings: Settings | None = None) -> ApiStore:
    """The process's API store; rebuilt when the settings it was built from change (tests)."""
    global _store, _store_key
    settings = settings or get_settings()
    key = (settings.api_url, settings.region, settings.bucket, settings.aws_endpoint_url, settings.resolved_backend,
           settings.runtime_token)
    # cold start: only processes that use the API load its transport (and botocore's signer).
    from stratoflow.storage.api_store import ApiStore
    from stratoflow.storage.sandbox_store import SandboxStore

    with _store_lock:
        if _store is None or _store_key != key:
            if settings.runtime_token is not None:
                _store, _store_key = SandboxStore(settings), key
            else:
                _store, _store_key = ApiStore(settings), key
        return _store
