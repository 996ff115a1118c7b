"""``stratoflow deployment schedule ls|add|pause|resume|rm`` on the embedded cloud."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from stratoflow import cli

pytestmark = pytest.mark.store_only("reads deployments through the in-process client")


@pytest.fixture(autouse=True)
def _fresh_scheduler() -> Iterator[None]:
    from moto.backends import get_backend

    get_backend("scheduler").reset()
    yield
    get_backend("scheduler").reset()


@pytest.fixture
def deployment(client: Any) -> Any:
    return client.create_deployment("etl", "nightly", parameters={"n": 1})


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_add_and_ls(capsys: pytest.CaptureFixture[str], client: Any, deployment: Any) -> None:
    code, out, _ = run(capsys, "deployment", "schedule", "ls", "etl/nightly")
    assert code == 0 and "no schedules" in out
    code, out, err = run(capsys, "deployment", "schedule", "add", "etl/nightly", "--cron", "*/15 9-17 * * 1-5",
                         "--timezone", "Europe/Paris", "--id", "office", "-p", "n=5")
    assert code == 0, err
    assert "Added schedule office to etl/nightly" in out and "EventBridge cron(0/15 9-17 ? * MON-FRI *)" in out
    code, out, err = run(capsys, "deployment", "schedule", "add", "etl/nightly", "--rrule", "FREQ=HOURLY;INTERVAL=5",
                         "--id", "odd")
    assert code == 0, err
    assert "fired by tick" in out
    dep = client.read_deployment("etl/nightly")
    assert [s.id for s in dep.schedules] == ["office", "odd"]
    assert dep.schedules[0].parameters == {"n": 5}
    code, out, _ = run(capsys, "deployment", "schedule", "ls", "etl/nightly", "--count", "2")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "Deployment etl/nightly"
    assert any(line.startswith("office") and "cron */15 9-17 * * 1-5" in line and "Europe/Paris" in line
               and "EventBridge cron(0/15 9-17 ? * MON-FRI *)" in line for line in lines)
    assert any(line.startswith("odd") and line.rstrip().endswith("tick") for line in lines)
    upcoming = [line for line in lines if re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", line)]
    assert len([line for line in upcoming if line.startswith("office")]) == 2
    assert len([line for line in upcoming if line.startswith("odd")]) == 2
    office = next(line for line in upcoming if line.startswith("office"))
    # the same instant in UTC and in Paris (1 or 2 hours ahead)
    utc_hour = int(office.split()[2].split(":")[0])
    local_hour = int(office.split()[5].split(":")[0])
    assert (local_hour - utc_hour) % 24 in (1, 2) and office.split()[-1] == "Europe/Paris"


def test_add_without_an_id_keeps_the_generated_one(capsys: pytest.CaptureFixture[str], client: Any,
                                                   deployment: Any) -> None:
    code, out, _ = run(capsys, "--json", "deployment", "schedule", "add", "etl/nightly", "--cron", "@daily")
    assert code == 0
    added = json.loads(out)["id"]
    assert [s.id for s in client.read_deployment("etl/nightly").schedules] == [added]


def test_ls_json(capsys: pytest.CaptureFixture[str], deployment: Any) -> None:
    run(capsys, "deployment", "schedule", "add", "etl/nightly", "--interval", "90", "--anchor-date",
        "2026-01-01T00:00:00+00:00", "--id", "i")
    code, out, _ = run(capsys, "--json", "deployment", "schedule", "ls", "etl/nightly", "--count", "3")
    assert code == 0
    data = json.loads(out)
    [sched] = data["schedules"]
    assert sched["id"] == "i" and sched["eventbridge"] is None and "whole number of minutes" in sched["tick_reason"]
    assert len(sched["upcoming"]) == 3


def test_pause_resume_rm(capsys: pytest.CaptureFixture[str], client: Any, deployment: Any) -> None:
    run(capsys, "deployment", "schedule", "add", "etl/nightly", "--cron", "@hourly", "--id", "h")
    assert run(capsys, "deployment", "schedule", "pause", "etl/nightly", "h")[1].startswith("Paused schedule h")
    assert client.read_deployment("etl/nightly").schedules[0].active is False
    _code, out, _ = run(capsys, "deployment", "schedule", "ls", "etl/nightly")
    assert "inactive" in out and "NEXT (UTC)" not in out
    assert run(capsys, "deployment", "schedule", "resume", "etl/nightly", "h")[0] == 0
    assert client.read_deployment("etl/nightly").schedules[0].active is True
    assert run(capsys, "deployment", "schedule", "rm", "etl/nightly", "h")[1].startswith("Removed schedule h")
    assert client.read_deployment("etl/nightly").schedules == []
    assert client.read_deployment("etl/nightly").parameters == {"n": 1}  # the rest stays


def test_paused_deployment_shows_no_upcoming(capsys: pytest.CaptureFixture[str], client: Any,
                                            deployment: Any) -> None:
    run(capsys, "deployment", "schedule", "add", "etl/nightly", "--cron", "@daily", "--id", "d")
    client.pause_deployment("etl/nightly")
    code, out, _ = run(capsys, "deployment", "schedule", "ls", "etl/nightly")
    assert code == 0 and "paused: no runs are created" in out and "NEXT (UTC)" not in out


@pytest.mark.parametrize(("argv", "code", "message"), [
    (["add", "etl/nightly", "--cron", "61 * * * *"], 2, "error: cron: Value error, '61 * * * *' is not a valid"),
    (["add", "etl/nightly", "--cron", "0 * * * *", "--timezone", "Mars/Base"], 2, "error: timezone: Value error"),
    (["add", "etl/nightly", "--rrule", "FREQ=NEVER"], 2, "error: rrule: Value error"),
    (["add", "etl/nightly", "--interval", "0.1"], 2, "error: interval: Input should be greater than or equal to 1"),
    (["add", "etl/nightly", "--interval", "60", "--anchor-date", "soon"], 2, "is not an ISO 8601 time"),
    (["add", "etl/nightly", "--rrule", "FREQ=DAILY", "--no-day-or"], 2, "--no-day-or applies to --cron only"),
    (["add", "etl/nightly", "--cron", "@daily", "--id", "dup"], 2, "already has a schedule 'dup'"),
    (["add", "etl/other", "--cron", "@daily"], 1, "error: deployment 'etl/other' not found"),
    (["pause", "etl/nightly", "nope"], 1, "has no schedule 'nope' (its schedules: dup)"),
    (["rm", "etl/nightly", "nope"], 1, "has no schedule 'nope'"),
    (["ls", "etl/nightly", "--count", "0"], 2, "--count must be at least 1"),
])
def test_errors(capsys: pytest.CaptureFixture[str], client: Any, deployment: Any, argv: list[str], code: int,
                message: str) -> None:
    from stratoflow.schedules.models import CronSchedule, DeploymentSchedule

    client.create_deployment("etl", "nightly", schedules=[DeploymentSchedule(id="dup",
                                                                            schedule=CronSchedule(cron="@daily"))])
    got, _out, err = run(capsys, "deployment", "schedule", *argv)
    assert got == code
    assert message in err, err
    assert len(err.strip().splitlines()) == 1
    assert [s.id for s in client.read_deployment("etl/nightly").schedules] == ["dup"]


def test_a_schedule_kind_is_required(capsys: pytest.CaptureFixture[str], deployment: Any) -> None:
    code = cli.main(["deployment", "schedule", "add", "etl/nightly"])
    assert code == 2
    assert "one of the arguments --cron --interval --rrule is required" in capsys.readouterr().err
