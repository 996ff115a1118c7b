"""``stratoflow dev`` over real HTTP, with a test function: events as API Gateway builds them,
responses by the payload 2.0 rules, errors, timeouts, provisioning, a clean stop."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

FUNCTION_TIMEOUT = 2  # seconds: short, so the timeout test stays quick

ECHO_HANDLER = '''
"""A test function: answers with the event it got, or as the request tells it to."""
import json
import os
import time

import boto3

CURRENT = None


def handler(event, context):
    global CURRENT
    path = event["rawPath"]
    if path == "/boom":
        raise ValueError("boom from the handler")
    if path == "/respond":  # the request's body is the value to return
        return json.loads(event["body"])
    if path == "/context":
        return {
            "function_name": context.function_name,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "invoked_function_arn": context.invoked_function_arn,
            "aws_request_id": context.aws_request_id,
            "remaining_ms": context.get_remaining_time_in_millis(),
            "env": {k: v for k, v in os.environ.items() if k.startswith(("STRATOFLOW_", "AWS_"))},
        }
    if path == "/tables":  # a plain boto3 client, configured only by the environment
        return {"tables": boto3.client("dynamodb").list_tables()["TableNames"]}
    if path == "/flow-runs":  # the SDK's store, configured only by the environment
        from stratoflow import get_client
        return {"names": sorted(r.flow_name for r in get_client().read_flow_runs())}
    if path == "/sleep":
        time.sleep(float(event["queryStringParameters"]["seconds"]))
        return "slept"
    if path == "/one-at-a-time":  # module state must not be shared by concurrent invocations
        CURRENT = event
        time.sleep(0.3)
        return {"n": CURRENT["queryStringParameters"]["n"]}
    return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": json.dumps(event)}
'''


@pytest.fixture(scope="module")
def echo_stack(dev_stack_launcher: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    handler = tmp_path_factory.mktemp("echo-function") / "echo_app.py"
    handler.write_text(ECHO_HANDLER)
    stack = dev_stack_launcher("--port", "0", "--handler", f"{handler}:handler", "--timeout", str(FUNCTION_TIMEOUT))
    yield stack
    assert stack.stop() == 0, stack.output.text()


def echo(stack: Any, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    response = stack.request(method, path, **kwargs)
    assert response.status == 200, response.body
    event: dict[str, Any] = response.json()
    return event


# -- the event ------------------------------------------------------------------------------------
def test_get_becomes_an_http_api_v2_event(echo_stack: Any) -> None:
    before = int(time.time() * 1000)
    event = echo(echo_stack, "GET", "/runs/some%20id/logs?b=2&a=1&a=3&empty=&sp%20ace=x%2By", headers=[
        ("X-Custom-Header", "Value"), ("X-Multi", "one"), ("X-Multi", "two"),
        ("Cookie", "session=abc; theme=dark"), ("User-Agent", "integration-tests/1.0"),
    ])
    assert event["version"] == "2.0"
    assert event["routeKey"] == "$default"
    assert event["rawPath"] == "/runs/some id/logs"  # HTTP APIs decode the path
    assert event["rawQueryString"] == "b=2&a=1&a=3&empty=&sp%20ace=x%2By"
    assert event["queryStringParameters"] == {"b": "2", "a": "1,3", "empty": "", "sp ace": "x+y"}
    assert event["cookies"] == ["session=abc", "theme=dark"]
    headers = event["headers"]
    assert all(name == name.lower() for name in headers)
    assert headers["x-custom-header"] == "Value"
    assert headers["x-multi"] == "one,two"
    assert "cookie" not in headers  # moved to `cookies`
    assert headers["user-agent"] == "integration-tests/1.0"
    assert headers["host"] == echo_stack.api_url.removeprefix("http://")
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-amzn-trace-id"].startswith("Root=1-")
    assert "pathParameters" not in event  # $default has no path parameters
    assert "body" not in event and event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert context["http"] == {"method": "GET", "path": "/runs/some id/logs", "protocol": "HTTP/1.1",
                               "sourceIp": "127.0.0.1", "userAgent": "integration-tests/1.0"}
    assert context["routeKey"] == "$default" and context["stage"] == "$default"
    assert context["accountId"] == "123456789012"
    assert context["apiId"] and context["requestId"]
    assert context["domainName"] == headers["host"]
    assert re.fullmatch(r"\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000", context["time"])
    assert before - 1000 <= context["timeEpoch"] <= int(time.time() * 1000) + 1000


@pytest.mark.parametrize(("content_type", "as_text"), [
    ("application/json", True),
    ("application/json; charset=utf-8", True),
    ("text/plain", True),
    ("application/xml", True),
    ("application/octet-stream", False),
    ("application/x-www-form-urlencoded", False),  # API Gateway base64-encodes form posts too
    (None, False),
])
def test_body_is_text_or_base64_by_content_type(echo_stack: Any, content_type: str | None, as_text: bool) -> None:
    body = b'{"name": "caf\xc3\xa9"}'
    headers = [("Content-Type", content_type)] if content_type else []
    event = echo(echo_stack, "POST", "/flow_runs", headers=headers, body=body)
    assert event["requestContext"]["http"]["method"] == "POST"
    assert event["headers"]["content-length"] == str(len(body))
    assert event["isBase64Encoded"] is (not as_text)
    assert event["body"] == (body.decode() if as_text else base64.b64encode(body).decode())


def test_binary_body_round_trips_through_base64(echo_stack: Any) -> None:
    data = bytes(range(256)) * 4
    event = echo(echo_stack, "PUT", "/blob", headers=[("Content-Type", "image/png")], body=data)
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == data


def test_connection_is_kept_alive_between_requests(echo_stack: Any) -> None:
    conn = echo_stack.connection()
    try:
        first = echo_stack.request("GET", "/a", connection=conn)
        second = echo_stack.request("DELETE", "/b", connection=conn)
    finally:
        conn.close()
    assert first.json()["rawPath"] == "/a"
    assert second.json()["requestContext"]["http"]["method"] == "DELETE"


# -- the response ---------------------------------------------------------------------------------
def respond(stack: Any, value: Any, method: str = "POST") -> Any:
    return stack.request(method, "/respond", headers=[("Content-Type", "application/json")],
                         body=json.dumps(value).encode())


def test_full_response_status_headers_cookies_body(echo_stack: Any) -> None:
    response = respond(echo_stack, {
        "statusCode": 201,
        "headers": {"Content-Type": "application/json", "X-Run-Id": "r-1", "Cache-Control": "no-store"},
        "cookies": ["session=abc; Path=/; HttpOnly", "theme=dark"],
        "body": json.dumps({"id": "r-1"}),
        "isBase64Encoded": False,
    })
    assert response.status == 201
    assert response.header("content-type") == "application/json"
    assert response.header("x-run-id") == "r-1"
    assert response.header("cache-control") == "no-store"
    assert response.all("set-cookie") == ["session=abc; Path=/; HttpOnly", "theme=dark"]
    assert response.header("content-length") == str(len(response.body))
    assert response.header("apigw-requestid")
    assert response.json() == {"id": "r-1"}


@pytest.mark.parametrize("status", [200, 204, 302, 404, 409, 422, 503])
def test_status_codes_pass_through(echo_stack: Any, status: int) -> None:
    body = "" if status == 204 else f"status {status}"
    response = respond(echo_stack, {"statusCode": status, "headers": {"Location": "/elsewhere"}, "body": body})
    assert response.status == status
    assert response.body == body.encode()
    assert response.header("location") == "/elsewhere"


def test_base64_response_body_is_sent_as_bytes(echo_stack: Any) -> None:
    data = bytes(range(256))
    response = respond(echo_stack, {"statusCode": 200, "headers": {"content-type": "application/octet-stream"},
                                    "body": base64.b64encode(data).decode(), "isBase64Encoded": True})
    assert response.status == 200
    assert response.header("content-type") == "application/octet-stream"
    assert response.body == data


def test_response_without_content_type_is_text_plain(echo_stack: Any) -> None:
    response = respond(echo_stack, {"statusCode": 200, "body": "hello"})
    assert response.header("content-type") == "text/plain; charset=utf-8"
    assert response.body == b"hello"


@pytest.mark.parametrize(("value", "body"), [
    ("hello from lambda", b"hello from lambda"),  # a string is the body as it is
    ({"message": "hi", "n": 1}, b'{"message": "hi", "n": 1}'),  # a JSON object without statusCode
    ([1, 2, 3], b"[1, 2, 3]"),
])
def test_simplified_responses_are_200_json(echo_stack: Any, value: Any, body: bytes) -> None:
    response = respond(echo_stack, value)
    assert response.status == 200
    assert response.header("content-type") == "application/json"
    assert response.body == body


def test_head_request_gets_headers_only(echo_stack: Any) -> None:
    response = echo_stack.request("HEAD", "/anything")
    assert response.status == 200
    assert response.body == b""
    assert int(response.header("content-length") or 0) > 0


# -- errors ---------------------------------------------------------------------------------------
def test_handler_exception_is_a_500_with_a_clear_body(echo_stack: Any) -> None:
    response = echo_stack.request("GET", "/boom")
    assert response.status == 500
    assert response.header("content-type") == "application/json"
    error = response.json()
    assert error["message"] == "Internal Server Error"
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "boom from the handler"
    assert "echo_app.py" in error["stackTrace"][0]  # the trace starts in the handler
    # The traceback is in the stack's log, as it would be in CloudWatch.
    assert eventually(lambda: "[ERROR] ValueError: boom from the handler" in echo_stack.output.text())
    # The stack keeps serving after a failure.
    assert echo_stack.request("GET", "/after-boom").status == 200


@pytest.mark.parametrize(("value", "message"), [
    ({"statusCode": 200, "body": {"not": "a string"}}, "body must be a string"),
    ({"statusCode": "abc"}, "statusCode must be an HTTP status code"),
    ({"statusCode": 200, "body": "%%%", "isBase64Encoded": True}, "not base64"),
])
def test_invalid_response_is_a_500_saying_why(echo_stack: Any, value: Any, message: str) -> None:
    response = respond(echo_stack, value)
    assert response.status == 500
    assert response.json()["message"] == "Internal Server Error"
    assert message in response.json()["errorMessage"]


def test_function_timeout_is_lambdas_error(echo_stack: Any) -> None:
    started = time.monotonic()
    response = echo_stack.request("GET", f"/sleep?seconds={FUNCTION_TIMEOUT + 1.5}")
    elapsed = time.monotonic() - started
    assert response.status == 500
    assert response.json()["errorType"] == "Sandbox.Timedout"
    assert response.json()["errorMessage"] == f"Task timed out after {FUNCTION_TIMEOUT:.2f} seconds"
    assert FUNCTION_TIMEOUT - 0.1 <= elapsed < FUNCTION_TIMEOUT + 1.0
    # A fresh environment takes the next request.
    assert echo_stack.request("GET", "/after-timeout").status == 200


def test_oversized_request_is_refused_before_the_function(echo_stack: Any) -> None:
    conn = echo_stack.connection()
    try:
        conn.putrequest("POST", "/too-big")
        conn.putheader("Content-Length", str(10 * 1024 * 1024 + 1))
        conn.endheaders()  # no body: the stack answers from the header alone
        response = conn.getresponse()
        assert response.status == 413
        assert json.loads(response.read()) == {"message": "Request Entity Too Large"}
    finally:
        conn.close()


# -- the function's runtime -----------------------------------------------------------------------
def test_context_and_environment_of_the_function(echo_stack: Any) -> None:
    info = echo(echo_stack, "GET", "/context")
    assert info["function_name"] == "stratoflow-dev-api"
    assert info["memory_limit_in_mb"] == "512"  # a string, as the Python runtime has it
    assert info["invoked_function_arn"] == "arn:aws:lambda:us-east-1:123456789012:function:stratoflow-dev-api"
    uuid.UUID(info["aws_request_id"])
    assert 0 < info["remaining_ms"] <= FUNCTION_TIMEOUT * 1000
    env = info["env"]
    assert env["STRATOFLOW_BACKEND"] == "aws"
    assert env["STRATOFLOW_AWS_ENDPOINT_URL"] == echo_stack.moto_url
    assert env["AWS_ENDPOINT_URL"] == echo_stack.moto_url
    assert env["STRATOFLOW_TABLE_PREFIX"] == echo_stack.env["STRATOFLOW_TABLE_PREFIX"]
    assert env["STRATOFLOW_BUCKET"] == echo_stack.env["STRATOFLOW_BUCKET"]
    assert env["AWS_ACCESS_KEY_ID"] == env["AWS_SECRET_ACCESS_KEY"] == "stratoflow-local"
    assert env["AWS_REGION"] == "us-east-1"
    assert "STRATOFLOW_API_URL" not in env  # the function is the API: it talks to the store


def test_concurrent_requests_run_one_at_a_time_each_with_its_own_event(echo_stack: Any) -> None:
    answers: dict[int, Any] = {}

    def call(n: int) -> None:
        answers[n] = echo_stack.request("GET", f"/one-at-a-time?n={n}").json()

    started = time.monotonic()
    threads = [threading.Thread(target=call, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert answers == {n: {"n": str(n)} for n in range(3)}
    assert time.monotonic() - started >= 0.85  # 3 x 0.3 s: never two invocations at once


# -- provisioning ---------------------------------------------------------------------------------
def test_moto_endpoint_has_the_stacks_tables_and_bucket(echo_stack: Any) -> None:
    import boto3

    session = boto3.session.Session(aws_access_key_id="stratoflow-local", aws_secret_access_key="stratoflow-local",
                                    region_name="us-east-1")
    prefix = echo_stack.env["STRATOFLOW_TABLE_PREFIX"]
    tables = session.client("dynamodb", endpoint_url=echo_stack.moto_url).list_tables()["TableNames"]
    assert {f"{prefix}-{kind}" for kind in ("flow-runs", "task-runs", "logs", "objects")} <= set(tables)
    s3 = session.client("s3", endpoint_url=echo_stack.moto_url)
    s3.head_bucket(Bucket=echo_stack.env["STRATOFLOW_BUCKET"])
    # The function reaches the same moto with nothing but its environment.
    assert set(echo(echo_stack, "GET", "/tables")["tables"]) == set(tables)


def test_moto_endpoint_keeps_connections_alive(echo_stack: Any) -> None:
    """One connection for many calls (werkzeug's own handler closed it after every answer), with
    bodies of every kind intact: errors, HEAD lengths, chunked uploads, odd keys."""
    import http.client

    import boto3

    session = boto3.session.Session(aws_access_key_id="stratoflow-local", aws_secret_access_key="stratoflow-local",
                                    region_name="us-east-1")
    ddb = session.client("dynamodb", endpoint_url=echo_stack.moto_url)
    s3 = session.client("s3", endpoint_url=echo_stack.moto_url)
    bucket = echo_stack.env["STRATOFLOW_BUCKET"]
    ddb.list_tables()
    opened = []
    original = http.client.HTTPConnection.connect

    def connect(self: Any) -> None:
        opened.append(self.port)
        original(self)

    http.client.HTTPConnection.connect = connect  # type: ignore[method-assign]
    try:
        for _ in range(20):
            assert ddb.list_tables()["TableNames"]
        with pytest.raises(ddb.exceptions.ResourceNotFoundException):
            ddb.get_item(TableName="no-such-table", Key={"id": {"S": "x"}})
        assert ddb.list_tables()["TableNames"]
        assert opened == [], opened  # the first call's connection served them all

        key = "dir/odd key+é%20.txt"
        s3.put_object(Bucket=bucket, Key=key, Body=b"a" * 100_000)
        assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == 100_000  # no body, its length kept
        with pytest.raises(s3.exceptions.ClientError):
            s3.head_object(Bucket=bucket, Key="no-such-key")

        def chunks() -> Any:  # no length known: sent with Transfer-Encoding: chunked
            yield b"b" * 70_000
            yield b"c" * 30_000

        request = http.client.HTTPConnection(echo_stack.moto_url.split("//")[1])
        request.request("PUT", f"/{bucket}/chunked", body=chunks(), encode_chunked=True)
        reply = request.getresponse()
        assert reply.status == 200, reply.read()
        reply.read()
        request.request("PUT", f"/{bucket}/plain", body=b"xyz")  # the same connection: the next request intact
        reply = request.getresponse()
        assert reply.status == 200, reply.read()
        reply.read()
        request.close()
        assert s3.get_object(Bucket=bucket, Key="chunked")["Body"].read() == b"b" * 70_000 + b"c" * 30_000
        assert s3.get_object(Bucket=bucket, Key="plain")["Body"].read() == b"xyz"
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"a" * 100_000
    finally:
        http.client.HTTPConnection.connect = original  # type: ignore[method-assign]


def test_exported_environment_points_the_sdk_at_the_stack(echo_stack: Any, tmp_path: Path) -> None:
    """A flow run from another process with the printed exports lands where the function reads."""
    env = {k: v for k, v in echo_stack.env.items() if k != "STRATOFLOW_API_URL"}  # the store, directly
    script = textwrap.dedent("""
        from stratoflow import flow

        @flow(name="from-another-shell")
        def hello() -> int:
            return 1

        assert hello() == 1
    """)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("STRATOFLOW_", "AWS_"))}
    result = subprocess.run([sys.executable, "-c", script], env={**clean, **env, "STRATOFLOW_HOME": str(tmp_path)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "from-another-shell" in echo(echo_stack, "GET", "/flow-runs")["names"]


# -- starting and stopping ------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_the_stack_cleanly(dev_stack_launcher: Callable[..., Any], tmp_path: Path, sig: int) -> None:
    handler = tmp_path / "echo_app.py"
    handler.write_text(ECHO_HANDLER)
    stack = dev_stack_launcher("--port", "0", "--handler", str(handler) + ":handler")
    conn = stack.connection()  # an idle keep-alive connection must not hold the stop up
    stack.request("GET", "/warm", connection=conn)
    started = time.monotonic()
    code = stack.stop(sig)
    conn.close()
    assert code == 0, stack.output.text()
    assert time.monotonic() - started < 5
    assert stack.output.lines[-1] == "stopped"
    assert "left behind" not in stack.output.text()  # every thread was joined


def run_dev(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("STRATOFLOW_", "AWS_"))}
    return subprocess.run([sys.executable, "-m", "stratoflow.cli", "dev", *args], cwd=cwd,
                          env={**clean, "STRATOFLOW_HOME": str(cwd)}, capture_output=True, text=True, timeout=timeout)


def test_missing_handler_file_is_one_clear_line(tmp_path: Path) -> None:
    result = run_dev("--port", "0", "--handler", f"{tmp_path}/nope/app.py:lambda_handler", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: no handler file at {tmp_path}/nope/app.py"
    assert "ready" not in result.stdout


def test_missing_default_handler_is_one_clear_line(tmp_path: Path) -> None:
    """Without functions/api/app.py (here: a package location without one) and no --handler."""
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        import stratoflow.local.devstack as devstack
        devstack.REPO_ROOT = Path({str(tmp_path)!r})
        from stratoflow.cli import main
        sys.exit(main(["dev", "--port", "0"]))
    """)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("STRATOFLOW_", "AWS_"))}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=clean, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    expected = f"error: no handler file at {tmp_path}/functions/api/app.py (the default API handler); " \
               "pass --handler PATH:ATTR"
    assert result.stderr.strip() == expected


