"""Writing a backup: every table asked for, read under one REPEATABLE READ snapshot through a
server-side cursor (a few thousand rows in memory at a time), each streamed into an Avro object
container file, then `manifest.json` last (a folder without it is not a backup)."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, cast

if TYPE_CHECKING:
    from shared.db import DbConnection
import fastavro
import structlog

from shared.backup import avro, manifest, sql
from shared.backup.store import Location, put_bytes, put_file
from shared.dictionary import TABLES, Table

log = structlog.get_logger()

CODEC: Final = "deflate"  # in the Avro spec's required set: every reader has it (zstandard is optional)
FETCH_ROWS: Final = 5000  # rows per cursor fetch: memory stays flat, round trips stay few
SYNC_INTERVAL: Final = 1024 * 1024  # bytes of records per Avro block


class BackupError(RuntimeError):
    """The backup could not be written; str() says why."""


def new_backup_id(now: datetime | None = None) -> str:
    """Sortable by time, unique: `20261130T104500Z-1a2b3c`."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


class _HashingFile:
    """A binary file that hashes and counts what is written to it (fastavro only calls write/flush)."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self._f.write(data)

    def flush(self) -> None:
        self._f.flush()

    def seekable(self) -> bool:  # fastavro asks, to know whether it could append: never here
        return False


def _write_records(writer: fastavro.write.Writer, records: Sequence[Any]) -> None:
    for record in records:
        writer.write(record)


async def _dump_table(
    conn: DbConnection, table: Table, path: Path, order_key: str | None
) -> manifest.TableEntry:
    schema = avro.schema(table)
    parsed = fastavro.parse_schema(schema)
    rows = 0
    with path.open("wb") as raw:
        out = _HashingFile(raw)
        writer = fastavro.write.Writer(cast(IO[bytes], out), parsed, codec=CODEC, sync_interval=SYNC_INTERVAL)
        cursor = await conn.cursor(sql.select_rows(table))
        pending: asyncio.Task[None] | None = None
        while True:
            records = await cursor.fetch(FETCH_ROWS)  # the next fetch overlaps the previous encode
            if pending is not None:
                await pending
            if not records:
                break
            rows += len(records)
            # asyncpg's Record answers .get(name) as fastavro asks; the encoding runs in a thread so
            # the event loop (the API's) stays responsive and the next fetch overlaps it
            pending = asyncio.ensure_future(asyncio.to_thread(_write_records, writer, records))
        await asyncio.to_thread(writer.flush)
    return manifest.TableEntry(
        file=f"{table.name}.avro",
        rows=rows,
        bytes=out.size,
        sha256=out.sha256.hexdigest(),
        schema=schema,
        codec=CODEC,
        order_key=order_key,
    )


async def write_backup(
    conn: DbConnection,
    s3: Any,
    target: Location,
    tables: Sequence[str] | None = None,
    *,
    backup_id: str | None = None,
    scratch: Path | None = None,
) -> manifest.Manifest:
    """Back up `tables` (default: all three) into `target`; returns the manifest written there.

    Raises BackupError when the target already holds a backup or is not writable, ValueError for an
    unknown table. `s3` (an aiobotocore client) is needed for an S3 target only."""
    chosen = [TABLES[t] for t in (tables or list(TABLES))]
    backup_id = backup_id or new_backup_id()
    if target.directory is not None:
        folder = Path(target.directory)
        try:
            await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise BackupError(f"cannot create {folder}: {exc}") from None
        if (folder / manifest.MANIFEST).exists():
            raise BackupError(f"{folder} already holds a backup (manifest.json); choose an empty folder")
    created_at = datetime.now(UTC)
    entries: dict[str, manifest.TableEntry] = {}
    work = Path(tempfile.mkdtemp(prefix="hiring-backup-", dir=scratch))
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot: str = await conn.fetchval(sql.SNAPSHOT)
            last_object = await conn.fetchval(sql.LAST_LOADED_OBJECT)
            database: str = await conn.fetchval(sql.DATABASE)
            for table in chosen:
                order_key = await conn.fetchval(sql.LAST_ORDER_KEY, table.name)
                # into the target directory itself when it is one (no second copy), else a scratch file
                local = (
                    Path(target.directory) / f".{table.name}.avro.partial"
                    if target.directory is not None
                    else work / f"{table.name}.avro"
                )
                entry = await _dump_table(conn, table, local, order_key)
                await put_file(s3, target, entry.file, local, "avro/binary")
                entries[table.name] = entry
                log.info(
                    "backup.table", backup_id=backup_id, table=table.name, rows=entry.rows, bytes=entry.bytes
                )
        made = manifest.Manifest(
            format=manifest.FORMAT,
            id=backup_id,
            created_at=created_at,
            database=database,
            history=manifest.History(ingest_object_id=last_object, snapshot=snapshot),
            tables=entries,
        )
        await put_bytes(s3, target, manifest.MANIFEST, manifest.encode(made), "application/json")
    finally:
        await asyncio.to_thread(_remove_tree, work)
    log.info("backup.written", backup_id=backup_id, target=str(target), tables=list(entries))
    return made


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
