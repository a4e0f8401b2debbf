"""The record handler: one S3 event in, one FileOutcome out.

event -> (ignored?) -> resolve the version (source) -> register it (ledger) -> hold its lock ->
poison check -> FileLoad. The consumer (SQS bookkeeping) and telemetry (spans, metrics, the
"object loaded" log line) both work from the returned FileOutcome; nothing here knows about
either.
"""

from __future__ import annotations

import enum
import uuid

import msgspec
import structlog

from services.ingest.events import EventKind, ObjectEvent
from services.ingest.ledger import Held, Ledger, Status
from services.ingest.load import BatchObserver, FileLoad, LoadOptions, unobserved
from services.ingest.order import order_key
from services.ingest.ports import ObjectGone, ObjectKind, ObjectStore, ObjectVersion
from services.ingest.replay import replay_table
from shared.dictionary import TABLES, is_backup_key, is_csv_key, table_for_key

log = structlog.get_logger("ingest.handler")


class OutcomeKind(enum.StrEnum):
    LOADED = "loaded"  # applied now
    DUPLICATE = "duplicate"  # this version was already applied (or failed for good)
    BUSY = "busy"  # another worker holds this version right now: look again later
    FAILED = "failed"  # cannot ever be applied (unreadable, gone, no table, gave up): in the ledger
    IGNORED = "ignored"  # not ours to apply (another bucket, not a CSV key, a backup, ...)
    RETRACTED = "retracted"  # an object removed: its versions retracted, its table rebuilt


class FileOutcome(msgspec.Struct, frozen=True):
    """What became of one event: the record the consumer and telemetry work from."""

    kind: OutcomeKind
    event: ObjectEvent
    table: str | None
    object_id: int | None = None
    version: ObjectVersion | None = None
    rows_loaded: int = 0
    rows_rejected: int = 0
    batches: int = 0
    seconds: float = 0.0
    detail: str | None = None

    @property
    def upload_id(self) -> str | None:
        return self.version.metadata.get("upload-id") if self.version else None


class HandlerOptions(msgspec.Struct, frozen=True):
    raw_bucket: str | None = None  # events of any other bucket are ignored (None: take every bucket)
    max_stalls: int = 3  # attempts in a row without progress before a version is given up
    load: LoadOptions = msgspec.field(default_factory=LoadOptions)


def no_table_reason(key: str) -> str:
    return (
        f"no table for key {key!r}: expected a first path segment or a file name"
        f" starting with one of {', '.join(sorted(TABLES))}"
    )


