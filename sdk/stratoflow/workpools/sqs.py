"""The SQS side of work pools: queues with a pool dead-letter queue, sending, receiving by
priority, and queue depth. Clients come from ``_aws`` lazily."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stratoflow.settings import Settings
from stratoflow.storage import aws as _aws
from stratoflow.workpools.messages import RunMessage
from stratoflow.workpools.naming import dlq_name, queue_name

# SQS's longest per-message delay; runs due later are sent by the dispatcher when they come due.
MAX_DELAY_SECONDS = 900
_DEPTH_ATTRIBUTES = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                     "ApproximateNumberOfMessagesDelayed"]


@dataclass(frozen=True)
class QueueTarget:
    """One SQS queue to consume, with the work queue it stands for."""

    url: str
    arn: str
    pool: str
    queue: str
    priority: int = 1


@dataclass(frozen=True)
class ReceivedMessage:
    target: QueueTarget
    message_id: str
    receipt_handle: str
    body: str
    attributes: dict[str, str]
    md5_of_body: str


class SqsQueues:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def client(self) -> Any:
        return _aws.client("sqs", self.settings)

    # -- provisioning ---------------------------------------------------------------------------
    def ensure_dlq(self, pool: str) -> tuple[str, str]:
        """The pool's dead-letter queue (created if missing); returns (url, arn). Messages wait
        there 14 days, SQS's maximum, for someone to look."""
        url = self.client.create_queue(QueueName=dlq_name(self.settings.table_prefix, pool),
                                       Attributes={"MessageRetentionPeriod": "1209600"})["QueueUrl"]
        return url, self.queue_arn(url)

    def ensure_queue(self, pool: str, queue: str) -> str:
        """The SQS queue of work queue ``queue`` in ``pool``, redriving to the pool's DLQ after
        ``queue_max_receive_count`` deliveries. Idempotent: same name and attributes, same queue."""
        _, dlq_arn = self.ensure_dlq(pool)
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn,
                              "maxReceiveCount": str(self.settings.queue_max_receive_count)})
        return str(self.client.create_queue(
            QueueName=queue_name(self.settings.table_prefix, pool, queue),
            Attributes={"VisibilityTimeout": str(self.settings.queue_visibility_timeout),
                        "RedrivePolicy": redrive, "MessageRetentionPeriod": "1209600"},
        )["QueueUrl"])

    def arn_of(self, url: str) -> str:
        """The queue's ARN from its URL (``.../<account>/<name>``), without a request."""
        account, name = url.rstrip("/").split("/")[-2:]
        return f"arn:aws:sqs:{self.settings.region}:{account}:{name}"

    def queue_arn(self, url: str) -> str:
        attrs = self.client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
        return str(attrs["QueueArn"])

    def delete_queue(self, url: str) -> None:
        self.client.delete_queue(QueueUrl=url)

    # -- messages -------------------------------------------------------------------------------
    def send(self, url: str, message: RunMessage, delay_seconds: int = 0) -> str:
        delay = max(0, min(int(delay_seconds), MAX_DELAY_SECONDS))
        response = self.client.send_message(QueueUrl=url, MessageBody=message.model_dump_json(),
                                            DelaySeconds=delay)
        return str(response["MessageId"])

    def receive(self, target: QueueTarget, max_messages: int = 1, wait_seconds: int = 0) -> list[ReceivedMessage]:
        response = self.client.receive_message(
            QueueUrl=target.url, MaxNumberOfMessages=max(1, min(max_messages, 10)),
            WaitTimeSeconds=max(0, min(wait_seconds, 20)), AttributeNames=["All"])
        return [ReceivedMessage(target, m["MessageId"], m["ReceiptHandle"], m["Body"], m.get("Attributes", {}),
                                m.get("MD5OfBody", "")) for m in response.get("Messages", [])]

    def receive_by_priority(self, targets: Sequence[QueueTarget], max_messages: int,
                            wait_seconds: int = 0) -> list[ReceivedMessage]:
        """Up to ``max_messages`` messages, taken from the highest-priority queue (lowest number)
        that has any; only when all are empty does it long-poll, on the first queue."""
        ordered = sorted(targets, key=lambda t: (t.priority, t.queue))
        for target in ordered:
            got = self.receive(target, max_messages)
            if got:
                return got
        if ordered and wait_seconds > 0:
            return self.receive(ordered[0], max_messages, wait_seconds)
        return []

    def delete(self, url: str, receipt_handle: str) -> None:
        self.client.delete_message(QueueUrl=url, ReceiptHandle=receipt_handle)

    def change_visibility(self, url: str, receipt_handle: str, seconds: int) -> None:
        self.client.change_message_visibility(QueueUrl=url, ReceiptHandle=receipt_handle,
                                              VisibilityTimeout=max(0, min(int(seconds), 43200)))

    def depth(self, url: str) -> dict[str, int]:
        attrs = self.client.get_queue_attributes(QueueUrl=url, AttributeNames=_DEPTH_ATTRIBUTES)["Attributes"]
        return {"messages_visible": int(attrs.get("ApproximateNumberOfMessages", 0)),
                "messages_in_flight": int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
                "messages_delayed": int(attrs.get("ApproximateNumberOfMessagesDelayed", 0))}

    def url_for_arn(self, arn: str) -> str:
        """Queue URL from a queue ARN (an SQS event record names its queue by ARN)."""
        parts = arn.split(":")
        return str(self.client.get_queue_url(QueueName=parts[5], QueueOwnerAWSAccountId=parts[4])["QueueUrl"])
