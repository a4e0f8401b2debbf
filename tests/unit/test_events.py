"""Event decoding (pure): what real S3, SNS, EventBridge and moto send, the test event, and garbage."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest.events import (
    EventKind,
    ObjectEvent,
    TestEvent,
    Undecodable,
    decode_message,
    event_kind,
    is_object_created,
)

# As documented by AWS (event structure version 2.1), from a versioned bucket.
AWS_EVENT = {
    "Records": [
        {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "us-east-1",
            "eventTime": "2021-07-27T16:02:08.123Z",
            "eventName": "ObjectCreated:CompleteMultipartUpload",
            "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
            "requestParameters": {"sourceIPAddress": "203.0.113.7"},
            "responseElements": {
                "x-amz-request-id": "C3D13FE58DE4C810",
                "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
            },
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "hiring-ingest",
                "bucket": {
                    "name": "globant-raw-data",
                    "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                    "arn": "arn:aws:s3:::globant-raw-data",
                },
                "object": {
                    "key": "hired_employees/2021/July+data%2B1.csv",
                    "size": 1024,
                    "eTag": "d41d8cd98f00b204e9800998ecf8427e-2",
                    "versionId": "096fKKXTRTtl3on89fVO.nfljtsv6qko",
                    "sequencer": "0055AED6DCD90281E5",
                },
            },
        }
    ]
}

# What moto's server sends: no versionId, no sequencer, no request fields.
MOTO_EVENT = {
    "Records": [
        {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "us-east-1",
            "eventTime": "2026-11-27T02:14:56.512Z",
            "eventName": "ObjectCreated:Put",
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "hiring-ingest",
                "bucket": {"name": "globant-raw-data", "arn": "arn:aws:s3:::globant-raw-data"},
                "object": {"key": "jobs.csv", "size": 12, "eTag": '"abc"'},
            },
        }
    ]
}


def events(body: str | bytes) -> list[ObjectEvent]:
    """The object events of a body that names objects (failing the test on any other answer)."""
    decoded = decode_message(body)
    assert isinstance(decoded, list), decoded
    return decoded


def test_real_s3_event_is_decoded_with_key_url_decoded() -> None:
    (ev,) = events(json.dumps(AWS_EVENT))
    assert ev == ObjectEvent(
        event_name="ObjectCreated:CompleteMultipartUpload",
        event_time=datetime(2021, 7, 27, 16, 2, 8, 123000, tzinfo=UTC),
        bucket="globant-raw-data",
        key="hired_employees/2021/July data+1.csv",
        size=1024,
        etag="d41d8cd98f00b204e9800998ecf8427e-2",
        version_id="096fKKXTRTtl3on89fVO.nfljtsv6qko",
        sequencer="0055AED6DCD90281E5",
    )
    assert is_object_created(ev)


def test_moto_event_without_version_or_sequencer() -> None:
    (ev,) = events(json.dumps(MOTO_EVENT).encode())
    assert (ev.key, ev.etag, ev.version_id, ev.sequencer) == ("jobs.csv", "abc", None, None)


def test_s3_test_event_is_recognised() -> None:
    body = {
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": "2026-11-27T02:14:56.000Z",
        "Bucket": "b",
    }
    assert isinstance(decode_message(json.dumps(body)), TestEvent)


def test_garbage_is_undecodable_with_a_reason() -> None:
    bodies: list[str | bytes] = [
        "",
        "not json",
        "[]",
        "{}",
        '{"Records": [{"eventSource": "aws:s3"}]}',
        b"\xff\xfe",
        '{"Records": 5}',
    ]
    for body in bodies:
        result = decode_message(body)
        assert isinstance(result, Undecodable), body
        assert result.reason.startswith("not an S3 event")


def test_other_sources_are_undecodable() -> None:
    other = json.loads(json.dumps(MOTO_EVENT))
    other["Records"][0]["eventSource"] = "aws:sns"
    assert isinstance(decode_message(json.dumps(other)), Undecodable)


@pytest.mark.parametrize(
    ("name", "kind", "marker"),
    [
        ("ObjectCreated:Put", EventKind.CREATED, False),
        ("ObjectCreated:CompleteMultipartUpload", EventKind.CREATED, False),
        ("ObjectRemoved:Delete", EventKind.REMOVED, False),
        ("ObjectRemoved:DeleteMarkerCreated", EventKind.REMOVED, True),
        ("LifecycleExpiration:Delete", EventKind.REMOVED, False),
        ("LifecycleExpiration:DeleteMarkerCreated", EventKind.REMOVED, True),
        ("ObjectRestore:Completed", EventKind.OTHER, False),
        ("ObjectTagging:Put", EventKind.OTHER, False),
        ("s3:ObjectCreated:Put", EventKind.CREATED, False),  # MinIO and others keep the prefix
    ],
)
def test_event_kinds(name: str, kind: EventKind, marker: bool) -> None:
    removed = json.loads(json.dumps(MOTO_EVENT))
    removed["Records"][0]["eventName"] = name
    del removed["Records"][0]["s3"]["object"]["eTag"]  # removals carry no ETag
    (ev,) = events(json.dumps(removed))
    assert ev.kind is kind and event_kind(name) is kind
    assert ev.event_name == name.removeprefix("s3:")
    assert is_object_created(ev) is (kind is EventKind.CREATED)
    assert ev.delete_marker is marker
    assert ev.etag is None


def test_several_records_in_one_message() -> None:
    two = json.loads(json.dumps(AWS_EVENT))
    second = json.loads(json.dumps(AWS_EVENT["Records"][0]))
    second["s3"]["object"]["key"] = "jobs/caf%C3%A9%20%281%29.csv"  # percent-encoded UTF-8
    second["eventName"] = "ObjectRemoved:DeleteMarkerCreated"
    two["Records"].append(second)
    first, other = events(json.dumps(two))
    assert first.key == "hired_employees/2021/July data+1.csv"
    assert (other.key, other.kind) == ("jobs/café (1).csv", EventKind.REMOVED)


# ---- SNS: S3 -> SNS -> SQS ----------------------------------------------------------------------


def sns_envelope(message: str, **extra: object) -> dict[str, object]:
    """An SNS notification as SQS receives it without raw message delivery (AWS's documented shape)."""
    return {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:globant-raw-events",
        "Subject": "Amazon S3 Notification",
        "Message": message,
        "Timestamp": "2021-07-27T16:02:08.456Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLEpH+DcEwjAPg8O9mY8dReBSwksfg2S7WKQcikcNKWLQjwu6A4VbeS0QHVCkhRS7fUQ=",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=arn:aws:sns:us-east-1:123456789012:globant-raw-events:c9135db0",
        **extra,
    }


def test_sns_envelope_is_unwrapped() -> None:
    body = json.dumps(sns_envelope(json.dumps(AWS_EVENT)), indent=2)
    assert decode_message(body) == decode_message(json.dumps(AWS_EVENT))
    (ev,) = events(body)
    assert ev.key == "hired_employees/2021/July data+1.csv"


def test_sns_raw_message_delivery_is_the_notification_itself() -> None:
    assert decode_message(json.dumps(MOTO_EVENT)) == decode_message(
        json.dumps(sns_envelope(json.dumps(MOTO_EVENT)))
    )


def test_moto_sns_envelope() -> None:
    # moto's SNS -> SQS body: sorted keys, indented, SignatureVersion 2, no Subject
    envelope = sns_envelope(json.dumps(MOTO_EVENT), SignatureVersion="2")
    del envelope["Subject"]
    (ev,) = events(json.dumps(envelope, sort_keys=True, indent=2))
    assert (ev.bucket, ev.key, ev.etag, ev.kind) == ("globant-raw-data", "jobs.csv", "abc", EventKind.CREATED)


def test_sns_wrapping_the_s3_test_event() -> None:
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-11-27T02:14:56.000Z"}
    assert decode_message(json.dumps(sns_envelope(json.dumps(test_event)))) == TestEvent()


def test_sns_subscription_confirmation_names_no_object() -> None:
    body = {
        "Type": "SubscriptionConfirmation",
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:globant-raw-events",
        "Message": "You have chosen to subscribe to the topic ...",
        "SubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=2336412f37",
    }
    decoded = decode_message(json.dumps(body))
    assert isinstance(decoded, TestEvent)
    assert decoded.what.startswith("SNS SubscriptionConfirmation (confirm at https://sns.")


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("this is not json", "an SNS notification whose Message is not JSON"),
        ("", "an SNS notification whose Message is not JSON"),
        (None, "an SNS notification without a Message string"),
        (5, "an SNS notification without a Message string"),
        ('{"hello": "world"}', "(in an SNS notification): no Records, EventBridge detail or SNS Message"),
        ('{"Records": []}', "(in an SNS notification): no Records"),
        ("[1, 2]", "(in an SNS notification): a JSON list, not an object"),
    ],
)
def test_sns_envelope_without_an_s3_event_is_undecodable_with_a_reason(message: object, reason: str) -> None:
    envelope = sns_envelope("")
    envelope["Message"] = message
    decoded = decode_message(json.dumps(envelope))
    assert isinstance(decoded, Undecodable)
    assert decoded.reason.startswith("not an S3 event notification") and reason in decoded.reason


