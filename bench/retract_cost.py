"""What undoing an upload costs: retraction (CONTRACT §2) at N employees, against the load itself.

    .venv/bin/python bench/retract_cost.py --rows 1000000

One real consumer on the embedded stack (bench/ingest_bench.py's Stack). It loads an N-row
`hired_employees` file through the bucket, then a stray 1,000-row file overwriting some of those
ids, then deletes the stray file's version: the consumer retracts it by rebuilding the table from
the versions the bucket still shows. Prints the time of the first load (the reference, same run),
the time from the delete to the ledger's `retracted`, their ratio, and checks that every id the
stray file wrote is back to the first file's value.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import asyncpg
from ingest_bench import BUCKET, Stack, connect, generate


async def _wait(conn: asyncpg.Connection, query: str, want: object, seconds: float) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        if await conn.fetchval(query) == want:
            return time.perf_counter() - started
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{query!r} never gave {want!r}")


async def main(rows: int) -> None:
    with tempfile.TemporaryDirectory(prefix="retract-bench-") as tmp:
        work = Path(tmp)
        gen = generate(work / "big.csv", work / "clean.csv", rows, 0.0, 2021)
        stray = b"".join(b"%d,STRAY,2021-01-01T00:00:00Z,1,1\n" % i for i in range(1, rows + 1, rows // 1000))
        stack = Stack(work, None)
        try:
            conn = await connect(stack.pg.env())
            loaded = "SELECT count(*) FROM ingest_objects WHERE status = 'loaded'"
            started = time.perf_counter()
            stack.s3.upload_file(str(gen.path), BUCKET, "hired_employees/big.csv")
            await _wait(conn, loaded, 1, 1800)
            load_s = time.perf_counter() - started
            put = stack.s3.put_object(Bucket=BUCKET, Key="hired_employees/stray.csv", Body=stray)
            await _wait(conn, loaded, 2, 600)
            assert await conn.fetchval("SELECT count(*) FROM hired_employees WHERE name = 'STRAY'") == 1000
            started = time.perf_counter()
            stack.s3.delete_object(Bucket=BUCKET, Key="hired_employees/stray.csv", VersionId=put["VersionId"])
            await _wait(conn, "SELECT count(*) FROM ingest_objects WHERE status = 'retracted'", 1, 1800)
            retract_s = time.perf_counter() - started
            assert await conn.fetchval("SELECT count(*) FROM hired_employees WHERE name = 'STRAY'") == 0
            assert await conn.fetchval("SELECT count(*) FROM hired_employees") == gen.valid
            await conn.close()
        finally:
            stack.close()
    print(f"load of {gen.valid:,} rows through the bucket: {load_s:.2f} s")
    print(f"retraction of a 1,000-row upload over them (delete -> 'retracted'): {retract_s:.2f} s")
    print(f"ratio retraction / load: {retract_s / load_s:.2f}")
    print("correctness: every id the stray upload wrote is back to the first file's value")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    asyncio.run(main(parser.parse_args().rows))
