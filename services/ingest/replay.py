"""`hiring replay`: rebuild tables from the raw bucket's history through the normal load path.

Each table is rebuilt into a copy (`<table>__replay`) from every object version in the bucket, in
upload order, then swapped in with one transaction, so readers never see a half-built table.
While a table is rebuilt its exclusive advisory lock holds the consumers' batches back (they
wait, their messages kept invisible); they resume against the new table after the swap.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
import structlog

from services.ingest import sql
from services.ingest.events import ObjectEvent
from services.ingest.loader import Loader, ObjectGone, Outcome
from shared.dictionary import TABLES, is_csv_key, table_for_key

log = structlog.get_logger("ingest.replay")


class ReplayReport(msgspec.Struct):
    table: str
    objects: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    failed: int = 0
    rows_before: int = 0
    rows_after: int = 0


async def _bucket_versions(s3: Any, bucket: str) -> list[ObjectEvent]:
    """Every version of every CSV object in the bucket, as the event that created it would say."""
    found: list[ObjectEvent] = []
    paginator = s3.get_paginator("list_object_versions")
    async for page in paginator.paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            if not is_csv_key(v["Key"]):
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
    pool: asyncpg.Pool, loader: Loader, s3: Any, bucket: str, tables: Sequence[str]
) -> list[ReplayReport]:
    events = await _bucket_versions(s3, bucket)
    reports = []
    for name in tables:
        mine = [e for e in events if table_for_key(e.key) == name]
        reports.append(await _replay_table(pool, loader, name, mine))
    return reports


async def _replay_table(
    pool: asyncpg.Pool, loader: Loader, name: str, events: list[ObjectEvent]
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
            plan: list[tuple[str, int, Any, ObjectEvent]] = []
            for ev in events:
                try:
                    resolved = await loader.resolve(ev)
                except ObjectGone as exc:
                    log.warning("version unreadable, skipped", key=ev.key, reason=str(exc))
                    report.failed += 1
                    continue
                registered = await loader.register(ev, resolved, name)
                plan.append((registered.order_key, registered.object_id, resolved, ev))
            plan.sort(key=lambda p: p[0])
            for _, object_id, resolved, ev in plan:
                result = await loader.apply(
                    object_id, ev.bucket, ev.key, resolved, table, target=shadow, replaying=True
                )
                report.objects += 1
                if result.outcome is Outcome.LOADED:
                    report.rows_loaded += result.rows_loaded
                    report.rows_rejected += result.rows_rejected
                else:
                    report.failed += 1
                    log.warning(
                        "version not applied", key=ev.key, outcome=result.outcome.value, detail=result.detail
                    )
            async with lock_conn.transaction():
                # The swap: one transaction, so a reader sees the old table or the new one, never neither.
                for statement in sql.swap_in_shadow(name, shadow):
                    await lock_conn.execute(statement)
            report.rows_after = int(await lock_conn.fetchval(sql.count_rows(name)))
        finally:
            await lock_conn.execute(sql.TABLE_UNLOCK_EXCLUSIVE, sql.table_lock_id(name))
    log.info("table replayed", **msgspec.structs.asdict(report), at=datetime.now(UTC).isoformat())
    return report
