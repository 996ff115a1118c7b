"""Run logs: validated batches in, pages out (sized to fit a Lambda response)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import TYPE_CHECKING

from stratoflow.control.flow_runs import read_flow_run
from stratoflow.exceptions import (
    NotFound,
    ObjectNotFound,
    Unprocessable,
)
from stratoflow.models import Log
from stratoflow.orchestration import RunKind
from stratoflow.schemas import LogIn

if TYPE_CHECKING:
    from stratoflow.storage.base import Store

# A Lambda response may be 6 MB; log pages are cut to stay well below it.
MAX_LOG_PAGE_BYTES = 4 * 1024 * 1024


def write_logs(store: Store, entries: Sequence[LogIn]) -> int:
    """Write a batch of logs, all or nothing: every line was checked by ``LogIn`` (fields,
    timestamp range), and here no id may repeat and every flow run must exist, before the first
    write. Lines are stored by id, so the same batch sent again (a retry) adds no copies."""
    seen: dict[tuple[str, str], int] = {}
    for index, entry in enumerate(entries):
        if entry.id is not None:
            first = seen.setdefault((entry.flow_run_id, entry.id), index)
            if first != index:
                raise Unprocessable(f"body.{index}.id: {entry.id!r} is also the id of body.{first} "
                                    "(ids are unique within a flow run)")
    logs: list[Log] = [entry.to_log() for entry in entries]
    missing = [rid for rid in dict.fromkeys(e.flow_run_id for e in entries) if not _flow_run_exists(store, rid)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise NotFound(f"flow run {missing[0]!r} not found{more}", missing=missing[:20])
    store.write_logs(logs)
    return len(logs)


def _flow_run_exists(store: Store, flow_run_id: str) -> bool:
    try:
        store.read_run(RunKind.FLOW, flow_run_id)
    except ObjectNotFound:
        return False
    return True


def encode_cursor(position: str | None) -> str | None:
    return base64.urlsafe_b64encode(position.encode()).decode().rstrip("=") if position else None


def decode_cursor(cursor: str | None) -> str | None:
    if not cursor:
        return None
    try:
        position = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        position = ""
    if "#" not in position:  # every log position is time#writer#seq
        raise Unprocessable("query.cursor: not a cursor this API returned")
    return position


def read_logs(store: Store, flow_run_id: str, *, cursor: str | None, limit: int, min_level: int,
              task_run_id: str | None = None) -> tuple[list[Log], str | None]:
    """A page of the run's logs in emitted order, cut so the response stays far below Lambda's
    6 MB limit (a smaller page is read when messages are large)."""
    read_flow_run(store, flow_run_id)
    position = decode_cursor(cursor)
    while True:
        page = store.read_logs(flow_run_id, cursor=position, limit=limit, min_level=min_level, task_run_id=task_run_id)
        size = sum(len(log.message.encode("utf-8", "surrogatepass")) + 256 for log in page.logs)
        if size <= MAX_LOG_PAGE_BYTES or limit == 1:
            return page.logs, encode_cursor(page.next_cursor)
        limit = max(1, limit // 2)
