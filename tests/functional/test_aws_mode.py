"""The `aws` backend: the same store and engine against a DynamoDB/S3 endpoint over HTTP.

A moto server on localhost stands in for AWS here; nothing in the code path knows it is moto.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stratoflow.settings import reset_settings
from stratoflow.storage import aws as _aws


@pytest.fixture
def moto_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    from stratoflow.storage.embedded import forget_embedded_cloud

    forget_embedded_cloud()  # moto's backends are process-global: start from empty
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    monkeypatch.setenv("STRATOFLOW_BACKEND", "aws")
    monkeypatch.setenv("STRATOFLOW_AWS_ENDPOINT_URL", url)
    monkeypatch.setenv("STRATOFLOW_TABLE_PREFIX", "sf-test")
    monkeypatch.setenv("STRATOFLOW_BUCKET", "sf-test-bucket")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    reset_settings()
    _aws.clear_clients()
    try:
        yield url
    finally:
        server.stop()
        forget_embedded_cloud()
        _aws.clear_clients()
        reset_settings()


def test_flow_runs_against_an_http_endpoint(moto_endpoint: str) -> None:
    from stratoflow import flow, get_client, task
    from stratoflow.settings import get_settings
    from stratoflow.storage.dynamodb import get_dynamodb_store

    settings = get_settings()
    assert settings.resolved_backend == "aws"
    store = get_dynamodb_store(settings)
    store.ensure_resources()  # on AWS the SAM stack creates these

    @task(retries=1, retry_delay_seconds=0)
    def add(x: int, y: int) -> int:
        return x + y

    @flow
    def total(n: int) -> int:
        return sum(add.map(range(n), 1).result()) + len(b"x" * 50_000) * 0

    assert total(4) == 10
    client = get_client()
    (run,) = client.read_flow_runs(flow_name="total")
    assert run.state is not None and run.state.is_completed()
    assert [s.name for s in run.state_history] == ["Pending", "Running", "Completed"]
    assert len(client.read_task_runs(run.id)) == 4
    # The tables really are on the endpoint: a plain boto3 client sees the items.
    import boto3

    ddb = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1")
    names = ddb.list_tables()["TableNames"]
    assert {"sf-test-flow-runs", "sf-test-task-runs", "sf-test-logs", "sf-test-objects"} <= set(names)
    assert ddb.scan(TableName="sf-test-task-runs", Select="COUNT")["Count"] == 4


def test_missing_tables_give_a_clear_error(moto_endpoint: str) -> None:
    from stratoflow import flow

    @flow
    def nothing() -> None:
        return None

    from stratoflow.exceptions import StratoflowError

    with pytest.raises(StratoflowError, match="table 'sf-test-objects' does not exist"):
        nothing()
