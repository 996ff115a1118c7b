"""Results: how a run's return value is kept so another process can read it back.

A result reference is a small dict stored on the state:
``{"serializer": "pickle", "inline": "<base64>"}`` for results up to
``result_inline_max_bytes`` (kept in the run's DynamoDB item, same write as the state), or
``{"serializer": "pickle", "uri": "s3://bucket/results/<key>"}`` for larger ones. Failed states
store the exception the same way, so ``state.result()`` re-raises it anywhere.
"""

from __future__ import annotations

import base64
import pickle
import uuid
from typing import TYPE_CHECKING, Any

from stratoflow.exceptions import MissingResult

if TYPE_CHECKING:
    from stratoflow.states import State
    from stratoflow.storage.base import Store

_EXC_KEY = "__stratoflow_exception__"


def persist_value(store: Store, value: Any, *, inline_max: int, prefix: str, key: str | None = None) -> dict[str, Any]:
    """Serialize ``value`` and return its reference (inline or S3). Raises if not picklable."""
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    if len(data) <= inline_max:
        return {"serializer": "pickle", "inline": base64.b64encode(data).decode()}
    uri = store.put_blob(f"{prefix}{key or uuid.uuid4().hex}", data)
    return {"serializer": "pickle", "uri": uri, "size": len(data)}


def persist_exception(store: Store, exc: BaseException, *, inline_max: int, prefix: str) -> dict[str, Any] | None:
    try:
        return persist_value(store, {_EXC_KEY: exc}, inline_max=inline_max, prefix=prefix)
    except Exception:
        return None


def load_ref(ref: dict[str, Any], store: Store | None = None) -> Any:
    if "inline" in ref:
        data = base64.b64decode(ref["inline"])
    else:
        if store is None:
            from stratoflow.storage import get_store

            store = get_store()
        data = store.get_blob(ref["uri"])
    return pickle.loads(data)


def load_state_result(state: State, raise_on_failure: bool = True) -> Any:
    from stratoflow.states import StateType

    if state._has_data:
        value = state._data
    elif state.result_ref is not None:
        value = load_ref(state.result_ref)
    else:
        value = None
        if state.type == StateType.COMPLETED:
            raise MissingResult(f"{state!r} has no persisted result (persist_result was off)")
    exc = value.get(_EXC_KEY) if isinstance(value, dict) else None
    if isinstance(value, BaseException):
        exc = value
    if state.type in (StateType.FAILED, StateType.CRASHED, StateType.CANCELLED):
        if raise_on_failure:
            if exc is not None:
                raise exc
            from stratoflow.exceptions import StratoflowError

            raise StratoflowError(state.message or f"run ended in state {state!r}")
        return exc if exc is not None else value
    return value
