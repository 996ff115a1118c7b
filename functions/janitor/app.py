"""Lambda entry of the janitor: what an EventBridge ``rate(1 minute)`` schedule invokes.

One invocation is one ``stratoflow.janitor.tick`` over the server store: Late runs marked, lost
runs crashed (and retried), stuck cancellations finished, dead slots released, due runs sent.
The event's content is not used (the tick works from the current time, so a retried or late
invocation does the right thing). Thin on purpose, and importing it touches no AWS: the store is
made on the first invocation. Returns the tick's report as JSON; its counts go out as metrics.
"""

from __future__ import annotations

import os
from typing import Any

if not os.environ.get("AWS_XRAY_DAEMON_ADDRESS"):
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "stratoflow-janitor")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Stratoflow")

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

logger = Logger()
metrics = Metrics()
_METRICS = {"late": "RunsLate", "crashed": "RunsCrashed", "retried": "RunsRetriedAfterCrash",
            "cancelled": "RunsCancelledByJanitor", "released": "SlotsReleased", "dispatched": "RunsDispatched",
            "errors": "JanitorErrors"}


def handle() -> dict[str, Any]:
    from stratoflow.janitor import tick
    from stratoflow.settings import get_settings
    from stratoflow.storage import get_server_store

    report = tick(get_server_store(), get_settings())
    counts = report.counts()
    for key, name in _METRICS.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=counts[key])
    log = logger.warning if report.errors else logger.info
    log("janitor tick", extra={"counts": counts, "errors": report.errors[:20]})
    return report.to_dict()


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        return handle()
    finally:
        if metrics.metric_set:
            metrics.flush_metrics()
