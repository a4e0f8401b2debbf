"""Every SQL statement of the ingest service."""

from __future__ import annotations

from typing import Final

from services.ingest.order import LATER_WINS_SQL
from shared.dictionary import TABLES, Table

# ---- the ledger -------------------------------------------------------------------------------

REGISTER_OBJECT: Final = """
INSERT INTO ingest_objects
    (bucket, key, version, etag, sequencer, event_time, order_key, table_name, size_bytes, kind)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (bucket, key, version) DO UPDATE SET bucket = excluded.bucket
RETURNING id, status, order_key, kind
"""

# The settled ledger row an event names, for an event whose object is gone (a late or repeated
# delivery after the version was deleted): by version id, or by content and event time without one.
SETTLED_VERSION_OF_EVENT: Final = """
SELECT id FROM ingest_objects
WHERE bucket = $1 AND key = $2 AND status <> 'processing'
  AND (CASE WHEN $3::text IS NOT NULL THEN version = $3::text
            ELSE etag = $4::text AND event_time = $5::timestamptz END)
ORDER BY id DESC LIMIT 1
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
# replay` and a snapshot (restore) hold it exclusively, so consumers wait at the start of a file
# instead of writing into a table about to be swapped out.
TABLE_LOCK_SHARED: Final = f"SELECT pg_advisory_lock_shared({TABLE_LOCKS}, $1::int)"
TABLE_UNLOCK_SHARED: Final = f"SELECT pg_advisory_unlock_shared({TABLE_LOCKS}, $1::int)"
TABLE_LOCK_EXCLUSIVE: Final = f"SELECT pg_advisory_lock({TABLE_LOCKS}, $1::int)"
TABLE_UNLOCK_EXCLUSIVE: Final = f"SELECT pg_advisory_unlock({TABLE_LOCKS}, $1::int)"

LOAD_OBJECT: Final = """
SELECT id, status, lines_done, bytes_done, rows_loaded, rows_rejected, batches, order_key, table_name,
       upload_id, trace_id, attempts, progress_attempt, error, kind
FROM ingest_objects WHERE id = $1
"""

START_OBJECT: Final = """
UPDATE ingest_objects
SET attempts = attempts + 1, started_at = coalesce(started_at, now()),
    upload_id = coalesce($2, upload_id), trace_id = coalesce($3, trace_id)
WHERE id = $1 AND status = 'processing'
RETURNING attempts
"""

CHECKPOINT_FOR_UPDATE: Final = (
    "SELECT lines_done, bytes_done, status FROM ingest_objects WHERE id = $1 FOR UPDATE"
)

ADVANCE_OBJECT: Final = """
UPDATE ingest_objects
SET lines_done = $2, bytes_done = $3, rows_loaded = rows_loaded + $4, rows_rejected = rows_rejected + $5,
    batches = batches + 1, progress_attempt = attempts, error = NULL
WHERE id = $1
"""

FINISH_OBJECT: Final = """
UPDATE ingest_objects SET status = 'loaded', finished_at = now(), size_bytes = coalesce($2, size_bytes),
    error = NULL
WHERE id = $1
"""

FAIL_OBJECT: Final = """
UPDATE ingest_objects SET status = 'failed', finished_at = now(), error = $2 WHERE id = $1
"""

NOTE_ERROR: Final = "UPDATE ingest_objects SET error = $2 WHERE id = $1 AND status = 'processing'"

RESET_OBJECT: Final = """
UPDATE ingest_objects
SET status = 'processing', lines_done = 0, bytes_done = 0, rows_loaded = 0, rows_rejected = 0, batches = 0,
    error = NULL, started_at = NULL, finished_at = NULL, attempts = 0, progress_attempt = 0
WHERE id = $1
"""
# An object removed from the bucket: its versions the bucket no longer shows are retracted (those
# that contributed or were contributing rows; a failed one keeps its status and reason). $3: the
# version ids still shown; $4: whether the key still shows any version (for rows of a bucket
# without versioning, identified by ETag, the key's existence is all there is to go by).
_MISSING: Final = """
WHERE bucket = $1 AND key = $2 AND status IN ('loaded', 'processing')
  AND CASE WHEN version LIKE 'etag:%' THEN NOT $4 ELSE NOT (version = ANY($3::text[])) END
