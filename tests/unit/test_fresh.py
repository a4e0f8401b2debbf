"""`Fresh`, the single-flight runs behind the metrics cache's probes and reads (no server)."""

from __future__ import annotations

import asyncio

import pytest

from services.query.cache import Fresh


class Clock:
    """A run that records when it started (a counter of events) and takes `gate` to finish."""

    def __init__(self) -> None:
        self.events = 0
        self.runs: list[int] = []  # the event count at each run's start
        self.gate = asyncio.Event()

    def tick(self) -> int:
        self.events += 1
        return self.events

    async def run(self) -> int:
        started = self.tick()
        self.runs.append(started)
        await self.gate.wait()
        return started


async def test_callers_arriving_together_share_one_run() -> None:
    clock = Clock()
    fresh = Fresh(clock.run)
    calls = [asyncio.ensure_future(fresh.get()) for _ in range(50)]
    await asyncio.sleep(0)
    clock.gate.set()
    results = await asyncio.gather(*calls)
    assert len(clock.runs) == 1
    assert set(results) == {clock.runs[0]}


async def test_a_caller_never_gets_a_run_that_started_before_it_arrived() -> None:
    clock = Clock()
    fresh = Fresh(clock.run)
    first = asyncio.ensure_future(fresh.get())
    await asyncio.sleep(0)  # the first run is in flight
    arrivals = []
    late = []
    for _ in range(20):
        arrivals.append(clock.tick())
        late.append(asyncio.ensure_future(fresh.get()))
    await asyncio.sleep(0)
    clock.gate.set()
    assert await first == clock.runs[0]
    results = await asyncio.gather(*late)
    assert len(clock.runs) == 2  # the 20 late callers share the second run
    for arrived, got in zip(arrivals, results, strict=True):
        assert got > arrived


async def test_a_failed_run_fails_its_callers_and_the_next_call_runs_again() -> None:
    attempts = 0

    async def flaky() -> int:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0)
        if attempts == 1:
            raise ConnectionError("database gone")
        return attempts

    fresh = Fresh(flaky)
    results = await asyncio.gather(fresh.get(), fresh.get(), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert await fresh.get() == 2
    assert not fresh.busy


async def test_a_cancelled_caller_does_not_cancel_the_shared_run() -> None:
    clock = Clock()
    fresh = Fresh(clock.run)
    leaving = asyncio.ensure_future(fresh.get())
    staying = asyncio.ensure_future(fresh.get())
    await asyncio.sleep(0)
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    clock.gate.set()
    assert await staying == clock.runs[0]
    assert len(clock.runs) == 1
