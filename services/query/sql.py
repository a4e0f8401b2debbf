"""All SQL of the query service, each statement next to the thin function that runs it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

import asyncpg
import msgspec

from services.query.metrics import PairHires
from services.query.schemas import ReasonCount, Reject

if TYPE_CHECKING:
    from shared.db import DbConnection


class YearData(msgspec.Struct, frozen=True):
    """One consistent read of a year's hires, and the snapshot it was read under."""

    snapshot: str  # pg_snapshot as text, for `changed_since`
    pairs: list[PairHires]
    department_count: int


# ---- metrics ------------------------------------------------------------------------------------

# Hires per (department id, job id) in one UTC year, by UTC quarter, from the hires projection
# (migrations 005 and 008: one cell per year, department and job, with its four quarters): the
# year's folded cells plus the deltas not yet folded, so the cost is the
# answer's size (and the small unfolded backlog), never the employees table's. Only pairs whose
# department and job both exist.
_YEAR_PAIRS = """
WITH cells AS (
    SELECT department_id, job_id, q1, q2, q3, q4 FROM hires_cells WHERE year = $1
    UNION ALL
    SELECT u.department_id, u.job_id, u.q1, u.q2, u.q3, u.q4
    FROM hires_deltas d,
         unnest(d.department_ids, d.job_ids, d.q1::bigint[], d.q2::bigint[], d.q3::bigint[], d.q4::bigint[])
         AS u(department_id, job_id, q1, q2, q3, q4)
    WHERE d.year = $1
), per_pair AS (
    SELECT department_id, job_id, sum(q1)::bigint AS q1, sum(q2)::bigint AS q2,
           sum(q3)::bigint AS q3, sum(q4)::bigint AS q4
    FROM cells
    GROUP BY department_id, job_id
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


async def read_year(conn: DbConnection, year: int) -> YearData:
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


# ---- the hires projection (migration 005) -------------------------------------------------------

# Folds the committed deltas into hires_cells when their backlog has at least $1 cells or is at
# least $2 old; returns the delta rows folded (0 when another session is folding).
_FOLD = "SELECT fold_hires_deltas($1::int, $2::interval)"

_REBUILD = "SELECT rebuild_hires_projection()"

# Every cell where the projection (folded cells plus unfolded deltas) and a recount of
# hired_employees disagree, in key order, at most $1 of them.
_PROJECTION_DIFF = """
WITH projected AS (
    SELECT year, quarter, department_id, job_id, hires FROM hires_projected
), counted AS (
    SELECT date_part('year', q AT TIME ZONE 'UTC')::int AS year,
           date_part('quarter', q AT TIME ZONE 'UTC')::smallint AS quarter,
           department_id, job_id, n AS hires
    FROM (
        SELECT date_trunc('quarter', datetime, 'UTC') AS q, department_id, job_id, count(*) AS n
        FROM hired_employees GROUP BY 1, 2, 3
    ) g
)
SELECT year, quarter, department_id, job_id,
       coalesce(p.hires, 0) AS projected, coalesce(c.hires, 0) AS counted
FROM projected p FULL JOIN counted c USING (year, quarter, department_id, job_id)
WHERE p.hires IS DISTINCT FROM c.hires
ORDER BY year, quarter, department_id, job_id
LIMIT $1
"""

_PROJECTION_TOTALS = """
SELECT (SELECT count(*) FROM hired_employees) AS employees,
       (SELECT coalesce(sum(hires), 0) FROM hires_projected) AS projected,
       (SELECT count(*) FROM hires_cells) AS cells,
       (SELECT count(*) FROM hires_cells
        WHERE least(q1, q2, q3, q4) < 0 OR (q1, q2, q3, q4) = (0, 0, 0, 0)) AS bad_cells,
       (SELECT count(*) FROM hires_deltas) AS deltas
