"""Upload-to-queryable lag (a script, not a test): the challenge's hired_employees file (1,999 lines:
1,929 valid rows, 70 rejected) sent through `POST /upload`, 50 times, each time with its ids shifted
so every upload adds new employees (those of 2021 show in the metric); the lag is from sending the
request to the first `GET /metrics/hires?year=2021` whose answer counts them (polled every 5 ms by
another connection).

    .venv/bin/python bench/upload_lag.py [--uploads 50] [--poll-ms 5]

One embedded stack (PostgreSQL, moto's S3 + SQS, one `hiring ingest`, the API in its own process).
Prints p50/p99/max of: the POST itself, the ledger saying `loaded` (GET /uploads/{id}), and the
metric counting the rows; plus, as the reference measured in the same run, the time the consumer
spends on the file (ledger started_at -> finished_at).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import aiohttp  # noqa: E402
from ingest_bench import Stack, connect  # noqa: E402
from read_side import BUCKET, api_process, load_average, upload_and_wait  # noqa: E402

CHALLENGE = ROOT / "tests" / "data" / "globant" / "hired_employees.csv"


def shifted(body: bytes, offset: int) -> bytes:
    """The file with each line's leading id raised by `offset` (lines without a numeric id unchanged)."""
    out = []
    for line in body.split(b"\n"):
        head, sep, rest = line.partition(b",")
        out.append(str(int(head) + offset).encode() + sep + rest if head.isdigit() and sep else line)
    return b"\n".join(out)


async def wait_loaded(session: aiohttp.ClientSession, url: str, upload_id: str) -> None:
    deadline = time.perf_counter() + 300
    while time.perf_counter() < deadline:
        async with session.get(f"{url}/uploads/{upload_id}") as r:
            status = (await r.json())["status"]
        if status == "loaded":
            return
        if status == "failed":
            raise SystemExit("the warm-up upload failed")
        await asyncio.sleep(0.05)
    raise SystemExit("the warm-up upload was not loaded in 300 s")


async def total_hires(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(f"{url}/metrics/hires?year=2021") as response:
        rows = await response.json()
    return sum(r["Q1"] + r["Q2"] + r["Q3"] + r["Q4"] for r in rows)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def run(url: str, pg_env: dict[str, str], uploads: int, poll: float) -> dict[str, list[float]]:
    body = CHALLENGE.read_bytes()
    lags: dict[str, list[float]] = {"post": [], "ledger_loaded": [], "queryable": [], "consumer_work": []}
    conn = await connect(pg_env)
    try:
        async with aiohttp.ClientSession() as session, aiohttp.ClientSession() as poller:
            base = await total_hires(poller, url)
            per_upload = 0
            for n in range(uploads + 1):  # the first is a warm-up, not counted
                form = aiohttp.FormData()
                form.add_field(
                    "file",
                    shifted(body, 1_000_000 * (n + 1)),
                    filename="hired_employees.csv",
                    content_type="text/csv",
                )
                started = time.perf_counter()
                async with session.post(f"{url}/upload", data=form) as response:
                    answer = await response.json()
                    assert response.status == 202, answer
                posted = time.perf_counter()
                upload_id = answer["uploads"][0]["id"]
                if n == 0:  # the warm-up: learn how many of its rows the 2021 metric counts
                    await wait_loaded(session, url, upload_id)
                    per_upload = await total_hires(poller, url) - base
                    print(f"each upload adds {per_upload} hires to /metrics/hires?year=2021")
                    continue
                want = base + per_upload * (n + 1)
                loaded_at = None
                while True:
                    if loaded_at is None:
                        async with session.get(f"{url}/uploads/{upload_id}") as r:
                            status = (await r.json())["status"]
                        if status == "loaded":
                            loaded_at = time.perf_counter()
                        elif status == "failed":
                            raise SystemExit(f"upload {n} failed")
                    if await total_hires(poller, url) >= want:
                        queryable = time.perf_counter()
                        break
                    if time.perf_counter() - started > 300:
                        raise SystemExit(f"upload {n} not queryable after 300 s")
                    await asyncio.sleep(poll)
                if loaded_at is None:
                    loaded_at = queryable  # counted by the metric before the poll saw `loaded`
                work = await conn.fetchval(
                    "SELECT extract(epoch FROM finished_at - started_at)::float8 FROM ingest_objects"
                    " WHERE upload_id = $1::uuid",
                    upload_id,
                )
                lags["post"].append(posted - started)
                lags["ledger_loaded"].append(loaded_at - started)
                lags["queryable"].append(queryable - started)
                lags["consumer_work"].append(float(work))
    finally:
        await conn.close()
    return lags


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--uploads", type=int, default=50)
    parser.add_argument("--poll-ms", type=float, default=5.0)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; load average {load_average()}")
    with contextlib.ExitStack() as cleanup:
        state = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="hiring-lag-")))
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
        url, _ = cleanup.enter_context(api_process(env, state / "api.log"))

        async def prepare() -> None:
            conn = await connect(stack.pg.env())
            try:
                for table in ("departments", "jobs"):
                    await upload_and_wait(
                        stack,
                        conn,
                        ROOT / "tests" / "data" / "globant" / f"{table}.csv",
                        f"{table}/challenge.csv",
                        120,
                    )
            finally:
                await conn.close()

        asyncio.run(prepare())
        lags = asyncio.run(run(url, stack.pg.env(), args.uploads, args.poll_ms / 1000))
    print(f"\n{args.uploads} uploads of the challenge file (1,929 valid rows each) through POST /upload:")
    print(f"  {'from sending the POST to':44} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    labels = {
        "post": "its 202 answer",
        "ledger_loaded": "GET /uploads/{id} saying loaded",
        "queryable": "GET /metrics/hires counting its rows",
        "consumer_work": "(reference) consumer's own work on the file",
    }
    for key, label in labels.items():
        values = lags[key]
        print(f"  {label:44} {pct(values, 0.5):>8.1f} {pct(values, 0.99):>8.1f} {1000 * max(values):>8.1f}")
    mean = 1000 * statistics.fmean(lags["queryable"])
    print(f"mean queryable lag {mean:.1f} ms; load average {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
