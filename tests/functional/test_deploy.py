"""``deploy()``, ``deploy_project()`` and ``stratoflow deploy`` on the embedded cloud: packages
land content-addressed in S3, deployments record entrypoint/hash/schema, refusals leave nothing."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stratoflow.deployments import (
    DeploymentError,
    deploy,
    deploy_project,
    load_entrypoint,
    materialize_package,
)
from stratoflow.storage.blobs import S3Blobs

FLOW_SOURCE = """
from stratoflow import flow
import {helper}

@flow
def etl(n: int = 3, label: str = "x") -> int:
    \"\"\"Doubles n.\"\"\"
    return {helper}.double(n)

@flow
def report(day: str) -> str:
    return day
"""


# load_entrypoint puts package roots on sys.path and their modules in sys.modules: undone after each test.
pytestmark = pytest.mark.usefixtures("restore_imports")


@pytest.fixture
def project(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    helper = "helper_" + hashlib.sha256(request.node.name.encode()).hexdigest()[:8]
    root = tmp_path / "proj"
    root.mkdir()
    (root / "flows.py").write_text(FLOW_SOURCE.format(helper=helper))
    (root / f"{helper}.py").write_text("def double(x):\n    return 2 * x\n")
    (root / ".stratoflowignore").write_text("*.log\n")
    (root / "debug.log").write_text("not shipped")
    return root


@pytest.fixture
def pool(client: Any) -> str:
    client.create_work_pool("default")
    client.create_work_queue("default", "high", priority=1)
    return "default"


@pytest.fixture
def uploads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Keys of the packages put to S3 in this test."""
    keys: list[str] = []
    real = S3Blobs.put_blob

    def counting(self: S3Blobs, key: str, data: bytes) -> str:
        if key.startswith("packages/"):
            keys.append(key)
        return real(self, key, data)

    monkeypatch.setattr(S3Blobs, "put_blob", counting)
    return keys


def nothing_written(client: Any, uploads: list[str]) -> bool:
    return uploads == [] and client.read_deployments() == []


# -- deploy() ---------------------------------------------------------------------------------------
def test_deploy_records_entrypoint_hash_schema_and_uploads_the_package(client: Any, project: Path, pool: str,
                                                                       uploads: list[str]) -> None:
    lines: list[str] = []
    dep = deploy("flows.py:etl", name="prod", source_dir=project, work_pool=pool, work_queue="high",
                 parameters={"n": "5"}, tags=["b", "a"], progress=lines.append)
    assert (dep.flow_name, dep.name, dep.version) == ("etl", "prod", 1)
    assert dep.entrypoint == "flows.py:etl"
    assert dep.parameters == {"n": 5}  # coerced by the signature
    assert dep.parameter_openapi_schema["properties"]["n"]["type"] == "integer"
    assert (dep.work_pool_name, dep.work_queue_name, dep.tags, dep.description) == (pool, "high", ["a", "b"],
                                                                                     "Doubles n.")
    assert dep.package_uri == f"s3://{client.store.settings.bucket}/packages/{dep.package_sha256}.zip"
    data = client.store.get_blob(dep.package_uri)
    assert hashlib.sha256(data).hexdigest() == dep.package_sha256
    assert uploads == [f"packages/{dep.package_sha256}.zip"]
    with zipfile.ZipFile(__import__("io").BytesIO(data)) as zf:
        assert "flows.py" in zf.namelist() and "debug.log" not in zf.namelist()
    assert client.read_deployment("etl/prod").package_sha256 == dep.package_sha256
    assert any(line.startswith("packaged ") for line in lines) and any("uploading" in line for line in lines)


def test_redeploying_unchanged_code_uploads_nothing_and_bumps_the_version(client: Any, project: Path, pool: str,
                                                                          uploads: list[str]) -> None:
    first = deploy("flows.py:etl", name="prod", source_dir=project, work_pool=pool)
    lines: list[str] = []
    second = deploy("flows.py:etl", name="prod", source_dir=project, work_pool=pool, progress=lines.append)
    assert second.package_uri == first.package_uri and second.version == 2
    assert len(uploads) == 1
    assert any(line.startswith("already uploaded (same content)") for line in lines)
    (project / "flows.py").write_text((project / "flows.py").read_text() + "\n# changed\n")
    third = deploy("flows.py:etl", name="prod", source_dir=project, work_pool=pool)
    assert third.package_sha256 != first.package_sha256 and third.version == 3 and len(uploads) == 2


