"""In-memory fakes of the consumer's ports (services/ingest/ports.py), for tests without servers.

FakeQueue behaves like SQS where the consumer relies on it: receive counts, visibility timeouts,
delayed sends, long polls that return as soon as a message is visible, and a redrive policy that
moves a message to the dead-letter list when a receive would exceed maxReceiveCount. It also
records whether a message was handed back (visibility 0) while one of our long polls was still
open: SQS would deliver it to that poll, which nobody reads any more.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from services.ingest.events import ObjectEvent
from services.ingest.handler import FileOutcome, OutcomeKind
from services.ingest.ports import QueueMessage


@dataclass
class _Stored:
    message_id: str
    body: str
    attributes: dict[str, str]
    visible_at: float = 0.0
    receives: int = 0
    receipt: str | None = None


@dataclass
class FakeQueue:
    max_receive_count: int | None = 5
    name: str = "fake"
    stored: dict[str, _Stored] = field(default_factory=dict)
    dead: list[_Stored] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    handed_back_during_poll: int = 0
    polls_open: int = 0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def put(self, body: str, *, delay: float = 0.0, attributes: dict[str, str] | None = None) -> str:
        message_id = f"m{next(self._ids)}"
        self.stored[message_id] = _Stored(message_id, body, dict(attributes or {}), time.monotonic() + delay)
        return message_id

    def visible(self) -> list[_Stored]:
        now = time.monotonic()
        return [m for m in self.stored.values() if m.visible_at <= now]

    async def receive(
        self, *, max_messages: int, wait_seconds: int, visibility_timeout: int
    ) -> list[QueueMessage]:
        self.polls_open += 1
        try:
            deadline = time.monotonic() + wait_seconds
            while True:
                got = self._take(max_messages, visibility_timeout)
                if got or time.monotonic() >= deadline:
                    return got
                await asyncio.sleep(0.01)
        finally:
            self.polls_open -= 1

    def _take(self, max_messages: int, visibility_timeout: int) -> list[QueueMessage]:
        out: list[QueueMessage] = []
        for m in self.visible()[:max_messages]:
            if self.max_receive_count is not None and m.receives >= self.max_receive_count:
                del self.stored[m.message_id]  # the redrive policy
                self.dead.append(m)
                continue
            m.receives += 1
            m.receipt = f"{m.message_id}#{m.receives}"
            m.visible_at = time.monotonic() + visibility_timeout
            out.append(QueueMessage(m.message_id, m.receipt, m.body, m.receives, dict(m.attributes)))
        return out

    def _by_receipt(self, receipt: str) -> _Stored | None:
        return next((m for m in self.stored.values() if m.receipt == receipt), None)

    async def delete(self, receipt: str) -> None:
        m = self._by_receipt(receipt)
        if m is not None:
            del self.stored[m.message_id]
            self.deleted.append(m.message_id)

    async def set_visibility(self, receipt: str, seconds: int) -> None:
        m = self._by_receipt(receipt)
        if m is None:
            return
        if seconds == 0 and self.polls_open:
            self.handed_back_during_poll += 1
        m.visible_at = time.monotonic() + seconds

    async def send(
        self, body: str, *, delay_seconds: int = 0, attributes: dict[str, str] | None = None
    ) -> None:
        self.put(body, delay=delay_seconds, attributes=attributes)


def s3_event_body(key: str, bucket: str = "raw") -> str:
    return (
        '{"Records":[{"eventSource":"aws:s3","eventName":"ObjectCreated:Put",'
        '"eventTime":"2021-07-27T16:02:08.000Z",'
        f'"s3":{{"bucket":{{"name":"{bucket}"}},"object":{{"key":"{key}","size":1,"eTag":"e"}}}}}}]}}'
    )


Step = OutcomeKind | BaseException | float


@dataclass
class FakeHandler:
    """Handler (services/ingest/consumer.py): programmed outcomes per key, a log of what it saw."""

    script: Mapping[str, Sequence[Step]] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)
    events: list[tuple[str | None, str]] = field(default_factory=list)
    database_up: bool = True
    pings: int = 0
    _left: dict[str, list[Step]] = field(default_factory=dict)

    async def handle(self, event: ObjectEvent, *, trace_id: str | None = None) -> FileOutcome:
        self.seen.append(event.key)
        steps = self._left.setdefault(event.key, list(self.script.get(event.key) or [OutcomeKind.LOADED]))
        step = steps.pop(0) if len(steps) > 1 else steps[0]
        if isinstance(step, float):  # a long file: takes this many seconds, then loads
            await asyncio.sleep(step)
            step = OutcomeKind.LOADED
        if isinstance(step, BaseException):
            raise step
        return FileOutcome(step, event, "jobs", object_id=1)

    async def record_event(
        self,
        message_id: str | None,
        event: ObjectEvent | None,
        outcome: FileOutcome | str,
        detail: str | None,
    ) -> None:
        kind = outcome.kind.value if isinstance(outcome, FileOutcome) else outcome
        self.events.append((message_id, kind))

    async def ping(self) -> None:
        self.pings += 1
        if not self.database_up:
            raise OSError("connection refused")