def test_sns_inside_sns_is_not_unwrapped_twice() -> None:
    inner = json.dumps(sns_envelope(json.dumps(AWS_EVENT)))
    assert isinstance(decode_message(json.dumps(sns_envelope(inner))), Undecodable)


# ---- EventBridge ----------------------------------------------------------------------------------

# AWS's documented examples (S3 user guide, "EventBridge event message structure").
EB_CREATED = {
    "version": "0",
    "id": "17793124-05d4-b198-2fde-7ededc63b103",
    "detail-type": "Object Created",
    "source": "aws.s3",
    "account": "111122223333",
    "time": "2021-11-12T00:00:00Z",
    "region": "ca-central-1",
    "resources": ["arn:aws:s3:::globant-raw-data"],
    "detail": {
        "version": "0",
        "bucket": {"name": "globant-raw-data"},
        "object": {
            "key": "hired_employees/2021+Q1.csv.gz",
            "size": 5,
            "etag": "b1946ac92492d2347c6235b4d2611184",
            "version-id": "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e",
            "sequencer": "617f08299329d189",
        },
        "request-id": "N4N7GDK58NMKJ12R",
        "requester": "123456789012",
        "source-ip-address": "1.2.3.4",
        "reason": "PutObject",
    },
}
EB_DELETED = {
    "version": "0",
    "id": "2ee9cc15-d022-99ea-1fb8-1b1bac4850f9",
    "detail-type": "Object Deleted",
    "source": "aws.s3",
    "account": "111122223333",
    "time": "2021-11-12T00:00:00Z",
    "region": "ca-central-1",
    "resources": ["arn:aws:s3:::globant-raw-data"],
    "detail": {
        "version": "0",
        "bucket": {"name": "globant-raw-data"},
        "object": {
            "key": "jobs.csv",
            "etag": "d41d8cd98f00b204e9800998ecf8427e",
            "version-id": "1QW9g1Z99LUNbvaaYVpW9xDlOLU.qxgF",
            "sequencer": "617f0837b476e463",
        },
        "request-id": "0BH729840619AG5K",
        "requester": "123456789012",
        "source-ip-address": "1.2.3.4",
        "reason": "DeleteObject",
        "deletion-type": "Delete Marker Created",
    },
}


