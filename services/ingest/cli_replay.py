"""Composition root of `hiring replay`."""

from __future__ import annotations

import msgspec

from services.ingest.ledger import Ledger
from services.ingest.replay import replay
from services.ingest.source import S3ObjectStore
from shared.aws import AwsClients
from shared.config import Settings
from shared.db import connect, create_pool, migrate
from shared.dictionary import TABLES


async def run_replay(settings: Settings, tables: list[str] | None) -> int:
    conn = await connect(settings.db)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    pool = await create_pool(settings.db, min_size=1, max_size=4)
    try:
        async with AwsClients(settings.aws).s3() as s3:
            # departments and jobs first: cheap, and the metrics join on them
            order = [t for t in ("departments", "jobs", "hired_employees") if t in (tables or list(TABLES))]
            reports = await replay(Ledger(pool), S3ObjectStore(s3), settings.bucket, order)
    finally:
        await pool.close()
    for report in reports:
        print(msgspec.json.encode(report).decode())
    return 1 if any(r.failed for r in reports) else 0
