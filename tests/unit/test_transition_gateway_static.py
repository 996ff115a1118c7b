"""Only the transition gateway asks the policy, moves a run and commits it: no other module of the
package calls ``orchestrate``, ``apply_transition`` or a store's run writes (the storage layer's
own composition of its primitives aside). The functional tier checks the same at run time, for
every test (``tests/functional/_gateway_watch.py``)."""

from __future__ import annotations

import ast
from pathlib import Path

import stratoflow

PACKAGE = Path(stratoflow.__file__).resolve().parent
GATEWAY = PACKAGE / "control" / "transitions.py"
POLICY_CALLS = {"orchestrate", "apply_transition"}
RUN_WRITES = {"create_run", "commit_run", "create_final_task_run", "create_flow_run_idempotent"}
# Service functions may share a store method's name (control.engine_runs.create_run): a call on a
# control module is a call into the service layer, which the scan covers in that module itself.
CONTROL_MODULES = {path.stem for path in (PACKAGE / "control").glob("*.py")}


def _calls(path: Path) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in CONTROL_MODULES:
            continue
        if name in POLICY_CALLS or (isinstance(func, ast.Attribute) and name in RUN_WRITES):
            found.append((name, node.lineno))
    return found


def test_only_the_gateway_calls_the_policy_and_writes_runs() -> None:
    allowed = {GATEWAY}
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path in allowed or path.is_relative_to(PACKAGE / "storage") or path.is_relative_to(
                PACKAGE / "orchestration"):
            continue
        offenders += [f"{path.relative_to(PACKAGE)}:{line} calls {name}" for name, line in _calls(path)]
    assert offenders == []


def test_the_scan_sees_the_gateway_calls() -> None:
    """The scan is not blind: it finds the calls the gateway itself makes."""
    names = {name for name, _ in _calls(GATEWAY)}
    assert names == POLICY_CALLS | RUN_WRITES
