"""Keeps the hires projection's unfolded backlog small: the query service's background folder.

Writers append one delta row per statement and UTC year (migration 005); a metric reads its year's
folded cells plus those deltas, so the backlog is what a read pays beyond its answer's size. This
task folds them into `hires_cells` whenever the backlog reaches `min_cells` cells or `max_age`.
Folding changes no answer (every snapshot sees each delta once, folded or not), takes no lock a
writer waits for, and runs in one session at a time across all replicas (the others skip).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Final

import asyncpg
import msgspec
import structlog
from aiohttp import web

from services.query import sql
from services.query.state import POOL

log = structlog.get_logger("query.projection")


class FoldPolicy(msgspec.Struct, frozen=True):
    """When to fold: every `interval` seconds, if the backlog has `min_cells` cells or is `max_age` old."""

    interval: float = 0.2
    min_cells: int = 50_000
    max_age: timedelta = timedelta(seconds=1)


DEFAULT_POLICY: Final = FoldPolicy()


async def fold_forever(pool: asyncpg.Pool, policy: FoldPolicy = DEFAULT_POLICY) -> None:
    """Fold on `policy` until cancelled; a database error is logged and retried next time."""
    while True:
        try:
            await sql.fold(pool, policy.min_cells, policy.max_age)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("projection.fold_failed", error=str(exc))
        await asyncio.sleep(policy.interval)


async def folding(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the folder runs while the app does (after the pool exists)."""
    task = asyncio.create_task(fold_forever(app[POOL]))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
