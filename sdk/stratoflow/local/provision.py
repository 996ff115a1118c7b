"""Provision the local cloud from ``template.yaml``: one topology for the stack on AWS and on moto.

``provision_from_template(settings)`` reads the SAM template, resolves its parameters and
intrinsic functions for local use, and creates every data resource it declares through the
clients of ``stratoflow.storage.aws`` (so at ``settings.aws_endpoint_url``, or in the embedded cloud):

==============================  ===============================================================
``AWS::DynamoDB::Table``        ``CreateTable`` (keys, indexes, billing, SSE), then TTL and
                                point-in-time recovery as declared
``AWS::S3::Bucket``             the bucket, versioning, encryption, public access block,
                                ownership controls, lifecycle rules
``AWS::S3::BucketPolicy``       ``PutBucketPolicy``
``AWS::SQS::Queue``             ``CreateQueue`` with the declared attributes (redrive included)
``AWS::Scheduler::ScheduleGroup`` / ``AWS::Scheduler::Schedule``   as declared (the local
                                scheduler loop fires the schedules it finds)
``AWS::SecretsManager::Secret``  ``CreateSecret``; a generated value is the local home's result
                                key (``$STRATOFLOW_HOME/result-key``), so runs made by the
                                embedded backend and by the local cloud read each other's results
==============================  ===============================================================

Functions, their roles, permissions and event sources, the HTTP API, the layer and log groups
are **served by the local runtime** (``stratoflow dev`` runs the same handlers): they are listed
in the report, not created. A resource type in neither list is an error, so the template cannot
grow a resource the local cloud silently lacks.

Resolution (a documented subset of CloudFormation, enough for this template and what it is
likely to grow): parameters (defaults; ``TablePrefix`` from ``settings.table_prefix``; explicit
overrides win), the pseudo parameters, ``Ref``, ``Fn::GetAtt``, ``Fn::Sub`` (both forms),
``Fn::Join``, ``Fn::Select``, ``Fn::Split``, ``Fn::If`` with ``Conditions`` (``Fn::Equals``,
``Fn::Not``, ``Fn::And``, ``Fn::Or``, ``Condition``), ``Fn::FindInMap``, ``AWS::NoValue``.
The SAM transform is not run: the resources it generates are all of the served-by-the-runtime
kind (tests/functional/test_template.py expands the template with aws-sam-translator and checks
exactly that). A bucket without ``BucketName`` is ``settings.bucket`` (CloudFormation would
generate a name; the stack's output ``BucketName`` carries it to the SDK the same way).

Provisioning is idempotent: what exists is left as it is (and reported ``existing``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stratoflow.exceptions import StratoflowError
from stratoflow.settings import Settings
from stratoflow.storage import aws as _aws
from stratoflow.storage.keys import ensure_result_key_secret, home_key

REPO_ROOT = Path(__file__).resolve().parents[3]
TEMPLATE_NAME = "template.yaml"
LOCAL_ACCOUNT = "123456789012"  # moto's account (also eventbridge.LOCAL_ACCOUNT)
PARTITION = "aws"
URL_SUFFIX = "amazonaws.com"

# Parameters taken from the settings the local cloud runs with, so names match what the SDK uses.
SETTINGS_PARAMETERS: dict[str, Callable[[Settings], str]] = {"TablePrefix": lambda s: s.table_prefix}

# Served by the local runtime (the dev stack runs the handlers, its own API gateway and event
# sources): reported, never created.
LOCAL_RUNTIME_TYPES = frozenset({
    "AWS::Serverless::Function", "AWS::Serverless::HttpApi", "AWS::Serverless::Api",
    "AWS::Serverless::LayerVersion", "AWS::Lambda::Function", "AWS::Lambda::LayerVersion",
    "AWS::Lambda::Permission", "AWS::Lambda::EventSourceMapping", "AWS::Lambda::Version", "AWS::Lambda::Alias",
    "AWS::IAM::Role", "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::Logs::LogGroup",
    "AWS::Events::Rule", "AWS::ApiGatewayV2::Api", "AWS::ApiGatewayV2::Stage", "AWS::ApiGatewayV2::Integration",
    "AWS::ApiGatewayV2::Route",
})
PROVISIONED_TYPES = frozenset({
    "AWS::DynamoDB::Table", "AWS::S3::Bucket", "AWS::S3::BucketPolicy", "AWS::SQS::Queue",
    "AWS::Scheduler::ScheduleGroup", "AWS::Scheduler::Schedule", "AWS::SecretsManager::Secret",
})

# CloudFormation property -> SQS attribute (values are sent as strings; RedrivePolicy as JSON).
_SQS_ATTRIBUTES = ("DelaySeconds", "MaximumMessageSize", "MessageRetentionPeriod", "ReceiveMessageWaitTimeSeconds",
                   "VisibilityTimeout", "RedrivePolicy", "RedriveAllowPolicy", "SqsManagedSseEnabled",
                   "KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds", "FifoQueue", "ContentBasedDeduplication",
                   "DeduplicationScope", "FifoThroughputLimit")
_NO_VALUE = object()
_SUB_VAR = re.compile(r"\$\{([^}]*)\}")


class ProvisionError(StratoflowError):
    """The template cannot be provisioned locally (unknown resource type, unresolvable intrinsic)."""


# -- the template ----------------------------------------------------------------------------------
class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (``!Ref``, ``!Sub``, ``!GetAtt`` ...) as their long forms."""