def test_deploying_a_flow_object_derives_its_entrypoint(client: Any, project: Path, pool: str) -> None:
    flow = load_entrypoint(project, "flows.py:report")
    dep = deploy(flow, name="daily", work_pool=pool, parameters={"day": "mon"}, cron="0 6 * * *",
                 timezone="Europe/Paris")
    assert dep.entrypoint == "flows.py:report" and dep.flow_name == "report"
    assert [(s.schedule.type, s.schedule.cron, s.schedule.timezone) for s in dep.schedules] == [  # type: ignore[union-attr]
        ("cron", "0 6 * * *", "Europe/Paris")]
    again = deploy(flow, name="daily", work_pool=pool, parameters={"day": "mon"}, cron="0 6 * * *",
                   timezone="Europe/Paris", source_dir=project.parent)
    assert again.entrypoint == "proj/flows.py:report"
    assert again.schedules[0].id == dep.schedules[0].id  # same schedule, same id
    via_method = flow.deploy("weekly", work_pool=pool, interval=604800)
    assert (via_method.name, via_method.entrypoint, via_method.package_sha256) == (
        "weekly", "flows.py:report", dep.package_sha256)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"parameters": {"n": "many"}}, r"invalid default parameters: n:"),
    ({"parameters": {"nope": 1}}, r"nope: unexpected parameter"),
    ({"work_pool": "missing"}, r"work pool 'missing' does not exist"),
    ({"work_queue": "missing"}, r"work queue 'missing' does not exist"),
    ({"interval": 60, "parameters": {}, "schedules": [{"cron": "0 * * * *", "parameters": {"n": "x"}}]},
     r"parameters of schedule 0: n:"),
    ({"timezone": "Europe/Paris"}, r"timezone applies to cron or interval"),
    ({"package_uri": "s3://stratoflow-local/packages/none.zip", "package_sha256": "0" * 64},
     r"package s3://stratoflow-local/packages/none.zip does not exist"),
    ({"package_uri": "s3://b/k.zip"}, r"package_uri and package_sha256 go together"),
])
def test_refused_deploys_leave_nothing_behind(client: Any, project: Path, pool: str, uploads: list[str],
                                              kwargs: dict[str, Any], message: str) -> None:
    kwargs = {"work_pool": pool, **kwargs}
    with pytest.raises(DeploymentError, match=message):
        deploy("flows.py:etl", name="prod", source_dir=project, **kwargs)
    assert nothing_written(client, uploads)


def test_a_missing_entrypoint_is_refused_naming_the_file(client: Any, project: Path, uploads: list[str]) -> None:
    with pytest.raises(DeploymentError, match=r"nope\.py does not exist"):
        deploy("nope.py:etl", name="prod", source_dir=project)
    with pytest.raises(DeploymentError, match="no attribute 'missing'"):
        deploy("flows.py:missing", name="prod", source_dir=project)
    assert nothing_written(client, uploads)


def test_a_deployment_can_point_at_an_existing_package(client: Any, project: Path, pool: str,
                                                       uploads: list[str]) -> None:
    first = deploy("flows.py:etl", name="prod", source_dir=project, work_pool=pool)
    other = deploy("flows.py:etl", name="canary", source_dir=project, work_pool=pool,
                   package_uri=first.package_uri, package_sha256=first.package_sha256)
    assert (other.package_uri, other.package_sha256) == (first.package_uri, first.package_sha256)
    assert len(uploads) == 1


# -- stratoflow.yaml ----------------------------------------------------------------------------------
PROJECT_YAML = """
ignore_file: .stratoflowignore
deployments:
  - name: nightly
    entrypoint: flows.py:etl
    work_pool: {name: default, work_queue_name: high}
    parameters: {n: 7}
    schedules:
      - {cron: "0 2 * * *", timezone: Europe/Paris}
      - {interval: 3600, active: false, parameters: {n: 1}}
    tags: [etl]
    description: the nightly run
  - name: daily
    entrypoint: flows.py:report
    work_pool: default
    paused: true
"""


def test_a_project_file_deploys_its_deployments_with_one_package(client: Any, project: Path, pool: str,
                                                                 uploads: list[str]) -> None:
    (project / "stratoflow.yaml").write_text(PROJECT_YAML)
    deps = deploy_project(project / "stratoflow.yaml")
    assert [(d.flow_name, d.name) for d in deps] == [("etl", "nightly"), ("report", "daily")]
    nightly, daily = deps
    assert nightly.package_sha256 == daily.package_sha256 and len(uploads) == 1
    assert (nightly.work_queue_name, nightly.parameters, nightly.tags, nightly.description) == (
        "high", {"n": 7}, ["etl"], "the nightly run")
    assert [(s.schedule.type, s.active, s.parameters) for s in nightly.schedules] == [
        ("cron", True, {}), ("interval", False, {"n": 1})]
    assert daily.paused and daily.work_queue_name is None
    only = deploy_project(project, names=["daily"])
    assert [(d.name, d.version) for d in only] == [("daily", 2)]
    assert client.read_deployment("etl/nightly").version == 1