"""
MISSING_VERSIONS: Final = f"SELECT id FROM ingest_objects {_MISSING} ORDER BY id"
RETRACT_MISSING: Final = f"""
UPDATE ingest_objects SET status = 'retracted', finished_at = now() {_MISSING} RETURNING id
"""

# After a replay: loaded versions of the table that the bucket no longer shows were retracted.
RETRACT_UNLISTED: Final = """
UPDATE ingest_objects SET status = 'retracted', finished_at = now()
WHERE bucket = $1 AND table_name = $2 AND status = 'loaded' AND NOT (id = ANY($3::bigint[]))
"""

# An event without a version id names its version by content (ETag), and several versions of the
# same content resolve to the newest: the latest such event carries that version's upload time.
# Its order moves up and it is applied again from the start (rows it lost to an upload in between
# are won back).
REORDER_OBJECT: Final = """
UPDATE ingest_objects
SET order_key = $2, status = 'processing', lines_done = 0, bytes_done = 0, rows_loaded = 0,
    rows_rejected = 0, batches = 0, attempts = 0, progress_attempt = 0, error = NULL, finished_at = NULL
WHERE id = $1 AND order_key < $2 AND status = 'loaded'
RETURNING id
"""

DELETE_REJECTS: Final = "DELETE FROM ingest_rejects WHERE object_id = $1"

REJECT_COLUMNS: Final = ["object_id", "line", "raw", "reason"]

PING: Final = "SELECT 1"


# ---- replay -----------------------------------------------------------------------------------


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

# The batches' COPY text may hold timestamps without an offset, which the contract reads as UTC.
SESSION_UTC: Final = "SET TIME ZONE 'UTC'"

# A direct COPY gives up at once on a lock held by another writer (a row of the same id not yet
# committed) and the batch goes through the merge instead, which takes its row locks in id order:
# so no writer ever waits on another while holding locks out of that order.
DIRECT_LOCK_TIMEOUT: Final = "SELECT set_config('lock_timeout', '50ms', true)"
RESET_LOCK_TIMEOUT: Final = "SELECT set_config('lock_timeout', '0', true)"


def provenance_columns() -> list[str]:
    return ["src_object", "src_line", "src_order"]


def stage_name(table: Table) -> str:
    return f"stage_{table.name}"


def create_stage(table: Table) -> str:
    # A temporary table per connection, emptied at each commit: the COPY target of one batch that
    # must be merged. Its columns are a batch's COPY columns (services/ingest/batches.py).
    cols = ", ".join(f"{c.name} {c.type}" for c in table.columns)
    return (
        f"CREATE TEMP TABLE IF NOT EXISTS {stage_name(table)}"
        f" ({cols}, src_object bigint, src_line integer, src_order bigint)"
        " ON COMMIT DELETE ROWS"
    )


def empty_stage(table: Table) -> str:
    return f"DELETE FROM {stage_name(table)}"


def merge(table: Table, target: str | None = None) -> str:
    """Upsert one staged batch into `target` (the table itself, or its replay copy).

    Within the batch the last line per id wins (DISTINCT ON ... ORDER BY src_line DESC); rows are
    inserted in id order, so concurrent merges lock rows in one order. Against the table, a row is
    replaced only when the incoming one is later in upload order (services/ingest/order.py).
    """
    target = target or table.name
    names = [*table.column_names, *provenance_columns()]
    cols = ", ".join(names)
    sets = ", ".join(f"{c} = excluded.{c}" for c in names[1:])
    return f"""
INSERT INTO {target} AS t ({cols})
SELECT DISTINCT ON (id) {cols} FROM {stage_name(table)} ORDER BY id, src_line DESC
ON CONFLICT (id) DO UPDATE SET {sets}
WHERE {LATER_WINS_SQL}
"""


def replace_all(target: str) -> str:
    """A snapshot (restore) replaces every row of the table, in its transaction."""
    return f"DELETE FROM {target}"
