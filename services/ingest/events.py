"""S3 event notifications as delivered through SQS: decoding only, no I/O.

Real S3 sends `versionId` (versioned buckets), `sequencer`, request/response elements and
microsecond-free `eventTime`s with milliseconds; moto omits several of these, so everything but
the bucket, key and time is optional. Keys arrive URL-encoded (`+` for a space).
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import unquote_plus

import msgspec


class _S3Bucket(msgspec.Struct):
    name: str


class _S3Object(msgspec.Struct):
    key: str
    size: int | None = None
    eTag: str | None = None
    versionId: str | None = None
    sequencer: str | None = None


class _S3Entity(msgspec.Struct):
    bucket: _S3Bucket
    object: _S3Object


class _EventRecord(msgspec.Struct):
    eventName: str
    eventTime: datetime
    s3: _S3Entity
    eventSource: str = "aws:s3"


class _Notification(msgspec.Struct):
    Records: list[_EventRecord] = msgspec.field(default_factory=list)
    Event: str | None = None  # "s3:TestEvent" in the test message S3 sends on configuration


class ObjectEvent(msgspec.Struct, frozen=True):
    """One object-created event, with the key decoded."""

    event_name: str
    event_time: datetime  # UTC
    bucket: str
    key: str
    size: int | None
    etag: str | None
    version_id: str | None
    sequencer: str | None


class TestEvent(msgspec.Struct, frozen=True):
    pass


class Undecodable(msgspec.Struct, frozen=True):
    reason: str


Decoded = list[ObjectEvent] | TestEvent | Undecodable

_decoder = msgspec.json.Decoder(_Notification)


def decode_message(body: str | bytes) -> Decoded:
    """The object events in one SQS message body, the test event, or why it is not an S3 event."""
    try:
        note = _decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return Undecodable(f"not an S3 event notification: {exc}")
    if note.Event == "s3:TestEvent":
        return TestEvent()
    if not note.Records:
        return Undecodable("not an S3 event notification: no Records")
    events: list[ObjectEvent] = []
    for rec in note.Records:
        if rec.eventSource != "aws:s3":
            return Undecodable(f"not an S3 event: eventSource {rec.eventSource!r}")
        when = rec.eventTime if rec.eventTime.tzinfo else rec.eventTime.replace(tzinfo=UTC)
        obj = rec.s3.object
        events.append(
            ObjectEvent(
                event_name=rec.eventName,
                event_time=when.astimezone(UTC),
                bucket=rec.s3.bucket.name,
                key=unquote_plus(obj.key),
                size=obj.size,
                etag=obj.eTag.strip('"') if obj.eTag else None,
                version_id=obj.versionId or None,
                sequencer=obj.sequencer or None,
            )
        )
    return events


def is_object_created(event: ObjectEvent) -> bool:
    return event.event_name.startswith("ObjectCreated:") or event.event_name.startswith("s3:ObjectCreated:")


def order_key(event_time: datetime, sequencer: str | None, key: str, version: str) -> str:
    """A text key that sorts object versions in upload order.

    The event time (millisecond precision in S3) comes first; S3's sequencer orders events on
    the same key within the same millisecond (compared as hex after left-padding, per AWS docs);
    key and version make the order total and deterministic.
    """
    stamp = event_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{stamp}|{(sequencer or '').upper().rjust(32, '0')}|{key}|{version}"
