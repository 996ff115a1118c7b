"""Result references: JSON when a value is plain JSON, pickle otherwise, always signed; a pickle is
loaded only after its signature verifies (stratoflow.storage.results)."""

from __future__ import annotations

import base64
import enum
import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

import pytest

from stratoflow.storage.results import (
    KeySigner,
    ResultIntegrityError,
    ResultKeyUnavailable,
    check_ref,
    is_plain_json,
    key_id,
    load_ref,
    make_ref,
    serialize,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
BUCKET = "stack-bucket"


class Colour(enum.StrEnum):
    RED = "red"


class Opens:
    """Unpickling this creates a file: the stand-in for a pickle that runs code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (str(self.path), "w"))


def no_blobs(key: str, data: bytes) -> str:
    raise AssertionError("inline refs write no blob")


class Keyless:
    """A store of a process that cannot read the result key."""

    def result_signer(self) -> None:
        return None

    def get_blob(self, uri: str) -> bytes:
        raise AssertionError("inline refs read no blob")


KEYLESS: Any = Keyless()


class Blobs:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def put_blob(self, key: str, data: bytes) -> str:
        self.data[f"s3://{BUCKET}/{key}"] = data
        return f"s3://{BUCKET}/{key}"

    def get_blob(self, uri: str) -> bytes:
        return self.data[uri]


def forged_pickle(path: Path, **extra: Any) -> dict[str, Any]:
    return {"serializer": "pickle", "inline": base64.b64encode(pickle.dumps(Opens(path))).decode(), **extra}


@pytest.mark.parametrize("value", [None, True, 0, -3, 1.5, "é", [], {}, [1, "a", None], {"a": {"b": [1.0, False]}}])
def test_plain_json_values_are_stored_as_json(value: Any) -> None:
    assert is_plain_json(value)
    kind, data = serialize(value)
    assert kind == "json"
    assert json.loads(data) == value


@pytest.mark.parametrize("value", [(1, 2), {1: "a"}, Colour.RED, float("nan"), float("inf"), {1, 2}, b"x",
                                   [(1, 2)], {"a": Colour.RED}])
def test_values_json_would_change_are_pickled(value: Any) -> None:
    assert not is_plain_json(value)
    assert serialize(value)[0] == "pickle"


def test_json_serializer_can_be_forced_and_refuses_what_it_cannot_keep() -> None:
    assert serialize((1, 2), "json") == ("json", b"[1,2]")
    with pytest.raises(TypeError, match="not JSON-serializable"):
        serialize({1, 2}, "json")
    assert serialize([1], "pickle")[0] == "pickle"


@pytest.mark.parametrize("value", [{"rows": [1, 2, 3]}, (1, Colour.RED), "x" * 100])
def test_a_signed_ref_round_trips_inline_and_through_a_blob(value: Any) -> None:
    kind, data = serialize(value)
    ref = make_ref(KeySigner(KEY), kind, data, inline_max=1 << 20, put_blob=no_blobs, prefix="results/")
    assert set(ref) == {"serializer", "inline", "sig", "kid"}
    check_ref(ref, bucket=BUCKET, prefix="results/", signer=KeySigner(KEY))
    assert load_ref(ref, signer=KeySigner(KEY)) == value

    blobs = Blobs()
    big = make_ref(KeySigner(KEY), kind, data, inline_max=0, put_blob=blobs.put_blob, prefix="results/", name="k1")
    assert big["uri"] == f"s3://{BUCKET}/results/k1" and big["sha256"] == hashlib.sha256(data).hexdigest()
    check_ref(big, bucket=BUCKET, prefix="results/", signer=KeySigner(KEY))
    assert load_ref(big, blobs, signer=KeySigner(KEY)) == value  # type: ignore[arg-type]


def test_a_forged_pickle_is_never_loaded(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for ref in (forged_pickle(marker),
                forged_pickle(marker, sig="0" * 64, kid=key_id(KEY)),
                forged_pickle(marker, sig="0" * 64, kid=key_id(OTHER_KEY))):
        with pytest.raises(ResultIntegrityError):
            check_ref(ref, bucket=BUCKET, prefix="results/", signer=KeySigner(KEY))
        with pytest.raises((ResultIntegrityError, ResultKeyUnavailable)):
            load_ref(ref, signer=KeySigner(KEY))
        with pytest.raises(ResultKeyUnavailable):
            load_ref(ref, store=KEYLESS)
    assert not marker.exists()


def test_a_pickle_signed_with_another_stacks_key_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    ref = make_ref(KeySigner(OTHER_KEY), "pickle", pickle.dumps(Opens(marker)), inline_max=1 << 20, put_blob=no_blobs,
                   prefix="results/")
    with pytest.raises(ResultIntegrityError, match="another key"):
        load_ref(ref, signer=KeySigner(KEY))
    assert not marker.exists()


def test_swapping_the_bytes_or_the_serializer_breaks_the_signature(tmp_path: Path) -> None:
    ref = make_ref(KeySigner(KEY), "json", b'{"a":1}', inline_max=1 << 20, put_blob=no_blobs, prefix="results/")
    swapped = {**ref, "inline": base64.b64encode(pickle.dumps(Opens(tmp_path / "m"))).decode()}
    with pytest.raises(ResultIntegrityError, match="does not verify"):
        load_ref(swapped, signer=KeySigner(KEY))
    with pytest.raises(ResultIntegrityError, match="does not verify"):
        load_ref({**ref, "serializer": "pickle"}, signer=KeySigner(KEY))
    assert not (tmp_path / "m").exists()


def test_a_blob_altered_after_it_was_written_is_refused() -> None:
    blobs = Blobs()
    ref = make_ref(KeySigner(KEY), "json", b"[1]", inline_max=0, put_blob=blobs.put_blob, prefix="results/", name="r")
    blobs.data[ref["uri"]] = b"[2]"
    with pytest.raises(ResultIntegrityError, match="altered"):
        load_ref(ref, blobs, signer=KeySigner(KEY))  # type: ignore[arg-type]


def test_json_is_readable_without_the_key_and_pickles_are_not() -> None:
    json_ref = make_ref(KeySigner(KEY), "json", b"[1,2]", inline_max=1 << 20, put_blob=no_blobs, prefix="results/")
    assert load_ref(json_ref, store=KEYLESS) == [1, 2]
    pickle_ref = make_ref(KeySigner(KEY), "pickle", pickle.dumps((1, 2)), inline_max=1 << 20, put_blob=no_blobs,
                          prefix="results/")
    with pytest.raises(ResultKeyUnavailable, match="STRATOFLOW_RESULT_KEY_SECRET"):
        load_ref(pickle_ref, store=KEYLESS)


@pytest.mark.parametrize(("uri", "needle"), [
    ("s3://evil-bucket/results/x", "this stack's bucket"),
    (f"s3://{BUCKET}/packages/abc.zip", "this stack's bucket"),
    (f"s3://{BUCKET}/results/../packages/abc.zip", "not a plain key"),
    (f"s3://{BUCKET}/results/", "not a plain key"),
    ("https://example.com/results/x", "this stack's bucket"),
])
def test_a_uri_outside_the_stacks_results_is_refused(uri: str, needle: str) -> None:
    ref = {"serializer": "json", "uri": uri, "size": 1, "sha256": "0" * 64, "sig": "0" * 64, "kid": key_id(KEY)}
    with pytest.raises(ResultIntegrityError, match=needle) as info:
        check_ref(ref, bucket=BUCKET, prefix="results/", signer=None, where="body.state.result_ref")
    assert str(info.value).startswith("body.state.result_ref.uri: ")


@pytest.mark.parametrize(("ref", "field"), [
    ("pickle", "result_ref: must be an object"),
    ({"serializer": "yaml", "inline": "", "sig": "0" * 64, "kid": "0" * 16}, "result_ref.serializer"),
    ({"serializer": "json", "inline": "", "sig": "0" * 64, "kid": "0" * 16, "code": "x"}, "result_ref.code"),
    ({"serializer": "json", "sig": "0" * 64, "kid": "0" * 16}, "exactly one of inline and uri"),
    ({"serializer": "json", "inline": "!!", "sig": "0" * 64, "kid": "0" * 16}, "result_ref.inline"),
    ({"serializer": "json", "inline": "", "kid": "0" * 16}, "result_ref.sig"),
    ({"serializer": "json", "inline": "", "sig": "0" * 64}, "result_ref.kid"),
])
def test_malformed_refs_name_the_field(ref: Any, field: str) -> None:
    with pytest.raises(ResultIntegrityError, match=field.replace(".", r"\.")):
        check_ref(ref, bucket=BUCKET, prefix="results/", signer=None)
