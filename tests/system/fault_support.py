"""Helpers of the fault suite (tests/system/test_faults.py): overlapping files and the rows they must give,
table snapshots, consumer log reading, and servers a test may kill, restart or freeze on its own
(a PostgreSQL on a fixed port, a moto server), so the session's stack is never harmed.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from services.dev.localaws import provision
from services.dev.ports import free_port
from services.dev.postgres import EmbeddedPostgres, PostgresError
from services.dev.process import child_env
from tests.system.stack import DLQ_VAR, Stack

EmployeeRow = tuple[str, datetime, int, int]  # name, datetime, department_id, job_id
BASE_TIME = datetime(2021, 1, 1, tzinfo=UTC)


# ---- files and the rows they must give ---------------------------------------------------------


@dataclass(frozen=True)
class CsvFile:
    key: str
    lines: list[tuple[int, EmployeeRow]]  # (id, row) in file order
    body: bytes  # the lines as CSV


def csv_file(key: str, lines: list[tuple[int, EmployeeRow]]) -> CsvFile:
    out = [
        f"{i},{name},{when.strftime('%Y-%m-%dT%H:%M:%SZ')},{dept},{job}"
        for i, (name, when, dept, job) in lines
    ]
    return CsvFile(key, lines, ("\n".join(out) + "\n").encode())


def employee_row(rng: random.Random, tag: str) -> EmployeeRow:
    when = BASE_TIME + timedelta(seconds=rng.randrange(365 * 24 * 3600))
    return tag, when, rng.randint(1, 12), rng.randint(1, 180)


def overlapping_files(
    rng: random.Random, n_files: int, rows: int, *, prefix: str = "hired_employees/f", repeat: float = 0.01
) -> list[CsvFile]:
    """`n_files` files of `rows` lines each over one shared id space (about 3 files' worth, so every
    id range overlaps several others), ids shuffled inside each file, and a fraction `repeat` of
    lines repeating an id seen earlier in the same file (the later line must win)."""
    span = rows * 3
    files = []
    for f in range(n_files):
        start = rng.randrange(0, span - rows + 1) + 1
        ids = list(range(start, start + rows))
        rng.shuffle(ids)
        for k in range(1, rows):
            if rng.random() < repeat:
                ids[k] = ids[rng.randrange(k)]
        lines = [(i, employee_row(rng, f"f{f}l{n + 1}")) for n, i in enumerate(ids)]
        files.append(csv_file(f"{prefix}{f}.csv", lines))
    return files


def expected_rows(files_in_upload_order: list[CsvFile]) -> dict[int, EmployeeRow]:
    """The table CONTRACT §2 promises: the file uploaded later wins per id; within a file the later line."""
    out: dict[int, EmployeeRow] = {}
    for f in files_in_upload_order:
        for i, row in f.lines:
            out[i] = row
    return out


def put_spaced(stack: Stack, files: list[CsvFile], gap: float = 0.005) -> None:
    """Put the files one after another (their upload order), a few ms apart so S3 event times differ."""
    s3 = stack.s3()
    for f in files:
        s3.put_object(Bucket=stack.bucket, Key=f.key, Body=f.body)
        time.sleep(gap)


async def table_rows(conn: asyncpg.Connection) -> dict[int, EmployeeRow]:
    rows = await conn.fetch("SELECT id, name, datetime, department_id, job_id FROM hired_employees")
    return {r["id"]: (r["name"], r["datetime"], r["department_id"], r["job_id"]) for r in rows}


def diff_summary(want: dict[int, EmployeeRow], got: dict[int, EmployeeRow], limit: int = 5) -> str:
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    wrong = sorted(i for i in set(want) & set(got) if want[i] != got[i])
    sample = [(i, want[i][0], got[i][0]) for i in wrong[:limit]]
    return (
        f"{len(missing)} ids missing {missing[:limit]}, {len(extra)} extra {extra[:limit]},"
        f" {len(wrong)} with another row (id, want, got) {sample}"
    )


async def ledger_order(conn: asyncpg.Connection) -> list[str]:
    """Keys of the ledger in upload order (the order key the merge compares)."""
    return [r["key"] for r in await conn.fetch("SELECT key FROM ingest_objects ORDER BY order_key")]


# ---- consumer logs -----------------------------------------------------------------------------


def log_records(text: str) -> list[dict[str, Any]]:
    """Every line as a JSON record; a line that is not one is kept as {"event": None, "raw": line}."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        out.append(rec if isinstance(rec, dict) else {"event": None, "raw": line})
    return out


