"""Real-world input end to end (issue 12, "Ingest: files and events"): files with lone-CR line ends
and headers, events wrapped by SNS (raw or not) or sent by EventBridge, through real moto S3, SNS,
EventBridge and SQS over HTTP, a real `hiring ingest` process and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3

from tests.consumers import ConsumerProcess, all_done, counts, eventually, objects
from tests.stack import Stack

# Issue 12, case 1: a Mac Excel export (lone CR line ends) with a header line.
MAC_EXPORT = (
    b"id,name,datetime,department_id,job_id\r"
    b"61001,Ana Ruiz,2021-02-03T10:00:00Z,1,1\r"
    b"61002,Luis Paz,2021-05-06T11:00:00Z,2,3\r"
    b'61003,"Ortiz,\rEva",2021-05-06T11:00:00Z,2,3\r'
    b"61004,,2021-05-06T11:00:00Z,2,3\r"
)


def _client(stack: Stack, service: str) -> Any:
    return boto3.client(
        service,
        region_name=stack.region,
        endpoint_url=stack.endpoint_url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def _queue_arn(stack: Stack) -> str:
    attrs = stack.sqs().get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["QueueArn"])
    return str(attrs["Attributes"]["QueueArn"])


def _through_sns(stack: Stack, *, raw: bool) -> None:
    """Rewire the bucket's notification: S3 -> SNS topic -> the queue (raw message delivery or not)."""
    sns = _client(stack, "sns")
    topic = sns.create_topic(Name=f"{stack.bucket}-events")["TopicArn"]
    attributes = {"RawMessageDelivery": "true"} if raw else {}
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=_queue_arn(stack), Attributes=attributes)
    stack.s3().put_bucket_notification_configuration(
        Bucket=stack.bucket,
        NotificationConfiguration={
            "TopicConfigurations": [{"TopicArn": topic, "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    _drain(stack)


def _through_eventbridge(stack: Stack) -> None:
    """Rewire the bucket's notification: S3 -> EventBridge (default bus) -> a rule -> the queue."""
    events = _client(stack, "events")
    rule = f"{stack.bucket}-created"
    pattern = {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {"bucket": {"name": [stack.bucket]}},
    }
    events.put_rule(Name=rule, EventPattern=json.dumps(pattern), State="ENABLED")
    events.put_targets(Rule=rule, Targets=[{"Id": "queue", "Arn": _queue_arn(stack)}])
    stack.s3().put_bucket_notification_configuration(
        Bucket=stack.bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    _drain(stack)


def _drain(stack: Stack) -> None:
    """Take the test events that configuring notifications sends off the queue."""
    sqs = stack.sqs()
    while True:
        got = sqs.receive_message(QueueUrl=stack.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        if not got.get("Messages"):
            return
        for m in got["Messages"]:
            sqs.delete_message(QueueUrl=stack.queue_url, ReceiptHandle=m["ReceiptHandle"])


async def _events(conn: Any) -> list[dict[str, Any]]:
    rows = await conn.fetch("SELECT event_name, bucket, key, outcome, detail FROM ingest_events ORDER BY id")
    return [dict(r) for r in rows]


async def test_a_mac_export_with_lone_cr_line_ends_and_a_header_loads(fresh: Stack, tmp_path: Path) -> None:
    fresh.s3().put_object(Bucket=fresh.bucket, Key="hired_employees/mac.csv", Body=MAC_EXPORT)
    conn = await fresh.connect()
    try:
        with ConsumerProcess(fresh.env, tmp_path / "c.log"):
            (obj,) = await eventually(lambda: objects(conn), lambda o: all_done(o, 1), what="file loaded")
        # 1 header + 3 loaded + 1 rejected; the quoted field spans two physical lines: 6 lines read
        assert (obj["status"], obj["rows_loaded"], obj["rows_rejected"], obj["lines_done"]) == (
            "loaded",
            3,
            1,
            6,
        )
        names = dict(await conn.fetch("SELECT id, name FROM hired_employees"))
        assert names == {61001: "Ana Ruiz", 61002: "Luis Paz", 61003: "Ortiz,\rEva"}
        reject = await conn.fetchrow("SELECT line, raw, reason FROM ingest_rejects")
        assert dict(reject) == {
            "line": 6,
            "raw": "61004,,2021-05-06T11:00:00Z,2,3",
            "reason": "name is empty",
        }
    finally:
        await conn.close()


async def test_a_header_of_another_table_is_rejected_with_its_reason(fresh: Stack, tmp_path: Path) -> None:
    fresh.s3().put_object(Bucket=fresh.bucket, Key="jobs.csv", Body=b"id,department\r\n1,Dev\r\n")
    conn = await fresh.connect()
    try:
        with ConsumerProcess(fresh.env, tmp_path / "c.log"):
            (obj,) = await eventually(lambda: objects(conn), lambda o: all_done(o, 1), what="file loaded")
        assert (obj["rows_loaded"], obj["rows_rejected"], obj["lines_done"]) == (1, 1, 2)
        assert await conn.fetchval("SELECT reason FROM ingest_rejects WHERE line = 1") == (
            "a header of table departments (id, department), not of jobs (id, job)"
        )
    finally:
        await conn.close()


async def _loads_through(fresh: Stack, tmp_path: Path, event_name: str, shape: Callable[[Any], bool]) -> None:
    """Two uploads whose events arrive in the `shape` being tested (checked on the queue, then put
    back as they were) load, the later upload winning."""
    s3, sqs = fresh.s3(), fresh.sqs()
    s3.put_object(Bucket=fresh.bucket, Key="jobs/first batch.csv", Body=b"1,Dev\n2,Ops\n")
    # EventBridge times have whole seconds (and moto's sequencer is a constant): keep the order plain
    await asyncio.sleep(1.1)
    s3.put_object(Bucket=fresh.bucket, Key="jobs/a+b.csv", Body=b"2,QA\n3,PM\n")
    bodies: list[str] = []
    while len(bodies) < 2:
        for m in sqs.receive_message(QueueUrl=fresh.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=2).get(
            "Messages", []
        ):
            sqs.delete_message(QueueUrl=fresh.queue_url, ReceiptHandle=m["ReceiptHandle"])
            bodies.append(m["Body"])
    assert all(shape(json.loads(body)) for body in bodies), bodies
    for body in bodies:
        sqs.send_message(QueueUrl=fresh.queue_url, MessageBody=body)
    conn = await fresh.connect()
    try:
        with ConsumerProcess(fresh.env, tmp_path / "c.log"):
            objs = await eventually(lambda: objects(conn), lambda o: all_done(o, 2), what="2 files loaded")
        assert {(o["key"], o["status"]) for o in objs} == {
            ("jobs/first batch.csv", "loaded"),
            ("jobs/a+b.csv", "loaded"),
        }
        assert dict(await conn.fetch("SELECT id, job FROM jobs")) == {
            1: "Dev",
            2: "QA",
            3: "PM",
        }  # later upload wins
        events = await _events(conn)
        assert [(e["event_name"], e["outcome"]) for e in events] == [(event_name, "loaded")] * 2
    finally:
        await conn.close()


async def test_s3_to_sns_to_sqs(fresh: Stack, tmp_path: Path) -> None:
    _through_sns(fresh, raw=False)
    await _loads_through(
        fresh,
        tmp_path,
        "ObjectCreated:Put",
        lambda b: b["Type"] == "Notification" and "Records" in b["Message"],
    )


async def test_s3_to_sns_to_sqs_with_raw_message_delivery(fresh: Stack, tmp_path: Path) -> None:
    _through_sns(fresh, raw=True)
    await _loads_through(fresh, tmp_path, "ObjectCreated:Put", lambda b: "Records" in b and "Type" not in b)


async def test_s3_to_eventbridge_to_sqs(fresh: Stack, tmp_path: Path) -> None:
    _through_eventbridge(fresh)
    await _loads_through(fresh, tmp_path, "ObjectCreated:*", lambda b: b["detail-type"] == "Object Created")


async def test_an_sns_envelope_without_an_s3_event_is_undecodable_and_left_to_the_dlq(
    tmp_path: Path, stack: Stack
) -> None:
    own = stack.isolated(max_receive_count=2)
    await stack.reset_data()
    sqs = own.sqs()
    envelope = {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:topic",
        "Message": "this is not json",
        "Timestamp": "2021-07-27T16:02:08.456Z",
    }
    sqs.send_message(QueueUrl=own.queue_url, MessageBody=json.dumps(envelope))
    conn = await own.connect()
    try:
        with ConsumerProcess(own.env, tmp_path / "c.log"):
            await eventually(
                lambda: _dlq_depth(own), lambda n: n == 1, what="the message in the dead-letter queue"
            )
        events = await _events(conn)
        assert events and {e["outcome"] for e in events} == {"undecodable"}
        assert events[0]["detail"].startswith(
            "not an S3 event notification (in an SNS notification)"
        ) or events[0]["detail"].startswith(
            "not an S3 event notification: an SNS notification whose Message is not JSON"
        )
        assert await counts(conn) == {"hired_employees": 0, "departments": 0, "jobs": 0, "ingest_rejects": 0}
    finally:
        await conn.close()


async def _dlq_depth(stack: Stack) -> int:
    attrs = stack.sqs().get_queue_attributes(
        QueueUrl=stack.dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    return int(attrs["Attributes"]["ApproximateNumberOfMessages"])
