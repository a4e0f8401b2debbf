"""The read side at scale (a script, not a test): both metrics at 100k, 1M and 10M employees loaded
through the pipeline, at rest and while a 2,000,000-row file that replaces employees is ingested,
next to the plain GROUP BY recompute at the same size, measured in the same run.

    .venv/bin/python bench/read_side.py [--sizes 100000,1000000,10000000] [--replace 2000000]
                                        [--duration 10] [--concurrency 8] [--out results.json]

For each size N, in one embedded stack (PostgreSQL, moto's S3 + SQS, one `hiring ingest`, the
query API in its own process, the load driver in another):
1. empties hired_employees, uploads an N-row file (ids 1..N) and waits for the ledger's `loaded`;
2. at rest: /metrics/hires alone, then /metrics/departments alone, `--concurrency` connections
   for `--duration` seconds each (req/s, p50, p99, errors, time-outs), driven by wrk (a driver
   in C leaves the server more of a 2-core machine; `--driver python` for the Python one);
3. the reference, same size, same moment: the plain GROUP BY over hired_employees that the API ran
   before the projection (its statement is copied below), median of 3 runs;
4. under load: uploads a `--replace`-row file (ids 1..R, every row changed: other times,
   departments and jobs, so the merge path moves counts between cells) and drives both metrics at
   once until the ledger says `loaded`; the GROUP BY reference is timed once more meanwhile, and
   then the metrics read itself (sql.read_year) back to back on its own connection, so the table
   shows what part of a request's wait is the database's;
5. checks that both answers, right after the load, equal a direct SQL computation.
Results go to `--out` (JSON) for bench/plot_latency.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from ingest_bench import Stack, connect, cpu_delta, cpu_snapshot  # noqa: E402
from query_load import expected  # noqa: E402

from services.dev.ports import free_port  # noqa: E402
from services.dev.process import child_env, spawn, stop  # noqa: E402
from services.query import sql  # noqa: E402

BUCKET = "globant-raw-data"
YEAR = 2021
ENDPOINTS = ("/metrics/hires", "/metrics/departments")
FIRST = ["Ana", "Bruno", "Chloé", "Dmitri", "Eun-ji", "Fatima", "Gustavo", "Hanna", "Ivo", "Jürgen"]
LAST = ["Álvarez", "Brown", "Chen", "Dubois", "Essen", "Fischer", "García", "Hughes", "Ito", "Jensen"]
T0 = 1546300800  # 2019-01-01T00:00:00Z
T_SPAN = 4 * 365 * 86400  # to the end of 2022

# The metrics' statement before migration 005 (commit a3b9ab2, services/query/sql.py): the reference.
GROUP_BY = """
WITH bounds AS (SELECT make_timestamptz($1::int, 1, 1, 0, 0, 0, 'UTC') AS lo),
per_pair AS (
    SELECT e.department_id, e.job_id,
           count(*) FILTER (WHERE q = 1) AS q1, count(*) FILTER (WHERE q = 2) AS q2,
           count(*) FILTER (WHERE q = 3) AS q3, count(*) FILTER (WHERE q = 4) AS q4
    FROM (
        SELECT h.department_id, h.job_id, extract(quarter FROM h.datetime AT TIME ZONE 'UTC')::int AS q
        FROM hired_employees h, bounds b
        WHERE h.datetime >= b.lo AND h.datetime < b.lo + interval '1 year'
    ) e
    GROUP BY e.department_id, e.job_id
)
SELECT p.department_id, d.department, p.job_id, j.job, p.q1, p.q2, p.q3, p.q4
FROM per_pair p JOIN departments d ON d.id = p.department_id JOIN jobs j ON j.id = p.job_id
"""


def generate(path: Path, first: int, last: int, seed: int) -> int:
    """Employees first..last as CSV; returns the file's size. Times over 2019-2022, 12 departments
    (plus 0.5% pointing at department 13, which does not exist), 183 jobs."""
    rng = random.Random(seed)
    stamps = [
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 + rng.randrange(T_SPAN))) for _ in range(65536)
    ]
    names = [f"{f} {la}" for f in FIRST for la in LAST]
    rand = rng.random
    with path.open("w", encoding="utf-8", buffering=1 << 20) as out:
        chunk = []
        for i in range(first, last + 1):
            department = 13 if rand() < 0.005 else 1 + int(rand() * 12)
            name, stamp, job = names[int(rand() * 100)], stamps[int(rand() * 65536)], 1 + int(rand() * 183)
            chunk.append(f"{i},{name},{stamp},{department},{job}\n")
            if len(chunk) == 10_000:
                out.write("".join(chunk))
                chunk.clear()
        out.write("".join(chunk))
    return path.stat().st_size


# ---- the API and the driver -------------------------------------------------------------------------


@contextlib.contextmanager
def api_process(env: dict[str, str], log_path: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    with log_path.open("ab") as log:
        proc = spawn(
            [sys.executable, "-m", "services.cli", "query", "--host", "127.0.0.1", "--port", str(port)],
            log=log,
            env=child_env({**env, "HIRING_API_KEYS": ""}),
            death_signal=signal.SIGTERM,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the API exited ({proc.returncode}); see {log_path}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/healthz", timeout=1) as answer:
                if answer.status == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"the API did not answer in 60 s; see {log_path}")
            time.sleep(0.2)
        yield url, proc.pid
    finally:
        stop(proc, [(signal.SIGTERM, 15.0)])


async def drive(
    url: str, paths: list[str], concurrency: int, duration: float, stop_file: str | None
) -> dict[str, Any]:
    """Closed-loop load: `concurrency` connections per path, until `duration` or `stop_file` exists."""
    import aiohttp

    latencies: dict[str, list[float]] = {p: [] for p in paths}
    errors = dict.fromkeys(paths, 0)
    timeouts = dict.fromkeys(paths, 0)
    deadline = time.perf_counter() + duration
    timeout = aiohttp.ClientTimeout(total=10)

    def going() -> bool:
        return time.perf_counter() < deadline and not (stop_file and os.path.exists(stop_file))

    async def worker(session: aiohttp.ClientSession, path: str) -> None:
        while going():
            started = time.perf_counter()
            try:
                async with session.get(url + path) as response:
                    await response.read()
                    ok = response.status == 200
            except TimeoutError:
                timeouts[path] += 1
                continue
            if ok:
                latencies[path].append(time.perf_counter() - started)
            else:
                errors[path] += 1

    print("ready", flush=True)  # start_driver(wait=True) returns once this line is read
    deadline = time.perf_counter() + duration
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        await asyncio.gather(*(worker(session, p) for p in paths for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    out = {}
    for path, values in latencies.items():
        values.sort()
        n = len(values)
        out[path.split("?")[0]] = {
            "requests": n,
            "errors": errors[path],
            "timeouts": timeouts[path],
            "seconds": elapsed,
            "rps": n / elapsed if elapsed else 0.0,
            "p50_ms": 1000 * values[n // 2] if n else None,
            "p99_ms": 1000 * values[min(n - 1, int(n * 0.99))] if n else None,
            "max_ms": 1000 * values[-1] if n else None,
        }
    return out


def start_driver(
    url: str, paths: list[str], concurrency: int, duration: float, stop_file: str | None = None
) -> subprocess.Popen[str]:
    argv = [
        sys.executable,
        __file__,
        "drive",
        "--url",
        url,
        "--concurrency",
        str(concurrency),
        "--duration",
        str(duration),
    ]
    if stop_file:
        argv += ["--stop-file", stop_file]
    proc = subprocess.Popen([*argv, *paths], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":  # its imports are done: the load starts now
        raise SystemExit("the load driver did not start")
    return proc


def finish_driver(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=timeout)
    out = out.strip().splitlines()[-1]
    if proc.returncode != 0:
        raise SystemExit(f"the load driver failed ({proc.returncode})")
    result: dict[str, Any] = json.loads(out)
    return result


_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _wrk_ms(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    if match is None:
        raise SystemExit(f"wrk printed an unexpected latency: {text!r}")
    return float(match.group(1)) * _WRK_UNITS[match.group(2)]


class WrkLoad:
    """One `wrk -t1 -c<concurrency> --latency` process per path (C: the driver costs the server
    little CPU); stopped by SIGINT, on which wrk prints its report, or at `duration`."""

    def __init__(self, url: str, paths: list[str], concurrency: int, duration: float) -> None:
        argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--timeout", "10s"]
        self.procs = {
            path.split("?")[0]: subprocess.Popen(
                [*argv, "--latency", url + path],
                stdout=subprocess.PIPE,
                text=True,
            )
            for path in paths
        }

    def finish(self, timeout: float, interrupt: bool) -> dict[str, Any]:
        if interrupt:
            for proc in self.procs.values():
                proc.send_signal(signal.SIGINT)
        out = {}
        for path, proc in self.procs.items():
            text, _ = proc.communicate(timeout=timeout)
            out[path] = parse_wrk(text)
        return out


def parse_wrk(out: str) -> dict[str, Any]:
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    total = re.search(r"^\s+(\d+) requests in ([0-9.]+)(\w+),", out, re.M)
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", out, re.M)
    if not (total and rps and "50" in percentiles and "99" in percentiles):
        raise SystemExit(f"could not read wrk's output:\n{out}")
    latency = re.search(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)", out, re.M)  # avg, stdev, max
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests": int(total.group(1)),
        "errors": (int(non_2xx.group(1)) if non_2xx else 0)
        + (sum(int(socket.group(i)) for i in (1, 2, 3)) if socket else 0),
        "timeouts": int(socket.group(4)) if socket else 0,
        "seconds": _wrk_ms(total.group(2) + total.group(3)) / 1000,
        "rps": float(rps.group(1)),
        "p50_ms": _wrk_ms(percentiles["50"]),
        "p99_ms": _wrk_ms(percentiles["99"]),
        "max_ms": _wrk_ms(latency.group(1)) if latency else None,
    }


# ---- the database side --------------------------------------------------------------------------------


async def time_group_by(conn: asyncpg.Connection, runs: int) -> float:
    """Median seconds of the pre-projection GROUP BY for YEAR."""
    took = []
    for _ in range(runs):
        started = time.perf_counter()
        await conn.fetch(GROUP_BY, YEAR)
        took.append(time.perf_counter() - started)
    return statistics.median(took)


async def time_reads(conn: asyncpg.Connection, until: asyncio.Task[Any]) -> list[float]:
    """Seconds of each metrics read (sql.read_year: one snapshot, the year's cells plus unfolded
    deltas), back to back on its own connection until `until` is done: the database's share of
    a request that has to read, while the load runs."""
    took = []
    while not until.done():
        started = time.perf_counter()
        await sql.read_year(conn, YEAR)
        took.append(time.perf_counter() - started)
        await asyncio.sleep(0.02)
    return took


async def upload_and_wait(
    stack: Stack, conn: asyncpg.Connection, path: Path, key: str, patience: float
) -> dict[str, Any]:
    started = time.time()
    await asyncio.to_thread(stack.s3.upload_file, str(path), BUCKET, key)
    while True:
        row = await conn.fetchrow(
            "SELECT status, rows_loaded, rows_rejected, error,"
            " extract(epoch FROM finished_at)::float8 AS finished FROM ingest_objects WHERE key = $1",
            key,
        )
        if row is not None and row["status"] != "processing":
            break
        if time.time() - started > patience:
            raise SystemExit(f"{key} not loaded after {patience:.0f} s")
        await asyncio.sleep(0.05)
    if row["status"] != "loaded":
        raise SystemExit(f"{key}: {row['status']} {row['error']}")
    return {"rows": row["rows_loaded"], "seconds": row["finished"] - started}


async def check_answers(url: str, pg_env: dict[str, str]) -> str:
    import aiohttp

    want = await expected(pg_env, YEAR)
    async with aiohttp.ClientSession() as session:
        for path, key in (("/metrics/hires", "hires"), ("/metrics/departments", "departments")):
            async with session.get(f"{url}{path}?year={YEAR}") as response:
                got = await response.json()
            if got != want[key]:
                return f"WRONG: {path} differs from the direct SQL computation"
    return "equal to the direct SQL computation"


def percentiles_ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values) or [0.0]
    n = len(ordered)
    return {
        "n": len(values),
        "p50": 1000 * ordered[n // 2],
        "p99": 1000 * ordered[min(n - 1, int(n * 0.99))],
        "max": 1000 * ordered[-1],
    }


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ---- one size ----------------------------------------------------------------------------------------


async def measure_size(
    args: argparse.Namespace,
    stack: Stack,
    url: str,
    api_pid: int,
    work: Path,
    size: int,
    replace: Path,
    run: int,
) -> dict[str, Any]:
    pg_env = stack.pg.env()
    conn = await connect(pg_env)
    try:
        await conn.execute("TRUNCATE hired_employees")
        path = work / f"employees-{size}.csv"
        if not path.exists():
            generate(path, 1, size, seed=size)
        loaded = await upload_and_wait(stack, conn, path, f"hired_employees/base-{run}-{size}.csv", 3600)
        await conn.execute("VACUUM ANALYZE hired_employees")
        await conn.execute("VACUUM ANALYZE hires_cells")
        rate = loaded["rows"] / loaded["seconds"]
        print(f"\n== {size:,} employees (loaded through the pipeline at {rate:,.0f} rows/s)")
        print(f"load average {load_average()}")
        group_by = await time_group_by(conn, 3)
        print(f"plain GROUP BY recompute at rest (median of 3): {1000 * group_by:.0f} ms")
        q = f"?year={YEAR}"
        rest: dict[str, Any] = {}
        for path_ in ENDPOINTS:
            if args.driver == "wrk":
                rest.update(WrkLoad(url, [path_ + q], 2 * args.concurrency, args.duration).finish(120, False))
            else:
                load = start_driver(url, [path_ + q], args.concurrency, args.duration)
                rest.update(finish_driver(load, args.duration + 120))
        stop_file = str(work / f"stop-{size}")
        await asyncio.to_thread(Path(stop_file).unlink, missing_ok=True)  # a kept --work-dir's
        pids = {"postgres": stack.pg.pid or 0, "consumer": stack.consumer.pid, "api": api_pid}
        cpu_before = cpu_snapshot(pids)
        paths = [p + q for p in ENDPOINTS]
        if args.driver == "wrk":
            wrk = WrkLoad(url, paths, args.concurrency, 3600)
        else:
            driver = await asyncio.to_thread(start_driver, url, paths, args.concurrency, 3600, stop_file)
        conn_b = await connect(pg_env)
        key = f"hired_employees/replace-{run}-{size}.csv"
        ingest = asyncio.create_task(upload_and_wait(stack, conn_b, replace, key, 3600))
        await asyncio.sleep(1.0)
        ref_conn = await connect(pg_env)
        group_by_loading = await time_group_by(ref_conn, 1) if not ingest.done() else None
        reads = await time_reads(ref_conn, ingest)
        await ref_conn.close()
        replaced = await ingest
        await conn_b.close()
        await asyncio.to_thread(Path(stop_file).touch)
        loading = wrk.finish(120, True) if args.driver == "wrk" else finish_driver(driver, 120)
        cpu = cpu_delta(cpu_before, cpu_snapshot(pids))
        answers = await check_answers(url, pg_env)
        return {
            "size": size,
            "load_rows_per_s": loaded["rows"] / loaded["seconds"],
            "group_by_ms": 1000 * group_by,
            "group_by_loading_ms": None if group_by_loading is None else 1000 * group_by_loading,
            "read_loading_ms": percentiles_ms(reads),
            "at_rest": rest,
            "driver": args.driver,
            "loading": loading,
            "replace_rows": replaced["rows"],
            "replace_seconds": replaced["seconds"],
            "cpu_seconds_while_loading": cpu,
            "answers_after_load": answers,
            "load_average": load_average(),
        }
    finally:
        await conn.close()


def print_size(r: dict[str, Any]) -> None:
    gl = r["group_by_loading_ms"]
    print(f"plain GROUP BY while loading: {'-' if gl is None else f'{gl:.0f} ms'}")
    rl = r["read_loading_ms"]
    print(
        f"one metrics read while loading (sql.read_year, its own connection, {rl['n']} reads):"
        f" p50 {rl['p50']:.1f} ms, p99 {rl['p99']:.1f} ms, max {rl['max']:.1f} ms"
    )
    head = ("requests", "req/s", "p50 ms", "p99 ms", "max ms")
    print(f"  {'phase':10} {'endpoint':22} " + " ".join(f"{h:>8}" for h in head) + f" {'err':>4} {'t/o':>4}")
    print(f"load driver: {r['driver']}")
    for phase in ("at_rest", "loading"):
        for path, m in r[phase].items():
            print(
                f"  {phase:10} {path:22} {m['requests']:>8} {m['rps']:>8.0f} {m['p50_ms'] or 0:>8.2f}"
                f" {m['p99_ms'] or 0:>8.2f} {m['max_ms'] or 0:>8.2f} {m['errors']:>4} {m['timeouts']:>4}"
            )
    print(
        f"replacing file: {r['replace_rows']:,} rows in {r['replace_seconds']:.1f} s"
        f" ({r['replace_rows'] / r['replace_seconds']:,.0f} rows/s); CPU s meanwhile:"
        f" {', '.join(f'{k} {v:.1f}' for k, v in r['cpu_seconds_while_loading'].items())}"
    )
    print(f"answers right after the load: {r['answers_after_load']}; load average {r['load_average']}")


def save(out: Path, results: list[dict[str, Any]]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpus": os.cpu_count(), "results": results}, indent=2) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    d = sub.add_parser("drive", help="(internal) the load-generating process")
    d.add_argument("--url", required=True)
    d.add_argument("--concurrency", type=int, default=8)
    d.add_argument("--duration", type=float, default=10.0)
    d.add_argument("--stop-file")
    d.add_argument("paths", nargs="+")
    parser.add_argument("--sizes", default="100000,1000000,10000000")
    parser.add_argument("--replace", type=int, default=2_000_000, help="rows of the file ingested under load")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per at-rest phase")
    parser.add_argument("--concurrency", type=int, default=8, help="connections per endpoint")
    parser.add_argument(
        "--driver",
        choices=("wrk", "python"),
        default="wrk" if shutil.which("wrk") else "python",
        help="load generator: wrk (C; default when installed: apt-get install wrk) or the Python one",
    )
    parser.add_argument("--work-dir", type=Path, help="keep generated files here (reused next time)")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "read_side.json")
    args = parser.parse_args()
    if args.command == "drive":
        print(
            json.dumps(
                asyncio.run(drive(args.url, args.paths, args.concurrency, args.duration, args.stop_file))
            )
        )
        return 0

    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{os.cpu_count()} CPUs; load average {load_average()}")
    print(f"sizes {sizes}; replacing file {args.replace:,} rows")
    with contextlib.ExitStack() as cleanup:
        state = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="hiring-read-")))
        work = args.work_dir or state
        work.mkdir(parents=True, exist_ok=True)
        stack = Stack(state, None)
        cleanup.callback(stack.close)
        env = {
            **stack.pg.env(),
            "S3_RAW_BUCKET": BUCKET,
            "AWS_ENDPOINT_URL": stack.moto.endpoint_url,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "HIRING_LOG_FORMAT": "json",
            "PYTHONPATH": str(ROOT),
        }
        url, api_pid = cleanup.enter_context(api_process(env, state / "api.log"))
        replace = work / f"replace-{args.replace}.csv"
        if not replace.exists():
            generate(replace, 1, args.replace, seed=7)

        async def run_all() -> list[dict[str, Any]]:
            conn = await connect(stack.pg.env())
            try:
                depts = state / "departments.csv"
                depts.write_text("".join(f"{i},Department {i}\n" for i in range(1, 13)))
                jobs = state / "jobs.csv"
                jobs.write_text("".join(f"{i},Job {i:03d}\n" for i in range(1, 184)))
                await upload_and_wait(stack, conn, depts, "departments/all.csv", 120)
                await upload_and_wait(stack, conn, jobs, "jobs/all.csv", 120)
            finally:
                await conn.close()
            results = []
            for run, size in enumerate(sizes):
                r = await measure_size(args, stack, url, api_pid, work, size, replace, run)
                print_size(r)
                results.append(r)
                save(args.out, results)  # after each size: a partial run still leaves its numbers
            return results

        results = asyncio.run(run_all())
    save(args.out, results)
    print(f"\nresults: {args.out} (plot: .venv/bin/python bench/plot_latency.py {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
