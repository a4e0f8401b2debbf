"""`hiring dlq list` / `redrive` against a real queue whose redrive policy moved messages to the DLQ
after a real consumer handled them: why each is there, and a redrive that drops what loaded meanwhile,
sends the rest back (loaded once), and leaves undecodable bodies unless named."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.system.consumers import ROOT, ConsumerProcess, eventually, objects
from tests.system.stack import Stack


def hiring_dlq(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "dlq", *args],
        env={**os.environ, **env, "COLUMNS": "300"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _s3_event(bucket: str, key: str, etag: str) -> str:
    return json.dumps(
        {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "eventName": "ObjectCreated:Put",
                    "eventTime": "2026-01-01T00:00:00.000Z",
                    "s3": {"bucket": {"name": bucket}, "object": {"key": key, "eTag": etag, "size": 10}},
                }
            ]
        }
    )


def _depth(stack: Stack, url: str) -> int:
    attrs = stack.sqs().get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


async def test_dlq_list_says_why_and_redrive_is_safe(fresh: Stack, stack: Stack, tmp_path: Path) -> None:
    own = await asyncio.to_thread(stack.isolated, 1, 2)  # the DLQ after one receive
    s3, sqs = own.s3(), own.sqs()
    sqs.send_message(QueueUrl=own.queue_url, MessageBody="this is not an S3 event")
    loaded_etag = s3.put_object(Bucket=own.bucket, Key="jobs/a.csv", Body=b"1,Analyst\n")["ETag"]
    with ConsumerProcess(own.env, tmp_path / "consumer.log"):
        conn = await own.connect()
        try:
            await eventually(lambda: objects(conn), lambda o: len(o) == 1 and o[0]["status"] == "loaded")
        finally:
            await conn.close()

        def moved() -> int:
            return _depth(own, own.dlq_url)

        deadline = time.monotonic() + 60
        while await asyncio.to_thread(moved) < 1:  # the consumer's next receive moves it over
            assert time.monotonic() < deadline, "the undecodable message never reached the DLQ"
            await asyncio.sleep(0.5)

    # a message for the file that has loaded since, and one for a file never applied
    sqs.send_message(QueueUrl=own.dlq_url, MessageBody=_s3_event(own.bucket, "jobs/a.csv", loaded_etag))
    d_etag = s3.put_object(Bucket=own.bucket, Key="departments/d.csv", Body=b"1,Sales\n")["ETag"]
    await asyncio.sleep(1)
    sqs.purge_queue(QueueUrl=own.queue_url)  # its live event is gone: only the DLQ's copy is left
    sqs.send_message(QueueUrl=own.dlq_url, MessageBody=_s3_event(own.bucket, "departments/d.csv", d_etag))

    listed = hiring_dlq("list", env=own.env)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    out = listed.stdout
    assert "3 message(s)" in out
    assert "undecodable" in out and "last handled" in out  # from the event log the consumer wrote
    assert "jobs/a.csv: loaded since (1 rows): safe to drop" in out
    assert "departments/d.csv: never applied" in out, out
    # without HIRING_DLQ_URL the DLQ comes from the queue's RedrivePolicy; listing left all three
    derived = hiring_dlq("list", env={k: v for k, v in own.env.items() if k != "HIRING_DLQ_URL"})
    assert derived.returncode == 0 and "3 message(s)" in derived.stdout, derived.stdout + derived.stderr

    redriven = hiring_dlq("redrive", "--all", env=own.env)
    assert redriven.returncode == 0, redriven.stdout + redriven.stderr
    assert "dropped, its file loaded meanwhile" in redriven.stdout
    assert "sent back to the ingest queue" in redriven.stdout
    assert "left in the DLQ" in redriven.stdout
    assert await asyncio.to_thread(_depth, own, own.dlq_url) == 1  # the undecodable one
    with ConsumerProcess(own.env, tmp_path / "consumer2.log"):
        conn = await own.connect()
        try:
            found = await eventually(
                lambda: objects(conn), lambda o: len(o) == 2 and all(x["status"] == "loaded" for x in o)
            )
            assert [(o["key"], o["rows_loaded"]) for o in found] == [
                ("jobs/a.csv", 1),
                ("departments/d.csv", 1),
            ]
            assert await conn.fetchval("SELECT count(*) FROM departments") == 1
        finally:
            await conn.close()

    garbage = [line for line in hiring_dlq("list", env=own.env).stdout.splitlines() if "undecodable" in line]
    message_id = garbage[0].split(":", 1)[0]
    named = hiring_dlq("redrive", message_id, env=own.env)
    assert named.returncode == 0 and "sent back" in named.stdout, named.stdout + named.stderr
    assert await asyncio.to_thread(_depth, own, own.dlq_url) == 0
    missing = hiring_dlq("redrive", "no-such-id", env=own.env)
    assert missing.returncode == 2 and "no such message" in missing.stdout
