"""Stopping gives files in flight `drain_seconds` in all, once (not once per wait), then hands back."""

from __future__ import annotations

import asyncio

from services.ingest.consumer import Consumer, ConsumerOptions
from tests.unit.fakes import FakeHandler, FakeQueue, s3_event_body


async def test_the_drain_is_given_once() -> None:
    queue = FakeQueue()
    handler = FakeHandler(script={"jobs/long.csv": [30.0]})
    queue.put(s3_event_body("jobs/long.csv"))
    # a poll (1 s) is open when it stops: the drain runs while that poll finishes
    options = ConsumerOptions(concurrency=2, wait_seconds=1, visibility_timeout=60, drain_seconds=1.5)
    stop = asyncio.Event()
    task = asyncio.create_task(Consumer(queue, handler, options).run(stop))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while handler.seen != ["jobs/long.csv"] or queue.polls_open == 0:
        assert loop.time() < deadline
        await asyncio.sleep(0.02)
    stopped = loop.time()
    stop.set()
    await asyncio.wait_for(task, 30)
    took = loop.time() - stopped
    (message,) = queue.visible()  # handed back
    assert message.receives == 1
    assert 1.4 <= took < 2.5, f"stopping took {took:.2f}s with a 1.5 s drain"
