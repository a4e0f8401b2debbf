"""Load benchmark of the query API's two metrics (a script, not a test).

    .venv/bin/python bench/query_load.py [--employees 1000000] [--duration 10] [--concurrency 16]

1. A database: the one of a running `hiring dev` (its variables in the environment, or --env-file;
   the benchmark then works in its own database `hiring_bench` of that cluster, dropped at the end),
   else an embedded PostgreSQL started here in a temporary directory.
2. Fills it with N employees (plus departments and jobs, a few employees pointing at missing ones)
   with COPY, spread over 2019-2023.
3. Starts the query API in a separate process (`python -m services.cli query`, loopback only).
4. Drives /metrics/hires and /metrics/departments from another process (aiohttp client, bounded
   by duration and request count): each alone, then both at once; prints requests/s, p50, p99.
5. Checks the answers against a direct SQL computation, and that a committed write shows up in the
   next answer (the cache never serves stale results).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.dev.ports import free_port  # noqa: E402
from services.dev.postgres import EmbeddedPostgres  # noqa: E402
from services.dev.process import child_env, spawn, stop  # noqa: E402
from shared.config import load_settings  # noqa: E402
from shared.db import connect, migrate  # noqa: E402

BENCH_DB = "hiring_bench"
ENDPOINTS = ("/metrics/hires", "/metrics/departments")


# ---- the database -----------------------------------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


@contextmanager
def database(args: argparse.Namespace) -> Iterator[dict[str, str]]:
    """CONTRACT §3 database variables of the database to fill (created for the run, removed after)."""
    joined = {**os.environ, **(read_env_file(args.env_file) if args.env_file else {})}
    if "RDS_ENDPOINT" in joined:
        db_env: dict[str, str] = {
            k: joined[k]
            for k in ("RDS_ENDPOINT", "RDS_DB_NAME", "RDS_USERNAME", "RDS_PASSWORD")
            if k in joined
        }
        admin = load_settings(db_env, service_name="bench").db
        print(f"joining the running stack's PostgreSQL at {admin.dsn_summary()}; working in {BENCH_DB}")
        asyncio.run(_admin(admin, f"DROP DATABASE IF EXISTS {BENCH_DB}", f"CREATE DATABASE {BENCH_DB}"))
        try:
            yield {**db_env, "RDS_DB_NAME": BENCH_DB}
        finally:
            if not args.keep:
                asyncio.run(_admin(admin, f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)"))
        return
    with (
        tempfile.TemporaryDirectory(prefix="hiring-bench-") as state,
        EmbeddedPostgres(Path(state) / "pg") as pg,
    ):
        print(f"embedded PostgreSQL at {pg.endpoint} (state in {state})")
        yield pg.env()


async def _admin(db: Any, *statements: str) -> None:
    conn = await connect(db)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def names(rng: random.Random, count: int, words: list[str]) -> list[str]:
    """Distinct names in mixed case, so the case-folded ordering has work to do."""
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < count:
        name = " ".join(rng.choice(words) for _ in range(2)) + f" {rng.randint(1, 9)}"
        name = "".join(c.upper() if rng.random() < 0.15 else c for c in name)
        if name not in seen:
            seen.add(name)
            out.append(name)
    return out


async def fill(db_env: dict[str, str], employees: int, departments: int, jobs: int, seed: int) -> None:
    settings = load_settings({**db_env, "AWS_REGION": "us-east-1"}, service_name="bench")
    conn = await connect(settings.db)
    try:
        await migrate(conn)
        await conn.execute("TRUNCATE hired_employees, departments, jobs")
        rng = random.Random(seed)
        words = ["sales", "ops", "support", "engineering", "gis", "general", "manager", "analyst", "data"]
        started = time.perf_counter()
        await conn.copy_records_to_table(
            "departments",
            records=[(i, n, 0, 0) for i, n in enumerate(names(rng, departments, words), start=1)],
            columns=["id", "department", "src_object", "src_line"],
        )
        await conn.copy_records_to_table(
            "jobs",
            records=[(i, n, 0, 0) for i, n in enumerate(names(rng, jobs, words), start=1)],
            columns=["id", "job", "src_object", "src_line"],
        )
        base = datetime(2019, 1, 1, tzinfo=UTC)
        span = int((datetime(2024, 1, 1, tzinfo=UTC) - base).total_seconds())
        batch = 200_000
        for start in range(0, employees, batch):
            records = []
            for i in range(start + 1, min(start + batch, employees) + 1):
                # 0.5% point at a department or job that does not exist (not counted by the metrics)
                department = rng.randint(1, departments + (1 if rng.random() < 0.005 else 0))
                job = rng.randint(1, jobs + (1 if rng.random() < 0.005 else 0))
                when = base + timedelta(seconds=rng.randrange(span))
                records.append((i, f"Employee {i}", when, department, job, 0, 0))
            await conn.copy_records_to_table(
                "hired_employees",
                records=records,
                columns=["id", "name", "datetime", "department_id", "job_id", "src_object", "src_line"],
            )
            print(f"  copied {min(start + batch, employees):,} employees", flush=True)
        await conn.execute("ANALYZE departments, jobs, hired_employees")
        print(f"filled in {time.perf_counter() - started:.1f} s")
    finally:
        await conn.close()


# ---- the expected answers, computed directly --------------------------------------------------------


async def expected(db_env: dict[str, str], year: int) -> dict[str, Any]:
    """Both metrics straight from SQL (written independently of the service), ordered per CONTRACT §4."""
    settings = load_settings({**db_env, "AWS_REGION": "us-east-1"}, service_name="bench")
    conn = await connect(settings.db)
    try:
        rows = await conn.fetch(
            """
            SELECT did, department, jid, job,
                   count(*) FILTER (WHERE month BETWEEN 1 AND 3) q1,
                   count(*) FILTER (WHERE month BETWEEN 4 AND 6) q2,
                   count(*) FILTER (WHERE month BETWEEN 7 AND 9) q3,
                   count(*) FILTER (WHERE month >= 10) q4
            FROM (
                SELECT d.id AS did, d.department, j.id AS jid, j.job,
                       date_part('month', e.datetime AT TIME ZONE 'UTC') AS month
                FROM hired_employees e
                JOIN departments d ON d.id = e.department_id
                JOIN jobs j ON j.id = e.job_id
                WHERE date_part('year', e.datetime AT TIME ZONE 'UTC') = $1
            ) e
            GROUP BY did, department, jid, job
            """,
            year,
        )
        rows = sorted(
            rows,
            key=lambda r: (
                r["department"].casefold(),
                r["job"].casefold(),
                r["department"],
                r["job"],
                r["did"],
                r["jid"],
            ),
        )
        hires = [
            {
                "department": r["department"],
                "job": r["job"],
                "Q1": r["q1"],
                "Q2": r["q2"],
                "Q3": r["q3"],
                "Q4": r["q4"],
            }
            for r in rows
        ]
        departments = await conn.fetch(
            """
            WITH per AS (
                SELECT d.id, d.department, count(e.id) AS hired
                FROM departments d
                LEFT JOIN hired_employees e
                  ON e.department_id = d.id AND date_part('year', e.datetime AT TIME ZONE 'UTC') = $1
                 AND EXISTS (SELECT 1 FROM jobs j WHERE j.id = e.job_id)
                GROUP BY d.id, d.department
            )
            SELECT id, department, hired FROM per
            WHERE hired > (SELECT avg(hired) FROM per)
            ORDER BY hired DESC, id
            """,
            year,
        )
        return {"hires": hires, "departments": [dict(r) for r in departments]}
    finally:
        await conn.close()


# ---- the API process ----------------------------------------------------------------------------------


@contextmanager
def api_process(db_env: dict[str, str], port: int, log_path: Path) -> Iterator[str]:
    env = {k: v for k, v in child_env().items() if k not in ("HIRING_API_KEYS",)}
    env.update(db_env)
    env.setdefault("AWS_REGION", "us-east-1")
    env.setdefault("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # the metrics never touch S3
    env.setdefault("AWS_ACCESS_KEY_ID", "bench")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    env["PYTHONPATH"] = str(ROOT)
    with log_path.open("ab") as log:
        proc = spawn(
            [sys.executable, "-m", "services.cli", "query", "--host", "127.0.0.1", "--port", str(port)],
            log=log,
            env=env,
            death_signal=15,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the API exited ({proc.returncode}); see {log_path}")
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the API did not answer in 60 s; see {log_path}")
            time.sleep(0.2)
        yield url
    finally:
        stop(proc, [(15, 15.0)])


# ---- the load driver (runs in its own process: `query_load.py drive ...`) ------------------------------


async def drive(
    url: str, paths: list[str], concurrency: int, duration: float, max_requests: int
) -> dict[str, Any]:
    latencies: dict[str, list[float]] = {p: [] for p in paths}
    errors: dict[str, int] = dict.fromkeys(paths, 0)
    deadline = time.perf_counter() + duration
    connector = aiohttp.TCPConnector(limit=0, force_close=False)

    async def worker(session: aiohttp.ClientSession, path: str) -> None:
        done = latencies[path]
        while time.perf_counter() < deadline and len(done) + errors[path] < max_requests:
            started = time.perf_counter()
            async with session.get(url + path) as response:
                await response.read()
                ok = response.status == 200
            if ok:
                done.append(time.perf_counter() - started)
            else:
                errors[path] += 1

    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session, p) for p in paths for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    result = {}
    for path, values in latencies.items():
        values.sort()
        n = len(values)
        result[path] = {
            "requests": n,
            "errors": errors[path],
            "seconds": elapsed,
            "rps": n / elapsed if elapsed else 0.0,
            "p50_ms": 1000 * values[n // 2] if n else None,
            "p90_ms": 1000 * values[min(n - 1, int(n * 0.90))] if n else None,
            "p99_ms": 1000 * values[min(n - 1, int(n * 0.99))] if n else None,
            "max_ms": 1000 * values[-1] if n else None,
            "mean_ms": 1000 * statistics.fmean(values) if n else None,
        }
    return result


def run_driver(url: str, paths: list[str], args: argparse.Namespace) -> dict[str, Any]:
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "drive",
        "--url",
        url,
        "--concurrency",
        str(args.concurrency),
        "--duration",
        str(args.duration),
        "--max-requests",
        str(args.max_requests),
        *paths,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=args.duration + 120)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def report(title: str, result: dict[str, Any]) -> None:
    print(f"\n{title}")
    print(
        f"  {'endpoint':32} {'requests':>9} {'errors':>6} {'req/s':>7} "
        f"{'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7}"
    )
    for path, r in result.items():
        print(
            f"  {path:32} {r['requests']:>9} {r['errors']:>6} {r['rps']:>7.0f} {r['p50_ms'] or 0:>7.2f} "
            f"{r['p90_ms'] or 0:>7.2f} {r['p99_ms'] or 0:>7.2f} {r['max_ms'] or 0:>7.2f}"
        )


async def fetch(url: str, path: str) -> tuple[float, Any]:
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        async with session.get(url + path) as response:
            body = await response.json()
            assert response.status == 200, body
        return time.perf_counter() - started, body


async def check(url: str, db_env: dict[str, str], year: int) -> None:
    want = await expected(db_env, year)
    for path, key in (("/metrics/hires", "hires"), ("/metrics/departments", "departments")):
        _, got = await fetch(url, f"{path}?year={year}")
        if got != want[key]:
            raise SystemExit(f"WRONG: {path} differs from the direct SQL computation")
        print(f"  {path}: {len(got)} rows, equal to the direct SQL computation")


async def check_fresh_after_write(url: str, db_env: dict[str, str], year: int) -> None:
    settings = load_settings({**db_env, "AWS_REGION": "us-east-1"}, service_name="bench")
    conn = await connect(settings.db)
    try:
        _, before = await fetch(url, f"/metrics/hires?year={year}")
        first = before[0]
        ids = await conn.fetchrow(
            "SELECT d.id AS did, j.id AS jid FROM departments d, jobs j"
            " WHERE d.department = $1 AND j.job = $2",
            first["department"],
            first["job"],
        )
        assert ids is not None, f"no department/job named as in {first}"
        await conn.execute(
            "INSERT INTO hired_employees (id, name, datetime, department_id, job_id, src_object, src_line)"
            " VALUES ((SELECT max(id) + 1 FROM hired_employees), 'late hire',"
            " make_timestamptz($1, 2, 1, 0, 0, 0, 'UTC'), $2, $3, 0, 0)",
            year,
            ids["did"],
            ids["jid"],
        )
        took, after = await fetch(url, f"/metrics/hires?year={year}")
        if after[0]["Q1"] != first["Q1"] + 1:
            raise SystemExit("WRONG: a committed write did not show in the next answer")
        print(f"  a committed write shows in the next answer (recomputed in {1000 * took:.0f} ms)")
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    driver = sub.add_parser("drive", help="(internal) the load-generating process")
    driver.add_argument("--url", required=True)
    driver.add_argument("--concurrency", type=int, default=16)
    driver.add_argument("--duration", type=float, default=10.0)
    driver.add_argument("--max-requests", type=int, default=50_000)
    driver.add_argument("paths", nargs="+")
    parser.add_argument("--employees", type=int, default=1_000_000)
    parser.add_argument("--departments", type=int, default=12)
    parser.add_argument("--jobs", type=int, default=183)
    parser.add_argument("--year", type=int, default=2021)
    parser.add_argument("--concurrency", type=int, default=16, help="connections per endpoint")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--max-requests", type=int, default=50_000, help="per endpoint and phase")
    parser.add_argument("--env-file", type=Path, help="a `hiring dev --env-file` to join")
    parser.add_argument("--keep", action="store_true", help=f"keep the {BENCH_DB} database of a joined stack")
    parser.add_argument("--seed", type=int, default=2021)
    args = parser.parse_args()

    if args.command == "drive":
        print(
            json.dumps(
                asyncio.run(drive(args.url, args.paths, args.concurrency, args.duration, args.max_requests))
            )
        )
        return 0

    shape = f"{args.employees:,} employees, {args.departments} departments, {args.jobs} jobs"
    print(f"{os.cpu_count()} CPUs; {shape}")
    with ExitStack() as stack:
        db_env = stack.enter_context(database(args))
        asyncio.run(fill(db_env, args.employees, args.departments, args.jobs, args.seed))
        log_path = Path(tempfile.gettempdir()) / f"hiring-bench-api-{os.getpid()}.log"
        url = stack.enter_context(api_process(db_env, free_port(), log_path))
        print(f"query API at {url} (log: {log_path})")
        year_query = f"?year={args.year}"
        took, _ = asyncio.run(fetch(url, f"/metrics/hires{year_query}"))
        print(f"first (uncached) /metrics/hires: {1000 * took:.0f} ms")
        print("correctness:")
        asyncio.run(check(url, db_env, args.year))
        for path in ENDPOINTS:
            report(
                f"{path} alone, {args.concurrency} connections:", run_driver(url, [path + year_query], args)
            )
        report(
            f"both at once, {args.concurrency} connections each:",
            run_driver(url, [p + year_query for p in ENDPOINTS], args),
        )
        print("\nafter the load:")
        asyncio.run(check(url, db_env, args.year))
        asyncio.run(check_fresh_after_write(url, db_env, args.year))
    return 0


if __name__ == "__main__":
    sys.exit(main())
