# ruff: noqa: F811 - pytest fixtures imported from test_api_handler are redefined as parameters
"""The API takes what its OpenAPI document says, and only that: regressions of what schemathesis
found (tests/integration/test_schemathesis.py) where the two disagreed, or where a request the
document allows made a 500.

Every refusal here also checks that nothing was written (the embedded journal's length).
"""

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
    handler,
    journal,
    shared_home,
    stratoflow_home,
)

from stratoflow.models import FlowRun, TaskRun
from stratoflow.states import Pending

Api = Callable[..., Reply]


def _name() -> str:
    return f"agree-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def document(handler: Any) -> dict[str, Any]:
    import json

    from test_api_handler import FakeLambdaContext, http_event

    raw = handler.lambda_handler(http_event("GET", "/openapi.json"), FakeLambdaContext())
    return dict(json.loads(raw["body"]))


# -- a run the engine creates: its keys were unbounded, and DynamoDB refused them with a 500 ------
@pytest.mark.parametrize(("kind", "change", "field"), [
    ("flow", {"flow_name": ""}, "body.flow_name"),        # an index's key cannot be empty
    ("flow", {"id": ""}, "body.id"),                      # nor the table's
    ("flow", {"flow_name": "é" * 600}, "body.flow_name"),  # nor over 2 KiB of UTF-8
    ("flow", {"deployment_id": "d" * 3000}, "body.deployment_id"),
    ("task", {"flow_run_id": "r" * 3000}, "body.flow_run_id"),
    ("task", {"flow_run_id": ""}, "body.flow_run_id"),    # was read as a flow run's key
])
def test_a_run_with_a_key_the_store_cannot_index_is_422(api: Api, journal: Callable[[], int], kind: str,
                                                        change: dict[str, Any], field: str) -> None:
    pending = Pending()
    run = (FlowRun(name="r", flow_name=_name(), state=pending, state_history=[pending]) if kind == "flow"
           else TaskRun(name="t", task_key="t", state=pending, state_history=[pending]))
    body = {**run.model_dump(mode="json"), **change}
    writes = journal()
    assert_error(api("POST", f"/runs/{kind}/create", body=body), 422, field)
    assert journal() == writes


def test_a_run_with_keys_in_bounds_is_created(api: Api) -> None:
    pending = Pending()
    run = FlowRun(name="r", flow_name="é" * 256, state=pending, state_history=[pending])
    reply = api("POST", "/runs/flow/create", body=run.model_dump(mode="json"))
    assert reply.status == 201, reply.body


