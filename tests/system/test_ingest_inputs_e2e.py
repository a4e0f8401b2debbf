"""Real-world input end to end (issue 12, "Ingest: files and events"): files with lone-CR line ends
and headers, events wrapped by SNS (raw or not) or sent by EventBridge, through real moto S3, SNS,
EventBridge and SQS over HTTP, a real `hiring ingest` process and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import bz2
import gzip
import io
import json
import signal
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import boto3

from tests.system.consumers import ConsumerProcess, all_done, counts, eventually, name_by_id, objects, replay
from tests.system.stack import Stack

if TYPE_CHECKING:
    from tests.system.query_fixtures import Client

pytest_plugins = ("tests.system.query_fixtures",)

# Issue 12, case 1: a Mac Excel export (lone CR line ends) with a header line.
MAC_EXPORT = (
    b"id,name,datetime,department_id,job_id\r"
    b"61001,Ana Ruiz,2021-02-03T10:00:00Z,1,1\r"
    b"61002,Luis Paz,2021-05-06T11:00:00Z,2,3\r"
    b'61003,"Ortiz,\rEva",2021-05-06T11:00:00Z,2,3\r'
    b"61004,,2021-05-06T11:00:00Z,2,3\r"
)


def _session(stack: Stack) -> boto3.Session:
    """A boto3 session with the stack's region and test credentials (its clients take the endpoint)."""
    return boto3.Session(region_name=stack.region, aws_access_key_id="test", aws_secret_access_key="test")


def _queue_arn(stack: Stack) -> str:
    attrs = stack.sqs().get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["QueueArn"])
    return str(attrs["Attributes"]["QueueArn"])


