"""Every SQL statement of the ingest service."""

from __future__ import annotations

from typing import Final

from shared.dictionary import TABLES, Table

# ---- the ledger -------------------------------------------------------------------------------

REGISTER_OBJECT: Final = """
INSERT INTO ingest_objects
    (bucket, key, version, etag, sequencer, event_time, order_key, table_name, size_bytes)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (bucket, key, version) DO UPDATE SET bucket = excluded.bucket
RETURNING id, status, order_key
"""

RECORD_EVENT: Final = """
INSERT INTO ingest_events (message_id, event_name, bucket, key, version, etag, sequencer, event_time,
                           object_id, outcome, detail)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
"""

# Advisory locks in the two-key space, under namespaces of our own, so they cannot collide with
# other users of single-key advisory locks (the migration lock is one).
OBJECT_LOCKS: Final = 0x4849_0001  # key 2: the ledger id of an object version
TABLE_LOCKS: Final = 0x4849_0002  # key 2: table_lock_id(table)
TRY_LOCK_OBJECT: Final = f"SELECT pg_try_advisory_lock({OBJECT_LOCKS}, ($1::bigint % 2147483648)::int)"
UNLOCK_OBJECT: Final = f"SELECT pg_advisory_unlock({OBJECT_LOCKS}, ($1::bigint % 2147483648)::int)"

# Each consumer holds its table's lock shared (session level) while it applies a file; `hiring
# replay` holds it exclusively while it rebuilds the table, so consumers wait at the start of a file
# instead of writing into a table about to be swapped out.
TABLE_LOCK_SHARED: Final = f"SELECT pg_advisory_lock_shared({TABLE_LOCKS}, $1::int)"
TABLE_UNLOCK_SHARED: Final = f"SELECT pg_advisory_unlock_shared({TABLE_LOCKS}, $1::int)"
TABLE_LOCK_EXCLUSIVE: Final = f"SELECT pg_advisory_lock({TABLE_LOCKS}, $1::int)"
TABLE_UNLOCK_EXCLUSIVE: Final = f"SELECT pg_advisory_unlock({TABLE_LOCKS}, $1::int)"

LOAD_OBJECT: Final = """
SELECT id, status, lines_done, bytes_done, rows_loaded, rows_rejected, batches, order_key, table_name,
       upload_id, trace_id
FROM ingest_objects WHERE id = $1
"""

START_OBJECT: Final = """
UPDATE ingest_objects
SET status = 'processing', attempts = attempts + 1, started_at = coalesce(started_at, now()),
    upload_id = coalesce($2, upload_id), trace_id = coalesce($3, trace_id), error = NULL
WHERE id = $1
"""

CHECKPOINT_FOR_UPDATE: Final = (
    "SELECT lines_done, bytes_done, status FROM ingest_objects WHERE id = $1 FOR UPDATE"
)

ADVANCE_OBJECT: Final = """
UPDATE ingest_objects
SET lines_done = $2, bytes_done = $3, rows_loaded = rows_loaded + $4, rows_rejected = rows_rejected + $5,
    batches = batches + 1
WHERE id = $1
"""

FINISH_OBJECT: Final = """
UPDATE ingest_objects SET status = 'loaded', finished_at = now(), size_bytes = coalesce($2, size_bytes)
WHERE id = $1
"""

FAIL_OBJECT: Final = """
UPDATE ingest_objects SET status = 'failed', finished_at = now(), error = $2 WHERE id = $1
"""

# ---- replay -----------------------------------------------------------------------------------

RESET_OBJECT: Final = """
UPDATE ingest_objects
SET status = 'processing', lines_done = 0, bytes_done = 0, rows_loaded = 0, rows_rejected = 0, batches = 0,
    error = NULL, started_at = NULL, finished_at = NULL
WHERE id = $1
"""
DELETE_REJECTS: Final = "DELETE FROM ingest_rejects WHERE object_id = $1"
OBJECTS_OF_TABLE: Final = """
SELECT id, bucket, key, version, order_key FROM ingest_objects
WHERE table_name = $1 AND bucket = $2 ORDER BY order_key
"""


def count_rows(table: str) -> str:
    return f"SELECT count(*) FROM {table}"


def create_shadow(table: str, shadow: str) -> list[str]:
    """The empty copy `hiring replay` rebuilds a table into."""
    return [f"DROP TABLE IF EXISTS {shadow}", f"CREATE TABLE {shadow} (LIKE {table} INCLUDING ALL)"]


def swap_in_shadow(table: str, shadow: str) -> list[str]:
    """Run in one transaction: readers see the old rows or the new ones, never neither."""
    return [
        f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE",
        f"TRUNCATE {table}",
        f"INSERT INTO {table} SELECT * FROM {shadow}",
        f"DROP TABLE {shadow}",
    ]


def table_lock_id(table: str) -> int:
    """A stable advisory-lock id per table (not Python's salted hash)."""
    return sorted(TABLES).index(table)


# ---- batches ----------------------------------------------------------------------------------


def stage_name(table: Table) -> str:
    return f"stage_{table.name}"


def create_stage(table: Table) -> str:
    # A temporary table per connection, emptied at each commit: the COPY target of one batch that
    # must be merged. Its columns are a batch's COPY columns (services/ingest/batches.py).
    cols = ", ".join(f"{c.name} {c.type}" for c in table.columns)
    return (
        f"CREATE TEMP TABLE IF NOT EXISTS {stage_name(table)} ({cols}, src_object bigint, src_line integer)"
        " ON COMMIT DELETE ROWS"
    )


# The batches' COPY text may hold timestamps without an offset, which the contract reads as UTC.
SESSION_UTC: Final = "SET TIME ZONE 'UTC'"

# The first of the given columns ($2) that leads an index of table $1 other than its primary key:
# batches are ordered by it, which makes that index cheaper to insert into (batches._reorder).
ORDER_COLUMN: Final = """
SELECT a.attname::text FROM pg_index i
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
WHERE i.indrelid = $1::text::regclass AND NOT i.indisprimary AND a.attname = ANY($2::text[])
ORDER BY array_position($2::text[], a.attname::text) LIMIT 1
"""


def merge(table: Table, target: str | None = None) -> str:
    """Upsert one staged batch into `target` (the table itself, or its replay copy).

    Within the batch the last line per id wins (DISTINCT ON ... ORDER BY src_line DESC). Against
    the table, a row is replaced only by a later line of the same object or by an object that
    sorts later in upload order ($2 is this object's order_key), so events consumed in any order
    converge on the same table.
    """
    target = target or table.name
    names = table.column_names
    cols = ", ".join(names)
    sets = ", ".join(f"{c} = excluded.{c}" for c in names[1:])
    return f"""
INSERT INTO {target} AS t ({cols}, src_object, src_line)
SELECT DISTINCT ON (id) {cols}, $1::bigint, src_line FROM {stage_name(table)} ORDER BY id, src_line DESC
ON CONFLICT (id) DO UPDATE SET {sets}, src_object = excluded.src_object, src_line = excluded.src_line
WHERE (t.src_object = excluded.src_object AND t.src_line <= excluded.src_line)
   OR (t.src_object <> excluded.src_object
       AND coalesce((SELECT o.order_key FROM ingest_objects o WHERE o.id = t.src_object), '') <= $2)
"""


REJECT_COLUMNS: Final = ["object_id", "line", "raw", "reason"]
