"""Deployment packages: a flow's source directory (and its vendored requirements) as one zip.

The zip is deterministic (sorted entries, fixed timestamps and permissions, a manifest without
times), so the same content always has the same sha256 and therefore the same S3 key
(``packages/<sha256>.zip``): deploying unchanged code uploads nothing. The executor side
(``materialize_package``) verifies that hash before it extracts anything, and on every later use
checks the extracted files against the verified zip it keeps beside them.

Layout of a package::

    <source files, relative to the source directory>
    _vendor/<what `pip install --target` put there>      (only with requirements)
    .stratoflow/manifest.json                             (format, builder, entrypoints, files, requirements)
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import itertools
import json
import logging
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import uuid
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stratoflow.exceptions import StratoflowError
from stratoflow.packages import (
    SHA256,
    DeployableFlow,
    entrypoint_form_problem,
    entrypoint_problem,
    package_key,
    package_uri_for,
    relative_path_problem,
)

if TYPE_CHECKING:
    from stratoflow.flows import Flow
    from stratoflow.storage.blobs import S3Blobs

Progress = Callable[[str], None]
logger = logging.getLogger("stratoflow.deployments")

BUILDER_VERSION = "stratoflow-packaging/1"
MANIFEST_PATH = ".stratoflow/manifest.json"
VENDOR_DIR = "_vendor"
# Lambda's limit for a function's unzipped code; a package the executor could not hold is refused here.
MAX_UNZIPPED_BYTES = 250 * 1024 * 1024
DEFAULT_IGNORES = (".git", "__pycache__", "*.pyc", ".venv", "venv", ".stratoflow", "node_modules",
                   ".mypy_cache", ".pytest_cache", ".ruff_cache")
# Every entry gets the same time and mode: only names and bytes decide the hash.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_FILE_MODE = 0o100644 << 16
_DIR_MODE = (0o040755 << 16) | 0x10
# The platform of the executor Lambda (python3.13 on Amazon Linux 2023: glibc 2.34, x86_64), for
# vendoring wheels from another machine. pip does not expand manylinux_2_x tags to older ones, so
# every compatible one is listed (manylinux2014 brings manylinux2010 and manylinux1).
LAMBDA_PIP_PLATFORM = (*(arg for glibc in range(34, 16, -1) for arg in ("--platform", f"manylinux_2_{glibc}_x86_64")),
                       "--platform", "manylinux2014_x86_64", "--implementation", "cp", "--python-version", "3.13",
                       "--only-binary=:all:")


class DeploymentError(StratoflowError, ValueError):
    """A deployment was refused before anything was uploaded or written (the message says why)."""


class PackagingError(DeploymentError):
    """A package could not be built, uploaded or used; the message names the file at fault."""


class PackageIntegrityError(PackagingError):
    """Downloaded bytes do not have the sha256 the deployment recorded."""


class EntrypointError(PackagingError):
    """An entrypoint ``path/to/file.py:flow`` could not be loaded as a flow."""


@dataclass(frozen=True)
class Package:
    """A built package: the zip's bytes and what they hold. ``size`` is the zip's size in bytes."""

    sha256: str
    data: bytes = field(repr=False)
    files: list[str]
    size: int
    requirements: list[str]
    entrypoints: list[str] = field(default_factory=list)
    unzipped_size: int = 0

    @property
    def key(self) -> str:
        return package_key(self.sha256)


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


# -- ignore rules (.gitignore semantics) --------------------------------------------------------
@dataclass(frozen=True)
class _Rule:
    regex: re.Pattern[str]
    negate: bool
    dir_only: bool


def _translate(pattern: str) -> str:
    """A gitignore glob as a regex over a relative POSIX path."""
    anchored = "/" in pattern
    pattern = pattern.lstrip("/")
    out = [] if anchored else ["(?:.*/)?"]
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[" and "]" in pattern[i + 2:]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1:end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        elif c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


class IgnoreRules:
    """Ordered gitignore-style rules; the last rule matching a path decides (``!`` re-includes).

    As in git, a file inside an ignored directory cannot be re-included: the directory is never
    walked.
    """

    def __init__(self, lines: Iterable[str]) -> None:
        self.rules: list[_Rule] = []
        for raw in lines:
            line = raw.rstrip("\n").rstrip("\r")
            if not line.endswith("\\ "):
                line = line.rstrip(" ")
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            if negate or line.startswith("\\"):
                line = line[1:]
            dir_only = line.endswith("/")
            line = line.rstrip("/")
            if not line:
                continue
            self.rules.append(_Rule(re.compile(_translate(line) + r"\Z"), negate, dir_only))

    def ignored(self, rel: str, is_dir: bool) -> bool:
        result = False
        for rule in self.rules:
            if rule.dir_only and not is_dir:
                continue
            if rule.regex.match(rel):
                result = not rule.negate
        return result


def _ignore_rules(source_dir: Path, ignore_file: str) -> IgnoreRules:
    path = Path(ignore_file) if Path(ignore_file).is_absolute() else source_dir / ignore_file
    lines = list(DEFAULT_IGNORES)
    if path.is_file():
        lines += _read_text(path, "ignore file").splitlines()
    elif ignore_file != ".stratoflowignore":
        raise PackagingError(f"ignore file {path} does not exist")
    return IgnoreRules(lines)


def _read_text(path: Path, what: str) -> str:
    """A UTF-8 text file, or a ``PackagingError`` naming it (not a raw decode or OS error)."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PackagingError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise PackagingError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _unlistable(exc: OSError) -> None:
    # os.walk skips a directory it cannot list; a package silently missing it would be worse.
    raise PackagingError(f"cannot list directory {exc.filename}: {exc.strerror or exc}")


