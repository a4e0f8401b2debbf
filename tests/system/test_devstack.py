"""The local stack itself: embedded PostgreSQL, moto's S3 + SQS, provisioning and migrations."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path
from urllib.parse import unquote_plus

import msgspec
import pytest

from services.dev.localaws import MotoServer
from services.dev.postgres import EmbeddedPostgres
from shared.config import load_settings
from shared.db import DatabaseUnavailable, connect, migrate, migrations
from tests.system.stack import Stack


def _uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("Uid:", 1)[1].split()[0])


def _family(pid: int) -> set[int]:
    """`pid` and its children (a postmaster's backends and workers)."""
    found = {pid}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_postgres_runs_unprivileged_and_takes_password_over_tcp_and_socket(tmp_path: Path) -> None:
    with EmbeddedPostgres(tmp_path / "pg") as pg:
        assert pg.pid is not None
        # initdb and postgres refuse root: as root the server runs as a service account
        assert _uid(pg.pid) != 0 if os.geteuid() == 0 else _uid(pg.pid) == os.geteuid()
        db = load_settings(pg.env(), service_name="tests").db
        conn = await connect(db)
        try:
            assert await conn.fetchval("SELECT current_user") == "hiring"
            assert await conn.fetchval("SHOW server_encoding") == "UTF8"
            assert await conn.fetchval("SELECT datcollate FROM pg_database WHERE datname = 'hiring'") == "C"
        finally:
            await conn.close()
        with pytest.raises(DatabaseUnavailable, match="password authentication failed"):
            await connect(msgspec.structs.replace(db, password="wrong"))
        # a unix socket, by its port and by RDS_ENDPOINT=<socket dir> alone (which means port 5432)
        by_dir = load_settings({**pg.env(), "RDS_ENDPOINT": str(pg.socket_dir)}, service_name="tests").db
        for socket_db in (msgspec.structs.replace(db, host=str(pg.socket_dir)), by_dir):
            conn = await connect(socket_db)
            try:
                assert await conn.fetchval("SELECT inet_server_addr()") is None  # not TCP
            finally:
                await conn.close()


async def test_postgres_restarts_on_its_data_and_stop_leaves_no_process(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg")
    pg.start()
    conn = await connect(load_settings(pg.env(), service_name="tests").db)
    await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')")
    await conn.close()
    assert pg.pid is not None
    family = _family(pg.pid)
    assert len(family) > 1  # checkpointer, walwriter, ...
    password = pg.password
    pg.stop()
    pg.stop()  # idempotent
    assert not [pid for pid in family if _alive(pid)]

    again = EmbeddedPostgres(tmp_path / "pg")
    again.start()
    try:
        assert again.password == password
        conn = await connect(load_settings(again.env(), service_name="tests").db)
        assert await conn.fetchval("SELECT v FROM kept") == "still here"
        await conn.close()
    finally:
        again.stop()
    assert again.pid is None


async def test_migrate_is_idempotent_when_four_connections_race(stack: Stack) -> None:
    probe = f"migrate_probe_{uuid.uuid4().hex[:8]}"
    admin = await stack.connect()
    await admin.execute(f'CREATE DATABASE "{probe}"')
    db = msgspec.structs.replace(stack.settings().db, database=probe)
    try:
        conns = await asyncio.gather(*(connect(db) for _ in range(4)))
        try:
            first = await asyncio.gather(*(migrate(c) for c in conns))
            assert sorted(name for applied in first for name in applied) == [m[1] for m in migrations()]
            assert await asyncio.gather(*(migrate(c) for c in conns)) == [[], [], [], []]
            tables = {r["tablename"] for r in await conns[0].fetch("SELECT tablename FROM pg_tables")}
            assert {"departments", "jobs", "hired_employees", "ingest_objects"} <= tables
        finally:
            await asyncio.gather(*(c.close() for c in conns))
    finally:
        await admin.execute(f'DROP DATABASE "{probe}"')
        await admin.close()


async def test_put_object_yields_one_object_created_event(fresh: Stack) -> None:
    key, body = "jobs/a b+c.csv", b"1,Engineer\n"
    await asyncio.to_thread(fresh.s3().put_object, Bucket=fresh.bucket, Key=key, Body=body)
    sqs = fresh.sqs()
    resp = await asyncio.to_thread(
        sqs.receive_message, QueueUrl=fresh.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=5
    )
    messages = resp.get("Messages", [])
    assert len(messages) == 1  # and no s3:TestEvent: provision drained it
    (record,) = json.loads(messages[0]["Body"])["Records"]
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["s3"]["bucket"]["name"] == fresh.bucket
    assert unquote_plus(record["s3"]["object"]["key"]) == key
    assert record["s3"]["object"]["size"] == len(body)


async def test_fresh_gives_each_test_its_own_queue_and_empty_tables(stack: Stack, fresh: Stack) -> None:
    assert fresh.queue_url != stack.queue_url and fresh.bucket != stack.bucket
    assert fresh.env["SQS_QUEUE_URL"] == fresh.queue_url and fresh.env["HIRING_DLQ_URL"] == fresh.dlq_url
    conn = await fresh.connect()
    try:
        assert await conn.fetchval("SELECT count(*) FROM ingest_objects") == 0
    finally:
        await conn.close()


async def test_message_received_more_than_max_receive_count_lands_in_dlq(stack: Stack) -> None:
    own = await asyncio.to_thread(stack.isolated, max_receive_count=1, visibility_timeout=0)
    sqs = own.sqs()
    await asyncio.to_thread(sqs.send_message, QueueUrl=own.queue_url, MessageBody="poison")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        await asyncio.to_thread(sqs.receive_message, QueueUrl=own.queue_url, WaitTimeSeconds=1)
        dead = await asyncio.to_thread(sqs.receive_message, QueueUrl=own.dlq_url, WaitTimeSeconds=0)
        if dead.get("Messages"):
            assert dead["Messages"][0]["Body"] == "poison"
            return
    pytest.fail("the message never reached the dead-letter queue")


def test_moto_server_stop_leaves_no_process() -> None:
    moto = MotoServer()
    url = moto.start()
    assert url.startswith("http://127.0.0.1:")
    proc = moto._proc
    assert proc is not None and proc.poll() is None
    moto.stop()
    moto.stop()
    assert proc.poll() is not None
