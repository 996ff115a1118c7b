"""The control-plane API's Lambda handler, called with API Gateway HTTP API (payload 2.0) events.

The tests of this module share one embedded cloud (starting one takes about a second; each test
uses its own flow names and runs instead). Error cases check that nothing was written: the
embedded journal records every successful write, so its length must not change.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest

from stratoflow.models import FlowRun, TaskRun
from stratoflow.orchestration import RunKind
from stratoflow.settings import _STACK_VARS, reset_settings
from stratoflow.states import Pending, StateType

ROOT = Path(__file__).resolve().parents[2]
HANDLER_FILE = ROOT / "functions" / "api" / "app.py"


# -- events and the handler -----------------------------------------------------------------------
def http_event(method: str, path: str, *, body: Any = None, raw_body: str | None = None,
               query: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
               base64_body: bool = False) -> dict[str, Any]:
    """An API Gateway HTTP API event (payload format 2.0) as the $default route delivers it."""
    raw_query = urlencode(query or {}, doseq=True)
    all_headers = {"accept": "application/json", "content-type": "application/json",
                   "host": "abc123.execute-api.us-east-1.amazonaws.com", "user-agent": "pytest",
                   "x-amzn-trace-id": "Root=1-00000000-000000000000000000000000"}
    all_headers.update({k.lower(): v for k, v in (headers or {}).items()})
    text = raw_body if raw_body is not None else (json.dumps(body) if body is not None else None)
    now = datetime.now(UTC)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": raw_query,
        "headers": all_headers,
        "requestContext": {
            "accountId": "123456789012", "apiId": "abc123", "domainName": all_headers["host"],
            "domainPrefix": "abc123", "requestId": uuid.uuid4().hex, "routeKey": "$default",
            "stage": "$default", "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1",
                     "userAgent": "pytest"},
        },
        "isBase64Encoded": base64_body,
    }
    if raw_query:
        # API Gateway joins repeated keys with commas.
        params: dict[str, str] = {}
        for key, value in parse_qsl(raw_query, keep_blank_values=True):
            params[key] = f"{params[key]},{value}" if key in params else value
        event["queryStringParameters"] = params
    if text is not None:
        event["body"] = base64.b64encode(text.encode()).decode() if base64_body else text
    return event


@dataclass
class FakeLambdaContext:
    function_name: str = "stratoflow-api"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:stratoflow-api"
    aws_request_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]
    raw: dict[str, Any]


def _load_handler() -> ModuleType:
    """functions/api/app.py loaded as a file, the way Lambda loads it from its CodeUri."""
    spec = importlib.util.spec_from_file_location("stratoflow_api_handler", HANDLER_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def handler() -> ModuleType:
    return _load_handler()


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api") / "stratoflow-home"


@pytest.fixture(autouse=True)
def stratoflow_home(shared_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Overrides tests/conftest.py's fixture of the same name: one home for the whole module."""
    monkeypatch.setenv("STRATOFLOW_HOME", str(shared_home))
    monkeypatch.setenv("STRATOFLOW_LOG_TO_CONSOLE", "false")
    monkeypatch.setenv("STRATOFLOW_BACKEND", "embedded")
    for var in _STACK_VARS:
        monkeypatch.delenv(var, raising=False)
    reset_settings()
    yield shared_home
    reset_settings()


@pytest.fixture
def flow_name() -> str:
    return f"etl-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def api(handler: ModuleType, client: Any) -> Callable[..., Reply]:
    """``api(method, path, body=..., query=..., ...)`` -> Reply. Requesting ``client`` builds the
    store first, so journal counts taken in a test exclude table creation."""

    def call(method: str, path: str, **kwargs: Any) -> Reply:
        raw = handler.lambda_handler(http_event(method, path, **kwargs), FakeLambdaContext())
        assert set(raw) >= {"statusCode", "body", "isBase64Encoded"}
        text = raw["body"]
        if raw["isBase64Encoded"]:
            text = base64.b64decode(text).decode()
        headers = {k.lower(): v for k, v in (raw.get("headers") or {}).items()}
        body = json.loads(text) if headers.get("content-type", "").startswith("application/json") and text else text
        return Reply(raw["statusCode"], body, headers, raw)

    return call


@pytest.fixture
def journal(stratoflow_home: Path) -> Callable[[], int]:
    """Number of writes the embedded cloud has applied so far."""

    def count() -> int:
        path = stratoflow_home / "embedded" / "journal.jsonl"
        return len(path.read_bytes().splitlines()) if path.exists() else 0

    return count


