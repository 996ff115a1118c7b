"""Names that become URL path segments refuse Prefect's banned characters (``/ % & > <``).

A flow's name (``/flows/<name>``), a deployment's (``FLOW/NAME``) and a concurrency limit's tag
(``/concurrency_limits/<tag>``) with a ``/`` could be created, but API Gateway decodes ``%2F``
before routing, so the record could then never be read or deleted. As in Prefect, ``@flow``
refuses such a name when it decorates, and the API refuses it at create time (422 naming the
field). Task names, run names and tags in general may hold them (as in Prefect).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from stratoflow import flow, task
from stratoflow.cli import main
from stratoflow.exceptions import BANNED_CHARACTERS, InvalidNameError

PREFECT_MESSAGE = "Name 'a/b' contains an invalid character. Must not contain any of: ['/', '%', '&', '>', '<']."


# -- decorators -----------------------------------------------------------------------------------
def test_banned_characters_are_prefects() -> None:
    assert BANNED_CHARACTERS == ["/", "%", "&", ">", "<"]


def test_flow_with_a_slash_in_its_name_raises_at_decoration_with_prefects_message() -> None:
    with pytest.raises(InvalidNameError) as info:
        @flow(name="a/b")
        def f() -> None:
            pass
    assert str(info.value) == PREFECT_MESSAGE
    assert isinstance(info.value, ValueError)  # as Prefect's InvalidNameError


@pytest.mark.parametrize("char", BANNED_CHARACTERS)
def test_every_banned_character_is_refused_in_a_flow_name(char: str) -> None:
    def f() -> None:
        pass

    with pytest.raises(InvalidNameError, match="contains an invalid character"):
        flow(name=f"etl{char}daily")(f)


def test_a_lambda_flow_is_named_unknown_lambda_as_in_prefect() -> None:
    assert flow(lambda: 1).name == "unknown-lambda"


def test_ordinary_flow_names_are_accepted() -> None:
    @flow(name="etl: daily (eu-west-1) v2.1 — café")
    def f() -> int:
        return 1

    assert f.name == "etl: daily (eu-west-1) v2.1 — café"
    assert f() == 1


def test_task_names_run_names_and_tags_may_hold_a_slash(client: Any) -> None:
    """Prefect checks only flow names; a task run's name is no path segment (runs go by id)."""

    @task(name="load/s3", tags=["team/data"])
    def load() -> int:
        return 2

    @flow(name="names-demo", flow_run_name="run/1")
    def names_demo() -> int:
        return load()

    assert names_demo() == 2
    (run,) = client.read_flow_runs(flow_name="names-demo")
    assert run.name == "run/1"
    (task_run,) = client.read_task_runs(run.id)
    assert task_run.name.startswith("load/s3") and "team/data" in task_run.tags


# -- the API --------------------------------------------------------------------------------------
class _Context:
    function_name = "stratoflow-api"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:stratoflow-api"
    aws_request_id = "names-test"


_CONTEXT: Any = _Context()  # what Lambda passes, duck-typed


def api(method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One request to the API app in this process (an HTTP API payload 2.0 event)."""
    from stratoflow.api.app import get_app

    now = datetime.now(UTC)
    event: dict[str, Any] = {
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "abc.execute-api.us-east-1.amazonaws.com"},
        "requestContext": {"http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1",
                                    "userAgent": "pytest"}, "requestId": uuid.uuid4().hex, "routeKey": "$default",
                           "stage": "$default", "timeEpoch": int(now.timestamp() * 1000)},
        "isBase64Encoded": False,
    }
    if body is not None:
        event["body"] = json.dumps(body)
    raw = get_app().resolve(event, _CONTEXT)
    return raw["statusCode"], json.loads(raw["body"]) if raw.get("body") else None


in_process_api = pytest.mark.store_only("calls the API app in this process, on the test's embedded store")


@in_process_api
@pytest.mark.parametrize(("path", "body", "field"), [
    ("/flow_runs", {"flow_name": "a/b"}, "body.flow_name"),
    ("/flow_runs", {"flow_name": "50%"}, "body.flow_name"),
    ("/deployments", {"flow_name": "etl", "name": "prod/eu"}, "body.name"),
    ("/deployments", {"flow_name": "etl&co", "name": "prod"}, "body.flow_name"),
    ("/concurrency_limits", {"tag": "team/data", "limit": 1}, "body.tag"),
    ("/concurrency_limits", {"tag": "<script>", "limit": 1}, "body.tag"),
])
def test_the_api_refuses_a_banned_character_in_a_path_name_with_422(path: str, body: dict[str, Any],
                                                                     field: str) -> None:
    status, reply = api("POST", path, body)
    assert status == 422, reply
    assert reply["error"].startswith(f"{field}: ") and "contains an invalid character" in reply["error"]


@in_process_api
def test_a_refused_limit_was_never_written() -> None:
    """Before: 201, and then neither GET nor DELETE /concurrency_limits/team%2Fdata found it."""
    assert api("POST", "/concurrency_limits", {"tag": "team/data", "limit": 1})[0] == 422
    status, limits = api("GET", "/concurrency_limits")
    assert status == 200 and [lim["tag"] for lim in limits] == []


@in_process_api
def test_the_api_accepts_slashes_where_they_are_no_path_segment() -> None:
    status, run = api("POST", "/flow_runs", {"flow_name": "etl", "name": "run/1", "tags": ["team/data"],
                                             "idempotency_key": "scheduled/2026-01-01"})
    assert status == 201, run
    assert run["name"] == "run/1" and run["tags"] == ["team/data"]
    status, answer = api("POST", "/concurrency_limits/increment", {"tags": ["team/data"], "holder": "t/1"})
    assert status == 200 and answer["acquired"] is True  # no limit on that tag: nothing to take


@in_process_api
def test_names_the_api_accepts_read_back_by_their_path() -> None:
    assert api("POST", "/concurrency_limits", {"tag": "team:data v2", "limit": 3})[0] == 201
    status, limit = api("GET", "/concurrency_limits/team:data v2")
    assert status == 200 and limit["limit"] == 3
    assert api("DELETE", "/concurrency_limits/team:data v2")[0] == 200


# -- the client and the CLI -----------------------------------------------------------------------
def test_the_client_refuses_before_sending(client: Any) -> None:
    with pytest.raises(ValidationError, match="contains an invalid character"):
        client.create_concurrency_limit("team/data", 2)
    with pytest.raises(ValidationError, match="contains an invalid character"):
        client.create_deployment("etl", "prod/eu")
    assert client.read_concurrency_limits() == []


def test_the_cli_says_which_argument_is_wrong(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["concurrency-limit", "create", "team/data", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: tag: ") and "contains an invalid character" in err
    assert len(err.strip().splitlines()) == 1


@in_process_api
def test_the_engine_route_that_ensures_a_flow_refuses_banned_characters_too() -> None:
    status, reply = api("POST", "/flows/ensure", {"name": "etl/daily"})
    assert status == 422 and reply["error"].startswith("body.name: "), reply
    status, reply = api("GET", "/flows/etl%2Fdaily")
    assert status == 404, reply  # nothing was created
