"""Results: how a run's return value is kept so another process can read it back, safely.

A result reference is a small dict stored on the state::

    {"serializer": "json" | "pickle", "inline": "<base64>", "sig": "<hex>", "kid": "<hex>"}
    {"serializer": "json" | "pickle", "uri": "s3://<stack bucket>/results/<key>", "size": n,
     "sha256": "<hex>", "sig": "<hex>", "kid": "<hex>"}

Values up to ``result_inline_max_bytes`` stay inline in the run's DynamoDB item (same write as
the state), larger ones go to the stack's bucket. Failed states store the exception the same way,
so ``state.result()`` re-raises it anywhere.

Why signed: a reference travels through the API, where a caller with only ``execute-api`` rights
could otherwise plant a pickle that runs code in whichever process reads the result (a CLI user,
a cached task in another flow, the executor). So:

* a value whose every part is a plain JSON type (dict with str keys, list, str, int, float, bool,
  None) is stored as JSON, which decoding can never turn into code; only other values are pickled;
* every reference carries an HMAC-SHA256 (``sig``) over its serializer and the SHA-256 of its
  bytes, made with the stack's result key, which only runners (the executor, workers, embedded
  runs, the API to check what it is sent) can read (``stratoflow.storage.keys``);
* a pickle is unpickled only after its signature verifies; a JSON value is verified whenever the
  reader holds the key (a reader without it still gets JSON, which is safe to decode);
* a ``uri`` must name the stack's own bucket under the results prefix (``check_ref``).

This module is pure: the key and the blob store are handed in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import pickle  # nosec B403  # only loaded after the HMAC of the stack's result key verifies (load_ref)
import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol

from stratoflow import storage  # the package (its get_store), bound once it has loaded
from stratoflow.exceptions import MissingResult, StratoflowError
from stratoflow.states import StateType

if TYPE_CHECKING:
    from stratoflow.states import State
    from stratoflow.storage.base import Store

_EXC_KEY = "__stratoflow_exception__"
SERIALIZERS = ("json", "pickle")
Serializer = Literal["auto", "json", "pickle"]
_REF_KEYS = frozenset({"serializer", "inline", "uri", "size", "sha256", "sig", "kid"})
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_KID = re.compile(r"^[0-9a-f]{16}$")
NO_KEY = ("results cannot be signed here: no result key is configured. On AWS set STRATOFLOW_RESULT_KEY_SECRET to "
          "the stack's ResultKeySecretArn output (stratoflow config from-stack does) and allow "
          "secretsmanager:GetSecretValue on it, or run with persist_result=False")
# Longest inline blob a reference may carry (base64 of the largest inline_max we allow, 256 KiB).
MAX_INLINE_CHARS = 4 * (256 * 1024 // 3 + 1)


class ResultIntegrityError(StratoflowError):
    """A result reference that was not written by a runner of this stack (or was altered since):
    it is never deserialised."""


class ResultKeyUnavailable(StratoflowError):
    """The stack's result key cannot be read here, so a result can be neither signed nor a pickle
    verified. Runners need ``secretsmanager:GetSecretValue`` on the stack's ResultKey secret."""


# -- the key ---------------------------------------------------------------------------------------
def key_id(key: bytes) -> str:
    """A short public name of a key (the first 8 bytes of its SHA-256), so a reader can tell a
    rotated key from a forged signature."""
    return hashlib.sha256(b"stratoflow-kid\0" + key).hexdigest()[:16]


def _mac(key: bytes, serializer: str, digest: str) -> str:
    message = b"stratoflow-result/v1\0" + serializer.encode() + b"\0" + digest.encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


class Signer(Protocol):
    """Signs and verifies result digests. ``KeySigner`` holds the key; flow code running in a
    sandboxed process gets one that asks its runtime instead (``stratoflow.sandbox``), so the
    key never enters the process that runs user code."""

    def sign(self, serializer: str, digest: str) -> dict[str, str]:
        """``{"sig": ..., "kid": ...}`` for the SHA-256 hex ``digest`` of bytes of ``serializer``."""
        ...

    def verify(self, serializer: str, digest: str, sig: Any, kid: Any, where: str) -> None:
        """Raise ``ResultIntegrityError`` (naming ``where``) unless ``sig`` is this stack's."""
        ...


