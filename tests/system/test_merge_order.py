"""Upload order under concurrent writers, at the SQL level, on a real PostgreSQL.

The interleaving that wrote earlier rows over later ones (issue 8, case 1), made deterministic:
a merge of an EARLIER file takes its snapshot, then waits on a row of the same id that a LATER file
is writing; the later file's ledger row is registered only after that snapshot; the later file
commits; the earlier merge's ON CONFLICT then meets a row committed after its snapshot. Deciding
"later?" by reading the ledger under the snapshot saw no order for it and overwrote it; the order
on the row itself keeps the later file's values.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import re
from datetime import UTC, datetime, timedelta

import asyncpg

from services.ingest import sql
from services.ingest.order import order_key, order_time
from shared.dictionary import TABLES
from tests.system.consumers import name_by_id
from tests.system.stack import Stack

JOBS = TABLES["jobs"]
T0 = datetime(2021, 7, 1, tzinfo=UTC)


async def _register(
    conn: asyncpg.Connection, key: str, when: datetime, sequencer: str | None = None
) -> tuple[int, str]:
    order = order_key(when, sequencer, key, "v1")
    row = await conn.fetchrow(
        sql.REGISTER_OBJECT, "b", key, "v1", None, sequencer, when, order, "jobs", None, "file"
    )
    assert row is not None
    return int(row["id"]), order


async def _waiting_on_a_lock(conn: asyncpg.Connection, pid: int) -> bool:
    event: str | None = await conn.fetchval(
        "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid
    )
    return event == "Lock"


async def _interleave(
    stack: Stack, early: tuple[datetime, str | None], late: tuple[datetime, str | None]
) -> None:
    """The earlier file's merge meets a row of the later file committed after the merge's snapshot,
    whose ledger row is registered after that snapshot too; the later file's value must stay."""
    admin = await stack.connect()
    earlier = await stack.connect()
    later = await stack.connect()
    try:
        early_id, early_order = await _register(admin, "jobs/early.csv", *early)
        await earlier.execute(sql.create_stage(JOBS))
        late_order = order_key(late[0], late[1], "jobs/late.csv", "v1")
        assert late_order > early_order
        # The later file writes id 1 directly (as a direct COPY does) and keeps its transaction open;
        # its ledger id is the next one the sequence will give.
        late_id = int(await admin.fetchval("SELECT last_value + 1 FROM ingest_objects_id_seq"))
        tx_later = later.transaction()
        await tx_later.start()
        await later.execute(
            "INSERT INTO jobs (id, job, src_object, src_line, src_order) VALUES (1, 'later', $1, 1, $2)",
            late_id,
            order_time(late_order),
        )
        # The earlier file's merge: its snapshot is taken now, then it waits on the later's row.
        tx_early = earlier.transaction()
        await tx_early.start()
        await earlier.copy_records_to_table(
            sql.stage_name(JOBS),
            records=[(1, "earlier", early_id, 1, order_time(early_order))],
            columns=[*JOBS.column_names, *sql.provenance_columns()],
        )
        merging = asyncio.ensure_future(earlier.execute(sql.merge(JOBS)))
        pid = earlier.get_server_pid()
        for _ in range(200):
            if await _waiting_on_a_lock(admin, pid):
                break
            await asyncio.sleep(0.02)
        assert await _waiting_on_a_lock(admin, pid), "the merge should be waiting on the later row"
        # Only now is the later file's ledger row registered (after the merge's snapshot), then it commits.
        registered_id, _ = await _register(admin, "jobs/late.csv", *late)
        assert registered_id == late_id
        await tx_later.commit()
        await asyncio.wait_for(merging, 10)
        await tx_early.commit()
        row = await admin.fetchrow("SELECT job, src_object FROM jobs WHERE id = 1")
        assert row is not None
        assert (row["job"], row["src_object"]) == ("later", late_id)
    finally:
        for conn in (admin, earlier, later):
            await conn.close()


async def test_an_earlier_merge_never_overwrites_a_later_commit_it_cannot_see(fresh: Stack) -> None:
    await _interleave(fresh, (T0, None), (T0 + timedelta(seconds=5), None))


async def test_the_same_at_the_same_instant_where_the_full_keys_decide(fresh: Stack) -> None:
    # same event time: S3's sequencer orders them; the ledger is read with a snapshot of its own
    await _interleave(fresh, (T0, "0A"), (T0, "0B"))


async def test_the_merge_replaces_by_upload_order_then_line(fresh: Stack) -> None:
    conn = await fresh.connect()
    try:
        a_id, a_order = await _register(conn, "jobs/a.csv", T0)
        b_id, b_order = await _register(conn, "jobs/b.csv", T0 + timedelta(milliseconds=1))
        c_id, c_order = await _register(conn, "jobs/c.csv", T0 + timedelta(milliseconds=1), "FF")
        await conn.execute(sql.create_stage(JOBS))
        cols = [*JOBS.column_names, *sql.provenance_columns()]

        async def merge(rows: list[tuple[int, str, int, int, str]]) -> None:
            async with conn.transaction():
                timed = [(i, job, obj, line, order_time(key)) for i, job, obj, line, key in rows]
                await conn.copy_records_to_table(sql.stage_name(JOBS), records=timed, columns=cols)
                await conn.execute(sql.merge(JOBS))

        await merge([(1, "b1", b_id, 1, b_order), (2, "b2", b_id, 2, b_order)])
        # the earlier file, consumed afterwards: loses on both ids; its own later line wins within it
        await merge([(1, "a1", a_id, 1, a_order), (3, "a3", a_id, 3, a_order), (3, "a3'", a_id, 4, a_order)])
        # the later file again (a resumed batch): same or later lines replace
        await merge([(2, "b2 again", b_id, 2, b_order)])
        # c has b's time: the full keys decide (hash of key and version): one of them wins, the same
        # one whatever the order of the merges
        await merge([(2, "c2", c_id, 1, c_order)])
        rows = await name_by_id(conn, "jobs")
        assert (rows[1], rows[3]) == ("b1", "a3'")
        assert rows[2] == ("c2" if c_order > b_order else "b2 again")
    finally:
        await conn.close()


async def test_the_migration_twin_of_the_order_key_agrees_with_python(fresh: Stack) -> None:
    """shared/migrations/004 rewrote existing keys with an SQL twin of order_key: the same function."""
    migration = importlib.resources.files("shared.migrations").joinpath("004_row_order.sql").read_text()
    found = re.search(r"CREATE OR REPLACE FUNCTION order_key_of.*?\$\$;", migration, re.DOTALL)
    assert found is not None
    conn = await fresh.connect()
    try:
        async with conn.transaction():
            await conn.execute(found.group(0))
            cases = [
                (
                    datetime(2021, 7, 27, 16, 2, 8, 123000, tzinfo=UTC),
                    "0055aed6dcd90281e5",
                    "jobs/a.csv",
                    "v1",
                ),
                (
                    datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                    None,
                    "hired_employees/ñandú 2021.csv",
                    "etag:x@y",
                ),
            ]
            for when, seq, key, version in cases:
                twin = await conn.fetchval("SELECT order_key_of($1, $2, $3, $4)", when, seq, key, version)
                assert twin == order_key(when, seq, key, version)
            raise _Rollback
    except _Rollback:
        pass
    finally:
        await conn.close()


class _Rollback(Exception):
    pass
