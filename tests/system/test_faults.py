"""The fault suite (issue 8): real `hiring ingest` processes against real PostgreSQL and S3/SQS over
loopback, under concurrency, kill -9, SIGTERM, a killed database and a frozen S3/SQS. Every test is
bounded in time; the rows each must end with are computed here from the files and their upload order.

Every test here is marked `slow` (long-running end to end) and sizes itself by the run: plain
`pytest` (CI) runs a seeded sample sized for a loaded machine; `pytest -m slow` runs the full set
(bigger files, more rounds and kill points, the 30 s freeze, a 60 s outage). FAULT_SEED=<int>
changes the seed of the random choices (files, upload order, kill points).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from shared.db import migrate
from tests.system.consumers import ConsumerProcess, all_done, eventually, objects
from tests.system.fault_support import (
    CsvFile,
    FreezableMoto,
    RestartablePostgres,
    active_statements,
    all_started,
    count_events,
    depth,
    diff_summary,
    expected_rows,
    ledger_order,
    log_records,
    overlapping_files,
    put_spaced,
    table_rows,
    with_database,
)
from tests.system.stack import Stack

SEED = int(os.environ.get("FAULT_SEED", "20260808"))
FAILED_LINE = "message failed; it will be retried"

pytestmark = pytest.mark.slow


@pytest.fixture
def full(request: pytest.FixtureRequest) -> bool:
    """True when the run selects slow tests explicitly (`-m slow`): the full set, else the CI sample."""
    expr = str(request.config.getoption("markexpr") or "")
    return "slow" in expr.replace("not slow", "")


def one_file(rng: random.Random, rows: int, key: str = "hired_employees/big.csv") -> CsvFile:
    """A single file with no overlap of its own beyond a few repeated ids."""
    return overlapping_files(rng, 1, rows, prefix=key.removesuffix("0.csv").removesuffix(".csv"))[0]


async def assert_exact(conn: Any, files_in_upload_order: list[CsvFile]) -> None:
    want = expected_rows(files_in_upload_order)
    got = await table_rows(conn)
    assert got == want, diff_summary(want, got)


async def assert_all_loaded(conn: Any, files: list[CsvFile]) -> list[dict[str, Any]]:
    objs = await objects(conn)
    by_key = {o["key"]: o for o in objs}
    assert sorted(by_key) == sorted(f.key for f in files)
    for f in files:
        o = by_key[f.key]
        assert (o["status"], o["rows_loaded"], o["rows_rejected"], o["lines_done"]) == (
            "loaded",
            len(f.lines),
            0,
            len(f.lines),
        ), o
    assert await conn.fetchval("SELECT count(*) FROM ingest_rejects") == 0
    return objs


# ---- 1. concurrent overlapping files -----------------------------------------------------------


async def run_concurrent_rounds(
    stack: Stack, tmp_path: Path, *, rounds: int, n_files: int, rows: int, batch_rows: int
) -> None:
    rng = random.Random(SEED)
    report = []
    for r in range(rounds):
        own = await asyncio.to_thread(stack.isolated)
        await stack.reset_data()
        files = overlapping_files(rng, n_files, rows, prefix=f"hired_employees/r{r}f")
        rng.shuffle(files)  # the upload order: not the generation order
        knobs = {"INGEST_BATCH_ROWS": str(batch_rows), "INGEST_CONCURRENCY": "2"}
        consumers = [ConsumerProcess(own.env, tmp_path / f"r{r}c{c}.log", **knobs).start() for c in range(4)]
        conn = await own.connect()
        try:
            await all_started(consumers)  # all four polling: they then share the burst
            started = time.monotonic()
            await asyncio.to_thread(put_spaced, own, files)
            put_seconds = time.monotonic() - started
            await eventually(
                partial(objects, conn),
                lambda o: all_done(o, n_files),
                wait=600,
                what=f"round {r}: all loaded",
            )
            took = time.monotonic() - started
            for c in consumers:
                c.stop()
            logs = [c.log() for c in consumers]
            assert await ledger_order(conn) == [f.key for f in files], "S3 event times out of put order"
            await assert_all_loaded(conn, files)
            await assert_exact(conn, files)
            failed = sum(text.count(FAILED_LINE) for text in logs)
            assert failed == 0, f"round {r}: {failed} messages failed"
            retried = sum(count_events(text, "batch retried") for text in logs)
            deadlocks = sum(text.count("deadlock detected") for text in logs)
            busy = sum(count_events(text, "object loaded") > 0 for text in logs)
            assert await depth(own, own.dlq_url) == 0
            report.append(
                f"round {r}: put {put_seconds:.2f}s, loaded in {took:.1f}s,"
                f" {len(expected_rows(files))} ids, consumers that loaded a file: {busy}/4,"
                f" batches retried: {retried} (deadlocks among them: {deadlocks})"
            )
        finally:
            for c in consumers:
                c.stop()
            await conn.close()
    print("\n".join(report))


async def test_concurrent_overlapping_files_are_exact(stack: Stack, tmp_path: Path, full: bool) -> None:
    if full:
        await run_concurrent_rounds(stack, tmp_path, rounds=5, n_files=8, rows=100_000, batch_rows=5_000)
    else:
        await run_concurrent_rounds(stack, tmp_path, rounds=3, n_files=8, rows=20_000, batch_rows=2_000)


# ---- 2. crashes that make progress -------------------------------------------------------------


async def test_six_crashes_with_progress_end_loaded_with_the_dlq_empty(stack: Stack, tmp_path: Path) -> None:
    """kill -9 six times, each after a new batch committed, on a queue whose maxReceiveCount is 5:
    attempts that made progress never count as poison; the file ends loaded, the DLQ empty."""
    own = await asyncio.to_thread(stack.isolated, max_receive_count=5, visibility_timeout=3)
    await stack.reset_data()
    f = one_file(random.Random(SEED + 2), 60_000)
    knobs = {"INGEST_BATCH_ROWS": "500", "INGEST_VISIBILITY_TIMEOUT": "3"}
    own.s3().put_object(Bucket=own.bucket, Key=f.key, Body=f.body)
    conn = await own.connect()
    logs: list[str] = []
    try:
        seen = 0
        kills = []
        for k in range(6):
            victim = ConsumerProcess(own.env, tmp_path / f"crash{k}.log", **knobs).start()
            try:
                await eventually(
                    partial(objects, conn),
                    lambda o: bool(o) and o[0]["lines_done"] > seen,  # noqa: B023
                    wait=180,
                    what=f"a new batch before kill {k + 1}",
                )
            finally:
                victim.signal(signal.SIGKILL)
                victim.wait(10)
                logs.append(victim.log())
            (obj,) = await objects(conn)
            assert obj["status"] == "processing", "the file finished before the sixth kill: make it bigger"
            assert obj["lines_done"] > seen
            seen = obj["lines_done"]
            kills.append(seen)
        with ConsumerProcess(own.env, tmp_path / "last.log", **knobs) as last:
            (obj,) = await eventually(
                partial(objects, conn), lambda o: all_done(o, 1), wait=300, what="the file finished"
            )
            await eventually(lambda: depth(own, own.queue_url), lambda d: d == 0, wait=60, what="queue empty")
            logs.append(last.log())
        await assert_all_loaded(conn, [f])
        await assert_exact(conn, [f])
        assert obj["attempts"] >= 7
        assert await depth(own, own.dlq_url) == 0
        refreshed = sum(count_events(text, "message refreshed") for text in logs)
        print(f"killed at lines {kills}; attempts {obj['attempts']}; messages refreshed: {refreshed}")
    finally:
        await conn.close()


# ---- 3 and 7. SIGTERM: a short drain hands back, a long drain finishes ---------------------------


async def test_sigterm_short_drain_hands_back_and_another_consumer_takes_over_within_seconds(
    fresh: Stack, tmp_path: Path
) -> None:
    """A (long polls, a 60 s visibility timeout, a 1 s drain) gets SIGTERM mid-file while B runs:
    A's handed-back message must reach B at once, not after the 60 s a poll of A's would hide it
    for (A's poll is open when it stops: its other slots are free)."""
    f = one_file(random.Random(SEED + 3), 150_000)
    fresh.s3().put_object(Bucket=fresh.bucket, Key=f.key, Body=f.body)
    knobs = {"INGEST_BATCH_ROWS": "500", "INGEST_VISIBILITY_TIMEOUT": "60"}
    conn = await fresh.connect()
    # A's stop waits for its open poll to finish: 5 s polls keep that (and the file's progress) short
    a = ConsumerProcess(
        fresh.env, tmp_path / "a.log", INGEST_DRAIN_SECONDS="1", INGEST_WAIT_SECONDS="5", **knobs
    ).start()
    b = ConsumerProcess(fresh.env, tmp_path / "b.log", INGEST_WAIT_SECONDS="20", **knobs)
    try:
        await eventually(partial(objects, conn), lambda o: bool(o) and o[0]["batches"] >= 3, what="A on it")
        b.start()
        await all_started([b])
        await asyncio.sleep(1)  # B's long poll is open
        term = time.monotonic()
        a.signal(signal.SIGTERM)
        assert await asyncio.to_thread(a.wait, 60) == 0
        exited = time.monotonic()
        (obj,) = await objects(conn)
        assert obj["status"] == "processing", "A finished the file: make it bigger"
        assert "handing message back" in a.log()
        await eventually(
            partial(objects, conn), lambda o: o[0]["attempts"] >= 2, wait=90, what="B took the file over"
        )
        taken = time.monotonic() - exited
        (obj,) = await eventually(partial(objects, conn), lambda o: all_done(o, 1), wait=300, what="B done")
        assert "resuming" in b.log()
        await assert_all_loaded(conn, [f])
        await assert_exact(conn, [f])
        print(f"SIGTERM to A's exit {exited - term:.2f}s; A's exit to B resuming {taken:.2f}s")
        # a swallowed hand-back would come back only after the 60 s visibility timeout
        assert taken < 15, f"B took over {taken:.1f}s after A exited"
    finally:
        a.stop()
        b.stop()
        await conn.close()


async def test_sigterm_long_drain_lets_the_consumer_finish_its_file(fresh: Stack, tmp_path: Path) -> None:
    f = one_file(random.Random(SEED + 4), 30_000)
    fresh.s3().put_object(Bucket=fresh.bucket, Key=f.key, Body=f.body)
    knobs = {"INGEST_BATCH_ROWS": "500", "INGEST_WAIT_SECONDS": "20"}
    conn = await fresh.connect()
    a = ConsumerProcess(fresh.env, tmp_path / "a.log", INGEST_DRAIN_SECONDS="600", **knobs).start()
    b = ConsumerProcess(fresh.env, tmp_path / "b.log", **knobs)
    try:
        await eventually(partial(objects, conn), lambda o: bool(o) and o[0]["batches"] >= 3, what="A on it")
        b.start()
        term = time.monotonic()
        a.signal(signal.SIGTERM)
        assert await asyncio.to_thread(a.wait, 300) == 0
        took = time.monotonic() - term
        (obj,) = await objects(conn)
        assert (obj["status"], obj["attempts"]) == ("loaded", 1)
        assert count_events(a.log(), "object loaded") == 1 and "handing message back" not in a.log()
        await assert_all_loaded(conn, [f])
        await assert_exact(conn, [f])
        await eventually(lambda: depth(fresh, fresh.queue_url), lambda d: d == 0, what="message deleted")
        assert "resuming" not in b.log()
        print(f"SIGTERM to exit with the file finished: {took:.2f}s")
    finally:
        a.stop()
        b.stop()
        await conn.close()


# ---- 4. kill -9 at random points, merges included ----------------------------------------------


MERGE = "INSERT INTO hired_employees AS t"


async def kill_point(conn: Any, aim: str, rng: random.Random, wait: float = 10.0) -> list[str]:
    """Wait for the moment to kill: `aim` seen running (or `wait` passed), or a random moment."""
    if aim == "anywhere":
        await asyncio.sleep(rng.uniform(0, 0.4))
        return await active_statements(conn)
    deadline = time.monotonic() + wait
    while True:
        running = await active_statements(conn)
        if any(q.startswith(aim) for q in running) or time.monotonic() > deadline:
            return running


async def run_random_kills(stack: Stack, tmp_path: Path, *, samples: int, rows: int, kills: int) -> None:
    rng = random.Random(SEED + 4)
    report = []
    for s in range(samples):
        own = await asyncio.to_thread(stack.isolated)
        await stack.reset_data()
        # the second file overlaps the first: whichever is applied second goes through the merge
        files = overlapping_files(rng, 2, rows, prefix=f"hired_employees/k{s}f")
        await asyncio.to_thread(put_spaced, own, files, 0.02)
        knobs = {"INGEST_BATCH_ROWS": "1000", "INGEST_CONCURRENCY": "1", "INGEST_VISIBILITY_TIMEOUT": "3"}
        conn = await own.connect()
        try:
            total = 2 * rows
            points = sorted(rng.randrange(total // 20, total) for _ in range(kills))
            interrupted = []
            for k, point in enumerate(points):
                victim = ConsumerProcess(own.env, tmp_path / f"s{s}k{k}.log", **knobs).start()
                try:
                    await eventually(
                        partial(objects, conn),
                        lambda o: sum(x["lines_done"] for x in o) >= point,  # noqa: B023
                        wait=300,
                        what=f"line {point}",
                    )
                    # at a random moment, or the moment a merge (or a COPY) is seen running
                    aim = rng.choice(["anywhere", MERGE, MERGE, "COPY"])
                    running = await kill_point(conn, aim, rng)
                finally:
                    victim.signal(signal.SIGKILL)
                    victim.wait(10)
                interrupted.append(next((q for q in running if q.startswith(("INSERT", "COPY"))), "between"))
            with ConsumerProcess(own.env, tmp_path / f"s{s}last.log", **knobs):
                await eventually(
                    partial(objects, conn), lambda o: all_done(o, 2), wait=300, what="both loaded"
                )
            assert await ledger_order(conn) == [f.key for f in files]
            await assert_all_loaded(conn, files)
            await assert_exact(conn, files)
            report.append(f"sample {s}: killed at lines {points} during {interrupted}")
        finally:
            await conn.close()
    print("\n".join(report))
    merges = sum(r.count(MERGE) for r in report)
    print(f"kills inside a merge: {merges}")
    assert merges > 0, "no kill landed inside a merge"


async def test_kill9_at_random_points_then_exact(stack: Stack, tmp_path: Path, full: bool) -> None:
    if full:
        await run_random_kills(stack, tmp_path, samples=10, rows=40_000, kills=3)
    else:
        await run_random_kills(stack, tmp_path, samples=2, rows=12_000, kills=3)


# ---- 5. PostgreSQL killed and restarted mid-file -----------------------------------------------


@pytest.fixture(scope="module")
def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pg = RestartablePostgres(tmp_path_factory.mktemp("fault-pg"))
    pg.start()
    yield pg
    pg.stop()


async def run_postgres_outage(
    stack: Stack, pg: RestartablePostgres, tmp_path: Path, *, outage: float, rows: int
) -> None:
    own = with_database(
        await asyncio.to_thread(stack.isolated, max_receive_count=2, visibility_timeout=3), pg.env()
    )
    conn = await own.connect()
    try:
        await migrate(conn)
    finally:
        await conn.close()
    await own.reset_data()
    f = one_file(random.Random(SEED + 5), rows)
    own.s3().put_object(Bucket=own.bucket, Key=f.key, Body=f.body)
    knobs = {"INGEST_BATCH_ROWS": "500", "INGEST_VISIBILITY_TIMEOUT": "3"}
    with ConsumerProcess(own.env, tmp_path / "c.log", **knobs) as consumer:
        conn = await own.connect()
        try:
            await eventually(
                partial(objects, conn), lambda o: bool(o) and o[0]["batches"] >= 3, what="mid-file"
            )
        finally:
            await conn.close()
        pg.kill()
        down = time.monotonic()
        await asyncio.sleep(outage)
        restart = await asyncio.to_thread(pg.restart)
        downtime = time.monotonic() - down
        conn = await own.connect()
        try:
            (obj,) = await eventually(
                partial(objects, conn), lambda o: all_done(o, 1), wait=300, what="loaded after the outage"
            )
            await eventually(lambda: depth(own, own.queue_url), lambda d: d == 0, wait=60, what="queue empty")
            await assert_all_loaded(conn, [f])
            await assert_exact(conn, [f])
        finally:
            await conn.close()
        text = consumer.log()
    assert await depth(own, own.dlq_url) == 0
    records = log_records(text)
    not_json = [r["raw"] for r in records if r.get("event") is None]
    print(
        f"database down {downtime:.1f}s (restart {restart:.1f}s, limit visibility x maxReceiveCount = 6s):"
        f" attempts {obj['attempts']},"
        f" 'not receiving' lines {count_events(text, 'database unreachable; not receiving')},"
        f" failed lines {text.count(FAILED_LINE)}, non-JSON lines {len(not_json)}"
    )
    # every line the consumer wrote through the outage is a JSON log record (asyncpg's pool
    # tracebacks included: shared/logs routes them through structlog)
    assert not not_json, f"lines outside the JSON log format: {not_json[:3]}"


async def test_postgres_killed_and_restarted_mid_file(
    stack: Stack, own_postgres: RestartablePostgres, tmp_path: Path
) -> None:
    await run_postgres_outage(stack, own_postgres, tmp_path, outage=1, rows=40_000)


async def test_postgres_outage_longer_than_the_redrive_window_keeps_the_message(
    stack: Stack, own_postgres: RestartablePostgres, tmp_path: Path, full: bool
) -> None:
    await run_postgres_outage(stack, own_postgres, tmp_path, outage=60 if full else 15, rows=40_000)


# ---- 6. S3/SQS frozen ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def freezable_moto(tmp_path_factory: pytest.TempPathFactory) -> Any:
    moto = FreezableMoto(tmp_path_factory.mktemp("fault-moto") / "moto.log")
    moto.start()
    yield moto
    moto.stop()


async def run_freeze(stack: Stack, moto: FreezableMoto, tmp_path: Path, *, seconds: float, rows: int) -> None:
    own = await asyncio.to_thread(moto.stack, stack, f"hiring-freeze-{int(seconds)}-{os.getpid()}")
    await stack.reset_data()
    f = one_file(random.Random(SEED + 6), rows)
    own.s3().put_object(Bucket=own.bucket, Key=f.key, Body=f.body)
    knobs = {"INGEST_BATCH_ROWS": "500", "INGEST_VISIBILITY_TIMEOUT": "60"}
    conn = await own.connect()
    try:
        with ConsumerProcess(own.env, tmp_path / "c.log", **knobs) as consumer:
            await eventually(
                partial(objects, conn), lambda o: bool(o) and o[0]["batches"] >= 3, what="mid-file"
            )
            before = len(log_records(consumer.log()))
            with moto.frozen():
                await asyncio.sleep(seconds)
                (mid,) = await objects(conn)
            during = len(log_records(consumer.log())) - before
            await eventually(partial(objects, conn), lambda o: all_done(o, 1), wait=300, what="loaded")
            await eventually(lambda: depth(own, own.queue_url), lambda d: d == 0, wait=60, what="queue empty")
            await assert_all_loaded(conn, [f])
            await assert_exact(conn, [f])
            # and frozen while idle
            before = len(log_records(consumer.log()))
            with moto.frozen():
                await asyncio.sleep(seconds)
            idle = len(log_records(consumer.log())) - before
            await asyncio.sleep(3)  # the consumer polls again after the thaw
            assert consumer.proc is not None and consumer.proc.poll() is None
        print(
            f"frozen {seconds:.0f}s: {during} log lines mid-file (at the thaw: {mid['status']},"
            f" line {mid['lines_done']} of {len(f.lines)}), {idle} while idle"
        )
        # a hot loop would write thousands; a bounded retry writes a few per freeze
        assert during <= 5 + seconds and idle <= 5 + seconds, (during, idle)
        assert await depth(own, own.dlq_url) == 0
    finally:
        await conn.close()


async def test_s3_and_sqs_frozen_mid_file_and_idle(
    stack: Stack, freezable_moto: FreezableMoto, tmp_path: Path, full: bool
) -> None:
    # 300,000 rows (12 MB) outgrow loopback's socket buffers: the object's read itself stalls too
    if full:
        await run_freeze(stack, freezable_moto, tmp_path, seconds=30, rows=300_000)
    else:
        await run_freeze(stack, freezable_moto, tmp_path, seconds=8, rows=40_000)
