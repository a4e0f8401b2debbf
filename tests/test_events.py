"""S3 event decoding (pure): the shapes real S3 and moto send, the test event, and garbage."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from services.ingest.events import (
    ObjectEvent,
    TestEvent,
    Undecodable,
    decode_message,
    is_object_created,
    order_key,
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


def test_real_s3_event_is_decoded_with_key_url_decoded() -> None:
    (ev,) = decode_message(json.dumps(AWS_EVENT))  # type: ignore[misc]
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
    (ev,) = decode_message(json.dumps(MOTO_EVENT).encode())  # type: ignore[misc]
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
    for body in [
        "",
        "not json",
        "[]",
        "{}",
        '{"Records": [{"eventSource": "aws:s3"}]}',
        b"\xff\xfe",
        '{"Records": 5}',
    ]:
        result = decode_message(body)
        assert isinstance(result, Undecodable), body
        assert result.reason.startswith("not an S3 event")


def test_other_sources_are_undecodable() -> None:
    other = json.loads(json.dumps(MOTO_EVENT))
    other["Records"][0]["eventSource"] = "aws:sns"
    assert isinstance(decode_message(json.dumps(other)), Undecodable)


def test_removal_events_are_not_object_creations() -> None:
    removed = json.loads(json.dumps(MOTO_EVENT))
    removed["Records"][0]["eventName"] = "ObjectRemoved:Delete"
    (ev,) = decode_message(json.dumps(removed))  # type: ignore[misc]
    assert not is_object_created(ev)


def test_order_key_sorts_by_time_then_sequencer() -> None:
    t1 = datetime(2021, 1, 1, 0, 0, 0, 1000, tzinfo=UTC)
    t2 = datetime(2021, 1, 1, 0, 0, 0, 2000, tzinfo=UTC)
    assert order_key(t1, None, "z", "v") < order_key(t2, None, "a", "v")
    # same millisecond: S3's sequencer decides; shorter ones are left-padded before comparing
    assert order_key(t1, "FF", "k", "v") < order_key(t1, "0100", "k", "v")
