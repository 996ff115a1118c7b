"""A parent flow with one subflow per region; an expensive lookup is cached by its inputs, so
the second region that needs the same rates does not compute them again."""

from __future__ import annotations

import time
from datetime import timedelta

from stratoflow import flow, get_run_logger, task
from stratoflow.cache_policies import INPUTS


@task(cache_policy=INPUTS, cache_expiration=timedelta(hours=1))
def exchange_rates(currency: str) -> dict[str, float]:
    time.sleep(0.2)  # the expensive part the cache saves
    return {"base": 1.0, "USD": 1.08, "GBP": 0.85} if currency == "EUR" else {"base": 1.0, "USD": 1.0}


@task
def revenue(region: str, amounts: list[float], rates: dict[str, float]) -> float:
    return round(sum(amounts) * rates["USD"], 2)


@flow(name="region-report")
def region_report(region: str, amounts: list[float]) -> float:
    rates = exchange_rates("EUR")
    value = revenue(region, amounts, rates)
    get_run_logger().info("%s revenue in USD: %.2f", region, value)
    return value


@flow(name="global-report")
def global_report() -> float:
    regions = {"emea": [120.0, 80.5], "apac": [99.0, 1.0, 45.25], "amer": [300.0]}
    return round(sum(region_report(name, amounts) for name, amounts in regions.items()), 2)


if __name__ == "__main__":
    print(global_report())