@pytest.mark.parametrize(("edit", "message"), [
    (("work_pool: default\n", "work_pool: default\n    work_pol: x\n"), r"deployments\[1\]\.work_pol: unknown field"),
    (("work_queue_name: high", "queue_name: high"), r"deployments\[0\]\.work_pool\.queue_name: unknown field"),
    (("{interval: 3600,", "{intervl: 3600,"), r"deployments\[0\]\.schedules\[1\]\.intervl: unknown field"),
    (("ignore_file:", "ignorefile:"), r"ignorefile: unknown field"),
    (("parameters: {n: 7}", "parameters: {n: seven}"), r"deployments\[0\] \(nightly\): .*n:"),
    (("name: daily\n", "nam: daily\n"), r"deployments\[1\]\.nam: unknown field"),
])
def test_project_file_mistakes_name_the_field_and_write_nothing(client: Any, project: Path, pool: str,
                                                                uploads: list[str], edit: tuple[str, str],
                                                                message: str) -> None:
    assert edit[0] in PROJECT_YAML
    (project / "stratoflow.yaml").write_text(PROJECT_YAML.replace(edit[0], edit[1], 1))
    with pytest.raises(DeploymentError, match=message):
        deploy_project(project)
    assert nothing_written(client, uploads)


def test_an_unknown_deployment_name_lists_the_known_ones(client: Any, project: Path, pool: str) -> None:
    (project / "stratoflow.yaml").write_text(PROJECT_YAML)
    with pytest.raises(DeploymentError, match=r"no deployment 'weekly'.*nightly, daily"):
        deploy_project(project, names=["weekly"])


