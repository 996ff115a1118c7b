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
    from stratoflow.storage import aws as _aws

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
    from stratoflow.storage import aws as _aws
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
    from stratoflow.storage.eventbridge import ROLE_ARN_ENV, TARGET_ARN_ENV

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
    from stratoflow.storage.eventbridge import SCHEDULED_TIME, TICK_EXPRESSION, TICK_SCHEDULE_NAME

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
    from stratoflow.cli.config import OUTPUT_SETTINGS, REQUIRED_OUTPUTS

    outputs = set(template["Outputs"])
    assert set(OUTPUT_SETTINGS) <= outputs
    assert set(REQUIRED_OUTPUTS) <= outputs
    assert {"DefaultPoolQueueUrl", "SchedulerTargetArn", "Region"} <= outputs


def test_layer_is_the_package_with_its_runtime_dependencies_minus_moto_and_typer() -> None:
    layer = ROOT / "infra" / "layer"
    assert (layer / "stratoflow").resolve() == (ROOT / "sdk" / "stratoflow").resolve()
    assert (layer / "stratoflow" / "__init__.py").is_file()
    declared = {line.split("#")[0].strip() for line in (layer / "requirements.txt").read_text().splitlines()}
    declared.discard("")
    runtime = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    # moto is the embedded local cloud and typer the CLI: neither runs on Lambda.
    assert declared - {"aws-xray-sdk>=2.12"} == {d for d in runtime if not d.startswith(("moto", "typer"))}


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


# -- IAM: each function's role, exactly --------------------------------------------------------------
def _text(value: Any) -> str:
    """A policy resource as text: intrinsics as ``${...}``, an ARN's partition, region and account
    dropped (``sqs:${TablePrefix}_*``, ``dynamodb:table/${FlowRunsTable}``)."""
    if isinstance(value, str):
        text = value
    elif "Ref" in value:
        text = "${" + value["Ref"] + "}"
    elif "Fn::GetAtt" in value:
        text = "${" + ".".join(value["Fn::GetAtt"]) + "}"
    elif "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        text, variables = (sub, {}) if isinstance(sub, str) else (sub[0], sub[1])
        for name, variable in variables.items():
            text = text.replace("${" + name + "}", _text(variable))
    else:
        raise AssertionError(f"unexpected resource {value!r}")
    return re.sub(r"arn:\$\{AWS::Partition\}:([a-z0-9-]+):(\$\{AWS::Region\})?:(\$\{AWS::AccountId\})?:",
                  r"\1:", text)


def _role_statements(expanded: dict[str, Any], role: str) -> list[dict[str, Any]]:
    return [s for p in expanded["Resources"][role]["Properties"].get("Policies", [])
            for s in p["PolicyDocument"]["Statement"]]


def _grants(expanded: dict[str, Any], role: str) -> dict[str, set[str]]:
    """resource -> actions the role's inline policies allow on it."""
    out: dict[str, set[str]] = {}
    for statement in _role_statements(expanded, role):
        assert statement["Effect"] == "Allow", statement
        assert not {"NotAction", "NotResource", "NotPrincipal"} & set(statement), statement
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for resource in resources:
            out.setdefault(_text(resource), set()).update(actions)
    return out


