"""The SQS side of the consumer: long-poll, hand each message to the loader, delete after commit.

A message is deleted only once every object it names is applied (or failed for good). While a
file is being applied its message's visibility is extended, so no other consumer sees it. A
message that cannot be decoded, or whose file keeps failing, is left to come back and reaches the
dead-letter queue through the queue's redrive policy.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
import structlog
from opentelemetry import trace

from services.ingest.events import ObjectEvent, TestEvent, Undecodable, decode_message, is_object_created
from services.ingest.loader import Loader, Outcome
from services.ingest.telemetry import IngestTelemetry
from shared.dictionary import is_csv_key
from shared.telemetry import current_trace_id

log = structlog.get_logger("ingest.consumer")


class _LookAgainLater(Exception):
    pass


class ConsumerOptions(msgspec.Struct, frozen=True):
    concurrency: int = 4  # messages (files) in flight per process
    wait_seconds: int = 20  # long-poll
    max_messages: int = 10
    visibility_timeout: int = 60  # what each extension asks for; extended every third of it
    retry_delay: int = 5  # seconds before a failed message is seen again (times its receive count)
    drain_seconds: float = 20.0  # on SIGTERM, time given to in-flight files before handing them back


class Consumer:
    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        loader: Loader,
        options: ConsumerOptions | None = None,
        telemetry: IngestTelemetry | None = None,
    ) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._queue_name = queue_url.rstrip("/").rsplit("/", 1)[-1]
        self._tel = telemetry or IngestTelemetry()
        self._loader = loader
        self._opts = options or ConsumerOptions()
        self._slots = asyncio.Semaphore(self._opts.concurrency)
        self._inflight: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        log.info("consumer started", queue=self._queue_url, concurrency=self._opts.concurrency)
        while not stop.is_set():
            await self._slots.acquire()
            free = 1
            while free < self._opts.max_messages and not self._slots.locked():
                await self._slots.acquire()
                free += 1
            receive: trace.SpanContext | None = None
            try:
                with self._tel.receiving(self._queue_name) as receiving:
                    receive = receiving.get_span_context()
                    messages = await self._receive(stop, free)
                    self._tel.received(receiving, messages)
            except Exception as exc:
                log.error("receive failed", error=str(exc))
                messages = []
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2)
            for _ in range(free - len(messages)):
                self._slots.release()
            for message in messages:
                task = asyncio.create_task(self._process(message, receive))
                self._inflight.add(task)
                task.add_done_callback(self._done)
        await self._drain()
        log.info("consumer stopped")

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._slots.release()

    async def _receive(self, stop: asyncio.Event, count: int) -> list[dict[str, Any]]:
        receive = asyncio.ensure_future(
            self._sqs.receive_message(
                QueueUrl=self._queue_url,
                MaxNumberOfMessages=count,
                WaitTimeSeconds=self._opts.wait_seconds,
                VisibilityTimeout=self._opts.visibility_timeout,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
        )
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({receive, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not receive.done():
            receive.cancel()  # anything SQS had sent becomes visible again after its timeout
            with contextlib.suppress(asyncio.CancelledError):
                await receive
            return []
        return list(receive.result().get("Messages", []))

    async def _drain(self) -> None:
        if not self._inflight:
            return
        log.info("draining", inflight=len(self._inflight), seconds=self._opts.drain_seconds)
        _, pending = await asyncio.wait(set(self._inflight), timeout=self._opts.drain_seconds)
        for task in pending:
            task.cancel()  # _handle hands its message back to the queue
        if pending:
            await asyncio.wait(pending)

    async def _process(self, message: dict[str, Any], receive: trace.SpanContext | None) -> None:
        receives = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        with self._tel.processing(self._queue_name, message, receives, receive):
            await self._handle(message)

    async def _handle(self, message: dict[str, Any]) -> None:
        receipt = message["ReceiptHandle"]
        message_id = message.get("MessageId")
        receives = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        bound = log.bind(message_id=message_id, receive_count=receives)
        heartbeat = asyncio.create_task(self._keep_invisible(receipt))
        try:
            decoded = decode_message(message.get("Body", ""))
            if isinstance(decoded, TestEvent):
                bound.info("s3 test event ignored")
                await self._delete(receipt)
                return
            if isinstance(decoded, Undecodable):
                # Leave it: the redrive policy moves it to the dead-letter queue after a few receives.
                bound.warning(
                    "undecodable message", reason=decoded.reason, body=str(message.get("Body", ""))[:200]
                )
                await self._loader.record_event(message_id, None, None, "undecodable", decoded.reason)
                self._tel.message_left("undecodable", receives)
                await self._retry_later(receipt, receives)
                return
            for event in decoded:
                with self._tel.object_span(
                    self._queue_name, event, separate=len(decoded) > 1, benign=(_LookAgainLater,)
                ):
                    await self._apply(bound, message_id, event)
            await self._delete(receipt)
        except _LookAgainLater as busy:
            bound.info("message postponed", reason=str(busy), seconds=self._opts.visibility_timeout)
            with contextlib.suppress(Exception):
                await self._set_visibility(receipt, self._opts.visibility_timeout)
        except asyncio.CancelledError:
            bound.info("handing message back")
            with contextlib.suppress(Exception):
                await asyncio.shield(self._set_visibility(receipt, 0))
            raise
        except Exception as exc:
            bound.error(
                "message failed; it will be retried", error=f"{type(exc).__name__}: {exc}", exc_info=True
            )
            self._tel.message_left("error", receives, exc)
            with contextlib.suppress(Exception):
                await self._retry_later(receipt, receives)
        finally:
            heartbeat.cancel()

    async def _apply(self, bound: Any, message_id: str | None, event: ObjectEvent) -> None:
        ev_log = bound.bind(bucket=event.bucket, key=event.key)
        if not is_object_created(event):
            ev_log.info("event ignored: not an object creation", event_name=event.event_name)
            await self._loader.record_event(message_id, event, None, "ignored", f"event {event.event_name}")
            return
        if not is_csv_key(event.key):
            ev_log.info("event ignored: not a .csv key")
            await self._loader.record_event(message_id, event, None, "ignored", "not a .csv key")
            return
        result = await self._loader.ingest(event, trace_id=current_trace_id())
        self._tel.object_done(event, result)
        await self._loader.record_event(
            message_id, event, result.object_id, result.outcome.value, result.detail
        )
        if result.outcome is Outcome.BUSY:
            # Keep the message until that worker has committed: if it dies, this one finishes the file.
            raise _LookAgainLater(f"object {result.object_id} is being applied by another worker")
        if result.outcome is Outcome.FAILED:
            ev_log.error("object failed", object_id=result.object_id, reason=result.detail)
        elif result.outcome is not Outcome.LOADED:
            ev_log.info(f"object {result.outcome.value}", object_id=result.object_id)

    async def _keep_invisible(self, receipt: str) -> None:
        period = max(1.0, self._opts.visibility_timeout / 3)
        while True:
            await asyncio.sleep(period)
            try:
                await self._set_visibility(receipt, self._opts.visibility_timeout)
            except Exception as exc:  # keep trying: the next period may succeed
                log.warning("visibility extension failed", error=str(exc))

    async def _retry_later(self, receipt: str, receives: int) -> None:
        await self._set_visibility(receipt, min(self._opts.retry_delay * receives, 900))

    async def _set_visibility(self, receipt: str, seconds: int) -> None:
        await self._sqs.change_message_visibility(
            QueueUrl=self._queue_url, ReceiptHandle=receipt, VisibilityTimeout=seconds
        )

    async def _delete(self, receipt: str) -> None:
        await self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=receipt)