def _through_sns(stack: Stack, *, raw: bool) -> None:
    """Rewire the bucket's notification: S3 -> SNS topic -> the queue (raw message delivery or not)."""
    sns = _session(stack).client("sns", endpoint_url=stack.endpoint_url)
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
    events = _session(stack).client("events", endpoint_url=stack.endpoint_url)
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
        names = await name_by_id(conn, "hired_employees")
        assert names == {61001: "Ana Ruiz", 61002: "Luis Paz", 61003: "Ortiz,\rEva"}
        reject = await conn.fetchrow("SELECT line, raw, reason FROM ingest_rejects")
        assert reject is not None
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
        assert await name_by_id(conn, "jobs") == {
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


# ---- gzip and other binary content (issue 12, case 5) ---------------------------------------------

DATA = Path(__file__).resolve().parents[1] / "data" / "globant"


def _xlsx() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("xl/workbook.xml", "<workbook/>")
    return buf.getvalue()


async def test_gzip_objects_are_decompressed_while_they_stream(fresh: Stack, tmp_path: Path) -> None:
    s3 = fresh.s3()
    employees = (DATA / "hired_employees.csv").read_bytes()
    s3.put_object(Bucket=fresh.bucket, Key="hired_employees/2021.csv.gz", Body=gzip.compress(employees))
    # a .csv key whose object says Content-Encoding: gzip, and a gzip body under a plain .csv name
    s3.put_object(
        Bucket=fresh.bucket,
        Key="jobs/2021.csv",
        Body=gzip.compress((DATA / "jobs.csv").read_bytes()),
        ContentEncoding="gzip",
    )
    s3.put_object(
        Bucket=fresh.bucket,
        Key="departments.csv",
        Body=gzip.compress((DATA / "departments.csv").read_bytes()),
    )
    conn = await fresh.connect()
    try:
        with ConsumerProcess(fresh.env, tmp_path / "c.log"):
            objs = await eventually(lambda: objects(conn), lambda o: all_done(o, 3), what="3 files")
        by_key = {o["key"]: o for o in objs}
        assert {k: (o["status"], o["rows_loaded"], o["rows_rejected"]) for k, o in by_key.items()} == {
            "hired_employees/2021.csv.gz": ("loaded", 1929, 70),
            "jobs/2021.csv": ("loaded", 183, 0),
            "departments.csv": ("loaded", 12, 0),
        }
        # lines read = loaded + rejected, in decompressed terms
        assert by_key["hired_employees/2021.csv.gz"]["lines_done"] == len(employees.splitlines()) == 1999
        assert await counts(conn) == {
            "hired_employees": 1929,
            "departments": 12,
            "jobs": 183,
            "ingest_rejects": 70,
        }
    finally:
        await conn.close()


async def test_binary_content_fails_with_a_reason_naming_it(fresh: Stack, tmp_path: Path) -> None:
    s3 = fresh.s3()
    cases = {
        "jobs/book.csv": (_xlsx(), "not CSV text: the content is an Excel workbook (.xlsx, a ZIP archive)"),
        "jobs/data.csv": (
            b"PAR1" + bytes(200) + b"PAR1",
            "not CSV text: the content is an Apache Parquet file",
        ),
        "jobs/blob.csv": (bytes(range(256)) * 40, "not CSV text: binary content ("),
        "jobs/cut.csv.gz": (gzip.compress(b"1,Dev\n" * 5000)[:-10], "the gzip stream is truncated"),
        "jobs/archive.csv": (bz2.compress(b"1,Dev\n"), "not CSV text: the content is bzip2-compressed data"),
        "jobs/utf16.csv": ("1,Dev\n2,Ops\n".encode("utf-16"), "not CSV text: the content is UTF-16 text"),
    }
    for key, (body, _) in cases.items():
        s3.put_object(Bucket=fresh.bucket, Key=key, Body=body)
    conn = await fresh.connect()
    try:
        with ConsumerProcess(fresh.env, tmp_path / "c.log"):
            objs = await eventually(
                lambda: objects(conn), lambda o: all_done(o, len(cases)), what="all failed"
            )
        for o in objs:
            assert o["status"] == "failed", o
            assert o["error"].startswith(cases[o["key"]][1]), o
        assert await counts(conn) == {"hired_employees": 0, "departments": 0, "jobs": 0, "ingest_rejects": 0}
    finally:
        await conn.close()


async def test_a_gzip_file_resumes_after_a_crash_with_exact_counts(fresh: Stack, tmp_path: Path) -> None:
    n, bad_every = 60_000, 97
    rows = [
        f"{i},Emp {i},{'not-a-date' if i % bad_every == 0 else f'2021-0{1 + i % 9}-1{i % 10}T10:00:00Z'},1,1"
        for i in range(1, n + 1)
    ]
    text = ("\r".join(rows) + "\r").encode()  # lone CR line ends, for good measure
    fresh.s3().put_object(Bucket=fresh.bucket, Key="hired_employees/big.csv.gz", Body=gzip.compress(text))
    bad = n // bad_every
    knobs = {"INGEST_BATCH_ROWS": "500", "INGEST_VISIBILITY_TIMEOUT": "4"}
    conn = await fresh.connect()
    try:
        victim = ConsumerProcess(fresh.env, tmp_path / "victim.log", **knobs).start()
        try:
            await eventually(
                lambda: objects(conn), lambda o: bool(o) and o[0]["batches"] >= 5, what="5 batches"
            )
        finally:
            victim.signal(signal.SIGKILL)
            victim.wait(10)
        partial = (await objects(conn))[0]
        assert partial["status"] == "processing", "the file finished before the kill: make it bigger"
        with ConsumerProcess(fresh.env, tmp_path / "second.log", **knobs) as second:
            (obj,) = await eventually(
                lambda: objects(conn), lambda o: all_done(o, 1), wait=120, what="resumed"
            )
            assert "resuming" in second.log()
        assert (obj["status"], obj["rows_loaded"], obj["rows_rejected"], obj["lines_done"]) == (
            "loaded",
            n - bad,
            bad,
            n,
        )
        assert await counts(conn) == {
            "hired_employees": n - bad,
            "departments": 0,
            "jobs": 0,
            "ingest_rejects": bad,
        }
        assert await conn.fetchval("SELECT count(DISTINCT src_line) FROM hired_employees") == n - bad
    finally:
        await conn.close()


# ---- events of another bucket (issue 12, case 3) ------------------------------------------------


async def test_events_of_another_bucket_are_ignored_and_replay_agrees(fresh: Stack, tmp_path: Path) -> None:
    s3 = fresh.s3()
    other = f"{fresh.bucket}-other"
    s3.create_bucket(Bucket=other)
    s3.put_bucket_notification_configuration(
        Bucket=other,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": _queue_arn(fresh), "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    _drain(fresh)
    s3.put_object(Bucket=fresh.bucket, Key="jobs.csv", Body=b"1,Dev\n")
    s3.put_object(Bucket=other, Key="jobs.csv", Body=b"1,Other\n2,Other too\n")
    conn = await fresh.connect()
    try:
        with ConsumerProcess(fresh.env, tmp_path / "c.log"):
            await eventually(lambda: _events(conn), lambda e: len(e) == 2, what="2 events recorded")
            await eventually(lambda: objects(conn), lambda o: all_done(o, 1), what="the raw file loaded")
        events = {e["bucket"]: e for e in await _events(conn)}
        assert (events[other]["outcome"], events[other]["detail"]) == (
            "ignored",
            f"bucket {other!r} is not the raw bucket {fresh.bucket!r}",
        )
        assert events[fresh.bucket]["outcome"] == "loaded"
        assert [o["key"] for o in await objects(conn)] == ["jobs.csv"]  # no ledger row for the other bucket
        live = await name_by_id(conn, "jobs")
        assert live == {1: "Dev"}
        await replay(fresh.env, "jobs")
        assert await name_by_id(conn, "jobs") == live  # replay gives what live gave
    finally:
        await conn.close()


async def test_a_gzip_body_sent_through_post_upload_loads(
    client: Client, fresh: Stack, tmp_path: Path
) -> None:
    """Issue 12, case 5: it became five binary "not valid UTF-8" rejects under status loaded."""
    ids = []
    for name in ("jobs.csv", "jobs.csv.gz"):
        form = aiohttp.FormData()
        form.add_field(
            "file", gzip.compress(b"1,Dev\r2,Ops\r3,QA\r"), filename=name, content_type="application/gzip"
        )
        resp = await client.post("/upload", data=form)
        assert resp.status == 202, await resp.text()
        ids.append((await resp.json())["uploads"][0]["id"])
    with ConsumerProcess(fresh.env, tmp_path / "c.log"):
        for upload_id in ids:
            deadline = asyncio.get_running_loop().time() + 60
            while (status := await (await client.get(f"/uploads/{upload_id}")).json())["status"] not in (
                "loaded",
                "failed",
            ):
                assert asyncio.get_running_loop().time() < deadline, status
                await asyncio.sleep(0.2)
            assert (status["table"], status["status"], status["rows_loaded"], status["rows_rejected"]) == (
                "jobs",
                "loaded",
                3,
                0,
            )