"""


class CellDiff(msgspec.Struct, frozen=True):
    """One cell where the projection and a recount disagree."""

    year: int
    quarter: int
    department_id: int
    job_id: int
    projected: int
    counted: int


class ProjectionReport(msgspec.Struct, frozen=True):
    """The projection against a recount of hired_employees, read under one snapshot."""

    employees: int  # rows in hired_employees
    projected: int  # hires the projection holds in all
    cells: int  # folded cells: (year, department, job) with four quarter counts
    bad_cells: int  # folded cells with a quarter below 0 or all four at 0 (the folder deletes those)
    deltas: int  # delta rows not yet folded
    diffs: list[CellDiff]  # the first disagreeing cells, in key order

    @property
    def ok(self) -> bool:
        return not self.diffs and self.bad_cells == 0 and self.employees == self.projected


async def fold(conn: asyncpg.Connection | asyncpg.Pool, min_cells: int, max_age: timedelta) -> int:
    folded: int = await conn.fetchval(_FOLD, min_cells, max_age)
    return folded


async def rebuild_projection(conn: asyncpg.Connection) -> int:
    """Recount the projection from hired_employees (waits for writers in flight); returns its cells."""
    async with conn.transaction():
        made: int = await conn.fetchval(_REBUILD)
    return made


async def check_projection(conn: asyncpg.Connection, max_diffs: int = 20) -> ProjectionReport:
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        totals = await conn.fetchrow(_PROJECTION_TOTALS)
        rows = await conn.fetch(_PROJECTION_DIFF, max_diffs)
    assert totals is not None  # an aggregate without GROUP BY: always one row
    return ProjectionReport(
        employees=totals["employees"],
        projected=int(totals["projected"]),
        cells=totals["cells"],
        bad_cells=totals["bad_cells"],
        deltas=totals["deltas"],
        diffs=[CellDiff(**dict(r)) for r in rows],
    )


# ---- uploads ------------------------------------------------------------------------------------

_INSERT_UPLOAD = """
INSERT INTO uploads (id, table_name, bucket, key, filename, size_bytes, trace_id)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""

_DELETE_UPLOADS = "DELETE FROM uploads WHERE id = ANY($1::uuid[])"

_REJECTS = """
SELECT line, raw, reason FROM ingest_rejects
WHERE object_id = $1
ORDER BY line
LIMIT $2 OFFSET $3
"""


# ---- the load history: uploads and every ledger row (one per object version) ------------------

# An upload's public id: its UUID (for the upload's latest ledger row), else obj-<ledger id>.
_ITEM = """
CASE WHEN o.id IS NULL THEN u.id::text
     WHEN o.upload_id IS NOT NULL AND NOT EXISTS (
         SELECT 1 FROM ingest_objects n WHERE n.upload_id = o.upload_id AND n.id > o.id
     ) THEN o.upload_id::text
     ELSE 'obj-' || o.id END AS id,
coalesce(u.created_at, o.event_time) AS sort_at,
coalesce(o.table_name, u.table_name) AS table_name,
coalesce(o.bucket, u.bucket) AS bucket,
coalesce(o.key, u.key) AS key,
o.version, o.etag, u.key AS upload_key, u.filename,
coalesce(o.size_bytes, u.size_bytes) AS size_bytes,
coalesce(u.created_at, o.first_seen_at) AS created_at,
o.id AS object_id, o.status, o.rows_loaded, o.rows_rejected, o.error,
coalesce(o.trace_id, u.trace_id) AS trace_id, o.started_at, o.finished_at, o.lines_done, o.bytes_done
"""

_BY_UPLOAD = f"""
SELECT {_ITEM}
FROM uploads u
LEFT JOIN LATERAL (
    SELECT * FROM ingest_objects i WHERE i.upload_id = u.id ORDER BY i.id DESC LIMIT 1
) o ON true
WHERE u.id = $1
"""

_BY_LEDGER_UPLOAD_ID = f"""
SELECT {_ITEM}
FROM ingest_objects o LEFT JOIN uploads u ON u.id = o.upload_id
WHERE o.upload_id = $1
ORDER BY o.id DESC
LIMIT 1
"""

_BY_LEDGER_ID = f"""
SELECT {_ITEM}
FROM ingest_objects o LEFT JOIN uploads u ON u.id = o.upload_id
WHERE o.id = $1
"""

# Every ledger row, plus the uploads no consumer has seen yet (queued).
_LIST_UPLOADS = f"""
WITH items AS (
    SELECT {_ITEM}
    FROM ingest_objects o LEFT JOIN uploads u ON u.id = o.upload_id
    UNION ALL
    SELECT {_ITEM}
    FROM uploads u LEFT JOIN ingest_objects o ON false
    WHERE NOT EXISTS (SELECT 1 FROM ingest_objects i WHERE i.upload_id = u.id)
)
SELECT * FROM items
WHERE ($1::text IS NULL OR coalesce(status, 'queued') = $1)
  AND ($2::text IS NULL OR table_name = $2)
  AND ($3::timestamptz IS NULL OR (sort_at, id) < ($3, $4::text))
ORDER BY sort_at DESC, id DESC
LIMIT $5
"""