def test_the_document_bounds_a_runs_keys(document: dict[str, Any]) -> None:
    body = document["paths"]["/runs/{kind}/create"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    keys = body["allOf"][0]["allOf"][1]["properties"]
    assert keys["id"]["minLength"] == 1 and keys["id"]["maxLength"] == 256
    assert body["allOf"][1] == {"required": ["state_history"], "properties": {"state_history": {"minItems": 1}}}


# -- JSON types: the document's, not pydantic's conversions ---------------------------------------
@pytest.mark.parametrize(("method", "path", "body", "field"), [
    ("POST", "/concurrency_limits", {"tag": "t", "limit": "5"}, "body.limit"),
    ("POST", "/concurrency_limits", {"tag": "t", "limit": True}, "body.limit"),
    ("POST", "/work_pools", {"name": "p", "concurrency_limit": "2"}, "body.concurrency_limit"),
    ("POST", "/deployments/filter", {"paused": "yes"}, "body.paused"),
    ("POST", "/flow_runs/filter", {"created_after": 0}, "body.created_after"),  # not a Unix time
    ("POST", "/flow_runs", {"flow_name": "f", "state": {"type": "PAUSED",
                                                        "state_details": {"pause_reschedule": 1}}},
     "body.state.state_details.pause_reschedule"),  # a record nested in the body too
    ("POST", "/deployments", {"name": "d", "flow_name": "f",
                              "schedules": [{"schedule": {"type": "interval", "interval": "60"}}]},
     "body.schedules.0.schedule.interval"),
    ("POST", "/logs", [{"flow_run_id": "r", "message": "m", "level": "20"}], "body.0.level"),
])
def test_a_value_of_another_json_type_is_422(api: Api, journal: Callable[[], int], method: str, path: str,
                                             body: Any, field: str) -> None:
    writes = journal()
    assert_error(api(method, path, body=body), 422, field)
    assert journal() == writes


def test_a_date_time_in_a_schedule_is_read_from_its_string(api: Api) -> None:
    """The schedules' own validator hands its handler the parsed value: a strict check of that
    would refuse every date-time string (schemathesis found the 422)."""
    schedule = {"type": "interval", "interval": 3600, "anchor_date": "2020-12-02T19:43:39-07:00"}
    reply = api("POST", "/deployments", body={"name": _name(), "flow_name": _name(), "schedules": [
        {"schedule": schedule}]})
    assert reply.status == 201, reply.body
    assert reply.body["schedules"][0]["schedule"]["anchor_date"].startswith("2020-12-02T19:43:39")


def test_a_whole_float_is_an_integer_as_in_json_schema(api: Api) -> None:
    reply = api("POST", "/concurrency_limits", body={"tag": _name(), "limit": 3.0})
    assert reply.status == 201 and reply.body["limit"] == 3, reply.body
    pending = Pending()
    run = FlowRun(name="r", flow_name=_name(), state=pending, state_history=[pending])
    reply = api("POST", "/runs/flow/create", body={**run.model_dump(mode="json"), "run_count": 0.0})
    assert reply.status == 201, reply.body


def test_a_run_of_another_json_type_is_422_too(api: Api, journal: Callable[[], int]) -> None:
    pending = Pending()
    run = FlowRun(name="r", flow_name=_name(), state=pending, state_history=[pending])
    writes = journal()
    assert_error(api("POST", "/runs/flow/create", body={**run.model_dump(mode="json"), "run_count": "0"}),
                 422, "body.run_count")
    assert journal() == writes


# -- what the document now states -----------------------------------------------------------------
def test_a_level_is_a_number_or_a_name_in_any_case(api: Api, journal: Callable[[], int]) -> None:
    run = create_run(api, _name())
    reply = api("POST", "/logs", body=[{"flow_run_id": run["id"], "message": "m", "level": "warning"}])
    assert reply.status == 201, reply.body
    writes = journal()
    assert_error(api("POST", "/logs", body=[{"flow_run_id": run["id"], "message": "m", "level": " INFO"}]),
                 422, "body.0.level")
    assert journal() == writes


def test_a_log_timestamp_is_dated_as_written(api: Api) -> None:
    """The range is the date as written (what the schema's pattern says); stored in UTC."""
    run = create_run(api, _name())
    line = {"flow_run_id": run["id"], "message": "m", "timestamp": "2000-01-01T00:30:00+01:00"}
    assert api("POST", "/logs", body=[line]).status == 201
    (log,) = api("GET", f"/flow_runs/{run['id']}/logs").body["logs"]
    assert log["timestamp"].startswith("1999-12-31T23:30:00")


def test_the_force_route_states_that_force_is_true(api: Api, document: dict[str, Any],
                                                   journal: Callable[[], int]) -> None:
    force = document["components"]["schemas"]["SetStateForceIn"]["properties"]["force"]
    assert force["const"] is True and force["default"] is True
    run = create_run(api, _name())
    writes = journal()
    assert_error(api("POST", f"/flow_runs/{run['id']}/set_state/force",
                     body={"state": {"type": "RUNNING"}, "force": False}), 422, "body.force")
    assert journal() == writes


def test_every_status_a_route_answers_is_declared(document: dict[str, Any]) -> None:
    """A body can be malformed (400), too large (413) or of another type (415) on every route that
    takes one; a path parameter that does not route is a 404 on every route that has one."""
    for path, item in document["paths"].items():
        for method, operation in item.items():
            declared = set(operation["responses"])
            assert "422" in declared, (method, path)
            if "requestBody" in operation:
                assert {"400", "413", "415"} <= declared, (method, path)
            if "{" in path:
                assert "404" in declared, (method, path)


def test_a_schedules_type_is_required_as_its_discriminator(api: Api, document: dict[str, Any]) -> None:
    """Validation needs the tag; pydantic's schema left it optional (it has a default)."""
    schemas = document["components"]["schemas"]
    for name in ("CronSchedule", "IntervalSchedule", "RRuleSchedule"):
        assert "type" in schemas[name]["required"], name
    reply = api("POST", "/deployments", body={"name": _name(), "flow_name": _name(),
                                               "schedules": [{"schedule": {"cron": "0 * * * *"}}]})
    assert_error(reply, 422, "body.schedules.0.schedule")


def test_the_next_page_header_is_declared(document: dict[str, Any]) -> None:
    ok = document["paths"]["/flow_runs/filter"]["post"]["responses"]["200"]
    assert ok["headers"]["x-next-cursor"]["schema"]["type"] == "string"


def test_the_rules_across_fields_are_in_the_document(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert {"required": ["timestamp"], "properties": {"timestamp": {"type": "string"}}} in schemas["LogIn"]["anyOf"]
    together = schemas["DeploymentCreate"]["allOf"]
    assert {"required": ["package_uri", "package_sha256"], "properties": {
        "package_uri": {"type": "string"}, "package_sha256": {"type": "string"}}} in together[0]["anyOf"]
    assert {"required": ["work_pool_name"], "properties": {"work_pool_name": {"type": "string"}}} \
        in together[1]["anyOf"]
