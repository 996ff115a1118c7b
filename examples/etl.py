"""ETL: extract with retries (the source fails on the first attempt), transform mapped over
records, load a summary. Run it: ``python examples/etl.py``."""

from __future__ import annotations

from stratoflow import flow, get_run_logger, task
from stratoflow.context import task_run_ctx


@task(retries=3, retry_delay_seconds=[0.1, 0.2, 0.4], retry_jitter_factor=0.2)
def extract(n: int) -> list[dict[str, int]]:
    """Pretend to call a flaky API: the first attempt of every run times out."""
    ctx = task_run_ctx.get()
    if ctx is not None and ctx.task_run.run_count == 1:
        raise ConnectionError("source API timed out (first attempt always does, to show retries)")
    return [{"id": i, "value": i * i} for i in range(n)]


@task
def transform(record: dict[str, int], factor: int) -> dict[str, int]:
    return {"id": record["id"], "value": record["value"] * factor}


@task
def load(records: list[dict[str, int]]) -> int:
    total = sum(r["value"] for r in records)
    get_run_logger().info("loaded %d records, total value %d", len(records), total)
    return total


@flow(name="etl", log_prints=True)
def etl(n: int = 8, factor: int = 10) -> int:
    records = extract(n)
    print(f"extracted {len(records)} records")
    transformed = transform.map(records, factor=factor)
    return load(transformed.result())


if __name__ == "__main__":
    print(etl())
