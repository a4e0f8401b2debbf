"""MessageQueue (services/ingest/ports.py) over an aiobotocore SQS client."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from services.ingest.ports import QueueMessage

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient


class SqsQueue:
    def __init__(self, sqs: SQSClient, url: str, *, max_receive_count: int | None = None) -> None:
        self._sqs = sqs
        self.url = url
        self._name = url.rstrip("/").rsplit("/", 1)[-1]
        self._max_receive_count = max_receive_count

    @classmethod
    async def open(cls, sqs: SQSClient, url: str) -> SqsQueue:
        """The queue, with its redrive policy's maxReceiveCount read from the queue's attributes."""
        attrs = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])
        policy = attrs.get("Attributes", {}).get("RedrivePolicy")
        limit = int(json.loads(policy)["maxReceiveCount"]) if policy else None
        return cls(sqs, url, max_receive_count=limit)

    @property
    def name(self) -> str:
        return self._name

    @property
    def max_receive_count(self) -> int | None:
        return self._max_receive_count

    async def receive(
        self, *, max_messages: int, wait_seconds: int, visibility_timeout: int
    ) -> list[QueueMessage]:
        resp = await self._sqs.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=wait_seconds,
            VisibilityTimeout=visibility_timeout,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
            MessageAttributeNames=["All"],
        )
        return [
            QueueMessage(
                message_id=m.get("MessageId", ""),
                receipt=m["ReceiptHandle"],
                body=m.get("Body", ""),
                receive_count=int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1")),
                attributes={
                    name: str(value.get("StringValue", ""))
                    for name, value in (m.get("MessageAttributes") or {}).items()
                },
            )
            for m in resp.get("Messages", [])
        ]

    async def delete(self, receipt: str) -> None:
        await self._sqs.delete_message(QueueUrl=self.url, ReceiptHandle=receipt)

    async def set_visibility(self, receipt: str, seconds: int) -> None:
        await self._sqs.change_message_visibility(
            QueueUrl=self.url, ReceiptHandle=receipt, VisibilityTimeout=seconds
        )

    async def send(
        self, body: str, *, delay_seconds: int = 0, attributes: dict[str, str] | None = None
    ) -> None:
        await self._sqs.send_message(
            QueueUrl=self.url,
            MessageBody=body,
            DelaySeconds=delay_seconds,
            MessageAttributes={
                name: {"DataType": "String", "StringValue": value}
                for name, value in (attributes or {}).items()
            },
        )
