"""The hires projection (migration 005) against a recount of hired_employees, under every write path:
plain statements, both ingest load paths (direct COPY and stage + merge) through real consumers,
replay's swap, concurrent consumers with a concurrent folder, `hiring migrate` and `hiring check`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg

from services.query import sql
from services.query.projection import FoldPolicy, fold_forever
from shared.db import create_pool, migrate, migrations
from tests.system.consumers import ConsumerProcess, all_done, eventually, objects, replay
from tests.system.stack import Stack

if TYPE_CHECKING:
    from aiohttp import web
    from aiohttp.test_utils import TestClient

    from tests.system.query_fixtures import Seed

pytest_plugins = ("tests.system.query_fixtures",)

# A file's rows: (id, datetime, department_id, job_id); several years and quarters, 5 departments.
Row = tuple[int, str, int, int]


def rows_for(first: int, last: int, shift: int) -> list[Row]:
    out = []
    for i in range(first, last + 1):
        k = i + shift
        year = 2019 + k % 4
        month = 1 + (k * 7) % 12
        out.append((i, f"{year}-{month:02d}-{1 + k % 28:02d}T{k % 24:02d}:30:00Z", 1 + k % 5, 1 + k % 7))
    return out


def csv_of(rows: list[Row]) -> bytes:
    return "".join(f"{i},Name {i},{dt},{d},{j}\n" for i, dt, d, j in rows).encode()


def expected_cells(*files: list[Row]) -> Counter[tuple[int, int, int, int]]:
    """(year, quarter, department, job) -> hires, later files replacing earlier rows by id."""
    latest: dict[int, Row] = {}
    for rows in files:
        for r in rows:
            latest[r[0]] = r
    cells: Counter[tuple[int, int, int, int]] = Counter()
    for _, dt, d, j in latest.values():
        year, month = int(dt[:4]), int(dt[5:7])
        cells[(year, (month - 1) // 3 + 1, d, j)] += 1
    return cells


async def projection_cells(conn: asyncpg.Connection) -> Counter[tuple[int, int, int, int]]:
    """What a metric reads: folded cells plus unfolded deltas, summed per cell."""
    rows = await conn.fetch("SELECT year, quarter, department_id, job_id, hires AS n FROM hires_projected")
    return Counter({(r["year"], r["quarter"], r["department_id"], r["job_id"]): r["n"] for r in rows})


async def assert_consistent(conn: asyncpg.Connection) -> sql.ProjectionReport:
    report = await sql.check_projection(conn)
    assert report.ok, report
    return report


# ---- plain statements -------------------------------------------------------------------------


async def test_every_statement_kind_keeps_the_projection_exact(seed: Seed, db: asyncpg.Connection) -> None:
    await seed.employees([(i, "x", f"2021-0{1 + i % 9}-01T00:00:00Z", 1 + i % 3, 1) for i in range(1, 31)])
    await assert_consistent(db)
    # an update that moves rows across quarter, year, department and job, and one that moves nothing
    await db.execute(
        "UPDATE hired_employees SET datetime = datetime - interval '1 year', department_id = 9 WHERE id <= 10"
    )
    await db.execute("UPDATE hired_employees SET name = 'renamed' WHERE id > 20")
    # an upsert that inserts some rows and replaces others (as the ingest merge does)
    await seed.employees([(i, "y", "2022-12-31T23:59:59Z", 2, 2) for i in range(25, 41)])
    await db.execute("DELETE FROM hired_employees WHERE id % 4 = 0")
    assert await projection_cells(db) == Counter(
        {
            (r["y"], r["q"], r["d"], r["j"]): r["n"]
            for r in await db.fetch(
                "SELECT extract(year FROM datetime AT TIME ZONE 'UTC')::int AS y,"
                " extract(quarter FROM datetime AT TIME ZONE 'UTC')::int AS q,"
                " department_id AS d, job_id AS j, count(*) AS n FROM hired_employees GROUP BY 1, 2, 3, 4"
            )
        }
    )
    await assert_consistent(db)
    # folding changes no answer, and leaves no cell at 0
    assert await sql.fold(db, 0, timedelta(0)) > 0
    assert await db.fetchval("SELECT count(*) FROM hires_deltas") == 0
    report = await assert_consistent(db)
    assert report.cells == await db.fetchval(
        "SELECT count(*) FROM hires_cells"
        " WHERE (q1, q2, q3, q4) <> (0, 0, 0, 0) AND least(q1, q2, q3, q4) >= 0"
    )
    await db.execute("DELETE FROM hired_employees WHERE department_id = 9")
    await sql.fold(db, 0, timedelta(0))
    assert await db.fetchval("SELECT count(*) FROM hires_cells WHERE department_id = 9") == 0
    await assert_consistent(db)
    # a fold below its thresholds does nothing
    await seed.employees([(1000, "z", "2021-01-01T00:00:00Z", 1, 1)])
    assert await sql.fold(db, 10**9, timedelta(days=1)) == 0
    assert await db.fetchval("SELECT count(*) FROM hires_deltas") == 1
    # TRUNCATE fires no DELETE trigger: the projection empties all the same, deltas included
    await db.execute("TRUNCATE hired_employees")
    assert await projection_cells(db) == Counter()
    await assert_consistent(db)


async def test_quarters_are_utc_whatever_the_writing_session_time_zone(db: asyncpg.Connection) -> None:
    for zone in ("Pacific/Kiritimati", "America/St_Johns"):  # UTC+14, UTC-3:30 (-2:30 in summer)
        await db.execute(f"SET TIME ZONE '{zone}'")
        await db.execute("TRUNCATE hired_employees")
        await db.execute(
            "INSERT INTO hired_employees VALUES"
            " (1, 'a', '2020-12-31T23:59:59Z', 1, 1, 0, 0), (2, 'b', '2021-01-01T00:00:00Z', 1, 1, 0, 0),"
            " (3, 'c', '2021-03-31T23:59:59.999999Z', 1, 1, 0, 0),"
            " (4, 'd', '2021-04-01T00:00:00Z', 1, 1, 0, 0),"
            " (5, 'e', '2021-09-30T22:00:00-02:00', 1, 1, 0, 0)"  # 2021-10-01T00:00Z: Q4
        )
        assert await projection_cells(db) == Counter(
            {(2020, 4, 1, 1): 1, (2021, 1, 1, 1): 2, (2021, 2, 1, 1): 1, (2021, 4, 1, 1): 1}
        ), zone
        await db.execute(
            "UPDATE hired_employees SET datetime = datetime + interval '1 microsecond' WHERE id = 3"
        )
        assert await projection_cells(db) == Counter(
            {(2020, 4, 1, 1): 1, (2021, 1, 1, 1): 1, (2021, 2, 1, 1): 2, (2021, 4, 1, 1): 1}
        ), zone
        await assert_consistent(db)
    await db.execute("RESET TIME ZONE")


async def test_deltas_are_stored_uncompressed(db: asyncpg.Connection) -> None:
    # migration 010: a delta lives about a second; compressing its arrays cost the load CPU for nothing
    storage = await db.fetch(
        "SELECT attname, attstorage::text FROM pg_attribute"
        " WHERE attrelid = 'hires_deltas'::regclass AND attnum > 0 AND atttypid = 'int4[]'::regtype"
    )
    assert {r["attname"]: r["attstorage"] for r in storage} == dict.fromkeys(
        ("department_ids", "job_ids", "q1", "q2", "q3", "q4"), "e"
    )


async def test_a_transaction_rolled_back_leaves_no_trace(seed: Seed, db: asyncpg.Connection) -> None:
    await seed.employees([(1, "a", "2021-05-01T00:00:00Z", 1, 1)])
    with contextlib.suppress(RuntimeError):
        async with db.transaction():
            await db.execute("DELETE FROM hired_employees")
            await db.execute(
                "INSERT INTO hired_employees VALUES (2, 'b', '2021-06-01T00:00:00Z', 1, 1, 0, 0)"
            )
            raise RuntimeError("roll back")
    assert await projection_cells(db) == Counter({(2021, 2, 1, 1): 1})


# ---- migrate and `hiring check` -----------------------------------------------------------------


async def test_migrate_rebuilds_the_projection_of_existing_rows(seed: Seed, db: asyncpg.Connection) -> None:
    await seed.employees([(i, "x", "2021-08-01T00:00:00Z", 1, 1 + i % 2) for i in range(1, 11)])
    # as if the rows had been loaded before the projection's current shape (migration 008) existed
    await db.execute("DELETE FROM hires_deltas; DELETE FROM hires_cells")
    assert not (await sql.check_projection(db)).ok
    # ... and every migration after it: later ones change what 008 creates (009, 010)
    later = [name for _, name, _ in migrations() if name >= "008_hires_pairs.sql"]
    await db.execute("DELETE FROM schema_migrations WHERE name >= '008_hires_pairs.sql'")
    assert await migrate(db) == later
    assert await projection_cells(db) == Counter({(2021, 3, 1, 1): 5, (2021, 3, 1, 2): 5})
    await assert_consistent(db)


def _check(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "check", *args],
        env={**os.environ, **stack.env, "HIRING_LOG_FORMAT": "json"},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_hiring_check_finds_a_wrong_cell_and_repairs_it(
    fresh: Stack, seed: Seed, db: asyncpg.Connection
) -> None:
    await seed.employees([(i, "x", "2021-02-01T00:00:00Z", 3, 4) for i in range(1, 6)])
    ok = await asyncio.to_thread(_check, fresh)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "hired_employees rows: 5; projection total: 5" in ok.stdout and "projection OK" in ok.stdout
    await sql.fold(db, 0, timedelta(0))
    await db.execute("UPDATE hires_cells SET q1 = q1 + 2")
    bad = await asyncio.to_thread(_check, fresh)
    assert bad.returncode == 1
    assert "year 2021 Q1 department 3 job 4: projection 7, recount 5" in bad.stdout
    assert "projection DIFFERS" in bad.stdout
    repaired = await asyncio.to_thread(_check, fresh, "--repair")
    assert repaired.returncode == 1 and "rebuilt from hired_employees: 1 cells" in repaired.stdout
    again = await asyncio.to_thread(_check, fresh)
    assert again.returncode == 0, again.stdout


# ---- real ingestion -----------------------------------------------------------------------------


async def _load(fresh: Stack, tmp_path: Path, files: list[tuple[str, bytes]], **knobs: str) -> None:
    s3 = fresh.s3()
    conn = await fresh.connect()
    try:
        with ConsumerProcess(fresh.env, tmp_path / "c.log", **knobs):
            for key, body in files:
                s3.put_object(Bucket=fresh.bucket, Key=key, Body=body)
                await asyncio.sleep(0.05)  # unambiguous upload order (S3 event times are in ms)
            objs = await eventually(
                lambda: objects(conn), lambda o: all_done(o, len(files)), what=f"{len(files)} files"
            )
        assert {o["status"] for o in objs} == {"loaded"}, objs
    finally:
        await conn.close()


async def test_both_load_paths_and_replay_keep_the_projection_exact(
    fresh: Stack, tmp_path: Path, db: asyncpg.Connection
) -> None:
    first = rows_for(1, 3000, 0)  # a new table: direct COPY
    second = rows_for(2001, 4500, 11)  # 1000 ids met again: staged and merged, each moving cell
    await _load(
        fresh,
        tmp_path,
        [("hired_employees/a.csv", csv_of(first)), ("hired_employees/b.csv", csv_of(second))],
        INGEST_BATCH_ROWS="400",
    )
    want = expected_cells(first, second)
    assert await projection_cells(db) == want
    await assert_consistent(db)
    # the merge path ran: ids of both files hold the second file's values
    assert await db.fetchval("SELECT name FROM hired_employees WHERE id = 2500") == "Name 2500"
    assert str(await db.fetchval("SELECT datetime FROM hired_employees WHERE id = 2500"))[:4] == str(
        2019 + (2500 + 11) % 4
    )
    # replay rebuilds into a trigger-less copy and swaps it in (TRUNCATE + INSERT): the projection
    # follows, and a stray row written meanwhile outside the bucket's history disappears from both
    await db.execute("INSERT INTO hired_employees VALUES (999999, 'stray', now(), 1, 1, 0, 0)")
    await replay(fresh.env, "hired_employees", seconds=180)
    assert await projection_cells(db) == want
    await assert_consistent(db)


async def test_concurrent_consumers_and_a_concurrent_folder_keep_it_exact(
    fresh: Stack, tmp_path: Path, db: asyncpg.Connection
) -> None:
    files = [rows_for(1 + 700 * n, 2500 + 700 * n, 5 * n) for n in range(6)]  # overlapping id ranges
    s3 = fresh.s3()
    pool = await create_pool(fresh.settings().db, min_size=1, max_size=2)
    folder = asyncio.create_task(
        fold_forever(pool, FoldPolicy(interval=0.01, min_cells=0, max_age=timedelta(0)))
    )
    try:
        knobs = {"INGEST_BATCH_ROWS": "300", "INGEST_CONCURRENCY": "3"}
        with (
            ConsumerProcess(fresh.env, tmp_path / "a.log", **knobs),
            ConsumerProcess(fresh.env, tmp_path / "b.log", **knobs),
        ):
            for n, rows in enumerate(files):
                s3.put_object(Bucket=fresh.bucket, Key=f"hired_employees/f{n}.csv", Body=csv_of(rows))
                await asyncio.sleep(0.05)
            objs = await eventually(lambda: objects(db), lambda o: all_done(o, len(files)), what="6 files")
        assert {o["status"] for o in objs} == {"loaded"}, objs
    finally:
        folder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await folder
        await pool.close()
    assert await projection_cells(db) == expected_cells(*files)
    await assert_consistent(db)


# ---- freshness of the cached metrics while writes commit ------------------------------------------


async def test_a_request_after_a_commit_sees_it_while_writes_keep_coming(
    client: TestClient[web.Request, web.Application], seed: Seed, fresh: Stack
) -> None:
    await seed.departments([(1, "Ops")])
    await seed.jobs([(1, "Clerk")])
    writer_conn = await fresh.connect()
    committed = 0
    stop = asyncio.Event()

    async def write() -> None:
        nonlocal committed
        i = 0
        while not stop.is_set():
            i += 1
            await writer_conn.execute(
                "INSERT INTO hired_employees VALUES ($1, 'x', '2021-03-03T00:00:00Z', 1, 1, 0, 0)", i
            )
            committed = i  # set only once the commit returned

    async def read(n: int) -> list[tuple[int, int]]:
        seen = []
        for _ in range(n):
            floor = committed
            response = await client.get("/metrics/hires?year=2021")
            assert response.status == 200
            body = await response.json()
            got = body[0]["Q1"] if body else 0
            seen.append((floor, got))
        return seen

    writer = asyncio.create_task(write())
    try:
        results = await asyncio.gather(*(read(25) for _ in range(8)))
    finally:
        stop.set()
        await writer
        await writer_conn.close()
    pairs = [p for r in results for p in r]
    assert all(got >= floor for floor, got in pairs), [p for p in pairs if p[1] < p[0]][:5]
    assert max(floor for floor, _ in pairs) > 0
