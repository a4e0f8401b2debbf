"""Every SQL statement of backup and restore."""

from __future__ import annotations

from typing import Final

from shared.dictionary import Table

SNAPSHOT: Final = "SELECT pg_current_snapshot()::text"
# The upload-history position the snapshot reflects.
LAST_LOADED_OBJECT: Final = "SELECT max(id) FROM ingest_objects WHERE status = 'loaded'"
LAST_ORDER_KEY: Final = (
    "SELECT max(order_key) FROM ingest_objects WHERE status = 'loaded' AND table_name = $1"
)
DATABASE: Final = "SELECT current_database()"

INSERT_UPLOAD: Final = """
INSERT INTO uploads (id, table_name, bucket, key, filename, size_bytes) VALUES ($1, $2, $3, $4, $5, $6)
"""
DELETE_UPLOAD: Final = "DELETE FROM uploads WHERE id = $1"
OUTCOME: Final = """
SELECT id, status, rows_loaded, rows_rejected, error FROM ingest_objects
WHERE upload_id = $1 ORDER BY id DESC LIMIT 1
"""


def select_rows(table: Table) -> str:
    """Every row of `table`, its columns in dictionary order (names come from the dictionary only)."""
    return f"SELECT {', '.join(table.column_names)} FROM {table.name}"
