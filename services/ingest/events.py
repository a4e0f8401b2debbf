"""Object events as they arrive through SQS: decoding only, no I/O.

The queue may carry (CONTRACT §2):

- S3 event notifications sent straight by S3 (`{"Records": [...]}`), or by SNS with raw message
  delivery (the same body);
- the same notifications wrapped by SNS (`{"Type": "Notification", "Message": "<the JSON as a
  string>", "TopicArn": ...}`);
- EventBridge events from S3 (`{"detail-type": "Object Created", "source": "aws.s3",
  "detail": {...}}`), straight from a rule or wrapped by SNS likewise;
- S3's test event (`{"Event": "s3:TestEvent"}`) and SNS's subscription confirmations, which name
  no object.

Real S3 sends `versionId` (versioned buckets), `sequencer` and `eventTime`s with milliseconds;
moto omits several of these, so everything but the bucket, key and time is optional. Keys arrive
URL-encoded (`+` for a space) in notifications and in EventBridge events alike, except moto's
EventBridge events, which carry the key as stored (that shape is recognised by moto's spelling
`eTag` where S3 writes `etag`, or by a time in epoch seconds).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import unquote_plus

import msgspec


class EventKind(enum.StrEnum):
    """What an event says happened to its object."""

    CREATED = "created"  # ObjectCreated:* (a new object version)
    REMOVED = "removed"  # ObjectRemoved:* and LifecycleExpiration:* (a delete marker or a version deleted)
    OTHER = "other"  # restores, tagging, ACLs, storage class changes, replication: no data changed


class ObjectEvent(msgspec.Struct, frozen=True):
    """One event about one object, in S3 notification terms, with the key decoded.

    `event_name` is the notification's (`ObjectCreated:Put`, `ObjectRemoved:DeleteMarkerCreated`,
    ...); an EventBridge event is given the name the same change has in a notification. For a
    removal, `version_id` is the deleted version's, or the new delete marker's.
    """

    event_name: str
    event_time: datetime  # UTC
    bucket: str
    key: str
    size: int | None
    etag: str | None
    version_id: str | None
    sequencer: str | None

    @property
    def kind(self) -> EventKind:
        return event_kind(self.event_name)

    @property
    def delete_marker(self) -> bool:
        """Whether this removal made a delete marker (rather than deleting a version for good)."""
        return self.event_name.endswith(":DeleteMarkerCreated")


class TestEvent(msgspec.Struct, frozen=True):
    """A message that names no object (S3's test event, an SNS subscription confirmation)."""

    what: str = "s3:TestEvent"


class Undecodable(msgspec.Struct, frozen=True):
    reason: str


Decoded = list[ObjectEvent] | TestEvent | Undecodable


def event_kind(event_name: str) -> EventKind:
    name = event_name.removeprefix("s3:")
    if name.startswith("ObjectCreated:"):
        return EventKind.CREATED
    if name.startswith(("ObjectRemoved:", "LifecycleExpiration:")):
        return EventKind.REMOVED
    return EventKind.OTHER


def is_object_created(event: ObjectEvent) -> bool:
    return event.kind is EventKind.CREATED


# ---- S3 event notifications ---------------------------------------------------------------------


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
    Records: list[_EventRecord]


# ---- EventBridge --------------------------------------------------------------------------------


class _EBObject(msgspec.Struct):
    key: str
    size: int | None = None
    etag: str | None = None
    eTag: str | None = None  # moto's spelling
    version_id: str | None = msgspec.field(default=None, name="version-id")
    sequencer: str | None = None


class _EBDetail(msgspec.Struct):
    bucket: _S3Bucket
    object: _EBObject
    reason: str | None = None
    deletion_type: str | None = msgspec.field(default=None, name="deletion-type")


class _EBEvent(msgspec.Struct):
    detail_type: str = msgspec.field(name="detail-type")
    source: str
    time: datetime | float  # moto: epoch seconds
    detail: _EBDetail


# EventBridge's `reason` for a created object, as the notification's event name says it.
_CREATED_BY: Final = {
    "PutObject": "Put",
    "POST Object": "Post",
    "CopyObject": "Copy",
    "CompleteMultipartUpload": "CompleteMultipartUpload",
}


def _eventbridge_name(detail_type: str, detail: _EBDetail) -> str:
    if detail_type == "Object Created":
        return f"ObjectCreated:{_CREATED_BY.get(detail.reason or '', '*')}"
    if detail_type == "Object Deleted":
        prefix = "LifecycleExpiration" if detail.reason == "Lifecycle Expiration" else "ObjectRemoved"
        removal = {"Delete Marker Created": "DeleteMarkerCreated", "Permanently Deleted": "Delete"}
        return f"{prefix}:{removal.get(detail.deletion_type or '', '*')}"
    return detail_type  # Object Restore Completed, Object Tags Added, ...: nothing we load


# ---- decoding -----------------------------------------------------------------------------------

_NOT_S3 = "not an S3 event notification"


def decode_message(body: str | bytes) -> Decoded:
    """The object events in one SQS message body, a message naming no object, or why it is not one.

    Never raises: anything that is not one of the shapes in the module docstring is `Undecodable`
    with a reason starting "not an S3 event".
    """
    try:
        doc = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return Undecodable(f"{_NOT_S3}: not JSON ({exc})")
    except RecursionError:
        return Undecodable(f"{_NOT_S3}: JSON nested too deep")
    try:
        return _decode_document(doc, wrapped=False)
    except (OverflowError, ValueError, OSError) as exc:  # a time that is no instant in UTC
        return Undecodable(f"{_NOT_S3}: {exc}")


def _decode_document(doc: Any, *, wrapped: bool) -> Decoded:
    if not isinstance(doc, dict):
        return Undecodable(f"{_NOT_S3}: a JSON {type(doc).__name__}, not an object")
    if "Records" in doc:
        return _decode_notification(doc)
    if doc.get("Event") == "s3:TestEvent":
        return TestEvent()
    if "detail-type" in doc:
        return _decode_eventbridge(doc)
    kind = doc.get("Type")
    if kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation") and not wrapped:
        url = doc.get("SubscribeURL")
        return TestEvent(f"SNS {kind}" + (f" (confirm at {url})" if isinstance(url, str) else ""))
    if kind == "Notification" and "TopicArn" in doc and not wrapped:
        message = doc.get("Message")
        if not isinstance(message, str):
            return Undecodable(f"{_NOT_S3}: an SNS notification without a Message string")
        try:
            inner = msgspec.json.decode(message)
        except (msgspec.DecodeError, RecursionError) as exc:
            return Undecodable(f"{_NOT_S3}: an SNS notification whose Message is not JSON ({exc})")
        decoded = _decode_document(inner, wrapped=True)
        if isinstance(decoded, Undecodable):
            return Undecodable(decoded.reason.replace(_NOT_S3, f"{_NOT_S3} (in an SNS notification)", 1))
        return decoded
    return Undecodable(f"{_NOT_S3}: no Records, EventBridge detail or SNS Message")


def _decode_notification(doc: dict[str, Any]) -> Decoded:
    try:
        note = msgspec.convert(doc, _Notification)
    except msgspec.ValidationError as exc:
        return Undecodable(f"{_NOT_S3}: {exc}")
    if not note.Records:
        return Undecodable(f"{_NOT_S3}: no Records")
    events: list[ObjectEvent] = []
    for rec in note.Records:
        if rec.eventSource != "aws:s3":
            return Undecodable(f"{_NOT_S3}: eventSource {rec.eventSource!r}")
        obj = rec.s3.object
        events.append(
            ObjectEvent(
                event_name=rec.eventName.removeprefix("s3:"),
                event_time=_utc(rec.eventTime),
                bucket=rec.s3.bucket.name,
                key=unquote_plus(obj.key),
                size=obj.size,
                etag=_etag(obj.eTag),
                version_id=obj.versionId or None,
                sequencer=obj.sequencer or None,
            )
        )
    return events


def _decode_eventbridge(doc: dict[str, Any]) -> Decoded:
    try:
        ev = msgspec.convert(doc, _EBEvent)
    except msgspec.ValidationError as exc:
        return Undecodable(f"{_NOT_S3}: an EventBridge event but {exc}")
    if ev.source != "aws.s3":
        return Undecodable(f"{_NOT_S3}: an EventBridge event from {ev.source!r}")
    obj = ev.detail.object
    moto = obj.eTag is not None or not isinstance(ev.time, datetime)  # moto: the key as stored
    when = _utc(ev.time) if isinstance(ev.time, datetime) else datetime.fromtimestamp(ev.time, UTC)
    key = obj.key if moto else unquote_plus(obj.key)
    return [
        ObjectEvent(
            event_name=_eventbridge_name(ev.detail_type, ev.detail),
            event_time=when,
            bucket=ev.detail.bucket.name,
            key=key,
            size=obj.size,
            etag=_etag(obj.etag or obj.eTag),
            version_id=obj.version_id or None,
            sequencer=obj.sequencer or None,
        )
    ]


def _utc(when: datetime) -> datetime:
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)


def _etag(value: str | None) -> str | None:
    return value.strip('"') or None if value else None
