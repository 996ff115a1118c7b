"""Concurrency slots, taken and given back atomically in the objects table.

A limit is one record: ``{"limit": N, "active_slots": [holder ids]}`` with a version. Taking a
slot is a conditional write of that record with the holder appended (only while fewer than N
hold one); giving it back is the conditional write without it. Two takers racing for the last
slot: one write wins, the other re-reads and finds the limit full. Taking twice with the same
holder is a no-op, so a retried or duplicated request never holds two slots.

Limits in use:

* ``concurrency_limit`` / ``<tag>``: task runs carrying the tag (``stratoflow concurrency-limit``);
* ``slots`` / ``deployment/<id>``, ``queue/<pool>/<queue>``, ``pool/<pool>``: flow runs of a
  deployment, a work queue or a work pool (their ``concurrency_limit``), taken by the executor
  before it claims a run.

Slots are given back on every path that ends a run; the janitor gives back those whose holder
died with its executor (``holders`` + ``release``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stratoflow.exceptions import ObjectAlreadyExists, ObjectNotFound, ObjectVersionConflict
from stratoflow.models import ObjectKind

if TYPE_CHECKING:
    from stratoflow.storage.base import Store

_ATTEMPTS = 50


@dataclass(frozen=True)
class Limit:
    """Where a limit lives and how large it is (``size=None``: as stored, for tag limits)."""

    kind: str
    key: str
    size: int | None = None

    @property
    def label(self) -> str:
        return self.key if self.kind == ObjectKind.SLOTS else f"tag:{self.key}"


def deployment_limit(deployment_id: str, size: int) -> Limit:
    return Limit(ObjectKind.SLOTS, f"deployment/{deployment_id}", size)


def queue_limit(pool: str, queue: str, size: int) -> Limit:
    return Limit(ObjectKind.SLOTS, f"queue/{pool}/{queue}", size)


def pool_limit(pool: str, size: int) -> Limit:
    return Limit(ObjectKind.SLOTS, f"pool/{pool}", size)


def tag_limit(tag: str) -> Limit:
    return Limit(ObjectKind.CONCURRENCY_LIMIT, tag)


def acquire(store: Store, limit: Limit, holder: str) -> bool:
    """Take a slot of ``limit`` for ``holder``; False when the limit is full. A tag without a
    limit record has no limit (True, nothing written)."""
    for _ in range(_ATTEMPTS):
        try:
            stored = store.get_object(limit.kind, limit.key)
        except ObjectNotFound:
            if limit.size is None:
                return True
            if limit.size < 1:
                return False
            try:
                store.put_object(limit.kind, limit.key, {"limit": limit.size, "active_slots": [holder]},
                                 must_not_exist=True)
            except ObjectAlreadyExists:
                continue
            return True
        doc = dict(stored.doc)
        holders = list(doc.get("active_slots", []))
        if holder in holders:
            return True
        size = limit.size if limit.size is not None else int(doc.get("limit", 0))
        if len(holders) >= size:
            return False
        doc["active_slots"] = [*holders, holder]
        doc["limit"] = size
        try:
            store.put_object(limit.kind, limit.key, doc, expected_version=stored.version)
        except (ObjectVersionConflict, ObjectNotFound):
            continue
        return True
    return False


def acquire_all(store: Store, limits: Sequence[Limit], holder: str) -> Limit | None:
    """Take a slot of every limit, or none: returns the first full limit (after giving back the
    slots taken before it), None when all were taken."""
    taken: list[Limit] = []
    for limit in limits:
        if not acquire(store, limit, holder):
            release_all(store, taken, holder)
            return limit
        taken.append(limit)
    return None


def release(store: Store, limit: Limit, holder: str) -> bool:
    """Give back ``holder``'s slot; False when it held none."""
    for _ in range(_ATTEMPTS):
        try:
            stored = store.get_object(limit.kind, limit.key)
        except ObjectNotFound:
            return False
        holders = list(stored.doc.get("active_slots", []))
        if holder not in holders:
            return False
        doc: dict[str, Any] = {**stored.doc, "active_slots": [h for h in holders if h != holder]}
        try:
            store.put_object(limit.kind, limit.key, doc, expected_version=stored.version)
        except (ObjectVersionConflict, ObjectNotFound):
            continue
        return True
    raise RuntimeError(f"could not give back the slot of {holder} in {limit.label}: too many concurrent writers")


def release_all(store: Store, limits: Sequence[Limit], holder: str) -> None:
    for limit in limits:
        release(store, limit, holder)


def holders(store: Store, limit: Limit) -> list[str]:
    try:
        return list(store.get_object(limit.kind, limit.key).doc.get("active_slots", []))
    except ObjectNotFound:
        return []


def all_limits(store: Store) -> list[tuple[Limit, list[str]]]:
    """Every flow-run and tag limit with its holders (what the janitor sweeps)."""
    out: list[tuple[Limit, list[str]]] = []
    for kind in (ObjectKind.SLOTS, ObjectKind.CONCURRENCY_LIMIT):
        cursor: str | None = None
        while True:
            page = store.list_objects(kind, cursor=cursor, limit=1000)
            for obj in page.objects:
                out.append((Limit(kind, obj.key, obj.doc.get("limit")), list(obj.doc.get("active_slots", []))))
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    return out
