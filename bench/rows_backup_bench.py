"""Batch rows API and Avro backup benchmark, against the embedded stack with real processes.

    .venv/bin/python bench/rows_backup_bench.py --batches 40 --backup-rows 5000000

Starts PostgreSQL, a moto S3 + SQS server (bucket, queue, notification), ONE ingest consumer
(`python -m services.cli ingest`) and the API (`python -m services.cli query`), then:

1. Batches: POST /tables/hired_employees/rows with 1000-row JSON bodies, sequentially and from 8
   concurrent clients; each answer is a 201 once the consumer applied the batch. Prints rows/s and
   the p50/p99 latency per request. Reference, same run: the same 1000 rows COPYed straight into a
   scratch table by asyncpg (the database's share of the work, without bucket, queue or consumer).
2. Backup: fills hired_employees with N rows (INSERT ... SELECT generate_series, not timed), runs
   `hiring backup --table hired_employees --to DIR` as a process and prints rows/s and its peak RSS
   (from wait4). Reference, same run: `COPY (SELECT ...) TO` a CSV file by asyncpg, the cost of only
   reading the rows out of PostgreSQL. The Avro file is then read back by fastavro to count rows.

Everything it starts is stopped on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import fastavro  # noqa: E402

from services.dev.localaws import MotoServer, provision  # noqa: E402
from services.dev.ports import free_port  # noqa: E402
from services.dev.postgres import EmbeddedPostgres  # noqa: E402
from services.dev.process import child_env, spawn, stop  # noqa: E402

REGION = "us-east-1"
BUCKET = "globant-raw-data"
QUEUE = "hiring-bench"


def batch_body(first_id: int, rows: int, rng: random.Random) -> bytes:
    return json.dumps(
        [
            {
                "id": i,
                "name": f"Name {rng.randrange(10**6)}",
                "datetime": f"2021-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T10:00:00Z",
                "department_id": rng.randint(1, 12),
                "job_id": rng.randint(1, 183),
            }
            for i in range(first_id, first_id + rows)
        ]
    ).encode()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def post_batches(url: str, bodies: list[bytes], workers: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            t = time.perf_counter()
            async with session.post(
                f"{url}/tables/hired_employees/rows", data=body, headers={"Content-Type": "application/json"}
            ) as resp:
                answer = await resp.json()
                if resp.status != 201 or answer["rows_loaded"] != 1000:
                    raise RuntimeError(f"unexpected answer {resp.status}: {answer}")
            latencies.append(time.perf_counter() - t)

    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        start = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(workers)))
        return time.perf_counter() - start, latencies


async def reference_copy(db_env: dict[str, str], bodies: list[bytes]) -> float:
    conn = await connect(db_env)
    try:
        await conn.execute(
            "CREATE TEMP TABLE ref (id int, name text, datetime timestamptz, department_id int, job_id int)"
        )
        from datetime import datetime

        start = time.perf_counter()
        for body in bodies:
            rows = [
                (r["id"], r["name"], datetime.fromisoformat(r["datetime"]), r["department_id"], r["job_id"])
                for r in json.loads(body)
            ]
            await conn.copy_records_to_table("ref", records=rows)
        return time.perf_counter() - start
    finally:
        await conn.close()


async def stages(db_env: dict[str, str]) -> dict[str, float]:
    """Median seconds per batch: API write to the consumer's first look (bucket event, queue, receive),
    and the consumer's first look to `loaded` (HEAD, ledger, GET, COPY, commit)."""
    conn = await connect(db_env)
    try:
        row = await conn.fetchrow(
            """
            SELECT percentile_cont(0.5)
                       WITHIN GROUP (ORDER BY extract(epoch FROM o.first_seen_at - u.created_at)),
                   percentile_cont(0.5)
                       WITHIN GROUP (ORDER BY extract(epoch FROM o.finished_at - o.first_seen_at))
            FROM uploads u JOIN ingest_objects o ON o.upload_id = u.id
            """
        )
        assert row is not None  # an aggregate without GROUP BY: always one row
        return {"to_consumer": float(row[0]), "applying": float(row[1])}
    finally:
        await conn.close()


async def connect(db_env: dict[str, str]) -> asyncpg.Connection:
    host, _, port = db_env["RDS_ENDPOINT"].rpartition(":")
    return await asyncpg.connect(
        host=host or db_env["RDS_ENDPOINT"],
        port=int(port) if host else 5432,
        user=db_env.get("RDS_USERNAME"),
        password=db_env.get("RDS_PASSWORD") or None,
        database=db_env.get("RDS_DB_NAME"),
    )


async def fill(db_env: dict[str, str], rows: int) -> None:
    conn = await connect(db_env)
    try:
        await conn.execute("TRUNCATE hired_employees")
        await conn.execute(
            """
            INSERT INTO hired_employees (id, name, datetime, department_id, job_id, src_object, src_line)
            SELECT g, 'Employee ' || g || ' Zoë',
                   timestamptz '2020-01-01 00:00:00+00' + (g % 94608000) * interval '1 second'
                       + (g % 1000000) * interval '1 microsecond',
                   1 + g % 12, 1 + g % 183, 0, 0
            FROM generate_series(1, $1) g
            """,
            rows,
        )
        await conn.execute("VACUUM ANALYZE hired_employees")
    finally:
        await conn.close()


