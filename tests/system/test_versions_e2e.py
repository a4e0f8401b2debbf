"""Versions that share content, with events that carry no versionId (moto and other emulators)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.system.consumers import ConsumerProcess, eventually, name_by_id, objects, replay
from tests.system.stack import Stack


async def test_a_revert_to_earlier_content_wins_also_after_replay(fresh: Stack, tmp_path: Path) -> None:
    """A, then B, then A again on one key, consumed after all three uploads: the table holds A.

    Every event names its version by ETag only, and the newest version with A's ETag is the third;
    the first event for A resolves to it too, so the third event, later, moves it after B."""
    s3 = fresh.s3()
    a, b = b"1,Dev\n2,QA\n", b"1,B-Dev\n2,B-QA\n3,B-only\n"
    for body in (a, b, a):
        s3.put_object(Bucket=fresh.bucket, Key="jobs/x.csv", Body=body)
        await asyncio.sleep(0.05)  # S3 event times have millisecond precision
    conn = await fresh.connect()
    try:
        with ConsumerProcess(fresh.env, tmp_path / "c.log", INGEST_CONCURRENCY="1"):
            await eventually(
                lambda: conn.fetchval("SELECT count(*) FROM ingest_events"), lambda n: n >= 3, what="3 events"
            )
            await eventually(
                lambda: objects(conn),
                lambda o: bool(o) and all(x["status"] == "loaded" for x in o),
                what="all versions loaded",
            )
        expected = {1: "Dev", 2: "QA", 3: "B-only"}  # id 3 only ever came from B
        assert await name_by_id(conn, "jobs") == expected
        assert (await replay(fresh.env, "jobs")).objects == 3
        assert await name_by_id(conn, "jobs") == expected
    finally:
        await conn.close()
