# ruff: noqa: F811 - pytest fixtures imported from test_api_handler are redefined as parameters
"""Deployments cannot point executors at code outside their package: POST /deployments refuses
entrypoints that leave the package and package URIs outside the stack's bucket (422, nothing
stored); the SDK refuses them before uploading; the executor refuses a stored record whose
package is elsewhere (the run fails, nothing is downloaded) and never runs a planted cache entry."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_api_handler import Reply, api, assert_error, handler, journal  # noqa: F401 - shared fixtures

from stratoflow.deployments import DeploymentError, deploy
from stratoflow.executor import Outcome, handle_message
from stratoflow.settings import get_settings, reset_settings
from stratoflow.states import StateType
from stratoflow.storage import get_server_store
from stratoflow.storage.blobs import S3Blobs
from stratoflow.workpools.messages import RunMessage

FLOWS = "from stratoflow import flow\n\n\n@flow\ndef etl(n: int = 3) -> int:\n    return {body}\n"
SHA = "ab" * 32


# load_entrypoint puts package roots on sys.path and their modules in sys.modules: undone after each test.
pytestmark = pytest.mark.usefixtures("restore_imports")


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STRATOFLOW_PACKAGE_CACHE_DIR", str(tmp_path / "package-cache"))
    reset_settings()
    return tmp_path / "package-cache"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "sub").mkdir(parents=True)
    (root / "flows.py").write_text(FLOWS.format(body="2 * n"))
    return root


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """URIs read from S3 (get_blob) and asked about (has_blob) in this test."""
    seen: list[str] = []
    real_get, real_has = S3Blobs.get_blob, S3Blobs.has_blob

    def get_blob(self: S3Blobs, uri: str) -> bytes:
        seen.append(uri)
        return real_get(self, uri)

    def has_blob(self: S3Blobs, uri: str) -> bool:
        seen.append(uri)
        return real_has(self, uri)

    monkeypatch.setattr(S3Blobs, "get_blob", get_blob)
    monkeypatch.setattr(S3Blobs, "has_blob", has_blob)
    return seen


# -- POST /deployments ------------------------------------------------------------------------------
def _bucket() -> str:
    return get_settings().bucket


@pytest.mark.parametrize(("body", "needles"), [
    ({"entrypoint": "/etc/flows.py:etl"}, ["body.entrypoint", "is absolute"]),
    ({"entrypoint": "../flows.py:etl"}, ["body.entrypoint", "'..' component"]),
    ({"entrypoint": "flows/../../../x.py:etl"}, ["body.entrypoint", "'..' component"]),
    ({"entrypoint": "..\\flows.py:etl"}, ["body.entrypoint", "backslash"]),
    ({"entrypoint": "flows.py"}, ["body.entrypoint", "is not path/to/file.py:flow_function"]),
    ({"entrypoint": "flows.py:etl", "path": "/srv/app"}, ["body.path", "is absolute"]),
    ({"entrypoint": "flows.py:etl", "path": "../app"}, ["body.path", "'..' component"]),
    ({"package_uri": "s3://attacker-bucket/packages/{sha}.zip", "package_sha256": SHA},
     ["body.package_uri", "is not where this stack keeps that package", "s3://{bucket}/packages/{sha}.zip"]),
    ({"package_uri": "s3://{bucket}/results/{sha}.zip", "package_sha256": SHA}, ["body.package_uri", "must be"]),
    ({"package_uri": "s3://{bucket}/packages/{other}.zip", "package_sha256": SHA}, ["body.package_uri", "must be"]),
    ({"package_uri": "https://example.com/packages/{sha}.zip", "package_sha256": SHA}, ["body.package_uri"]),
    ({"package_uri": "s3://{bucket}/packages/{sha}.zip"}, ["body.package_uri", "go together"]),
    ({"package_sha256": SHA}, ["body.package_uri", "go together"]),
    ({"package_uri": "s3://{bucket}/packages/{sha}.zip", "package_sha256": "../../x"},
     ["body.package_sha256", "not 64 hex digits"]),
])
def test_post_deployments_refuses_code_outside_the_package_and_stores_nothing(
        api: Callable[..., Reply], journal: Callable[[], int], client: Any, body: dict[str, Any],
        needles: list[str]) -> None:
    values = {"sha": SHA, "other": "cd" * 32, "bucket": _bucket()}
    body = {k: v.format(**values) for k, v in body.items()}
    writes = journal()
    reply = api("POST", "/deployments", body={"name": "prod", "flow_name": f"etl-{uuid.uuid4().hex[:8]}", **body})
    assert_error(reply, 422, *(n.format(**values) for n in needles))
    assert journal() == writes
    assert client.read_deployments() == []


def test_post_deployments_takes_the_stacks_own_package_uri(api: Callable[..., Reply], client: Any) -> None:
    uri = f"s3://{_bucket()}/packages/{SHA}.zip"
    reply = api("POST", "/deployments", body={"name": "prod", "flow_name": "etl", "entrypoint": "flows/etl.py:etl",
                                              "path": ".", "package_uri": uri, "package_sha256": SHA.upper()})
    assert reply.status == 201, reply.body
    assert (reply.body["package_uri"], reply.body["package_sha256"]) == (uri, SHA)


def test_an_update_pointing_elsewhere_leaves_the_deployment_as_it_was(api: Callable[..., Reply],
                                                                     journal: Callable[[], int], client: Any) -> None:
    uri = f"s3://{_bucket()}/packages/{SHA}.zip"
    api("POST", "/deployments", body={"name": "prod", "flow_name": "etl", "entrypoint": "flows.py:etl",
                                      "package_uri": uri, "package_sha256": SHA})
    writes = journal()
    reply = api("POST", "/deployments", body={"name": "prod", "flow_name": "etl",
                                              "package_uri": f"s3://elsewhere/packages/{SHA}.zip",
                                              "package_sha256": SHA})
    assert_error(reply, 422, "body.package_uri")
    assert journal() == writes
    stored = client.read_deployment("etl/prod")
    assert (stored.package_uri, stored.version) == (uri, 1)


# -- the SDK's deploy -------------------------------------------------------------------------------
def test_deploy_sends_a_normalised_entrypoint_the_api_accepts(client: Any, project: Path) -> None:
    dep = deploy("./sub/../flows.py:etl", name="prod", source_dir=project)
    assert dep.entrypoint == "flows.py:etl"
    assert dep.package_uri == f"s3://{_bucket()}/packages/{dep.package_sha256}.zip"


def test_deploy_refuses_a_package_in_another_bucket_without_asking_it(client: Any, project: Path,
                                                                      downloads: list[str]) -> None:
    with pytest.raises(DeploymentError, match=r"s3://other-bucket/packages/.* is not in this stack's bucket"):
        deploy("flows.py:etl", name="prod", source_dir=project, package_uri=f"s3://other-bucket/packages/{SHA}.zip",
               package_sha256=SHA)
    assert downloads == [] and client.read_deployments() == []


def test_deploy_refuses_a_package_elsewhere_in_the_bucket(client: Any, project: Path) -> None:
    data = b"PK\x05\x06" + b"\0" * 18  # an empty zip
    sha = hashlib.sha256(data).hexdigest()
    uri = client.store.put_blob(f"uploads/{sha}.zip", data)
    with pytest.raises(DeploymentError, match=rf"is not where this stack keeps that package: it must be "
                                              rf"s3://{_bucket()}/packages/{sha}\.zip"):
        deploy("flows.py:etl", name="prod", source_dir=project, package_uri=uri, package_sha256=sha)
    assert client.read_deployments() == []


# -- the executor -----------------------------------------------------------------------------------
def _run(client: Any, dep: Any, pool: str, n: int) -> tuple[Any, Any]:
    run = client.create_flow_run_from_deployment(f"{dep.flow_name}/{dep.name}", parameters={"n": n})
    body = RunMessage(flow_run_id=run.id, deployment_id=dep.id, work_pool_name=pool,
                      work_queue_name="default").model_dump_json()
    result = handle_message(body, store=get_server_store(), settings=get_settings())
    return result, client.read_flow_run(run.id)


def test_the_executor_refuses_a_deployment_whose_package_is_in_another_bucket(
        client: Any, project: Path, cache_dir: Path, downloads: list[str]) -> None:
    pool = f"pool-{uuid.uuid4().hex[:8]}"
    client.create_work_pool(pool)
    dep = deploy("flows.py:etl", name="prod", source_dir=project, work_pool=pool)
    # A record written before the API checked package URIs (or directly in the table).
    stored = client.store.get_object("deployment", dep.id)
    foreign = f"s3://attacker-bucket/packages/{dep.package_sha256}.zip"
    client.store.put_object("deployment", dep.id, {**stored.doc, "package_uri": foreign})
    downloads.clear()

    result, run = _run(client, dep, pool, 4)
    assert result.outcome == Outcome.FAILED and run.state_type == StateType.FAILED
    message = run.state.message or ""
    assert f"package_uri '{foreign}' is not where this stack keeps that package" in message
    assert "refusing to download it" in message and "\n" not in message
    assert downloads == []
    assert not cache_dir.exists() or list(cache_dir.iterdir()) == []


def test_the_executor_never_runs_a_directory_planted_in_its_cache(client: Any, project: Path,
                                                                  cache_dir: Path) -> None:
    pool = f"pool-{uuid.uuid4().hex[:8]}"
    client.create_work_pool(pool)
    dep = deploy("flows.py:etl", name="prod", source_dir=project, work_pool=pool)
    planted = cache_dir / (dep.package_sha256 or "")
    planted.mkdir(parents=True, mode=0o700)
    cache_dir.chmod(0o700)
    (planted / "flows.py").write_text(FLOWS.format(body="-1"))

    result, run = _run(client, dep, pool, 4)
    assert result.outcome == Outcome.RAN and run.state_type == StateType.COMPLETED, run.state
    assert run.state.result() == 8  # the deployed code, not the planted one
    assert (planted / "flows.py").read_text() == FLOWS.format(body="2 * n")


def test_the_executor_refuses_a_cache_others_can_write(client: Any, project: Path, cache_dir: Path,
                                                       downloads: list[str]) -> None:
    pool = f"pool-{uuid.uuid4().hex[:8]}"
    client.create_work_pool(pool)
    dep = deploy("flows.py:etl", name="prod", source_dir=project, work_pool=pool)
    cache_dir.mkdir()
    cache_dir.chmod(0o777)
    downloads.clear()

    result, run = _run(client, dep, pool, 4)
    assert result.outcome == Outcome.FAILED
    assert f"package cache {cache_dir} is writable by its group or by everyone" in (run.state.message or "")
    assert downloads == [] and list(cache_dir.iterdir()) == []
