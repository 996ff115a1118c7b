"""Lambda entry of the executor: consumes a `lambda` work pool's SQS queue and runs flow runs.

Thin on purpose: Powertools' batch utility reports partial batch failures (only the records
that raised go back to the queue); each record is one ``stratoflow.executor.handle_message``.
Configure the event source with ``ReportBatchItemFailures`` and, as the template does, a batch
size of 1: a batch shares one invocation's deadline.
"""

from __future__ import annotations

import os
from typing import Any

if not os.environ.get("AWS_XRAY_DAEMON_ADDRESS"):
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "stratoflow-executor")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Stratoflow")

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

logger = Logger()
metrics = Metrics()
if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
    # Flow code runs in child processes of this environment (stratoflow.sandbox): non-dumpable, this
    # process's memory and environment (the role's credentials) are closed to them.
    from stratoflow.sandbox.runner import harden

    harden()
# A paused pool's run is looked at again after this long.
PAUSED_RECHECK_SECONDS = 60


def _queues() -> Any:
    from stratoflow.settings import get_settings
    from stratoflow.workpools.sqs import SqsQueues

    return SqsQueues(get_settings())


def _handle(record: SQSRecord, context: Any) -> dict[str, Any]:
    from stratoflow.executor import InvalidMessage, QueueMessagePaused, handle_message, parse_message
    from stratoflow.settings import get_settings
    from stratoflow.storage import get_server_store

    remaining = (lambda: context.get_remaining_time_in_millis() / 1000.0) if context is not None else None
    try:
        result = handle_message(record.body, store=get_server_store(), settings=get_settings(),
                                remaining_seconds=remaining)
    except QueueMessagePaused as exc:
        # Not put back (each receive counts toward the dead-letter queue's maxReceiveCount: a pool
        # paused for five rechecks would lose its runs there) but sent again as a fresh message,
        # delayed; this one is then deleted as handled. A crash in between leaves two messages,
        # and the claim runs the flow once.
        queues = _queues()
        message_id = queues.send(queues.url_for_arn(record.event_source_arn), parse_message(record.body),
                                 PAUSED_RECHECK_SECONDS)
        logger.info("paused: the run waits in the queue", extra={
            "reason": str(exc), "message_id": record.message_id, "new_message_id": message_id})
        metrics.add_metric(name="RunsPaused", unit=MetricUnit.Count, value=1)
        return {"flow_run_id": parse_message(record.body).flow_run_id, "outcome": "paused", "state": None}
    except InvalidMessage:
        # Back at once: after the queue's receive count it moves to the dead-letter queue.
        queues = _queues()
        queues.change_visibility(queues.url_for_arn(record.event_source_arn), record.receipt_handle, 0)
        raise
    metrics.add_metric(name=f"Runs{result.outcome.value.capitalize()}", unit=MetricUnit.Count, value=1)
    logger.info("flow run message handled", extra={"flow_run_id": result.flow_run_id, "outcome": result.outcome.value,
                                                   "state": result.state, "detail": result.detail})
    return {"flow_run_id": result.flow_run_id, "outcome": result.outcome.value, "state": result.state}


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    # A whole batch of failures is still a partial response: each record says whether it goes back.
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    try:
        return process_partial_response(event=event, record_handler=lambda record: _handle(record, context),
                                        processor=processor, context=context)
    finally:
        if metrics.metric_set:
            metrics.flush_metrics()
