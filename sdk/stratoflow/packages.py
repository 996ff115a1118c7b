"""What a deployment's package and entrypoint may be: rules the API, the deployer and the
executor share. Pure: no I/O, so the request schemas and the service layer can apply them."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

SHA256 = re.compile(r"^[0-9a-f]{64}$")


def package_key(sha256: str) -> str:
    """The S3 key of the package with this hash: the only place a package lives."""
    return f"packages/{sha256}.zip"


def package_uri_for(bucket: str, sha256: str) -> str:
    """The one URI a deployment may record for its package: the stack's bucket, ``packages/<sha256>.zip``."""
    return f"s3://{bucket}/{package_key(sha256)}"


def package_uri_problem(uri: str | None, sha256: str | None, bucket: str) -> str | None:
    """Why ``uri``/``sha256`` cannot be a deployment's package (None when they can). Only the
    stack's own bucket is read: a URI elsewhere would make executors fetch code from anywhere."""
    if uri is None or sha256 is None:
        return "package_uri and package_sha256 go together"
    if not SHA256.match(sha256.lower()):
        return f"package_sha256 {sha256!r} is not 64 hex digits"
    expected = package_uri_for(bucket, sha256.lower())
    if uri != expected:
        return f"package_uri {uri!r} is not where this stack keeps that package: it must be {expected}"
    return None


def relative_path_problem(path: str) -> str | None:
    """Why ``path`` could name something outside a package (None when it cannot): absolute
    paths, ``..`` components, ``\\`` separators (``..\\x`` leaves the package on Windows)."""
    if not path:
        return "is empty"
    if "\x00" in path:
        return "contains a NUL character"
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        return "is absolute: give it relative to the package root"
    if "\\" in path:
        return "contains a backslash: use / as the separator"
    if ".." in path.split("/"):
        return "has a '..' component: it must stay inside the package"
    return None


def entrypoint_form_problem(entrypoint: str) -> str | None:
    """Why ``entrypoint`` is not ``path/to/file.py:flow_function`` (None when it is)."""
    path, sep, attr = entrypoint.rpartition(":")
    if not sep or not path or not attr or not path.endswith(".py"):
        return f"entrypoint {entrypoint!r} is not path/to/file.py:flow_function"
    return None


def entrypoint_problem(entrypoint: str) -> str | None:
    """Why ``entrypoint`` cannot be a deployment's (None when it can): its form, or a file
    outside the package."""
    problem = entrypoint_form_problem(entrypoint)
    if problem is not None:
        return problem
    rel_path = entrypoint.rpartition(":")[0]
    outside = relative_path_problem(rel_path)
    return None if outside is None else f"entrypoint {entrypoint!r}: the file {rel_path!r} {outside}"


@runtime_checkable
class DeployableFlow(Protocol):
    """What an entrypoint must name: a ``@flow``. Checked by shape, so the packaging code, on which
    flows build (``Flow.deploy``), need not import ``stratoflow.flows`` (a task has no ``deploy``)."""

    name: str
    fn: Callable[..., Any]

    def deploy(self, name: str, **options: Any) -> Any: ...
