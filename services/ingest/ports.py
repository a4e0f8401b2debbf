"""The consumer's two ports to the outside, as small Protocols, and the records that cross them.

`MessageQueue` is what the consumer needs of SQS (sqs_queue.py implements it over aiobotocore;
tests/unit/fakes.py in memory, with visibility timeouts and a redrive policy). `ObjectStore` is what
a file load needs of S3 (source.py).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Protocol

import msgspec

from services.ingest.events import ObjectEvent


class QueueMessage(msgspec.Struct, frozen=True):
    message_id: str
    receipt: str  # the receipt handle of this receive
    body: str
    receive_count: int  # ApproximateReceiveCount, 1 on the first receive
    attributes: dict[str, str] = msgspec.field(default_factory=dict)  # string message attributes


class MessageQueue(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def max_receive_count(self) -> int | None:
        """The redrive policy's maxReceiveCount (None: the queue has none)."""

    async def receive(
        self, *, max_messages: int, wait_seconds: int, visibility_timeout: int
    ) -> list[QueueMessage]: ...

    async def delete(self, receipt: str) -> None: ...

    async def set_visibility(self, receipt: str, seconds: int) -> None: ...

    async def send(
        self, body: str, *, delay_seconds: int = 0, attributes: dict[str, str] | None = None
    ) -> None:
        """A new message with this body (its receive count starts again at 0)."""


class ObjectKind(enum.StrEnum):
    FILE = "file"  # an ordinary upload: merged into the table, later upload wins
    SNAPSHOT = "snapshot"  # a restore: replaces the whole table in one transaction


class ObjectVersion(msgspec.Struct, frozen=True):
    """One object version, resolved from its event: what the ledger records and a load reads."""

    bucket: str
    key: str
    version: str  # the ledger identity within (bucket, key)
    s3_version_id: str | None
    etag: str | None
    size: int | None
    metadata: dict[str, str]  # x-amz-meta-*, names lower-cased
    kind: ObjectKind = ObjectKind.FILE


class ObjectGone(Exception):
    """The object version named by an event cannot be read (deleted, access denied, or not CSV text)."""


class ListedVersion(msgspec.Struct, frozen=True):
    """One object version as the bucket's version listing shows it."""

    bucket: str
    key: str
    version_id: str | None  # None in a bucket without versioning
    etag: str | None
    size: int | None
    last_modified: datetime


class ObjectStore(Protocol):
    async def resolve(self, event: ObjectEvent) -> ObjectVersion:
        """The exact version the event is about. Raises ObjectGone."""

    def read(self, version: ObjectVersion, offset: int) -> AsyncIterator[bytes]:
        """The version's text (decompressed, if gzip) from text offset `offset` on, in chunks.
        Raises ObjectGone (UnreadableContent when the content is not CSV text)."""

    async def visible_versions(self, bucket: str, prefix: str = "") -> list[ListedVersion]:
        """Every version under `prefix` that the bucket still shows: neither deleted for good nor
        behind a later delete marker of its key. In no particular order."""
