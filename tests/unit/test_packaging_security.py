"""The package cache and entrypoints under attack: a planted or altered cache entry is never
used, the cache root must be private, an entrypoint cannot leave its package, and a malformed
archive or source directory gives a one-line ``PackagingError`` naming the package and the entry."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
import marshal
import os
import stat
import struct
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from stratoflow.deployments import packaging
from stratoflow.deployments.packaging import (
    EntrypointError,
    Package,
    PackagingError,
    build_package,
    load_entrypoint,
    materialize_package,
)
from stratoflow.settings import Settings

URI = "s3://bucket/packages/p.zip"
FLOW = "from stratoflow import flow\n\n\n@flow\ndef etl(n: int = 3):\n    return {body}\n"
REAL = FLOW.format(body="2 * n")
EVIL = FLOW.format(body='"planted"')


# load_entrypoint puts package roots on sys.path and their modules in sys.modules: undone after each test.
pytestmark = pytest.mark.usefixtures("restore_imports")


@pytest.fixture
def package(tmp_path: Path) -> Package:
    src = tmp_path / "src"
    (src / "lib").mkdir(parents=True)
    (src / "flows.py").write_text(REAL)
    (src / "lib" / "data.txt").write_text("data\n")
    return build_package(src, entrypoint="flows.py:etl")


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    root = tmp_path / "cache"
    root.mkdir(mode=0o700)
    return root


class Blobs:
    """``get_blob`` serving one package, counting downloads."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.downloads = 0

    def __call__(self, uri: str) -> bytes:
        self.downloads += 1
        return self.data


def materialize(package: Package, cache: Path, blobs: Callable[[str], bytes] | None = None) -> Path:
    return materialize_package(URI, package.sha256, get_blob=blobs or Blobs(package.data), cache_root=cache)


def run_etl(root: Path) -> object:
    return load_entrypoint(root, "flows.py:etl").fn(4)


# -- planted and altered cache entries ---------------------------------------------------------------
def test_a_directory_planted_at_the_packages_cache_path_is_not_used(package: Package, cache: Path) -> None:
    planted = cache / package.sha256
    (planted / "lib").mkdir(parents=True)
    (planted / "flows.py").write_text(EVIL)
    (planted / "lib" / "data.txt").write_text("data\n")
    (cache / f"{package.sha256}.zip").write_bytes(b"not the package")  # a forged kept zip too
    blobs = Blobs(package.data)
    root = materialize(package, cache, blobs)
    assert root == planted and run_etl(root) == 8  # the real package's code runs
    assert blobs.downloads == 1
    assert (cache / f"{package.sha256}.zip").read_bytes() == package.data
    assert sorted(p.name for p in cache.iterdir()) == [package.sha256, f"{package.sha256}.zip"]


def test_a_symlink_planted_at_the_packages_cache_path_is_not_followed(package: Package, cache: Path,
                                                                       tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "flows.py").write_text(EVIL)
    (cache / package.sha256).symlink_to(elsewhere)
    root = materialize(package, cache)
    assert not root.is_symlink() and run_etl(root) == 8
    assert (elsewhere / "flows.py").read_text() == EVIL  # the link went, not what it pointed to


def _modify(root: Path) -> str:
    (root / "flows.py").write_text(EVIL)
    return "flows.py differs from the package"


def _add(root: Path) -> str:
    (root / "lib" / "extra.py").write_text("x = 1\n")
    return "lib/extra.py is not in the package"


def _delete(root: Path) -> str:
    (root / "lib" / "data.txt").unlink()
    return "lib/data.txt is missing"


def _same_size(root: Path) -> str:
    (root / "flows.py").write_text(REAL.replace("2 * n", "3 * n"))
    return "flows.py differs from the package"


def _symlink(root: Path) -> str:
    outside = root.parent / "outside.txt"
    outside.write_text("data\n")
    (root / "lib" / "data.txt").unlink()
    (root / "lib" / "data.txt").symlink_to(outside)
    return "lib/data.txt is a symbolic link"


