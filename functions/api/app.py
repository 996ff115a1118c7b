"""Lambda entry of the control-plane API (HTTP API, payload format 2.0).

Thin on purpose: Powertools Logger, Tracer and Metrics around ``stratoflow.api.app``, which holds
every route. Importing this file only defines things; the app (and with it the store, boto3 and,
locally, the embedded moto backend) is built on the first request.
"""

from __future__ import annotations

import os
from typing import Any

# Trace only where an X-Ray daemon is configured (Lambda sets AWS_XRAY_DAEMON_ADDRESS); tests,
# `stratoflow dev` and emulators have none. An explicit POWERTOOLS_TRACE_DISABLED wins.
if not os.environ.get("AWS_XRAY_DAEMON_ADDRESS"):
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "stratoflow-api")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Stratoflow")

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging import correlation_paths

from stratoflow.api.app import METRICS_NAMESPACE, SERVICE, get_app


def _tracing_enabled() -> bool:
    return os.environ.get("POWERTOOLS_TRACE_DISABLED", "false").strip().lower() not in {
        "1", "true", "t", "yes", "y", "on"}


logger = Logger(service=SERVICE)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE)
# Tracer() loads the X-Ray SDK (about half a second of import); a disabled tracer would load it
# for nothing, so it is only made where tracing is on.
tracer: Tracer | None = Tracer(service=SERVICE) if _tracing_enabled() else None


def _resolve(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return get_app().resolve(event, context)


if tracer is not None:
    _resolve = tracer.capture_lambda_handler(_resolve, capture_response=False)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        return _resolve(event, context)
    finally:
        # What @metrics.log_metrics does, minus its warning for the many requests (reads) that
        # record no metric: flush only when there is something to publish (as EMF on stdout).
        if metrics.metric_set:
            metrics.flush_metrics()
