"""FileLoad: one object version from its checkpoint to its end, batch by batch.

source -> reader -> batches -> one transaction per batch: the rows (a direct COPY while none of
the file's ids is in the table yet, else COPY into a staging table and merge by upload order), the
rejects and the checkpoint. Parsing runs ahead of the database by at most `queue_batches` batches,
which bounds memory. A batch whose transaction meets a deadlock, a serialization failure or a lock
timeout is retried on its own (its rows are still in memory) instead of failing the file.

A snapshot (a restore) is applied in one transaction instead: every row of the table is replaced,
so no reader ever sees it half done.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import BinaryIO, Final, cast

import asyncpg
import msgspec
import structlog

from services.ingest import sql
from services.ingest.batches import COPY_DELIMITER, COPY_FORMAT, Batch, BatchBuilder, copy_columns
from services.ingest.ledger import Checkpoint, Held
from services.ingest.order import order_time
from services.ingest.ports import ObjectKind, ObjectStore, ObjectVersion
from services.ingest.reader import CsvRecordReader
from shared.dictionary import Table

log = structlog.get_logger("ingest.load")

# Conflicts between concurrent writers that a retry of the batch resolves.
RETRYABLE = (
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.LockNotAvailableError,
)


class Unaccounted(Exception):
    """The reader's lines do not cover every byte read: a fault in the reader, never `loaded`."""


# Rows (loaded or rejected) per batch: one transaction, the unit of retry and of the checkpoint.
# 100k rather than 20k: PostgreSQL's CPU per 1M rows fell by ~20% (fewer statements, fewer and
# denser hires deltas, a third of the folding) for ~30 MB more peak memory (bench/README.md §4).
DEFAULT_BATCH_ROWS: Final = 100_000


class LoadOptions(msgspec.Struct, frozen=True):
    batch_rows: int = DEFAULT_BATCH_ROWS  # INGEST_BATCH_ROWS
    queue_batches: int = 2  # parsed batches waiting for the database: bounds memory
    batch_attempts: int = 8  # tries of one batch's transaction on deadlock / serialization failure


class LoadResult(msgspec.Struct, frozen=True):
    rows_loaded: int
    rows_rejected: int
    batches: int
    seconds: float


OnBatch = Callable[[Batch], Awaitable[None]]
# Wraps each batch's transaction (telemetry: a span with the batch's statements as children).
BatchObserver = Callable[[str, Batch], AbstractAsyncContextManager[None]]


def unobserved(table: str, batch: Batch) -> AbstractAsyncContextManager[None]:
    """The default BatchObserver: no span, no metric (telemetry passes its own)."""
    return contextlib.nullcontext()