def collect_files(source_dir: Path, rules: IgnoreRules) -> list[tuple[str, Path]]:
    """``(relative POSIX name, path)`` of every file not ignored, sorted by name. Symlinked
    files are followed; symlinked directories are not (they could loop)."""
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(source_dir, onerror=_unlistable):
        base = Path(dirpath)
        rel_dir = base.relative_to(source_dir).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = sorted(d for d in dirnames if not rules.ignored(prefix + d, True))
        for name in filenames:
            rel = prefix + name
            if not rules.ignored(rel, False) and (base / name).is_file():
                found.append((rel, base / name))
    return sorted(found)


# -- requirements ---------------------------------------------------------------------------------
def _requirement_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise PackagingError(f"requirements file {path} does not exist")
    out = []
    for raw in _read_text(path, "requirements file").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def _vendor(requirements: list[str] | Path, *, lambda_platform: bool, pip_args: Sequence[str],
            target: Path) -> None:
    """``pip install --target`` into ``target``, with this interpreter's pip."""
    command = [sys.executable, "-m", "pip", "install", "--target", str(target), "--no-compile",
               "--disable-pip-version-check", "--quiet", "--no-input"]
    if lambda_platform:
        command += LAMBDA_PIP_PLATFORM
    command += list(pip_args)
    command += ["-r", str(requirements)] if isinstance(requirements, Path) else list(requirements)
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # nosec B603  # argv list, no shell: this interpreter's pip on the deploying user's own requirements
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        what = f"requirements file {requirements}" if isinstance(requirements, Path) else "requirements"
        raise PackagingError(f"pip could not install the {what} ({done.returncode}): "
                             + (detail[-1] if detail else "no output"))


# -- building -------------------------------------------------------------------------------------
def parse_entrypoint(entrypoint: str) -> tuple[str, str]:
    """``path/to/file.py:flow_fn`` -> (path, attribute)."""
    problem = entrypoint_form_problem(entrypoint)
    if problem is not None:
        raise EntrypointError(problem)
    path, _, attr = entrypoint.rpartition(":")
    return path, attr


def check_entrypoint(entrypoint: str) -> tuple[str, str]:
    """``parse_entrypoint`` plus the refusal of a file outside the package (what the API and the
    executor both require)."""
    problem = entrypoint_problem(entrypoint)
    if problem is not None:
        raise EntrypointError(problem)
    return parse_entrypoint(entrypoint)


def _zip_entry(name: str, is_dir: bool = False) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.create_system = 3
    info.external_attr = _DIR_MODE if is_dir else _FILE_MODE
    info.compress_type = zipfile.ZIP_STORED if is_dir else zipfile.ZIP_DEFLATED
    return info