def test_eventbridge_object_created() -> None:
    (ev,) = events(json.dumps(EB_CREATED))
    assert ev == ObjectEvent(
        event_name="ObjectCreated:Put",
        event_time=datetime(2021, 11, 12, tzinfo=UTC),
        bucket="globant-raw-data",
        key="hired_employees/2021 Q1.csv.gz",
        size=5,
        etag="b1946ac92492d2347c6235b4d2611184",
        version_id="IYV3p45BT0ac8hjHg1houSdS1a.Mro8e",
        sequencer="617f08299329d189",
    )
    assert ev.kind is EventKind.CREATED


@pytest.mark.parametrize(
    ("reason", "deletion", "name"),
    [
        ("DeleteObject", "Delete Marker Created", "ObjectRemoved:DeleteMarkerCreated"),
        ("DeleteObject", "Permanently Deleted", "ObjectRemoved:Delete"),
        ("Lifecycle Expiration", "Delete Marker Created", "LifecycleExpiration:DeleteMarkerCreated"),
        ("Lifecycle Expiration", "Permanently Deleted", "LifecycleExpiration:Delete"),
    ],
)
def test_eventbridge_object_deleted(reason: str, deletion: str, name: str) -> None:
    body = json.loads(json.dumps(EB_DELETED))
    body["detail"]["reason"], body["detail"]["deletion-type"] = reason, deletion
    (ev,) = events(json.dumps(body))
    assert (ev.event_name, ev.kind, ev.key) == (name, EventKind.REMOVED, "jobs.csv")
    assert ev.delete_marker is (deletion == "Delete Marker Created")
    assert (ev.version_id, ev.size) == ("1QW9g1Z99LUNbvaaYVpW9xDlOLU.qxgF", None)


