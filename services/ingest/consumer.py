"""The SQS loop only: receive, keep invisible, hand each event to the handler, delete or hand back.

A message is deleted only once every object it names is applied (or failed for good, or ignored).
While a file is applied its message's visibility is extended, so no other consumer sees it.

Poison is decided from the ledger (services/ingest/ledger.py), not from receive counts: a message
that reaches the queue's maxReceiveCount while its file is still alive is refreshed (sent again as
a new message, delayed by the visibility timeout, and the old one deleted), so an attempt that made
progress, or a duplicate delivery waiting for a busy worker, never lands in the dead-letter queue.
Only undecodable messages reach it through the redrive policy (and refreshed messages past
`max_refreshes`, a backstop).

While the database cannot be reached the consumer stops receiving (each receive would count
against the message), and resumes once a probe succeeds.

On stop it receives nothing more: the long poll in flight is let finish (a poll cancelled on our
side stays open on the server, which would hand it the messages given back), what it returns is
given back at once, files in flight get `drain_seconds` to finish, and the rest are given back.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

import asyncpg
import msgspec
import structlog
from opentelemetry import trace

from services.ingest.events import ObjectEvent, TestEvent, Undecodable, decode_message
from services.ingest.handler import FileOutcome, OutcomeKind
from services.ingest.ports import MessageQueue, QueueMessage
from services.ingest.telemetry import IngestTelemetry
from shared.telemetry import current_trace_id

log = structlog.get_logger("ingest.consumer")

REFRESHES_ATTRIBUTE = "hiring-refreshes"
# Errors that mean the database is out of reach (not a fault of the message).
DATABASE_DOWN = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
)


class _LookAgainLater(Exception):
    pass


class Handler(Protocol):
    async def handle(self, event: ObjectEvent, *, trace_id: str | None = None) -> FileOutcome: ...

    async def record_event(
        self,
        message_id: str | None,
        event: ObjectEvent | None,
        outcome: FileOutcome | str,
        detail: str | None,
    ) -> None: ...

    async def ping(self) -> None: ...


class ConsumerOptions(msgspec.Struct, frozen=True):
    concurrency: int = 4  # messages (files) in flight per process
    wait_seconds: int = 5  # long poll; a stop waits for the open one, so this bounds a stop's time too
    max_messages: int = 10
    visibility_timeout: int = 60  # what each extension asks for; extended every third of it
    retry_delay: int = 5  # seconds before a failed message is seen again (times its receive count)
    drain_seconds: float = 20.0  # on stop, time given to in-flight files before handing them back
    max_refreshes: int = 20  # backstop: refreshes of one message before the redrive policy may take it
    probe_seconds: float = 2.0  # while the database is down: time between probes


class Consumer:
    def __init__(
        self,
        queue: MessageQueue,
        handler: Handler,
        options: ConsumerOptions | None = None,
        telemetry: IngestTelemetry | None = None,
    ) -> None:
        self._queue = queue
        self._handler = handler
        self._opts = options or ConsumerOptions()
        self._tel = telemetry or IngestTelemetry()
        self._slots = asyncio.Semaphore(self._opts.concurrency)
        self._inflight: set[asyncio.Task[None]] = set()
        self._database_down = False
        self._no_poll_open = asyncio.Event()
        self._no_poll_open.set()

    async def run(self, stop: asyncio.Event) -> None:
        log.info("consumer started", queue=self._queue.name, concurrency=self._opts.concurrency)
        drained = False  # the drain is given once, from the stop
        while not stop.is_set():
            free = await self._take_slots(stop)
            if free == 0:
                break
            if self._database_down and not await self._wait_for_database(stop):
                self._give_slots(free)
                break
            poll = asyncio.ensure_future(self._receive(free))
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({poll, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not poll.done():
                # Stopping: drain while the poll runs out (files still running at the drain's end
                # are cancelled; they give their messages back once the poll is over); give back
                # whatever the poll returns.
                draining = asyncio.ensure_future(self._drain())
                late, _ = await poll
                await self._hand_back_all(late)
                self._give_slots(free)
                await draining
                drained = True
                break
            messages, receive = poll.result()
            self._give_slots(free - len(messages))
            for message in messages:
                task = asyncio.create_task(self._process(message, receive))
                self._inflight.add(task)
                task.add_done_callback(self._done)
        if not drained:
            await self._drain()
        log.info("consumer stopped")

    # ---- slots and polls --------------------------------------------------------------------

    async def _take_slots(self, stop: asyncio.Event) -> int:
        """At least one free slot (0 if stopped meanwhile), and any others free right now."""
        acquire = asyncio.ensure_future(self._slots.acquire())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({acquire, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not acquire.done():
            acquire.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acquire
            return 0
        free = 1
        while free < self._opts.max_messages and not self._slots.locked():
            await self._slots.acquire()
            free += 1
        return free

    def _give_slots(self, n: int) -> None:
        for _ in range(n):
            self._slots.release()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._slots.release()

    async def _receive(self, count: int) -> tuple[list[QueueMessage], trace.SpanContext | None]:
        self._no_poll_open.clear()
        try:
            return await self._poll(count)
        finally:
            self._no_poll_open.set()

    async def _poll(self, count: int) -> tuple[list[QueueMessage], trace.SpanContext | None]:
        try:
            with self._tel.receiving(self._queue.name) as span:
                messages = await self._queue.receive(
                    max_messages=count,
                    wait_seconds=self._opts.wait_seconds,
                    visibility_timeout=self._opts.visibility_timeout,
                )
                self._tel.received(span, len(messages))
                return messages, span.get_span_context()
        except Exception as exc:
            log.error("receive failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(2)
            return [], None

    async def _wait_for_database(self, stop: asyncio.Event) -> bool:
        """Probe until the database answers; False if stopped meanwhile."""
        while not stop.is_set():
            try:
                await self._handler.ping()
            except Exception as exc:
                log.warning("database unreachable; not receiving", error=f"{type(exc).__name__}: {exc}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._opts.probe_seconds)
            else:
                log.info("database reachable again; receiving")
                self._database_down = False
                return True
        return False

    async def _drain(self) -> None:
        """Files in flight get `drain_seconds`; those still running then are cancelled (each gives
        its message back once no poll of ours is open: see _give_back)."""
        if self._inflight:
            log.info("draining", inflight=len(self._inflight), seconds=self._opts.drain_seconds)
            await asyncio.wait(set(self._inflight), timeout=self._opts.drain_seconds)
        pending = set(self._inflight)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def _give_back(self, receipt: str) -> None:
        """Visibility 0, once our long poll (if one is open) is over: SQS would hand the message to
        that poll, which nobody reads any more, and hide it for the visibility timeout."""
        await self._no_poll_open.wait()
        log.info("handing message back")
        await self._queue.set_visibility(receipt, 0)

    async def _hand_back_all(self, messages: list[QueueMessage]) -> None:
        for message in messages:
            log.info("handing message back", message_id=message.message_id)
            with contextlib.suppress(Exception):
                await self._queue.set_visibility(message.receipt, 0)

    # ---- one message ------------------------------------------------------------------------

    async def _process(self, message: QueueMessage, receive: trace.SpanContext | None) -> None:
        with (
            self._tel.processing(self._queue.name, message, receive),
            structlog.contextvars.bound_contextvars(
                message_id=message.message_id, receive_count=message.receive_count
            ),
        ):
            await self._handle(message)

    async def _handle(self, message: QueueMessage) -> None:
        receipt: str | None = message.receipt
        heartbeat = asyncio.create_task(self._keep_invisible(message.receipt))
        try:
            decoded = decode_message(message.body)
            if isinstance(decoded, TestEvent):
                log.info("s3 test event ignored")
                await self._queue.delete(message.receipt)
                return
            if isinstance(decoded, Undecodable):
                # Leave it: the redrive policy moves it to the dead-letter queue after a few receives.
                log.warning("undecodable message", reason=decoded.reason, body=message.body[:200])
                await self._handler.record_event(message.message_id, None, "undecodable", decoded.reason)
                self._tel.message_left("undecodable", message.receive_count)
                await self._retry_later(message.receipt, message.receive_count)
                return
            if self._at_redrive_limit(message):
                heartbeat.cancel()
                await self._refresh(message)
                receipt = None
            for event in decoded:
                with self._tel.object_span(
                    self._queue.name, event, separate=len(decoded) > 1, benign=(_LookAgainLater,)
                ):
                    await self._apply(message, event)
            if receipt is not None:
                await self._queue.delete(receipt)
        except _LookAgainLater as busy:
            if receipt is not None:
                log.info("message postponed", reason=str(busy), seconds=self._opts.visibility_timeout)
                with contextlib.suppress(Exception):
                    await self._queue.set_visibility(receipt, self._opts.visibility_timeout)
        except asyncio.CancelledError:
            if receipt is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._give_back(receipt))
            raise
        except Exception as exc:
            down = isinstance(exc, DATABASE_DOWN)
            if down:
                self._database_down = True
            log.error(
                "message failed; it will be retried",
                error=f"{type(exc).__name__}: {exc}",
                database_down=down,
                exc_info=not down,
            )
            self._tel.message_left("error", message.receive_count, exc)
            if receipt is not None:
                with contextlib.suppress(Exception):
                    await self._retry_later(receipt, message.receive_count)
        finally:
            heartbeat.cancel()

    async def _apply(self, message: QueueMessage, event: ObjectEvent) -> None:
        outcome = await self._handler.handle(event, trace_id=current_trace_id())
        self._tel.object_done(outcome)
        await self._handler.record_event(message.message_id, event, outcome, outcome.detail)
        if outcome.kind is OutcomeKind.BUSY:
            # Keep the message until that worker has committed: if it dies, this one finishes the file.
            raise _LookAgainLater(f"object {outcome.object_id} is being applied by another worker")

    def _at_redrive_limit(self, message: QueueMessage) -> bool:
        """The next receive of this message would move it to the dead-letter queue."""
        limit = self._queue.max_receive_count
        refreshes = int(message.attributes.get(REFRESHES_ATTRIBUTE, "0") or 0)
        return limit is not None and message.receive_count >= limit and refreshes < self._opts.max_refreshes

    async def _refresh(self, message: QueueMessage) -> None:
        """Send the message again as a new one (delayed: this worker is on it) and delete this one.

        If this worker dies, the copy comes back after the delay and its file resumes from the
        ledger's checkpoint; if it finishes, the copy is a duplicate delivery."""
        refreshes = int(message.attributes.get(REFRESHES_ATTRIBUTE, "0") or 0) + 1
        await self._queue.send(
            message.body,
            delay_seconds=min(self._opts.visibility_timeout, 900),
            attributes={REFRESHES_ATTRIBUTE: str(refreshes)},
        )
        await self._queue.delete(message.receipt)
        log.info("message refreshed", refreshes=refreshes, receive_count=message.receive_count)

    async def _keep_invisible(self, receipt: str) -> None:
        period = max(1.0, self._opts.visibility_timeout / 3)
        while True:
            await asyncio.sleep(period)
            try:
                await self._queue.set_visibility(receipt, self._opts.visibility_timeout)
            except Exception as exc:  # keep trying: the next period may succeed
                log.warning("visibility extension failed", error=str(exc))

    async def _retry_later(self, receipt: str, receives: int) -> None:
        await self._queue.set_visibility(receipt, min(self._opts.retry_delay * receives, 900))
