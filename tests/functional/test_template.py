"""template.yaml against the code: what the code uses must be declared, named and configured alike.

The tables and indexes are compared with what ``DynamoDBStore.ensure_resources`` creates (both
made in the embedded moto, then described); the default pool's queues with ``workpools``' naming
and settings; the functions with ``functions/``; the environment with ``Settings``; the SAM
transform (aws-sam-translator, offline) with what the local provisioner knows.
"""

from __future__ import annotations

import ast
import copy
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from stratoflow.local.provision import (
    LOCAL_RUNTIME_TYPES,
    PROVISIONED_TYPES,
    load_template,
    provision_from_template,
)
from stratoflow.settings import Settings, get_settings

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE)


def _of_type(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


def _describe_tables(settings: Settings) -> dict[str, dict[str, Any]]:
    from stratoflow import _aws

    client = _aws.client("dynamodb", settings)
    out = {}
    for kind in ("flow-runs", "task-runs", "logs", "objects"):
        table = client.describe_table(TableName=settings.table_name(kind))["Table"]
        ttl = client.describe_time_to_live(TableName=settings.table_name(kind))["TimeToLiveDescription"]
        out[kind] = {
            "keys": table["KeySchema"],
            "attributes": sorted((a["AttributeName"], a["AttributeType"]) for a in table["AttributeDefinitions"]),
            "indexes": sorted((i["IndexName"], json.dumps(i["KeySchema"]), i["Projection"]["ProjectionType"])
                              for i in table.get("GlobalSecondaryIndexes", [])),
            "billing": table.get("BillingModeSummary", {}).get("BillingMode"),
            "ttl": ttl.get("AttributeName") if ttl.get("TimeToLiveStatus") == "ENABLED" else None,
        }
    return out


def test_tables_match_what_the_store_creates() -> None:
    from stratoflow.storage.dynamodb import DynamoDBStore

    base = get_settings()
    by_code = base.model_copy(update={"table_prefix": "by-code", "bucket": "by-code"})
    by_template = base.model_copy(update={"table_prefix": "by-template", "bucket": "by-template"})
    store = DynamoDBStore(by_code)
    try:
        store.ensure_resources()
    finally:
        store.close()
    provision_from_template(by_template, TEMPLATE)
    code, declared = _describe_tables(by_code), _describe_tables(by_template)
    assert set(code) == set(declared)
    for kind in code:
        assert declared[kind] == code[kind], kind
    assert declared["logs"]["ttl"] == "expires_at"  # LogItem.expires_at, a TTLAttribute
    assert {d["billing"] for d in declared.values()} == {"PAY_PER_REQUEST"}


def test_template_declares_exactly_the_store_tables(template: dict[str, Any]) -> None:
    from stratoflow.storage.dynamodb import DynamoDBStore

    store = DynamoDBStore(Settings(backend="aws", table_prefix="P", aws_endpoint_url="http://127.0.0.1:9"))
    names = {m.Meta.table_name for m in store.models.all}  # type: ignore[attr-defined]
    tables = _of_type(template, "AWS::DynamoDB::Table")
    assert {t["Properties"]["TableName"]["Fn::Sub"].replace("${TablePrefix}", "P") for t in tables.values()} == names
    for logical_id, table in tables.items():
        props = table["Properties"]
        assert props["BillingMode"] == "PAY_PER_REQUEST", logical_id
        assert props["SSESpecification"] == {"SSEEnabled": True}, logical_id
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}, logical_id


def test_default_pool_queues_are_named_and_configured_as_the_code_makes_them() -> None:
    from stratoflow import _aws
    from stratoflow.workpools.naming import DEFAULT_QUEUE, dlq_name, queue_name
    from stratoflow.workpools.sqs import SqsQueues

    settings = get_settings()
    report = provision_from_template(settings, TEMPLATE)
    pool = report.parameters["DefaultPoolName"]
    queue_url, dlq_url = report.physical_id("DefaultPoolQueue"), report.physical_id("DefaultPoolDlq")
    assert queue_url.endswith("/" + queue_name(settings.table_prefix, pool, DEFAULT_QUEUE))
    assert dlq_url.endswith("/" + dlq_name(settings.table_prefix, pool))
    attrs = _aws.client("sqs", settings).get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert int(attrs["VisibilityTimeout"]) == settings.queue_visibility_timeout == 5400
    assert int(attrs["MessageRetentionPeriod"]) == 14 * 24 * 3600
    redrive = json.loads(attrs["RedrivePolicy"])
    assert int(redrive["maxReceiveCount"]) == settings.queue_max_receive_count == 5
    assert redrive["deadLetterTargetArn"].endswith(":" + dlq_name(settings.table_prefix, pool))
    # What `stratoflow work-pool create <pool>` does on the deployed stack: same queues, no conflict.
    queues = SqsQueues(settings)
    assert queues.ensure_queue(pool, DEFAULT_QUEUE) == queue_url
    assert queues.ensure_dlq(pool)[0] == dlq_url


