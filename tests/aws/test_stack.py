"""Opt-in: deploy template.yaml to a real AWS account, run examples/etl.py's flow through a
deployment on it, delete the stack.

Enabled only with ``STRATOFLOW_TEST_AWS=1`` and credentials for an account where creating a
CloudFormation stack (IAM roles included) is allowed. Needs ``sam`` (``make check`` installs it in
.aws-sam/tools; ``SAM`` overrides the path) and python3.13 on PATH for ``sam build``. Region:
``AWS_REGION`` (default us-east-1). The stack, its tables and its bucket are named uniquely
(``sf-test-<random>``) and deleted in ``finally`` (tables and bucket are ``Retain``ed by the
template, so the test deletes them itself).

    STRATOFLOW_TEST_AWS=1 AWS_PROFILE=sandbox .venv/bin/pytest -m aws tests/aws -v
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENABLED = os.environ.get("STRATOFLOW_TEST_AWS") == "1"

pytestmark = [
    pytest.mark.aws,
    pytest.mark.skipif(not ENABLED, reason="deploys a real AWS stack (costs money): set STRATOFLOW_TEST_AWS=1 "
                                          "and AWS credentials to run"),
    pytest.mark.timeout(3600),
]


def _sam() -> str:
    found = os.environ.get("SAM") or shutil.which("sam") or str(ROOT / ".aws-sam" / "tools" / "bin" / "sam")
    if not Path(found).exists() and shutil.which(found) is None:
        pytest.fail("sam not found: run `make check` (installs .aws-sam/tools) or set SAM=/path/to/sam")
    return found


def _run(*argv: str) -> None:
    subprocess.run(list(argv), cwd=ROOT, check=True, env={**os.environ, "SAM_CLI_TELEMETRY": "0"})


def _delete_retained(outputs: dict[str, str], region: str) -> None:
    """Tables and the bucket survive a stack deletion (DeletionPolicy: Retain): delete them."""
    import boto3

    prefix = outputs.get("TablePrefix")
    if prefix:
        dynamodb = boto3.client("dynamodb", region_name=region)
        for kind in ("flow-runs", "task-runs", "logs", "objects"):
            with contextlib.suppress(dynamodb.exceptions.ResourceNotFoundException):
                dynamodb.delete_table(TableName=f"{prefix}-{kind}")
    bucket = outputs.get("BucketName")
    if bucket:
        s3 = boto3.resource("s3", region_name=region).Bucket(bucket)
        try:
            s3.object_versions.delete()
            s3.delete()
        except Exception as exc:  # reported, not raised: the stack's own deletion already ran
            print(f"could not delete bucket {bucket}: {exc}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    from stratoflow.cli.config import read_stack_outputs

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    suffix = uuid.uuid4().hex[:8]
    name, prefix = f"sf-test-{suffix}", f"sf-test-{suffix}"
    build_dir = tmp_path_factory.mktemp("sam-build")
    sam = _sam()
    outputs: dict[str, str] = {}
    try:
        _run(sam, "build", "--template", "template.yaml", "--build-dir", str(build_dir))
        _run(sam, "deploy", "--template-file", str(build_dir / "template.yaml"), "--stack-name", name,
             "--region", region, "--resolve-s3", "--capabilities", "CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND",
             "--no-confirm-changeset", "--no-fail-on-empty-changeset",
             "--parameter-overrides", f"Stage=test TablePrefix={prefix} ExecutorConcurrency=2 LogRetentionDays=1")
        outputs = read_stack_outputs(name, region=region)
        yield outputs
    finally:
        subprocess.run([sam, "delete", "--stack-name", name, "--region", region, "--no-prompts"], cwd=ROOT,
                       check=False)
        _delete_retained(outputs or {"TablePrefix": prefix}, region)


@pytest.fixture
def sdk_on_stack(stack: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """The SDK configured exactly as `stratoflow config from-stack` configures it."""
    from stratoflow.cli.config import settings_from_outputs
    from stratoflow.settings import _STACK_VARS, reset_settings
    from stratoflow.storage import aws as _aws

    for var in _STACK_VARS:
        monkeypatch.delenv(var, raising=False)
    env = settings_from_outputs(stack)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("STRATOFLOW_HOME", str(tmp_path / "home"))
    reset_settings()
    _aws.clear_clients()
    yield env
    reset_settings()
    _aws.clear_clients()


def test_etl_runs_through_a_deployment_on_the_stack(stack: dict[str, str], sdk_on_stack: dict[str, str]) -> None:
    from stratoflow import get_client, run_deployment
    from stratoflow.deployments.deploy import deploy

    client = get_client()
    pool = stack["DefaultPoolName"]
    client.create_work_pool(pool)  # the record; its queues are the stack's (same names and attributes)
    assert client.read_work_pool(pool).queue_url == stack["DefaultPoolQueueUrl"]
    deploy(f"{ROOT / 'examples' / 'etl.py'}:etl", name="aws-test", work_pool=pool, source_dir=ROOT / "examples",
           parameters={"n": 4, "factor": 3}, lambda_platform=True)
    run = run_deployment("etl/aws-test", timeout=600, poll_interval=5)
    assert run.state is not None and run.state.type.value == "COMPLETED", run.state
    assert run.state.result() == 3 * sum(i * i for i in range(4))
    tasks = client.read_task_runs(run.id)
    assert len(tasks) == 1 + 4 + 1  # extract (retried in place), 4 transforms, load
    assert any("loaded 4 records" in log.message for log in client.iter_logs(run.id))


def test_a_lambda_pool_created_at_run_time_is_executed(stack: dict[str, str],
                                                       sdk_on_stack: dict[str, str]) -> None:
    """The API maps a new `lambda` pool's queue to the executor function (workpools/mappings.py)."""
    import uuid

    from stratoflow import get_client, run_deployment
    from stratoflow.deployments.deploy import deploy

    client = get_client()
    pool = f"extra-{uuid.uuid4().hex[:8]}"
    client.create_work_pool(pool, type="lambda")
    deploy(f"{ROOT / 'examples' / 'etl.py'}:etl", name="aws-extra-pool", work_pool=pool,
           source_dir=ROOT / "examples", parameters={"n": 2, "factor": 1}, lambda_platform=True)
    run = run_deployment("etl/aws-extra-pool", timeout=600, poll_interval=5)
    assert run.state is not None and run.state.type.value == "COMPLETED", run.state
