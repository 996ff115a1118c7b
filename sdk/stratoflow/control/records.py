"""The low-volume records of the objects table (deployments, work pools and queues, limits):
reading one, listing a kind, and the version-checked write every noun's create-or-update shares.
Every kind is named once, in ``stratoflow.models.ObjectKind`` (the core, because the storage
layer's slots and the runtimes' heartbeats use kinds too)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel

from stratoflow.exceptions import Conflict, ObjectAlreadyExists, ObjectNotFound, ObjectVersionConflict
from stratoflow.models import ObjectKind
from stratoflow.settings import get_settings
from stratoflow.storage.base import StoredObject

if TYPE_CHECKING:
    from stratoflow.settings import Settings
    from stratoflow.storage.base import Store


_DEPLOYMENT_IDS = uuid.UUID("7f3c1a52-4d0e-4c1b-9a57-5b2f0d7c9e11")


_WRITE_ATTEMPTS = 5


def deployment_id(flow_name: str, name: str) -> str:
    """A deployment's id follows from its (flow name, name): a create is a put-if-absent."""
    return str(uuid.uuid5(_DEPLOYMENT_IDS, json.dumps([flow_name, name])))


def all_records(store: Store, kind: str, prefix: str = "", limit: int = 10_000) -> list[StoredObject]:
    out: list[StoredObject] = []
    cursor: str | None = None
    while len(out) < limit:
        page = store.list_objects(kind, prefix=prefix, cursor=cursor, limit=min(1000, limit - len(out)))
        out.extend(page.objects)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    return out


_M = TypeVar("_M", bound=BaseModel)


def write_record(
    store: Store, kind: str, key: str, model: type[_M], what: str, *,
    create: Callable[[], _M] | None, update: Callable[[_M, int], _M | None],
) -> tuple[_M, bool]:
    """Create or update one record with optimistic concurrency, re-reading after a lost race.

    ``update(current, stored_version)`` returns the new record, or None when nothing changes;
    without ``create`` a missing record is a 404. Returns the record and whether it was created.
    """
    for _ in range(_WRITE_ATTEMPTS):
        try:
            stored = store.get_object(kind, key)
        except ObjectNotFound:
            if create is None:
                raise
            record = create()
            try:
                store.put_object(kind, key, record.model_dump(mode="json"), must_not_exist=True)
            except ObjectAlreadyExists:
                continue
            return record, True
        current = model.model_validate(stored.doc)
        changed = update(current, stored.version)
        if changed is None:
            return current, False
        try:
            store.put_object(kind, key, changed.model_dump(mode="json"), expected_version=stored.version)
        except (ObjectVersionConflict, ObjectNotFound):
            continue
        return changed, False
    raise Conflict(f"the {what} keeps changing concurrently; retry later")


def settings_or_default(settings: Settings | None) -> Settings:

    return settings or get_settings()


def read_record(store: Store, kind: ObjectKind, model: type[_M], key: str) -> _M:
    """The stored record ``key`` of ``kind`` as ``model`` (``ObjectNotFound`` when absent)."""
    return model.model_validate(store.get_object(kind, key).doc)
