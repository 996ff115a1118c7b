"""Deployment packages: deterministic zips, ignore rules, and the executor's side (integrity,
zip-slip, concurrent extraction, loading the entrypoint)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from stratoflow.deployments.packaging import (
    MANIFEST_PATH,
    EntrypointError,
    IgnoreRules,
    PackageIntegrityError,
    PackagingError,
    build_package,
    load_entrypoint,
    materialize_package,
)

FLOW_SOURCE = """
from stratoflow import flow
import helper_{tag}

@flow
def etl(n: int = 3) -> int:
    return helper_{tag}.double(n)

not_a_flow = 42
"""


# load_entrypoint puts package roots on sys.path and their modules in sys.modules: undone after each test.
pytestmark = pytest.mark.usefixtures("restore_imports")


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def project(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    tag = hashlib.sha256(request.node.name.encode()).hexdigest()[:8]
    return write(tmp_path / "proj", {
        "flows.py": FLOW_SOURCE.format(tag=tag),
        f"helper_{tag}.py": "def double(x):\n    return 2 * x\n",
        "data/table.csv": "a,b\n1,2\n",
    })


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- determinism ----------------------------------------------------------------------------------
def test_same_content_gives_same_bytes_wherever_and_whenever_it_lives(project: Path, tmp_path: Path) -> None:
    first = build_package(project, entrypoint="flows.py:etl")
    copy = tmp_path / "elsewhere" / "proj"
    copy.mkdir(parents=True)
    for path in project.rglob("*"):
        if path.is_file():
            target = copy / path.relative_to(project)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
            os.utime(target, (1_000_000, 1_000_000))  # other timestamps and permissions
            target.chmod(0o600)
    second = build_package(copy, entrypoint="flows.py:etl")
    assert second.sha256 == first.sha256 == sha(first.data)
    assert second.data == first.data
    assert first.size == len(first.data)


def test_a_changed_byte_changes_the_hash(project: Path) -> None:
    before = build_package(project, entrypoint="flows.py:etl")
    (project / "data" / "table.csv").write_text("a,b\n1,3\n")
    after = build_package(project, entrypoint="flows.py:etl")
    assert after.sha256 != before.sha256
    (project / "data" / "new.txt").write_text("")
    assert build_package(project, entrypoint="flows.py:etl").sha256 not in (before.sha256, after.sha256)


def test_zip_entries_are_sorted_with_fixed_times_and_modes_and_a_manifest(project: Path) -> None:
    package = build_package(project, entrypoint="flows.py:etl", requirements=[])
    with zipfile.ZipFile(io.BytesIO(package.data)) as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        manifest = json.loads(zf.read(MANIFEST_PATH))
    assert names[:-1] == sorted(names[:-1]) and names[-1] == MANIFEST_PATH
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.external_attr >> 16 for i in infos} == {0o100644}
    assert manifest["entrypoints"] == ["flows.py:etl"]
    assert manifest["files"] == package.files == names[:-1]
    assert manifest["requirements"] == []
    assert manifest["builder"].startswith("stratoflow-packaging/")


# -- ignore rules ---------------------------------------------------------------------------------
def test_ignore_file_with_dirs_globs_double_star_negation_and_comments(project: Path) -> None:
    write(project, {
        ".stratoflowignore": "# comment\n\nbuild/\n*.log\n!keep.log\ndocs/**/*.md\n/top.txt\nsecret?.txt\n",
        "build/out.bin": "x", "sub/build/out.bin": "x", "a.log": "x", "sub/keep.log": "x",
        "docs/a/b/c.md": "x", "docs/readme.txt": "x", "top.txt": "x", "sub/top.txt": "x",
        "secret1.txt": "x", "secret12.txt": "x",
        ".git/HEAD": "x", "__pycache__/m.cpython-311.pyc": "x", "sub/x.pyc": "x", ".venv/bin/python": "x",
        "node_modules/m/index.js": "x", ".stratoflow/cache": "x", ".ruff_cache/x": "x",
    })
    files = build_package(project, entrypoint="flows.py:etl").files
    assert "sub/keep.log" in files and "a.log" not in files
    assert not any(f.startswith(("build/", "sub/build/")) for f in files)
    assert "docs/a/b/c.md" not in files and "docs/readme.txt" in files
    assert "top.txt" not in files and "sub/top.txt" in files
    assert "secret1.txt" not in files and "secret12.txt" in files
    assert not any(part in f for f in files for part in (".git/", "__pycache__", ".pyc", ".venv", "node_modules",
                                                           ".stratoflow/", ".ruff_cache"))
    assert {"flows.py", "data/table.csv", ".stratoflowignore"} <= set(files)


def test_ignore_rules_follow_gitignore() -> None:
    rules = IgnoreRules(["*.csv", "!keep/*.csv", "logs/", "a/**/z", "\\#literal", "**/tmp"])
    assert rules.ignored("x.csv", False) and rules.ignored("d/x.csv", False)
    assert not rules.ignored("keep/x.csv", False)
    assert rules.ignored("logs", True) and not rules.ignored("logs", False)
    assert rules.ignored("a/z", False) and rules.ignored("a/b/c/z", False) and not rules.ignored("b/a/z", False)
    assert rules.ignored("#literal", False)
    assert rules.ignored("tmp", True) and rules.ignored("x/y/tmp", False)


def test_a_missing_named_ignore_file_is_an_error(project: Path) -> None:
    with pytest.raises(PackagingError, match=r"nope\.ignore"):
        build_package(project, entrypoint="flows.py:etl", ignore_file="nope.ignore")


# -- refusals -------------------------------------------------------------------------------------
def test_entrypoint_file_outside_or_missing_or_ignored_is_refused(project: Path) -> None:
    with pytest.raises(PackagingError, match=r"missing\.py"):
        build_package(project, entrypoint="missing.py:etl")
    with pytest.raises(PackagingError, match="not in the source directory"):
        build_package(project / "data", entrypoint="../flows.py:etl")
    write(project, {".stratoflowignore": "flows.py\n"})
    with pytest.raises(PackagingError, match="excluded by the ignore rules"):
        build_package(project, entrypoint="flows.py:etl")
    with pytest.raises(EntrypointError, match=r"not path/to/file\.py:flow_function"):
        build_package(project, entrypoint="flows.py")


def test_a_package_over_the_size_limit_is_refused_naming_the_largest_file(project: Path) -> None:
    (project / "data" / "big.bin").write_bytes(b"\0" * 5000)
    with pytest.raises(PackagingError, match=r"over the .* limit; largest files: data/big\.bin"):
        build_package(project, entrypoint="flows.py:etl", max_unzipped_bytes=4096)


def test_a_requirements_file_that_does_not_exist_is_named(project: Path) -> None:
    with pytest.raises(PackagingError, match=r"reqs\.txt"):
        build_package(project, entrypoint="flows.py:etl", requirements=project / "reqs.txt")


# -- materializing --------------------------------------------------------------------------------
def zip_of(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize("evil", ["../escaped.py", "a/../../escaped.py", "/abs/escaped.py"])
def test_zip_slip_entries_are_refused_before_anything_is_written(tmp_path: Path, evil: str) -> None:
    data = zip_of({"ok.py": b"x", evil: b"boom"})
    cache = tmp_path / "cache" / "inner"
    with pytest.raises(PackagingError, match="escapes the package directory"):
        materialize_package("s3://b/k", sha(data), get_blob=lambda _: data, cache_root=cache)
    assert not (tmp_path / "cache" / "escaped.py").exists() and not (tmp_path / "escaped.py").exists()
    assert list(cache.iterdir()) == []  # the temporary directory went too


def test_a_tampered_blob_raises_naming_both_hashes_and_extracts_nothing(project: Path, tmp_path: Path) -> None:
    package = build_package(project, entrypoint="flows.py:etl")
    tampered = package.data[:-1] + bytes([package.data[-1] ^ 1])
    with pytest.raises(PackageIntegrityError) as info:
        materialize_package("s3://b/p.zip", package.sha256, get_blob=lambda _: tampered, cache_root=tmp_path / "c")
    assert package.sha256 in str(info.value) and sha(tampered) in str(info.value)
    assert not (tmp_path / "c").exists() or list((tmp_path / "c").iterdir()) == []


def test_a_malformed_sha_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PackagingError, match="64 hex digits"):
        materialize_package("s3://b/k", "../../etc", get_blob=lambda _: b"", cache_root=tmp_path)


def test_eight_threads_materialize_once_and_see_the_same_directory(project: Path, tmp_path: Path) -> None:
    package = build_package(project, entrypoint="flows.py:etl")
    downloads: list[str] = []
    start = threading.Barrier(8)
    results: list[Path] = []
    errors: list[BaseException] = []

    def get_blob(uri: str) -> bytes:
        downloads.append(uri)
        return package.data

    def worker() -> None:
        start.wait()
        try:
            results.append(materialize_package("s3://b/p.zip", package.sha256, get_blob=get_blob,
                                               cache_root=tmp_path / "cache"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert downloads == ["s3://b/p.zip"]
    assert set(results) == {tmp_path / "cache" / package.sha256}
    # The tree and the verified zip it is checked against; no temp dir left.
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [package.sha256, f"{package.sha256}.zip"]
    root = results[0]
    assert (root / "flows.py").read_bytes() == (project / "flows.py").read_bytes()
    assert json.loads((root / MANIFEST_PATH).read_text())["files"] == package.files
    # Cached: no second download.
    assert materialize_package("s3://b/p.zip", package.sha256, get_blob=get_blob, cache_root=tmp_path / "cache") == root
    assert len(downloads) == 1


def test_losing_the_rename_race_to_another_process_uses_its_copy(project: Path, tmp_path: Path) -> None:
    package = build_package(project, entrypoint="flows.py:etl")
    cache = tmp_path / "cache"
    marker: list[int] = []

    def get_blob(uri: str) -> bytes:
        # Another process finishes its extraction (tree and kept zip) while this one downloads.
        with zipfile.ZipFile(io.BytesIO(package.data)) as zf:
            zf.extractall(cache / package.sha256)
        (cache / f"{package.sha256}.zip").write_bytes(package.data)
        marker.append((cache / package.sha256).stat().st_ino)
        return package.data

    root = materialize_package("s3://b/p.zip", package.sha256, get_blob=get_blob, cache_root=cache)
    assert root.stat().st_ino == marker[0]  # the winner's directory, not a second copy
    assert sorted(p.name for p in cache.iterdir()) == [package.sha256, f"{package.sha256}.zip"]


# -- loading the entrypoint -----------------------------------------------------------------------
def extracted(project: Path, tmp_path: Path) -> Path:
    package = build_package(project, entrypoint="flows.py:etl")
    return materialize_package("s3://b/p.zip", package.sha256, get_blob=lambda _: package.data,
                               cache_root=tmp_path / "cache")


def test_load_entrypoint_imports_the_flow_with_its_sibling_modules(project: Path, tmp_path: Path) -> None:
    from stratoflow.flows import Flow

    root = extracted(project, tmp_path)
    flow = load_entrypoint(root, "flows.py:etl")
    assert isinstance(flow, Flow) and flow.name == "etl"
    assert flow.fn(4) == 8
    assert load_entrypoint(root, "flows.py:etl").fn.__module__ != flow.fn.__module__  # a fresh module each time
    assert sys.path[:2] == [str(root.resolve()), str(root.resolve() / "_vendor")]


def test_load_entrypoint_errors_name_the_entrypoint(project: Path, tmp_path: Path) -> None:
    root = extracted(project, tmp_path)
    with pytest.raises(EntrypointError, match=r"'nope.py:etl'.*does not exist"):
        load_entrypoint(root, "nope.py:etl")
    with pytest.raises(EntrypointError, match=r"'flows.py:missing'.*no attribute 'missing'"):
        load_entrypoint(root, "flows.py:missing")
    with pytest.raises(EntrypointError, match=r"'flows.py:not_a_flow'.*is a int, not a flow"):
        load_entrypoint(root, "flows.py:not_a_flow")
    (root / "broken.py").write_text("import no_such_module_xyz\n")
    with pytest.raises(EntrypointError, match=r"'broken.py:f'.*ModuleNotFoundError") as info:
        load_entrypoint(root, "broken.py:f")
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_vendored_modules_win_over_installed_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write(tmp_path / "pkg", {
        "_vendor/yaml/__init__.py": "VENDORED = True\n",
        "f.py": "import yaml\nfrom stratoflow import flow\n\n@flow\ndef f() -> bool:\n    return yaml.VENDORED\n",
    })
    import yaml  # installed

    monkeypatch.delitem(sys.modules, "yaml")
    assert not hasattr(yaml, "VENDORED")
    assert load_entrypoint(root, "f.py:f").fn() is True


# -- vendoring ------------------------------------------------------------------------------------
@pytest.mark.parametrize("lambda_platform", [False, True])
def test_vendoring_runs_this_interpreters_pip_with_lambda_flags_on_request(
        project: Path, monkeypatch: pytest.MonkeyPatch, lambda_platform: bool) -> None:
    import subprocess

    from stratoflow.deployments import packaging

    commands: list[list[str]] = []

    def fake_pip(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        commands.append(command)
        target = Path(command[command.index("--target") + 1])
        write(target, {"dep/__init__.py": "X = 1\n", "dep/__pycache__/x.pyc": "", "dep-1.0.dist-info/RECORD": ""})
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(packaging.subprocess, "run", fake_pip)
    (project / "requirements.txt").write_text("# pinned\ndep==1.0\n\n")
    package = build_package(project, entrypoint="flows.py:etl", lambda_platform=lambda_platform,
                            pip_args=["--no-index"])
    [command] = commands
    assert command[:4] == [sys.executable, "-m", "pip", "install"]
    assert command[-2:] == ["-r", str(project / "requirements.txt")] and "--no-index" in command
    platforms = {command[i + 1] for i, arg in enumerate(command) if arg == "--platform"}
    if lambda_platform:
        assert {"manylinux2014_x86_64", "manylinux_2_28_x86_64", "manylinux_2_34_x86_64"} <= platforms
        assert "--only-binary=:all:" in command and command[command.index("--python-version") + 1] == "3.13"
    else:
        assert platforms == set() and "--only-binary=:all:" not in command
    assert package.requirements == ["dep==1.0"]
    assert {"_vendor/dep/__init__.py", "_vendor/dep-1.0.dist-info/RECORD"} <= set(package.files)
    assert not any("__pycache__" in f for f in package.files)