class FileLoad:
    """Applies one version, held by this worker (`held`), from `checkpoint` into `target`."""

    def __init__(
        self,
        *,
        held: Held,
        store: ObjectStore,
        version: ObjectVersion,
        table: Table,
        checkpoint: Checkpoint,
        target: str | None = None,
        options: LoadOptions | None = None,
        on_batch: OnBatch | None = None,
        observe: BatchObserver = unobserved,
    ) -> None:
        self.held = held
        self.store = store
        self.version = version
        self.table = table
        self.target = target or table.name
        self.options = options or LoadOptions()
        self.on_batch = on_batch
        self.observe = observe
        self.lines_done = checkpoint.lines_done
        self.bytes_done = checkpoint.bytes_done
        self.loaded = checkpoint.rows_loaded
        self.rejected = checkpoint.rows_rejected
        self.batches = checkpoint.batches
        self.order_key = checkpoint.order_key
        self.direct = True  # COPY straight into the table until a batch meets an id already there
        self._columns = copy_columns(table)
        self._merge = sql.merge(table, self.target)
        self._queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=self.options.queue_batches)

    async def run(self) -> LoadResult:
        started = time.perf_counter()
        conn = self.held.conn
        await conn.execute(sql.create_stage(self.table))
        await conn.execute(sql.SESSION_UTC)  # COPY reads a timestamp without an offset as UTC
        if self.bytes_done > 0:
            log.info("resuming", object_id=self.held.object_id, line=self.lines_done, byte=self.bytes_done)
        if self.version.kind is ObjectKind.SNAPSHOT:
            async with conn.transaction():
                await conn.execute(sql.replace_all(self.target))
                await self._pipeline(self._apply_batch)
                await self.held.finish(self.version.size)
        else:
            await self._pipeline(self._commit)
            await self.held.finish(self.version.size)
        return LoadResult(self.loaded, self.rejected, self.batches, time.perf_counter() - started)

    async def _pipeline(self, commit: Callable[[Batch], Awaitable[None]]) -> None:
        async def consume() -> None:
            while (batch := await self._queue.get()) is not None:
                await commit(batch)
                self.lines_done = batch.end_line
                self.loaded += batch.row_count
                self.rejected += len(batch.rejects)
                self.batches += 1
                if self.on_batch is not None:
                    await self.on_batch(batch)

        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._produce())
                tg.create_task(consume())
        except BaseExceptionGroup as group:
            # one side failed and the other was cancelled: callers handle the failure itself
            raise group.exceptions[0] from None

    async def _produce(self) -> None:
        reader = CsvRecordReader(
            start_offset=self.bytes_done, start_line=self.lines_done, expected_fields=len(self.table.columns)
        )
        builder = BatchBuilder(
            self.table,
            batch_rows=self.options.batch_rows,
            object_id=self.held.object_id,
            order=order_time(self.order_key),
        )
        text_end = end = self.bytes_done  # the text read, and how far batches account for it
        async for chunk in self.store.read(self.version, self.bytes_done):
            text_end += len(chunk)
            for full in builder.add_items(reader.feed_items(chunk)):
                end = full.end_offset
                await self._queue.put(full)
            await asyncio.sleep(0)  # let the commit send its next statement: keep the database busy
        for full in builder.add_items(reader.finish()):
            end = full.end_offset
            await self._queue.put(full)
        if (batch := builder.flush()) is not None:
            end = batch.end_offset
            await self._queue.put(batch)
        if end != text_end:
            # Never `loaded` with content unaccounted for (CONTRACT §1): every byte read must be in
            # a line loaded, rejected, or skipped as the header or blank.
            raise Unaccounted(
                f"read {text_end} bytes of text but accounted for {end}: the file is left unfinished"
            )
        await self._queue.put(None)

    async def _commit(self, batch: Batch) -> None:
        """One batch in its own transaction, retried alone on a conflict between writers."""
        for attempt in range(1, self.options.batch_attempts + 1):
            try:
                async with self.observe(self.table.name, batch), self.held.conn.transaction():
                    await self._apply_batch(batch)
                return
            except RETRYABLE as exc:
                if attempt == self.options.batch_attempts:
                    raise
                delay = min(2.0, 0.02 * 2**attempt) * random.uniform(0.5, 1.0)
                log.warning(
                    "batch retried",
                    object_id=self.held.object_id,
                    attempt=attempt,
                    error=f"{type(exc).__name__}: {exc}",
                    seconds=round(delay, 3),
                )
                await asyncio.sleep(delay)

    async def _apply_batch(self, batch: Batch) -> None:
        """Rows, rejects and checkpoint of one batch, inside the caller's transaction."""
        await self.held.lock_checkpoint(self.lines_done)
        if batch.row_count:
            await self._write_rows(batch)
        if batch.rejects:
            object_id = self.held.object_id
            await self.held.add_rejects([(object_id, r.line, r.raw, r.reason) for r in batch.rejects])
        await self.held.advance(
            end_line=batch.end_line,
            end_offset=batch.end_offset,
            rows_loaded=batch.row_count,
            rows_rejected=len(batch.rejects),
        )

    async def _write_rows(self, batch: Batch) -> None:
        conn = self.held.conn
        if self.direct:
            try:
                async with conn.transaction():  # a savepoint: a conflict undoes this COPY only
                    await conn.execute(sql.DIRECT_LOCK_TIMEOUT)
                    await self._copy(self.target, batch)
                await conn.execute(sql.RESET_LOCK_TIMEOUT)
                return
            except (asyncpg.UniqueViolationError, *RETRYABLE):
                self.direct = False  # ids met again, or another writer holds one: merge from now on
        await self._copy(sql.stage_name(self.table), batch)
        await conn.execute(self._merge)
        if self.version.kind is ObjectKind.SNAPSHOT:
            # one transaction for the whole file: empty the stage here, not at commit
            await conn.execute(sql.empty_stage(self.table))

    async def _copy(self, into: str, batch: Batch) -> None:
        # asyncpg takes any buffer (its stubs say files only); bytes it would take for a file name
        data = cast(BinaryIO, memoryview(batch.copy_data))
        await self.held.conn.copy_to_table(
            into, source=data, columns=self._columns, format=COPY_FORMAT, delimiter=COPY_DELIMITER
        )