class KeySigner:
    def __init__(self, key: bytes) -> None:
        self._key = key
        self.kid = key_id(key)

    def sign(self, serializer: str, digest: str) -> dict[str, str]:
        return {"sig": _mac(self._key, serializer, digest), "kid": self.kid}

    def verify(self, serializer: str, digest: str, sig: Any, kid: Any, where: str) -> None:
        if kid != self.kid:
            raise ResultIntegrityError(f"{where}: signed with another key (kid {kid!r}, this stack's is "
                                       f"{self.kid!r}): written elsewhere, or before the key was rotated")
        if not isinstance(sig, str) or not hmac.compare_digest(sig, _mac(self._key, serializer, digest)):
            raise ResultIntegrityError(f"{where}.sig: does not verify with this stack's result key: the result "
                                       "was not written by a runner of this stack, or was altered since")


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- serializing -----------------------------------------------------------------------------------
def is_plain_json(value: Any, _depth: int = 0) -> bool:
    """Whether ``value`` is made only of exact JSON types, so it comes back from JSON unchanged
    (a tuple, a subclass such as an enum, a non-str key or a NaN would not)."""
    if _depth > 100:
        return False
    kind = type(value)
    if kind is str or kind is bool or kind is int or value is None:
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is list:
        return all(is_plain_json(v, _depth + 1) for v in value)
    if kind is dict:
        return all(type(k) is str and is_plain_json(v, _depth + 1) for k, v in value.items())
    return False


def serialize(value: Any, serializer: Serializer = "auto") -> tuple[str, bytes]:
    """``(serializer, bytes)`` for ``value``: JSON when it is plain JSON (or asked for), else pickle."""
    if serializer == "json" or (serializer == "auto" and is_plain_json(value)):
        try:
            return "json", json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            if serializer == "json":
                raise TypeError(f"result of type {type(value).__name__} is not JSON-serializable: {exc}") from exc
    return "pickle", pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def make_ref(signer: Signer, serializer: str, data: bytes, *, inline_max: int,
             put_blob: Callable[[str, bytes], str], prefix: str, name: str | None = None) -> dict[str, Any]:
    """The signed reference of ``data``: inline up to ``inline_max`` bytes, else written with
    ``put_blob`` under ``prefix``."""
    digest = digest_of(data)
    signature = signer.sign(serializer, digest)
    if len(data) <= inline_max:
        return {"serializer": serializer, "inline": base64.b64encode(data).decode(), **signature}
    uri = put_blob(f"{prefix}{name or uuid.uuid4().hex}", data)
    return {"serializer": serializer, "uri": uri, "size": len(data), "sha256": digest, **signature}


def persist_value(store: Store, value: Any, *, inline_max: int, prefix: str, key: str | None = None,
                  serializer: Serializer = "auto") -> dict[str, Any]:
    """Serialize ``value``, sign it and return its reference (inline or S3). Raises if it cannot
    be serialized, or ``ResultKeyUnavailable`` when this process may not sign results."""
    kind, data = serialize(value, serializer)
    signer = store.result_signer()
    if signer is None:
        raise ResultKeyUnavailable(NO_KEY)
    return make_ref(signer, kind, data, inline_max=inline_max, put_blob=store.put_blob, prefix=prefix, name=key)


def persist_exception(store: Store, exc: BaseException, *, inline_max: int, prefix: str) -> dict[str, Any] | None:
    try:
        return persist_value(store, {_EXC_KEY: exc}, inline_max=inline_max, prefix=prefix, serializer="pickle")
    except Exception:
        return None


# -- checking --------------------------------------------------------------------------------------
def check_ref(ref: Any, *, bucket: str, prefix: str, signer: Signer | None, where: str = "result_ref") -> None:
    """Raise ``ResultIntegrityError`` (its message names the field) unless ``ref`` is a reference
    a runner of this stack wrote: known fields only, a known serializer, inline data or a URI in
    the stack's bucket under ``prefix``, and (given a signer) a signature that verifies. What the
    API runs on every reference a client sends, before anything is stored."""
    serializer, sig, kid = _check_shape(ref, where)
    inline, uri = ref.get("inline"), ref.get("uri")
    if (inline is None) == (uri is None):
        raise ResultIntegrityError(f"{where}: needs exactly one of inline and uri")
    if inline is not None:
        digest = digest_of(_decode_inline(inline, where))
    else:
        check_uri(uri, bucket=bucket, prefix=prefix, where=f"{where}.uri")
        digest = _claimed_digest(ref, where)
    if signer is not None:
        signer.verify(serializer, digest, sig, kid, where)


def _check_shape(ref: Any, where: str) -> tuple[str, str, str]:
    """``(serializer, sig, kid)`` of a reference with known fields only, or ``ResultIntegrityError``."""
    if not isinstance(ref, dict):
        raise ResultIntegrityError(f"{where}: must be an object")
    unknown = sorted(set(ref) - _REF_KEYS)
    if unknown:
        raise ResultIntegrityError(f"{where}.{unknown[0]}: unknown field")
    serializer, sig, kid = ref.get("serializer"), ref.get("sig"), ref.get("kid")
    if serializer not in SERIALIZERS:
        raise ResultIntegrityError(f"{where}.serializer: must be one of {', '.join(SERIALIZERS)}")
    if not isinstance(sig, str) or not _HEX64.match(sig):
        raise ResultIntegrityError(f"{where}.sig: missing or not 64 hex digits; results are written by runners "
                                   "of this stack, which sign them with its result key")
    if not isinstance(kid, str) or not _KID.match(kid):
        raise ResultIntegrityError(f"{where}.kid: missing or not 16 hex digits")
    return str(serializer), sig, kid