def count_events(text: str, event: str) -> int:
    return sum(1 for r in log_records(text) if r.get("event") == event)


def queue_depth(stack: Stack, url: str) -> int:
    attrs = stack.sqs().get_queue_attributes(
        QueueUrl=url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return sum(int(v) for v in attrs.values())


async def depth(stack: Stack, url: str) -> int:
    return await asyncio.to_thread(queue_depth, stack, url)


# ---- a PostgreSQL of the test's own, to kill and restart ---------------------------------------


class RestartablePostgres:
    """An EmbeddedPostgres on a fixed port (clients keep their RDS_ENDPOINT across restarts)."""

    def __init__(self, state_dir: Path) -> None:
        self.server = EmbeddedPostgres(state_dir, port=free_port())

    def start(self) -> None:
        self.server.start()

    def kill(self) -> None:
        """kill -9 the postmaster (its backends notice and exit by themselves)."""
        pid = self.server.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)

    def restart(self, timeout: float = 90.0) -> float:
        """Start it again on its data and port after it died; the seconds it took."""
        started = time.monotonic()
        self.server.stop()  # reaps the dead postmaster
        deadline = started + timeout
        while True:
            try:
                self.server.start()
                return time.monotonic() - started
            except PostgresError:
                # the dead server's backends may still hold its shared memory for a moment
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def stop(self) -> None:
        self.server.stop()

    def env(self) -> dict[str, str]:
        return self.server.env()


# ---- a moto server of the test's own, to freeze ------------------------------------------------


class FreezableMoto:
    """moto's S3 + SQS server as this test's child: SIGSTOP freezes it, SIGCONT thaws it."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=child_env(),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text(errors="replace")[-2000:]
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"moto did not answer within {timeout}s")

    @contextmanager
    def frozen(self) -> Iterator[None]:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def stack(self, base: Stack, name: str, **provision_kw: Any) -> Stack:
        """`base` (its database) with a bucket, queue and DLQ on this server."""
        made = provision(self.url, base.region, name, name, **provision_kw)
        env = {
            **base.env,
            "AWS_ENDPOINT_URL": self.url,
            "S3_RAW_BUCKET": made.bucket,
            "SQS_QUEUE_URL": made.queue_url,
            DLQ_VAR: made.dlq_url,
        }
        return Stack(
            env=env,
            backend=base.backend,
            endpoint_url=self.url,
            region=base.region,
            bucket=made.bucket,
            queue_url=made.queue_url,
            dlq_url=made.dlq_url,
            postgres=base.postgres,
        )


def with_database(stack: Stack, db_env: dict[str, str]) -> Stack:
    """`stack` (its bucket and queue) against another database."""
    return Stack(
        env={**stack.env, **db_env},
        backend=stack.backend,
        endpoint_url=stack.endpoint_url,
        region=stack.region,
        bucket=stack.bucket,
        queue_url=stack.queue_url,
        dlq_url=stack.dlq_url,
        postgres=None,
    )


async def all_started(consumers: list[Any], wait: float = 120.0) -> None:
    """Until every consumer process has logged that it polls its queue."""

    async def started() -> int:
        return sum("consumer started" in c.log() for c in consumers)

    deadline = time.monotonic() + wait
    while await started() < len(consumers):
        assert time.monotonic() < deadline, "consumers did not start"
        await asyncio.sleep(0.2)


async def active_statements(conn: asyncpg.Connection) -> list[str]:
    """The statements other sessions are running right now (what a kill interrupts)."""
    rows = await conn.fetch(
        "SELECT query FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid()"
        " AND datname = current_database()"
    )
    return [" ".join(str(r["query"]).split())[:60] for r in rows]
