"""Storage: the narrow ``Store`` interface and its one implementation on DynamoDB + S3."""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from stratoflow.storage.base import LogPage, Store

__all__ = ["LogPage", "Store", "get_server_store", "get_store", "using_store"]

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
    from stratoflow.settings import get_settings

    forced = _forced.get()
    if forced is not None:
        return forced

    if get_settings().api_url:
        from stratoflow.storage.api_store import get_api_store

        return get_api_store()
    from stratoflow.storage.dynamodb import get_dynamodb_store

    return get_dynamodb_store()


def get_server_store() -> Store:
    """DynamoDB + S3 directly, even when an API URL is configured: what the control plane's own
    processes use (the executor function, workers, the janitor), which hold IAM access to the
    tables and run server-side operations (work pools, dispatch, heartbeats) themselves."""
    from stratoflow.storage.dynamodb import get_dynamodb_store

    return get_dynamodb_store()
