"""Undo: an object removed from the bucket retracts what it contributed (CONTRACT §2).

Each id the removed version wrote returns to the value of the latest remaining upload that has
that id, or disappears; the ledger says `retracted`; `hiring replay` agrees with live ingestion.
moto sends ObjectRemoved:Delete when the last version of a key is deleted (no event for a delete
marker, nor for one version among several): those cases are checked through replay, which reads
what the bucket shows.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.system.consumers import ConsumerProcess, all_done, eventually, name_by_id, objects, replay
from tests.system.stack import Stack

FIRST_KEPT_STRAY_RETRACTED = {"jobs/first.csv": "loaded", "jobs/stray.csv": "retracted"}


def status_by_key(objs: list[dict[str, Any]]) -> dict[str, str]:
    """Each ledger row's status by object key."""
    return {o["key"]: o["status"] for o in objs}


async def test_deleting_an_upload_reverts_its_ids_to_the_earlier_upload(fresh: Stack, tmp_path: Path) -> None:
    s3 = fresh.s3()
    s3.put_object(Bucket=fresh.bucket, Key="jobs/first.csv", Body=b"1,Dev\n2,QA\n")
    await asyncio.sleep(0.05)
    stray = s3.put_object(Bucket=fresh.bucket, Key="jobs/stray.csv", Body=b"1,WRONG\n3,ALSO WRONG\n")
    conn = await fresh.connect()
    try:
        with ConsumerProcess(fresh.env, tmp_path / "c.log") as consumer:
            await eventually(lambda: objects(conn), lambda o: all_done(o, 2), what="2 files")
            assert await name_by_id(conn, "jobs") == {1: "WRONG", 2: "QA", 3: "ALSO WRONG"}
            # delete exactly that version (what DELETE /uploads/{id} and `hiring retract` do)
            s3.delete_object(Bucket=fresh.bucket, Key="jobs/stray.csv", VersionId=stray["VersionId"])
            await eventually(
                lambda: objects(conn),
                # by key: ledger ids follow the order the consumer took the events up in, and it
                # takes several at once, so the stray file may hold id 1
                lambda o: status_by_key(o) == FIRST_KEPT_STRAY_RETRACTED,
                what="the stray upload retracted",
            )
            # id 1 back to the earlier upload, id 3 gone
            assert await name_by_id(conn, "jobs") == {1: "Dev", 2: "QA"}
            assert "retracted" in consumer.log()
            outcomes = [
                r["outcome"] for r in await conn.fetch("SELECT outcome FROM ingest_events ORDER BY id")
            ]
            assert outcomes.count("retracted") == 1
        # replay agrees with live ingestion, and the retracted version stays retracted
        report = await replay(fresh.env, "jobs")
        assert (report.objects, report.rows_after) == (1, 2)
        assert await name_by_id(conn, "jobs") == {1: "Dev", 2: "QA"}
        assert status_by_key(await objects(conn)) == FIRST_KEPT_STRAY_RETRACTED
    finally:
        await conn.close()


async def test_replay_leaves_out_versions_behind_a_delete_marker(fresh: Stack, tmp_path: Path) -> None:
    s3 = fresh.s3()
    s3.put_object(Bucket=fresh.bucket, Key="jobs/a.csv", Body=b"1,Dev\n2,QA\n")
    await asyncio.sleep(0.05)
    s3.put_object(Bucket=fresh.bucket, Key="jobs/b.csv", Body=b"2,Lead\n")
    await asyncio.sleep(0.05)
    s3.put_object(Bucket=fresh.bucket, Key="jobs/b.csv", Body=b"2,Lead 2\n4,Ops\n")
    conn = await fresh.connect()
    try:
        with ConsumerProcess(fresh.env, tmp_path / "c.log"):
            await eventually(lambda: objects(conn), lambda o: all_done(o, 3), what="3 versions")
        assert await name_by_id(conn, "jobs") == {1: "Dev", 2: "Lead 2", 4: "Ops"}
        s3.delete_object(Bucket=fresh.bucket, Key="jobs/b.csv")  # a delete marker: both versions hidden
        report = await replay(fresh.env, "jobs")
        assert (report.objects, report.retracted) == (1, 2)
        assert await name_by_id(conn, "jobs") == {1: "Dev", 2: "QA"}
        statuses = {(x["key"], x["status"]) for x in await objects(conn)}
        assert statuses == {("jobs/a.csv", "loaded"), ("jobs/b.csv", "retracted")}
    finally:
        await conn.close()


async def test_a_snapshot_replaces_the_table_and_replay_keeps_what_came_after(
    fresh: Stack, tmp_path: Path
) -> None:
    """A restore is a snapshot object in the log (metadata hiring-kind: snapshot): applied as a
    whole-table replacement in one transaction; later uploads apply on top, live and in replay."""
    s3 = fresh.s3()
    s3.put_object(Bucket=fresh.bucket, Key="jobs/a.csv", Body=b"1,Dev\n2,QA\n")
    conn = await fresh.connect()
    try:
        with ConsumerProcess(fresh.env, tmp_path / "c.log"):
            await eventually(lambda: objects(conn), lambda o: all_done(o, 1), what="a.csv")
            await asyncio.sleep(0.05)
            s3.put_object(
                Bucket=fresh.bucket,
                Key="jobs/restores/r1.csv",
                Body=b"2,QA restored\n5,New\n",
                Metadata={"hiring-kind": "snapshot"},
            )
            await eventually(lambda: objects(conn), lambda o: all_done(o, 2), what="the snapshot")
            assert await name_by_id(conn, "jobs") == {2: "QA restored", 5: "New"}
            await asyncio.sleep(0.05)
            s3.put_object(Bucket=fresh.bucket, Key="jobs/b.csv", Body=b"1,Back\n")
            await eventually(lambda: objects(conn), lambda o: all_done(o, 3), what="b.csv")
        after = {1: "Back", 2: "QA restored", 5: "New"}
        assert await name_by_id(conn, "jobs") == after
        kinds = {r["key"]: r["kind"] for r in await conn.fetch("SELECT key, kind FROM ingest_objects")}
        assert kinds["jobs/restores/r1.csv"] == "snapshot"
        report = await replay(fresh.env, "jobs")
        assert report.objects == 3
        assert await name_by_id(conn, "jobs") == after
    finally:
        await conn.close()