# -- the CLI ------------------------------------------------------------------------------------------
@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """``cli("deploy", ...)`` -> (exit code, stdout, stderr) through ``stratoflow.cli.main``."""
    from stratoflow.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_cli_deploy_end_to_end(client: Any, project: Path, pool: str, uploads: list[str], cli: Any,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    code, out, err = cli("deploy", "flows.py:etl", "--name", "prod", "--pool", pool, "--queue", "high",
                         "--param", "n=4", "--param", "label=hello", "--cron", "0 6 * * *", "--timezone",
                         "Europe/Paris", "--tag", "etl")
    assert code == 0, err
    dep = client.read_deployment("etl/prod")
    assert dep.parameters == {"n": 4, "label": "hello"} and dep.tags == ["etl"]
    header, _rule, row = out.strip().splitlines()
    assert header.split() == ["DEPLOYMENT", "VERSION", "WORK", "POOL", "PACKAGE", "SCHEDULES", "STATUS"]
    assert row.split()[:4] == ["etl/prod", "1", "default/high", dep.package_sha256[:12]]
    assert "cron 0 6 * * * (Europe/Paris)" in row
    assert "packaged" in err and "files" in err and "uploading" in err
    code, out, err = cli("deploy", "flows.py:etl", "--name", "prod", "--pool", pool)
    assert code == 0 and "already uploaded (same content)" in err
    assert out.strip().splitlines()[2].split()[:2] == ["etl/prod", "2"]
    assert len(uploads) == 1


@pytest.mark.parametrize(("argv", "message"), [
    (["flows.py:etl", "--name", "prod", "--param", "oops"], "--param 'oops' is not KEY=VALUE"),
    (["flows.py:etl", "--name", "prod", "--param", "n=many"], "invalid default parameters: n:"),
    (["missing.py:etl", "--name", "prod"], "missing.py does not exist"),
    (["flows.py:etl"], "--name is required with an entrypoint"),
    (["flows.py", "--name", "prod"], "is not path/to/file.py:flow_function"),
    (["--pool", "default"], "--pool needs an entrypoint"),
    (["--all"], "stratoflow.yaml does not exist"),
    (["flows.py:etl", "--name", "prod", "--requirements", "nope.txt"], "nope.txt does not exist"),
])
def test_cli_bad_input_exits_2_with_one_line(client: Any, project: Path, pool: str, uploads: list[str], cli: Any,
                                             monkeypatch: pytest.MonkeyPatch, argv: list[str], message: str) -> None:
    monkeypatch.chdir(project)
    code, out, err = cli("deploy", *argv)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert out == ""
    assert nothing_written(client, uploads)


def test_cli_deploys_the_project_file(client: Any, project: Path, pool: str, cli: Any,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "stratoflow.yaml").write_text(PROJECT_YAML)
    monkeypatch.chdir(project)
    code, out, err = cli("deploy")
    assert code == 0, err
    assert [line.split()[0] for line in out.strip().splitlines()[2:]] == ["etl/nightly", "report/daily"]
    code, out, _ = cli("deploy", "--name", "daily")
    assert code == 0 and [line.split()[:2] for line in out.strip().splitlines()[2:]] == [["report/daily", "2"]]
    code, _, err = cli("--json", "deploy", "--all", "--file", str(project / "stratoflow.yaml"))
    assert code == 0 and client.read_deployment("etl/nightly").version == 2


def test_cli_deploy_json_is_one_document_on_stdout(client: Any, project: Path, pool: str, cli: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.chdir(project)
    code, out, err = cli("deploy", "flows.py:etl", "--name", "prod", "--pool", pool, "--json")
    assert code == 0, err
    (dep,) = json.loads(out)
    assert (dep["flow_name"], dep["name"], dep["version"]) == ("etl", "prod", 1)
    assert "packaged" in err and "\x1b" not in out + err  # progress on stderr, plain on a pipe


# -- vendored requirements --------------------------------------------------------------------------
def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(directory: Path, name: str, version: str, module_source: str) -> Path:
    """A minimal pure-Python wheel (what `pip wheel` of a one-module project produces), written
    directly: building one needs setuptools' bdist_wheel, which the offline venv may lack."""
    files = {
        f"{name}/__init__.py": module_source.encode(),
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{name}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                              b"Tag: py3-none-any\n",
        f"{name}-{version}.dist-info/top_level.txt": f"{name}\n".encode(),
    }
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in files.items())
    record += f"{name}-{version}.dist-info/RECORD,,\n"
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in files.items():
            zf.writestr(member, data)
        zf.writestr(f"{name}-{version}.dist-info/RECORD", record)
    return path


def test_requirements_are_vendored_and_the_flow_runs_from_the_package(client: Any, project: Path, pool: str,
                                                                      tmp_path: Path) -> None:
    module = "tinyvendored_" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:8]
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, module, "1.0", "OFFSET = 100\n")
    (project / "uses_vendor.py").write_text(
        f"from stratoflow import flow\n\n\n@flow\ndef offset(n: int = 1) -> int:\n"
        f"    import {module}\n\n    return {module}.OFFSET + n\n")
    (project / "requirements.txt").write_text(f"{module}==1.0  # the vendored one\n")
    lines: list[str] = []
    dep = deploy("uses_vendor.py:offset", name="prod", source_dir=project, work_pool=pool,
                 pip_args=["--no-index", "--find-links", str(wheels)], progress=lines.append)
    assert any(line.startswith("vendoring 1 requirement(s)") for line in lines)

    root = materialize_package(dep.package_uri or "", dep.package_sha256 or "", get_blob=client.store.get_blob,
                               cache_root=tmp_path / "cache")
    assert (root / "_vendor" / module / "__init__.py").is_file()
    import json

    manifest = json.loads((root / ".stratoflow" / "manifest.json").read_text())
    assert manifest["requirements"] == [f"{module}==1.0"]
    assert f"_vendor/{module}/__init__.py" in manifest["files"]
    with pytest.raises(ImportError):
        __import__(module)  # only the package has it
    flow = load_entrypoint(root, dep.entrypoint or "")
    assert flow(n=5) == 105
    runs = client.read_flow_runs(flow_name="offset")
    assert len(runs) == 1 and runs[0].state_type == "COMPLETED"

    # The same requirements again: same bytes, same key.
    again = deploy("uses_vendor.py:offset", name="prod", source_dir=project, work_pool=pool,
                   pip_args=["--no-index", "--find-links", str(wheels)])
    assert again.package_sha256 == dep.package_sha256


def test_a_requirement_pip_cannot_find_is_refused_before_any_write(client: Any, project: Path, pool: str,
                                                                   uploads: list[str], tmp_path: Path) -> None:
    with pytest.raises(DeploymentError, match="pip could not install the requirements"):
        deploy("flows.py:etl", name="prod", source_dir=project, work_pool=pool,
               requirements=["no-such-dist-xyz==9.9"], pip_args=["--no-index", "--find-links", str(tmp_path)])
    assert nothing_written(client, uploads)
