# ruff: noqa: F811 - pytest fixtures imported from test_api_handler are redefined as parameters
"""Handler-level tests of the API's object routes: flows, flow-run cancel/retry/delete, task-run
filter, deployments, work pools and queues, concurrency limits; and the transactional idempotent
create. Every error case checks that nothing was written (the embedded journal did not grow)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from test_api_handler import (  # noqa: F401 - fixtures shared with the handler tests
    Reply,
    api,
    assert_error,
    create_run,
    flow_name,
    handler,
    journal,
    markers_of,
    shared_home,
    stratoflow_home,
)

from stratoflow.models import FlowRun, TaskRun
from stratoflow.orchestration import RunKind
from stratoflow.states import Completed, Failed, Pending, Running

Api = Callable[..., Reply]


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def unchanged(api: Api, journal: Callable[[], int], method: str, path: str, status: int, *needles: str,
              **kwargs: Any) -> Reply:
    """The request fails with ``status`` naming ``needles`` and writes nothing."""
    writes = journal()
    reply = api(method, path, **kwargs)
    assert_error(reply, status, *needles)
    assert journal() == writes, f"{method} {path} wrote after an error"
    return reply


SCHEMA = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}, "label": {"type": "string"}},
          "required": ["n", "label"], "additionalProperties": False}


def make_deployment(api: Api, flow: str, **body: Any) -> dict[str, Any]:
    reply = api("POST", "/deployments", body={"name": "nightly", "flow_name": flow, **body})
    assert reply.status in (200, 201), reply.body
    return dict(reply.body)


# -- openapi --------------------------------------------------------------------------------------
def test_openapi_lists_the_object_routes(api: Api) -> None:
    paths = api("GET", "/openapi.json").body["paths"]
    for path, method in [("/flows", "get"), ("/flows/{name}", "get"), ("/flow_runs/{flow_run_id}/cancel", "post"),
                         ("/flow_runs/{flow_run_id}/retry", "post"), ("/flow_runs/{flow_run_id}", "delete"),
                         ("/task_runs/filter", "post"), ("/deployments", "post"), ("/deployments/filter", "post"),
                         ("/deployments/{deployment_id}", "get"), ("/deployments/{deployment_id}/pause", "post"),
                         ("/deployments/{deployment_id}/resume", "post"),
                         ("/deployments/{deployment_id}/create_flow_run", "post"), ("/work_pools", "post"),
                         ("/work_pools", "get"), ("/work_pools/{name}", "get"), ("/work_pools/{name}/pause", "post"),
                         ("/work_pools/{name}/resume", "post"), ("/work_pools/{name}/queues", "post"),
                         ("/work_pools/{name}/queues", "get"), ("/work_pools/{name}/status", "get"),
                         ("/work_pools/{name}/queues/{queue}/pause", "post"),
                         ("/work_pools/{name}/queues/{queue}/resume", "post"), ("/concurrency_limits", "post"),
                         ("/concurrency_limits", "get"), ("/concurrency_limits/{tag}", "get"),
                         ("/concurrency_limits/{tag}", "delete")]:
        assert method in paths[path], (method, path)
    assert "SQS" in paths["/work_pools"]["post"]["description"]


# -- flows ----------------------------------------------------------------------------------------
def test_flows_list_and_read(api: Api, journal: Callable[[], int], flow_name: str) -> None:
    create_run(api, flow_name)
    names = [f["name"] for f in api("GET", "/flows", query={"limit": 1000}).body]
    assert flow_name in names and names == sorted(names)
    reply = api("GET", f"/flows/{flow_name}")
    assert reply.status == 200 and reply.body["name"] == flow_name
    unchanged(api, journal, "GET", "/flows/no-such-flow", 404, "no-such-flow")
    unchanged(api, journal, "GET", "/flows", 422, "limit", query={"limit": 0})


# -- flow runs: cancel, retry, delete -------------------------------------------------------------
def test_cancel_moves_by_state(api: Api, client: Any, journal: Callable[[], int]) -> None:
    scheduled = create_run(api, uid("c"))
    reply = api("POST", f"/flow_runs/{scheduled['id']}/cancel")
    assert reply.status == 200 and reply.body["state"]["type"] == "CANCELLED"

    running = create_run(api, uid("c"), state={"type": "RUNNING"})
    reply = api("POST", f"/flow_runs/{running['id']}/cancel")
    assert reply.status == 200 and reply.body["state"]["type"] == "CANCELLING"
    again = api("POST", f"/flow_runs/{running['id']}/cancel")  # already cancelling: unchanged
    assert again.status == 200 and again.body["version"] == reply.body["version"]

    pending = create_run(api, uid("c"), state={"type": "PENDING"})
    assert api("POST", f"/flow_runs/{pending['id']}/cancel").body["state"]["type"] == "CANCELLING"

    paused = create_run(api, uid("c"), state={"type": "RUNNING"})
    assert api("POST", f"/flow_runs/{paused['id']}/set_state", body={"state": {"type": "PAUSED"}}).status == 200
    assert api("POST", f"/flow_runs/{paused['id']}/cancel").body["state"]["type"] == "CANCELLED"

    # Terminal: refused with the rule's reason, nothing written.
    reply = unchanged(api, journal, "POST", f"/flow_runs/{scheduled['id']}/cancel", 409,
                      "HandleFlowTerminalStateTransitions", "terminal state")
    assert reply.body["rule"] == "HandleFlowTerminalStateTransitions"
    unchanged(api, journal, "POST", "/flow_runs/nope/cancel", 404, "nope")


def test_retry_a_finished_run(api: Api, client: Any, journal: Callable[[], int]) -> None:
    run = create_run(api, uid("r"), state={"type": "RUNNING"})
    unchanged(api, journal, "POST", f"/flow_runs/{run['id']}/retry", 409, "only a finished flow run")
    client.set_flow_run_state(run["id"], Failed(message="boom"))
    reply = api("POST", f"/flow_runs/{run['id']}/retry")
    assert reply.status == 200
    assert reply.body["state"]["type"] == "SCHEDULED" and reply.body["state"]["name"] == "AwaitingRetry"
    assert [s["type"] for s in reply.body["state_history"]] == ["RUNNING", "FAILED", "SCHEDULED"]
    unchanged(api, journal, "POST", f"/flow_runs/{run['id']}/retry", 409, "AwaitingRetry")
    unchanged(api, journal, "POST", "/flow_runs/nope/retry", 404, "nope")


def test_delete_removes_the_run_its_task_runs_and_marker(api: Api, client: Any, journal: Callable[[], int],
                                                          flow_name: str) -> None:
    run = create_run(api, flow_name, state={"type": "RUNNING"}, idempotency_key="del-1")
    task = TaskRun(name="t-0", task_key="t", flow_run_id=run["id"], state_history=[])
    created = client.store.create_run(RunKind.TASK, task)
    client.set_task_run_state(created.id, Pending())
    assert markers_of(client, flow_name)
    other = create_run(api, flow_name)

    reply = api("DELETE", f"/flow_runs/{run['id']}")
    assert reply.status == 200 and reply.body == {"deleted": run["id"]}
    assert_error(api("GET", f"/flow_runs/{run['id']}"), 404)
    assert_error(api("GET", f"/task_runs/{created.id}"), 404)
    assert markers_of(client, flow_name) == []
    assert api("GET", f"/flow_runs/{other['id']}").status == 200  # others untouched
    unchanged(api, journal, "DELETE", f"/flow_runs/{run['id']}", 404, run["id"])
    # The key is free again.
    assert api("POST", "/flow_runs", body={"flow_name": flow_name, "idempotency_key": "del-1"}).status == 201


# -- task runs ------------------------------------------------------------------------------------
def test_filter_task_runs_by_state(api: Api, client: Any, journal: Callable[[], int]) -> None:
    run = create_run(api, uid("t"), state={"type": "RUNNING"})
    ids = []
    for i, final in enumerate([Completed(), Failed(), None]):
        t = client.store.create_run(RunKind.TASK, TaskRun(name=f"t-{i}", task_key="t", flow_run_id=run["id"]))
        client.set_task_run_state(t.id, Pending())
        client.set_task_run_state(t.id, Running())
        if final is not None:
            client.set_task_run_state(t.id, final)
        ids.append(t.id)
    every = api("POST", "/task_runs/filter", body={"flow_run_id": run["id"]})
    assert every.status == 200 and sorted(r["id"] for r in every.body) == sorted(ids)
    done = api("POST", "/task_runs/filter", body={"flow_run_id": run["id"], "state_types": ["COMPLETED", "RUNNING"]})
    assert sorted(r["id"] for r in done.body) == sorted([ids[0], ids[2]])
    unchanged(api, journal, "POST", "/task_runs/filter", 404, "nope", body={"flow_run_id": "nope"})
    unchanged(api, journal, "POST", "/task_runs/filter", 422, "flow_run_id", body={})
    unchanged(api, journal, "POST", "/task_runs/filter", 422, "state_types", body={"flow_run_id": run["id"],
                                                                                    "state_types": ["DONE"]})
    unchanged(api, journal, "POST", "/task_runs/filter", 400, "malformed JSON", raw_body="{")


# -- deployments ----------------------------------------------------------------------------------
def test_deployment_create_update_read_filter(api: Api, journal: Callable[[], int], flow_name: str) -> None:
    first = api("POST", "/deployments", body={"name": "nightly", "flow_name": flow_name, "parameters": {"n": 1},
                                              "tags": ["etl"], "parameter_openapi_schema": SCHEMA})
    assert first.status == 201 and first.body["version"] == 1
    again = api("POST", "/deployments", body={"name": "nightly", "flow_name": flow_name, "description": "v2",
                                              "parameters": {"n": 2, "label": "x"}})
    assert again.status == 200
    assert again.body["id"] == first.body["id"] and again.body["version"] == 2 and again.body["description"] == "v2"
    assert again.body["created"] == first.body["created"] and again.body["tags"] == ["etl"]
    other = make_deployment(api, flow_name, name="hourly")
    assert other["id"] != first.body["id"]

    read = api("GET", f"/deployments/{first.body['id']}")
    assert read.status == 200 and read.body == again.body
    found = api("POST", "/deployments/filter", body={"flow_name": flow_name})
    assert [d["name"] for d in found.body] == ["hourly", "nightly"]
    assert [d["name"] for d in api("POST", "/deployments/filter", body={"flow_name": flow_name,
                                                                       "tags": ["etl"]}).body] == ["nightly"]
    assert api("POST", "/deployments/filter", body={"flow_name": flow_name, "tags": ["etl", "other"]}).body == []
    assert api("POST", "/deployments/filter").status == 200

    unchanged(api, journal, "GET", "/deployments/nope", 404, "nope")
    unchanged(api, journal, "POST", "/deployments", 422, "flow_name", body={"name": "x"})
    unchanged(api, journal, "POST", "/deployments", 422, "parameters", body={"name": "x", "flow_name": flow_name,
                                                                           "parameters": [1]})
    unchanged(api, journal, "POST", "/deployments", 422, "parameter_openapi_schema",
              body={"name": "x", "flow_name": flow_name, "parameter_openapi_schema": {"type": "nonsense"}})
    unchanged(api, journal, "POST", "/deployments", 404, "work pool", body={"name": "x", "flow_name": flow_name,
                                                                          "work_pool_name": "no-pool"})
    unchanged(api, journal, "POST", "/deployments", 400, "malformed JSON", raw_body='{"name":')
    unchanged(api, journal, "POST", "/deployments", 413, "1 MiB",
              raw_body='{"name": "x", "flow_name": "y", "description": "' + "z" * (1024 * 1024) + '"}')
    unchanged(api, journal, "POST", "/deployments/filter", 422, "limit", body={"limit": 0})


def test_deployment_pause_resume(api: Api, journal: Callable[[], int], flow_name: str) -> None:
    dep = make_deployment(api, flow_name)
    paused = api("POST", f"/deployments/{dep['id']}/pause")
    assert paused.status == 200 and paused.body["paused"] is True
    unchanged(api, journal, "POST", f"/deployments/{dep['id']}/create_flow_run", 409, "paused")
    assert api("POST", "/deployments/filter", body={"flow_name": flow_name, "paused": True}).body[0]["id"] == dep["id"]
    resumed = api("POST", f"/deployments/{dep['id']}/resume")
    assert resumed.status == 200 and resumed.body["paused"] is False
    assert api("POST", f"/deployments/{dep['id']}/create_flow_run").status == 201
    unchanged(api, journal, "POST", "/deployments/nope/pause", 404, "nope")
    unchanged(api, journal, "POST", "/deployments/nope/resume", 404, "nope")


def test_deployment_create_flow_run(api: Api, client: Any, journal: Callable[[], int], flow_name: str) -> None:
    pool = uid("pool")
    assert api("POST", "/work_pools", body={"name": pool}).status == 201
    dep = make_deployment(api, flow_name, parameters={"n": 1, "label": "default"}, parameter_openapi_schema=SCHEMA,
                          tags=["etl"], work_pool_name=pool)
    reply = api("POST", f"/deployments/{dep['id']}/create_flow_run",
                body={"parameters": {"n": 5}, "tags": ["adhoc"], "idempotency_key": "once"})
    assert reply.status == 201
    run = reply.body
    assert run["parameters"] == {"n": 5, "label": "default"}
    assert run["deployment_id"] == dep["id"] and run["work_pool_name"] == pool
    assert run["tags"] == ["adhoc", "etl"] and run["state"]["type"] == "SCHEDULED"
    assert [r.id for r in client.read_flow_runs(deployment_id=dep["id"])] == [run["id"]]

    writes = journal()
    again = api("POST", f"/deployments/{dep['id']}/create_flow_run", body={"parameters": {"n": 6},
                                                                         "idempotency_key": "once"})
    assert again.status == 200 and again.body["id"] == run["id"] and journal() == writes

    path = f"/deployments/{dep['id']}/create_flow_run"
    bad = unchanged(api, journal, "POST", path, 422, "parameters.n", body={"parameters": {"n": "five"}})
    assert bad.body["errors"][0]["loc"] == "parameters.n"
    unchanged(api, journal, "POST", path, 422, "parameters.n", body={"parameters": {"n": -1}})
    unchanged(api, journal, "POST", path, 422, "parameters.extra", body={"parameters": {"extra": 1}})
    unchanged(api, journal, "POST", path, 422, "parameters", body={"parameters": "n=1"})
    unchanged(api, journal, "POST", path, 409, "HandlePausingFlows", body={"state": {"type": "PAUSED"}})
    unchanged(api, journal, "POST", "/deployments/nope/create_flow_run", 404, "nope")
    unchanged(api, journal, "POST", path, 400, "malformed JSON", raw_body="{")

    # A required parameter missing from both the defaults and the request is named.
    strict = make_deployment(api, flow_name, name="strict", parameter_openapi_schema=SCHEMA)
    unchanged(api, journal, "POST", f"/deployments/{strict['id']}/create_flow_run", 422, "parameters.label",
              body={"parameters": {"n": 1}})


# -- work pools and queues ------------------------------------------------------------------------
def test_work_pools(api: Api, journal: Callable[[], int]) -> None:
    name = uid("pool")
    reply = api("POST", "/work_pools", body={"name": name, "type": "process", "concurrency_limit": 4})
    assert reply.status == 201 and reply.body["type"] == "process" and reply.body["concurrency_limit"] == 4
    assert reply.body["queue_url"].endswith(f"_{name}--default") and reply.body["dlq_url"].endswith(f"_{name}--dlq")
    assert name in [p["name"] for p in api("GET", "/work_pools").body]
    assert api("GET", f"/work_pools/{name}").body == reply.body
    assert api("POST", f"/work_pools/{name}/pause").body["paused"] is True
    assert api("GET", f"/work_pools/{name}").body["paused"] is True
    assert api("POST", f"/work_pools/{name}/resume").body["paused"] is False

    unchanged(api, journal, "POST", "/work_pools", 409, "already exists", body={"name": name})
    unchanged(api, journal, "POST", "/work_pools", 422, "body.type", body={"name": uid("p"), "type": "k8s"})
    unchanged(api, journal, "POST", "/work_pools", 422, "body.name", body={"name": "has space"})
    unchanged(api, journal, "POST", "/work_pools", 422, "concurrency_limit", body={"name": uid("p"),
                                                                                 "concurrency_limit": -1})
    unchanged(api, journal, "POST", "/work_pools", 400, "malformed JSON", raw_body="{")
    for path in ("/work_pools/nope", "/work_pools/nope/queues"):
        unchanged(api, journal, "GET", path, 404, "nope")
    for action in ("pause", "resume"):
        unchanged(api, journal, "POST", f"/work_pools/nope/{action}", 404, "nope")


def test_work_queues(api: Api, journal: Callable[[], int]) -> None:
    pool = uid("pool")
    api("POST", "/work_pools", body={"name": pool})
    # A pool whose name extends this one's must not leak its queues into the listing.
    api("POST", "/work_pools", body={"name": f"{pool}x"})
    api("POST", f"/work_pools/{pool}x/queues", body={"name": "other"})
    low = api("POST", f"/work_pools/{pool}/queues", body={"name": "low", "priority": 5})
    high = api("POST", f"/work_pools/{pool}/queues", body={"name": "high", "priority": 1, "concurrency_limit": 2})
    assert low.status == high.status == 201 and high.body["work_pool_name"] == pool
    listed = api("GET", f"/work_pools/{pool}/queues")
    # Every pool has a `default` queue; each queue is an SQS queue of its own.
    assert listed.status == 200 and [q["name"] for q in listed.body] == ["default", "high", "low"]
    assert len({q["queue_url"] for q in listed.body}) == 3
    paused = api("POST", f"/work_pools/{pool}/queues/low/pause")
    assert paused.status == 200 and paused.body["paused"] is True
    status = api("GET", f"/work_pools/{pool}/status")
    assert status.status == 200 and [q["name"] for q in status.body["queues"]] == ["default", "high", "low"]
    assert all(q["messages_visible"] == 0 for q in status.body["queues"]) and status.body["dead_letter_messages"] == 0
    assert api("POST", f"/work_pools/{pool}/queues/low/resume").body["paused"] is False
    unchanged(api, journal, "POST", f"/work_pools/{pool}/queues/nope/pause", 404, "nope")
    unchanged(api, journal, "GET", "/work_pools/nope/status", 404, "nope")
    unchanged(api, journal, "POST", f"/work_pools/{pool}/queues", 409, "already exists", body={"name": "low"})
    unchanged(api, journal, "POST", "/work_pools/nope/queues", 404, "nope", body={"name": "q"})
    unchanged(api, journal, "POST", f"/work_pools/{pool}/queues", 422, "priority", body={"name": "q", "priority": 0})
    unchanged(api, journal, "POST", f"/work_pools/{pool}/queues", 422, "name", body={"name": "a/b"})


# -- concurrency limits ---------------------------------------------------------------------------
def test_concurrency_limits(api: Api, journal: Callable[[], int]) -> None:
    tag = uid("db")
    created = api("POST", "/concurrency_limits", body={"tag": tag, "limit": 2})
    assert created.status == 201 and created.body["limit"] == 2 and created.body["active_slots"] == []
    assert created.body["version"] == 1
    updated = api("POST", "/concurrency_limits", body={"tag": tag, "limit": 0})
    assert updated.status == 200 and updated.body["limit"] == 0 and updated.body["version"] == 2
    assert updated.body["id"] == created.body["id"]
    assert tag in [c["tag"] for c in api("GET", "/concurrency_limits").body]
    assert api("GET", f"/concurrency_limits/{tag}").body == updated.body
    assert api("DELETE", f"/concurrency_limits/{tag}").body == {"deleted": tag}
    unchanged(api, journal, "GET", f"/concurrency_limits/{tag}", 404, tag)
    unchanged(api, journal, "DELETE", f"/concurrency_limits/{tag}", 404, tag)
    unchanged(api, journal, "POST", "/concurrency_limits", 422, "limit", body={"tag": tag, "limit": -1})
    unchanged(api, journal, "POST", "/concurrency_limits", 422, "limit", body={"tag": tag, "limit": "two"})
    unchanged(api, journal, "POST", "/concurrency_limits", 422, "tag", body={"limit": 1})
    unchanged(api, journal, "POST", "/concurrency_limits", 400, "malformed JSON", raw_body="{")


# -- the store ------------------------------------------------------------------------------------
def test_store_objects_conditions_and_pages(client: Any) -> None:
    from stratoflow.exceptions import ObjectAlreadyExists, ObjectNotFound, ObjectVersionConflict

    store = client.store
    kind = uid("kind")
    first = store.put_object(kind, "a", {"x": 1}, must_not_exist=True)
    assert first.version == 1
    with pytest.raises(ObjectAlreadyExists):
        store.put_object(kind, "a", {"x": 2}, must_not_exist=True)
    assert store.put_object(kind, "a", {"x": 2}, expected_version=1).version == 2
    with pytest.raises(ObjectVersionConflict):
        store.put_object(kind, "a", {"x": 3}, expected_version=1)
    with pytest.raises(ObjectNotFound):
        store.put_object(kind, "zz", {"x": 3}, expected_version=1)
    assert store.get_object(kind, "a").doc == {"x": 2}
    for key in ("b", "c", "d", "p/1", "p/2", "q/1"):
        store.put_object(kind, key, {"k": key})
    keys: list[str] = []
    cursor = None
    while True:
        page = store.list_objects(kind, cursor=cursor, limit=2)
        keys += [o.key for o in page.objects]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert keys == ["a", "b", "c", "d", "p/1", "p/2", "q/1"]
    first_page = store.list_objects(kind, prefix="p/", limit=1)
    assert [o.key for o in first_page.objects] == ["p/1"]
    assert [o.key for o in store.list_objects(kind, prefix="p/", cursor=first_page.next_cursor).objects] == ["p/2"]
    with pytest.raises(ObjectVersionConflict):
        store.delete_object(kind, "a", expected_version=1)
    store.delete_object(kind, "a", expected_version=2)
    with pytest.raises(ObjectNotFound):
        store.delete_object(kind, "a")
    with pytest.raises(ObjectNotFound):
        store.get_object(kind, "a")


def test_idempotent_create_is_one_transaction(client: Any, journal: Callable[[], int], flow_name: str) -> None:
    store = client.store
    store.ensure_flow(__import__("stratoflow.models", fromlist=["Flow"]).Flow(name=flow_name))
    writes = journal()
    run = FlowRun(name="a", flow_name=flow_name)
    created, was_new = store.create_flow_run_idempotent(run, "key-1")
    assert was_new and created.version == 1 and created.idempotency_key == "key-1"
    assert journal() == writes + 1  # marker and run: one TransactWriteItems
    again, was_new = store.create_flow_run_idempotent(FlowRun(name="b", flow_name=flow_name), "key-1")
    assert not was_new and again.id == created.id
    assert journal() == writes + 1
    assert [m["flow_run_id"] for m in markers_of(client, flow_name)] == [created.id]


def test_a_failed_transaction_leaves_neither_marker_nor_run(
        api: Api, client: Any, monkeypatch: pytest.MonkeyPatch, journal: Callable[[], int], flow_name: str) -> None:
    from pynamodb.connection import Connection

    def failing(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("throttled")

    body = {"flow_name": flow_name, "idempotency_key": "tx"}
    create_run(api, flow_name)  # the flow record exists
    with monkeypatch.context() as patch:
        patch.setattr(Connection, "transact_write_items", failing)
        writes = journal()
        assert_error(api("POST", "/flow_runs", body=body), 500, "internal error")
        assert journal() == writes
    assert markers_of(client, flow_name) == []
    assert api("POST", "/flow_runs", body=body).status == 201


def test_a_legacy_marker_without_its_run_is_completed(client: Any, flow_name: str) -> None:
    """Markers written by the earlier two-write create (marker, then run) may lack their run."""
    import json

    store = client.store
    run = FlowRun(name="old", flow_name=flow_name, idempotency_key="legacy")
    doc = {"flow_name": flow_name, "idempotency_key": "legacy", "flow_run_id": run.id,
           "run": run.model_dump(mode="json")}
    store.models.ObjectItem(store.idempotency_pk(flow_name, "legacy"), "-", doc=json.dumps(doc)).save()
    found, was_new = store.create_flow_run_idempotent(FlowRun(name="new", flow_name=flow_name), "legacy")
    assert not was_new and found.id == run.id
    assert client.read_flow_run(run.id).name == "old"


def test_deployment_update_keeps_fields_it_does_not_name(api: Api, flow_name: str) -> None:
    dep = make_deployment(api, flow_name, parameters={"n": 1}, tags=["etl"])
    api("POST", f"/deployments/{dep['id']}/pause")
    updated = make_deployment(api, flow_name, description="new")
    assert updated["paused"] is True and updated["parameters"] == {"n": 1} and updated["tags"] == ["etl"]
    assert updated["description"] == "new" and updated["version"] == 3


def test_concurrent_deployment_upserts_make_one_deployment(client: Any, flow_name: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from stratoflow.control.deployments import upsert_deployment
    from stratoflow.schemas import DeploymentCreate

    def upsert(i: int) -> Any:
        return upsert_deployment(client.store, DeploymentCreate(name="race", flow_name=flow_name, description=str(i)))

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(upsert, range(6)))
    assert len({d.id for d, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert sorted(d.version for d, _ in results) == [1, 2, 3, 4, 5, 6]
    assert client.read_deployment(results[0][0].id).version == 6


def test_store_lists_flows_in_name_order_by_page(client: Any) -> None:
    from stratoflow.models import Flow

    prefix = uid("zz-pages")
    for n in (3, 1, 2, 0):
        client.store.ensure_flow(Flow(name=f"{prefix}-{n}"))
    names: list[str] = []
    cursor: str | None = None
    while True:
        flows, cursor = client.store.list_flows(cursor=cursor, limit=2)
        names += [f.name for f in flows]
        if cursor is None:
            break
    ours = [n for n in names if n.startswith(prefix)]
    assert ours == [f"{prefix}-{n}" for n in range(4)] and names == sorted(names)