def _tag_constructor(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        resource, _, attribute = value.partition(".")
        value = [resource, attribute]
    return {f"Fn::{tag_suffix}": value}


_CfnLoader.add_multi_constructor("!", _tag_constructor)


def load_template(path: Path | str) -> dict[str, Any]:
    """The template as plain data, short tags turned into their ``{"Fn::...": ...}`` forms."""
    with open(path, encoding="utf-8") as handle:
        loaded = yaml.load(handle, Loader=_CfnLoader)  # nosec B506  # a SafeLoader subclass
    if not isinstance(loaded, dict) or not isinstance(loaded.get("Resources"), dict):
        raise ProvisionError(f"{path}: not a CloudFormation template (no Resources)")
    return loaded


def default_template_path() -> Path | None:
    """``template.yaml`` of the Stratoflow checkout this package runs from, else of the current
    directory, else None (a pip-installed package has no template)."""
    for root in (REPO_ROOT, Path.cwd()):
        candidate = root / TEMPLATE_NAME
        if candidate.is_file():
            return candidate
    return None


# -- the report ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProvisionedResource:
    logical_id: str
    type: str
    physical_id: str  # table/bucket/group/schedule name, queue URL; "" for local-runtime resources
    action: str  # "created" | "existing" | "local-runtime" | "skipped (condition)"


@dataclass
class ProvisionReport:
    template: Path
    parameters: dict[str, str]
    resources: list[ProvisionedResource] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def provisioned(self) -> list[ProvisionedResource]:
        return [r for r in self.resources if r.action in ("created", "existing")]

    @property
    def local_runtime(self) -> list[ProvisionedResource]:
        return [r for r in self.resources if r.action == "local-runtime"]

    def of_type(self, type_: str) -> list[ProvisionedResource]:
        return [r for r in self.provisioned if r.type == type_]

    def physical_id(self, logical_id: str) -> str:
        for resource in self.resources:
            if resource.logical_id == logical_id:
                return resource.physical_id
        raise KeyError(logical_id)

    def as_dict(self) -> dict[str, Any]:
        return {"template": str(self.template), "parameters": self.parameters, "seconds": round(self.seconds, 3),
                "resources": [r.__dict__ for r in self.resources]}

    def format(self) -> str:
        lines = [f"provisioned from {self.template} in {self.seconds:.2f} s"]
        for r in self.resources:
            where = f" {r.physical_id}" if r.physical_id else ""
            action = "served by the local runtime" if r.action == "local-runtime" else r.action
            lines.append(f"  {r.logical_id:<22} {r.type:<32} {action}{where}")
        return "\n".join(lines)


# -- resolution and provisioning -------------------------------------------------------------------
def _error_code(exc: Exception) -> str:
    return str((getattr(exc, "response", None) or {}).get("Error", {}).get("Code", ""))


@dataclass
class _Made:
    ref: str
    attributes: dict[str, str]
    action: str


class _Provisioner:
    def __init__(self, template: dict[str, Any], parameters: dict[str, str], settings: Settings) -> None:
        self.template = template
        self.resources: dict[str, Any] = template["Resources"]
        self.parameters = parameters
        self.settings = settings
        self.region = settings.region
        self.made: dict[str, _Made] = {}
        self.order: list[str] = []
        self._visiting: set[str] = set()
        self._conditions: dict[str, bool] = {}
        self._unnamed_bucket: str | None = None

    # -- intrinsics -------------------------------------------------------------------------------
    def pseudo(self, name: str) -> Any:
        values: dict[str, Any] = {
            "AWS::Region": self.region, "AWS::AccountId": LOCAL_ACCOUNT, "AWS::Partition": PARTITION,
            "AWS::URLSuffix": URL_SUFFIX, "AWS::StackName": self.settings.table_prefix,
            "AWS::StackId": f"arn:{PARTITION}:cloudformation:{self.region}:{LOCAL_ACCOUNT}:stack/"
                            f"{self.settings.table_prefix}/local", "AWS::NoValue": _NO_VALUE,
            "AWS::NotificationARNs": [],
        }
        if name not in values:
            raise ProvisionError(f"unknown pseudo parameter {name}")
        return values[name]

    def ref(self, name: str) -> Any:
        if name in self.parameters:
            return self.parameters[name]
        if name.startswith("AWS::"):
            return self.pseudo(name)
        if name in self.resources:
            return self.ensure(name).ref
        raise ProvisionError(f"Ref to {name!r}: no such parameter or resource")

    def get_att(self, resource: str, attribute: str) -> str:
        if resource not in self.resources:
            raise ProvisionError(f"Fn::GetAtt {resource}.{attribute}: no such resource")
        made = self.ensure(resource)
        if attribute not in made.attributes:
            raise ProvisionError(f"Fn::GetAtt {resource}.{attribute}: attribute not known locally "
                                 f"(known: {', '.join(sorted(made.attributes)) or 'none'})")
        return made.attributes[attribute]

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            conditions = self.template.get("Conditions") or {}
            if name not in conditions:
                raise ProvisionError(f"unknown condition {name!r}")
            self._conditions[name] = bool(self.resolve(conditions[name]))
        return self._conditions[name]

    def sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            text, variables = arg[0], {k: self.resolve(v) for k, v in (arg[1] or {}).items()}
        else:
            text, variables = arg, {}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                resource, _, attribute = name.partition(".")
                return self.get_att(resource, attribute)
            return str(self.ref(name))

        return _SUB_VAR.sub(replace, text)

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            resolved = [self.resolve(v) for v in value]
            return [v for v in resolved if v is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Condition" and isinstance(arg, str):
                return self.condition(arg)
            if key.startswith("Fn::"):
                return self.intrinsic(key, arg)
        out = {}
        for key, item in value.items():
            resolved = self.resolve(item)
            if resolved is not _NO_VALUE:
                out[key] = resolved
        return out

    def intrinsic(self, key: str, arg: Any) -> Any:
        if key == "Fn::GetAtt":
            resource, attribute = arg if isinstance(arg, list) else str(arg).split(".", 1)
            return self.get_att(resource, self.resolve(attribute))
        if key == "Fn::Sub":
            return self.sub(arg)
        if key == "Fn::Join":
            delimiter, items = arg
            return str(delimiter).join(str(i) for i in self.resolve(items))
        if key == "Fn::Select":
            index, items = arg
            return self.resolve(items)[int(self.resolve(index))]
        if key == "Fn::Split":
            delimiter, text = arg
            return str(self.resolve(text)).split(delimiter)
        if key == "Fn::If":
            name, when_true, when_false = arg
            return self.resolve(when_true if self.condition(name) else when_false)
        if key == "Fn::Equals":
            left, right = (self.resolve(a) for a in arg)
            return str(left) == str(right)
        if key == "Fn::Not":
            return not self.resolve(arg[0])
        if key == "Fn::And":
            return all(self.resolve(a) for a in arg)
        if key == "Fn::Or":
            return any(self.resolve(a) for a in arg)
        if key == "Fn::FindInMap":
            mapping, top, second = (self.resolve(a) for a in arg)
            return self.template["Mappings"][mapping][top][second]
        raise ProvisionError(f"{key} is not supported by the local provisioner")

    # -- resources --------------------------------------------------------------------------------
    def ensure(self, logical_id: str) -> _Made:
        if logical_id in self.made:
            return self.made[logical_id]
        if logical_id in self._visiting:
            raise ProvisionError(f"circular reference through {logical_id}")
        self._visiting.add(logical_id)
        try:
            spec = self.resources[logical_id]
            type_ = spec.get("Type", "")
            for dependency in _as_list(spec.get("DependsOn")):
                self.ensure(dependency)
            if spec.get("Condition") and not self.condition(spec["Condition"]):
                made = _Made("", {}, "skipped (condition)")
            elif type_ in LOCAL_RUNTIME_TYPES:
                made = self.local_runtime(logical_id, type_, spec.get("Properties") or {})
            elif type_ in PROVISIONED_TYPES:
                props = self.resolve(spec.get("Properties") or {})
                made = getattr(self, "make_" + type_.split("::", 1)[1].replace("::", "_").lower())(logical_id, props)
            else:
                raise ProvisionError(f"{logical_id}: resource type {type_} is neither provisioned locally nor served "
                                     "by the local runtime (teach sdk/stratoflow/local/provision.py about it)")
        finally:
            self._visiting.discard(logical_id)
        self.made[logical_id] = made
        self.order.append(logical_id)
        return made

    def local_runtime(self, logical_id: str, type_: str, props: dict[str, Any]) -> _Made:
        """Names and ARNs the provisioned resources may refer to (the scheduler's target and role)."""
        account, region = LOCAL_ACCOUNT, self.region
        if type_ in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
            name = str(self.resolve(props["FunctionName"])) if "FunctionName" in props else logical_id
            arn = f"arn:{PARTITION}:lambda:{region}:{account}:function:{name}"
            return _Made(name, {"Arn": arn}, "local-runtime")
        if type_ == "AWS::IAM::Role":
            name = str(self.resolve(props["RoleName"])) if "RoleName" in props else logical_id
            return _Made(name, {"Arn": f"arn:{PARTITION}:iam::{account}:role/{name}", "RoleId": name},
                         "local-runtime")
        if type_ in ("AWS::Serverless::HttpApi", "AWS::Serverless::Api", "AWS::ApiGatewayV2::Api"):
            return _Made(logical_id.lower(), {"ApiEndpoint": "http://127.0.0.1"}, "local-runtime")
        return _Made(logical_id, {"Arn": f"arn:{PARTITION}:local:{region}:{account}:{logical_id}"}, "local-runtime")

    def make_dynamodb_table(self, logical_id: str, props: dict[str, Any]) -> _Made:
        client = _aws.client("dynamodb", self.settings)
        name = props.get("TableName") or f"{self.settings.table_prefix}-{logical_id}"
        action = "existing"
        try:
            description = client.describe_table(TableName=name)["Table"]
        except Exception as exc:
            if _error_code(exc) != "ResourceNotFoundException":
                raise
            keys = ("AttributeDefinitions", "KeySchema", "BillingMode", "GlobalSecondaryIndexes",
                    "LocalSecondaryIndexes", "ProvisionedThroughput", "StreamSpecification", "TableClass")
            args: dict[str, Any] = {k: props[k] for k in keys if k in props}
            if "SSESpecification" in props:
                sse = dict(props["SSESpecification"])
                args["SSESpecification"] = {"Enabled": _bool(sse.get("SSEEnabled", False)),
                                            **({"SSEType": sse["SSEType"]} if "SSEType" in sse else {})}
            description = client.create_table(TableName=name, **args)["TableDescription"]
            action = "created"
        ttl = props.get("TimeToLiveSpecification")
        if ttl and _bool(ttl.get("Enabled")):
            current = client.describe_time_to_live(TableName=name).get("TimeToLiveDescription", {})
            if current.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
                client.update_time_to_live(TableName=name, TimeToLiveSpecification={
                    "Enabled": True, "AttributeName": ttl["AttributeName"]})
        pitr = props.get("PointInTimeRecoverySpecification")
        if pitr and _bool(pitr.get("PointInTimeRecoveryEnabled")):
            client.update_continuous_backups(TableName=name, PointInTimeRecoverySpecification={
                "PointInTimeRecoveryEnabled": True})
        attributes = {"Arn": description["TableArn"]}
        if description.get("LatestStreamArn"):
            attributes["StreamArn"] = description["LatestStreamArn"]
        return _Made(name, attributes, action)

    def make_s3_bucket(self, logical_id: str, props: dict[str, Any]) -> _Made:
        name = props.get("BucketName")
        if not name:
            if self._unnamed_bucket is not None:
                raise ProvisionError(f"{logical_id}: a second bucket without BucketName ({self._unnamed_bucket} is "
                                     "already settings.bucket); name it in the template")
            name, self._unnamed_bucket = self.settings.bucket, logical_id
        client = _aws.client("s3", self.settings)
        action = "existing"
        try:
            client.head_bucket(Bucket=name)
        except Exception:
            args: dict[str, Any] = {"Bucket": name}
            if self.region != "us-east-1":
                args["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            client.create_bucket(**args)
            action = "created"
        if action == "created":
            self._configure_bucket(client, name, props)
        attributes = {"Arn": f"arn:{PARTITION}:s3:::{name}", "DomainName": f"{name}.s3.{URL_SUFFIX}",
                      "RegionalDomainName": f"{name}.s3.{self.region}.{URL_SUFFIX}"}
        return _Made(name, attributes, action)

    @staticmethod
    def _configure_bucket(client: Any, name: str, props: dict[str, Any]) -> None:
        if "VersioningConfiguration" in props:
            client.put_bucket_versioning(Bucket=name, VersioningConfiguration={
                "Status": props["VersioningConfiguration"]["Status"]})
        if "BucketEncryption" in props:
            rules = [{"ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"],
                      **({"BucketKeyEnabled": _bool(rule["BucketKeyEnabled"])} if "BucketKeyEnabled" in rule else {})}
                     for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]]
            client.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
        if "PublicAccessBlockConfiguration" in props:
            client.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration={
                k: _bool(v) for k, v in props["PublicAccessBlockConfiguration"].items()})
        if "OwnershipControls" in props:
            client.put_bucket_ownership_controls(Bucket=name, OwnershipControls=props["OwnershipControls"])
        lifecycle = (props.get("LifecycleConfiguration") or {}).get("Rules")
        if lifecycle:
            client.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={
                "Rules": [_lifecycle_rule(rule) for rule in lifecycle]})
        if props.get("Tags"):
            client.put_bucket_tagging(Bucket=name, Tagging={"TagSet": props["Tags"]})

    def make_s3_bucketpolicy(self, logical_id: str, props: dict[str, Any]) -> _Made:
        """The policy without its TLS-only statements: the local endpoint is plain HTTP, and moto
        enforces a deny on ``aws:SecureTransport`` false, which would refuse every request."""
        bucket = props["Bucket"]
        document = dict(props["PolicyDocument"])
        statements = [st for st in document.get("Statement", []) if "aws:SecureTransport" not in json.dumps(
            st.get("Condition", {}))]
        if statements:
            document["Statement"] = statements
            _aws.client("s3", self.settings).put_bucket_policy(Bucket=bucket, Policy=json.dumps(document))
        return _Made(bucket, {}, "created" if statements else "skipped (TLS-only: the local endpoint is HTTP)")

    def make_sqs_queue(self, logical_id: str, props: dict[str, Any]) -> _Made:
        client = _aws.client("sqs", self.settings)
        name = props.get("QueueName") or f"{self.settings.table_prefix}-{logical_id}"
        attributes: dict[str, str] = {}
        for key in _SQS_ATTRIBUTES:
            if key not in props:
                continue
            value = props[key]
            if isinstance(value, dict):
                attributes[key] = json.dumps({k: str(v) if k == "maxReceiveCount" else v for k, v in value.items()})
            elif isinstance(value, bool):
                attributes[key] = "true" if value else "false"
            else:
                attributes[key] = str(value)
        try:
            url = client.get_queue_url(QueueName=name)["QueueUrl"]
            action = "existing"
        except Exception as exc:
            if "NonExistentQueue" not in _error_code(exc) and "QueueDoesNotExist" not in _error_code(exc):
                raise
            url = client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
            action = "created"
        account = url.rstrip("/").split("/")[-2]
        return _Made(url, {"Arn": f"arn:{PARTITION}:sqs:{self.region}:{account}:{name}", "QueueName": name,
                           "QueueUrl": url}, action)

    def make_scheduler_schedulegroup(self, logical_id: str, props: dict[str, Any]) -> _Made:
        name = props.get("Name") or logical_id
        client = _aws.client("scheduler", self.settings)
        action = "existing"
        try:
            client.get_schedule_group(Name=name)
        except Exception as exc:
            if _error_code(exc) != "ResourceNotFoundException":
                raise
            action = "created"
            try:
                client.create_schedule_group(Name=name)
            except Exception as exc:
                if _error_code(exc) != "ConflictException":
                    raise
        arn = f"arn:{PARTITION}:scheduler:{self.region}:{LOCAL_ACCOUNT}:schedule-group/{name}"
        return _Made(name, {"Arn": arn}, action)

    def make_scheduler_schedule(self, logical_id: str, props: dict[str, Any]) -> _Made:
        name = props.get("Name") or logical_id
        group = props.get("GroupName") or "default"
        args = {k: props[k] for k in ("ScheduleExpression", "ScheduleExpressionTimezone", "FlexibleTimeWindow",
                                      "Target", "State", "Description", "StartDate", "EndDate") if k in props}
        if "FlexibleTimeWindow" in args:
            window = dict(args["FlexibleTimeWindow"])
            if "MaximumWindowInMinutes" in window:
                window["MaximumWindowInMinutes"] = int(window["MaximumWindowInMinutes"])
            args["FlexibleTimeWindow"] = window
        client = _aws.client("scheduler", self.settings)
        action = "existing"
        try:
            client.get_schedule(Name=name, GroupName=group)
        except Exception as exc:
            if _error_code(exc) != "ResourceNotFoundException":
                raise
            action = "created"
            try:
                client.create_schedule(Name=name, GroupName=group, **args)
            except Exception as exc:
                if _error_code(exc) != "ConflictException":
                    raise
        arn = f"arn:{PARTITION}:scheduler:{self.region}:{LOCAL_ACCOUNT}:schedule/{group}/{name}"
        return _Made(name, {"Arn": arn}, action)


    def make_secretsmanager_secret(self, logical_id: str, props: dict[str, Any]) -> _Made:

        name = str(props.get("Name") or f"{self.settings.table_prefix}-{logical_id}")
        if "SecretString" in props:
            value = str(props["SecretString"])
        elif "GenerateSecretString" in props:
            value = home_key(self.settings.home).hex()
        else:
            raise ProvisionError(f"{logical_id}: a secret needs SecretString or GenerateSecretString")
        client = _aws.client("secretsmanager", self.settings)
        try:
            client.describe_secret(SecretId=name)
            action = "existing"
        except client.exceptions.ResourceNotFoundException:
            action = "created"
        arn = ensure_result_key_secret(self.settings, name, value)
        # Ref of a secret is its ARN, as in CloudFormation.
        return _Made(arn, {"Id": arn, "Name": name}, action)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _bool(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def _lifecycle_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """A CloudFormation lifecycle rule in the S3 API's shape (the subset templates use)."""
    out: dict[str, Any] = {"ID": rule.get("Id", "rule"), "Status": rule.get("Status", "Enabled"),
                           "Filter": {"Prefix": rule.get("Prefix", "")}}
    if "ExpirationInDays" in rule:
        out["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
    if "NoncurrentVersionExpiration" in rule:
        days = rule["NoncurrentVersionExpiration"]["NoncurrentDays"]
        out["NoncurrentVersionExpiration"] = {"NoncurrentDays": int(days)}
    if "AbortIncompleteMultipartUpload" in rule:
        out["AbortIncompleteMultipartUpload"] = {
            "DaysAfterInitiation": int(rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])}
    return out


def template_parameters(template: Mapping[str, Any], settings: Settings,
                        overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """Parameter values for local use: defaults, then the settings (``TablePrefix``), then overrides."""
    declared: dict[str, Any] = template.get("Parameters") or {}
    values = {name: str(spec["Default"]) for name, spec in declared.items() if "Default" in spec}
    for name, from_settings in SETTINGS_PARAMETERS.items():
        if name in declared:
            values[name] = from_settings(settings)
    for name, value in (overrides or {}).items():
        if name not in declared:
            raise ProvisionError(f"parameter {name!r} is not declared by the template")
        values[name] = str(value)
    missing = sorted(set(declared) - set(values))
    if missing:
        raise ProvisionError(f"parameters without a default need a value: {', '.join(missing)}")
    return values


def provision_from_template(settings: Settings, template_path: Path | str | None = None, *,
                            parameters: Mapping[str, str] | None = None) -> ProvisionReport:
    """Create every table, bucket, queue and schedule (group) ``template_path`` declares (default:
    the checkout's ``template.yaml``) at ``settings``' endpoint, named from ``settings``.
    Returns what was created, what existed, and what the local runtime serves, with the time taken."""
    started = time.perf_counter()
    path = Path(template_path) if template_path is not None else default_template_path()
    if path is None:
        raise ProvisionError(f"no {TEMPLATE_NAME} next to this Stratoflow package or in the current directory")
    template = load_template(path)
    values = template_parameters(template, settings, parameters)
    provisioner = _Provisioner(template, values, settings)
    for logical_id in template["Resources"]:
        provisioner.ensure(logical_id)
    report = ProvisionReport(template=path, parameters=values)
    for logical_id in template["Resources"]:  # the template's order, not the creation order
        made = provisioner.made[logical_id]
        report.resources.append(ProvisionedResource(logical_id, template["Resources"][logical_id]["Type"],
                                                    made.ref if made.action != "local-runtime" else "", made.action))
    report.seconds = time.perf_counter() - started
    return report