def _check_source_name(rel: str, path: Path, ignore_file: str) -> None:
    """Refuse, when building, a file name the executor would refuse to extract."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        raise PackagingError(f"file {str(path)!r} has a name that is not valid UTF-8: zip entries are UTF-8 "
                             f"(rename it, or exclude it in {ignore_file})") from None
    problem = relative_path_problem(rel)
    if problem is not None:
        raise PackagingError(f"file {path}: its package name {rel!r} {problem} (rename it, or exclude it in "
                             f"{ignore_file})")


def _entry_sizes(entries: Sequence[tuple[str, Path]], ignore_file: str) -> list[tuple[int, str]]:
    """``(size, name)`` of each file going into a package, its name checked first."""
    sizes = []
    for rel, path in entries:
        _check_source_name(rel, path, ignore_file)
        try:
            sizes.append((path.stat().st_size, rel))
        except OSError as exc:
            raise PackagingError(f"cannot read {path}: {exc.strerror or exc}") from None
    return sizes


def build_package(
    source_dir: Path,
    *,
    entrypoint: str | Sequence[str],
    requirements: list[str] | Path | None = None,
    ignore_file: str = ".stratoflowignore",
    progress: Progress | None = None,
    lambda_platform: bool = False,
    pip_args: Sequence[str] = (),
    max_unzipped_bytes: int = MAX_UNZIPPED_BYTES,
) -> Package:
    """Zip ``source_dir`` (minus ignored files) and the vendored requirements, deterministically.

    ``entrypoint`` may name several entrypoints (deployments sharing one package); each must be
    a file of the package. ``requirements`` default to ``source_dir/requirements.txt`` when it
    exists; ``lambda_platform`` fetches wheels for Lambda's python3.13 x86_64 whatever this
    machine is; ``pip_args`` go to pip as they are (``--no-index --find-links DIR``, ...).
    """
    say = progress or (lambda _: None)
    source_dir = Path(source_dir).resolve()
    if not source_dir.is_dir():
        raise PackagingError(f"source directory {source_dir} does not exist")
    entrypoints = sorted({entrypoint} if isinstance(entrypoint, str) else set(entrypoint))
    files = collect_files(source_dir, _ignore_rules(source_dir, ignore_file))
    names = {rel for rel, _ in files}
    for ep in entrypoints:
        rel_path, _ = parse_entrypoint(ep)
        candidate = (source_dir / rel_path).resolve()
        if not candidate.is_relative_to(source_dir) or not candidate.is_file():
            raise PackagingError(f"entrypoint file {candidate} is not in the source directory {source_dir}")
        if candidate.relative_to(source_dir).as_posix() not in names:
            raise PackagingError(f"entrypoint file {candidate} is excluded by the ignore rules ({ignore_file})")

    if requirements is None and (source_dir / "requirements.txt").is_file():
        requirements = source_dir / "requirements.txt"
    if isinstance(requirements, str):
        requirements = Path(requirements)
    req_list = _requirement_lines(requirements) if isinstance(requirements, Path) else list(requirements or [])

    with tempfile.TemporaryDirectory(prefix="stratoflow-vendor-") as tmp:
        entries = list(files)
        if req_list:
            say(f"vendoring {len(req_list)} requirement(s): {', '.join(req_list)}"
                + (" (for Lambda python3.13 x86_64)" if lambda_platform else ""))
            target = Path(tmp) / VENDOR_DIR
            _vendor(requirements if isinstance(requirements, Path) else req_list,
                    lambda_platform=lambda_platform, pip_args=pip_args, target=target)
            vendor_rules = IgnoreRules(["__pycache__", "*.pyc"])
            entries += [(f"{VENDOR_DIR}/{rel}", path) for rel, path in collect_files(target, vendor_rules)]
        entries.sort()

        sizes = _entry_sizes(entries, ignore_file)
        total = sum(size for size, _ in sizes)
        if total > max_unzipped_bytes:
            biggest = ", ".join(f"{rel} ({human_size(s)})" for s, rel in sorted(sizes, reverse=True)[:3])
            raise PackagingError(f"package of {source_dir} would be {human_size(total)} unzipped, over the "
                                 f"{human_size(max_unzipped_bytes)} limit; largest files: {biggest} "
                                 f"(exclude files in {ignore_file})")

        file_names = [rel for rel, _ in entries]
        manifest = {"format": 1, "builder": BUILDER_VERSION, "entrypoints": entrypoints,
                    "files": file_names, "requirements": req_list}
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for rel, path in entries:
                try:
                    content = path.read_bytes()
                except OSError as exc:
                    raise PackagingError(f"cannot read {path}: {exc.strerror or exc}") from None
                zf.writestr(_zip_entry(rel), content)
            zf.writestr(_zip_entry(MANIFEST_PATH),
                        json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n")
    data = buffer.getvalue()
    package = Package(sha256=hashlib.sha256(data).hexdigest(), data=data, files=file_names, size=len(data),
                      requirements=req_list, entrypoints=entrypoints, unzipped_size=total)
    say(f"packaged {source_dir}: {len(file_names)} files, {human_size(total)} "
        f"({human_size(package.size)} zipped), sha256 {package.sha256[:12]}")
    return package


# -- uploading ------------------------------------------------------------------------------------
def upload_package(package: Package, *, store: S3Blobs, progress: Progress | None = None) -> str:
    """Put the package at ``packages/<sha256>.zip`` in the store's bucket unless it is there
    already (content addressing: same key, same bytes). Returns its ``s3://`` URI."""
    say = progress or (lambda _: None)
    uri = package_uri_for(store.settings.bucket, package.sha256)
    if store.has_blob(uri):
        say(f"already uploaded (same content): {uri}")
        return uri
    say(f"uploading {human_size(package.size)} to {uri}")
    return store.put_blob(package.key, package.data)


