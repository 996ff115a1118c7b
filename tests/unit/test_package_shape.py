"""The package's shape rules that no linter checks for us (docs/architecture.md): a function-local
import only where start-up time needs it, with a comment saying so; object kinds named once."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import stratoflow
from stratoflow.models import ObjectKind

PACKAGE = Path(stratoflow.__file__).resolve().parent
# The one import from the core into storage is not about start-up time; pyproject.toml lists it.
REASONS = ("cold start", "core into storage")


def _local_imports(path: Path) -> list[tuple[int, str]]:
    """(line, reason comment or "") of each block of consecutive imports inside a function."""
    lines = path.read_text().splitlines()
    out: list[tuple[int, str]] = []
    seen: set[int] = set()
    for fn in ast.walk(ast.parse("\n".join(lines))):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or node.lineno in seen:
                continue
            seen.add(node.lineno)
            first = node.lineno - 1
            while first > 0 and lines[first - 1].lstrip().startswith(("import ", "from ")):
                first -= 1  # the block's first import carries the comment
            above = []
            i = first - 1
            while i >= 0 and lines[i].lstrip().startswith("#"):
                above.append(lines[i])
                i -= 1
            out.append((node.lineno, " ".join([*above, lines[node.lineno - 1]])))
    return out


def test_every_function_local_import_says_why() -> None:
    unexplained = [f"{path.relative_to(PACKAGE)}:{line}"
                   for path in sorted(PACKAGE.rglob("*.py"))
                   for line, text in _local_imports(path)
                   if not any(reason in text for reason in REASONS)]
    assert unexplained == []


def test_the_scan_finds_function_local_imports() -> None:
    """Not blind: the storage package's lazy backends are function-local, and explained."""
    found = _local_imports(PACKAGE / "storage" / "__init__.py")
    assert found and all("cold start" in text for _, text in found)


def test_object_kinds_are_named_only_in_object_kind() -> None:
    """A record kind is spelled once (models.ObjectKind); everything else refers to the member."""
    spelled = re.compile("|".join(rf"""["']{re.escape(kind.value)}["']""" for kind in ObjectKind))
    places = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if spelled.search(line) and ("put_object" in line or "get_object" in line or "list_objects" in line
                                         or "delete_object" in line or re.search(r"^[A-Z_]+ = ", line)):
                places.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert places == []
