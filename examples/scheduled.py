"""A small report meant to run on a schedule: every 15 minutes (cron "*/15 * * * *") in
examples/stratoflow.yaml, and every 5 seconds in the demo's copy of it."""

from __future__ import annotations

from datetime import UTC, datetime

from stratoflow import flow, get_run_logger, task


@task
def collect_metrics(window_minutes: int) -> dict[str, float]:
    return {"requests": 1200.0 * window_minutes / 15, "errors": 3.0, "p99_ms": 182.5}


@task
def check_thresholds(metrics: dict[str, float], max_error_rate: float) -> bool:
    rate = metrics["errors"] / metrics["requests"]
    get_run_logger().info("error rate %.4f (threshold %.4f)", rate, max_error_rate)
    return rate <= max_error_rate


@flow(name="quarter-hour-report", flow_run_name="report-{window_minutes}m")
def quarter_hour_report(window_minutes: int = 15, max_error_rate: float = 0.01) -> bool:
    get_run_logger().info("report for the window ending %s", datetime.now(UTC).isoformat(timespec="seconds"))
    return check_thresholds(collect_metrics(window_minutes), max_error_rate)


if __name__ == "__main__":
    print(quarter_hour_report())