def _extra_dir(root: Path) -> str:
    (root / "yaml").mkdir()
    return "yaml/ is not in the package"


@pytest.mark.parametrize("tamper", [_modify, _add, _delete, _same_size, _symlink, _extra_dir])
def test_a_cache_entry_altered_after_extraction_is_detected_on_next_use(
        package: Package, cache: Path, caplog: pytest.LogCaptureFixture, tamper: Callable[[Path], str]) -> None:
    blobs = Blobs(package.data)
    root = materialize(package, cache, blobs)
    reason = tamper(root)
    with caplog.at_level(logging.WARNING, logger="stratoflow.deployments"):
        again = materialize(package, cache, blobs)
    assert again == root and run_etl(again) == 8
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if "__pycache__" not in p.parts) == [
        ".stratoflow", ".stratoflow/manifest.json", "flows.py", "lib", "lib/data.txt"]
    assert blobs.downloads == 1  # extracted again from the kept (verified) zip
    assert [r.getMessage() for r in caplog.records if reason in r.getMessage()], caplog.text


def test_a_kept_zip_that_lost_its_hash_is_downloaded_again(package: Package, cache: Path) -> None:
    blobs = Blobs(package.data)
    root = materialize(package, cache, blobs)
    (cache / f"{package.sha256}.zip").write_bytes(package.data[:100] + bytes([package.data[100] ^ 1])
                                                   + package.data[101:])
    (root / "flows.py").write_text(EVIL)
    assert run_etl(materialize(package, cache, blobs)) == 8
    assert blobs.downloads == 2


def test_a_planted_bytecode_file_never_runs_instead_of_its_checked_source(package: Package, cache: Path) -> None:
    root = materialize(package, cache)
    source = root / "flows.py"
    info = source.stat()
    pyc = Path(importlib.util.cache_from_source(str(source)))
    pyc.parent.mkdir(exist_ok=True)
    code = compile(EVIL, str(source), "exec")
    # A timestamp pyc matching the source's mtime and size: Python would load it without a look at the source.
    pyc.write_bytes(importlib.util.MAGIC_NUMBER + struct.pack("<III", 0, int(info.st_mtime) & 0xFFFFFFFF,
                                                              info.st_size & 0xFFFFFFFF) + marshal.dumps(code))
    assert run_etl(materialize(package, cache)) == 8


