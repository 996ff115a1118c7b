"""The CLI's object commands on the embedded backend: flow-run cancel/retry, deployment,
work-pool and concurrency-limit; tables, --json, and one-line errors with a non-zero exit."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stratoflow import get_client
from stratoflow.cli import main
from stratoflow.cli._params import parse_params as _parse_params
from stratoflow.models import FlowRun
from stratoflow.orchestration import RunKind
from stratoflow.states import Failed, Running, Scheduled


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str, exit_code: int = 1) -> None:
    assert code == exit_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, err)


def new_run(state: Any) -> FlowRun:
    client = get_client()
    client.store.ensure_flow(__import__("stratoflow.models", fromlist=["Flow"]).Flow(name="cli-objects"))
    run = client.store.create_run(RunKind.FLOW, FlowRun(name="r", flow_name="cli-objects"))
    client.set_flow_run_state(run.id, state)
    return client.read_flow_run(run.id)


def test_flow_run_cancel_and_retry(capsys: pytest.CaptureFixture[str]) -> None:
    running = new_run(Running())
    code, out, _ = run_cli(capsys, "flow-run", "cancel", running.id)
    assert code == 0 and "Cancelling" in out and running.id in out
    scheduled = new_run(Scheduled())
    code, out, _ = run_cli(capsys, "--json", "flow-run", "cancel", scheduled.id)
    assert code == 0 and json.loads(out)["state"]["type"] == "CANCELLED"

    code, _, err = run_cli(capsys, "flow-run", "cancel", scheduled.id)
    assert_one_line_error(code, err, "terminal state")
    code, out, _ = run_cli(capsys, "flow-run", "retry", scheduled.id)
    assert code == 0 and "AwaitingRetry" in out
    code, _, err = run_cli(capsys, "flow-run", "retry", scheduled.id)
    assert_one_line_error(code, err, "only a finished flow run")
    code, _, err = run_cli(capsys, "flow-run", "cancel", "nope")
    assert_one_line_error(code, err, "'nope' not found")


def test_deployment_ls_inspect_run(capsys: pytest.CaptureFixture[str]) -> None:
    client = get_client()
    schema = {"type": "object", "properties": {"n": {"type": "integer"}, "label": {"type": "string"},
                                               "opts": {"type": "object"}}, "required": ["n"]}
    dep = client.create_deployment("cli-flow", "nightly", parameters={"label": "x"}, parameter_openapi_schema=schema,
                                   tags=["etl"])
    code, out, _ = run_cli(capsys, "deployment", "ls")
    assert code == 0 and "cli-flow/nightly" in out and dep.id in out and "NAME" in out.splitlines()[0]
    code, out, _ = run_cli(capsys, "--json", "deployment", "ls", "--flow", "cli-flow")
    assert [d["id"] for d in json.loads(out)] == [dep.id]
    for ref in (dep.id, "cli-flow/nightly"):
        code, out, _ = run_cli(capsys, "deployment", "inspect", ref)
        assert code == 0 and "cli-flow/nightly" in out and '"label": "x"' in out
    code, out, _ = run_cli(capsys, "--json", "deployment", "inspect", dep.id)
    assert json.loads(out)["version"] == 1

    code, out, _ = run_cli(capsys, "--json", "deployment", "run", "cli-flow/nightly", "--param", "n=3",
                           "--param", 'opts={"a": [1]}', "-p", "label=hello world")
    assert code == 0
    run = json.loads(out)
    assert run["parameters"] == {"n": 3, "opts": {"a": [1]}, "label": "hello world"}
    assert run["deployment_id"] == dep.id and client.read_flow_run(run["id"]).deployment_id == dep.id
    code, out, _ = run_cli(capsys, "deployment", "run", dep.id, "--param", "n=4")
    assert code == 0 and "Created flow run" in out and '"n": 4' in out

    before = len(client.read_flow_runs(deployment_id=dep.id))
    code, _, err = run_cli(capsys, "deployment", "run", dep.id, "--param", "n=four")
    assert_one_line_error(code, err, "parameters.n")
    code, _, err = run_cli(capsys, "deployment", "run", dep.id)
    assert_one_line_error(code, err, "parameters.n", "required")
    code, _, err = run_cli(capsys, "deployment", "run", dep.id, "--param", "novalue")
    assert_one_line_error(code, err, "KEY=VALUE", exit_code=2)
    code, _, err = run_cli(capsys, "deployment", "run", dep.id, "--param", "=3")
    assert_one_line_error(code, err, "KEY=VALUE", exit_code=2)
    client.pause_deployment(dep.id)
    code, _, err = run_cli(capsys, "deployment", "run", dep.id, "--param", "n=1")
    assert_one_line_error(code, err, "paused")
    assert len(client.read_flow_runs(deployment_id=dep.id)) == before
    code, _, err = run_cli(capsys, "deployment", "inspect", "nope")
    assert_one_line_error(code, err, "'nope' not found")
    code, _, err = run_cli(capsys, "deployment", "run", "cli-flow/missing")
    assert_one_line_error(code, err, "cli-flow/missing")


def test_parse_params() -> None:
    assert _parse_params(["a=1", "b=true", "c=x=y", "d=", 'e="q"', "f=[1, 2]"]) == {
        "a": 1, "b": True, "c": "x=y", "d": "", "e": "q", "f": [1, 2]}


def test_work_pool_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "work-pool", "create", "builds", "--type", "process", "--limit", "3")
    assert code == 0 and "builds" in out and "process" in out
    code, out, _ = run_cli(capsys, "--json", "work-pool", "create", "default")
    assert code == 0 and json.loads(out)["type"] == "lambda"
    code, out, _ = run_cli(capsys, "work-pool", "ls")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["NAME", "TYPE", "STATUS", "LIMIT", "CREATED"]
    assert any(line.startswith("builds") and "process" in line and "3" in line for line in lines)
    code, out, _ = run_cli(capsys, "work-pool", "pause", "builds")
    assert code == 0 and "paused" in out
    code, out, _ = run_cli(capsys, "--json", "work-pool", "ls")
    assert {p["name"]: p["paused"] for p in json.loads(out)} == {"builds": True, "default": False}
    code, out, _ = run_cli(capsys, "work-pool", "resume", "builds")
    assert code == 0 and "active" in out

    code, _, err = run_cli(capsys, "work-pool", "create", "builds")
    assert_one_line_error(code, err, "already exists")
    code, _, err = run_cli(capsys, "work-pool", "create", "bad name")
    assert_one_line_error(code, err, "name", exit_code=2)
    code, _, err = run_cli(capsys, "work-pool", "create", "x", "--limit", "-1")
    assert_one_line_error(code, err, "concurrency_limit", exit_code=2)
    code, _, err = run_cli(capsys, "work-pool", "pause", "nope")
    assert_one_line_error(code, err, "work pool 'nope' not found")
    assert [p.name for p in get_client().read_work_pools()] == ["builds", "default"]


def test_concurrency_limit_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "concurrency-limit", "create", "db", "2")
    assert code == 0 and "'db'" in out and "2" in out
    code, out, _ = run_cli(capsys, "--json", "concurrency-limit", "create", "db", "5")
    assert code == 0 and json.loads(out)["limit"] == 5 and json.loads(out)["version"] == 2
    code, out, _ = run_cli(capsys, "concurrency-limit", "ls")
    assert code == 0 and out.splitlines()[0].split() == ["TAG", "LIMIT", "ACTIVE", "UPDATED"]
    assert out.splitlines()[2].split()[:3] == ["db", "5", "0"]
    code, out, _ = run_cli(capsys, "--json", "concurrency-limit", "ls")
    assert [c["tag"] for c in json.loads(out)] == ["db"]
    code, _, err = run_cli(capsys, "concurrency-limit", "create", "db", "-1")
    assert_one_line_error(code, err, "limit", exit_code=2)
    code, out, _ = run_cli(capsys, "concurrency-limit", "delete", "db")
    assert code == 0 and "Deleted" in out
    code, _, err = run_cli(capsys, "concurrency-limit", "delete", "db")
    assert_one_line_error(code, err, "'db' not found")
    assert get_client().read_concurrency_limits() == []


def test_failed_flow_run_retry_via_client() -> None:
    run = new_run(Running())
    get_client().set_flow_run_state(run.id, Failed())
    retried = get_client().retry_flow_run(run.id)
    assert retried.state is not None and retried.state.name == "AwaitingRetry"
