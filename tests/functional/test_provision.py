"""provision_from_template: the local cloud's resources come from template.yaml."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stratoflow.local.provision import ProvisionError, load_template, provision_from_template
from stratoflow.settings import get_settings
from stratoflow.storage import aws as _aws

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"


def test_every_data_resource_of_the_template_is_created_as_declared() -> None:
    settings = get_settings()
    report = provision_from_template(settings, TEMPLATE)
    template = load_template(TEMPLATE)
    assert [r.logical_id for r in report.resources] == list(template["Resources"])
    assert {r.type for r in report.provisioned} == {
        "AWS::DynamoDB::Table", "AWS::S3::Bucket", "AWS::SQS::Queue",
        "AWS::Scheduler::ScheduleGroup", "AWS::Scheduler::Schedule", "AWS::SecretsManager::Secret"}
    # The generated result key is the local home's, so embedded and local-cloud runs share it.
    from stratoflow.storage.keys import home_key

    secrets = _aws.client("secretsmanager", settings)
    value = secrets.get_secret_value(SecretId=report.physical_id("ResultKey"))["SecretString"]
    assert value == home_key(settings.home).hex()
    assert report.physical_id("ResultKey").startswith("arn:aws:secretsmanager:")
    # The bucket policy is TLS-only, and the local endpoint is plain HTTP (the moto server
    # enforces the deny): reported as skipped, never silently.
    policy_row = next(r for r in report.resources if r.type == "AWS::S3::BucketPolicy")
    assert policy_row.action.startswith("skipped (TLS-only")
    assert {r.logical_id for r in report.local_runtime} >= {
        "ApiFunction", "ExecutorFunction", "SchedulerFunction", "JanitorFunction", "Api", "SchedulerRole", "SdkLayer"}
    assert report.seconds < 5

    dynamodb = _aws.client("dynamodb", settings)
    for kind in ("flow-runs", "task-runs", "logs", "objects"):
        table = dynamodb.describe_table(TableName=settings.table_name(kind))["Table"]
        assert table["SSEDescription"]["Status"] == "ENABLED"
        backups = dynamodb.describe_continuous_backups(TableName=settings.table_name(kind))
        assert backups["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"][
            "PointInTimeRecoveryStatus"] == "ENABLED"
    ttl = dynamodb.describe_time_to_live(TableName=settings.table_name("logs"))["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")

    s3 = _aws.client("s3", settings)
    assert report.physical_id("Bucket") == settings.bucket
    assert s3.get_bucket_versioning(Bucket=settings.bucket)["Status"] == "Enabled"
    rules = s3.get_bucket_encryption(Bucket=settings.bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert all(s3.get_public_access_block(Bucket=settings.bucket)["PublicAccessBlockConfiguration"].values())
    template_policy = template["Resources"][policy_row.logical_id]["Properties"]["PolicyDocument"]["Statement"][0]
    assert template_policy["Effect"] == "Deny" and "aws:SecureTransport" in json.dumps(template_policy["Condition"])
    s3.put_object(Bucket=settings.bucket, Key="probe", Body=b"ok")
    assert s3.get_object(Bucket=settings.bucket, Key="probe")["Body"].read() == b"ok"


def test_the_tick_schedule_is_the_one_the_runtime_would_make() -> None:
    from stratoflow.storage.eventbridge import TICK_SCHEDULE_NAME, EventBridgeProvisioner

    settings = get_settings()
    report = provision_from_template(settings, TEMPLATE)
    provisioner = EventBridgeProvisioner(settings)
    tick = provisioner.get(TICK_SCHEDULE_NAME)  # read without ensure_group (see the note below)
    assert tick is not None and tick.is_tick and tick.enabled
    assert (tick.expression, tick.timezone) == ("rate(1 minute)", "UTC")
    assert provisioner.group == report.physical_id("ScheduleGroup")
    # Note: moto's CreateScheduleGroup replaces an existing group (AWS answers ConflictException),
    # so EventBridgeProvisioner.ensure_group() empties the group in moto; on AWS it is a no-op.


def test_provisioning_twice_changes_nothing_and_the_engine_runs_on_it() -> None:
    from stratoflow import flow

    settings = get_settings()
    first = provision_from_template(settings, TEMPLATE)
    again = provision_from_template(settings, TEMPLATE)
    assert {r.action for r in first.provisioned if r.type != "AWS::S3::BucketPolicy"} == {"created"}
    assert {r.action for r in again.provisioned if r.type != "AWS::S3::BucketPolicy"} == {"existing"}

    @flow
    def on_template_tables(x: int) -> int:
        return x + 1

    assert on_template_tables(1) == 2


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "template.yaml"
    path.write_text(textwrap.dedent(body))
    return path


def test_a_resource_type_it_does_not_know_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, """
        Resources:
          Topic:
            Type: AWS::SNS::Topic
    """)
    with pytest.raises(ProvisionError, match="AWS::SNS::Topic"):
        provision_from_template(get_settings(), path)


def test_intrinsics_conditions_and_parameters(tmp_path: Path) -> None:
    path = _write(tmp_path, """
        Parameters:
          TablePrefix: { Type: String, Default: ignored }
          Kind: { Type: String, Default: small }
          Names: { Type: String, Default: "a,b,c" }
        Conditions:
          IsBig: !Equals [!Ref Kind, big]
          NotBig: !Not [!Condition IsBig]
        Mappings:
          Sizes: { small: { Seconds: 30 }, big: { Seconds: 60 } }
        Resources:
          Dlq:
            Type: AWS::SQS::Queue
            Properties:
              QueueName: !Join ["-", [!Ref TablePrefix, !Select [1, !Split [",", !Ref Names]], dlq]]
          Queue:
            Type: AWS::SQS::Queue
            Properties:
              QueueName: !Sub
                - "${TablePrefix}-${Which}-q"
                - { Which: !If [IsBig, big, small] }
              VisibilityTimeout: !FindInMap [Sizes, !Ref Kind, Seconds]
              DelaySeconds: !If [NotBig, !Ref AWS::NoValue, 5]
              RedrivePolicy: { deadLetterTargetArn: !GetAtt Dlq.Arn, maxReceiveCount: 3 }
          OnlyBig:
            Type: AWS::SQS::Queue
            Condition: IsBig
            Properties: { QueueName: never }
    """)
    settings = get_settings()
    report = provision_from_template(settings, path)
    assert report.parameters["TablePrefix"] == settings.table_prefix  # from the settings, not the default
    assert report.physical_id("Dlq").endswith(f"/{settings.table_prefix}-b-dlq")
    url = report.physical_id("Queue")
    assert url.endswith(f"/{settings.table_prefix}-small-q")
    attrs = _aws.client("sqs", settings).get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["VisibilityTimeout"] == "30" and attrs["DelaySeconds"] == "0"
    assert json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"].endswith(f":{settings.table_prefix}-b-dlq")
    assert [r.action for r in report.resources if r.logical_id == "OnlyBig"] == ["skipped (condition)"]

    big = provision_from_template(settings, path, parameters={"Kind": "big"})
    assert big.physical_id("Queue").endswith(f"/{settings.table_prefix}-big-q")
    assert big.physical_id("OnlyBig").endswith("/never")
    with pytest.raises(ProvisionError, match="not declared"):
        provision_from_template(settings, path, parameters={"Nope": "1"})


def test_unresolvable_references_are_errors(tmp_path: Path) -> None:
    path = _write(tmp_path, """
        Resources:
          Queue:
            Type: AWS::SQS::Queue
            Properties: { QueueName: !Ref Missing }
    """)
    with pytest.raises(ProvisionError, match="Missing"):
        provision_from_template(get_settings(), path)


@pytest.mark.slow
def test_a_moto_server_comes_up_from_the_template_in_under_5_seconds() -> None:
    """infra/provision.py --moto in a process of its own (moto's server backends are process-global)."""
    done = subprocess.run([sys.executable, str(ROOT / "infra" / "provision.py"), "--moto", "--json"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    created = {r["logical_id"] for r in report["resources"] if r["action"] == "created"}
    assert {"FlowRunsTable", "TaskRunsTable", "LogsTable", "ObjectsTable", "Bucket", "DefaultPoolQueue",
            "DefaultPoolDlq", "ScheduleGroup", "TickSchedule"} <= created
    assert report["moto_start_seconds"] + report["seconds"] < 5, report