# -- the executor side ----------------------------------------------------------------------------
_materialize_locks: dict[Path, threading.Lock] = {}
_materialize_guard = threading.Lock()
_CHUNK = 1 << 20
_COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
# What zipfile and its decompressors raise for bytes that are not a well-formed archive (bz2
# raises OSError; the archive is in memory, so no OSError here is a disk's).
_CORRUPT = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, NotImplementedError, RuntimeError,
            ValueError, OSError)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def private_cache_root(root: Path) -> Path:
    """``root`` (absolute), created 0700 when missing. An existing one must belong to this user and
    be writable by no one else, else ``PackagingError``: whoever can write there chooses the code
    that executors run (a shared ``/tmp`` path lets any local user plant a package)."""
    root = Path(root).absolute()
    if not os.path.lexists(root):
        root.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(root, 0o700)
            os.chmod(root, 0o700)  # whatever the umask
        except FileExistsError:
            pass  # made meanwhile by another process: checked below like any existing one
    uid = os.getuid() if hasattr(os, "getuid") else None
    info = os.lstat(root)
    if stat.S_ISLNK(info.st_mode):
        if uid is not None and info.st_uid not in (uid, 0):
            raise PackagingError(f"package cache {root} is a symbolic link owned by uid {info.st_uid}, not by this "
                                 f"user (uid {uid}): refusing to use it (set STRATOFLOW_PACKAGE_CACHE_DIR)")
        info = os.stat(root)
    if not stat.S_ISDIR(info.st_mode):
        raise PackagingError(f"package cache {root} is not a directory (set STRATOFLOW_PACKAGE_CACHE_DIR)")
    if uid is not None and info.st_uid != uid:
        raise PackagingError(f"package cache {root} is owned by uid {info.st_uid}, not by this user (uid {uid}): "
                             "refusing to use it (remove it, or set STRATOFLOW_PACKAGE_CACHE_DIR)")
    if info.st_mode & 0o022:
        raise PackagingError(f"package cache {root} is writable by its group or by everyone (mode "
                             f"{stat.S_IMODE(info.st_mode):04o}): refusing to use it (chmod 700 it, or set "
                             "STRATOFLOW_PACKAGE_CACHE_DIR)")
    return root


@dataclass(frozen=True)
class _Layout:
    """What a package extracts to: its files (name -> entry) and every directory they imply."""

    files: dict[str, zipfile.ZipInfo]
    dirs: frozenset[str]