def test_python_own_bytecode_is_not_a_mismatch(package: Package, cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = materialize(package, cache)
    inode = (root / "flows.py").stat().st_ino
    compiled = importlib.util.cache_from_source(str(root / "flows.py"))
    Path(compiled).parent.mkdir(exist_ok=True)
    Path(compiled).write_bytes(b"")  # what an import leaves (unless bytecode writing is off)
    with caplog.at_level(logging.WARNING, logger="stratoflow.deployments"):
        again = materialize(package, cache)
    assert caplog.records == [] and (again / "flows.py").stat().st_ino == inode  # not extracted again
    assert not Path(compiled).exists()


def test_a_copy_replaced_again_while_being_replaced_is_refused(package: Package, cache: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    root = materialize(package, cache)
    (root / "flows.py").write_text(EVIL)
    real_discard = packaging._discard

    def racing_discard(path: Path) -> None:
        real_discard(path)
        path.mkdir()
        (path / "flows.py").write_text(EVIL)  # someone plants it again at once

    monkeypatch.setattr(packaging, "_discard", racing_discard)
    with pytest.raises(PackagingError, match="was replaced again while stratoflow replaced it"):
        materialize(package, cache)


# -- the cache root ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_a_cache_root_others_can_write_is_refused(package: Package, cache: Path, mode: int) -> None:
    cache.chmod(mode)
    blobs = Blobs(package.data)
    with pytest.raises(PackagingError, match=rf"package cache {cache} is writable by its group or by everyone "
                                             rf"\(mode 0{mode:o}\): refusing to use it"):
        materialize(package, cache, blobs)
    assert blobs.downloads == 0 and list(cache.iterdir()) == []


def test_a_cache_root_owned_by_someone_else_is_refused(package: Package, cache: Path) -> None:
    if os.getuid() == 0:
        os.chown(cache, 65534, 65534)
        owner = 65534
    else:
        cache, owner = Path("/"), 0  # root's, and not writable by anyone else
    with pytest.raises(PackagingError, match=rf"owned by uid {owner}, not by this user"):
        materialize(package, cache)


@pytest.mark.skipif(not hasattr(os, "lchown") or os.getuid() != 0, reason="needs root to give a link away")
def test_a_cache_root_that_is_someone_elses_symlink_is_refused(package: Package, tmp_path: Path) -> None:
    target = tmp_path / "mine"
    target.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(target)
    os.lchown(link, 65534, 65534)
    with pytest.raises(PackagingError, match="is a symbolic link owned by uid 65534"):
        materialize(package, link)


def test_a_new_cache_root_is_created_private(package: Package, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        root = materialize(package, tmp_path / "new" / "cache")
    finally:
        os.umask(old)
    assert stat.S_IMODE(root.parent.stat().st_mode) == 0o700


def test_the_default_cache_is_per_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("STRATOFLOW_PACKAGE_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert Settings().package_cache_dir == Path(f"/tmp/stratoflow-packages-{os.getuid()}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert Settings().package_cache_dir == tmp_path / "xdg" / "stratoflow" / "packages"


# -- entrypoints stay inside the package ------------------------------------------------------------
@pytest.mark.parametrize(("entrypoint", "message"), [
    ("{root}/flows.py:etl", "is absolute"),
    ("../outside.py:etl", "has a '..' component"),
    ("lib/../../outside.py:etl", "has a '..' component"),
    ("lib\\..\\flows.py:etl", "contains a backslash"),
    ("C:/flows.py:etl", "is absolute"),
    ("link.py:etl", "outside the package root"),
])
def test_load_entrypoint_refuses_a_file_outside_the_package(package: Package, cache: Path, entrypoint: str,
                                                            message: str) -> None:
    root = materialize(package, cache)
    (cache / "outside.py").write_text(EVIL)
    (root / "link.py").symlink_to(cache / "outside.py")
    with pytest.raises(EntrypointError, match=message):
        load_entrypoint(root, entrypoint.format(root=root))


def test_a_module_calling_sys_exit_is_an_entrypoint_error(tmp_path: Path) -> None:
    (tmp_path / "quits.py").write_text("import sys\nsys.exit(3)\n")
    with pytest.raises(EntrypointError, match=r"'quits.py:f': importing .* failed: SystemExit: 3"):
        load_entrypoint(tmp_path, "quits.py:f")


# -- malformed archives -----------------------------------------------------------------------------
def _entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    return info


def _zip(*entries: tuple[str | zipfile.ZipInfo, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names, which one case wants
        with zipfile.ZipFile(buffer, "w", compression=compression) as zf:
            for name, data in entries:
                zf.writestr(name, data)
    return buffer.getvalue()


def _patch_headers(data: bytes, offset_local: int, offset_central: int, value: int) -> bytes:
    """Set a 16-bit field of the first entry's local and central headers."""
    out = bytearray(data)
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<H", out, offset_local, value)
    struct.pack_into("<H", out, central + offset_central, value)
    return bytes(out)


def _corrupt_deflate() -> bytes:
    data = _zip(("ok.py", b"x = 1\n" * 200), compression=zipfile.ZIP_DEFLATED)
    start = 30 + len("ok.py")
    return data[:start] + bytes(b ^ 0xFF for b in data[start:start + 8]) + data[start + 8:]


MALFORMED = {
    "dotdot": (_zip(("ok.py", b""), ("../x.py", b"boom")), "'../x.py' escapes the package directory"),
    "absolute": (_zip(("/etc/x.py", b"boom")), "'/etc/x.py' escapes the package directory"),
    "backslash": (_zip(("..\\x.py", b"boom")), "escapes the package directory (contains a backslash"),
    "dot component": (_zip(("./a/./x.py", b"")), "'./a/./x.py' is not a plain relative path"),
    "file and directory": (_zip(("a", b"file"), ("a/b", b"inside")), "'a' is both a file and a directory"),
    "directory and file": (_zip(("a/", b""), ("a", b"file")), "'a' is both a file and a directory"),
    "symlink": (_zip((_entry("link.py", stat.S_IFLNK | 0o777), b"/etc/passwd")),
                "'link.py' is a symbolic link: packages hold regular files and directories only"),
    "fifo": (_zip((_entry("pipe", stat.S_IFIFO | 0o644), b"")), "'pipe' is a special file"),
    "directory mode on a file name": (_zip((_entry("d", stat.S_IFDIR | 0o755), b"")),
                                      "'d' is marked as a directory but named as a file"),
    "duplicate": (_zip(("x.py", b"one"), ("x.py", b"two")), "'x.py' appears twice"),
    "truncated": (_zip(("x.py", b"x" * 500))[:300], "is not a zip file (truncated or corrupt)"),
    "corrupt data": (_corrupt_deflate(), "'ok.py' is corrupt"),
    "encrypted": (_patch_headers(_zip(("x.py", b"x")), 6, 8, 0x1), "'x.py' is encrypted"),
    "unknown compression": (_patch_headers(_zip(("x.py", b"x")), 8, 10, 99),
                            "'x.py' uses compression method 99"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_archive_is_a_one_line_packaging_error_naming_package_and_entry(cache: Path, case: str) -> None:
    data, message = MALFORMED[case]
    sha = hashlib.sha256(data).hexdigest()
    with pytest.raises(PackagingError) as info:
        materialize_package(URI, sha, get_blob=lambda _: data, cache_root=cache)
    text = str(info.value)
    assert f"package {URI}" in text and message in text and "\n" not in text, text
    assert list(cache.iterdir()) == []  # nothing extracted, no temporary directory left


# -- malformed source directories -------------------------------------------------------------------
@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "flows.py").write_text(REAL)
    return root


def test_a_source_file_name_the_executor_would_refuse_is_refused_when_building(src: Path) -> None:
    (src / "lib\\x.py").write_text("")
    with pytest.raises(PackagingError, match=r"'lib\\\\x\.py' contains a backslash: .*exclude it in \.stratoflow"):
        build_package(src, entrypoint="flows.py:etl")


def test_a_source_file_name_that_is_not_utf8_is_named(src: Path) -> None:
    fd = os.open(os.fsencode(src) + b"/bad\xff.txt", os.O_WRONLY | os.O_CREAT, 0o644)
    os.close(fd)
    with pytest.raises(PackagingError, match=r"bad\\udcff\.txt' has a name that is not valid UTF-8"):
        build_package(src, entrypoint="flows.py:etl")


def test_an_ignore_file_that_is_not_utf8_is_named(src: Path) -> None:
    (src / ".stratoflowignore").write_bytes(b"*.log\n\xff\xfe\n")
    with pytest.raises(PackagingError, match=r"ignore file .*\.stratoflowignore is not UTF-8 text \(byte 6\)"):
        build_package(src, entrypoint="flows.py:etl")
    (src / ".stratoflowignore").unlink()
    (src / "requirements.txt").write_bytes(b"\xff\n")
    with pytest.raises(PackagingError, match=r"requirements file .*requirements\.txt is not UTF-8 text"):
        build_package(src, entrypoint="flows.py:etl")


def test_a_source_file_that_cannot_be_read_is_named(src: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (src / "secret.txt").write_text("x")
    real = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.name == "secret.txt":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(PackagingError, match=r"cannot read .*secret\.txt: Permission denied"):
        build_package(src, entrypoint="flows.py:etl")
