"""The consumer's SQS bookkeeping on fakes: delete, postpone, refresh, redrive, drain, hand back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from services.ingest.consumer import Consumer, ConsumerOptions
from services.ingest.handler import OutcomeKind
from tests.unit.fakes import FakeHandler, FakeQueue, s3_event_body

FAST = ConsumerOptions(
    concurrency=2, wait_seconds=1, visibility_timeout=1, retry_delay=0, drain_seconds=5, probe_seconds=0.05
)


async def _until(check: Callable[[], bool], seconds: float = 40.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def _run(
    queue: FakeQueue,
    handler: FakeHandler,
    until: Callable[[], bool],
    options: ConsumerOptions = FAST,
    then: Callable[[], Awaitable[None]] | None = None,
) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(Consumer(queue, handler, options).run(stop))
    try:
        await _until(until)
        if then is not None:
            await then()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_a_loaded_file_deletes_its_message() -> None:
    queue, handler = FakeQueue(), FakeHandler()
    queue.put(s3_event_body("jobs/a.csv"))
    await _run(queue, handler, lambda: not queue.stored)
    assert handler.seen == ["jobs/a.csv"] and queue.deleted == ["m1"] and not queue.dead


async def test_a_busy_duplicate_waits_and_never_reaches_the_dead_letter_queue() -> None:
    """Another worker holds the file for longer than maxReceiveCount visibility timeouts."""
    queue = FakeQueue(max_receive_count=2)
    handler = FakeHandler(script={"jobs/a.csv": [OutcomeKind.BUSY] * 5 + [OutcomeKind.DUPLICATE]})
    queue.put(s3_event_body("jobs/a.csv"))
    await _run(queue, handler, lambda: len(handler.seen) >= 6 and not queue.stored)
    assert not queue.dead
    # the refreshed copies come back once the file is done: each is a duplicate, deleted
    kinds = [kind for _, kind in handler.events]
    assert kinds[:5] == ["busy"] * 5 and set(kinds[5:]) == {"duplicate"}


async def test_attempts_that_fail_after_progress_are_refreshed_not_redriven() -> None:
    """Six crashes mid-file (each made progress, as the ledger knows): the file still ends loaded."""
    queue = FakeQueue(max_receive_count=2)
    handler = FakeHandler(script={"jobs/a.csv": [RuntimeError("worker died")] * 6 + [OutcomeKind.LOADED]})
    queue.put(s3_event_body("jobs/a.csv"))
    await _run(queue, handler, lambda: any(kind == "loaded" for _, kind in handler.events))
    assert not queue.dead
    assert [kind for _, kind in handler.events] == ["loaded"]


async def test_an_undecodable_message_is_left_to_the_redrive_policy() -> None:
    queue = FakeQueue(max_receive_count=2)
    handler = FakeHandler()
    queue.put("not json")
    await _run(queue, handler, lambda: bool(queue.dead))
    assert [kind for _, kind in handler.events] == ["undecodable", "undecodable"]
    assert handler.seen == []


async def test_stopping_lets_the_open_poll_finish_before_handing_messages_back() -> None:
    """A message given back while our own poll is open would go to that dead poll (SQS)."""
    queue = FakeQueue()
    handler = FakeHandler(script={"jobs/long.csv": [30.0]})
    queue.put(s3_event_body("jobs/long.csv"))
    options = ConsumerOptions(concurrency=2, wait_seconds=1, visibility_timeout=60, drain_seconds=0.2)
    await _run(queue, handler, lambda: handler.seen == ["jobs/long.csv"] and queue.polls_open > 0, options)
    assert queue.handed_back_during_poll == 0
    (message,) = queue.visible()  # handed back: visible again at once, for another consumer
    assert message.receives == 1


async def test_while_the_database_is_down_nothing_is_received() -> None:
    queue = FakeQueue(max_receive_count=3)
    handler = FakeHandler(script={"jobs/a.csv": [OSError("connection refused"), OutcomeKind.LOADED]})
    handler.database_up = False
    queue.put(s3_event_body("jobs/a.csv"))
    queue.put(s3_event_body("jobs/b.csv"), delay=0.3)

    async def outage() -> None:
        pings = handler.pings
        await _until(lambda: handler.pings >= pings + 5)
        assert handler.seen == ["jobs/a.csv"]  # b stayed in the queue, its receive count untouched
        assert queue.stored["m2"].receives == 0
        handler.database_up = True
        await _until(lambda: not queue.stored)

    await _run(queue, handler, lambda: handler.seen == ["jobs/a.csv"], then=outage)
    assert sorted(handler.seen) == ["jobs/a.csv", "jobs/a.csv", "jobs/b.csv"] and not queue.dead
