"""The web UI in headless chromium against ``stratoflow dev``: a real flow's run page (timeline,
logs, level filter, download), the Run form of a deployment, cancel, and a large run."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from _e2e_support import StackClient

from stratoflow import flow, get_client, get_run_logger, task


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _run_flow_with_retries_and_maps(name: str) -> str:
    attempts = {"flaky": 0}

    @task
    def double(x: int) -> int:
        return 2 * x

    @task(retries=2, retry_delay_seconds=0)
    def flaky() -> str:
        attempts["flaky"] += 1
        if attempts["flaky"] < 2:
            raise ValueError("first attempt fails")
        return "ok"

    @task
    def broken() -> None:
        raise RuntimeError("this task always fails")

    @flow(name=f"{name}-child")
    def child(n: int) -> int:
        return double(n)

    @flow(name=name)
    def parent(n: int) -> int:
        logger = get_run_logger()
        values = double.map(list(range(n))).result()
        logger.info("mapped %d values", len(values))
        logger.warning("a warning from %s", name)
        flaky()
        broken(return_state=True)
        return sum(values) + child(3)

    state = parent(5, return_state=True)
    assert state.is_completed(), state
    return get_client().read_flow_runs(flow_name=name)[0].id


def test_run_page_timeline_shows_every_task_run_with_its_state_and_logs_filter(
        over_stack: StackClient, page: Any, tmp_path: Path) -> None:
    name = _unique("ui-etl")
    run_id = _run_flow_with_retries_and_maps(name)
    task_runs = get_client().read_task_runs(run_id)
    expected = {t.id: (t.state.type.value, t.state.name) for t in task_runs if t.state}
    assert len(expected) == 8  # 5 mapped, flaky, broken and the subflow's task run
    assert {s for s, _ in expected.values()} == {"COMPLETED", "FAILED"}

    page.goto(f"{over_stack.ui_url}#/runs/{run_id}")
    page.wait_for_selector("#run-state[data-state-type=COMPLETED]")
    bars = page.locator("#timeline .gantt-bar")
    bars.nth(len(expected) - 1).wait_for()
    assert bars.count() == len(expected)
    seen = {}
    for i in range(bars.count()):
        bar = bars.nth(i)
        seen[bar.get_attribute("data-task-run-id")] = (bar.get_attribute("data-state-type"),
                                                       bar.get_attribute("data-state-name"))
        assert f"state-{seen[bar.get_attribute('data-task-run-id')][0]}" in (bar.get_attribute("class") or "")
    assert seen == expected
    # The retried task shows its attempts; the subflow's bar links to the child run.
    flaky_run = next(t for t in task_runs if t.task_key.endswith("flaky") or t.name.startswith("flaky"))
    assert flaky_run.run_count == 2
    assert "2 attempts" in (page.locator(f"[data-task-run-id='{flaky_run.id}']").get_attribute("title") or "")
    child_run = next(t for t in task_runs if t.child_flow_run_id)
    page.locator(f"a.gantt-bar[data-child-flow-run-id='{child_run.child_flow_run_id}']").wait_for()

    # Logs: every line of the run, then only warnings and up.
    page.locator(".log-row", has_text="mapped 5 values").wait_for()
    page.select_option("#log-level", "30")
    page.locator(".log-row", has_text=f"a warning from {name}").wait_for()
    page.wait_for_function("() => document.querySelectorAll('.log-row').length > 0 && "
                           "[...document.querySelectorAll('.log-row')].every(r => r.dataset.level !== 'INFO' "
                           "&& r.dataset.level !== 'DEBUG')")
    assert page.locator(".log-row", has_text="mapped 5 values").count() == 0
    with page.expect_download() as download_info:
        page.click("#log-download")
    saved = tmp_path / "logs.txt"
    download_info.value.save_as(saved)
    text = saved.read_text()
    assert f"a warning from {name}" in text and "mapped 5 values" not in text

    # The subflow link opens the child run's page.
    page.click(f"a.gantt-bar[data-child-flow-run-id='{child_run.child_flow_run_id}']")
    page.wait_for_selector("#parent-link")
    assert child_run.child_flow_run_id in page.url
