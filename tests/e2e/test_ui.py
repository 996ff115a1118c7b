"""The web UI in headless chromium against ``stratoflow dev``: a real flow's run page (timeline,
logs, level filter, download), the Run form of a deployment, cancel, and a large run."""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
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
    # Keyboard: arrows in the focused log view select a line and show its full text.
    page.focus("#log-view")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    assert page.locator("#log-detail").is_visible()
    assert page.locator(".log-row.selected").get_attribute("data-index") == "1"
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


# -- deployments: the Run form and cancel ------------------------------------------------------------
@pytest.fixture
def deployment(over_stack: StackClient) -> dict[str, Any]:
    """A deployment whose parameter schema is a real flow's ``parameter_schema()``."""
    name = _unique("ui-report")

    @flow(name=name)
    def report(count: int, code: str = "ABC", mode: Literal["fast", "slow"] = "fast",
               labels: tuple[str, ...] = ()) -> int:
        return count

    return over_stack.ok("POST", "/deployments", {
        "name": "nightly", "flow_name": name, "parameter_openapi_schema": report.parameter_schema(),
        "parameters": {"count": 3}, "description": "A report, every hour",
        "schedules": [{"schedule": {"type": "interval", "interval": 3600}}],
    })


def _runs_of(stack: StackClient, deployment_id: str) -> list[dict[str, Any]]:
    return list(stack.ok("POST", "/flow_runs/filter", {"deployment_id": deployment_id}))


def test_run_form_shows_errors_by_field_and_creates_a_run(over_stack: StackClient, page: Any,
                                                           deployment: dict[str, Any]) -> None:
    dep_id = deployment["id"]
    page.goto(f"{over_stack.ui_url}#/deployments/{dep_id}")
    page.wait_for_selector("#run-form")
    assert page.input_value("#param-count") == "3"  # the deployment's default
    page.locator("#schedules", has_text="every 1h 0m").wait_for()

    # Checked in the browser: not a whole number.
    page.fill("#param-count", "abc")
    page.click("#run-submit")
    page.locator("#param-count-error", has_text="whole number").wait_for()
    assert page.locator("[data-field=count].invalid").count() == 1

    # Checked by the API only (the browser checks that it is an array, not its items): the 422's
    # errors [{loc: "parameters.labels.1", msg}] land next to `labels`.
    page.fill("#param-count", "5")
    page.fill("#param-labels", '["a", 1]')
    page.click("#run-submit")
    page.locator("#param-labels-error", has_text="is not of type 'string'").wait_for()
    assert page.locator("#param-count-error").inner_text() == ""
    assert _runs_of(over_stack, dep_id) == []

    # Good values create the run; it appears among the upcoming runs.
    page.fill("#param-labels", '["a", "b"]')
    page.fill("#param-code", "XYZ")
    page.select_option("#param-mode", label="slow")
    page.click("#run-submit")
    link = page.wait_for_selector("#created-run-link")
    run_id = (link.get_attribute("href") or "").rsplit("/", 1)[-1]
    runs = _runs_of(over_stack, dep_id)
    assert [r["id"] for r in runs] == [run_id]
    assert runs[0]["parameters"] == {"count": 5, "code": "XYZ", "mode": "slow", "labels": ["a", "b"]}
    assert page.locator("#param-labels-error").inner_text() == ""
    page.wait_for_selector(f"#upcoming-runs tr[data-run-id='{run_id}']")


def test_cancel_a_scheduled_run_from_its_page(over_stack: StackClient, page: Any,
                                              deployment: dict[str, Any]) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    run = over_stack.ok("POST", f"/deployments/{deployment['id']}/create_flow_run", {
        "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": later}}})
    page.goto(f"{over_stack.ui_url}#/runs/{run['id']}")
    page.wait_for_selector("#run-state[data-state-type=SCHEDULED]")
    assert page.locator("#action-resume").count() == 0  # resume is for paused runs only
    page.click("#action-cancel")
    page.wait_for_selector("#run-state[data-state-type=CANCELLED]")
    page.locator("#run-messages", has_text="Cancel requested").wait_for()
    assert over_stack.ok("GET", f"/flow_runs/{run['id']}")["state"]["type"] == "CANCELLED"
    # A finished run offers Retry instead; retrying an already retried run shows the API's refusal.
    page.wait_for_selector("#action-retry")
    assert page.locator("#action-cancel").count() == 0


# -- a large run: 2,000 task runs, 50,000 log lines ------------------------------------------------
TASK_RUNS = 2000
LOG_LINES = 50_000
FULL_SCALE = os.environ.get("STRATOFLOW_E2E_FULL_SCALE", "").strip() == "1"


def _write_task_runs(flow_run_id: str, count: int) -> None:
    """Finished task runs straight into the stack's DynamoDB (moto), 25 to a batch write."""
    from stratoflow.models import TaskRun
    from stratoflow.settings import Settings
    from stratoflow.states import Completed, Failed
    from stratoflow.storage.dynamodb import DynamoDBStore

    store = DynamoDBStore(Settings())
    store.start_outbox()
    base = datetime.now(UTC) - timedelta(minutes=30)
    try:
        for i in range(count):
            start = base + timedelta(milliseconds=500 * i)
            state = Failed(message="boom") if i % 100 == 99 else Completed()
            store.create_final_task_run(TaskRun(
                name=f"work-{i}", task_key="work", dynamic_key=str(i), flow_run_id=flow_run_id, state=state,
                state_history=[state], start_time=start, end_time=start + timedelta(seconds=1 + i % 7), run_count=1))
        store.flush()
    finally:
        store.close()