@pytest.mark.parametrize(
    ("reason", "name"),
    [
        ("POST Object", "ObjectCreated:Post"),
        ("CopyObject", "ObjectCreated:Copy"),
        ("CompleteMultipartUpload", "ObjectCreated:CompleteMultipartUpload"),
        ("Restore", "ObjectCreated:*"),
    ],
)
def test_eventbridge_creation_reasons(reason: str, name: str) -> None:
    body = json.loads(json.dumps(EB_CREATED))
    body["detail"]["reason"] = reason
    (ev,) = events(json.dumps(body))
    assert (ev.event_name, ev.kind) == (name, EventKind.CREATED)


def test_eventbridge_events_that_change_no_data() -> None:
    body = json.loads(json.dumps(EB_CREATED))
    body["detail-type"] = "Object Tags Added"
    (ev,) = events(json.dumps(body))
    assert (ev.event_name, ev.kind) == ("Object Tags Added", EventKind.OTHER)


def test_moto_eventbridge_shape() -> None:
    # moto 5: "eTag", the key as stored (not URL-encoded), reason "ObjectCreated"; its events model
    # has the time in epoch seconds (its SQS target writes it as ISO 8601, without milliseconds)
    body = json.loads(json.dumps(EB_CREATED))
    body["time"] = 1636675200.25
    body["detail"]["object"] = {
        "key": "jobs/a+b c.csv",
        "size": 12,
        "eTag": "abc",
        "version-id": None,
        "sequencer": "617f08299329d189",
    }
    body["detail"]["reason"] = "ObjectCreated"
    (ev,) = events(json.dumps(body))
    assert (ev.event_name, ev.key, ev.etag, ev.version_id) == (
        "ObjectCreated:*",
        "jobs/a+b c.csv",
        "abc",
        None,
    )
    assert ev.event_time == datetime(2021, 11, 12, 0, 0, 0, 250000, tzinfo=UTC)
    body["time"] = "2021-11-12T00:00:00Z"
    (ev,) = events(json.dumps(body))
    assert (ev.key, ev.event_time) == ("jobs/a+b c.csv", datetime(2021, 11, 12, tzinfo=UTC))


def test_eventbridge_through_sns() -> None:
    assert decode_message(json.dumps(sns_envelope(json.dumps(EB_CREATED)))) == decode_message(
        json.dumps(EB_CREATED)
    )


@pytest.mark.parametrize(
    "change",
    [
        {"source": "aws.ec2"},
        {"detail": {"bucket": {"name": "b"}}},
        {"detail": "nope"},
        {"time": "yesterday"},
        {"time": 1e300},
        {"time": "0001-01-01T00:00:00+05:00"},
    ],
)
def test_eventbridge_garbage_is_undecodable(change: dict[str, object]) -> None:
    body = {**EB_CREATED, **change}
    decoded = decode_message(json.dumps(body))
    assert isinstance(decoded, Undecodable) and decoded.reason.startswith("not an S3 event")


# ---- anything else --------------------------------------------------------------------------------


def test_deep_nesting_is_undecodable() -> None:
    decoded = decode_message("[" * 100_000)
    assert isinstance(decoded, Undecodable)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
_keys = st.sampled_from(
    [
        "Records",
        "Type",
        "Message",
        "TopicArn",
        "detail-type",
        "source",
        "time",
        "detail",
        "Event",
        "eventName",
        "eventTime",
        "s3",
        "bucket",
        "object",
        "key",
        "name",
        "eventSource",
    ]
)
_shaped = st.recursive(
    _json,
    lambda inner: st.dictionaries(_keys, inner, max_size=6) | st.lists(inner, max_size=3),
    max_leaves=30,
)


@settings(max_examples=120, deadline=None)
@given(st.binary(max_size=200) | _json.map(json.dumps) | _shaped.map(json.dumps))
def test_property_any_body_decodes_or_says_why(body: bytes | str) -> None:
    decoded = decode_message(body)
    if isinstance(decoded, Undecodable):
        assert decoded.reason.startswith("not an S3 event")
    elif isinstance(decoded, list):
        assert decoded and all(ev.event_time.tzinfo is UTC for ev in decoded)