def assert_error(reply: Reply, status: int, *needles: str) -> None:
    assert reply.status == status, reply.body
    assert isinstance(reply.body, dict) and isinstance(reply.body.get("error"), str), reply.body
    assert "\n" not in reply.body["error"]
    for needle in needles:
        assert needle in reply.body["error"], (needle, reply.body)


def create_run(api: Callable[..., Reply], flow_name: str = "etl", **body: Any) -> dict[str, Any]:
    reply = api("POST", "/flow_runs", body={"flow_name": flow_name, **body})
    assert reply.status == 201, reply.body
    return dict(reply.body)


def markers_of(client: Any, flow_name: str) -> list[dict[str, Any]]:
    """The idempotency markers written for ``flow_name``."""
    model = client.store.models.ObjectItem
    docs = [json.loads(item.doc) for item in model.scan(model.pk.startswith("IDEMPOTENCY#"))]
    return [doc for doc in docs if doc["flow_name"] == flow_name]


# -- meta -----------------------------------------------------------------------------------------
def test_health(api: Callable[..., Reply]) -> None:
    reply = api("GET", "/health")
    assert reply.status == 200
    assert reply.body == {"status": "ok", "version": "0.1.0"}


def test_openapi_schema_and_swagger_ui(api: Callable[..., Reply]) -> None:
    reply = api("GET", "/openapi.json")
    assert reply.status == 200
    schema = reply.body
    assert schema["info"]["title"] == "Stratoflow API"
    paths = schema["paths"]
    for path, method in [("/health", "get"), ("/flow_runs", "post"), ("/flow_runs/{flow_run_id}", "get"),
                         ("/flow_runs/filter", "post"), ("/flow_runs/{flow_run_id}/states", "get"),
                         ("/flow_runs/{flow_run_id}/set_state", "post"), ("/flow_runs/{flow_run_id}/task_runs", "get"),
                         ("/task_runs/{task_run_id}", "get"), ("/task_runs/{task_run_id}/set_state", "post"),
                         ("/logs", "post"), ("/flow_runs/{flow_run_id}/logs", "get")]:
        assert method in paths[path], path
    create = paths["/flow_runs"]["post"]
    assert {"200", "201", "409", "413", "422"} <= set(create["responses"])
    assert "FlowRunCreate" in json.dumps(create["requestBody"])
    assert {"FlowRun", "FlowRunCreate", "SetStateIn", "SetStateOut", "LogIn", "ErrorOut"} <= set(
        schema["components"]["schemas"])
    assert "/openapi.json" not in paths and "/docs" not in paths

    docs = api("GET", "/docs")
    assert docs.status == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "swagger" in docs.body.lower() and "/flow_runs/filter" in docs.body


def test_unknown_route_is_404(api: Callable[..., Reply]) -> None:
    assert_error(api("GET", "/nope"), 404, "no route for GET /nope")
    assert_error(api("PUT", "/flow_runs/abc"), 404, "no route")


