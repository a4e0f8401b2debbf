"""The ingest path end to end: objects put into a real S3 (moto over HTTP), events through a real
SQS queue, real `hiring ingest` processes, rows in a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.system.consumers import ConsumerProcess, all_done, counts, eventually, name_by_id, objects, replay
from tests.system.stack import Stack

if TYPE_CHECKING:
    from types_boto3_sqs import SQSClient
    from types_boto3_sqs.type_defs import MessageTypeDef

DATA = Path(__file__).resolve().parents[1] / "data" / "globant"  # the challenge's own files


def employees_csv(first: int, last: int, name: str = "Emp", *, bad_every: int = 0) -> bytes:
    lines = []
    for i in range(first, last + 1):
        if bad_every and i % bad_every == 0:
            lines.append(f"{i},{name} {i},not-a-date,1,1")
        else:
            lines.append(f"{i},{name} {i},2021-0{1 + i % 9}-1{i % 10}T10:00:00Z,{1 + i % 12},{1 + i % 180}")
    return ("\n".join(lines) + "\n").encode()


def receive_all(sqs: SQSClient, queue_url: str, expect: int, timeout: float = 20) -> list[MessageTypeDef]:
    """Take `expect` S3 object events off the queue (skipping S3's test event) without a consumer."""
    got: list[MessageTypeDef] = []
    deadline = time.monotonic() + timeout
    while len(got) < expect and time.monotonic() < deadline:
        resp = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for m in resp.get("Messages", []):
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
            if "s3:TestEvent" not in m["Body"]:
                got.append(m)
    assert len(got) == expect, f"expected {expect} events, got {len(got)}"
    return got


def queue_depth(sqs: SQSClient, url: str) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


async def test_challenge_files_load_with_exact_counts(fresh: Stack, tmp_path: Path) -> None:
    s3 = fresh.s3()
    for table in ("hired_employees", "departments", "jobs"):
        s3.upload_file(str(DATA / f"{table}.csv"), fresh.bucket, f"{table}/historic.csv")
    conn = await fresh.connect()
    try:
        with ConsumerProcess(fresh.env, tmp_path / "consumer.log"):
            objs = await eventually(lambda: objects(conn), lambda o: all_done(o, 3), what="3 files loaded")
        assert await counts(conn) == {
            "hired_employees": 1929,
            "departments": 12,
            "jobs": 183,
            "ingest_rejects": 70,
        }
        by_key = {o["key"]: o for o in objs}
        assert by_key["hired_employees/historic.csv"]["rows_loaded"] == 1929
        assert by_key["hired_employees/historic.csv"]["rows_rejected"] == 70
        assert {o["status"] for o in objs} == {"loaded"}
        rejects = await conn.fetch("SELECT line, raw, reason FROM ingest_rejects ORDER BY line")
        assert all(r["reason"] and r["raw"] and r["line"] > 0 for r in rejects)
        first = rejects[0]
        assert (first["line"], first["raw"], first["reason"]) == (
            2,
            "2,Ty Hofer,2021-05-30T05:43:46Z,8,",
            "job_id is empty",
        )
        # lines read = loaded + rejected (+ header and blank lines)
        lines = len((DATA / "hired_employees.csv").read_bytes().splitlines())
        assert by_key["hired_employees/historic.csv"]["lines_done"] == lines == 1929 + 70
    finally:
        await conn.close()


async def test_event_delivered_three_times_is_applied_once(fresh: Stack, tmp_path: Path) -> None:
    s3, sqs = fresh.s3(), fresh.sqs()
    s3.put_object(Bucket=fresh.bucket, Key="jobs.csv", Body=b"1,Dev\n2,QA\n3,Ops\n3,Ops again\n")
    (event,) = receive_all(sqs, fresh.queue_url, 1)
    for _ in range(3):
        sqs.send_message(QueueUrl=fresh.queue_url, MessageBody=event["Body"])
    conn = await fresh.connect()
    try:
        with ConsumerProcess(fresh.env, tmp_path / "c.log", INGEST_CONCURRENCY="3"):
            await eventually(lambda: _depth(sqs, fresh.queue_url), lambda n: n == 0, what="queue empty")
        objs = await objects(conn)
        assert len(objs) == 1 and objs[0]["status"] == "loaded" and objs[0]["rows_loaded"] == 4
        assert await counts(conn) == {"hired_employees": 0, "departments": 0, "jobs": 3, "ingest_rejects": 0}
        assert await conn.fetchval("SELECT job FROM jobs WHERE id = 3") == "Ops again"  # later line wins
        outcomes = sorted(r["outcome"] for r in await conn.fetch("SELECT outcome FROM ingest_events"))
        # each delivery ends as loaded or duplicate (a busy one is postponed and seen again)
        assert outcomes.count("loaded") == 1 and outcomes.count("loaded") + outcomes.count("duplicate") == 3
    finally:
        await conn.close()


async def _depth(sqs: SQSClient, url: str) -> int:
    return queue_depth(sqs, url)


async def test_later_upload_wins_when_events_arrive_in_reverse(fresh: Stack, tmp_path: Path) -> None:
    s3, sqs = fresh.s3(), fresh.sqs()
    s3.put_object(Bucket=fresh.bucket, Key="hired_employees/a.csv", Body=employees_csv(1, 300, "Old"))
    await asyncio.sleep(0.05)  # S3 event times have millisecond precision: make the upload order unambiguous
    s3.put_object(Bucket=fresh.bucket, Key="hired_employees/b.csv", Body=employees_csv(200, 500, "New"))
    first, second = receive_all(sqs, fresh.queue_url, 2)
    first, second = sorted([first, second], key=lambda m: json.loads(m["Body"])["Records"][0]["eventTime"])
    assert "a.csv" in first["Body"] and "b.csv" in second["Body"]
    conn = await fresh.connect()
    try:
        with ConsumerProcess(fresh.env, tmp_path / "c.log", INGEST_CONCURRENCY="1"):
            sqs.send_message(QueueUrl=fresh.queue_url, MessageBody=second["Body"])  # the later upload first
            await eventually(lambda: objects(conn), lambda o: all_done(o, 1), what="b.csv loaded")
            sqs.send_message(QueueUrl=fresh.queue_url, MessageBody=first["Body"])
            await eventually(lambda: objects(conn), lambda o: all_done(o, 2), what="a.csv loaded")
        names = await name_by_id(conn, "hired_employees")
        assert len(names) == 500
        assert names[1] == "Old 1" and names[199] == "Old 199"
        assert all(names[i] == f"New {i}" for i in range(200, 501)), (
            "the earlier upload overwrote the later one"
        )
    finally:
        await conn.close()


async def test_consumer_killed_mid_file_resumes_with_exact_counts(fresh: Stack, tmp_path: Path) -> None:
    n, bad_every = 60_000, 97
    s3 = fresh.s3()
    s3.put_object(
        Bucket=fresh.bucket, Key="hired_employees/big.csv", Body=employees_csv(1, n, bad_every=bad_every)
    )
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
        assert partial["rows_loaded"] + partial["rows_rejected"] == await conn.fetchval(
            "SELECT count(*) FROM hired_employees"
        ) + await conn.fetchval("SELECT count(*) FROM ingest_rejects")
        with ConsumerProcess(fresh.env, tmp_path / "second.log", **knobs) as second:
            obj = (
                await eventually(lambda: objects(conn), lambda o: all_done(o, 1), wait=120, what="resumed")
            )[0]
            assert "resuming" in second.log()
        assert obj["status"] == "loaded"
        assert (obj["rows_loaded"], obj["rows_rejected"]) == (n - bad, bad)
        assert await counts(conn) == {
            "hired_employees": n - bad,
            "departments": 0,
            "jobs": 0,
            "ingest_rejects": bad,
        }
    finally:
        await conn.close()


async def test_poison_message_reaches_the_dead_letter_queue(stack: Stack, tmp_path: Path) -> None:
    own = stack.isolated(max_receive_count=2)
    await stack.reset_data()
    sqs = own.sqs()
    sqs.send_message(QueueUrl=own.queue_url, MessageBody="this is not an S3 event {")
    sqs.send_message(QueueUrl=own.queue_url, MessageBody=json.dumps({"Records": [{"eventSource": "aws:s3"}]}))
    with ConsumerProcess(own.env, tmp_path / "c.log"):
        await eventually(lambda: _depth(sqs, own.dlq_url), lambda d: d == 2, what="2 messages in the DLQ")
        await eventually(lambda: _depth(sqs, own.queue_url), lambda d: d == 0, what="main queue empty")
    conn = await own.connect()
    try:
        assert await conn.fetchval("SELECT count(*) FROM ingest_events WHERE outcome = 'undecodable'") >= 2
    finally:
        await conn.close()


async def test_unreadable_and_unroutable_objects_are_marked_failed(fresh: Stack, tmp_path: Path) -> None:
    s3 = fresh.s3()
    s3.put_object(Bucket=fresh.bucket, Key="misc/salaries.csv", Body=b"1,2\n")
    s3.put_object(Bucket=fresh.bucket, Key="notes/readme.txt", Body=b"not csv\n")
    s3.put_object(Bucket=fresh.bucket, Key="jobs/gone.csv", Body=b"1,Dev\n")
    versions = s3.list_object_versions(Bucket=fresh.bucket, Prefix="jobs/gone.csv")["Versions"]
    for v in versions:
        s3.delete_object(Bucket=fresh.bucket, Key="jobs/gone.csv", VersionId=v["VersionId"])
    conn = await fresh.connect()
    try:
        with ConsumerProcess(fresh.env, tmp_path / "c.log") as consumer:
            objs = await eventually(lambda: objects(conn), lambda o: all_done(o, 2), what="2 failed objects")
            await eventually(
                lambda: conn.fetchval(
                    "SELECT count(*) FROM ingest_events"
                    " WHERE outcome = 'ignored' AND key = 'notes/readme.txt'"
                ),
                lambda n: n == 1,
                what="the .txt ignored",
            )
        by_key = {o["key"]: o for o in objs}
        assert by_key["misc/salaries.csv"]["status"] == "failed"
        assert "no table for key" in by_key["misc/salaries.csv"]["error"]
        assert by_key["jobs/gone.csv"]["status"] == "failed"
        assert "no longer" in by_key["jobs/gone.csv"]["error"]
        assert "not a .csv key" in consumer.log()
    finally:
        await conn.close()


async def test_two_consumers_given_the_same_object_apply_it_once(fresh: Stack, tmp_path: Path) -> None:
    s3, sqs = fresh.s3(), fresh.sqs()
    s3.put_object(
        Bucket=fresh.bucket, Key="hired_employees/x.csv", Body=employees_csv(1, 20_000, bad_every=50)
    )
    (event,) = receive_all(sqs, fresh.queue_url, 1)
    for _ in range(4):
        sqs.send_message(QueueUrl=fresh.queue_url, MessageBody=event["Body"])
    conn = await fresh.connect()
    try:
        knobs = {"INGEST_BATCH_ROWS": "1000", "INGEST_CONCURRENCY": "2"}
        with (
            ConsumerProcess(fresh.env, tmp_path / "a.log", **knobs),
            ConsumerProcess(fresh.env, tmp_path / "b.log", **knobs),
        ):
            await eventually(
                lambda: _depth(sqs, fresh.queue_url), lambda n: n == 0, what="4 deliveries handled"
            )
        (obj,) = await objects(conn)
        assert (obj["status"], obj["rows_loaded"], obj["rows_rejected"]) == ("loaded", 20_000 - 400, 400)
        assert await counts(conn) == {
            "hired_employees": 19_600,
            "departments": 0,
            "jobs": 0,
            "ingest_rejects": 400,
        }
    finally:
        await conn.close()


async def test_sigterm_drains_and_hands_back_unfinished_work(fresh: Stack, tmp_path: Path) -> None:
    n = 80_000
    fresh.s3().put_object(Bucket=fresh.bucket, Key="hired_employees/long.csv", Body=employees_csv(1, n))
    conn = await fresh.connect()
    knobs = {"INGEST_BATCH_ROWS": "200", "INGEST_DRAIN_SECONDS": "0"}
    try:
        first = ConsumerProcess(fresh.env, tmp_path / "first.log", **knobs).start()
        await eventually(
            lambda: objects(conn), lambda o: bool(o) and o[0]["batches"] >= 2, what="file started"
        )
        started = time.monotonic()
        first.signal(signal.SIGTERM)
        assert first.wait(30) == 0
        took = time.monotonic() - started
        log = first.log()
        assert "draining" in log and "handing message back" in log and "consumer stopped" in log
        assert (await objects(conn))[0]["status"] == "processing"
        # The message was handed back (visibility 0): a second consumer picks it up at once and finishes.
        with ConsumerProcess(fresh.env, tmp_path / "second.log"):
            (obj,) = await eventually(
                lambda: objects(conn), lambda o: all_done(o, 1), wait=120, what="finished"
            )
        assert obj["status"] == "loaded" and obj["rows_loaded"] == n
        assert await conn.fetchval("SELECT count(*) FROM hired_employees") == n
        print(f"SIGTERM to exit: {took:.2f}s")
    finally:
        await conn.close()


@pytest.mark.parametrize("table", ["departments", "jobs"])
async def test_replay_rebuilds_a_table_from_the_bucket(fresh: Stack, tmp_path: Path, table: str) -> None:
    s3 = fresh.s3()
    s3.put_object(Bucket=fresh.bucket, Key=f"{table}/one.csv", Body=b"1,A\n2,B\n")
    await asyncio.sleep(0.05)
    s3.put_object(Bucket=fresh.bucket, Key=f"{table}/two.csv", Body=b"2,B2\n3,C\nx,bad\n")
    conn = await fresh.connect()
    try:
        with ConsumerProcess(fresh.env, tmp_path / "c.log"):
            await eventually(lambda: objects(conn), lambda o: all_done(o, 2), what="2 files")
        before = await name_by_id(conn, table)
        assert before == {1: "A", 2: "B2", 3: "C"}
        await conn.execute(f"DELETE FROM {table}")
        await conn.execute(f"INSERT INTO {table} VALUES (99, 'stray', 0, 0)")
        report = await replay(fresh.env, table)
        assert (report.objects, report.rows_loaded, report.rows_rejected) == (2, 4, 1)
        assert await name_by_id(conn, table) == before
        assert await conn.fetchval("SELECT count(*) FROM ingest_rejects") == 1
        assert not await conn.fetchval(f"SELECT to_regclass('{table}__replay') IS NOT NULL")
    finally:
        await conn.close()


async def test_same_key_overwritten_and_events_reversed(fresh: Stack, tmp_path: Path) -> None:
    """Two versions of one key; the older version's event arrives last and is applied from that
    version (found by its ETag, since moto's events carry no versionId), without undoing the newer."""
    s3, sqs = fresh.s3(), fresh.sqs()
    s3.put_object(Bucket=fresh.bucket, Key="jobs.csv", Body=b"1,Old one\n2,Old two\n")
    await asyncio.sleep(0.05)
    s3.put_object(Bucket=fresh.bucket, Key="jobs.csv", Body=b"2,New two\n3,New three\n")
    old, new = sorted(
        receive_all(sqs, fresh.queue_url, 2), key=lambda m: json.loads(m["Body"])["Records"][0]["eventTime"]
    )
    conn = await fresh.connect()
    try:
        with ConsumerProcess(fresh.env, tmp_path / "c.log", INGEST_CONCURRENCY="1"):
            sqs.send_message(QueueUrl=fresh.queue_url, MessageBody=new["Body"])
            await eventually(lambda: objects(conn), lambda o: all_done(o, 1), what="new version loaded")
            sqs.send_message(QueueUrl=fresh.queue_url, MessageBody=old["Body"])
            objs = await eventually(
                lambda: objects(conn), lambda o: all_done(o, 2), what="old version loaded"
            )
        assert [o["status"] for o in objs] == ["loaded", "loaded"]
        assert [o["rows_loaded"] for o in objs] == [2, 2]  # each version read as it was uploaded
        assert await name_by_id(conn, "jobs") == {
            1: "Old one",
            2: "New two",
            3: "New three",
        }
        versions = await conn.fetch("SELECT version FROM ingest_objects ORDER BY id")
        assert len({v["version"] for v in versions}) == 2
    finally:
        await conn.close()


async def test_replay_while_a_consumer_keeps_loading(fresh: Stack, tmp_path: Path) -> None:
    """A file arriving during a replay waits for the swap, then lands in the rebuilt table."""
    s3 = fresh.s3()
    s3.put_object(Bucket=fresh.bucket, Key="hired_employees/a.csv", Body=employees_csv(1, 30_000, "A"))
    conn = await fresh.connect()
    try:
        with ConsumerProcess(fresh.env, tmp_path / "c.log", INGEST_BATCH_ROWS="1000"):
            await eventually(lambda: objects(conn), lambda o: all_done(o, 1), what="a.csv loaded")
            replay = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.cli",
                "replay",
                "--table",
                "hired_employees",
                env={**os.environ, **fresh.env, "HIRING_LOG_FORMAT": "json"},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            s3.put_object(
                Bucket=fresh.bucket, Key="hired_employees/b.csv", Body=employees_csv(20_001, 50_000, "B")
            )
            _, err = await asyncio.wait_for(replay.communicate(), 120)
            assert replay.returncode == 0, err.decode()[-2000:]
            await eventually(lambda: objects(conn), lambda o: all_done(o, 2), wait=120, what="b.csv loaded")
        names = await name_by_id(conn, "hired_employees")
        assert len(names) == 50_000
        assert names[1] == "A 1" and names[20_000] == "A 20000"
        # b.csv was uploaded after a.csv: its rows win wherever the ids overlap, replayed or not
        assert all(names[i] == f"B {i}" for i in range(20_001, 50_001))
    finally:
        await conn.close()


async def test_a_file_that_keeps_failing_is_given_up_from_the_ledger(stack: Stack, tmp_path: Path) -> None:
    """A persistent failure (here: the target table is missing) is retried, then given up by the
    ledger (attempts without progress), marked failed with its last error: never left processing,
    never a message parked in the DLQ with the file half-applied, even past maxReceiveCount."""
    own = stack.isolated(max_receive_count=2)
    await stack.reset_data()
    conn = await own.connect()
    try:
        await conn.execute("ALTER TABLE jobs RENAME TO jobs_away")
        own.s3().put_object(Bucket=own.bucket, Key="jobs/x.csv", Body=b"1,Dev\n")
        sqs = own.sqs()
        with ConsumerProcess(own.env, tmp_path / "c.log", INGEST_MAX_STALLS="3") as consumer:
            await eventually(
                lambda: objects(conn), lambda o: bool(o) and o[0]["status"] == "failed", what="given up"
            )
            await eventually(lambda: _depth(sqs, own.queue_url), lambda d: d == 0, what="main queue empty")
            assert consumer.log().count("message failed; it will be retried") == 3
        (obj,) = await objects(conn)
        assert obj["rows_loaded"] == 0 and obj["attempts"] == 3  # nothing half-applied
        assert obj["error"].startswith("given up after 3 attempts without progress")
        assert 'relation "jobs" does not exist' in obj["error"]
        assert await _depth(sqs, own.dlq_url) == 0
    finally:
        await conn.execute("ALTER TABLE IF EXISTS jobs_away RENAME TO jobs")
        await conn.close()


async def test_event_delivered_again_after_its_version_was_retracted_changes_nothing(
    fresh: Stack, tmp_path: Path
) -> None:
    """moto sends two events for one upload; the second, postponed while the first loads, can come
    back after the version was deleted: it names a retracted version, not a new failed one."""
    s3, sqs = fresh.s3(), fresh.sqs()
    s3.put_object(Bucket=fresh.bucket, Key="jobs.csv", Body=b"1,Dev\n2,QA\n")
    (event,) = receive_all(sqs, fresh.queue_url, 1)
    sqs.send_message(QueueUrl=fresh.queue_url, MessageBody=event["Body"])
    conn = await fresh.connect()
    try:
        with ConsumerProcess(fresh.env, tmp_path / "c.log"):
            await eventually(lambda: objects(conn), lambda o: all_done(o, 1), what="jobs.csv loaded")
            (version,) = s3.list_object_versions(Bucket=fresh.bucket, Prefix="jobs.csv")["Versions"]
            s3.delete_object(Bucket=fresh.bucket, Key="jobs.csv", VersionId=version["VersionId"])
            await eventually(
                lambda: objects(conn), lambda o: [x["status"] for x in o] == ["retracted"], what="retracted"
            )
            late = sqs.send_message(QueueUrl=fresh.queue_url, MessageBody=event["Body"])["MessageId"]
            outcome = await eventually(
                lambda: conn.fetchval("SELECT outcome FROM ingest_events WHERE message_id = $1", late),
                lambda o: o is not None,
                what="the late delivery handled",
            )
        assert outcome == "duplicate"
        objs = await objects(conn)
        assert [(o["status"], o["error"]) for o in objs] == [("retracted", None)]
        assert await counts(conn) == {"hired_employees": 0, "departments": 0, "jobs": 0, "ingest_rejects": 0}
    finally:
        await conn.close()
