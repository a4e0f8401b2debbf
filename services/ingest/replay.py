"""`hiring replay`: rebuild tables from the raw bucket's history through the normal load path.

Each table is rebuilt into a copy (`<table>__replay`) from every object version in the bucket, in
upload order, then swapped in with one transaction, so readers never see a half-built table.
While a table is rebuilt its exclusive advisory lock holds the consumers' batches back (they
wait, their messages kept invisible); they resume against the new table after the swap.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import asyncpg
import msgspec
import structlog

from services.ingest import sql
from services.ingest.events import ObjectEvent
from services.ingest.handler import BACKUP_PREFIX
from services.ingest.ledger import Ledger, Registered
from services.ingest.load import FileLoad, LoadOptions
from services.ingest.ports import ObjectGone, ObjectStore, ObjectVersion
from shared.dictionary import TABLES, is_csv_key, table_for_key

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = structlog.get_logger("ingest.replay")


class ReplayReport(msgspec.Struct):
    table: str
    objects: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    failed: int = 0
    rows_before: int = 0
    rows_after: int = 0


async def _bucket_versions(s3: S3Client, bucket: str) -> list[ObjectEvent]:
    """Every version of every CSV object in the bucket, as the event that created it would say."""
    found: list[ObjectEvent] = []
    paginator = s3.get_paginator("list_object_versions")
    async for page in paginator.paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            if not is_csv_key(v["Key"]) or v["Key"].startswith(BACKUP_PREFIX):
                continue
            vid = v.get("VersionId")
            found.append(
                ObjectEvent(
                    event_name="ObjectCreated:Replay",
                    event_time=v["LastModified"].astimezone(UTC),
                    bucket=bucket,
                    key=v["Key"],
                    size=v.get("Size"),
                    etag=str(v.get("ETag", "")).strip('"') or None,
                    version_id=None if vid in (None, "null") else vid,
                    sequencer=None,
                )
            )
    return found


async def replay(
    pool: asyncpg.Pool,
    store: ObjectStore,
    s3: S3Client,
    bucket: str,
    tables: Sequence[str],
    options: LoadOptions | None = None,
) -> list[ReplayReport]:
    events = await _bucket_versions(s3, bucket)
    ledger = Ledger(pool)
    reports = []
    for name in tables:
        mine = [e for e in events if table_for_key(e.key) == name]
        reports.append(await _replay_table(pool, ledger, store, name, mine, options or LoadOptions()))
    return reports


async def _replay_table(
    pool: asyncpg.Pool,
    ledger: Ledger,
    store: ObjectStore,
    name: str,
    events: list[ObjectEvent],
    options: LoadOptions,
) -> ReplayReport:
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
            for ev in events:
                try:
                    version = await store.resolve(ev)
                except ObjectGone as exc:
                    log.warning("version unreadable, skipped", key=ev.key, reason=str(exc))
                    report.failed += 1
                    continue
                plan.append((await ledger.register(ev, version, name), version))
            plan.sort(key=lambda p: p[0].order_key)
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
                report.rows_loaded += result.rows_loaded
                report.rows_rejected += result.rows_rejected
            async with lock_conn.transaction():
                # The swap: one transaction, so a reader sees the old table or the new one, never neither.
                for statement in sql.swap_in_shadow(name, shadow):
                    await lock_conn.execute(statement)
            report.rows_after = int(await lock_conn.fetchval(sql.count_rows(name)))
        finally:
            await lock_conn.execute(sql.TABLE_UNLOCK_EXCLUSIVE, sql.table_lock_id(name))
    log.info("table replayed", **msgspec.structs.asdict(report), at=datetime.now(UTC).isoformat())
    return report
