"""Real `hiring ingest` processes for tests where process life and death matter, and polling helpers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import msgspec

from services.ingest.replay import ReplayReport

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
NAME_COLUMN = {"departments": "department", "jobs": "job", "hired_employees": "name"}


class ConsumerProcess:
    """`python -m services.cli ingest` with the given environment; output kept in a log file."""

    def __init__(self, env: Mapping[str, str], log_path: Path, **knobs: str) -> None:
        self.log_path = log_path
        self.env = {
            **os.environ,
            **env,
            "HIRING_LOG_FORMAT": "json",
            "INGEST_WAIT_SECONDS": "1",
            "INGEST_RETRY_DELAY": "0",
            "INGEST_VISIBILITY_TIMEOUT": "3",  # a postponed duplicate comes back within the test's patience
            **knobs,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ConsumerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "ingest"],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> ConsumerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def eventually(
    probe: Callable[[], Awaitable[T]], accept: Callable[[T], bool], wait: float = 60.0, what: str = ""
) -> T:
    """Poll `probe` until `accept(value)`; fail with the last value seen."""
    deadline = time.monotonic() + wait
    value = await probe()
    while not accept(value):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {wait:.0f}s waiting for {what or 'condition'}; last: {value!r}"
            )
        await asyncio.sleep(0.2)
        value = await probe()
    return value


async def counts(conn: asyncpg.Connection) -> dict[str, int]:
    out = {}
    for table in ("hired_employees", "departments", "jobs", "ingest_rejects"):
        out[table] = int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    return out


async def name_by_id(conn: asyncpg.Connection, table: str) -> dict[int, str]:
    """id -> the name column (department, job or name) of every row `table` holds now."""
    rows = await conn.fetch(f"SELECT id, {NAME_COLUMN[table]} FROM {table}")
    return {row[0]: row[1] for row in rows}


async def replay(env: Mapping[str, str], table: str, seconds: float = 120) -> ReplayReport:
    """Run `hiring replay --table TABLE` to its end, in a thread (the event loop goes on), with `env`
    over this process's environment; killed after `seconds`. Fails the test on a non-zero exit,
    showing the end of stderr. Returns the table's report (the JSON line `hiring replay` prints last)."""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli", "replay", "--table", table],
        env={**os.environ, **env, "HIRING_LOG_FORMAT": "json"},
        capture_output=True,
        text=True,
        timeout=seconds,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return msgspec.json.decode(done.stdout.strip().splitlines()[-1], type=ReplayReport)


async def objects(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id, key, status, rows_loaded, rows_rejected, batches, error, lines_done, attempts"
        " FROM ingest_objects ORDER BY id"
    )
    return [dict(r) for r in rows]


def all_done(objs: list[dict[str, Any]], n: int) -> bool:
    return len(objs) >= n and all(o["status"] in ("loaded", "failed") for o in objs)
