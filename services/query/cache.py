"""The metrics cache: both metrics of a year, computed once per data version.

A result is computed in one REPEATABLE READ transaction and kept with that transaction's snapshot.
Every request first asks the database (one index probe on `data_changes`, see migration 002) whether
a write committed that the snapshot could not see; only then is the year recomputed, once, however
many requests are waiting. So a cached answer is never older than the data committed before the
request arrived, and a request costs one tiny query instead of an aggregation over the employees.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

import asyncpg
import msgspec

from services.query import metrics, sql
from services.query.http import encode


class YearMetrics(msgspec.Struct, frozen=True):
    """Encoded answers of both metrics for one year, and the snapshot they were read under."""

    snapshot: str
    hires_json: bytes
    hires_csv: bytes
    departments_json: bytes
    departments_csv: bytes


def shape(data: sql.YearData) -> YearMetrics:
    hires = metrics.hires_rows(data.pairs)
    departments = metrics.departments_above_mean(data.pairs, data.department_count)
    return YearMetrics(
        snapshot=data.snapshot,
        hires_json=encode(hires),
        hires_csv=metrics.render_csv(metrics.HIRES_COLUMNS, hires),
        departments_json=encode(departments),
        departments_csv=metrics.render_csv(metrics.DEPARTMENTS_COLUMNS, departments),
    )


class MetricsCache:
    def __init__(self, pool: asyncpg.Pool, *, max_years: int = 32) -> None:
        self._pool = pool
        self._max_years = max_years
        self._entries: OrderedDict[int, YearMetrics] = OrderedDict()
        self._locks: dict[int, asyncio.Lock] = {}

    async def _current(self, entry: YearMetrics | None) -> bool:
        return entry is not None and not await sql.changed_since(self._pool, entry.snapshot)

    async def year(self, year: int) -> YearMetrics:
        entry = self._entries.get(year)
        if await self._current(entry):
            assert entry is not None
            self._entries.move_to_end(year)
            return entry
        lock = self._locks.setdefault(year, asyncio.Lock())
        async with lock:
            # Another request may have recomputed while this one waited; its snapshot may still
            # predate a commit this request must see, hence the second check.
            newer = self._entries.get(year)
            if newer is not None and newer is not entry and await self._current(newer):
                return newer
            async with self._pool.acquire() as conn:
                data = await sql.read_year(conn, year)
            fresh = shape(data)
            self._entries[year] = fresh
            self._entries.move_to_end(year)
            while len(self._entries) > self._max_years:
                evicted, _ = self._entries.popitem(last=False)
                self._locks.pop(evicted, None)
            return fresh
