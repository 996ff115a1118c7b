"""Screenshots of the web UI for the docs: ``.venv/bin/python tests/e2e/screenshots.py [OUT_DIR]``.

Starts ``stratoflow dev`` on free ports, fills it with example runs (a flow with mapped tasks,
retries, a failing task, a subflow and logs; a deployment with a schedule and upcoming runs;
work pools), opens each page in headless chromium (installed like the e2e tests do) and writes
``dashboard.png``, ``runs.png``, ``run.png``, ``deployment.png`` and ``pools.png`` to OUT_DIR
(default ``docs/screenshots``).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

from _chromium import ensure_chromium  # noqa: E402
from _e2e_support import StackClient  # noqa: E402


def _launcher() -> Any:
    spec = importlib.util.spec_from_file_location("_stratoflow_test_dev_stack", REPO / "tests/integration/conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _populate(stack: StackClient) -> dict[str, str]:
    from stratoflow import flow, get_client, get_run_logger, task
    from stratoflow.exceptions import StratoflowError

    attempts: dict[str, int] = {}

    @task
    def extract(n: int) -> list[int]:
        get_run_logger().info("extracting %d rows", n)
        return list(range(n))

    @task
    def transform(x: int) -> int:
        time.sleep(0.01 * (x % 5))
        return x * x

    @task(retries=2, retry_delay_seconds=0)
    def load(values: list[int]) -> int:
        key = str(len(values))
        attempts[key] = attempts.get(key, 0) + 1
        if attempts[key] < 2:
            get_run_logger().warning("warehouse busy, will retry")
            raise ConnectionError("warehouse busy")
        return sum(values)

    @task
    def notify(total: int) -> None:
        raise RuntimeError(f"webhook refused the message for {total}")

    @flow(name="report")
    def report(total: int) -> str:
        get_run_logger().info("report for %d", total)
        return f"total={total}"

    @flow(name="etl", log_prints=True)
    def etl(rows: int = 12, target: str = "warehouse", dry_run: bool = False) -> int:
        values = transform.map(extract(rows)).result()
        total = load(values)
        notify(total, return_state=True)
        print(f"loaded {len(values)} rows into {target}: total {total}")
        report(total)
        return total

    @flow(name="cleanup")
    def cleanup() -> None:
        raise ValueError("bucket not empty")

    for rows in (12, 20, 8):
        etl(rows)
    cleanup(return_state=True)
    run_id = get_client().read_flow_runs(flow_name="etl")[0].id

    stack.ok("POST", "/work_pools", {"name": "lambda-pool", "description": "Runs flows on the executor Lambda",
                                     "concurrency_limit": 20})
    for queue, priority in (("urgent", 1), ("batch", 5)):
        status, _, _ = stack.call("POST", "/work_pools/lambda-pool/queues", {"name": queue, "priority": priority})
        assert status in (201, 409)
    stack.ok("POST", "/work_pools", {"name": "long-jobs", "type": "process",
                                     "description": "A stratoflow worker polls it for flows over 15 minutes"})
    stack.ok("POST", "/work_pools/long-jobs/pause")

    dep = stack.ok("POST", "/deployments", {
        "name": "nightly", "flow_name": "etl", "description": "Loads yesterday's rows every night",
        "parameter_openapi_schema": etl.parameter_schema(), "parameters": {"rows": 1000},
        "tags": ["prod", "etl"], "entrypoint": "flows/etl.py:etl",
        "schedules": [{"schedule": {"type": "cron", "cron": "0 2 * * *", "timezone": "Europe/Paris"}},
                      {"schedule": {"type": "interval", "interval": 21600}, "active": False}],
    })
    now = datetime.now(UTC)
    for hours in (2, 26, 50):
        when = (now + timedelta(hours=hours)).isoformat()
        stack.ok("POST", f"/deployments/{dep['id']}/create_flow_run",
                 {"state": {"type": "SCHEDULED", "state_details": {"scheduled_time": when}}})
    stack.ok("POST", f"/deployments/{dep['id']}/create_flow_run", {"state": {
        "type": "SCHEDULED", "state_details": {"scheduled_time": (now - timedelta(minutes=12)).isoformat()}}})
    try:
        for _ in range(2):
            stack.ok("POST", f"/deployments/{dep['id']}/create_flow_run", {"state": {"type": "FAILED",
                                                                                     "message": "exit code 1"}})
    except (AssertionError, StratoflowError):
        pass  # the rules may refuse a run created failed: the dashboard then has no failing deployment
    return {"run": run_id, "deployment": dep["id"]}


def main(out_dir: Path) -> None:
    from playwright.sync_api import sync_playwright

    chromium = ensure_chromium()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as home:
        process = _launcher().launch_dev_stack(["--port", "0"], Path(home) / "stack")
        try:
            stack = StackClient(process.env)
            for name in [n for n in os.environ if n.startswith(("STRATOFLOW_", "AWS_"))]:
                del os.environ[name]
            os.environ.update(stack.env, STRATOFLOW_HOME=str(Path(home) / "sdk"), STRATOFLOW_LOG_TO_CONSOLE="false")
            ids = _populate(stack)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(chromium), headless=True,
                                                     args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1360, "height": 900}, device_scale_factor=1)
                shots = [
                    ("dashboard", "#/", "#state-counts"),
                    ("runs", "#/runs", "#runs-table"),
                    ("run", f"#/runs/{ids['run']}", ".log-row"),
                    ("deployment", f"#/deployments/{ids['deployment']}", "#upcoming-runs"),
                    ("pools", "#/pools", "section.pool"),
                ]
                for name, route, ready in shots:
                    page.goto(f"{stack.ui_url}{route}")
                    page.wait_for_selector(ready)
                    if name == "deployment":  # show a field error the way a user meets it
                        page.fill("#param-rows", "many")
                        page.click("#run-submit")
                        page.wait_for_selector("#param-rows-error:not(:empty)")
                    path = out_dir / f"{name}.png"
                    page.screenshot(path=str(path), full_page=True)
                    print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
                browser.close()
        finally:
            process.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "screenshots")
