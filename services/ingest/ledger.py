"""The ledger: one row per object version (`ingest_objects`), its status and its checkpoint.

A version is registered on first sight (`Ledger.register`). Applying it happens under its lock:
`Ledger.hold` is an async context manager that takes the table's advisory lock (shared; exclusive
for a snapshot, and `hiring replay` holds it exclusively itself) and then the version's, and yields
a `Held` — the ledger as seen from the connection that holds the lock — or None when another
worker holds the version. Locks are taken in that one order everywhere.

Every batch commits its rows, its rejects and `Held.advance` (the checkpoint: lines and bytes
consumed) in one transaction, so a consumer killed at any moment leaves the ledger at a batch
boundary. Poison is decided here, from the ledger: an attempt that committed a batch never counts
towards giving a file up; `max_stalls` attempts in a row without progress do, and the version is
then marked `failed` with its last error (never left `processing`).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, NamedTuple

import asyncpg
import msgspec

from services.ingest import sql
from services.ingest.events import ObjectEvent
from services.ingest.order import order_key
from services.ingest.ports import ObjectKind, ObjectVersion
from services.ingest.source import unversioned_identity

if TYPE_CHECKING:
    from shared.db import DbConnection


class Status(enum.StrEnum):
    PROCESSING = "processing"
    LOADED = "loaded"
    FAILED = "failed"
    RETRACTED = "retracted"


class Registered(NamedTuple):
    object_id: int
    status: Status
    order_key: str
    kind: ObjectKind


class Checkpoint(msgspec.Struct, frozen=True):
    status: Status
    lines_done: int  # physical lines committed
    bytes_done: int  # bytes of the object committed: the resume point
    rows_loaded: int
    rows_rejected: int
    batches: int
    order_key: str
    attempts: int
    progress_attempt: int  # the attempt during which the last batch committed
    error: str | None

    @property
    def stalls(self) -> int:
        """Attempts in a row that committed nothing (the current one not counted yet)."""
        return self.attempts - self.progress_attempt


class Superseded(Exception):
    """The checkpoint moved under us (a replay reset the version, or another worker finished it)."""


class Ledger:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def register(
        self, event: ObjectEvent, version: ObjectVersion | None, table: str | None
    ) -> Registered:
        """The ledger row of the version (made on first sight), its status and its upload order.

        `version` is None when the object could not be resolved (it is registered from its event)."""
        identity = version.version if version else unversioned_identity(event, event.etag)
        row = await self._pool.fetchrow(
            sql.REGISTER_OBJECT,
            event.bucket,
            event.key,
            identity,
            version.etag if version else event.etag,
            event.sequencer,
            event.event_time,
            order_key(event.event_time, event.sequencer, event.key, identity),
            table,
            version.size if version else event.size,
            (version.kind if version else ObjectKind.FILE).value,
        )
        assert row is not None
        return Registered(
            int(row["id"]), Status(row["status"]), str(row["order_key"]), ObjectKind(row["kind"])
        )

    async def settled_version_of(self, event: ObjectEvent) -> int | None:
        """The ledger id of the finished (loaded, failed or retracted) version an event names, found
        without the object: by the event's version id, or by its ETag and event time when it has none
        (moto). None when the ledger has no such row."""
        row = await self._pool.fetchrow(
            sql.SETTLED_VERSION_OF_EVENT,
            event.bucket,
            event.key,
            event.version_id,
            event.etag,
            event.event_time,
        )
        return None if row is None else int(row["id"])

    async def fail(self, object_id: int, reason: str) -> None:
        await self._pool.execute(sql.FAIL_OBJECT, object_id, reason)

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    async def missing(
        self, bucket: str, key: str, shown: list[str | None], *, retract: bool = False
    ) -> list[int]:
        """The loaded or unfinished versions of `key` the bucket no longer shows
        (`shown`: the version ids it still shows, None for an unversioned object); with
        `retract`, they are marked retracted. Returns their ledger ids."""
        ids = [v for v in shown if v is not None]
        statement = sql.RETRACT_MISSING if retract else sql.MISSING_VERSIONS
        rows = await self._pool.fetch(statement, bucket, key, ids, bool(shown))
        return [int(r["id"]) for r in rows]

    @staticmethod
    async def retract_unlisted(conn: DbConnection, bucket: str, table: str, applied: list[int]) -> int:
        """After a replay of `table`, in its swap's transaction (`conn`): its loaded versions that
        were not applied (the bucket no longer shows them) are retracted."""
        done = await conn.execute(sql.RETRACT_UNLISTED, bucket, table, applied)
        return int(done.split()[-1])

    async def ping(self) -> None:
        await self._pool.fetchval(sql.PING, timeout=5)

    async def record_event(
        self,
        message_id: str | None,
        event: ObjectEvent | None,
        object_id: int | None,
        outcome: str,
        detail: str | None,
    ) -> None:
        """One line of the event log (`ingest_events`): what was received and what became of it."""
        await self._pool.execute(
            sql.RECORD_EVENT,
            message_id,
            event.event_name if event else None,
            event.bucket if event else None,
            event.key if event else None,
            event.version_id if event else None,
            event.etag if event else None,
            event.sequencer if event else None,
            event.event_time if event else None,
            object_id,
            outcome,
            detail,
        )

    @asynccontextmanager
    async def hold(
        self, object_id: int, table: str, *, exclusive: bool = False, table_held: bool = False
    ) -> AsyncIterator[Held | None]:
        """The version's lock (after its table's), or None if another worker holds the version.

        `exclusive` takes the table's lock exclusively (a snapshot replaces the whole table);
        `table_held` skips the table lock: the caller (replay) holds it exclusively already."""
        lock_id = sql.table_lock_id(table)
        async with self._pool.acquire() as conn:
            if not table_held:
                await conn.execute(sql.TABLE_LOCK_EXCLUSIVE if exclusive else sql.TABLE_LOCK_SHARED, lock_id)
            try:
                if not await conn.fetchval(sql.TRY_LOCK_OBJECT, object_id):
                    yield None
                    return
                try:
                    yield Held(conn, object_id)
                finally:
                    await conn.execute(sql.UNLOCK_OBJECT, object_id)
            finally:
                if not table_held:
                    await conn.execute(
                        sql.TABLE_UNLOCK_EXCLUSIVE if exclusive else sql.TABLE_UNLOCK_SHARED, lock_id
                    )


class Held:
    """The ledger of one version, on the connection holding its lock (see Ledger.hold)."""

    def __init__(self, conn: DbConnection, object_id: int) -> None:
        self.conn = conn
        self.object_id = object_id

    async def checkpoint(self) -> Checkpoint:
        row = await self.conn.fetchrow(sql.LOAD_OBJECT, self.object_id)
        assert row is not None
        return Checkpoint(
            status=Status(row["status"]),
            lines_done=int(row["lines_done"]),
            bytes_done=int(row["bytes_done"]),
            rows_loaded=int(row["rows_loaded"]),
            rows_rejected=int(row["rows_rejected"]),
            batches=int(row["batches"]),
            order_key=str(row["order_key"]),
            attempts=int(row["attempts"]),
            progress_attempt=int(row["progress_attempt"]),
            error=row["error"],
        )

    async def reorder(self, later_key: str) -> bool:
        """Move this loaded version later in upload order and have it applied again (see
        sql.REORDER_OBJECT); under the version's lock, so no worker is applying it meanwhile.
        False when it already sorts there (or is not loaded)."""
        async with self.conn.transaction():
            if await self.conn.fetchval(sql.REORDER_OBJECT, self.object_id, later_key) is None:
                return False
            await self.conn.execute(sql.DELETE_REJECTS, self.object_id)
            return True

    async def reset(self) -> None:
        """Start the version afresh (replay): no checkpoint, no rejects."""
        async with self.conn.transaction():
            await self.conn.execute(sql.RESET_OBJECT, self.object_id)
            await self.conn.execute(sql.DELETE_REJECTS, self.object_id)

    async def start(self, *, upload_id: str | None, trace_id: str | None) -> int:
        """Count one more attempt; returns its number."""
        return int(await self.conn.fetchval(sql.START_OBJECT, self.object_id, upload_id, trace_id))

    async def lock_checkpoint(self, lines_done: int) -> None:
        """Inside a batch's transaction: lock the checkpoint, which must still be where we left it."""
        row = await self.conn.fetchrow(sql.CHECKPOINT_FOR_UPDATE, self.object_id)
        assert row is not None
        if row["status"] != Status.PROCESSING or row["lines_done"] != lines_done:
            raise Superseded(
                f"object {self.object_id} moved on to line {row['lines_done']} ({row['status']})"
            )

    async def advance(self, *, end_line: int, end_offset: int, rows_loaded: int, rows_rejected: int) -> None:
        """Inside a batch's transaction: the new checkpoint, and this attempt made progress."""
        await self.conn.execute(
            sql.ADVANCE_OBJECT, self.object_id, end_line, end_offset, rows_loaded, rows_rejected
        )

    async def add_rejects(self, rejects: list[tuple[int, int, str, str]]) -> None:
        await self.conn.copy_records_to_table("ingest_rejects", records=rejects, columns=sql.REJECT_COLUMNS)

    async def finish(self, size: int | None) -> None:
        await self.conn.execute(sql.FINISH_OBJECT, self.object_id, size)

    async def fail(self, reason: str) -> None:
        await self.conn.execute(sql.FAIL_OBJECT, self.object_id, reason)

    async def note_error(self, reason: str) -> None:
        """The last error of an attempt that did not finish (kept for the give-up reason)."""
        await self.conn.execute(sql.NOTE_ERROR, self.object_id, reason[:2000])