_DDB = "dynamodb:"
_POOL_QUEUES = "sqs:${TablePrefix}_*"
# What each function's code calls (functions/<name>/app.py -> sdk/stratoflow/...; the store is
# storage/dynamodb.py, where TransactWriteItems' Puts need PutItem and BatchWriteItem is its own
# action), on exactly these resources. A change here is a change of who can do what: say why in
# docs/security.md ("IAM: who can do what").
ROLE_GRANTS: dict[str, dict[str, set[str]]] = {
    "ApiFunctionRole": {
        "${FlowRunsTable.Arn}": {_DDB + "GetItem", _DDB + "PutItem", _DDB + "DeleteItem"},
        "${FlowRunsTable.Arn}/index/*": {_DDB + "Query"},
        "${TaskRunsTable.Arn}": {_DDB + "GetItem", _DDB + "PutItem", _DDB + "BatchWriteItem"},
        "${TaskRunsTable.Arn}/index/by-flow-run": {_DDB + "Query"},
        "${LogsTable.Arn}": {_DDB + "BatchWriteItem", _DDB + "Query"},
        "${ObjectsTable.Arn}": {_DDB + "GetItem", _DDB + "PutItem", _DDB + "DeleteItem", _DDB + "Query",
                                _DDB + "Scan"},
        "${Bucket.Arn}/parameters/*": {"s3:PutObject"},
        "${ResultKey}": {"secretsmanager:GetSecretValue"},
        _POOL_QUEUES: {"sqs:CreateQueue", "sqs:GetQueueAttributes", "sqs:SendMessage"},
        "scheduler:schedule/${TablePrefix}/*": {"scheduler:CreateSchedule", "scheduler:UpdateSchedule",
                                                "scheduler:DeleteSchedule", "scheduler:GetSchedule"},
        "scheduler:schedule-group/${TablePrefix}": {"scheduler:CreateScheduleGroup", "scheduler:GetScheduleGroup"},
        "*": {"scheduler:ListSchedules", "lambda:CreateEventSourceMapping", "lambda:ListEventSourceMappings"},
        "${SchedulerRole.Arn}": {"iam:PassRole"},
    },
    "SchedulerFunctionRole": {
        "${FlowRunsTable.Arn}": {_DDB + "GetItem", _DDB + "PutItem"},
        "${ObjectsTable.Arn}": {_DDB + "GetItem", _DDB + "PutItem", _DDB + "Query"},
        "${Bucket.Arn}/parameters/*": {"s3:PutObject"},
        _POOL_QUEUES: {"sqs:SendMessage"},
        "${SchedulerDlq.Arn}": {"sqs:SendMessage"},  # SAM's, for DeadLetterQueue
    },
    "JanitorFunctionRole": {
        "${FlowRunsTable.Arn}": {_DDB + "GetItem", _DDB + "PutItem"},
        "${FlowRunsTable.Arn}/index/by-state": {_DDB + "Query"},
        "${TaskRunsTable.Arn}": {_DDB + "GetItem", _DDB + "PutItem"},
        "${TaskRunsTable.Arn}/index/by-flow-run": {_DDB + "Query"},
        "${ObjectsTable.Arn}": {_DDB + "GetItem", _DDB + "PutItem", _DDB + "DeleteItem", _DDB + "Query"},
        _POOL_QUEUES: {"sqs:SendMessage"},
    },
}
# The executor's runtime (its own role: SAM's would add AWSLambdaSQSQueueExecutionRole, every
# queue of the account). Flow code never holds it: it runs sandboxed with FlowRunRole's.
EXECUTOR_GRANTS: dict[str, set[str]] = {
    "${FlowRunsTable.Arn}": {_DDB + "GetItem", _DDB + "PutItem"},
    "${FlowRunsTable.Arn}/index/*": {_DDB + "Query"},
    "${TaskRunsTable.Arn}": {_DDB + "GetItem", _DDB + "PutItem", _DDB + "BatchWriteItem"},
    "${TaskRunsTable.Arn}/index/by-flow-run": {_DDB + "Query"},
    "${LogsTable.Arn}": {_DDB + "BatchWriteItem", _DDB + "Query"},
    "${ObjectsTable.Arn}": {_DDB + "GetItem", _DDB + "PutItem", _DDB + "DeleteItem", _DDB + "Query", _DDB + "Scan"},
    "${Bucket.Arn}/packages/*": {"s3:GetObject"},
    "${Bucket.Arn}/results/*": {"s3:GetObject", "s3:PutObject"},
    "${Bucket.Arn}/parameters/*": {"s3:GetObject", "s3:PutObject"},
    "${ResultKey}": {"secretsmanager:GetSecretValue"},
    _POOL_QUEUES: {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                   "sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage"},
}
MANAGED = {"arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
           "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess"}


@pytest.mark.parametrize("role", sorted(ROLE_GRANTS))
def test_each_function_role_grants_exactly_what_its_code_calls(expanded: dict[str, Any], role: str) -> None:
    assert _grants(expanded, role) == ROLE_GRANTS[role]
    assert set(expanded["Resources"][role]["Properties"]["ManagedPolicyArns"]) == MANAGED


