"""Restoring one table from a backup, in two steps.

`prepare` checks everything before anything changes: the manifest (readable, this format, the table
in it with this table's schema), the file (present, its size and SHA-256 as the manifest says), the
Avro header (this table's schema) and every record (readable, as many as the manifest says), writing
the rows as CSV into a local scratch file as it reads them. Any problem raises Refused with the reason.

`submit` then puts that CSV into the raw bucket as one snapshot object
`<table>/restores/<restore-id>.csv` (metadata `upload-id` and `hiring-kind: snapshot`), recorded in
`uploads` first like any API upload. The ingest consumer applies a snapshot as a whole-table
replacement in one transaction, and `hiring replay` does the same, so the restore is part of the
bucket's history. `wait` follows the consumer's ledger row for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final, cast

import asyncpg
import fastavro
import msgspec

from shared.backup import avro, manifest, sql
from shared.backup.store import Location, fetch_file, get_bytes, upload_multipart
from shared.dictionary import TABLES, Table

SNAPSHOT_KIND: Final = "snapshot"
KIND_METADATA: Final = "hiring-kind"


class Refused(ValueError):
    """The backup cannot be restored; str() is the reason. Nothing was changed."""


class Prepared(msgspec.Struct, frozen=True):
    table: str
    backup_id: str
    rows: int
    csv_path: str  # the rows as CSV, ready to be submitted


class Outcome(msgspec.Struct, frozen=True):
    """The consumer's ledger row for a submitted restore (None fields: not seen yet)."""

    status: str | None
    rows_loaded: int
    rows_rejected: int
    error: str | None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def _convert(table: Table, path: Path, out_path: Path, entry: manifest.TableEntry) -> int:
    """Read the Avro file (after its checksum matched) and write its rows as CSV; Refused on a
    header of another schema or an unreadable record."""
    with path.open("rb") as f:
        try:
            reader = fastavro.reader(f)
        except Exception as exc:  # fastavro raises ValueError, EOFError, SchemaParseException, ...
            raise Refused(f"{entry.file} is not an Avro object container file: {exc}") from None
        header = reader.writer_schema
        if not isinstance(header, dict) or not avro.same_schema(header, avro.schema(table)):
            raise Refused(f"{entry.file} was written with another schema than table {table.name}'s")
        with out_path.open("w", encoding="utf-8", newline="") as out:
            try:
                return avro.write_csv(table, cast(Iterator[Mapping[str, Any]], reader), out)
            except Exception as exc:
                raise Refused(f"{entry.file} is corrupt: {type(exc).__name__}: {exc}") from None


async def prepare(s3: Any, source: Location, table_name: str, scratch: Path) -> Prepared:
    """Check the backup at `source` for `table_name` and write its rows as CSV into `scratch`.
    Raises Refused with the reason (nothing changed anywhere)."""
    table = TABLES.get(table_name)
    if table is None:
        raise Refused(f"no table {table_name!r}: the tables are {', '.join(sorted(TABLES))}")
    data = await get_bytes(s3, source, manifest.MANIFEST)
    if data is None:
        raise Refused(f"{source} holds no manifest.json: not a backup")
    try:
        made = manifest.decode(data)
    except manifest.ManifestError as exc:
        raise Refused(str(exc)) from None
    entry = made.tables.get(table.name)
    if entry is None:
        held = ", ".join(sorted(made.tables)) or "no table"
        raise Refused(f"backup {made.id} holds no {table.name} (it holds {held})")
    if not avro.same_schema(entry.schema, avro.schema(table)):
        raise Refused(f"backup {made.id}'s {table.name} has another schema than the table's")
    if "/" in entry.file or entry.file.startswith("."):
        raise Refused(f"backup {made.id} names a file outside its folder: {entry.file!r}")
    path = await fetch_file(s3, source, entry.file, scratch)
    if path is None:
        raise Refused(f"backup {made.id} has no {entry.file}")
    size = path.stat().st_size
    if size != entry.bytes:
        raise Refused(f"{entry.file} is {size} bytes; the manifest says {entry.bytes} (truncated or altered)")
    digest = await asyncio.to_thread(_sha256, path)
    if digest != entry.sha256:
        raise Refused(f"{entry.file} does not match its SHA-256 in the manifest (corrupt or altered)")
    out_path = scratch / f"{table.name}.restore.csv"
    rows = await asyncio.to_thread(_convert, table, path, out_path, entry)
    if rows != entry.rows:
        raise Refused(f"{entry.file} holds {rows} rows; the manifest says {entry.rows}")
    return Prepared(table=table.name, backup_id=made.id, rows=rows, csv_path=str(out_path))


async def submit(
    s3: Any, pool: asyncpg.Pool | asyncpg.Connection, bucket: str, prepared: Prepared
) -> tuple[uuid.UUID, str]:
    """Put the prepared rows into the raw bucket as the table's snapshot object; returns its upload id
    and key. The `uploads` row is recorded first so `GET /uploads/{id}` knows it from the start."""
    restore_id = uuid.uuid4()
    key = f"{prepared.table}/restores/{restore_id}.csv"
    path = Path(prepared.csv_path)
    size = (await asyncio.to_thread(path.stat)).st_size
    await pool.execute(
        sql.INSERT_UPLOAD,
        restore_id,
        prepared.table,
        bucket,
        key,
        f"restore of backup {prepared.backup_id}",
        size,
    )
    metadata = {"upload-id": str(restore_id), KIND_METADATA: SNAPSHOT_KIND, "backup-id": prepared.backup_id}
    try:
        await upload_multipart(s3, bucket, key, path, content_type="text/csv", metadata=metadata)
    except BaseException:
        await asyncio.shield(pool.execute(sql.DELETE_UPLOAD, restore_id))
        raise
    return restore_id, key


async def wait(pool: asyncpg.Pool | asyncpg.Connection, upload_id: uuid.UUID, seconds: float) -> Outcome:
    """The ledger row of the upload once it is loaded or failed, or as it is when `seconds` pass."""
    deadline = time.monotonic() + seconds
    pause = 0.02
    while True:
        row = await pool.fetchrow(sql.OUTCOME, upload_id)
        if row is not None and row["status"] != "processing":
            break
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.5)
    if row is None:
        return Outcome(None, 0, 0, None)
    return Outcome(row["status"], row["rows_loaded"], row["rows_rejected"], row["error"])