def _functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return _of_type(template, "AWS::Serverless::Function")


def test_every_function_directory_is_a_template_function(template: dict[str, Any]) -> None:
    on_disk = {p.parent.name for p in (ROOT / "functions").glob("*/app.py")}
    declared = {Path(f["Properties"]["CodeUri"]).name: f for f in _functions(template).values()}
    assert set(declared) == on_disk
    for name, function in declared.items():
        module, attr = function["Properties"]["Handler"].split(".")
        tree = ast.parse((ROOT / "functions" / name / f"{module}.py").read_text())
        assert attr in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, f"{name}: no {attr}()"
    assert {"api", "executor", "scheduler", "janitor"} <= set(declared)


def _environment(template: dict[str, Any], function: dict[str, Any]) -> dict[str, Any]:
    env = dict(template["Globals"]["Function"]["Environment"]["Variables"])
    env.update(function["Properties"].get("Environment", {}).get("Variables", {}))
    return env


def test_function_environments_carry_the_settings_the_code_reads(template: dict[str, Any]) -> None:
    from stratoflow.schedules.eventbridge import ROLE_ARN_ENV, TARGET_ARN_ENV

    known = {f"STRATOFLOW_{name.upper()}" for name in Settings.model_fields} | {TARGET_ARN_ENV, ROLE_ARN_ENV}
    code_vars = set(re.findall(r"STRATOFLOW_[A-Z_]+[A-Z]", "\n".join(
        p.read_text() for p in [*(ROOT / "sdk").rglob("*.py"), *(ROOT / "functions").rglob("*.py")])))
    required = {"STRATOFLOW_BACKEND", "STRATOFLOW_TABLE_PREFIX", "STRATOFLOW_BUCKET", "STRATOFLOW_HOME",
                TARGET_ARN_ENV, ROLE_ARN_ENV}
    queue = template["Resources"]["DefaultPoolQueue"]["Properties"]
    for logical_id, function in _functions(template).items():
        env = _environment(template, function)
        names = {k for k in env if k.startswith("STRATOFLOW_")}
        assert required <= names, (logical_id, required - names)
        assert names <= known, (logical_id, names - known)
        assert names <= code_vars | {f"STRATOFLOW_{n.upper()}" for n in Settings.model_fields}
        assert env["STRATOFLOW_BACKEND"] == "aws"
        assert env["STRATOFLOW_TABLE_PREFIX"] == {"Ref": "TablePrefix"}
        assert env["STRATOFLOW_BUCKET"] == {"Ref": "Bucket"}
        assert str(env["STRATOFLOW_HOME"]).startswith("/tmp/")  # the only writable path on Lambda
        assert int(env["STRATOFLOW_QUEUE_VISIBILITY_TIMEOUT"]) == queue["VisibilityTimeout"]
        assert int(env["STRATOFLOW_QUEUE_MAX_RECEIVE_COUNT"]) == queue["RedrivePolicy"]["maxReceiveCount"]
        # The scheduler target ARN names the scheduler function.
        assert env[TARGET_ARN_ENV]["Fn::Sub"].endswith(
            ":function:" + _functions(template)["SchedulerFunction"]["Properties"]["FunctionName"]["Fn::Sub"])
        assert env[ROLE_ARN_ENV] == {"Fn::GetAtt": ["SchedulerRole", "Arn"]}


