"""`lambda` pools created at run time get an SQS event source mapping to the executor function
(moto in-process): the pool's queues, a new work queue, exactly once, never for `process` pools,
and a refused mapping leaves no pool record behind."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pytest

from stratoflow.client import get_client
from stratoflow.exceptions import ObjectNotFound, RequestRefused
from stratoflow.settings import get_settings, reset_settings
from stratoflow.storage import aws as _aws
from stratoflow.workpools.mappings import BATCH_SIZE, RESPONSE_TYPES, ExecutorMappings
from stratoflow.workpools.naming import queue_name


def _executor_function() -> str:
    """A function named like the stack's executor, in moto (never invoked here)."""
    settings = get_settings()
    iam = _aws.client("iam", settings)
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"Service": "lambda.amazonaws.com"}}]}
    role = iam.create_role(RoleName="executor-role", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as zf:
        zf.writestr("app.py", "def lambda_handler(event, context):\n    return {}\n")
    created = _aws.client("lambda", settings).create_function(
        FunctionName=f"{settings.table_prefix}-executor", Runtime="python3.13", Role=role,
        Handler="app.lambda_handler", Code={"ZipFile": code.getvalue()})
    return str(created["FunctionArn"])


@pytest.fixture
def executor_arn(monkeypatch: pytest.MonkeyPatch) -> str:
    arn = _executor_function()
    monkeypatch.setenv("STRATOFLOW_EXECUTOR_FUNCTION_ARN", arn)
    monkeypatch.setenv("STRATOFLOW_EXECUTOR_MAX_CONCURRENCY", "7")
    reset_settings()
    return arn


def _mappings(function_arn: str) -> dict[str, dict[str, Any]]:
    """The executor's mappings by queue name."""
    settings = get_settings()
    found = _aws.client("lambda", settings).list_event_source_mappings(FunctionName=function_arn)
    return {m["EventSourceArn"].rsplit(":", 1)[-1]: m for m in found["EventSourceMappings"]}


def test_lambda_pool_queues_are_mapped_to_the_executor(executor_arn: str) -> None:
    sf = get_client()
    prefix = get_settings().table_prefix
    sf.create_work_pool("etl", type="lambda")
    sf.create_work_queue("etl", "urgent", priority=1)
    sf.create_work_pool("batch", type="process")
    sf.create_work_queue("batch", "slow")

    mappings = _mappings(executor_arn)
    assert set(mappings) == {queue_name(prefix, "etl", "default"), queue_name(prefix, "etl", "urgent")}
    for mapping in mappings.values():
        assert mapping["FunctionArn"] == executor_arn
        assert mapping["BatchSize"] == BATCH_SIZE
        assert mapping["FunctionResponseTypes"] == RESPONSE_TYPES
        assert mapping["ScalingConfig"] == {"MaximumConcurrency": 7}


def test_ensure_is_idempotent(executor_arn: str) -> None:
    sf = get_client()
    pool = sf.create_work_pool("etl", type="lambda")
    assert pool.queue_url is not None
    queue_arn = _aws.client("sqs", get_settings()).get_queue_attributes(
        QueueUrl=pool.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    mappings = ExecutorMappings(get_settings())
    first = mappings.find(queue_arn)
    assert first is not None
    assert mappings.ensure(queue_arn) == first
    assert mappings.ensure(queue_arn) == first
    assert len(_mappings(executor_arn)) == 1


def test_without_an_executor_function_nothing_is_mapped() -> None:
    # The local cloud (and any client-side call): its own event source polls every lambda pool.
    assert get_settings().executor_function_arn is None
    pool = get_client().create_work_pool("etl", type="lambda")
    assert pool.queue_url is not None
    assert ExecutorMappings(get_settings()).ensure("arn:aws:sqs:us-east-1:123456789012:x") is None
    listed = _aws.client("lambda", get_settings()).list_event_source_mappings()["EventSourceMappings"]
    assert listed == []


def test_a_refused_mapping_fails_the_request_and_writes_no_record(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = get_settings()
    missing = f"arn:aws:lambda:{settings.region}:123456789012:function:{settings.table_prefix}-no-executor"
    monkeypatch.setenv("STRATOFLOW_EXECUTOR_FUNCTION_ARN", missing)
    reset_settings()
    sf = get_client()
    with pytest.raises(RequestRefused) as refused:
        sf.create_work_pool("etl", type="lambda")
    assert refused.value.status_code == 502
    assert "to the executor" in str(refused.value) and "no-executor" in str(refused.value)
    with pytest.raises(ObjectNotFound):
        sf.read_work_pool("etl")