def _claimed_digest(ref: dict[str, Any], where: str) -> str:
    """The SHA-256 a uri reference carries for its object (checked against the bytes when loaded)."""
    claimed = ref.get("sha256")
    if not isinstance(claimed, str) or not _HEX64.match(claimed):
        raise ResultIntegrityError(f"{where}.sha256: a uri reference carries the SHA-256 of its object")
    if not isinstance(ref.get("size"), int) or ref["size"] < 0:
        raise ResultIntegrityError(f"{where}.size: must be a non-negative integer")
    return claimed


def check_uri(uri: Any, *, bucket: str, prefix: str, where: str) -> None:
    """``uri`` must be ``s3://<bucket>/<prefix>...`` with no path tricks."""
    expected = f"s3://{bucket}/{prefix}"
    if not isinstance(uri, str) or not uri.startswith(expected) or len(uri) > 2048:
        raise ResultIntegrityError(f"{where}: must be an object of this stack's bucket under {expected}")
    rest = uri[len(expected):]
    if not rest or any(part in ("", ".", "..") for part in rest.split("/")) or "\\" in rest:
        raise ResultIntegrityError(f"{where}: {uri!r} is not a plain key under {expected}")


def _decode_inline(inline: Any, where: str) -> bytes:
    if not isinstance(inline, str) or len(inline) > MAX_INLINE_CHARS:
        raise ResultIntegrityError(f"{where}.inline: must be base64 text of at most {MAX_INLINE_CHARS} characters")
    try:
        return base64.b64decode(inline, validate=True)
    except (binascii.Error, ValueError):
        raise ResultIntegrityError(f"{where}.inline: not valid base64") from None


# -- loading ---------------------------------------------------------------------------------------
def load_ref(ref: dict[str, Any], store: Store | None = None, *, signer: Signer | None = None) -> Any:
    """The value behind ``ref``. A pickle is loaded only when its signature verifies with the
    stack's key (``ResultKeyUnavailable`` without a signer, ``ResultIntegrityError`` when it does
    not verify); JSON is verified whenever a signer is at hand. Without ``signer``, the store's."""
    serializer = ref.get("serializer") if isinstance(ref, dict) else None
    if serializer not in SERIALIZERS:
        raise ResultIntegrityError(f"result_ref.serializer: {serializer!r} is not one of {', '.join(SERIALIZERS)}")
    if store is None and (signer is None or "uri" in ref):
        store = storage.get_store()
    if signer is None and store is not None:
        signer = store.result_signer()
    if serializer == "pickle" and signer is None:
        raise ResultKeyUnavailable(
            "this result is a pickle, and pickles are loaded only after their signature is checked with the "
            "stack's result key, which this process cannot read (set STRATOFLOW_RESULT_KEY_SECRET and allow "
            "secretsmanager:GetSecretValue on it)")
    if "inline" in ref:
        data = _decode_inline(ref["inline"], "result_ref")
    else:
        assert store is not None
        data = store.get_blob(str(ref.get("uri")))
        if digest_of(data) != ref.get("sha256"):
            raise ResultIntegrityError(f"result_ref.uri: the object {ref.get('uri')} does not match its SHA-256: "
                                       "it was altered after it was written")
    if signer is not None:
        signer.verify(serializer, digest_of(data), ref.get("sig"), ref.get("kid"), "result_ref")
    if serializer == "json":
        return json.loads(data)
    return pickle.loads(data)  # nosec B301  # the HMAC above proves a runner of this stack wrote it


def load_state_result(state: State, raise_on_failure: bool = True) -> Any:

    if state._has_data:
        value = state._data
    elif state.result_ref is not None:
        value = load_ref(state.result_ref)
    else:
        value = None
        if state.type == StateType.COMPLETED:
            why = ("it could not be persisted (see the run's logs)" if state.state_details.untrackable_result
                   else "persist_result was off")
            raise MissingResult(f"{state!r} has no persisted result ({why})")
    exc = value.get(_EXC_KEY) if isinstance(value, dict) else None
    if isinstance(value, BaseException):
        exc = value
    if state.type in (StateType.FAILED, StateType.CRASHED, StateType.CANCELLED):
        if raise_on_failure:
            if exc is not None:
                raise exc
            raise StratoflowError(state.message or f"run ended in state {state!r}")
        return exc if exc is not None else value
    return value
