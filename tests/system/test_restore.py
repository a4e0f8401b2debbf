"""Restores (CONTRACT §6) end to end, with a real `hiring ingest` process applying the snapshot
object: the table becomes exactly the backup's rows, value for value; later uploads apply on top, and
`hiring replay` rebuilds the same; a file uploaded just before a restore does not survive it, whatever
order the consumer meets them in."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.system.consumers import ConsumerProcess, all_done, eventually, objects, replay
from tests.system.test_backup import DEPARTMENTS, EMPLOYEES, JOBS, hiring, table_rows

if TYPE_CHECKING:
    import asyncpg

    from tests.system.query_fixtures import Client
    from tests.system.stack import Stack

pytest_plugins = ("tests.system.query_fixtures",)


def _as_json(name: str, rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    from shared.dictionary import TABLES

    columns = TABLES[name].column_names
    return [
        {c: (v.isoformat() if hasattr(v, "isoformat") else v) for c, v in zip(columns, row, strict=True)}
        for row in rows
    ]


async def _insert(client: Client, name: str, rows: list[tuple[Any, ...]]) -> None:
    resp = await client.post(f"/tables/{name}/rows", json=_as_json(name, rows))
    body = await resp.json()
    assert resp.status == 201 and body["rows_rejected"] == 0, body


def _employees_csv(first: int, last: int) -> bytes:
    return "".join(f"{i},Big {i},2021-03-01T00:00:00Z,1,1\n" for i in range(first, last + 1)).encode()


async def test_restore_replaces_the_table_and_replay_keeps_later_uploads(
    client: Client, fresh: Stack, db: asyncpg.Connection, tmp_path: Path
) -> None:
    with ConsumerProcess(fresh.env, tmp_path / "consumer.log"):
        for name, rows in (("hired_employees", EMPLOYEES), ("departments", DEPARTMENTS), ("jobs", JOBS)):
            await _insert(client, name, rows)
        made = await (await client.post("/backups")).json()
        # changes after the backup: one row replaced, one added
        await _insert(client, "jobs", [(1, "changed after the backup"), (99, "added after the backup")])
        resp = await client.post("/tables/jobs/restore", json={"backup": made["id"]})
        restored = await resp.json()
        assert resp.status == 201, restored
        assert (restored["status"], restored["rows"], restored["rows_loaded"]) == ("loaded", 3, 3)
        assert await table_rows(db, "jobs") == sorted(JOBS)
        status = await (await client.get(f"/uploads/{restored['id']}")).json()
        assert status["status"] == "loaded" and status["key"] == f"jobs/restores/{restored['id']}.csv"
        # an upload after the restore applies on top of it, live and in a replay
        await _insert(client, "jobs", [(5, "after the restore")])
        expected = sorted([*JOBS, (5, "after the restore")])
        assert await table_rows(db, "jobs") == expected
        await replay(fresh.env, "jobs", seconds=300)
        assert await table_rows(db, "jobs") == expected

        # every value of every table survives the round trip (timestamps to the microsecond)
        await _insert(client, "hired_employees", [(100, "later", EMPLOYEES[0][2], 1, 1)])
        await _insert(client, "departments", [(1, "renamed")])
        for name in ("hired_employees", "departments"):
            resp = await client.post(f"/tables/{name}/restore", json={"backup": made["id"]})
            assert resp.status == 201, await resp.json()
        assert await table_rows(db, "hired_employees") == sorted(EMPLOYEES)
        assert await table_rows(db, "departments") == sorted(DEPARTMENTS)


async def test_restore_while_a_consumer_loads_the_same_table(
    client: Client, fresh: Stack, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """A big file uploaded just before the restore: in upload order the restore comes last, so the
    table ends as the backup, whichever of the two the consumers finish first."""
    with ConsumerProcess(
        fresh.env, tmp_path / "consumer.log", INGEST_CONCURRENCY="2", INGEST_BATCH_ROWS="2000"
    ):
        await _insert(client, "hired_employees", EMPLOYEES)
        made = await (await client.post("/backups", json={"tables": ["hired_employees"]})).json()
        fresh.s3().put_object(
            Bucket=fresh.bucket, Key="hired_employees/big.csv", Body=_employees_csv(1000, 40_999)
        )
        resp = await client.post("/tables/hired_employees/restore", json={"backup": made["id"]})
        assert resp.status == 201, await resp.json()
        await eventually(lambda: objects(db), lambda o: all_done(o, 3), wait=120, what="all applied")
    assert await table_rows(db, "hired_employees") == sorted(EMPLOYEES)


async def test_restore_from_a_folder_by_the_command(
    client: Client, fresh: Stack, db: asyncpg.Connection, tmp_path: Path
) -> None:
    with ConsumerProcess(fresh.env, tmp_path / "consumer.log"):
        await _insert(client, "departments", DEPARTMENTS)
        folder = tmp_path / "backup"
        made = await asyncio.to_thread(
            hiring, fresh.env, "backup", "--table", "departments", "--to", str(folder)
        )
        assert made.returncode == 0, made.stderr[-3000:]
        await _insert(client, "departments", [(1, "renamed"), (50, "new")])
        done = await asyncio.to_thread(
            hiring, fresh.env, "restore", "--table", "departments", "--from", str(folder), "--wait", "60"
        )
        assert done.returncode == 0, (done.stdout, done.stderr[-3000:])
        assert "restored" in done.stdout
    assert await table_rows(db, "departments") == sorted(DEPARTMENTS)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["tables"]["departments"]["rows"] == len(DEPARTMENTS)