# -- create and read flow runs --------------------------------------------------------------------
def test_create_flow_run_defaults_to_scheduled_now(api: Callable[..., Reply], client: Any, flow_name: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    before = datetime.now(UTC)
    run = create_run(api, flow_name, parameters={"n": 3, "nested": {"a": [1, 2]}}, tags=["b", "a", "b"],
                     name="nightly")
    assert run["flow_name"] == flow_name and run["name"] == "nightly"
    assert run["parameters"] == {"n": 3, "nested": {"a": [1, 2]}}
    assert run["tags"] == ["a", "b"]
    assert run["version"] == 1
    assert run["state"]["type"] == "SCHEDULED" and run["state"]["name"] == "Scheduled"
    scheduled = datetime.fromisoformat(run["state"]["state_details"]["scheduled_time"])
    assert before <= scheduled <= datetime.now(UTC)
    assert run["expected_start_time"] == run["state"]["state_details"]["scheduled_time"]
    assert [s["type"] for s in run["state_history"]] == ["SCHEDULED"]

    stored = client.read_flow_run(run["id"])
    assert stored.flow_id == client.read_flow(flow_name).id
    assert stored.state.type == StateType.SCHEDULED

    reply = api("GET", f"/flow_runs/{run['id']}")
    assert reply.status == 200
    assert reply.body == run
    states = api("GET", f"/flow_runs/{run['id']}/states")
    assert states.status == 200 and [s["name"] for s in states.body] == ["Scheduled"]
    # The handler flushed the creation metric in EMF.
    assert '"FlowRunsCreated"' in capsys.readouterr().out


def test_create_with_an_initial_state_and_a_generated_name(api: Callable[..., Reply]) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    run = create_run(api, state={"type": "SCHEDULED", "name": "Later", "message": "tonight",
                                 "state_details": {"scheduled_time": later}})
    assert run["state"]["name"] == "Later" and run["state"]["message"] == "tonight"
    assert datetime.fromisoformat(run["state"]["state_details"]["scheduled_time"]) == datetime.fromisoformat(later)
    assert "-" in run["name"]  # adjective-animal

    # Starting before the scheduled time: WAIT, with the delay; nothing changes.
    reply = api("POST", f"/flow_runs/{run['id']}/set_state", body={"state": {"type": "RUNNING"}})
    assert reply.status == 200
    assert reply.body["status"] == "WAIT" and reply.body["rule"] == "WaitForScheduledTime"
    assert 3500 < reply.body["delay_seconds"] <= 3600
    assert api("GET", f"/flow_runs/{run['id']}").body["version"] == 1

    running = create_run(api, state={"type": "RUNNING"})
    assert running["state"]["type"] == "RUNNING" and running["run_count"] == 1 and running["start_time"]


def test_an_initial_state_the_rules_refuse_is_409(api: Callable[..., Reply], client: Any, flow_name: str,
                                                  journal: Callable[[], int]) -> None:
    writes = journal()
    reply = api("POST", "/flow_runs", body={"flow_name": flow_name, "state": {"type": "PAUSED"}})
    assert_error(reply, 409, "HandlePausingFlows", "only a running flow run can pause")
    assert journal() == writes
    assert client.read_flow_runs(flow_name=flow_name) == []


def test_large_parameters_are_stored_in_s3(api: Callable[..., Reply], client: Any) -> None:
    params = {"blob": "x" * 40_000}
    run = create_run(api, parameters=params)
    stored = client.read_flow_run(run["id"])
    assert stored.parameters == {} and stored.parameters_ref and stored.parameters_ref.startswith("s3://")
    assert client.read_flow_run_parameters(run["id"]) == params


def test_idempotency_key_returns_the_first_run_and_writes_nothing(
        api: Callable[..., Reply], client: Any, journal: Callable[[], int], flow_name: str) -> None:
    body = {"flow_name": flow_name, "parameters": {"n": 1}, "idempotency_key": "order-42"}
    first = api("POST", "/flow_runs", body=body)
    assert first.status == 201
    writes = journal()

    again = api("POST", "/flow_runs", body={**body, "parameters": {"n": 2}})
    assert again.status == 200
    assert again.body["id"] == first.body["id"] and again.body["parameters"] == {"n": 1}
    assert journal() == writes
    assert [r.id for r in client.read_flow_runs(flow_name=flow_name)] == [first.body["id"]]
    assert [m["flow_run_id"] for m in markers_of(client, flow_name)] == [first.body["id"]]

    # The key is per flow name: another flow, or another key, makes a new run.
    other_flow = api("POST", "/flow_runs", body={**body, "flow_name": f"{flow_name}-other"})
    other_key = api("POST", "/flow_runs", body={**body, "idempotency_key": "order-43"})
    assert other_flow.status == other_key.status == 201
    assert len({first.body["id"], other_flow.body["id"], other_key.body["id"]}) == 3


def test_concurrent_creates_with_one_key_make_one_run(client: Any, flow_name: str) -> None:
    """The conditional put of the marker decides between racing requests (called below the HTTP
    layer: a Powertools resolver serves one request at a time, as a Lambda container does)."""
    from concurrent.futures import ThreadPoolExecutor

    from stratoflow.control.flow_runs import create_flow_run
    from stratoflow.schemas import FlowRunCreate
    from stratoflow.settings import get_settings

    request = FlowRunCreate(flow_name=flow_name, idempotency_key="once")
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: create_flow_run(client.store, get_settings(), request), range(8)))
    assert len({run.id for run, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert len(client.read_flow_runs(flow_name=flow_name)) == 1
    assert len(markers_of(client, flow_name)) == 1


@pytest.mark.parametrize(("request_kwargs", "status", "needles"), [
    ({"raw_body": '{"flow_name": "etl",'}, 400, ["malformed JSON"]),
    ({"raw_body": '{"flow_name": NaN}'}, 400, ["malformed JSON", "NaN"]),
    ({"raw_body": "[" * 100_000 + "]" * 100_000}, 400, ["malformed JSON", "nested"]),
    ({"raw_body": ""}, 422, ["body"]),
    ({"body": [{"flow_name": "etl"}]}, 422, ["body", "object"]),
    ({"body": {}}, 422, ["flow_name", "required"]),
    ({"body": {"flow_name": 7}}, 422, ["flow_name", "string"]),
    ({"body": {"flow_name": ""}}, 422, ["flow_name"]),
    ({"body": {"flow_name": "etl", "parameters": [1, 2]}}, 422, ["parameters", "dictionary"]),
    ({"body": {"flow_name": "etl", "tags": "a"}}, 422, ["tags"]),
    ({"body": {"flow_name": "etl", "colour": "red"}}, 422, ["colour"]),
    ({"body": {"flow_name": "etl", "state": {"type": "DONE"}}}, 422, ["state.type"]),
    ({"body": {"flow_name": "etl", "state": {"type": "RUNNING", "state_details": {"bogus": 1}}}}, 422,
     ["state.state_details.bogus"]),
    ({"body": {"flow_name": "etl", "idempotency_key": ""}}, 422, ["idempotency_key"]),
    ({"raw_body": json.dumps({"flow_name": "etl", "parameters": {"x": "y" * (1024 * 1024)}})}, 413, ["1 MiB"]),
    ({"raw_body": "flow_name=etl", "headers": {"content-type": "application/x-www-form-urlencoded"}}, 415,
     ["application/json"]),
])
def test_create_flow_run_errors_write_nothing(api: Callable[..., Reply], journal: Callable[[], int],
                                              request_kwargs: dict[str, Any], status: int, needles: list[str]) -> None:
    writes = journal()
    reply = api("POST", "/flow_runs", **request_kwargs)
    assert_error(reply, status, *needles)
    if status == 422 and "errors" in reply.body:
        assert all({"loc", "msg", "type"} <= set(e) for e in reply.body["errors"])
    assert journal() == writes


def test_a_body_that_is_not_utf8_is_400(api: Callable[..., Reply], handler: ModuleType,
                                        journal: Callable[[], int]) -> None:
    writes = journal()
    event = http_event("POST", "/flow_runs")
    event["body"] = base64.b64encode(b'{"flow_name": "\xff"}').decode()
    event["isBase64Encoded"] = True
    raw = handler.lambda_handler(event, FakeLambdaContext())
    assert raw["statusCode"] == 400 and "UTF-8" in json.loads(raw["body"])["error"]
    assert journal() == writes


def test_a_base64_encoded_body_is_decoded(api: Callable[..., Reply]) -> None:
    reply = api("POST", "/flow_runs", body={"flow_name": "b64"}, base64_body=True)
    assert reply.status == 201 and reply.body["flow_name"] == "b64"


def test_filter_flow_runs(api: Callable[..., Reply], flow_name: str) -> None:
    a1 = create_run(api, flow_name)
    a2 = create_run(api, flow_name, state={"type": "RUNNING"})
    b1 = create_run(api, f"{flow_name}-other")

    def ids(body: dict[str, Any]) -> list[str]:
        reply = api("POST", "/flow_runs/filter", body=body)
        assert reply.status == 200, reply.body
        return [r["id"] for r in reply.body]

    assert ids({"flow_name": flow_name}) == [a2["id"], a1["id"]]  # newest first
    assert ids({"flow_name": flow_name, "limit": 1}) == [a2["id"]]
    assert ids({"flow_name": flow_name, "state_types": ["RUNNING"]}) == [a2["id"]]
    assert ids({"flow_name": flow_name, "state_types": ["SCHEDULED", "RUNNING"]}) == [a2["id"], a1["id"]]
    assert a2["id"] in ids({"state_types": ["RUNNING"]})
    assert ids({"limit": 3}) == [b1["id"], a2["id"], a1["id"]]  # recent runs of every flow
    assert ids({"deployment_id": "nope"}) == []
    no_body = api("POST", "/flow_runs/filter", headers={"content-type": ""})  # no filter at all
    assert no_body.status == 200 and b1["id"] in [r["id"] for r in no_body.body]

    assert_error(api("POST", "/flow_runs/filter", body={"limit": 0}), 422, "limit")
    assert_error(api("POST", "/flow_runs/filter", body={"limit": 1001}), 422, "limit")
    assert_error(api("POST", "/flow_runs/filter", body={"limit": "many"}), 422, "limit")
    assert_error(api("POST", "/flow_runs/filter", body={"state_types": ["DONE"]}), 422, "state_types.0")
    assert_error(api("POST", "/flow_runs/filter", raw_body="{"), 400, "malformed JSON")


def test_unknown_ids_are_404_and_write_nothing(api: Callable[..., Reply], journal: Callable[[], int]) -> None:
    writes = journal()
    state = {"state": {"type": "RUNNING"}}
    for method, path, body in [
        ("GET", "/flow_runs/missing", None),
        ("GET", "/flow_runs/missing/states", None),
        ("GET", "/flow_runs/missing/task_runs", None),
        ("GET", "/flow_runs/missing/logs", None),
        ("POST", "/flow_runs/missing/set_state", state),
        ("GET", "/task_runs/missing", None),
        ("POST", "/task_runs/missing/set_state", state),
        ("POST", "/logs", [{"flow_run_id": "missing", "message": "hi"}]),
    ]:
        assert_error(api(method, path, body=body), 404, "'missing' not found")
    assert journal() == writes


# -- state transitions ----------------------------------------------------------------------------
def test_flow_run_set_state_accept_reject_abort(api: Callable[..., Reply], client: Any,
                                                journal: Callable[[], int]) -> None:
    run = create_run(api)
    path = f"/flow_runs/{run['id']}/set_state"

    running = api("POST", path, body={"state": {"type": "RUNNING", "state_details": {"transition_id": "t-1"}}})
    assert running.status == 200
    assert running.body["status"] == "ACCEPT" and running.body["state"]["type"] == "RUNNING"
    # The scheduled time travelled onto the Running state (CopyScheduledTime).
    assert running.body["state"]["state_details"]["scheduled_time"] == run["state"]["state_details"]["scheduled_time"]

    # The same proposal again (a retried request): answered with the current state, nothing written.
    writes = journal()
    duplicate = api("POST", path, body={"state": {"type": "RUNNING", "state_details": {"transition_id": "t-1"}}})
    assert duplicate.body["status"] == "REJECT" and duplicate.body["rule"] == "PreventDuplicateTransitions"
    assert journal() == writes

    done = api("POST", path, body={"state": {"type": "COMPLETED", "message": "all good"}, "force": False})
    assert done.body["status"] == "ACCEPT" and done.body["state"]["message"] == "all good"
    before = client.read_flow_run(run["id"])
    writes = journal()

    refused = api("POST", path, body={"state": {"type": "RUNNING"}})
    assert_error(refused, 409, "HandleFlowTerminalStateTransitions", "terminal state")
    assert refused.body["status"] == "ABORT" and refused.body["rule"] == "HandleFlowTerminalStateTransitions"
    assert "terminal state" in refused.body["reason"]
    assert refused.body["state"]["type"] == "COMPLETED"
    assert journal() == writes
    after = client.read_flow_run(run["id"])
    assert after.state == before.state and after.version == before.version
    assert [s["type"] for s in api("GET", f"/flow_runs/{run['id']}/states").body] == [
        "SCHEDULED", "RUNNING", "COMPLETED"]

    # An administrative override goes through, on its own route (tests/functional/test_force_route.py).
    forced = api("POST", path + "/force", body={"state": {"type": "RUNNING"}})
    assert forced.body["status"] == "ACCEPT" and forced.body["reason"] == "forced"
    assert client.read_flow_run(run["id"]).state.type == StateType.RUNNING


def test_flow_run_set_state_reject_keeps_the_state(api: Callable[..., Reply], journal: Callable[[], int]) -> None:
    run = create_run(api, state={"type": "RUNNING"})
    path = f"/flow_runs/{run['id']}/set_state"
    assert api("POST", path, body={"state": {"type": "CANCELLING"}}).body["status"] == "ACCEPT"
    writes = journal()
    reply = api("POST", path, body={"state": {"type": "COMPLETED"}})
    assert reply.status == 200
    assert reply.body["status"] == "REJECT" and reply.body["state"]["type"] == "CANCELLING"
    assert reply.body["rule"] == "EnforceCancellingToCancelledTransition"
    assert journal() == writes


@pytest.mark.parametrize(("body", "status", "needle"), [
    ({}, 422, "state"),
    ({"state": {"type": "RUNNING"}, "force": [1]}, 422, "force"),
    ({"state": {"type": "SOMETHING"}}, 422, "state.type"),
    ({"state": {"name": "Running"}}, 422, "state.type"),
    ({"state": {"type": "RUNNING", "timestamp": "now"}}, 422, "state.timestamp"),
    ({"state": {"type": "RUNNING", "state_details": {"scheduled_time": "soon"}}}, 422,
     "state.state_details.scheduled_time"),
    ({"state": "RUNNING"}, 422, "state"),
])
def test_set_state_validation_errors_write_nothing(api: Callable[..., Reply], client: Any, journal: Callable[[], int],
                                                   body: Any, status: int, needle: str) -> None:
    run = create_run(api)
    writes = journal()
    assert_error(api("POST", f"/flow_runs/{run['id']}/set_state", body=body), status, needle)
    assert_error(api("POST", f"/flow_runs/{run['id']}/set_state", raw_body="{'state'"), 400, "malformed JSON")
    assert journal() == writes
    assert client.read_flow_run(run["id"]).version == 1


# -- task runs ------------------------------------------------------------------------------------
def test_task_run_routes_over_a_real_flow(api: Callable[..., Reply], client: Any, journal: Callable[[], int]) -> None:
    from stratoflow import flow, task

    @task
    def double(x: int) -> int:
        return 2 * x

    @flow(name="doubler")
    def doubler() -> int:
        return double(1) + double(2)

    assert doubler() == 6
    flow_run = client.read_flow_runs(flow_name="doubler")[0]

    listed = api("GET", f"/flow_runs/{flow_run.id}/task_runs")
    assert listed.status == 200
    assert [t["name"] for t in listed.body] == [t.name for t in client.read_task_runs(flow_run.id)]
    assert len(listed.body) == 2 and all(t["state"]["type"] == "COMPLETED" for t in listed.body)

    task_id = listed.body[0]["id"]
    one = api("GET", f"/task_runs/{task_id}")
    assert one.status == 200 and one.body == listed.body[0]
    assert [s["type"] for s in one.body["state_history"]] == ["PENDING", "RUNNING", "COMPLETED"]

    writes = journal()
    refused = api("POST", f"/task_runs/{task_id}/set_state", body={"state": {"type": "RUNNING"}})
    assert_error(refused, 409, "HandleTaskTerminalStateTransitions")
    assert journal() == writes
    assert client.read_task_run(task_id).state.type == StateType.COMPLETED

    empty = api("GET", f"/flow_runs/{create_run(api)['id']}/task_runs")
    assert empty.status == 200 and empty.body == []


def test_task_run_set_state_follows_its_flow_run(api: Callable[..., Reply], client: Any) -> None:
    flow_run = create_run(api, state={"type": "RUNNING"})
    stored = client.store.create_run(RunKind.TASK, TaskRun(name="t-0", task_key="t", flow_run_id=flow_run["id"],
                                                           state=Pending(), state_history=[Pending()]))
    path = f"/task_runs/{stored.id}/set_state"
    started = api("POST", path, body={"state": {"type": "RUNNING"}})
    assert started.status == 200 and started.body["status"] == "ACCEPT"
    assert client.read_task_run(stored.id).run_count == 1
    assert api("POST", path, body={"state": {"type": "COMPLETED"}}).body["status"] == "ACCEPT"

    # A task of a flow run that is not Running may not start.
    paused_flow = create_run(api)  # Scheduled
    waiting = client.store.create_run(RunKind.TASK, TaskRun(name="t-1", task_key="t", flow_run_id=paused_flow["id"],
                                                            state=Pending(), state_history=[Pending()]))
    refused = api("POST", f"/task_runs/{waiting.id}/set_state", body={"state": {"type": "RUNNING"}})
    assert_error(refused, 409, "PreventRunningTasksFromStoppedFlows", "not Running")
    assert client.read_task_run(waiting.id).state.type == StateType.PENDING


# -- logs -----------------------------------------------------------------------------------------
def test_logs_written_then_read_back_in_order_with_pagination(api: Callable[..., Reply]) -> None:
    run = create_run(api)
    other = create_run(api)
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    batch = [{"flow_run_id": run["id"], "message": f"line {i}", "level": level,
              "timestamp": (t0 + timedelta(seconds=i // 2)).isoformat()}  # pairs share a timestamp
             for i, level in enumerate([20, "DEBUG", "warning", 40, 20])]
    batch.append({"flow_run_id": other["id"], "task_run_id": "task-1", "name": "my.logger", "message": "elsewhere"})
    written = api("POST", "/logs", body=batch)
    assert written.status == 201 and written.body == {"written": 6}
    # A second request continues the run's timeline.
    later = [{"flow_run_id": run["id"], "message": f"line {i}", "timestamp": (t0 + timedelta(minutes=1, seconds=i))
              .isoformat()} for i in (5, 6)]
    assert api("POST", "/logs", body=later).body == {"written": 2}

    everything = api("GET", f"/flow_runs/{run['id']}/logs")
    assert everything.status == 200
    assert [log["message"] for log in everything.body["logs"]] == [f"line {i}" for i in range(7)]
    assert [log["level"] for log in everything.body["logs"]][:5] == [20, 10, 30, 40, 20]

    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        query: dict[str, Any] = {"limit": 3}
        if cursor:
            query["cursor"] = cursor
        page = api("GET", f"/flow_runs/{run['id']}/logs", query=query)
        assert page.status == 200, page.body
        if not page.body["logs"]:
            break
        pages.append([log["message"] for log in page.body["logs"]])
        cursor = page.body["next_cursor"]
        assert cursor
    assert pages == [["line 0", "line 1", "line 2"], ["line 3", "line 4", "line 5"], ["line 6"]]

    warnings_up = api("GET", f"/flow_runs/{run['id']}/logs", query={"min_level": 30})
    assert [log["message"] for log in warnings_up.body["logs"]] == ["line 2", "line 3"]

    elsewhere = api("GET", f"/flow_runs/{other['id']}/logs", query={"cursor": ""}).body["logs"]
    assert [(log["message"], log["task_run_id"], log["name"]) for log in elsewhere] == [
        ("elsewhere", "task-1", "my.logger")]
    of_task = api("GET", f"/flow_runs/{other['id']}/logs", query={"task_run_id": "task-1"}).body["logs"]
    assert [log["message"] for log in of_task] == ["elsewhere"]
    assert api("GET", f"/flow_runs/{other['id']}/logs", query={"task_run_id": "task-2"}).body["logs"] == []

    assert_error(api("GET", f"/flow_runs/{run['id']}/logs", query={"limit": 0}), 422, "query.limit")
    assert_error(api("GET", f"/flow_runs/{run['id']}/logs", query={"limit": "ten"}), 422, "query.limit")
    assert_error(api("GET", f"/flow_runs/{run['id']}/logs", query={"min_level": -1}), 422, "query.min_level")
    assert_error(api("GET", f"/flow_runs/{run['id']}/logs", query={"cursor": "%%%"}), 422, "query.cursor")


def _log(run_id: str, **extra: Any) -> dict[str, Any]:
    return {"flow_run_id": run_id, "message": "hello", **extra}


@pytest.mark.parametrize(("make_body", "status", "needles"), [
    (lambda rid: [_log(rid)] * 1001, 422, ["body", "1000"]),
    (lambda rid: [_log(rid), _log(rid, message="x" * (64 * 1024 + 1))], 422, ["body.1.message", "64 KiB"]),
    (lambda rid: [_log(rid, message="é" * (33 * 1024))], 422, ["body.0.message"]),  # 66 KiB in UTF-8
    (lambda rid: [_log(rid, message="y" * 60_000) for _ in range(18)], 413, ["1 MiB"]),
    (lambda rid: [_log(rid), _log("missing")], 404, ["'missing' not found"]),
    (lambda rid: [_log(rid), {"flow_run_id": rid}], 422, ["body.1.message", "required"]),
    (lambda rid: [_log(rid, level="LOUD")], 422, ["body.0.level"]),
    (lambda rid: [_log(rid, timestamp="yesterday")], 422, ["body.0.timestamp"]),
    (lambda rid: [_log(rid, seq=3)], 422, ["body.0.seq"]),
    (lambda rid: _log(rid), 422, ["body"]),
    (lambda rid: "[{]", 400, ["malformed JSON"]),
])
def test_log_errors_write_nothing(api: Callable[..., Reply], journal: Callable[[], int],
                                  make_body: Callable[[str], Any], status: int, needles: list[str]) -> None:
    run = create_run(api)
    writes = journal()
    body = make_body(run["id"])
    reply = api("POST", "/logs", raw_body=body) if isinstance(body, str) else api("POST", "/logs", body=body)
    assert_error(reply, status, *needles)
    assert journal() == writes
    assert api("GET", f"/flow_runs/{run['id']}/logs").body == {"logs": [], "next_cursor": None}


def test_a_full_batch_of_1000_logs_fits(api: Callable[..., Reply]) -> None:
    run = create_run(api)
    reply = api("POST", "/logs", body=[_log(run["id"], message=f"m{i}") for i in range(1000)])
    assert reply.status == 201 and reply.body == {"written": 1000}
    page = api("GET", f"/flow_runs/{run['id']}/logs", query={"limit": 10}).body["logs"]
    assert [log["message"] for log in page] == [f"m{i}" for i in range(10)]


# -- failures -------------------------------------------------------------------------------------
def test_unhandled_exception_is_a_generic_500_and_logged(api: Callable[..., Reply],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from stratoflow.control import flow_runs

    def boom(store: Any, flow_run_id: str) -> FlowRun:
        raise RuntimeError("secret internals")

    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    collector = Collect()
    powertools_logger = logging.getLogger("stratoflow-api")  # the Powertools Logger's logger
    powertools_logger.addHandler(collector)
    monkeypatch.setattr(flow_runs, "read_flow_run", boom)
    try:
        reply = api("GET", "/flow_runs/anything")
    finally:
        powertools_logger.removeHandler(collector)
    assert_error(reply, 500, "internal error")
    assert "secret" not in json.dumps(reply.body)
    assert reply.body["request_id"]
    assert any(r.levelno == logging.ERROR and r.exc_info and "secret internals" in str(r.exc_info[1])
               for r in records)


def test_a_response_that_breaks_its_schema_is_a_500(api: Callable[..., Reply],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from stratoflow.control import flow_runs

    monkeypatch.setattr(flow_runs, "read_flow_run", lambda store, flow_run_id: {"id": flow_run_id})
    assert_error(api("GET", "/flow_runs/x"), 500, "internal error", "schema")


# -- cold start -----------------------------------------------------------------------------------
def test_importing_the_handler_does_no_work() -> None:
    """Importing functions/api/app.py (as Lambda does) and stratoflow.api.app must not import boto3,
    botocore's client machinery, PynamoDB or moto, nor build the app. The import time is printed."""
    script = f"""
import importlib.util, json, sys, time
t0 = time.perf_counter()
spec = importlib.util.spec_from_file_location("handler", {str(HANDLER_FILE)!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
elapsed = (time.perf_counter() - t0) * 1000
import stratoflow.api.app as api_app
heavy = [m for m in ("boto3", "botocore.client", "pynamodb", "moto", "aws_xray_sdk") if m in sys.modules]
print(json.dumps({{"ms": elapsed, "heavy": heavy, "built": api_app._app is not None,
                   "handler": callable(module.lambda_handler)}}))
"""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "STRATOFLOW_BACKEND": "embedded"}
    runs = [json.loads(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                                      env=env, cwd=ROOT).stdout) for _ in range(3)]
    for result in runs:
        assert result["heavy"] == [] and result["built"] is False and result["handler"] is True
    times = ", ".join(f"{r['ms']:.0f}" for r in runs)
    print(f"\ncold import of functions/api/app.py: {min(r['ms'] for r in runs):.0f} ms (best of 3: {times})")


def test_a_state_too_large_for_its_run_record_is_refused_not_a_500(api: Callable[..., Reply]) -> None:
    """State details have no size bound of their own; the run's record (history included) must fit
    DynamoDB's 400 KB item limit. Past it: 413, nothing written (found by the fuzz test)."""
    run = create_run(api)
    state = {"type": "PENDING", "state_details": {"transition_id": "x" * 450_000}}
    reply = api("POST", f"/flow_runs/{run['id']}/set_state", body={"state": state})
    assert_error(reply, 413, "400 KB item limit", "nothing was written")
    after = api("GET", f"/flow_runs/{run['id']}").body
    assert (after["version"], after["state"]["type"]) == (run["version"], "SCHEDULED")
    assert api("POST", f"/flow_runs/{run['id']}/set_state", body={"state": {"type": "PENDING"}}).status == 200
