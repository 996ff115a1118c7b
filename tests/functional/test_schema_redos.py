# ruff: noqa: F811 - pytest fixtures imported from test_api_handler are redefined as parameters
"""A deployment's parameter schema cannot make run creation slow.

Runs' parameters are checked against the deployment's ``parameter_openapi_schema``. Its patterns
used to run on Python's backtracking ``re``: ``^(a+)+$`` against forty ``a`` and a ``!`` took
hours (doubling with each character). They now run on RE2 under a time budget, and a schema
whose patterns RE2 cannot run is refused when it is deployed.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
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

Api = Callable[..., Reply]


def deploy(api: Api, flow: str, schema: dict[str, Any]) -> str:
    reply = api("POST", "/deployments", body={"name": f"d-{uuid.uuid4().hex[:6]}", "flow_name": flow,
                                              "parameter_openapi_schema": schema})
    assert reply.status == 201, reply.body
    return str(reply.body["id"])


def run_with(api: Api, dep_id: str, **parameters: Any) -> Reply:
    return api("POST", f"/deployments/{dep_id}/create_flow_run", body={"parameters": parameters})


def strings(pattern: str) -> dict[str, Any]:
    return {"type": "object", "properties": {"s": {"type": "string", "pattern": pattern}}}


@pytest.mark.timeout(20)
def test_a_catastrophic_pattern_answers_at_once(api: Api, journal: Callable[[], int], flow_name: str) -> None:
    dep_id = deploy(api, flow_name, strings("^(a+)+$"))
    writes = journal()
    started = time.perf_counter()
    reply = run_with(api, dep_id, s="a" * 40 + "!")
    elapsed = time.perf_counter() - started
    assert_error(reply, 422, "parameters.s", "does not match")
    assert journal() == writes
    assert elapsed < 5, f"run creation took {elapsed:.1f} s"
    assert run_with(api, dep_id, s="a" * 40).status == 201


@pytest.mark.timeout(20)
def test_a_pattern_that_defeats_re2s_dfa_is_stopped_by_the_budget(api: Api, journal: Callable[[], int],
                                                                   flow_name: str) -> None:
    # RE2 falls back to its NFA here: cost grows with bytes x program size (seconds for 1 MB).
    dep_id = deploy(api, flow_name, {"type": "object", "properties": {
        "s": {"type": "string", "pattern": "[ab]*a[ab]{1000}c"},
        "many": {"type": "array", "items": {"type": "string", "pattern": "[ab]*a[ab]{1000}c"}}}})
    rng = random.Random(7)
    value = "".join(rng.choice("ab") for _ in range(200_000))
    writes = journal()
    assert_error(run_with(api, dep_id, s=value), 422, "parameters", "too costly")
    started = time.perf_counter()
    assert_error(run_with(api, dep_id, many=[value[i:i + 2000] for i in range(0, 200_000, 2000)]), 422,
                 "parameters", "too costly")
    assert time.perf_counter() - started < 5
    assert journal() == writes
    assert run_with(api, dep_id, s="a" + "b" * 1000 + "c").status == 201  # short values still match


def test_ordinary_patterns_keep_working(api: Api, flow_name: str) -> None:
    dep_id = deploy(api, flow_name, {
        "type": "object",
        "properties": {"name": {"type": "string", "pattern": "^[a-z]+$"},
                       "email": {"type": "string", "pattern": r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$"}},
        "patternProperties": {"^x_[a-z]+$": {"type": "integer"}},
        "additionalProperties": False})
    assert run_with(api, dep_id, name="abc", email="me@example.com", x_count=3).status == 201
    assert_error(run_with(api, dep_id, name="Abc"), 422, "parameters.name", "does not match '^[a-z]+$'")
    assert_error(run_with(api, dep_id, email="nope"), 422, "parameters.email")
    assert_error(run_with(api, dep_id, x_count="three"), 422, "parameters.x_count")
    assert_error(run_with(api, dep_id, y=1), 422, "parameters.y", "does not match any of the regexes")
    # RE2 syntax: Unicode classes, which Python's re refused.
    letters = deploy(api, flow_name, strings(r"^[\p{L} ]+$"))
    assert run_with(api, letters, s="héllo wörld").status == 201
    assert_error(run_with(api, letters, s="abc1"), 422, "parameters.s")


@pytest.mark.parametrize(("schema", "needles"), [
    (strings("^(?=.*[0-9]).+$"), ["body.parameter_openapi_schema.properties.s.pattern", "RE2", "(?="]),
    ({"type": "object", "patternProperties": {r"^(a)\1$": {}}},
     ["body.parameter_openapi_schema.patternProperties.^(a)\\1$", "RE2"]),
    ({"type": "object", "properties": {"s": {"anyOf": [{"type": "integer"}, {"pattern": r"\u00e9"}]}}},
     ["properties.s.anyOf.1.pattern", "\\x{...}"]),
    ({"type": "object", "patternProperties": {"^x": {}}, "unevaluatedProperties": False},
     ["body.parameter_openapi_schema.unevaluatedProperties", "patternProperties"]),
    # A nested $schema would switch jsonschema to its stock classes (Python's re) below it.
    ({"type": "object", "properties": {"s": {"$schema": "http://json-schema.org/draft-07/schema#",
                                             "pattern": "^(a+)+$"}}},
     ["body.parameter_openapi_schema.properties.s.$schema", "root"]),
    ({"type": "object", "properties": {"s": {"$ref": "http://169.254.169.254/latest/meta-data/"}}},
     ["body.parameter_openapi_schema.properties.s.$ref", "not fetched"]),
])
def test_patterns_re2_cannot_run_are_refused_at_deploy(api: Api, journal: Callable[[], int], flow_name: str,
                                                       schema: dict[str, Any], needles: list[str]) -> None:
    writes = journal()
    reply = api("POST", "/deployments", body={"name": "nope", "flow_name": flow_name,
                                              "parameter_openapi_schema": schema})
    assert_error(reply, 422, *needles)
    assert journal() == writes


def test_a_schema_stored_before_the_check_is_refused_per_run(api: Api, flow_name: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from stratoflow.control import deployments

    monkeypatch.setattr(deployments, "check_parameter_schema", lambda schema: None)  # as deployed before the check
    dep_id = deploy(api, flow_name, strings("^(?!admin).*$"))
    monkeypatch.undo()
    assert_error(run_with(api, dep_id, s="root"), 422, "parameter_openapi_schema", "not supported", "deploy again")


@pytest.mark.timeout(20)
def test_a_remote_ref_is_never_fetched(api: Api, flow_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """jsonschema's default registry fetched any $ref URL, with no timeout: a request the schema's
    server could hold open, sent from inside the stack (SSRF)."""
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from threading import Thread

    from stratoflow.control import deployments

    fetched: list[str] = []

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fetched.append(self.path)
            time.sleep(3)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"type": "string"}')

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Slow)
    Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/schema.json"
        monkeypatch.setattr(deployments, "check_parameter_schema", lambda schema: None)  # as deployed before the check
        dep_id = deploy(api, flow_name, {"type": "object", "properties": {"s": {"$ref": url}}})
        monkeypatch.undo()
        started = time.perf_counter()
        assert_error(run_with(api, dep_id, s=1), 422, "parameter_openapi_schema", url, "not fetched")
        assert time.perf_counter() - started < 2
        assert fetched == []
    finally:
        server.shutdown()
        server.server_close()


def test_local_and_metaschema_refs_still_resolve(api: Api, flow_name: str) -> None:
    dep_id = deploy(api, flow_name, {
        "type": "object", "$defs": {"word": {"type": "string", "pattern": "^[a-z]+$"}},
        "properties": {"w": {"$ref": "#/$defs/word"},
                       "schema": {"$ref": "https://json-schema.org/draft/2020-12/schema"}}})
    assert run_with(api, dep_id, w="abc", schema={"type": "string"}).status == 201
    assert_error(run_with(api, dep_id, w="ABC"), 422, "parameters.w", "does not match")
    assert_error(run_with(api, dep_id, schema={"type": 5}), 422, "parameters.schema")


@pytest.mark.timeout(20)
def test_older_drafts_use_re2_too(api: Api, flow_name: str) -> None:
    schema = {"$schema": "http://json-schema.org/draft-04/schema#", **strings("^(a+)+$")}
    dep_id = deploy(api, flow_name, schema)
    started = time.perf_counter()
    assert_error(run_with(api, dep_id, s="a" * 30 + "!"), 422, "parameters.s")
    assert time.perf_counter() - started < 5


@pytest.mark.timeout(20)
def test_a_pause_schema_from_flow_code_cannot_hold_the_resume() -> None:
    """The schema of ``pause_flow_run(wait_for_input=...)`` is flow code's: a resume checks the
    input against it on RE2 (before: Python's ``re``, hours for 40 characters)."""
    import json

    from stratoflow.control.run_input import check_run_input

    schema = json.dumps({"type": "object", "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}})
    with pytest.raises(ValueError, match=r"run_input\.s"):
        check_run_input(schema, {"s": "a" * 40 + "!"})
    check_run_input(schema, {"s": "aaaa"})
    remote = json.dumps({"$ref": "http://127.0.0.1:9/schema.json"})
    with pytest.raises(ValueError, match="cannot be checked safely"):
        check_run_input(remote, {"s": "x"})
