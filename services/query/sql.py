"""All SQL of the query service, each statement next to the thin function that runs it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

import asyncpg
import msgspec

from services.query.metrics import PairHires
from services.query.schemas import Reject


class YearData(msgspec.Struct, frozen=True):
    """One consistent read of a year's hires, and the snapshot it was read under."""

    snapshot: str  # pg_snapshot as text, for `changed_since`
    pairs: list[PairHires]
    department_count: int


# ---- metrics ------------------------------------------------------------------------------------

# Hires per (department id, job id) in one UTC year, by UTC quarter; only employees whose department
# and job both exist. Aggregates the year's employees first (index range on datetime), then joins
# the few resulting pairs to their names.
_YEAR_PAIRS = """
WITH bounds AS (SELECT make_timestamptz($1::int, 1, 1, 0, 0, 0, 'UTC') AS lo),
per_pair AS (
    SELECT e.department_id, e.job_id,
           count(*) FILTER (WHERE q = 1) AS q1,
           count(*) FILTER (WHERE q = 2) AS q2,
           count(*) FILTER (WHERE q = 3) AS q3,
           count(*) FILTER (WHERE q = 4) AS q4
    FROM (
        SELECT h.department_id, h.job_id,
               extract(quarter FROM h.datetime AT TIME ZONE 'UTC')::int AS q
        FROM hired_employees h, bounds b
        WHERE h.datetime >= b.lo AND h.datetime < b.lo + interval '1 year'
    ) e
    GROUP BY e.department_id, e.job_id
)
SELECT p.department_id, d.department, p.job_id, j.job, p.q1, p.q2, p.q3, p.q4
FROM per_pair p
JOIN departments d ON d.id = p.department_id
JOIN jobs j ON j.id = p.job_id
"""

_DEPARTMENT_COUNT = "SELECT count(*) FROM departments"

_SNAPSHOT = "SELECT pg_current_snapshot()::text"

# True when a write committed that the snapshot `$1` could not see (see migration 002_query.sql).
_CHANGED_SINCE = """
SELECT EXISTS (
    SELECT 1 FROM data_changes
    WHERE xid >= pg_snapshot_xmin($1::text::pg_snapshot)
      AND NOT pg_visible_in_snapshot(xid, $1::text::pg_snapshot)
)
"""


async def read_year(conn: asyncpg.Connection, year: int) -> YearData:
    """The year's (department, job) aggregates and the department count, read under one snapshot."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        snapshot: str = await conn.fetchval(_SNAPSHOT)
        rows = await conn.fetch(_YEAR_PAIRS, year)
        departments: int = await conn.fetchval(_DEPARTMENT_COUNT)
    pairs = [
        PairHires(
            r["department_id"], r["department"], r["job_id"], r["job"], r["q1"], r["q2"], r["q3"], r["q4"]
        )
        for r in rows
    ]
    return YearData(snapshot=snapshot, pairs=pairs, department_count=departments)


async def changed_since(conn: asyncpg.Connection | asyncpg.Pool, snapshot: str) -> bool:
    changed: bool = await conn.fetchval(_CHANGED_SINCE, snapshot)
    return changed


# ---- uploads ------------------------------------------------------------------------------------

_INSERT_UPLOAD = """
INSERT INTO uploads (id, table_name, bucket, key, filename, size_bytes, trace_id)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""

_DELETE_UPLOADS = "DELETE FROM uploads WHERE id = ANY($1::uuid[])"

# The upload and its latest ledger row (by ledger id), if the consumer has seen it yet.
_UPLOAD_STATUS = """
SELECT u.id, u.table_name, u.key, u.filename, u.size_bytes, u.created_at,
       o.id AS object_id, o.status, o.rows_loaded, o.rows_rejected, o.error,
       coalesce(o.trace_id, u.trace_id) AS trace_id, o.started_at, o.finished_at
FROM uploads u
LEFT JOIN LATERAL (
    SELECT * FROM ingest_objects i WHERE i.upload_id = u.id ORDER BY i.id DESC LIMIT 1
) o ON true
WHERE u.id = $1
"""

_REJECTS = """
SELECT line, raw, reason FROM ingest_rejects
WHERE object_id = $1
ORDER BY line
LIMIT $2 OFFSET $3
"""


class NewUpload(msgspec.Struct, frozen=True):
    id: uuid.UUID
    table: str
    bucket: str
    key: str
    filename: str | None
    size_bytes: int
    trace_id: str | None = None  # of the POST /upload request, when tracing is on


async def insert_uploads(conn: asyncpg.Connection | asyncpg.Pool, uploads: Sequence[NewUpload]) -> None:
    await conn.executemany(
        _INSERT_UPLOAD,
        [(u.id, u.table, u.bucket, u.key, u.filename, u.size_bytes, u.trace_id) for u in uploads],
    )


async def delete_uploads(conn: asyncpg.Connection | asyncpg.Pool, ids: Sequence[uuid.UUID]) -> None:
    await conn.execute(_DELETE_UPLOADS, list(ids))


class UploadRow(msgspec.Struct, frozen=True):
    """An upload and its latest ledger row (the ledger fields are None while it is queued)."""

    id: uuid.UUID
    table_name: str
    key: str
    filename: str | None
    size_bytes: int | None
    created_at: datetime
    object_id: int | None
    status: Literal["processing", "loaded", "failed"] | None  # the ledger's CHECK constraint
    rows_loaded: int | None
    rows_rejected: int | None
    error: str | None
    trace_id: str | None
    started_at: datetime | None
    finished_at: datetime | None


async def upload_status(conn: asyncpg.Connection | asyncpg.Pool, upload_id: uuid.UUID) -> UploadRow | None:
    row = await conn.fetchrow(_UPLOAD_STATUS, upload_id)
    return None if row is None else UploadRow(**dict(row))


async def rejects(
    conn: asyncpg.Connection | asyncpg.Pool, object_id: int, limit: int, offset: int
) -> list[Reject]:
    rows = await conn.fetch(_REJECTS, object_id, limit, offset)
    return [Reject(line=r["line"], raw=r["raw"], reason=r["reason"]) for r in rows]


# ---- health -------------------------------------------------------------------------------------


async def ping(conn: asyncpg.Connection | asyncpg.Pool) -> None:
    await conn.fetchval("SELECT 1")
