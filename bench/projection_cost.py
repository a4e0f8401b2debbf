"""What maintaining the hires projection costs PostgreSQL (a script, not a test): the same COPY of
N employees into hired_employees with the projection's triggers off, on with the deltas compressed
(as before migration 010) and on as they are, alternated, in one embedded PostgreSQL; plus what
folding the resulting deltas and reading one year cost.

    .venv/bin/python bench/projection_cost.py [--rows 1000000] [--batch-rows 20000] [--repeat 3]

Each round empties the table, then loads the file in batches of --batch-rows, one COPY and one
commit per batch as the consumer's direct path does (rows straight from the CSV text, no Python
parsing). The reference is the same load with the triggers disabled, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import asyncpg

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from ingest_bench import process_stat  # noqa: E402
from read_side import GROUP_BY, YEAR, generate, load_average  # noqa: E402

from services.dev.postgres import EmbeddedPostgres  # noqa: E402
from services.query import sql  # noqa: E402
from shared.config import load_settings  # noqa: E402
from shared.db import connect, migrate  # noqa: E402

EVENTS = ("insert", "update", "delete")
DELTA_ARRAYS = ("department_ids", "job_ids", "q1", "q2", "q3", "q4")


def backend_cpu(pid: int) -> float:
    """CPU seconds a PostgreSQL backend (this machine's process `pid`) has used: less noisy than wall time."""
    stat = process_stat(pid)
    assert stat is not None, f"backend {pid} is gone"
    return stat[1]


async def load(
    c: asyncpg.Connection, batches: list[bytes], projection: bool, *, compressed: bool = False
) -> tuple[float, float]:
    """(wall seconds, backend CPU seconds) of one load."""
    await c.execute("TRUNCATE hired_employees")
    action = "ENABLE" if projection else "DISABLE"
    for event in EVENTS:
        await c.execute(f"ALTER TABLE hired_employees {action} TRIGGER hires_projection_{event}")
    # the deltas' storage: uncompressed since migration 010; compressed (pglz) is the reference before it
    storage = "EXTENDED" if compressed else "EXTERNAL"
    for column in DELTA_ARRAYS:
        await c.execute(f"ALTER TABLE hires_deltas ALTER COLUMN {column} SET STORAGE {storage}")
    await c.execute("CHECKPOINT")
    pid: int = await c.fetchval("SELECT pg_backend_pid()")
    cpu = backend_cpu(pid)
    started = time.perf_counter()
    for batch in batches:
        async with c.transaction():
            await c.copy_to_table(
                "hired_employees",
                source=io.BytesIO(batch),
                columns=["id", "name", "datetime", "department_id", "job_id", "src_object", "src_line"],
                format="csv",
            )
    return time.perf_counter() - started, backend_cpu(pid) - cpu


async def run(pg: EmbeddedPostgres, path: Path, batch_rows: int, repeat: int) -> None:
    settings = load_settings({**pg.env(), "AWS_REGION": "us-east-1"}, service_name="bench")
    conn = await connect(settings.db)
    try:
        await migrate(conn)
        await conn.execute("SET TIME ZONE 'UTC'")
        # the metrics join these: without them the reads below would skip the cells altogether
        await conn.execute(
            "INSERT INTO departments SELECT i, 'Department ' || i, 0, 0 FROM generate_series(1, 12) i"
        )
        await conn.execute("INSERT INTO jobs SELECT i, 'Job ' || i, 0, 0 FROM generate_series(1, 183) i")
        text = await asyncio.to_thread(path.read_bytes)
        lines = [line + b",0,0\n" for line in text.splitlines()]
        batches = [b"".join(lines[i : i + batch_rows]) for i in range(0, len(lines), batch_rows)]
        rows = len(lines)
        with_p: list[tuple[float, float]] = []
        without: list[tuple[float, float]] = []
        compressed: list[tuple[float, float]] = []
        for _ in range(repeat):
            without.append(await load(conn, batches, projection=False))
            compressed.append(await load(conn, batches, projection=True, compressed=True))
            with_p.append(await load(conn, batches, projection=True))
        deltas = await conn.fetchrow(
            "SELECT count(*) AS n, coalesce(sum(cells), 0) AS cells FROM hires_deltas"
        )
        assert deltas is not None  # an aggregate without GROUP BY: always one row
        started = time.perf_counter()
        await conn.fetch(sql._YEAR_PAIRS, YEAR)
        read_unfolded = time.perf_counter() - started
        started = time.perf_counter()
        await sql.fold(conn, 0, timedelta(0))
        fold = time.perf_counter() - started
        started = time.perf_counter()
        await conn.fetch(sql._YEAR_PAIRS, YEAR)
        read_folded = time.perf_counter() - started
        started = time.perf_counter()
        await conn.fetch(GROUP_BY, YEAR)
        group_by = time.perf_counter() - started
        report = await sql.check_projection(conn)
    finally:
        await conn.close()

    def medians(runs: list[tuple[float, float]]) -> tuple[float, float]:
        return statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)

    (a, ca), (b, cb), (z, cz) = medians(without), medians(with_p), medians(compressed)
    print(
        f"\n{rows:,} rows in {len(batches)} COPY batches of {batch_rows:,}; {repeat} rounds each, alternated"
    )
    print(f"  {'':34} {'median s':>9} {'rows/s':>11} {'CPU s':>7}   all runs (wall s / backend CPU s)")
    rounds = (
        ("triggers off (reference)", a, ca, without),
        ("triggers on, deltas compressed", z, cz, compressed),
        ("triggers on (migration 010)", b, cb, with_p),
    )
    for label, median, cpu, runs in rounds:
        each = ", ".join(f"{w:.2f}/{c:.2f}" for w, c in runs)
        print(f"  {label:34} {median:>9.2f} {rows / median:>11,.0f} {cpu:>7.2f}   {each}")
    print(f"  ratio on / off: {a / b:.3f} (deltas compressed, as before migration 010: {a / z:.3f})")
    print(
        f"  what the projection adds: {b - a:.2f} s wall, {cb - ca:.2f} s backend CPU"
        f" (deltas compressed: {z - a:.2f} s, {cz - ca:.2f} s)"
    )
    print(f"deltas after the last load: {deltas['n']} rows holding {deltas['cells']:,} cells")
    print(f"read {YEAR} from the projection: {1000 * read_unfolded:.1f} ms unfolded,", end=" ")
    print(f"{1000 * read_folded:.1f} ms folded")
    print(f"fold of all of them: {1000 * fold:.0f} ms; plain GROUP BY of {YEAR}: {1000 * group_by:.0f} ms")
    print(f"projection check: {'OK' if report.ok else report}; load average {load_average()}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"load average {load_average()}")
    with tempfile.TemporaryDirectory(prefix="hiring-projcost-") as state:
        path = Path(state) / "employees.csv"
        generate(path, 1, args.rows, seed=1)
        with EmbeddedPostgres(Path(state) / "pg") as pg:
            asyncio.run(run(pg, path, args.batch_rows, args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
