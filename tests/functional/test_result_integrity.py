# ruff: noqa: F811 - pytest fixtures imported from test_api_handler are redefined as parameters
"""Issue 11, finding 1: API data never becomes code execution.

A caller with only API rights sends result references (a run's states on create/commit, a cache
entry) holding a pickle that opens a marker file when unpickled. Each is refused with 422 naming
the field and nothing is written; one planted behind the API's back (directly in the table) is
never unpickled by a reader, and a cached task runs its body instead of loading it.
"""

from __future__ import annotations

import base64
import enum
import pickle
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_api_handler import (  # noqa: F401 - fixtures shared with the handler tests
    Reply,
    api,
    assert_error,
    flow_name,
    handler,
    journal,
    shared_home,
    stratoflow_home,
)

from stratoflow import flow, task
from stratoflow.models import CacheEntry, FlowRun, TaskRun
from stratoflow.orchestration import RunKind
from stratoflow.settings import get_settings
from stratoflow.states import Completed, Pending, Running
from stratoflow.storage.results import ResultIntegrityError, key_id

Api = Callable[..., Reply]


class Opens:
    """Unpickling this opens (creates) a file: a stand-in for a pickle that runs any code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (str(self.path), "w"))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / f"pwned-{uuid.uuid4().hex[:6]}"


def forged(marker: Path, **extra: Any) -> dict[str, Any]:
    return {"serializer": "pickle", "inline": base64.b64encode(pickle.dumps(Opens(marker))).decode(), **extra}


FORGERIES: list[tuple[str, Callable[[Path], dict[str, Any]], str]] = [
    ("unsigned", lambda m: forged(m), "sig: missing"),
    ("bad signature", lambda m: forged(m, sig="ab" * 32, kid=None), "kid"),
    ("guessed signature", lambda m: forged(m, sig="ab" * 32, kid="__KID__"), "does not verify"),
    ("foreign bucket", lambda m: {"serializer": "pickle", "uri": "s3://attacker-bucket/results/x", "size": 3,
                                  "sha256": "0" * 64, "sig": "0" * 64, "kid": "0" * 16}, "this stack's bucket"),
    ("package prefix", lambda m: {"serializer": "pickle", "uri": "s3://__BUCKET__/packages/x.zip", "size": 3,
                                  "sha256": "0" * 64, "sig": "0" * 64, "kid": "0" * 16}, "this stack's bucket"),
]


def _materialize(ref: dict[str, Any]) -> dict[str, Any]:
    from stratoflow.storage.keys import require_result_key

    out = dict(ref)
    if out.get("kid") == "__KID__":
        out["kid"] = key_id(require_result_key())
    if out.get("kid") is None:
        out.pop("kid", None)
    if isinstance(out.get("uri"), str):
        out["uri"] = out["uri"].replace("__BUCKET__", get_settings().bucket)
    return out


def completed_flow_run(flow: str, ref: dict[str, Any]) -> dict[str, Any]:
    state = Completed()
    state.result_ref = ref
    run = FlowRun(name="forged", flow_name=flow, state=state, state_history=[Pending(), Running(), state])
    return run.model_dump(mode="json")


@pytest.mark.parametrize(("case", "make", "needle"), FORGERIES, ids=[c[0] for c in FORGERIES])
def test_a_forged_result_in_a_created_run_is_refused(api: Api, journal: Callable[[], int], flow_name: str,
                                                     marker: Path, case: str, make: Any, needle: str) -> None:
    body = completed_flow_run(flow_name, _materialize(make(marker)))
    writes = journal()
    reply = api("POST", "/runs/flow/create", body=body)
    assert_error(reply, 422, "body.state_history.2.result_ref", needle)
    assert journal() == writes
    assert not marker.exists()


def test_a_forged_result_in_a_commit_is_refused(api: Api, journal: Callable[[], int], client: Any,
                                                flow_name: str, marker: Path) -> None:
    pending = Pending()
    run = FlowRun(name="honest", flow_name=flow_name, state=pending, state_history=[pending])
    created = api("POST", "/runs/flow/create", body=run.model_dump(mode="json"))
    assert created.status == 201, created.body
    stored = FlowRun.model_validate(created.body)
    state = Completed()
    state.result_ref = forged(marker)
    running = Running()
    new = stored.model_copy(update={"state": state, "state_history": [*stored.state_history, running, state]})
    body = {"run": new.model_dump(mode="json"), "new_states": [running.model_dump(mode="json"),
                                                               state.model_dump(mode="json")],
            "expected_version": stored.version, "allowed_from": ["PENDING"]}
    writes = journal()
    reply = api("POST", f"/runs/flow/{stored.id}/commit", body=body)
    assert_error(reply, 422, "body.new_states.1.result_ref.sig")
    assert journal() == writes
    assert client.read_flow_run(stored.id).state_type.value == "PENDING"
    assert not marker.exists()


def test_a_parameters_ref_outside_the_stack_is_refused(api: Api, journal: Callable[[], int], flow_name: str) -> None:
    pending = Pending()
    run = FlowRun(name="p", flow_name=flow_name, state=pending, state_history=[pending],
                  parameters_ref="s3://attacker-bucket/parameters/x.json")
    writes = journal()
    reply = api("POST", "/runs/flow/create", body=run.model_dump(mode="json"))
    assert_error(reply, 422, "body.parameters_ref", "this stack's bucket")
    assert journal() == writes


@pytest.mark.parametrize(("case", "make", "needle"), FORGERIES, ids=[c[0] for c in FORGERIES])
def test_a_poisoned_cache_entry_is_refused(api: Api, journal: Callable[[], int], client: Any, marker: Path,
                                          case: str, make: Any, needle: str) -> None:
    key = f"poison-{uuid.uuid4().hex[:8]}"
    state = Completed()
    state.result_ref = _materialize(make(marker))
    writes = journal()
    reply = api("PUT", f"/cache/{key}", body=CacheEntry(key=key, state=state).model_dump(mode="json"))
    assert_error(reply, 422, "body.state.result_ref", needle)
    assert journal() == writes
    assert client.store.read_cache(key) is None
    assert not marker.exists()


def test_a_result_a_runner_wrote_is_accepted(api: Api, client: Any, flow_name: str) -> None:
    """The honest path: a reference signed with the stack's key passes, and reads back."""

    @task
    def pair() -> tuple[int, int]:
        return (1, 2)

    @flow(name=flow_name)
    def honest() -> tuple[int, int]:
        return pair()

    assert honest() == (1, 2)
    task_run = client.read_task_runs(client.read_flow_runs(flow_name=flow_name)[0].id)[0]
    assert task_run.state.result_ref["serializer"] == "pickle"  # a tuple is not plain JSON
    copy = completed_flow_run(flow_name, task_run.state.result_ref)
    reply = api("POST", "/runs/flow/create", body=copy)
    assert reply.status == 201, reply.body
    assert client.read_flow_run(reply.body["id"]).state.result() == (1, 2)


