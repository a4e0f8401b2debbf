"""Scale-out of the ingest path (a script, not a test): 1, 2 and 4 `hiring ingest` processes on the
same 8 files of 500,000 rows, total rows/s, and where the time goes (CPU seconds per process kind).

    .venv/bin/python bench/scale_out.py [--consumers 1,2,4] [--files 8] [--rows 500000]

One embedded PostgreSQL and moto for the whole run. For each consumer count: the tables are emptied,
the 8 files are uploaded under new keys while no consumer runs (their events wait in the queue),
then N consumers start together; the time is from their start to the last file's `finished_at`.
The files hold disjoint ids (every batch goes straight in by COPY) and the hires projection's
triggers are on (migration 005). The reference, measured in the same run: `psql \\copy` of all 8
files one after another into a fresh table of the same shape (one PostgreSQL backend, no Python).
Prints rows/s, the CPU seconds PostgreSQL (all its backends), the consumers and moto used, and the
machine's load average, so "it stops growing" can be read against the cores there are.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from ingest_bench import PSQL, REGION, connect, wait_for_log  # noqa: E402
from read_side import generate, load_average  # noqa: E402

from services.dev.localaws import MotoServer, clients, provision  # noqa: E402
from services.dev.postgres import EmbeddedPostgres  # noqa: E402
from services.dev.process import child_env, spawn, stop  # noqa: E402
from shared.db import migrate  # noqa: E402

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

BUCKET = "globant-raw-data"
QUEUE = "hiring-scale"
TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(root_pid: int) -> float:
    """CPU seconds of a process and all its descendants alive now (utime + stime, children reaped)."""
    children: dict[int, list[int]] = {}
    stats: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        stats[pid] = (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / TICK
    total, todo = 0.0, [root_pid]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, 0.0)
        todo.extend(children.get(pid, []))
    return total


async def one_run(
    n: int,
    files: list[Path],
    env: dict[str, str],
    pg: EmbeddedPostgres,
    s3: S3Client,
    state: Path,
    run: int,
    moto_pid: int,
) -> dict[str, Any]:
    conn = await connect(pg.env())
    try:
        await conn.execute("TRUNCATE hired_employees")
        keys = [f"hired_employees/run{run}/part{i}.csv" for i in range(len(files))]
        for path, key in zip(files, keys, strict=True):
            await asyncio.to_thread(s3.upload_file, str(path), BUCKET, key)
        procs = []
        logs = []
        for i in range(n):
            log_path = state / f"consumer-{run}-{i}.log"
            with log_path.open("wb") as log:
                procs.append(
                    spawn(
                        [sys.executable, "-m", "services.cli", "ingest"],
                        log=log,
                        env=child_env(env),
                        death_signal=signal.SIGTERM,
                    )
                )
            logs.append(log_path)
        try:
            for proc, log_path in zip(procs, logs, strict=True):
                await asyncio.to_thread(wait_for_log, log_path, "consumer started", proc, 60)
            pg_cpu0 = tree_cpu(pg.pid or 0)
            consumer_cpu0 = sum(tree_cpu(p.pid) for p in procs)
            moto_cpu0 = tree_cpu(moto_pid)
            started = time.time()
            while True:
                row = await conn.fetchrow(
                    "SELECT count(*) FILTER (WHERE status = 'loaded') AS loaded,"
                    " count(*) FILTER (WHERE status = 'failed') AS failed,"
                    " sum(rows_loaded) AS rows, extract(epoch FROM max(finished_at))::float8 AS last"
                    " FROM ingest_objects WHERE key = ANY($1::text[])",
                    keys,
                )
                assert row is not None  # an aggregate without GROUP BY: always one row
                if row["failed"]:
                    raise SystemExit(f"{row['failed']} files failed; see {state}")
                if row["loaded"] == len(keys):
                    break
                if time.time() - started > 1800:
                    raise SystemExit("not loaded after 30 min")
                await asyncio.sleep(0.1)
            seconds = row["last"] - started
            pg_cpu = tree_cpu(pg.pid or 0) - pg_cpu0
            consumer_cpu = sum(tree_cpu(p.pid) for p in procs) - consumer_cpu0
            moto_cpu = tree_cpu(moto_pid) - moto_cpu0
        finally:
            for proc in procs:
                stop(proc, [(signal.SIGTERM, 25.0)])
        checked = await conn.fetchval("SELECT count(*) = $1 FROM hired_employees", int(row["rows"]))
        return {
            "consumers": n,
            "rows": int(row["rows"]),
            "seconds": seconds,
            "rows_per_s": int(row["rows"]) / seconds,
            "postgres_cpu_s": pg_cpu,
            "consumers_cpu_s": consumer_cpu,
            "moto_cpu_s": moto_cpu,
            "rows_in_table_match": bool(checked),
            "load_average": load_average(),
        }
    finally:
        await conn.close()


def psql_reference(files: list[Path], pg: EmbeddedPostgres) -> float:
    env = pg.env()
    host, port = env["RDS_ENDPOINT"].rsplit(":", 1)
    pg_env = {**os.environ, "PGPASSWORD": env["RDS_PASSWORD"]}
    base = [PSQL, "-h", host, "-p", port, "-U", env["RDS_USERNAME"], "-d", env["RDS_DB_NAME"], "-q", "-c"]
    subprocess.run(
        [
            *base,
            "DROP TABLE IF EXISTS scale_reference; CREATE TABLE scale_reference (id integer primary key,"
            " name text, datetime timestamptz, department_id integer, job_id integer)",
        ],
        env=pg_env,
        check=True,
    )
    started = time.perf_counter()
    for path in files:
        subprocess.run([*base, f"\\copy scale_reference FROM '{path}' (FORMAT csv)"], env=pg_env, check=True)
    took = time.perf_counter() - started
    subprocess.run([*base, "DROP TABLE scale_reference"], env=pg_env, check=True)
    return took


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--consumers", default="1,2,4")
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--rows", type=int, default=500_000, help="rows per file")
    args = parser.parse_args()
    counts = [int(c) for c in args.consumers.split(",")]
    print(f"{os.cpu_count()} CPUs; load average {load_average()}")
    with contextlib.ExitStack() as cleanup:
        state = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="hiring-scale-")))
        files = []
        for i in range(args.files):
            path = state / f"part{i}.csv"
            generate(path, 1 + i * args.rows, (i + 1) * args.rows, seed=100 + i)
            files.append(path)
        pg = EmbeddedPostgres(state / "postgres")
        pg.start()
        cleanup.callback(pg.stop)
        moto = MotoServer(log_path=state / "moto.log")
        endpoint = moto.start()
        cleanup.callback(moto.stop)
        queue_url = provision(endpoint, REGION, BUCKET, QUEUE).queue_url
        s3, _ = clients(endpoint, REGION)
        env = {
            **pg.env(),
            "S3_RAW_BUCKET": BUCKET,
            "SQS_QUEUE_URL": queue_url,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "HIRING_LOG_FORMAT": "json",
            "PYTHONPATH": str(ROOT),
        }

        async def setup() -> None:
            conn = await connect(pg.env())
            try:
                await migrate(conn)
            finally:
                await conn.close()

        asyncio.run(setup())
        total = args.files * args.rows
        reference = psql_reference(files, pg)
        print(f"reference: psql \\copy of the {args.files} files in turn: {total / reference:,.0f} rows/s")
        moto_pid = moto.pid or 0
        results = [
            asyncio.run(one_run(n, files, env, pg, s3, state, run, moto_pid)) for run, n in enumerate(counts)
        ]
        reference_after = psql_reference(files, pg)
    print(f"\n{args.files} files x {args.rows:,} rows, INGEST_CONCURRENCY default (4 files per process)")
    print(
        f"  {'consumers':>9} {'rows/s':>10} {'seconds':>8} {'vs 1':>6} {'PG CPU s':>9} {'consumer CPU s':>15}"
        f" {'moto CPU s':>11} {'CPU/wall':>9}  load average"
    )
    base = results[0]["rows_per_s"]
    for r in results:
        busy = (r["postgres_cpu_s"] + r["consumers_cpu_s"] + r["moto_cpu_s"]) / r["seconds"]
        print(
            f"  {r['consumers']:>9} {r['rows_per_s']:>10,.0f} {r['seconds']:>8.2f}"
            f" {r['rows_per_s'] / base:>6.2f}"
            f" {r['postgres_cpu_s']:>9.1f} {r['consumers_cpu_s']:>15.1f} {r['moto_cpu_s']:>11.1f}"
            f" {busy:>9.2f}  {r['load_average']}"
        )
        if not r["rows_in_table_match"]:
            print("    WRONG: hired_employees does not hold the loaded rows")
    print(
        f"reference psql \\copy (one backend): {total / reference:,.0f} rows/s before,"
        f" {total / reference_after:,.0f} rows/s after the runs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
