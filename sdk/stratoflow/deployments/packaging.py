"""Deployment packages: a flow's source directory (and its vendored requirements) as one zip.

The zip is deterministic (sorted entries, fixed timestamps and permissions, a manifest without
times), so the same content always has the same sha256 and therefore the same S3 key
(``packages/<sha256>.zip``): deploying unchanged code uploads nothing. The executor side
(``materialize_package``) verifies that hash before it extracts anything.

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
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from stratoflow.exceptions import StratoflowError

if TYPE_CHECKING:
    from stratoflow.flows import Flow
    from stratoflow.storage.blobs import S3Blobs

Progress = Callable[[str], None]

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
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
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
        return f"packages/{self.sha256}.zip"


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
        lines += path.read_text(encoding="utf-8").splitlines()
    elif ignore_file != ".stratoflowignore":
        raise PackagingError(f"ignore file {path} does not exist")
    return IgnoreRules(lines)


def collect_files(source_dir: Path, rules: IgnoreRules) -> list[tuple[str, Path]]:
    """``(relative POSIX name, path)`` of every file not ignored, sorted by name. Symlinked
    files are followed; symlinked directories are not (they could loop)."""
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(source_dir):
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
    for raw in path.read_text(encoding="utf-8").splitlines():
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
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        what = f"requirements file {requirements}" if isinstance(requirements, Path) else "requirements"
        raise PackagingError(f"pip could not install the {what} ({done.returncode}): "
                             + (detail[-1] if detail else "no output"))


# -- building -------------------------------------------------------------------------------------
def parse_entrypoint(entrypoint: str) -> tuple[str, str]:
    """``path/to/file.py:flow_fn`` -> (path, attribute)."""
    path, sep, attr = entrypoint.rpartition(":")
    if not sep or not path or not attr or not path.endswith(".py"):
        raise EntrypointError(f"entrypoint {entrypoint!r} is not path/to/file.py:flow_function")
    return path, attr


def _zip_entry(name: str, is_dir: bool = False) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.create_system = 3
    info.external_attr = _DIR_MODE if is_dir else _FILE_MODE
    info.compress_type = zipfile.ZIP_STORED if is_dir else zipfile.ZIP_DEFLATED
    return info


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

        total = 0
        sizes = []
        for rel, path in entries:
            size = path.stat().st_size
            total += size
            sizes.append((size, rel))
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
                zf.writestr(_zip_entry(rel), path.read_bytes())
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
    uri = f"s3://{store.settings.bucket}/{package.key}"
    if store.has_blob(uri):
        say(f"already uploaded (same content): {uri}")
        return uri
    say(f"uploading {human_size(package.size)} to {uri}")
    return store.put_blob(package.key, package.data)


# -- the executor side ----------------------------------------------------------------------------
_materialize_locks: dict[Path, threading.Lock] = {}
_materialize_guard = threading.Lock()


def _safe_members(zf: zipfile.ZipFile, root: Path) -> list[tuple[zipfile.ZipInfo, Path]]:
    """Every entry with its destination; refuses (before anything is written) an entry that
    would land outside ``root`` or a package too large to hold."""
    out = []
    total = 0
    for info in zf.infolist():
        name = info.filename
        pure = PurePosixPath(name)
        dest = (root / name).resolve()
        if (pure.is_absolute() or ".." in pure.parts or "\\" in name or re.match(r"^[A-Za-z]:", name)
                or not dest.is_relative_to(root.resolve())):
            raise PackagingError(f"package entry {name!r} escapes the package directory; refusing to extract")
        total += info.file_size
        out.append((info, dest))
    if total > MAX_UNZIPPED_BYTES:
        raise PackagingError(f"package would extract to {human_size(total)}, over {human_size(MAX_UNZIPPED_BYTES)}")
    return out


def _extract(data: bytes, root: Path) -> None:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = _safe_members(zf, root)
        for info, dest in members:
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)


def materialize_package(uri: str, sha256: str, *, get_blob: Callable[[str], bytes], cache_root: Path) -> Path:
    """The package's files under ``cache_root/<sha256>/``, downloading only when not cached.

    The downloaded bytes must hash to ``sha256`` (else ``PackageIntegrityError`` and nothing is
    extracted). Extraction goes to a temporary directory renamed into place, so a reader never
    sees half a package: threads of this process wait for one download; another process racing
    for the same package loses the rename and uses the winner's copy.
    """
    sha256 = sha256.lower()
    if not _SHA256.match(sha256):
        raise PackagingError(f"package sha256 {sha256!r} is not 64 hex digits")
    cache_root = Path(cache_root)
    target = cache_root / sha256
    if target.is_dir():
        return target
    with _materialize_guard:
        lock = _materialize_locks.setdefault(target.absolute(), threading.Lock())
    with lock:
        if target.is_dir():
            return target
        data = get_blob(uri)
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise PackageIntegrityError(f"package {uri} has sha256 {actual}, expected {sha256}: "
                                        "refusing to extract it")
        cache_root.mkdir(parents=True, exist_ok=True)
        tmp = cache_root / f".tmp-{sha256[:16]}-{uuid.uuid4().hex}"
        try:
            try:
                _extract(data, tmp)
            except zipfile.BadZipFile as exc:
                raise PackagingError(f"package {uri} is not a zip file: {exc}") from exc
            try:
                os.rename(tmp, target)
            except OSError:
                if not target.is_dir():
                    raise
                # Another process renamed its copy first: theirs is the same content.
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


_module_ids = itertools.count()


def load_entrypoint(root: Path, entrypoint: str) -> Flow[..., Any]:
    """Import ``path/to/file.py`` (relative to ``root``, or absolute) as a fresh module and
    return its flow attribute. ``root`` and ``root/_vendor`` go first on ``sys.path`` so the
    package's own modules and vendored requirements win over what is installed."""
    from stratoflow.flows import Flow

    rel_path, attr = parse_entrypoint(entrypoint)
    root = Path(root).resolve()
    file = Path(rel_path) if Path(rel_path).is_absolute() else root / rel_path
    if not file.is_file():
        raise EntrypointError(f"entrypoint {entrypoint!r}: file {file} does not exist")
    for entry in (str(root / VENDOR_DIR), str(root)):
        if entry in sys.path:
            sys.path.remove(entry)
        sys.path.insert(0, entry)
    digest = hashlib.sha256(str(file.resolve()).encode()).hexdigest()[:12]
    module_name = f"_stratoflow_entrypoint_{digest}_{next(_module_ids)}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise EntrypointError(f"entrypoint {entrypoint!r}: {file} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise EntrypointError(f"entrypoint {entrypoint!r}: importing {file} failed: "
                              f"{type(exc).__name__}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise EntrypointError(f"entrypoint {entrypoint!r}: {file} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, Flow):
        raise EntrypointError(f"entrypoint {entrypoint!r}: {attr!r} is a {type(obj).__name__}, not a flow "
                              "(decorate it with @flow)")
    return obj
