"""Applies one S3 object version to its table: exactly once, resumable, in bounded memory.

The ledger row of the version is the unit of exactly-once: a session advisory lock on its id keeps
a second consumer out while one works on it, and every batch commits its rows, its rejects and
the ledger checkpoint (lines and bytes consumed) in one transaction. A consumer killed at any
moment leaves the ledger at a batch boundary; the next one resumes there with a ranged GET.
"""

from __future__ import annotations

import asyncio
import enum
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import asyncpg
import msgspec
import structlog
from botocore.exceptions import ClientError

from services.ingest import sql
from services.ingest.batches import COPY_OPTIONS, Batch, BatchBuilder, copy_columns
from services.ingest.events import ObjectEvent, order_key
from services.ingest.reader import CsvRecordReader
from services.ingest.telemetry import IngestTelemetry
from shared.dictionary import TABLES, Table, table_for_key

log = structlog.get_logger("ingest.loader")


class Outcome(enum.Enum):
    LOADED = "loaded"  # applied now
    DUPLICATE = "duplicate"  # this version was already applied (or failed for good)
    BUSY = "busy"  # another worker holds this version right now: look again later
    FAILED = "failed"  # cannot ever be applied (unreadable, gone, no table): marked in the ledger


class Result(msgspec.Struct):
    outcome: Outcome
    object_id: int | None = None
    rows_loaded: int = 0
    rows_rejected: int = 0
    batches: int = 0
    detail: str | None = None


class Superseded(Exception):
    """The ledger checkpoint moved under us (a replay or another worker finished this version)."""


class ObjectGone(Exception):
    """The object version named by an event cannot be read any more."""


class Registered(NamedTuple):
    object_id: int
    status: str
    order_key: str


class Resolved(msgspec.Struct, frozen=True):
    version: str  # ledger identity within (bucket, key)
    s3_version_id: str | None
    etag: str | None
    size: int | None
    metadata: dict[str, str]


OnProgress = Callable[[], Awaitable[None]]


class LoaderOptions(msgspec.Struct, frozen=True):
    batch_rows: int = 20_000
    # Small reads keep the event loop responsive: parsing one chunk is one uninterrupted slice of
    # CPU, and the batch being committed waits for the loop between its statements.
    chunk_bytes: int = 16 << 10
    queue_batches: int = 2  # parsed batches waiting for the database: bounds memory


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


_GONE_CODES = {"NoSuchKey", "NoSuchVersion", "404", "NoSuchBucket", "PreconditionFailed", "412"}
_DENIED_CODES = {"AccessDenied", "403", "InvalidObjectState"}


