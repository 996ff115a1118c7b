"""Tag concurrency limits: the records an operator sets; slots are taken in ``storage.slots``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stratoflow.control.records import all_records, write_record
from stratoflow.models import (
    ConcurrencyLimit,
    ObjectKind,
)
from stratoflow.schemas import ConcurrencyLimitCreate
from stratoflow.states import now

if TYPE_CHECKING:
    from stratoflow.storage.base import Store


def upsert_concurrency_limit(store: Store, request: ConcurrencyLimitCreate) -> tuple[ConcurrencyLimit, bool]:
    """Create the limit of ``tag``, or change its limit (the slots held stay held)."""
    return write_record(
        store, ObjectKind.CONCURRENCY_LIMIT, request.tag, ConcurrencyLimit, "concurrency limit",
        create=lambda: ConcurrencyLimit(tag=request.tag, limit=request.limit),
        update=lambda limit, version: limit.model_copy(
            update={"limit": request.limit, "version": version + 1, "updated": now()}),
    )


def read_concurrency_limit(store: Store, tag: str) -> ConcurrencyLimit:
    return ConcurrencyLimit.model_validate(store.get_object(ObjectKind.CONCURRENCY_LIMIT, tag).doc)


def list_concurrency_limits(store: Store) -> list[ConcurrencyLimit]:
    return [ConcurrencyLimit.model_validate(o.doc) for o in all_records(store, ObjectKind.CONCURRENCY_LIMIT)]


def delete_concurrency_limit(store: Store, tag: str) -> None:
    store.delete_object(ObjectKind.CONCURRENCY_LIMIT, tag)