def test_busy_port_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        (tmp_path / "app.py").write_text("def lambda_handler(event, context):\n    return 'ok'\n")
        result = run_dev("--port", str(port), "--handler", str(tmp_path / "app.py"), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"error: cannot serve the API on 127.0.0.1:{port}: Address already in use "
                                     "(choose another port; 0 picks a free one)")


def test_handler_that_fails_to_import_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("import json\n\nraise RuntimeError('no config')\n")
    result = run_dev("--port", "0", "--handler", f"{tmp_path}/broken.py:handler", cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: importing the handler module {tmp_path}/broken.py failed: "
                               "RuntimeError: no config (at ")


def test_stop_joins_every_thread_and_restores_the_environment(tmp_path: Path) -> None:
    """DevStack used in-process (in a process of its own): nothing is left running after stop()."""
    handler = tmp_path / "echo_app.py"
    handler.write_text(ECHO_HANDLER)
    script = textwrap.dedent(f"""
        import http.client, json, os, threading
        from urllib.parse import urlsplit
        from stratoflow.local.devstack import DevStack

        with DevStack(port=0, handler={str(handler) + ":handler"!r}, log_stream=None) as stack:
            assert os.environ["STRATOFLOW_AWS_ENDPOINT_URL"] == stack.urls.moto
            url = urlsplit(stack.urls.api)
            idle = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
            idle.request("GET", "/tables")  # the function calls moto over HTTP too
            tables = json.loads(idle.getresponse().read())["tables"]
            env = stack.env()
        print(json.dumps({{
            "threads": sorted(t.name for t in threading.enumerate() if t is not threading.main_thread()),
            "leaked_env": sorted(k for k in env if k in os.environ),
            "tables": tables,
        }}))
        import gc; gc.freeze()  # a quicker exit
    """)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("STRATOFLOW_", "AWS_"))}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path,
                            env={**clean, "STRATOFLOW_HOME": str(tmp_path)}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["threads"] == []
    assert report["leaked_env"] == []
    assert "stratoflow-dev-flow-runs" in report["tables"]


def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