# Rejects grouped by the kind of problem: the quoted values a reason repeats from the row ('8.0',
# "O'Brien") and the line numbers and lengths of the reader's reasons become '…' / N.
_REASON_KIND = r"""
regexp_replace(
    regexp_replace(reason, $re$'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"$re$, '…', 'g'),
    '(line|is) [0-9]+', '\1 N', 'g'
)
"""

_REJECT_REASONS = f"""
SELECT kind AS reason, count(*)::int AS count, min(line) AS first_line,
       (array_agg(reason ORDER BY line))[1] AS example
FROM (SELECT {_REASON_KIND} AS kind, line, reason FROM ingest_rejects WHERE object_id = $1) r
GROUP BY kind
ORDER BY count(*) DESC, kind
"""

_REJECTS_ALL = """
SELECT line, raw, reason FROM ingest_rejects
WHERE object_id = $1
ORDER BY line
OFFSET $2 LIMIT $3
"""


class NewUpload(msgspec.Struct, frozen=True):
    id: uuid.UUID
    table: str
    bucket: str
    key: str
    filename: str | None
    size_bytes: int
    trace_id: str | None = None  # of the POST /upload request, when tracing is on


async def insert_uploads(conn: DbConnection | asyncpg.Pool, uploads: Sequence[NewUpload]) -> None:
    await conn.executemany(
        _INSERT_UPLOAD,
        [(u.id, u.table, u.bucket, u.key, u.filename, u.size_bytes, u.trace_id) for u in uploads],
    )


async def delete_uploads(conn: DbConnection | asyncpg.Pool, ids: Sequence[uuid.UUID]) -> None:
    await conn.execute(_DELETE_UPLOADS, list(ids))


class UploadRow(msgspec.Struct, frozen=True):
    """One item of the load history: an upload (POST /upload, presigned) and/or the ledger row of an
    object version. The ledger fields are None while an upload is queued (not yet seen by a consumer).

    `id` is the public id: the upload's UUID when the object carries one (metadata `upload-id`) and
    this is that upload's latest ledger row, else `obj-<ledger id>`. `sort_at` orders the history:
    when the upload was accepted, or the S3 event time of a file put into the bucket otherwise."""

    id: str
    sort_at: datetime
    table_name: str | None
    bucket: str
    key: str
    version: str | None
    etag: str | None
    upload_key: str | None  # the key POST /upload (or a presigned upload) wrote, if any
    filename: str | None
    size_bytes: int | None
    created_at: datetime
    object_id: int | None
    status: str | None  # the ledger's status (CHECK constraint), None while queued
    rows_loaded: int | None
    rows_rejected: int | None
    error: str | None
    trace_id: str | None
    started_at: datetime | None
    finished_at: datetime | None
    lines_done: int | None
    bytes_done: int | None


async def upload_status(conn: asyncpg.Connection | asyncpg.Pool, upload_id: uuid.UUID) -> UploadRow | None:
    """The upload with this UUID and its latest ledger row, or the latest ledger row of an object
    whose metadata names this UUID (a file put into the bucket with an `upload-id`)."""
    row = await conn.fetchrow(_BY_UPLOAD, upload_id)
    if row is None:
        row = await conn.fetchrow(_BY_LEDGER_UPLOAD_ID, upload_id)
    return None if row is None else UploadRow(**dict(row))


async def upload_by_ledger_id(conn: asyncpg.Connection | asyncpg.Pool, ledger_id: int) -> UploadRow | None:
    row = await conn.fetchrow(_BY_LEDGER_ID, ledger_id)
    return None if row is None else UploadRow(**dict(row))


async def list_uploads(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    status: str | None,
    table: str | None,
    after: UploadRow | None,
    limit: int,
) -> list[UploadRow]:
    """Newest first (sort_at, then id, both descending), strictly after the item `after`."""
    rows = await conn.fetch(
        _LIST_UPLOADS,
        status,
        table,
        None if after is None else after.sort_at,
        None if after is None else after.id,
        limit,
    )
    return [UploadRow(**dict(r)) for r in rows]


async def reject_reasons(conn: asyncpg.Connection | asyncpg.Pool, object_id: int) -> list[ReasonCount]:
    rows = await conn.fetch(_REJECT_REASONS, object_id)
    return [ReasonCount(**dict(r)) for r in rows]


async def reject_pages(
    conn: DbConnection, object_id: int, offset: int, limit: int | None, page: int = 5000
) -> AsyncIterator[list[Reject]]:
    """The rejects from `offset` (at most `limit`), by line, in pages read through one cursor (the
    caller holds `conn` in a transaction)."""
    cursor = await conn.cursor(_REJECTS_ALL, object_id, offset, limit)
    while rows := await cursor.fetch(page):
        yield [Reject(line=r["line"], raw=r["raw"], reason=r["reason"]) for r in rows]


