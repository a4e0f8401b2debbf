"""The metrics cache: both metrics of a year, read from the hires projection once per data version.

Reading a year from the projection (migration 005) costs the answer's size, not the employees
table's, so the cache no longer hides an O(employees) aggregation; it keeps two things that still
pay:

- At rest, a request costs a share of one index probe on `data_changes` (migration 002: did a
  write commit that the cached result's snapshot could not see?) instead of a read and a
  re-encoding; concurrent requests share one probe (`Fresh`), so the probes' rate is bounded by
  their round trip, not by the request rate.
- While data is loading (a commit every few milliseconds) concurrent requests share reads the
  same way: a request joins a read that STARTED after it arrived (that read's snapshot is newer
  than every commit before the request, so it is fresh for it), and otherwise waits for the read
  in flight to end and shares the next one. At most one read per year runs at a time and a
  request waits for at most two, instead of queueing behind one recompute per earlier waiter.

Never stale: a cached entry is returned only after the probe says nothing committed since its
snapshot, and a fresh read's snapshot is always taken after the request arrived.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from functools import cached_property
from typing import Generic, TypeVar

import asyncpg

from services.query import metrics, sql
from services.query.http import encode
from services.query.schemas import DepartmentRow, HireRow

T = TypeVar("T")


class YearMetrics:
    """Both metrics of one year, the snapshot they were read under, and each encoding once asked.

    The rows are shaped at read time; each encoding (JSON, CSV) is made on its first request and
    kept, so a read under load pays only for the formats actually asked for.
    """

    def __init__(self, snapshot: str, hires: list[HireRow], departments: list[DepartmentRow]) -> None:
        self.snapshot = snapshot  # pg_snapshot as text, for sql.changed_since
        self.hires = hires
        self.departments = departments

    @cached_property
    def hires_json(self) -> bytes:
        return encode(self.hires)

    @cached_property
    def hires_csv(self) -> bytes:
        return metrics.render_csv(metrics.HIRES_COLUMNS, self.hires)

    @cached_property
    def departments_json(self) -> bytes:
        return encode(self.departments)

    @cached_property
    def departments_csv(self) -> bytes:
        return metrics.render_csv(metrics.DEPARTMENTS_COLUMNS, self.departments)


def shape(data: sql.YearData) -> YearMetrics:
    return YearMetrics(
        data.snapshot,
        metrics.hires_rows(data.pairs),
        metrics.departments_above_mean(data.pairs, data.department_count),
    )


class Fresh(Generic[T]):
    """Single-flight runs of `run` for callers that each need a run begun after they called.

    At most one run is in flight. A caller shares the run in flight if that run had not yet begun
    (its task had not executed its first step, so its statements' snapshots come later) when the
    caller arrived; otherwise it waits for that run to end and shares the next one, which every
    caller arriving meanwhile shares too. So N concurrent callers cost at most two runs, not N, and
    none gets a result older than its own arrival.
    """

    __slots__ = ("_begun", "_run", "_running", "_started")

    def __init__(self, run: Callable[[], Awaitable[T]]) -> None:
        self._run = run
        self._started = 0  # runs created so far; the one in flight is number _started
        self._begun = 0  # runs that have begun executing
        self._running: asyncio.Task[T] | None = None

    @property
    def busy(self) -> bool:
        return self._running is not None

    async def get(self) -> T:
        arrived = self._begun  # a run numbered above this one begins after this call
        while True:
            running = self._running
            if running is None:
                return await asyncio.shield(self._start())
            if self._started > arrived:
                return await asyncio.shield(running)
            await asyncio.wait([running])

    def _start(self) -> asyncio.Task[T]:
        self._started += 1
        number = self._started

        async def run() -> T:
            self._begun = number
            return await self._run()

        task = asyncio.ensure_future(run())

        def done(t: asyncio.Task[T]) -> None:
            if self._running is t:
                self._running = None
            if not t.cancelled():
                t.exception()  # retrieved: a failed run is reported to its callers, not logged twice

        self._running = task
        task.add_done_callback(done)
        return task


class _Year:
    """One year's newest answers, and the shared probes and reads that keep them fresh."""

    __slots__ = ("_pool", "_year", "entry", "probe", "read")

    def __init__(self, pool: asyncpg.Pool, year: int) -> None:
        self._pool = pool
        self._year = year
        self.entry: YearMetrics | None = None
        self.probe = Fresh(self._check)
        self.read = Fresh(self._load)

    async def _check(self) -> YearMetrics | None:
        """The entry, if nothing committed since its snapshot that this probe's snapshot sees."""
        entry = self.entry
        if entry is None or await sql.changed_since(self._pool, entry.snapshot):
            return None
        return entry

    async def _load(self) -> YearMetrics:
        async with self._pool.acquire() as conn:
            data = await sql.read_year(conn, self._year)
        # Reads of one year never overlap, so a finished read is the newest one.
        self.entry = shape(data)
        return self.entry


class MetricsCache:
    def __init__(self, pool: asyncpg.Pool, *, max_years: int = 32) -> None:
        self._pool = pool
        self._max_years = max_years
        self._years: OrderedDict[int, _Year] = OrderedDict()

    async def year(self, year: int) -> YearMetrics:
        """Both metrics of `year`, as of a snapshot taken no earlier than this call."""
        slot = self._years.get(year)
        if slot is None:
            slot = self._years[year] = _Year(self._pool, year)
            while len(self._years) > self._max_years:
                self._evict()
        self._years.move_to_end(year)
        if slot.entry is not None and (current := await slot.probe.get()) is not None:
            return current
        return await slot.read.get()

    def _evict(self) -> None:
        for year, slot in self._years.items():
            if not (slot.read.busy or slot.probe.busy):
                del self._years[year]
                return
        self._years.popitem(last=False)  # every year has a run in flight: drop the oldest anyway