def test_executor_and_schedules_are_wired(template: dict[str, Any]) -> None:
    from stratoflow.schedules.eventbridge import SCHEDULED_TIME, TICK_EXPRESSION, TICK_SCHEDULE_NAME

    resources = template["Resources"]
    executor = resources["ExecutorFunction"]["Properties"]
    assert executor["Timeout"] == 900
    (event,) = executor["Events"].values()
    assert event["Type"] == "SQS"
    assert event["Properties"]["Queue"] == {"Fn::GetAtt": ["DefaultPoolQueue", "Arn"]}
    assert event["Properties"]["BatchSize"] == 1
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert event["Properties"]["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "ExecutorConcurrency"}}
    tick = resources["TickSchedule"]["Properties"]
    assert tick["Name"] == TICK_SCHEDULE_NAME and tick["ScheduleExpression"] == TICK_EXPRESSION
    assert json.loads(tick["Target"]["Input"]) == {"tick": True, "time": SCHEDULED_TIME}
    assert tick["Target"]["Arn"] == {"Fn::GetAtt": ["SchedulerFunction", "Arn"]}
    assert resources["ScheduleGroup"]["Properties"]["Name"] == {"Ref": "TablePrefix"}  # EventBridgeProvisioner.group
    # Pools created at run time: the API maps their queues to this function, with the same limit.
    api_env = resources["ApiFunction"]["Properties"]["Environment"]["Variables"]
    assert api_env["STRATOFLOW_EXECUTOR_FUNCTION_ARN"] == {"Fn::GetAtt": ["ExecutorFunction", "Arn"]}
    assert api_env["STRATOFLOW_EXECUTOR_MAX_CONCURRENCY"] == {"Ref": "ExecutorConcurrency"}
    janitor = resources["JanitorFunction"]["Properties"]
    assert janitor["Handler"] == "app.lambda_handler"
    assert [e["Properties"]["Schedule"] for e in janitor["Events"].values()] == ["rate(1 minute)"]


def _expanded(template_path: Path) -> dict[str, Any]:
    """The template after the SAM transform (aws-sam-translator, no AWS calls): local CodeUri /
    ContentUri become S3 URIs as `sam package` would make them."""
    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse

    raw = yaml_parse(template_path.read_text())
    for resource in raw["Resources"].values():
        props = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str):
                props[key] = f"s3://bucket/{props[key]}"

    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    return dict(transform(copy.deepcopy(raw), {}, NoManagedPolicies()))


@pytest.fixture(scope="module")
def expanded() -> dict[str, Any]:
    import os

    saved = os.environ.get("AWS_DEFAULT_REGION")
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"  # the translator asks boto3 for a region
    try:
        return _expanded(TEMPLATE)
    finally:
        if saved is None:
            os.environ.pop("AWS_DEFAULT_REGION", None)
        else:
            os.environ["AWS_DEFAULT_REGION"] = saved


def test_sam_transform_adds_only_what_the_local_runtime_serves(template: dict[str, Any],
                                                               expanded: dict[str, Any]) -> None:
    types = {r["Type"] for r in expanded["Resources"].values()}
    assert types <= LOCAL_RUNTIME_TYPES | PROVISIONED_TYPES, types - (LOCAL_RUNTIME_TYPES | PROVISIONED_TYPES)
    data = {k for k, v in expanded["Resources"].items() if v["Type"] in PROVISIONED_TYPES}
    assert data == {k for k, v in template["Resources"].items() if v["Type"] in PROVISIONED_TYPES}
    mappings = [r["Properties"] for r in expanded["Resources"].values()
                if r["Type"] == "AWS::Lambda::EventSourceMapping"]
    assert len(mappings) == 1 and mappings[0]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def _statements(expanded: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for resource in expanded["Resources"].values():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        for policy in resource["Properties"].get("Policies", []):
            out.extend(policy["PolicyDocument"]["Statement"])
    return out


def test_no_wildcard_action_and_no_wildcard_action_on_every_resource(expanded: dict[str, Any]) -> None:
    statements = _statements(expanded)
    assert len(statements) > 10
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        assert all(isinstance(a, str) and a != "*" and not a.endswith(":*") for a in actions), statement
        if "*" in resources:  # only actions AWS offers no resource-level permission for
            assert actions in (["scheduler:ListSchedules"], ["lambda:ListEventSourceMappings"],
                               ["lambda:CreateEventSourceMapping"]), statement
            if actions == ["lambda:CreateEventSourceMapping"]:  # and then only for the executor
                assert statement["Condition"] == {
                    "StringEquals": {"lambda:FunctionArn": {"Fn::GetAtt": ["ExecutorFunction", "Arn"]}}}


def test_outputs_cover_what_config_from_stack_reads(template: dict[str, Any]) -> None:
    from stratoflow.cli_config import OUTPUT_SETTINGS, REQUIRED_OUTPUTS

    outputs = set(template["Outputs"])
    assert set(OUTPUT_SETTINGS) <= outputs
    assert set(REQUIRED_OUTPUTS) <= outputs
    assert {"DefaultPoolQueueUrl", "SchedulerTargetArn", "Region"} <= outputs


def test_layer_is_the_package_with_its_runtime_dependencies_minus_moto() -> None:
    layer = ROOT / "infra" / "layer"
    assert (layer / "stratoflow").resolve() == (ROOT / "sdk" / "stratoflow").resolve()
    assert (layer / "stratoflow" / "__init__.py").is_file()
    declared = {line.split("#")[0].strip() for line in (layer / "requirements.txt").read_text().splitlines()}
    declared.discard("")
    runtime = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    assert declared - {"aws-xray-sdk>=2.12"} == {d for d in runtime if not d.startswith("moto")}


def test_bucket_is_versioned_encrypted_private_and_tls_only(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    bucket = resources["Bucket"]["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    (policy,) = _of_type(template, "AWS::S3::BucketPolicy").values()
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