def _entry_problem(info: zipfile.ZipInfo) -> str | None:
    """What is wrong with one zip entry on its own (None: nothing), said after its name."""
    name = info.filename
    is_dir = name.endswith("/")
    problem = relative_path_problem(name)
    if problem is not None and problem != "is empty":
        return f"escapes the package directory ({problem}); refusing to extract"
    if any(part in ("", ".") for part in (name[:-1] if is_dir else name).split("/")):
        return "is not a plain relative path (empty or '.' component)"
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        return "is a symbolic link: packages hold regular files and directories only"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return f"is a special file (file type {kind:o}): packages hold regular files and directories only"
    if kind == stat.S_IFDIR and not is_dir:
        return "is marked as a directory but named as a file (no trailing /)"
    if info.flag_bits & 0x1:
        return "is encrypted"
    if info.compress_type not in _COMPRESSIONS:
        return f"uses compression method {info.compress_type}, which zipfile cannot read"
    return None


def _layout(zf: zipfile.ZipFile, package: str) -> _Layout:
    """Every entry checked before anything is written. Refused, naming the entry: a name that
    would land outside the package (absolute, ``..``, ``\\``), a symlink or special file, an
    encrypted or undecodable entry, a name given twice or as both a file and a directory, and a
    package too large to hold."""
    files: dict[str, zipfile.ZipInfo] = {}
    explicit: set[str] = set()
    total = 0
    for info in zf.infolist():
        where = f"package {package}: entry {info.filename!r}"
        problem = _entry_problem(info)
        if problem is not None:
            raise PackagingError(f"{where} {problem}")
        is_dir = info.filename.endswith("/")
        rel = info.filename[:-1] if is_dir else info.filename
        if rel in files or rel in explicit:
            same = (rel in explicit) == is_dir
            raise PackagingError(f"{where} appears twice" if same else f"{where} is both a file and a directory")
        if is_dir:
            explicit.add(rel)
        else:
            files[rel] = info
            total += info.file_size
    dirs = set(explicit)
    for rel in [*files, *explicit]:
        parts = rel.split("/")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
    clash = sorted(dirs & files.keys())
    if clash:
        raise PackagingError(f"package {package}: entry {clash[0]!r} is both a file and a directory "
                             "(other entries are inside it)")
    if total > MAX_UNZIPPED_BYTES:
        raise PackagingError(f"package {package} would extract to {human_size(total)}, over "
                             f"{human_size(MAX_UNZIPPED_BYTES)}")
    return _Layout(files, frozenset(dirs))


def _member_chunks(zf: zipfile.ZipFile, info: zipfile.ZipInfo, package: str) -> Iterator[bytes]:
    """The entry's bytes; undecodable ones raise a ``PackagingError`` naming the entry."""
    try:
        with zf.open(info) as src:
            while chunk := src.read(_CHUNK):
                yield chunk
    except _CORRUPT as exc:
        raise PackagingError(f"package {package}: entry {info.filename!r} is corrupt "
                             f"({type(exc).__name__}: {exc})") from exc


@contextmanager
def _open_zip(data: bytes, package: str) -> Iterator[zipfile.ZipFile]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except _CORRUPT as exc:
        raise PackagingError(f"package {package} is not a zip file (truncated or corrupt): {exc}") from None
    with zf:
        yield zf


def _extract(zf: zipfile.ZipFile, layout: _Layout, root: Path, package: str) -> None:
    root.mkdir()
    for rel in sorted(layout.dirs):  # parents sort before their children
        (root / rel).mkdir()
    for rel, info in layout.files.items():
        fd = os.open(root / rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, 0o644)
        with open(fd, "wb") as out:
            for chunk in _member_chunks(zf, info, package):
                out.write(chunk)


def _same_bytes(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, package: str) -> bool:
    try:
        if os.lstat(path).st_size != info.file_size:
            return False
        with open(os.open(path, os.O_RDONLY | _O_NOFOLLOW), "rb") as fh:
            for chunk in _member_chunks(zf, info, package):
                if fh.read(len(chunk)) != chunk:
                    return False
            return fh.read(1) == b""
    except OSError:
        return False


