"""``stratoflow config from-stack``: settings from a CloudFormation stack's outputs (moto's CloudFormation)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from stratoflow.cli import main
from stratoflow.cli.config import OUTPUT_SETTINGS, StackConfigError, from_stack, settings_from_outputs

OUTPUTS = {
    "ApiUrl": "https://abc123.execute-api.eu-west-1.amazonaws.com",
    "TablePrefix": "stratoflow-prod",
    "BucketName": "stack-bucket-1x2y3z",
    "Region": "eu-west-1",
    "SchedulerTargetArn": "arn:aws:lambda:eu-west-1:123456789012:function:stratoflow-prod-scheduler",
    "SchedulerRoleArn": "arn:aws:iam::123456789012:role/stack-SchedulerRole-ABC",
    "ResultKeySecretArn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:stratoflow-prod-result-key-AbCdEf",
    "DefaultPoolQueueUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/stratoflow-prod-default--default",
}


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A stack in moto's CloudFormation whose outputs are the ones template.yaml declares."""
    from moto import mock_aws

    for key in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    template = {
        "Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": {key: {"Value": value} for key, value in OUTPUTS.items()},
    }
    with mock_aws():
        import boto3

        boto3.client("cloudformation", region_name="eu-west-1").create_stack(
            StackName="sf-prod", TemplateBody=json.dumps(template))
        yield "sf-prod"


def _run(*argv: str) -> int:
    return main(list(argv))


def test_writes_a_profile_file_a_shell_can_source(stack: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STRATOFLOW_HOME", str(tmp_path / "home"))
    assert _run("config", "from-stack", stack, "--region", "eu-west-1") == 0
    path = tmp_path / "home" / "profiles" / f"{stack}.env"
    assert f"wrote {path}" in capsys.readouterr().out
    assert path.stat().st_mode & 0o777 == 0o600
    # Source it in a real shell and read the environment back.
    shown = subprocess.run(["bash", "-c", f"source {shlex.quote(str(path))} && env -0"], capture_output=True,
                           check=True, env={"PATH": os.environ["PATH"]}).stdout.decode()
    env = dict(item.split("=", 1) for item in shown.split("\0") if "=" in item)
    assert env["STRATOFLOW_BACKEND"] == "aws"
    for output, variable in OUTPUT_SETTINGS.items():
        assert env[variable] == OUTPUTS[output]
    assert env["AWS_REGION"] == "eu-west-1"
    assert "AWS_PROFILE" not in env

    # The SDK's settings, read from exactly that environment.
    from stratoflow.settings import Settings

    monkeypatch.setattr(os, "environ", {**os.environ, **env})
    settings = Settings()
    assert (settings.table_prefix, settings.bucket, settings.region, settings.api_url) == (
        "stratoflow-prod", "stack-bucket-1x2y3z", "eu-west-1", OUTPUTS["ApiUrl"])
    assert settings.resolved_backend == "aws"


def test_print_emits_export_lines(stack: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("config", "from-stack", stack, "--print") == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if not line.startswith("#")]
    assert all(line.startswith("export ") for line in lines)
    assert f"export STRATOFLOW_TABLE_PREFIX={OUTPUTS['TablePrefix']}" in lines
    assert f"export STRATOFLOW_SCHEDULER_ROLE_ARN={OUTPUTS['SchedulerRoleArn']}" in lines


def test_json_prints_the_settings(stack: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("config", "from-stack", stack, "--print", "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["path"] is None and printed["settings"]["STRATOFLOW_BUCKET"] == OUTPUTS["BucketName"]
    target = tmp_path / "p.env"
    assert _run("--json", "config", "from-stack", stack, "--output", str(target)) == 0
    written = json.loads(capsys.readouterr().out)
    assert written["path"] == str(target) and written["settings"] == printed["settings"] and target.is_file()


def test_output_path_and_profile(stack: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    seen: list[str | None] = []
    real = boto3.session.Session

    def session(profile_name: str | None = None, region_name: str | None = None) -> boto3.session.Session:
        seen.append(profile_name)  # the named profile does not exist here: read with the test's keys
        return real(region_name=region_name)

    monkeypatch.setattr(boto3.session, "Session", session)
    target = tmp_path / "prod.env"
    assert _run("config", "from-stack", stack, "--profile", "prod-admin", "--output", str(target)) == 0
    assert seen == ["prod-admin"]
    assert "export AWS_PROFILE=prod-admin" in target.read_text().splitlines()


def test_a_missing_stack_or_a_foreign_stack_is_an_error(stack: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(StackConfigError, match="cannot read stack 'nope'"):
        from_stack("nope", print_=True)
    assert _run("config", "from-stack", "nope", "--print") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot read stack 'nope'") and len(err.strip().splitlines()) == 1
    with pytest.raises(StackConfigError, match="TablePrefix, BucketName"):
        settings_from_outputs({"ApiUrl": "https://x"})


def test_values_are_shell_quoted() -> None:
    from stratoflow.cli.config import render_exports

    text = render_exports(settings_from_outputs({"TablePrefix": "p", "BucketName": "b; rm -rf /"}), "s")
    assert "export STRATOFLOW_BUCKET='b; rm -rf /'" in text.splitlines()