async def reference_dump(db_env: dict[str, str], path: Path) -> float:
    conn = await connect(db_env)
    try:
        start = time.perf_counter()
        await conn.copy_from_query(
            "SELECT id, name, datetime, department_id, job_id FROM hired_employees",
            output=path,
            format="csv",
        )
        return time.perf_counter() - start
    finally:
        await conn.close()


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[float, int, int, str]:
    """(seconds, exit status, peak RSS in KiB, stderr tail) of a child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    proc.returncode = os.waitstatus_to_exitcode(status)
    return seconds, proc.returncode, usage.ru_maxrss, err[-2000:]


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the API exited at start")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/readyz", timeout=2) as resp:
            if resp.status == 200:
                return
        time.sleep(0.3)
    raise RuntimeError("the API did not become ready")


def wait_log(path: Path, needle: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited; log: {path.read_text()[-2000:]}")
        if path.exists() and needle in path.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{needle!r} not seen in {path}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, default=40, help="1000-row batches per phase (default 40)")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--backup-rows", type=int, default=5_000_000)
    p.add_argument("--skip-batches", action="store_true")
    p.add_argument("--skip-backup", action="store_true")
    args = p.parse_args(argv)
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="hiring-bench-") as tmp, contextlib.ExitStack() as stack:
        state = Path(tmp)
        pg = EmbeddedPostgres(state / "postgres")
        pg.start()
        stack.callback(pg.stop)
        moto = MotoServer(log_path=state / "moto.log")
        endpoint = moto.start()
        stack.callback(moto.stop)
        queue_url = provision(endpoint, REGION, BUCKET, QUEUE).queue_url
        env = {
            **pg.env(),
            "S3_RAW_BUCKET": BUCKET,
            "SQS_QUEUE_URL": queue_url,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "test"),
            "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
            "HIRING_LOG_FORMAT": "json",
            "PYTHONPATH": str(ROOT),
            "INGEST_WAIT_SECONDS": "1",
        }
        db_env = pg.env()
        migrate = subprocess.run(
            [sys.executable, "-m", "services.cli", "migrate"],
            env=child_env(env),
            capture_output=True,
            text=True,
        )
        if migrate.returncode != 0:
            print(migrate.stderr, file=sys.stderr)
            return 1
        if not args.skip_batches:
            with (state / "consumer.log").open("wb") as log:
                consumer = spawn(
                    [sys.executable, "-m", "services.cli", "ingest"],
                    log=log,
                    env=child_env(env),
                    death_signal=signal.SIGTERM,
                )
            stack.callback(stop, consumer, [(signal.SIGTERM, 25.0)])
            wait_log(state / "consumer.log", "consumer started", consumer, 60)
            port = free_port()
            with (state / "query.log").open("wb") as log:
                api = spawn(
                    [
                        sys.executable,
                        "-m",
                        "services.cli",
                        "query",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                    ],
                    log=log,
                    env=child_env(env),
                    death_signal=signal.SIGTERM,
                )
            stack.callback(stop, api, [(signal.SIGTERM, 15.0)])
            url = f"http://127.0.0.1:{port}"
            wait_http(url, api, 60)
            next_id = 1
            results: dict[str, tuple[float, list[float]]] = {}
            for label, workers in (("sequential", 1), (f"{args.concurrency}-way", args.concurrency)):
                bodies = [batch_body(next_id + 1000 * i, 1000, rng) for i in range(args.batches)]
                next_id += 1000 * args.batches
                results[label] = asyncio.run(post_batches(url, bodies, workers))
            ref = asyncio.run(
                reference_copy(db_env, [batch_body(1 + 1000 * i, 1000, rng) for i in range(args.batches)])
            )
            rows = 1000 * args.batches
            print(f"batches: {args.batches} x 1000 rows per phase, one consumer")
            for label, (seconds, lat) in results.items():
                print(
                    f"  {label:>10}: {rows / seconds:>9,.0f} rows/s"
                    f"  p50 {percentile(lat, 0.5) * 1000:7.1f} ms"
                    f"  p99 {percentile(lat, 0.99) * 1000:7.1f} ms per request"
                )
            print(f"  reference (asyncpg COPY of the same batches, sequential): {rows / ref:,.0f} rows/s")
            parts = asyncio.run(stages(db_env))
            print(
                f"  median per batch: {parts['to_consumer'] * 1000:.0f} ms from the API's write to the"
                f" consumer's first look (event, queue, receive),"
                f" {parts['applying'] * 1000:.0f} ms from there to loaded"
            )
        if not args.skip_backup:
            n = args.backup_rows
            t = time.perf_counter()
            asyncio.run(fill(db_env, n))
            print(
                f"backup: hired_employees filled with {n:,} rows"
                f" in {time.perf_counter() - t:.1f} s (not timed)"
            )
            ref_s = asyncio.run(reference_dump(db_env, state / "ref.csv"))
            (state / "ref.csv").unlink()
            seconds, code, rss_kb, err = run_measured(
                [
                    sys.executable,
                    "-m",
                    "services.cli",
                    "backup",
                    "--table",
                    "hired_employees",
                    "--to",
                    str(state / "bk"),
                ],
                child_env(env),
            )
            if code != 0:
                print(f"hiring backup failed ({code}): {err}", file=sys.stderr)
                return 1
            manifest = json.loads((state / "bk" / "manifest.json").read_text())
            entry = manifest["tables"]["hired_employees"]
            with (state / "bk" / "hired_employees.avro").open("rb") as f:
                counted = sum(1 for _ in fastavro.reader(f))
            assert entry["rows"] == counted == n, (entry["rows"], counted, n)
            print(
                f"  hiring backup: {n / seconds:>9,.0f} rows/s ({seconds:.1f} s, process start included),"
                f" peak RSS {rss_kb / 1024:.0f} MB, file {entry['bytes'] / 1e6:.0f} MB ({entry['codec']})"
            )
            print(f"  reference (COPY ... TO a CSV file, asyncpg): {n / ref_s:>9,.0f} rows/s ({ref_s:.1f} s)")
            print(f"  ratio backup/reference: {(n / seconds) / (n / ref_s):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
