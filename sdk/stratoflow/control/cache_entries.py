"""Task cache entries as the run engine reads and writes them through the API.

An entry stands for a Completed state and its result, which a later run with the same cache key
loads instead of running the task: so its result reference is checked like any other a client
sends (``engine_runs.check_refs``) before it is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stratoflow.control.engine_runs import check_refs
from stratoflow.exceptions import NotFound, Unprocessable
from stratoflow.models import CacheEntry
from stratoflow.states import StateType

if TYPE_CHECKING:
    from stratoflow.settings import Settings
    from stratoflow.storage.base import Store


def read_cache_entry(store: Store, key: str) -> CacheEntry:
    """The valid entry of ``key``; ``NotFound`` (404) when there is none (or it expired)."""
    entry = store.read_cache(key)
    if entry is None:
        raise NotFound(f"cache entry {key!r} not found", kind="cache entry", id=key)
    return entry


def write_cache_entry(store: Store, settings: Settings, key: str, entry: CacheEntry) -> CacheEntry:
    """Write ``entry`` under ``key``: a Completed state with a result this stack's runners wrote."""
    if entry.key != key:
        raise Unprocessable(f"body.key: {entry.key!r} is not the key of the path ({key!r})")
    if entry.state.type != StateType.COMPLETED:
        raise Unprocessable("body.state: only a Completed state can be cached")
    if entry.state.result_ref is None:
        raise Unprocessable("body.state.result_ref: a cache entry needs the result it stands for")
    check_refs(settings, [entry.state], "body.state", indexed=False)
    store.write_cache(entry)
    return entry