def test_the_executor_runtime_and_the_flow_code_have_separate_roles(expanded: dict[str, Any]) -> None:
    resources = expanded["Resources"]
    assert _grants(expanded, "ExecutorRole") == EXECUTOR_GRANTS
    managed = {_text(arn).replace("${AWS::Partition}", "aws")
               for arn in resources["ExecutorRole"]["Properties"]["ManagedPolicyArns"]}
    assert managed == MANAGED
    assert resources["ExecutorFunction"]["Properties"]["Role"] == {"Fn::GetAtt": ["ExecutorRole", "Arn"]}
    # Flow code: no inline rights at all, only the managed policies the stack's owner names;
    # only the executor's runtime may assume it (and only it may: one policy, on this role).
    flow_role = resources["FlowRunRole"]["Properties"]
    assert "Policies" not in flow_role
    assert flow_role["ManagedPolicyArns"] == {"Fn::If": ["HasFlowRunPolicies", {"Ref": "FlowRunManagedPolicyArns"},
                                                         {"Ref": "AWS::NoValue"}]}
    (trust,) = flow_role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"AWS": {"Fn::GetAtt": ["ExecutorRole", "Arn"]}}
    assume = resources["ExecutorAssumesFlowRunRole"]["Properties"]
    assert assume["Roles"] == [{"Ref": "ExecutorRole"}]
    assert assume["PolicyDocument"]["Statement"] == [{"Sid": "AssumeFlowRunRole", "Effect": "Allow",
                                                      "Action": "sts:AssumeRole",
                                                      "Resource": {"Fn::GetAtt": ["FlowRunRole", "Arn"]}}]
    env = resources["ExecutorFunction"]["Properties"]["Environment"]["Variables"]
    assert env["STRATOFLOW_FLOW_RUN_ROLE_ARN"] == {"Fn::GetAtt": ["FlowRunRole", "Arn"]}
    roles = {k for k, v in resources.items() if v["Type"] == "AWS::IAM::Role"}
    assert roles == {*ROLE_GRANTS, "ExecutorRole", "FlowRunRole", "SchedulerRole"}


# Table, bucket, queue and key management: no function has any reason to, and a flow that could
# would rewrite the stack's own storage.
_MANAGEMENT = re.compile(r"^(dynamodb:(Create|Delete|Update|Restore)\w*Table\w*|dynamodb:UpdateTimeToLive"
                         r"|dynamodb:(Export|Import)\w*|s3:(Create|Delete|Put)Bucket\w*|s3:PutObjectAcl"
                         r"|s3:Put\w*Configuration|s3:DeleteObjectVersion|sqs:(DeleteQueue|SetQueueAttributes"
                         r"|PurgeQueue|AddPermission)|secretsmanager:(Put|Update|Delete)\w*|iam:(?!PassRole$)\w+)$")


@pytest.mark.parametrize("role", sorted([*ROLE_GRANTS, "ExecutorRole"]))
def test_no_function_manages_tables_buckets_queues_or_keys(expanded: dict[str, Any], role: str) -> None:
    actions = set().union(*_grants(expanded, role).values())
    assert all("*" not in a for a in actions), actions
    assert not {a for a in actions if _MANAGEMENT.match(a)}
    # Scan (reads a whole table) only where the flows listing needs it.
    scans = {r for r, a in _grants(expanded, role).items() if _DDB + "Scan" in a}
    assert scans <= {"${ObjectsTable.Arn}"}


def test_every_queue_grant_is_this_stacks_pools_or_a_named_queue(template: dict[str, Any],
                                                                  expanded: dict[str, Any]) -> None:
    from fnmatch import fnmatchcase

    from stratoflow.workpools.naming import dlq_name, iam_name_pattern, queue_name

    assert "sqs:${TablePrefix}" + iam_name_pattern("P").removeprefix("P") == _POOL_QUEUES
    queues = _of_type(template, "AWS::SQS::Queue")
    named = {f"${{{q}.Arn}}" for q in queues} | {f"sqs:${{{q}.QueueName}}" for q in queues}
    roles = [k for k, v in expanded["Resources"].items() if v["Type"] == "AWS::IAM::Role"]
    sqs_resources = {r for role in roles for r, actions in _grants(expanded, role).items()
                     if any(a.startswith("sqs:") for a in actions) and r != "*"}
    assert sqs_resources - named == {_POOL_QUEUES}
    # The default pool's queues are this stack's pool queues; the scheduler's DLQ is not one.
    for logical_id, queue in queues.items():
        name = queue["Properties"]["QueueName"]["Fn::Sub"].replace("${TablePrefix}", "sf").replace(
            "${DefaultPoolName}", "default")
        assert fnmatchcase(name, iam_name_pattern("sf")) == (logical_id != "SchedulerDlq"), logical_id
        assert not fnmatchcase(name.replace("sf", "sf-a", 1), iam_name_pattern("sf")), logical_id
    assert queues["DefaultPoolQueue"]["Properties"]["QueueName"]["Fn::Sub"].replace(
        "${TablePrefix}", "sf").replace("${DefaultPoolName}", "p") == queue_name("sf", "p", "default")
    assert queues["DefaultPoolDlq"]["Properties"]["QueueName"]["Fn::Sub"].replace(
        "${TablePrefix}", "sf").replace("${DefaultPoolName}", "p") == dlq_name("sf", "p")