def _log_line(flow_run_id: str, i: int) -> dict[str, Any]:
    stamp = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(milliseconds=i)
    return {"flow_run_id": flow_run_id, "task_run_id": None, "name": "big", "level": (10, 20, 20, 30, 40)[i % 5],
            "message": f"line {i} of the big run", "timestamp": stamp.isoformat(), "seq": i}


def _serve_synthetic_logs(page: Any, flow_run_id: str) -> list[int]:
    """Answer the run's log reads with 50,000 lines in the API's page format (cursor = offset)."""
    from urllib.parse import parse_qs, urlsplit

    reads: list[int] = []

    def handle(route: Any) -> None:
        query = parse_qs(urlsplit(route.request.url).query)
        start = int(query.get("cursor", ["0"])[0])
        limit = int(query.get("limit", ["200"])[0])
        min_level = int(query.get("min_level", ["0"])[0])
        lines: list[dict[str, Any]] = []
        i = start
        while i < LOG_LINES and len(lines) < limit:
            line = _log_line(flow_run_id, i)
            if line["level"] >= min_level:
                lines.append(line)
            i += 1
        reads.append(start)
        route.fulfill(status=200, content_type="application/json",
                      body=json.dumps({"logs": lines, "next_cursor": str(i)}))

    page.route(f"**/flow_runs/{flow_run_id}/logs?*", handle)
    return reads


def test_a_run_with_2000_task_runs_and_50000_log_lines_keeps_the_dom_small(
        over_stack: StackClient, page: Any) -> None:
    run = over_stack.ok("POST", "/flow_runs", {"flow_name": _unique("ui-big"), "state": {"type": "COMPLETED"}})
    started = time.monotonic()
    _write_task_runs(run["id"], TASK_RUNS)
    print(f"wrote {TASK_RUNS} task runs in {time.monotonic() - started:.1f}s")
    if FULL_SCALE:  # about a minute on moto: its DynamoDB takes ~2 ms an item
        for start in range(0, LOG_LINES, 1000):
            over_stack.ok("POST", "/logs", [
                {k: v for k, v in _log_line(run["id"], i).items() if k != "seq"} for i in range(start, start + 1000)])
        reads = None
    else:
        reads = _serve_synthetic_logs(page, run["id"])

    started = time.monotonic()
    page.goto(f"{over_stack.ui_url}#/runs/{run['id']}")
    page.wait_for_selector(f"#timeline[data-total='{TASK_RUNS}']")
    print(f"run page with {TASK_RUNS} task runs drawn in {time.monotonic() - started:.1f}s")
    page.locator("#timeline-summary", has_text=f"{TASK_RUNS:,} task runs").wait_for()
    page.locator("#timeline-summary [data-state-name=Failed][data-count='20']").wait_for()
    bars = page.locator("#timeline .gantt-bar").count()
    assert 0 < bars < 100, f"{bars} timeline bars in the DOM for {TASK_RUNS} task runs"
    # Scrolled to the end, the last task run is drawn (and the first is not any more).
    page.eval_on_selector("#timeline-rows", "el => { el.scrollTop = el.scrollHeight; }")
    page.locator(".gantt-label", has_text=f"work-{TASK_RUNS - 1}").wait_for()
    assert page.locator(".gantt-label", has_text="work-0").count() == 0

    page.locator(".log-row", has_text="line 0 of the big run").wait_for()
    # Scroll the log view to its end a few times: pages load as it goes, the DOM stays small.
    for _ in range(3):
        loaded = int(page.get_attribute("#log-view", "data-loaded") or 0)
        page.eval_on_selector("#log-view", "el => { el.scrollTop = el.scrollHeight; }")
        page.wait_for_function(f"() => Number(document.querySelector('#log-view').dataset.loaded) > {loaded}")
    loaded = int(page.get_attribute("#log-view", "data-loaded") or 0)
    rows = page.locator(".log-row").count()
    assert loaded >= 4000 and rows < 200, f"{rows} log rows in the DOM for {loaded} lines loaded"
    page.eval_on_selector("#log-view", "el => { el.scrollTop = el.scrollHeight; }")
    page.locator(".log-row", has_text=f"line {loaded - 1} of the big run").wait_for()
    if reads is not None:
        assert reads[:4] == [0, 1000, 2000, 3000]  # one page at a time, by cursor


def test_resume_is_offered_for_a_paused_run_only_and_reports_the_api_answer(over_stack: StackClient,
                                                                           page: Any) -> None:
    run = over_stack.ok("POST", "/flow_runs", {"flow_name": _unique("ui-paused"), "state": {"type": "RUNNING"}})
    paused = over_stack.ok("POST", f"/flow_runs/{run['id']}/set_state", {"state": {"type": "PAUSED"}})
    assert paused["status"] == "ACCEPT", paused
    page.goto(f"{over_stack.ui_url}#/runs/{run['id']}")
    page.wait_for_selector("#run-state[data-state-type=PAUSED]")
    page.click("#action-resume")
    page.fill("#resume-input", "not json")
    page.click("#resume-submit")
    page.locator("#resume-form .field-error", has_text="Not JSON").wait_for()
    page.fill("#resume-input", '{"approved": true}')
    page.click("#resume-submit")
    banner = page.wait_for_selector("#run-messages .banner")
    after = over_stack.ok("GET", f"/flow_runs/{run['id']}")["state"]["type"]
    if after == "PAUSED":  # the API refused (or has no resume route yet): its message is shown
        assert "banner-error" in (banner.get_attribute("class") or "")
        assert "HTTP 4" in banner.inner_text()
    else:
        page.locator("#run-messages .banner-ok", has_text="Resumed").wait_for()
        page.wait_for_selector("#run-state:not([data-state-type=PAUSED])")