def _discard(path: Path) -> None:
    """Remove a file, link or tree: renamed aside first, so the name is free at once."""
    aside = path.with_name(f".stale-{path.name[:16]}-{uuid.uuid4().hex}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    if os.path.isdir(aside) and not os.path.islink(aside):
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.unlink(aside)


def _walk_tree(root: Path, layout: _Layout) -> tuple[set[str], set[str]] | str:
    """The files and directories under ``root`` (relative paths), or the first thing found there
    that the package does not hold (a symlink, a special file, an extra entry). ``__pycache__``
    directories the package does not hold are deleted on the way."""
    found_files: set[str] = set()
    found_dirs: set[str] = set()
    pending = [""]
    while pending:
        current = pending.pop()
        try:
            with os.scandir(root / current if current else root) as entries:
                listed = list(entries)
        except OSError as exc:
            return f"{current or '.'}/ cannot be listed ({exc.strerror or exc})"
        for entry in listed:
            rel = f"{current}/{entry.name}" if current else entry.name
            if entry.name == "__pycache__" and rel not in layout.dirs and rel not in layout.files:
                _discard(Path(entry.path))
            elif entry.is_symlink():
                return f"{rel} is a symbolic link"
            elif entry.is_dir(follow_symlinks=False):
                if rel not in layout.dirs:
                    return f"{rel}/ is not in the package"
                found_dirs.add(rel)
                pending.append(rel)
            elif not entry.is_file(follow_symlinks=False):
                return f"{rel} is not a regular file"
            elif rel not in layout.files:
                return f"{rel} is not in the package"
            else:
                found_files.add(rel)
    return found_files, found_dirs


def _tree_problem(root: Path, zf: zipfile.ZipFile, layout: _Layout, package: str) -> str | None:
    """What differs between the directory ``root`` and the package (None when nothing does):
    every file, directory and byte is compared, and symlinks are refused. ``__pycache__``
    directories the package does not hold are Python's bytecode, which nothing verifies: they
    are deleted, so a planted ``.pyc`` never runs in place of its checked source."""
    try:
        if not stat.S_ISDIR(os.lstat(root).st_mode):
            return "it is not a directory"
    except FileNotFoundError:
        return "it is missing"
    found = _walk_tree(root, layout)
    if isinstance(found, str):
        return found
    found_files, found_dirs = found
    missing = sorted((layout.files.keys() - found_files) | {f"{d}/" for d in layout.dirs - found_dirs})
    if missing:
        return f"{missing[0]} is missing"
    for rel, info in sorted(layout.files.items()):
        if not _same_bytes(root / rel, zf, info, package):
            return f"{rel} differs from the package"
    return None


def _kept_zip(path: Path, sha256: str) -> bytes | None:
    """The zip kept beside the extracted tree, if it is a regular file that still has its hash."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _O_NOFOLLOW)
    except OSError:
        return None
    with open(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = fh.read()
    return data if hashlib.sha256(data).hexdigest() == sha256 else None


def _keep_zip(path: Path, data: bytes) -> None:
    """Write the verified zip beside the tree: written aside, then renamed (never half a file)."""
    if os.path.isdir(path):  # os.replace cannot put a file over a directory
        _discard(path)
    tmp = path.with_name(f".tmp-{path.name[:16]}-{uuid.uuid4().hex}")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, 0o600), "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _install(data: bytes, package: str, target: Path, kept: Path) -> None:
    """Extract ``data`` (verified) beside ``target`` and rename it into place, replacing a
    ``target`` that is not this package; keep the zip for the checks of later uses."""
    tmp = target.with_name(f".tmp-{target.name[:16]}-{uuid.uuid4().hex}")
    try:
        with _open_zip(data, package) as zf:
            layout = _layout(zf, package)
            _extract(zf, layout, tmp, package)
            _keep_zip(kept, data)
            try:
                os.rename(tmp, target)
                return
            except OSError:
                pass
            # Something is there: another process's copy of this package (it renamed first, and
            # it is used), or a tree that is not the package (replaced, never used).
            if _tree_problem(target, zf, layout, package) is None:
                return
            _discard(target)
            try:
                os.rename(tmp, target)
            except OSError:
                raise PackagingError(f"package cache {target} was replaced again while stratoflow replaced it: "
                                     "refusing to use it (is another user writing to the cache?)") from None
    finally:
        if os.path.lexists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def materialize_package(uri: str, sha256: str, *, get_blob: Callable[[str], bytes], cache_root: Path) -> Path:
    """The package's files under ``cache_root/<sha256>/``, checked on every call.

    ``cache_root`` must be private (``private_cache_root``). Beside the tree lies the zip it came
    from (``<sha256>.zip``); each call hashes that zip and compares the tree with it, file by file
    and byte by byte. A tree that differs in anything (a changed, added or missing file, a
    symlink) is replaced by a fresh extraction, from the kept zip or, when that is missing or no
    longer has its hash, from a new download. Downloaded bytes must hash to ``sha256`` (else
    ``PackageIntegrityError`` and nothing is extracted). Extraction goes to a temporary directory
    renamed into place, so a reader never sees half a package: threads of this process wait for
    one download; another process racing for the same package loses the rename and uses the
    winner's copy once it has checked it.
    """
    sha256 = sha256.lower()
    if not SHA256.match(sha256):
        raise PackagingError(f"package sha256 {sha256!r} is not 64 hex digits")
    root = private_cache_root(Path(cache_root))
    target = root / sha256
    kept = root / f"{sha256}.zip"
    with _materialize_guard:
        lock = _materialize_locks.setdefault(target, threading.Lock())
    with lock:
        data = _kept_zip(kept, sha256)
        if data is not None:
            with _open_zip(data, uri) as zf:
                problem = _tree_problem(target, zf, _layout(zf, uri), uri)
            if problem is None:
                return target
            if problem != "it is missing":
                logger.warning("package cache %s does not match package %s (%s): extracting it again",
                               target, uri, problem)
        else:
            if os.path.lexists(target):
                logger.warning("package cache %s has no verified zip of package %s beside it: downloading it again",
                               target, uri)
            data = get_blob(uri)
            actual = hashlib.sha256(data).hexdigest()
            if actual != sha256:
                raise PackageIntegrityError(f"package {uri} has sha256 {actual}, expected {sha256}: "
                                            "refusing to extract it")
        _install(data, uri, target, kept)
    return target


_module_ids = itertools.count()


def _import_file(file: Path, entrypoint: str) -> Any:
    """``file`` imported as a fresh module (a new name each time: a redeployed file is new code)."""
    digest = hashlib.sha256(str(file.resolve()).encode()).hexdigest()[:12]
    module_name = f"_stratoflow_entrypoint_{digest}_{next(_module_ids)}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise EntrypointError(f"entrypoint {entrypoint!r}: {file} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # a module calling sys.exit() must not stop the executor
        sys.modules.pop(module_name, None)
        raise EntrypointError(f"entrypoint {entrypoint!r}: importing {file} failed: "
                              f"{type(exc).__name__}: {exc}") from exc
    return module


def _attribute(module: Any, attr: str, file: Path, entrypoint: str) -> Any:
    """``module.a.b`` for ``attr`` "a.b", each step's failure named."""
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise EntrypointError(f"entrypoint {entrypoint!r}: {file} has no attribute {attr!r}") from None
        except Exception as exc:  # a module-level __getattr__ or property that raises
            raise EntrypointError(f"entrypoint {entrypoint!r}: reading {attr!r} of {file} failed: "
                                  f"{type(exc).__name__}: {exc}") from exc
    return obj


def load_entrypoint(root: Path, entrypoint: str) -> Flow[..., Any]:
    """Import ``path/to/file.py`` (relative to ``root``) as a fresh module and return its flow
    attribute. ``root`` and ``root/_vendor`` go first on ``sys.path`` so the package's own modules
    and vendored requirements win over what is installed. A file outside ``root`` is refused
    (absolute, ``..``, or a symlink out): a deployment runs its package's code, nothing else."""
    rel_path, attr = check_entrypoint(entrypoint)
    root = Path(root).resolve()
    file = root / rel_path
    if not file.resolve().is_relative_to(root):
        raise EntrypointError(f"entrypoint {entrypoint!r}: {file} resolves to {file.resolve()}, outside the package "
                              f"root {root} (through a symbolic link)")
    if not file.is_file():
        raise EntrypointError(f"entrypoint {entrypoint!r}: file {file} does not exist")
    for entry in (str(root / VENDOR_DIR), str(root)):
        if entry in sys.path:
            sys.path.remove(entry)
        sys.path.insert(0, entry)
    obj = _attribute(_import_file(file, entrypoint), attr, file, entrypoint)
    if not isinstance(obj, DeployableFlow):
        raise EntrypointError(f"entrypoint {entrypoint!r}: {attr!r} is a {type(obj).__name__}, not a flow "
                              "(decorate it with @flow)")
    return obj  # type: ignore[return-value]  # a Flow: the shape checked above