# -- the API's front door, and concurrency ------------------------------------------------------------
def test_api_access_logs_who_called_what_and_has_a_default_throttle(template: dict[str, Any],
                                                                     expanded: dict[str, Any]) -> None:
    resources, parameters = template["Resources"], template["Parameters"]
    api = resources["Api"]["Properties"]
    logs = api["AccessLogSettings"]
    assert logs["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    group = resources["ApiAccessLogGroup"]
    assert group["Type"] == "AWS::Logs::LogGroup"
    assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    line = json.loads(logs["Format"])  # one JSON object per request
    assert line["requestId"] == "$context.requestId" and line["ip"] == "$context.identity.sourceIp"
    assert line["caller"] == "$context.identity.caller" and line["userArn"] == "$context.identity.userArn"
    assert line["routeKey"] == "$context.routeKey" and line["path"] == "$context.path"
    assert line["status"] == "$context.status" and line["latency"] == "$context.responseLatency"
    throttle = api["DefaultRouteSettings"]
    assert throttle == {"ThrottlingRateLimit": {"Ref": "ApiThrottlingRateLimit"},
                        "ThrottlingBurstLimit": {"Ref": "ApiThrottlingBurstLimit"}}
    for name in ("ApiThrottlingRateLimit", "ApiThrottlingBurstLimit"):
        p = parameters[name]
        assert p["Type"] == "Number" and p["MinValue"] <= p["Default"] <= p["MaxValue"]
    assert parameters["ApiThrottlingBurstLimit"]["Default"] >= parameters["ApiThrottlingRateLimit"]["Default"]
    (stage,) = [r["Properties"] for r in expanded["Resources"].values() if r["Type"] == "AWS::ApiGatewayV2::Stage"]
    assert stage["AccessLogSettings"]["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    assert stage["DefaultRouteSettings"] == throttle


def test_reserved_concurrency_where_a_runaway_would_hurt(template: dict[str, Any]) -> None:
    functions, parameters = _functions(template), template["Parameters"]
    for logical_id, parameter, condition in [("ApiFunction", "ApiReservedConcurrency", "ReserveApi"),
                                             ("SchedulerFunction", "SchedulerReservedConcurrency", "ReserveScheduler"),
                                             ("JanitorFunction", "JanitorReservedConcurrency", "ReserveJanitor")]:
        assert functions[logical_id]["Properties"]["ReservedConcurrentExecutions"] == {
            "Fn::If": [condition, {"Ref": parameter}, {"Ref": "AWS::NoValue"}]}
        # -1 reserves nothing (an account with a low concurrency limit can reserve none).
        assert template["Conditions"][condition] == {"Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, "-1"]}]}
        p = parameters[parameter]
        assert p["MinValue"] == -1 and 1 <= p["Default"] <= p["MaxValue"]
    # The executor is capped per work queue by its mapping (MaximumConcurrency); a reservation
    # below those caps would throttle SQS deliveries into the dead-letter queue.
    assert "ReservedConcurrentExecutions" not in functions["ExecutorFunction"]["Properties"]


def test_the_scheduler_keeps_invocations_that_fail(template: dict[str, Any]) -> None:
    scheduler = _functions(template)["SchedulerFunction"]["Properties"]
    assert scheduler["DeadLetterQueue"] == {"Type": "SQS", "TargetArn": {"Fn::GetAtt": ["SchedulerDlq", "Arn"]}}
    dlq = template["Resources"]["SchedulerDlq"]["Properties"]
    assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600 and dlq["SqsManagedSseEnabled"] is True


def test_every_checkov_skip_has_a_reason_listed_in_docs_security(template: dict[str, Any]) -> None:
    rows = [line for line in (ROOT / "docs" / "security.md").read_text().splitlines() if line.startswith("|")]
    skips = [(logical_id, skip) for logical_id, resource in template["Resources"].items()
             for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])]
    assert skips
    for logical_id, skip in skips:
        assert re.fullmatch(r"CKV_AWS_\d+", skip["id"]) and len(skip["comment"]) >= 40, (logical_id, skip)
        assert any(skip["id"] in row and logical_id in row for row in rows), (logical_id, skip["id"])


# -- ... and what the code calls is granted -----------------------------------------------------------
_TABLES = {"flow-runs": "FlowRunsTable", "task-runs": "TaskRunsTable", "logs": "LogsTable", "objects": "ObjectsTable"}


class _AwsCalls:
    """Every AWS call made while recording, as (IAM action, resource in ``_text``'s spelling)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.calls: set[tuple[str, str]] = set()
        self.recording = False

    def _table(self, name: str) -> str:
        return "${%s.Arn}" % _TABLES[name.removeprefix(self.prefix + "-")]  # noqa: UP031 - ${...} braces

    def record(self, service: str, operation: str, params: dict[str, Any]) -> None:
        if not self.recording:
            return
        if service == "dynamodb" and operation == "TransactWriteItems":
            for item in params["TransactItems"]:
                ((kind, body),) = item.items()
                action = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                          "ConditionCheck": "ConditionCheckItem"}[kind]
                self.calls.add((_DDB + action, self._table(body["TableName"])))
        elif service == "dynamodb" and "RequestItems" in params:
            self.calls.update((_DDB + operation, self._table(t)) for t in params["RequestItems"])
        elif service == "dynamodb":
            table = self._table(params["TableName"])
            self.calls.add((_DDB + operation, table + (f"/index/{params['IndexName']}" if "IndexName" in params
                                                       else "")))
        elif service == "s3":
            self.calls.add((f"s3:{operation}", "${Bucket.Arn}/" + params["Key"]))
        elif service == "sqs":
            name = params.get("QueueName") or params["QueueUrl"].rstrip("/").rsplit("/", 1)[1]
            self.calls.add((f"sqs:{operation}", f"sqs:{name}"))
        else:
            self.calls.add((f"{service}:{operation}", "?"))


@pytest.fixture
def aws_calls(monkeypatch: pytest.MonkeyPatch) -> _AwsCalls:
    import botocore.client

    recorder = _AwsCalls(get_settings().table_prefix)
    original = botocore.client.BaseClient._make_api_call

    def make_api_call(self: Any, operation: str, params: dict[str, Any]) -> Any:
        recorder.record(self.meta.service_model.service_name, operation, params)
        return original(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", make_api_call)
    return recorder


def _denied(calls: set[tuple[str, str]], grants: dict[str, set[str]], prefix: str) -> set[tuple[str, str]]:
    from fnmatch import fnmatchcase

    def allowed(action: str, resource: str) -> bool:
        if resource == "?":  # scheduler, lambda: the exact sets above pin their resources
            return any(action in actions for actions in grants.values())
        return any(action in actions and fnmatchcase(resource, pattern.replace("${TablePrefix}", prefix))
                   for pattern, actions in grants.items())

    return {(a, r) for a, r in calls if not allowed(a, r)}


def _load_function(name: str) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"stratoflow_{name}_function", ROOT / "functions" / name / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.store_only("records the AWS calls of the functions' code in-process")
def test_every_call_the_functions_make_is_granted(expanded: dict[str, Any], aws_calls: _AwsCalls) -> None:
    """The API, scheduler and janitor code driven through their work (runs with large parameters,
    a pool, a scheduled deployment, logs, limits, a lost run) against the embedded cloud: every
    AWS call each made is one its role allows, so a grant the exact sets above drop, or a call the
    code adds, fails here."""
    import uuid
    from datetime import UTC, datetime, timedelta

    from test_api_handler import FakeLambdaContext, http_event

    from stratoflow import janitor
    from stratoflow.models import TaskRun
    from stratoflow.orchestration import RunKind
    from stratoflow.states import Running
    from stratoflow.storage import get_store

    settings, store = get_settings(), get_store()
    api_function = _load_function("api")
    suffix = uuid.uuid4().hex[:6]
    pool, flow, big = f"pool-{suffix}", f"flow-{suffix}", "x" * (settings.parameters_inline_max_bytes + 1)

    def api(method: str, path: str, body: Any = None) -> Any:
        reply = api_function.lambda_handler(http_event(method, path, body=body), FakeLambdaContext())
        assert reply["statusCode"] < 300, (method, path, reply["body"])
        return json.loads(reply["body"])

    def recorded(action: Any) -> set[tuple[str, str]]:
        aws_calls.calls, aws_calls.recording = set(), True
        try:
            action()
        finally:
            aws_calls.recording = False
        return aws_calls.calls

    schedule = {"id": "every-minute", "schedule": {"type": "cron", "cron": "* * * * *"}}

    def api_work() -> None:
        api("POST", "/work_pools", {"name": pool, "type": "process"})
        api("GET", f"/work_pools/{pool}/status")
        dep = api("POST", "/deployments", {"name": "nightly", "flow_name": flow, "work_pool_name": pool,
                                           "schedules": [schedule]})
        api("POST", f"/deployments/{dep['id']}/create_flow_run", {"parameters": {"big": big},
                                                                  "idempotency_key": "k1"})
        run = api("POST", "/flow_runs", {"flow_name": flow, "parameters": {"big": big}})
        api("POST", f"/flow_runs/{run['id']}/set_state", {"state": {"type": "RUNNING"}})
        api("POST", "/logs", [{"flow_run_id": run["id"], "message": "hello", "level": 20}])
        api("GET", f"/flow_runs/{run['id']}/logs")
        for body in ({}, {"state_types": ["RUNNING"]}, {"flow_name": flow}, {"deployment_id": dep["id"]}):
            api("POST", "/flow_runs/filter", body)
        api("GET", f"/flow_runs/{run['id']}/task_runs")
        api("GET", "/flows")
        api("POST", "/concurrency_limits", {"tag": f"t-{suffix}", "limit": 1})
        api("POST", "/concurrency_limits/increment", {"tags": [f"t-{suffix}"], "holder": "nobody"})
        api("POST", f"/flow_runs/{run['id']}/cancel")
        api("DELETE", f"/flow_runs/{run['id']}")

    api_calls = recorded(api_work)
    dep_id = api("POST", "/deployments/filter", {"flow_name": flow})[0]["id"]

    scheduler_function = _load_function("scheduler")
    slot = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    scheduler_calls = recorded(lambda: (
        scheduler_function.handle({"deployment_id": dep_id, "schedule_id": "every-minute", "slot": slot.isoformat()}),
        scheduler_function.handle({"tick": True, "time": slot.isoformat()})))

    # A lost run (Running, with a running task run, no heartbeat) and a run due later than SQS can
    # delay (sent by the janitor when it comes due); the janitor sweeps a day later.
    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    api("POST", f"/deployments/{dep_id}/create_flow_run",
        {"state": {"type": "SCHEDULED", "state_details": {"scheduled_time": later}}})
    lost = api("POST", f"/deployments/{dep_id}/create_flow_run", {})
    api("POST", f"/flow_runs/{lost['id']}/set_state", {"state": {"type": "PENDING"}})
    api("POST", f"/flow_runs/{lost['id']}/set_state", {"state": {"type": "RUNNING"}})
    store.create_run(RunKind.TASK, TaskRun(name="t", task_key="t", flow_run_id=lost["id"], state=Running(),
                                           state_history=[Running()]))
    janitor_calls = recorded(lambda: janitor.tick(store, settings, now=datetime.now(UTC) + timedelta(days=1)))

    for role, calls, needed in [
        ("ApiFunctionRole", api_calls, {("s3:PutObject", "${Bucket.Arn}/parameters/"), ("sqs:SendMessage", ""),
                                        (_DDB + "Scan", ""), (_DDB + "TransactWriteItems", "")}),
        ("SchedulerFunctionRole", scheduler_calls, {("sqs:SendMessage", ""), (_DDB + "PutItem", "")}),
        ("JanitorFunctionRole", janitor_calls, {("sqs:SendMessage", ""), (_DDB + "Query", "${TaskRunsTable")}),
    ]:
        denied = _denied(calls, _grants(expanded, role), settings.table_prefix)
        assert not denied, (role, sorted(denied))
        # The scenario did the work it is meant to check (not a vacuous pass).
        for action, resource in needed:
            if action == _DDB + "TransactWriteItems":  # recorded as its Puts
                action, resource = _DDB + "PutItem", "${ObjectsTable"
            assert any(a == action and r.startswith(resource) for a, r in calls), (role, action, sorted(calls))
    from moto.backends import get_backend

    get_backend("scheduler").reset()  # process-global in moto; the deployment's schedule made one


EXECUTOR_FLOW = '''
from stratoflow import flow, task


@task(cache_key_fn=lambda ctx, params: "recorded-" + str(params["n"]))
def cached(n: int) -> int:
    return n * 2


@task
def big() -> str:
    return "x" * 100_000


@flow
def child(n: int) -> int:
    return cached(n)


@flow(log_prints=True)
def recorded(n: int = 3) -> int:
    print("hello")
    return child(n) + len(big())
'''


@pytest.mark.store_only("records the AWS calls of the executor's runtime in-process")
def test_every_call_the_executor_runtime_makes_is_granted(expanded: dict[str, Any], aws_calls: _AwsCalls,
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deployment run (subflow, cached task, a result too large to inline, logs, the flow-run
    role assumed) executed by the executor's runtime, its flow sandboxed: every AWS call the
    runtime made (its own and those it served for the flow) is one ExecutorRole allows."""
    import uuid

    from stratoflow.client import get_client
    from stratoflow.deployments import deploy
    from stratoflow.executor import handle_message
    from stratoflow.settings import reset_settings
    from stratoflow.states import StateType
    from stratoflow.storage import get_server_store
    from stratoflow.workpools.sqs import QueueTarget, SqsQueues

    monkeypatch.setenv("STRATOFLOW_PACKAGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("STRATOFLOW_FLOW_RUN_ROLE_ARN", "arn:aws:iam::123456789012:role/flow-run")
    reset_settings()
    from stratoflow.storage.keys import ensure_result_key_secret, home_key

    # The key comes from Secrets Manager, as on AWS (the embedded backend would read the home's file).
    secret = f"{get_settings().table_prefix}-result-key-{uuid.uuid4().hex[:6]}"
    ensure_result_key_secret(get_settings(), secret, home_key(get_settings().home).hex())
    monkeypatch.setenv("STRATOFLOW_RESULT_KEY_SECRET", secret)
    reset_settings()
    settings, client = get_settings(), get_client()
    pool = f"pool-{uuid.uuid4().hex[:6]}"
    client.create_work_pool(pool)
    (tmp_path / "recorded.py").write_text(EXECUTOR_FLOW)
    dep = deploy("recorded.py:recorded", name="d", work_pool=pool, source_dir=tmp_path, client=client)
    run = client.create_flow_run_from_deployment(f"{dep.flow_name}/d")
    queue = next(q for q in client.read_work_queues(pool) if q.name == "default")
    sqs = SqsQueues(settings)
    assert queue.queue_url is not None
    (message,) = sqs.receive(QueueTarget(queue.queue_url, sqs.queue_arn(queue.queue_url), pool, "default"), 1, 0)

    aws_calls.calls, aws_calls.recording = set(), True
    try:
        handle_message(message.body, store=get_server_store(), settings=settings)
    finally:
        aws_calls.recording = False
    done = client.read_flow_run(run.id)
    assert done.state_type == StateType.COMPLETED, (done.state, [m.message for m in client.iter_logs(run.id)])

    grants = _grants(expanded, "ExecutorRole")
    grants.setdefault("${FlowRunRole.Arn}", set()).add("sts:AssumeRole")  # ExecutorAssumesFlowRunRole
    denied = _denied(aws_calls.calls, grants, settings.table_prefix)
    assert not denied, sorted(denied)
    for action, resource in [("s3:GetObject", "${Bucket.Arn}/packages/"), ("s3:PutObject", "${Bucket.Arn}/results/"),
                             ("secretsmanager:GetSecretValue", "?"), ("sts:AssumeRole", "?"),
                             (_DDB + "BatchWriteItem", "${LogsTable"), (_DDB + "PutItem", "${FlowRunsTable")]:
        assert any(a == action and r.startswith(resource) for a, r in aws_calls.calls), (
            action, sorted(aws_calls.calls))