async def rejects(
    conn: asyncpg.Connection | asyncpg.Pool, object_id: int, limit: int, offset: int
) -> list[Reject]:
    rows = await conn.fetch(_REJECTS, object_id, limit, offset)
    return [Reject(line=r["line"], raw=r["raw"], reason=r["reason"]) for r in rows]


# ---- health -------------------------------------------------------------------------------------


async def ping(conn: asyncpg.Connection | asyncpg.Pool) -> None:
    await conn.fetchval("SELECT 1")


# ---- batch rows (POST /tables/{table}/rows) -----------------------------------------------------

# The latest ledger row of an upload (a batch is one object version, so one row unless replayed).
_OUTCOME = """
SELECT id, status, rows_loaded, rows_rejected, error FROM ingest_objects
WHERE upload_id = $1 ORDER BY id DESC LIMIT 1
"""

_REJECT_LINES = "SELECT line, reason FROM ingest_rejects WHERE object_id = $1 ORDER BY line"


class Outcome(msgspec.Struct, frozen=True):
    object_id: int
    status: Literal["processing", "loaded", "failed"]
    rows_loaded: int
    rows_rejected: int
    error: str | None


async def upload_outcome(conn: DbConnection | asyncpg.Pool, upload_id: uuid.UUID) -> Outcome | None:
    """What the consumer has made of an upload so far; None before it has seen it."""
    row = await conn.fetchrow(_OUTCOME, upload_id)
    if row is None:
        return None
    return Outcome(row["id"], row["status"], row["rows_loaded"], row["rows_rejected"], row["error"])


async def reject_lines(conn: DbConnection | asyncpg.Pool, object_id: int) -> list[tuple[int, str]]:
    return [(r["line"], r["reason"]) for r in await conn.fetch(_REJECT_LINES, object_id)]


# Idempotency keys (migration 006). `claim_key` runs in the caller's transaction: it inserts the key
# or, when another transaction holds it uncommitted, waits for that one (bounded by lock_timeout).
_FORGET_EXPIRED_KEY = "DELETE FROM idempotency_keys WHERE key = $1 AND created_at < now() - $2::interval"
_FORGET_EXPIRED = """
DELETE FROM idempotency_keys WHERE key IN (
    SELECT key FROM idempotency_keys WHERE created_at < now() - $1::interval LIMIT 100
)
"""
_CLAIM_KEY = """
INSERT INTO idempotency_keys (key, request_sha256, batch_id, table_name) VALUES ($1, $2, $3, $4)
ON CONFLICT (key) DO NOTHING
RETURNING key
"""
_KEY_ROW = """
SELECT request_sha256, batch_id, table_name, status_code, response FROM idempotency_keys WHERE key = $1
"""
_STORE_ANSWER = "UPDATE idempotency_keys SET status_code = $2, response = $3 WHERE key = $1"
_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', $1, true)"


class KeyRow(msgspec.Struct, frozen=True):
    request_sha256: bytes
    batch_id: uuid.UUID
    table_name: str
    status_code: int | None
    response: bytes | None


async def claim_key(
    conn: DbConnection,
    key: str,
    digest: bytes,
    batch_id: uuid.UUID,
    table: str,
    *,
    ttl: timedelta,
    lock_timeout_ms: int,
) -> KeyRow | None:
    """Inside a transaction: None when this request now owns `key` (its row stays uncommitted until
    the caller commits), else the committed row of the request that owns it. Raises
    asyncpg.LockNotAvailableError when the owner holds it longer than `lock_timeout_ms`."""
    await conn.execute(_LOCK_TIMEOUT, f"{lock_timeout_ms}ms")
    await conn.execute(_FORGET_EXPIRED_KEY, key, ttl)
    await conn.execute(_FORGET_EXPIRED, ttl)
    if await conn.fetchval(_CLAIM_KEY, key, digest, batch_id, table) is not None:
        return None
    row = await conn.fetchrow(_KEY_ROW, key)
    if row is None:  # the owner's row expired and was deleted between the two statements
        raise asyncpg.LockNotAvailableError("idempotency key changed hands; retry")
    return KeyRow(**dict(row))


async def store_answer(conn: DbConnection, key: str, status: int, response: bytes) -> None:
    await conn.execute(_STORE_ANSWER, key, status, response)