def test_a_forged_pickle_planted_in_the_table_is_never_unpickled(client: Any, flow_name: str, marker: Path) -> None:
    """Written behind the API's back (e.g. by an old version): readers refuse it all the same."""
    store = client.store
    state = Completed()
    state.result_ref = forged(marker, sig="ab" * 32, kid=key_id(_key()))
    run = store.create_run(RunKind.FLOW, FlowRun(name="x", flow_name=flow_name, state=state,
                                                 state_history=[Pending(), Running(), state]))
    read = client.read_flow_run(run.id)
    with pytest.raises(ResultIntegrityError, match="does not verify"):
        read.state.result()
    assert not marker.exists()


def test_a_poisoned_cache_entry_in_the_table_makes_the_task_run(client: Any, flow_name: str, marker: Path) -> None:
    key = f"shared-{uuid.uuid4().hex[:8]}"
    poisoned = Completed()
    poisoned.result_ref = forged(marker, sig="ab" * 32, kid=key_id(_key()))
    client.store.write_cache(CacheEntry(key=key, state=poisoned))
    calls: list[int] = []

    @task(cache_key_fn=lambda ctx, params: key)
    def expensive() -> str:
        calls.append(1)
        return "real"

    @flow(name=flow_name)
    def uses_cache() -> str:
        return expensive()

    assert uses_cache() == "real"
    assert calls == [1]
    assert not marker.exists()
    # The task's own (signed) entry replaced the poisoned one: the next run is a cache hit.
    assert uses_cache() == "real"
    assert calls == [1]


class Colour(enum.Enum):
    RED = 1


def test_plain_json_results_are_stored_as_json_and_others_keep_their_types(client: Any, flow_name: str) -> None:
    @task
    def plain() -> dict[str, Any]:
        return {"rows": [1, 2.5, None, "é"]}

    @task
    def rich() -> tuple[Any, ...]:
        return (Colour.RED, {1: "a"})

    @flow(name=flow_name)
    def both() -> None:
        plain()
        rich()

    both()
    runs = {tr.name.split("-")[0]: tr for tr in client.read_task_runs(client.read_flow_runs(flow_name=flow_name)[0].id)}
    assert runs["plain"].state.result_ref["serializer"] == "json"
    assert base64.b64decode(runs["plain"].state.result_ref["inline"]) == b'{"rows":[1,2.5,null,"\xc3\xa9"]}'
    assert runs["plain"].state.result() == {"rows": [1, 2.5, None, "é"]}
    assert runs["rich"].state.result_ref["serializer"] == "pickle"
    assert runs["rich"].state.result() == (Colour.RED, {1: "a"})
    assert isinstance(runs["plain"], TaskRun)


def _key() -> bytes:
    from stratoflow.storage.keys import require_result_key

    return require_result_key()