class Loader:
    def __init__(
        self,
        pool: asyncpg.Pool,
        s3: Any,
        options: LoaderOptions | None = None,
        telemetry: IngestTelemetry | None = None,
    ) -> None:
        self._pool = pool
        self._s3 = s3
        self._opts = options or LoaderOptions()
        self._tel = telemetry or IngestTelemetry()

    # ---- identity ---------------------------------------------------------------------------

    async def resolve(self, ev: ObjectEvent) -> Resolved:
        """Find the exact version the event is about (events from moto carry no versionId)."""
        head = await self._head(ev.bucket, ev.key, ev.version_id)
        if ev.version_id is None and ev.etag and _etag(head) != ev.etag:
            # The key was overwritten since: look for the event's version among the versions.
            head = await self._find_version(ev)
        vid = head.get("VersionId")
        vid = None if vid in (None, "null") else str(vid)
        etag = _etag(head) or ev.etag
        return Resolved(
            version=vid or _unversioned(ev, etag),
            s3_version_id=vid,
            etag=etag,
            size=head.get("ContentLength", ev.size),
            metadata={str(k).lower(): str(v) for k, v in (head.get("Metadata") or {}).items()},
        )

    async def _head(self, bucket: str, key: str, version_id: str | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if version_id:
            kwargs["VersionId"] = version_id
        try:
            return await self._s3.head_object(**kwargs)  # type: ignore[no-any-return]
        except ClientError as exc:
            code = _error_code(exc)
            if code in _GONE_CODES:
                raise ObjectGone(f"object s3://{bucket}/{key} no longer exists ({code})") from exc
            if code in _DENIED_CODES:
                raise ObjectGone(f"object s3://{bucket}/{key} cannot be read: {code}") from exc
            raise

    async def _find_version(self, ev: ObjectEvent) -> dict[str, Any]:
        paginator = self._s3.get_paginator("list_object_versions")
        async for page in paginator.paginate(Bucket=ev.bucket, Prefix=ev.key):
            for v in page.get("Versions", []):
                if v["Key"] == ev.key and str(v.get("ETag", "")).strip('"') == ev.etag:
                    return await self._head(ev.bucket, ev.key, v.get("VersionId"))
        raise ObjectGone(f"object s3://{ev.bucket}/{ev.key} with ETag {ev.etag} is no longer in the bucket")

    # ---- the ledger -------------------------------------------------------------------------

    async def register(self, ev: ObjectEvent, resolved: Resolved | None, table: str | None) -> Registered:
        """The ledger row of the version (made on first sight), its status and its upload order."""
        version = resolved.version if resolved else _unversioned(ev, ev.etag)
        row = await self._pool.fetchrow(
            sql.REGISTER_OBJECT,
            ev.bucket,
            ev.key,
            version,
            resolved.etag if resolved else ev.etag,
            ev.sequencer,
            ev.event_time,
            order_key(ev.event_time, ev.sequencer, ev.key, version),
            table,
            resolved.size if resolved else ev.size,
        )
        assert row is not None
        return Registered(int(row["id"]), str(row["status"]), str(row["order_key"]))

    async def record_event(
        self,
        message_id: str | None,
        ev: ObjectEvent | None,
        object_id: int | None,
        outcome: str,
        detail: str | None,
    ) -> None:
        await self._pool.execute(
            sql.RECORD_EVENT,
            message_id,
            ev.event_name if ev else None,
            ev.bucket if ev else None,
            ev.key if ev else None,
            ev.version_id if ev else None,
            ev.etag if ev else None,
            ev.sequencer if ev else None,
            ev.event_time if ev else None,
            object_id,
            outcome,
            detail,
        )

    # ---- applying an object -----------------------------------------------------------------

    async def ingest(
        self, ev: ObjectEvent, *, trace_id: str | None = None, on_progress: OnProgress | None = None
    ) -> Result:
        """Apply the object version an event names, exactly once."""
        table = table_for_key(ev.key)
        try:
            resolved = await self.resolve(ev)
        except ObjectGone as exc:
            object_id, status, _ = await self.register(ev, None, table)
            if status != "processing":
                return Result(Outcome.DUPLICATE, object_id)
            await self._pool.execute(sql.FAIL_OBJECT, object_id, str(exc))
            return Result(Outcome.FAILED, object_id, detail=str(exc))
        self._tel.object_resolved(resolved.version, resolved.metadata)
        object_id, status, _ = await self.register(ev, resolved, table)
        if status != "processing":
            return Result(Outcome.DUPLICATE, object_id)
        if table is None:
            reason = (
                f"no table for key {ev.key!r}: expected a first path segment or a file name"
                f" starting with one of {', '.join(sorted(TABLES))}"
            )
            await self._pool.execute(sql.FAIL_OBJECT, object_id, reason)
            return Result(Outcome.FAILED, object_id, detail=reason)
        return await self.apply(
            object_id, ev.bucket, ev.key, resolved, TABLES[table], trace_id=trace_id, on_progress=on_progress
        )

    async def apply(
        self,
        object_id: int,
        bucket: str,
        key: str,
        resolved: Resolved,
        table: Table,
        *,
        target: str | None = None,
        replaying: bool = False,
        trace_id: str | None = None,
        on_progress: OnProgress | None = None,
    ) -> Result:
        """Apply one registered version under its lock; `replaying` starts it afresh into `target`.

        Locks are taken in one order everywhere: the table's (shared here; `hiring replay` holds
        it exclusively on its own session, so it passes replaying=True), then the version's.
        """
        async with self._pool.acquire() as conn:
            lock_id = sql.table_lock_id(table.name)
            if not replaying:
                await conn.execute(sql.TABLE_LOCK_SHARED, lock_id)
            try:
                if not await conn.fetchval(sql.TRY_LOCK_OBJECT, object_id):
                    return Result(Outcome.BUSY, object_id)
                try:
                    if replaying:
                        async with conn.transaction():
                            await conn.execute(sql.RESET_OBJECT, object_id)
                            await conn.execute(sql.DELETE_REJECTS, object_id)
                    state = await conn.fetchrow(sql.LOAD_OBJECT, object_id)
                    if state["status"] != "processing":
                        return Result(Outcome.DUPLICATE, object_id)
                    await conn.execute(sql.START_OBJECT, object_id, _upload_id(resolved.metadata), trace_id)
                    try:
                        return await self._stream(
                            conn, object_id, bucket, key, resolved, table, state, target, on_progress
                        )
                    except ObjectGone as exc:
                        await conn.execute(sql.FAIL_OBJECT, object_id, str(exc))
                        return Result(Outcome.FAILED, object_id, detail=str(exc))
                finally:
                    await conn.execute(sql.UNLOCK_OBJECT, object_id)
            finally:
                if not replaying:
                    await conn.execute(sql.TABLE_UNLOCK_SHARED, lock_id)

    async def _stream(
        self,
        conn: asyncpg.Connection,
        object_id: int,
        bucket: str,
        key: str,
        resolved: Resolved,
        table: Table,
        state: asyncpg.Record,
        target: str | None,
        on_progress: OnProgress | None,
    ) -> Result:
        lines_done, bytes_done = int(state["lines_done"]), int(state["bytes_done"])
        loaded, rejected, n_batches = (
            int(state["rows_loaded"]),
            int(state["rows_rejected"]),
            int(state["batches"]),
        )
        started = time.perf_counter()
        await conn.execute(sql.create_stage(table))
        await conn.execute(sql.SESSION_UTC)  # COPY reads a timestamp without an offset as UTC
        merge_sql = sql.merge(table, target)
        columns = copy_columns(table)
        order_by = await conn.fetchval(sql.ORDER_COLUMN, target or table.name, list(table.column_names[1:]))
        direct = True  # COPY straight into the table until a batch meets an id it already holds
        queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=self._opts.queue_batches)
        if bytes_done > 0:
            log.info("resuming", object_id=object_id, key=key, line=lines_done, byte=bytes_done)

        async def produce() -> None:
            reader = CsvRecordReader(
                start_offset=bytes_done, start_line=lines_done, expected_fields=len(table.columns)
            )
            builder = BatchBuilder(
                table, batch_rows=self._opts.batch_rows, object_id=object_id, order_by=order_by
            )
            if resolved.size is None or bytes_done < resolved.size:
                async for chunk in self._read(bucket, key, resolved, bytes_done):
                    for full in builder.add_items(reader.feed_items(chunk)):
                        await queue.put(full)
                    await asyncio.sleep(0)  # let commit() send its next statement: keep the database busy
            for full in builder.add_items(reader.finish()):
                await queue.put(full)
            if (batch := builder.flush()) is not None:
                await queue.put(batch)
            await queue.put(None)

        async def load_rows(batch: Batch) -> None:
            """The batch's rows into the table: by a plain COPY while no id is already there (the
            merge would only insert), else staged and merged (later line / later upload wins)."""
            nonlocal direct
            data = memoryview(batch.copy_data)  # asyncpg would take bytes for a file name
            if direct:
                try:
                    async with conn.transaction():  # a savepoint: a conflict undoes this COPY only
                        await conn.copy_to_table(
                            target or table.name, source=data, columns=columns, **COPY_OPTIONS
                        )
                    return
                except (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError):
                    direct = False  # ids met again: merge from now on
            await conn.copy_to_table(sql.stage_name(table), source=data, columns=columns, **COPY_OPTIONS)
            await conn.execute(merge_sql, object_id, state["order_key"])

        async def commit() -> None:
            nonlocal lines_done, loaded, rejected, n_batches
            while (batch := await queue.get()) is not None:
                async with self._tel.batch(table.name, batch), conn.transaction():
                    cp = await conn.fetchrow(sql.CHECKPOINT_FOR_UPDATE, object_id)
                    if cp["status"] != "processing" or cp["lines_done"] != lines_done:
                        raise Superseded(
                            f"object {object_id} moved on to line {cp['lines_done']} ({cp['status']})"
                        )
                    if batch.row_count:
                        await load_rows(batch)
                    if batch.rejects:
                        await conn.copy_records_to_table(
                            "ingest_rejects",
                            records=[(object_id, r.line, r.raw, r.reason) for r in batch.rejects],
                            columns=sql.REJECT_COLUMNS,
                        )
                    await conn.execute(
                        sql.ADVANCE_OBJECT,
                        object_id,
                        batch.end_line,
                        batch.end_offset,
                        batch.row_count,
                        len(batch.rejects),
                    )
                lines_done = batch.end_line
                loaded += batch.row_count
                rejected += len(batch.rejects)
                n_batches += 1
                log.debug(
                    "batch committed", object_id=object_id, rows=batch.row_count, rejects=len(batch.rejects)
                )
                if on_progress is not None:
                    await on_progress()

        async with asyncio.TaskGroup() as tg:
            tg.create_task(produce())
            tg.create_task(commit())
        await conn.execute(sql.FINISH_OBJECT, object_id, resolved.size)
        log.info(
            "object loaded",
            object_id=object_id,
            key=key,
            table=table.name,
            rows_loaded=loaded,
            rows_rejected=rejected,
            batches=n_batches,
            seconds=round(time.perf_counter() - started, 3),
        )
        return Result(Outcome.LOADED, object_id, loaded, rejected, n_batches)

    async def _read(self, bucket: str, key: str, resolved: Resolved, offset: int) -> Any:
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if resolved.s3_version_id:
            kwargs["VersionId"] = resolved.s3_version_id
        elif resolved.etag:
            kwargs["IfMatch"] = resolved.etag  # unversioned: never read a newer object under this key
        if offset:
            kwargs["Range"] = f"bytes={offset}-"
        try:
            resp = await self._s3.get_object(**kwargs)
        except ClientError as exc:
            code = _error_code(exc)
            if code in _GONE_CODES or code in _DENIED_CODES:
                raise ObjectGone(f"object s3://{bucket}/{key} cannot be read: {code}") from exc
            raise
        async with resp["Body"] as body:
            async for chunk in body.iter_chunks(self._opts.chunk_bytes):
                yield chunk


def _unversioned(ev: ObjectEvent, etag: str | None) -> str:
    """The ledger identity of a version in a bucket without versioning: its content and event."""
    return f"etag:{etag}@{ev.sequencer or ev.event_time.strftime('%Y%m%dT%H%M%S.%f')}"


def _etag(head: dict[str, Any]) -> str | None:
    etag = head.get("ETag")
    return str(etag).strip('"') if etag else None


def _upload_id(metadata: dict[str, str]) -> str | None:
    value = metadata.get("upload-id")
    if not value:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None
