"""`hiring replay`: rebuild tables from the raw bucket's history through the normal load path.

Each table is rebuilt into a copy (`<table>__replay`) from every object version in the bucket, in
upload order, then swapped in with one transaction, so readers never see a half-built table.
While a table is rebuilt its exclusive advisory lock holds the consumers' batches back (they
wait, their messages kept invisible); they resume against the new table after the swap.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec
import structlog

from services.ingest import sql
from services.ingest.events import ObjectEvent
from services.ingest.ledger import Ledger, Registered
from services.ingest.load import FileLoad, LoadOptions
from services.ingest.ports import ListedVersion, ObjectGone, ObjectStore, ObjectVersion
from shared.dictionary import TABLES, is_backup_key, is_csv_key, table_for_key

log = structlog.get_logger("ingest.replay")


class ReplayReport(msgspec.Struct):
    table: str
    objects: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    failed: int = 0
    rows_before: int = 0
    rows_after: int = 0
    retracted: int = 0  # loaded versions the bucket no longer shows (deleted): marked retracted


def _as_event(v: ListedVersion) -> ObjectEvent:
    """A listed version as the event that created it would say (the listing has no sequencer)."""
    return ObjectEvent(
        event_name="ObjectCreated:Replay",
        event_time=v.last_modified,
        bucket=v.bucket,
        key=v.key,
        size=v.size,
        etag=v.etag,
        version_id=v.version_id,
        sequencer=None,
    )


async def table_versions(store: ObjectStore, bucket: str, table: str) -> list[ObjectEvent]:
    """Every version of the table's objects that the bucket shows, as events."""
    return [
        _as_event(v)
        for v in await store.visible_versions(bucket)
        if is_csv_key(v.key) and not is_backup_key(v.key) and table_for_key(v.key) == table
    ]


async def replay(
    ledger: Ledger, store: ObjectStore, bucket: str, tables: Sequence[str], options: LoadOptions | None = None
) -> list[ReplayReport]:
    return [await replay_table(ledger, store, bucket, name, options) for name in tables]


async def replay_table(
    ledger: Ledger, store: ObjectStore, bucket: str, name: str, options: LoadOptions | None = None
) -> ReplayReport:
    """Rebuild one table from the versions the bucket shows, then swap it in (one transaction)."""
    options = options or LoadOptions()
    pool = ledger.pool
    table = TABLES[name]
    shadow = f"{name}__replay"
    report = ReplayReport(name)
    async with pool.acquire() as lock_conn:
        await lock_conn.execute(sql.TABLE_LOCK_EXCLUSIVE, sql.table_lock_id(name))
        try:
            report.rows_before = int(await lock_conn.fetchval(sql.count_rows(name)))
            for statement in sql.create_shadow(name, shadow):
                await lock_conn.execute(statement)
            plan: list[tuple[Registered, ObjectVersion]] = []
            for ev in await table_versions(store, bucket, name):
                try:
                    version = await store.resolve(ev)
                except ObjectGone as exc:
                    log.warning("version unreadable, skipped", key=ev.key, reason=str(exc))
                    report.failed += 1
                    continue
                plan.append((await ledger.register(ev, version, name), version))
            plan.sort(key=lambda p: p[0].order_key)
            applied: list[int] = []
            for registered, version in plan:
                report.objects += 1
                async with ledger.hold(registered.object_id, name, table_held=True) as held:
                    if held is None:
                        report.failed += 1
                        log.warning("version busy, not applied", key=version.key)
                        continue
                    await held.reset()
                    load = FileLoad(
                        held=held,
                        store=store,
                        version=version,
                        table=table,
                        checkpoint=await held.checkpoint(),
                        target=shadow,
                        options=options,
                    )
                    try:
                        result = await load.run()
                    except ObjectGone as exc:
                        await held.fail(str(exc))
                        report.failed += 1
                        log.warning("version not applied", key=version.key, detail=str(exc))
                        continue
                applied.append(registered.object_id)
                report.rows_loaded += result.rows_loaded
                report.rows_rejected += result.rows_rejected
            async with lock_conn.transaction():
                # The swap: one transaction, so a reader sees the old table or the new one, never neither.
                for statement in sql.swap_in_shadow(name, shadow):
                    await lock_conn.execute(statement)
                report.retracted = await ledger.retract_unlisted(lock_conn, bucket, name, applied)
            report.rows_after = int(await lock_conn.fetchval(sql.count_rows(name)))
        finally:
            await lock_conn.execute(sql.TABLE_UNLOCK_EXCLUSIVE, sql.table_lock_id(name))
    log.info("table replayed", **msgspec.structs.asdict(report), at=datetime.now(UTC).isoformat())
    return report