class ObjectHandler:
    def __init__(
        self,
        ledger: Ledger,
        store: ObjectStore,
        options: HandlerOptions | None = None,
        *,
        observe: BatchObserver = unobserved,
    ) -> None:
        self.ledger = ledger
        self.store = store
        self.options = options or HandlerOptions()
        self.observe = observe

    def ignored_because(self, event: ObjectEvent) -> str | None:
        """Why this event is not ours to apply, or None."""
        if self.options.raw_bucket is not None and event.bucket != self.options.raw_bucket:
            return f"bucket {event.bucket!r} is not the raw bucket {self.options.raw_bucket!r}"
        if event.kind is EventKind.OTHER:
            return f"event {event.event_name}"
        if is_backup_key(event.key):
            return "a backup, not an upload"
        if not is_csv_key(event.key):
            return "not a .csv key"
        return None

    async def record_event(
        self,
        message_id: str | None,
        event: ObjectEvent | None,
        outcome: FileOutcome | str,
        detail: str | None,
    ) -> None:
        """The event log line of one received event (or of an undecodable message)."""
        if isinstance(outcome, FileOutcome):
            await self.ledger.record_event(message_id, event, outcome.object_id, outcome.kind.value, detail)
        else:
            await self.ledger.record_event(message_id, event, None, outcome, detail)

    async def ping(self) -> None:
        """Raises while the database cannot be reached."""
        await self.ledger.ping()

    async def handle(self, event: ObjectEvent, *, trace_id: str | None = None) -> FileOutcome:
        """Apply the object version an event names, exactly once."""
        if (why := self.ignored_because(event)) is not None:
            return FileOutcome(OutcomeKind.IGNORED, event, None, detail=why)
        if event.kind is EventKind.REMOVED:
            return await self.retract(event)
        table = table_for_key(event.key)
        try:
            version = await self.store.resolve(event)
        except ObjectGone as exc:
            # a repeated or late delivery for a version applied (or retracted) before it was deleted:
            # the ledger already says what became of it, so this is no new failure
            if (settled := await self.ledger.settled_version_of(event)) is not None:
                return FileOutcome(OutcomeKind.DUPLICATE, event, table, settled)
            reg = await self.ledger.register(event, None, table)
            if reg.status is not Status.PROCESSING:
                return FileOutcome(OutcomeKind.DUPLICATE, event, table, reg.object_id)
            await self.ledger.fail(reg.object_id, str(exc))
            return FileOutcome(OutcomeKind.FAILED, event, table, reg.object_id, detail=str(exc))
        reg = await self.ledger.register(event, version, table)
        if event.version_id is None and reg.status is Status.LOADED and table is not None:
            later = order_key(event.event_time, event.sequencer, event.key, version.version)
            if later > reg.order_key and await self._content_came_back(version):
                async with self.ledger.hold(reg.object_id, table) as held:
                    if held is None:
                        return FileOutcome(OutcomeKind.BUSY, event, table, reg.object_id, version)
                    if await held.reorder(later):
                        log.info(
                            "version re-ordered by a later event for its content", object_id=reg.object_id
                        )
                        reg = reg._replace(status=Status.PROCESSING, order_key=later)
        if reg.status is not Status.PROCESSING:
            return FileOutcome(OutcomeKind.DUPLICATE, event, table, reg.object_id, version)
        if table is None:
            reason = no_table_reason(event.key)
            await self.ledger.fail(reg.object_id, reason)
            return FileOutcome(OutcomeKind.FAILED, event, table, reg.object_id, version, detail=reason)
        exclusive = reg.kind is ObjectKind.SNAPSHOT
        async with self.ledger.hold(reg.object_id, table, exclusive=exclusive) as held:
            if held is None:
                return FileOutcome(OutcomeKind.BUSY, event, table, reg.object_id, version)
            checkpoint = await held.checkpoint()
            if checkpoint.status is not Status.PROCESSING:
                return FileOutcome(OutcomeKind.DUPLICATE, event, table, reg.object_id, version)
            if checkpoint.stalls >= self.options.max_stalls:
                reason = (
                    f"given up after {checkpoint.stalls} attempts without progress"
                    f" (last error: {checkpoint.error or 'the worker stopped'})"
                )
                await held.fail(reason)
                return FileOutcome(OutcomeKind.FAILED, event, table, reg.object_id, version, detail=reason)
            await held.start(upload_id=_upload_id(version), trace_id=trace_id)
            load = FileLoad(
                held=held,
                store=self.store,
                version=version,
                table=TABLES[table],
                checkpoint=checkpoint,
                options=self.options.load,
                observe=self.observe,
            )
            try:
                result = await load.run()
            except ObjectGone as exc:
                await held.fail(str(exc))
                return FileOutcome(OutcomeKind.FAILED, event, table, reg.object_id, version, detail=str(exc))
            except Exception as exc:
                # kept for the give-up reason; the attempt itself is retried through the queue
                await _note_error(held, exc)
                raise
            return FileOutcome(
                OutcomeKind.LOADED,
                event,
                table,
                reg.object_id,
                version,
                rows_loaded=result.rows_loaded,
                rows_rejected=result.rows_rejected,
                batches=result.batches,
                seconds=result.seconds,
            )

    async def _content_came_back(self, version: ObjectVersion) -> bool:
        """Whether another content was uploaded under the key too (A, B, A): only then does a later
        event for this version's content change what the table holds. Several events for one upload
        (moto sends two for a multipart upload) then re-apply nothing."""
        listed = await self.store.visible_versions(version.bucket, version.key)
        return any(v.key == version.key and v.etag != version.etag for v in listed)

    async def retract(self, event: ObjectEvent) -> FileOutcome:
        """An object removed (a version deleted, or a delete marker): what its versions contributed
        is undone. The versions of the key the bucket no longer shows are marked retracted, then
        the table is rebuilt from the versions it does show, in upload order (the replay path): each
        id they wrote returns to the latest remaining upload's value, or disappears. A removal whose
        versions are already retracted changes nothing (a duplicate delivery)."""
        table = table_for_key(event.key)
        if table is None:
            return FileOutcome(OutcomeKind.IGNORED, event, None, detail=no_table_reason(event.key))
        shown = [
            v.version_id
            for v in await self.store.visible_versions(event.bucket, event.key)
            if v.key == event.key
        ]
        retracted = await self.ledger.missing(event.bucket, event.key, shown)
        if not retracted:
            return FileOutcome(OutcomeKind.DUPLICATE, event, table, detail="nothing left to retract")
        # the rebuild marks the loaded ones retracted in its swap's transaction: status and rows agree
        report = await replay_table(self.ledger, self.store, event.bucket, table, self.options.load)
        await self.ledger.missing(event.bucket, event.key, shown, retract=True)  # unfinished ones
        detail = (
            f"retracted ledger rows {', '.join(map(str, retracted))}; {table} rebuilt from"
            f" {report.objects} object version(s): {report.rows_before} -> {report.rows_after} rows"
        )
        return FileOutcome(OutcomeKind.RETRACTED, event, table, retracted[0], detail=detail)


async def _note_error(held: Held, exc: BaseException) -> None:
    try:
        await held.note_error(f"{type(exc).__name__}: {exc}")
    except Exception:  # the connection may be what failed: the error is logged by the consumer anyway
        log.debug("could not note the error in the ledger", exc_info=True)


def _upload_id(version: ObjectVersion) -> str | None:
    value = version.metadata.get("upload-id")
    if not value:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None
