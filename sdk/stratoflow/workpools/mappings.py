"""On AWS, every queue of a `lambda` pool feeds the executor function through an SQS event source
mapping. The template maps the default pool's queue; a pool or work queue created at run time
gets its mapping here, when the API creates its SQS queue.

Without a mapping, runs sent to the queue would wait there until they dead-letter: nothing else
reads a `lambda` pool's queue on AWS. ``stratoflow dev`` needs none (its local event source polls
every `lambda` pool), so the mapping is made only where ``executor_function_arn`` is set, which
the template does for the API function.
"""

from __future__ import annotations

import logging
from typing import Any

from stratoflow.settings import Settings
from stratoflow.storage import aws as _aws

logger = logging.getLogger(__name__)

# What the template's mapping of the default pool says: one run per invocation, failures reported
# per message (the batch utility's partial response).
BATCH_SIZE = 1
RESPONSE_TYPES = ["ReportBatchItemFailures"]


class MappingError(RuntimeError):
    """The executor's event source mapping could not be made (e.g. the API lacks permission)."""


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class ExecutorMappings:
    """Event source mappings from `lambda` pools' queues to the executor function."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def function_arn(self) -> str | None:
        return self.settings.executor_function_arn or None

    @property
    def client(self) -> Any:
        return _aws.client("lambda", self.settings)

    def find(self, queue_arn: str) -> str | None:
        """The UUID of the executor's mapping of ``queue_arn``, or None."""
        assert self.function_arn is not None
        pages = self.client.get_paginator("list_event_source_mappings").paginate(
            EventSourceArn=queue_arn, FunctionName=self.function_arn)
        for page in pages:
            for mapping in page.get("EventSourceMappings", []):
                return str(mapping["UUID"])
        return None

    def ensure(self, queue_arn: str) -> str | None:
        """Map ``queue_arn`` to the executor unless it already is; returns the mapping's UUID, or
        None where no executor function is configured (the local cloud, a client-side call).

        Idempotent: a mapping that exists (the template's, or one made by a concurrent call,
        which AWS refuses with ResourceConflictException) is found and kept."""
        if self.function_arn is None:
            return None
        try:
            existing = self.find(queue_arn)
        except Exception as exc:
            raise MappingError(f"could not list the mappings of queue {queue_arn} to the executor "
                               f"{self.function_arn}: {_error_code(exc) or type(exc).__name__}: {exc}") from exc
        if existing is not None:
            return existing
        spec: dict[str, Any] = {"EventSourceArn": queue_arn, "FunctionName": self.function_arn,
                                "BatchSize": BATCH_SIZE, "FunctionResponseTypes": RESPONSE_TYPES,
                                "Enabled": True}
        if self.settings.executor_max_concurrency:
            spec["ScalingConfig"] = {"MaximumConcurrency": self.settings.executor_max_concurrency}
        try:
            uuid = str(self.client.create_event_source_mapping(**spec)["UUID"])
        except Exception as exc:
            if _error_code(exc) == "ResourceConflictException":
                found = self.find(queue_arn)
                if found is not None:
                    return found
            raise MappingError(f"could not map queue {queue_arn} to the executor {self.function_arn}: "
                               f"{_error_code(exc) or type(exc).__name__}: {exc}") from exc
        logger.info("mapped %s to the executor (%s)", queue_arn, uuid)
        return uuid
