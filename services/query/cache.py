"""The metrics cache: both metrics of a year, read from the hires projection once per data version.

Reading a year from the projection (migration 005) costs the answer's size, not the employees
table's, so the cache no longer hides an O(employees) aggregation; it keeps two things that still
pay:

- At rest, a request costs one index probe on `data_changes` (migration 002: did a write commit
  that the cached result's snapshot could not see?) instead of a read and a re-encoding.
- While data is loading (a commit every few milliseconds) concurrent requests share reads: a
  request joins a read that STARTED after it arrived (that read's snapshot is newer than every
  commit before the request, so it is fresh for it), and otherwise waits for the read in flight
  to end and starts the next one, which every request arriving meanwhile shares. At most one read
  per year runs at a time and a request waits for at most two, instead of queueing behind one
  recompute per earlier waiter.

Never stale: a cached entry is returned only after the probe says nothing committed since its
snapshot, and a fresh read's snapshot is always taken after the request arrived.
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


class _Year:
    """Reads of one year: how many have started, and the one in flight."""

    __slots__ = ("entry", "running", "started")

    def __init__(self) -> None:
        self.entry: YearMetrics | None = None
        self.started = 0  # reads started so far
        self.running: asyncio.Task[YearMetrics] | None = None


class MetricsCache:
    def __init__(self, pool: asyncpg.Pool, *, max_years: int = 32) -> None:
        self._pool = pool
        self._max_years = max_years
        self._years: OrderedDict[int, _Year] = OrderedDict()

    async def _current(self, entry: YearMetrics | None) -> bool:
        return entry is not None and not await sql.changed_since(self._pool, entry.snapshot)

    async def year(self, year: int) -> YearMetrics:
        """Both metrics of `year`, as of a snapshot taken no earlier than this call."""
        slot = self._years.get(year)
        if slot is None:
            slot = self._years[year] = _Year()
            while len(self._years) > self._max_years:
                self._evict()
        self._years.move_to_end(year)
        arrived = slot.started  # a read numbered above this one starts after this request arrived
        if await self._current(slot.entry):
            assert slot.entry is not None
            return slot.entry
        while True:
            running = slot.running
            if running is None:
                return await asyncio.shield(self._start(year, slot))
            if slot.started > arrived:
                return await asyncio.shield(running)
            # The read in flight started before this request arrived: it may miss a commit this
            # request must see. Wait for it, then share (or start) the next one.
            await asyncio.wait([running])
            if await self._current(slot.entry):
                assert slot.entry is not None
                return slot.entry

    def _start(self, year: int, slot: _Year) -> asyncio.Task[YearMetrics]:
        slot.started += 1
        task = asyncio.create_task(self._read(year))

        def done(t: asyncio.Task[YearMetrics]) -> None:
            if slot.running is t:
                slot.running = None
            if not t.cancelled() and t.exception() is None:
                fresh = t.result()
                # Reads of one year never overlap, so a finished read is the newest one.
                slot.entry = fresh

        slot.running = task
        task.add_done_callback(done)
        return task

    async def _read(self, year: int) -> YearMetrics:
        async with self._pool.acquire() as conn:
            data = await sql.read_year(conn, year)
        return shape(data)

    def _evict(self) -> None:
        for year, slot in self._years.items():
            if slot.running is None:
                del self._years[year]
                return
        self._years.popitem(last=False)  # every year has a read in flight: drop the oldest anyway
