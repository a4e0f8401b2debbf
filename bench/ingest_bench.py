"""Ingest benchmark: one real consumer against the embedded stack, compared with `psql \\copy`.

    .venv/bin/python bench/ingest_bench.py --rows 1000000

Generates an N-row `hired_employees` CSV (ids 1..N, ~0.1% invalid rows of varied kinds), starts
PostgreSQL (services/dev/postgres.py), a moto S3 + SQS server with the bucket, queue and bucket
notification (services/dev/localaws.py), and ONE consumer (`python -m services.cli ingest`). It
times a multipart upload of the file until the ledger row says `loaded`, then times `psql \\copy`
of the file's valid rows (a clean copy: \\copy would stop at the first invalid row) into a table
of the same shape in the same server, and prints rows/s of both, their ratio and the consumer's
peak RSS. It checks that rows loaded / rejected equal the generated valid / invalid counts and that
the loaded values equal what PostgreSQL itself parsed from the clean file. Everything it starts is
stopped on the way out, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
from boto3.s3.transfer import TransferConfig  # noqa: E402

from services.dev.localaws import MotoServer, clients, provision  # noqa: E402
from services.dev.postgres import EmbeddedPostgres  # noqa: E402
from services.dev.process import child_env, spawn, stop  # noqa: E402

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

REGION = "us-east-1"
BUCKET = "globant-raw-data"
QUEUE = "hiring-bench"
PSQL = "/usr/bin/psql"

FIRST = [
    *("Harold", "Ty", "Lyman", "Lotti", "Gretna", "Ana", "Luis", "María", "José", "Chen", "Wei", "Priya"),
    *("Olu", "Sven", "Ines", "Mateo", "Zoë", "Björn", "Aiko", "Kwame", "Fatima", "Noah", "Emma", "Liam"),
    *("Olivia", "Lucas", "Sofia", "Diego", "Valentina", "Yusuf", "Leila", "Ivan", "Nadia", "Kai", "Mila"),
]
LAST = [
    *("Vogt", "Hofer", "Hadye", "Crowthe", "Lording", "García", "Fernández", "Müller", "O'Brien", "Nguyen"),
    *("Kowalski", "Rossi", "Silva", "Okafor", "Johansson", "Tanaka", "Smith", "Dubois", "Novak", "Haddad"),
    *("Pérez", "Costa", "Ivanova", "Schmidt", "Jensen", "Moreau", "Byrne", "Kim"),
]

# The kinds of invalid row, each as a function of (id, valid row fields) -> the line's bytes.
T0 = 1577836800  # 2020-01-01T00:00:00Z
T_SPAN = 3 * 365 * 86400  # to the end of 2022


def _ts(rng: random.Random) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 + rng.randrange(T_SPAN)))


INVALID_KINDS: list[tuple[str, Any]] = [
    ("too few fields", lambda i, f: f"{i},{f[1]},{f[2]},{f[3]}".encode()),
    ("too many fields", lambda i, f: f"{i},{f[1]},{f[2]},{f[3]},{f[4]},7".encode()),
    ("empty job_id", lambda i, f: f"{i},{f[1]},{f[2]},{f[3]},".encode()),
    ("blank name", lambda i, f: f"{i},   ,{f[2]},{f[3]},{f[4]}".encode()),
    ("decimal department_id", lambda i, f: f"{i},{f[1]},{f[2]},{f[3]}.0,{f[4]}".encode()),
    ("plus-signed job_id", lambda i, f: f"{i},{f[1]},{f[2]},{f[3]},+{f[4]}".encode()),
    ("id overflows 32 bits", lambda i, f: f"{i}000000000,{f[1]},{f[2]},{f[3]},{f[4]}".encode()),
    ("date without time", lambda i, f: f"{i},{f[1]},{f[2][:10]},{f[3]},{f[4]}".encode()),
    ("impossible date", lambda i, f: f"{i},{f[1]},2021-02-30T10:00:00Z,{f[3]},{f[4]}".encode()),
    ("not UTF-8", lambda i, f: f"{i},".encode() + b"Jos\xe9 " + f"{f[1]},{f[2]},{f[3]},{f[4]}".encode()),
    ("all fields empty", lambda i, f: b",,,,"),
    ("unbalanced quote", lambda i, f: f'{i},"{f[1]},{f[2]},{f[3]},{f[4]}'.encode()),
]


@dataclass
class Generated:
    path: Path
    clean: Path
    rows: int
    valid: int
    invalid: int
    size: int


def generate(path: Path, clean: Path, rows: int, invalid_rate: float, seed: int) -> Generated:
    """The benchmark file and its clean twin (valid rows only) for the psql reference.

    Invalid rows are spread one per block of lines, at least 100 lines apart, so an unbalanced
    quote is rejected alone (the reader gives up on a quote after 64 lines) and costs no valid row.
    """
    rng = random.Random(seed)
    block = max(200, round(1 / invalid_rate)) if invalid_rate > 0 else rows + 1
    bad_at: dict[int, int] = {}
    for kind, start in enumerate(range(1, rows + 1, block)):
        span = min(block, rows - start + 1)
        if span < 200:
            break
        bad_at[start + 50 + rng.randrange(span - 100)] = kind % len(INVALID_KINDS)
    valid = invalid = 0
    with path.open("wb", buffering=1 << 20) as out, clean.open("wb", buffering=1 << 20) as ref:
        for i in range(1, rows + 1):
            name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
            if rng.random() < 0.0005:
                name = f'"{rng.choice(LAST)}, {rng.choice(FIRST)} ""Jr."""'  # quoted, with a comma
            fields = (str(i), name, _ts(rng), str(rng.randint(1, 12)), str(rng.randint(1, 183)))
            k = bad_at.get(i)
            if k is None:
                line = ",".join(fields).encode() + b"\n"
                out.write(line)
                ref.write(line)
                valid += 1
            else:
                out.write(INVALID_KINDS[k][1](i, fields) + b"\n")
                invalid += 1
    return Generated(path, clean, rows, valid, invalid, path.stat().st_size)


@dataclass
class Measured:
    seconds: float
    upload_seconds: float
    start_seconds: float  # from upload start until the consumer started applying the file
    loaded: int
    rejected: int
    batches: int
    cpu_upload: dict[str, float]  # CPU seconds each process group used during the upload
    cpu: dict[str, float]  # ... and from the upload's end to 'loaded'


TICK = os.sysconf("SC_CLK_TCK")


def process_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds used) of a live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def cpu_snapshot(groups: dict[str, int]) -> dict[str, dict[int, float]]:
    """CPU seconds per process of each group: the named pid and, for postgres, its backends."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := process_stat(int(entry.name))) is not None:
            children.setdefault(st[0], []).append(int(entry.name))
    out: dict[str, dict[int, float]] = {}
    for name, pid in groups.items():
        out[name] = {}
        for p in [pid, *(children.get(pid, []) if name == "postgres" else [])]:
            if (st := process_stat(p)) is not None:
                out[name][p] = st[1]
    return out


def cpu_delta(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> dict[str, float]:
    return {
        name: sum(t - before.get(name, {}).get(pid, 0.0) for pid, t in after[name].items()) for name in after
    }


def read_status_kb(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


async def connect(pg_env: dict[str, str]) -> asyncpg.Connection:
    host, port = pg_env["RDS_ENDPOINT"].rsplit(":", 1)
    return await asyncpg.connect(
        host=host,
        port=int(port),
        user=pg_env["RDS_USERNAME"],
        password=pg_env["RDS_PASSWORD"],
        database=pg_env["RDS_DB_NAME"],
    )


def wait_for_log(path: Path, needle: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"consumer exited ({proc.returncode}):\n{path.read_text()[-3000:]}")
        time.sleep(0.05)
    raise RuntimeError(f"consumer not ready after {timeout}s:\n{path.read_text()[-3000:]}")


async def run_ingest(
    args: argparse.Namespace,
    gen: Generated,
    pg_env: dict[str, str],
    s3: S3Client,
    key: str,
    pids: dict[str, int],
) -> Measured:
    conn = await connect(pg_env)
    try:
        await conn.execute("CHECKPOINT")
        config = TransferConfig(
            multipart_threshold=8 << 20, multipart_chunksize=args.part_mb << 20, max_concurrency=4
        )
        if args.drop_datetime_index:  # an experiment: what that index of the schema costs the load
            await conn.execute("DROP INDEX hired_employees_datetime_idx")
        if args.without_projection:  # the reference for what maintaining the hires projection costs
            for event in ("insert", "update", "delete"):
                await conn.execute(f"ALTER TABLE hired_employees DISABLE TRIGGER hires_projection_{event}")
        cpu_before = cpu_snapshot(pids)
        wall_started = time.time()  # the ledger's finished_at is on the same clock (same machine)
        started = time.perf_counter()
        await asyncio.to_thread(s3.upload_file, str(gen.path), BUCKET, key, Config=config)
        uploaded = time.perf_counter()
        cpu_uploaded = cpu_snapshot(pids)
        deadline = started + args.timeout
        while True:
            row = await conn.fetchrow(
                "SELECT status, rows_loaded, rows_rejected, batches, error,"
                " extract(epoch FROM started_at)::float8 AS started,"
                " extract(epoch FROM finished_at)::float8 AS finished FROM ingest_objects WHERE key = $1",
                key,
            )
            if row is not None and row["status"] != "processing":
                break
            if time.perf_counter() > deadline:
                raise RuntimeError(
                    f"not loaded after {args.timeout}s: {dict(row) if row else 'no ledger row'}"
                )
            await asyncio.sleep(0.1)  # light: the end time is the ledger's, not this loop's
        cpu_upload = cpu_delta(cpu_before, cpu_uploaded)
        cpu = cpu_delta(cpu_uploaded, cpu_snapshot(pids))
        if row["status"] != "loaded":
            raise RuntimeError(f"ingest ended {row['status']}: {row['error']}")
        return Measured(
            row["finished"] - wall_started,
            uploaded - started,
            row["started"] - wall_started,
            row["rows_loaded"],
            row["rows_rejected"],
            row["batches"],
            cpu_upload,
            cpu,
        )
    finally:
        await conn.close()


async def run_reference(gen: Generated, pg: EmbeddedPostgres, table: str, *, datetime_index: bool) -> float:
    """Seconds `psql \\copy` takes to load the clean file into a new table of the file's shape
    (with `datetime_index`, also an index on datetime, as hired_employees has)."""
    conn = await connect(pg.env())
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.execute(
            f"CREATE TABLE {table} (id integer PRIMARY KEY, name text, datetime timestamptz,"
            " department_id integer, job_id integer)"
        )
        if datetime_index:
            await conn.execute(f"CREATE INDEX ON {table} (datetime)")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    env = child_env(
        {
            "PGHOST": "127.0.0.1",
            "PGPORT": str(pg.port),
            "PGUSER": pg.user,
            "PGPASSWORD": pg.password,
            "PGDATABASE": pg.database,
        }
    )
    command = f"\\copy {table} FROM '{gen.clean}' WITH (FORMAT csv)"
    started = time.perf_counter()
    done = await asyncio.to_thread(
        subprocess.run, [PSQL, "-X", "-v", "ON_ERROR_STOP=1", "-c", command], env=env, capture_output=True
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"psql \\copy failed: {done.stderr.decode(errors='replace')}")
    return seconds


async def verify(
    gen: Generated, pg_env: dict[str, str], key: str, measured: Measured, *, projection: bool = True
) -> list[str]:
    problems: list[str] = []
    if measured.loaded != gen.valid:
        problems.append(f"rows_loaded {measured.loaded} != {gen.valid} valid rows generated")
    if measured.rejected != gen.invalid:
        problems.append(f"rows_rejected {measured.rejected} != {gen.invalid} invalid rows generated")
    conn = await connect(pg_env)
    try:
        object_id = await conn.fetchval("SELECT id FROM ingest_objects WHERE key = $1", key)
        rejects = await conn.fetchval("SELECT count(*) FROM ingest_rejects WHERE object_id = $1", object_id)
        if rejects != gen.invalid:
            problems.append(f"{rejects} rows in ingest_rejects != {gen.invalid} invalid rows generated")
        in_table = await conn.fetchval("SELECT count(*) FROM hired_employees")
        if in_table != gen.valid:
            problems.append(f"{in_table} rows in hired_employees != {gen.valid} valid rows generated")
        differ = await conn.fetchval(
            "SELECT count(*) FROM ((SELECT id, name, datetime, department_id, job_id FROM hired_employees"
            " EXCEPT SELECT * FROM bench_reference) UNION ALL (SELECT * FROM bench_reference"
            " EXCEPT SELECT id, name, datetime, department_id, job_id FROM hired_employees)) d"
        )
        if differ:
            problems.append(f"{differ} rows differ between hired_employees and psql's load of the clean file")
        if projection:
            from services.query.sql import check_projection

            checked = await check_projection(conn)
            if not checked.ok:
                problems.append(f"the hires projection differs from hired_employees: {checked}")
    finally:
        await conn.close()
    return problems


@contextlib.contextmanager
def terminate_on_signals() -> Iterator[None]:
    """SIGTERM/SIGHUP raise SystemExit, so the `finally` blocks stop what we started."""

    def handler(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def fmt_rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:>12,.0f} rows/s  ({seconds:.2f} s)"


def mb(kb: int | None) -> str:
    return f"{kb / 1024:.1f} MB" if kb is not None else "?"


class Stack:
    """PostgreSQL, moto (bucket, queue, notification) and one consumer; `close` stops all of it."""

    def __init__(self, state: Path, batch_rows: int | None) -> None:
        self.stack = contextlib.ExitStack()
        try:
            self.pg = EmbeddedPostgres(state / "postgres")
            self.pg.start()
            self.stack.callback(self.pg.stop)
            self.moto = MotoServer(log_path=state / "moto.log")
            endpoint = self.moto.start()
            self.stack.callback(self.moto.stop)
            queue_url = provision(endpoint, REGION, BUCKET, QUEUE).queue_url
            self.s3, _ = clients(endpoint, REGION)
            env = {
                **self.pg.env(),
                "S3_RAW_BUCKET": BUCKET,
                "SQS_QUEUE_URL": queue_url,
                "AWS_ENDPOINT_URL": endpoint,
                "AWS_REGION": REGION,
                "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "test"),
                "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
                "HIRING_LOG_FORMAT": "json",
                "PYTHONPATH": str(ROOT),
            }
            if batch_rows:
                env["INGEST_BATCH_ROWS"] = str(batch_rows)
            self.consumer_log = state / "consumer.log"
            with self.consumer_log.open("wb") as log:
                consumer = spawn(
                    [sys.executable, "-m", "services.cli", "ingest"],
                    log=log,
                    env=child_env(env),
                    death_signal=signal.SIGTERM,
                )
            self.stack.callback(stop, consumer, [(signal.SIGTERM, 25.0)])
            self.consumer = consumer
            wait_for_log(self.consumer_log, "consumer started", consumer, 60)
        except BaseException:
            self.stack.close()
            raise

    def pids(self) -> dict[str, int]:
        moto = self.moto._proc  # MotoServer has no public pid; the bench only reads its CPU time
        assert self.pg.pid is not None and moto is not None
        return {
            "consumer": self.consumer.pid,
            "postgres": self.pg.pid,
            "moto": moto.pid,
            "bench": os.getpid(),
        }

    def profile(self, out: str, py_spy: str) -> None:
        """Record the consumer with py-spy until the stack stops."""
        spy = subprocess.Popen(
            [py_spy, "record", "--pid", str(self.consumer.pid), "-o", out, "-r", "200"]
            + (["--format", "raw"] if out.endswith(".txt") else []),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        self.stack.callback(stop, spy, [(signal.SIGINT, 30.0)])
        time.sleep(1)

    def close(self) -> None:
        self.stack.close()


def report(
    gen: Generated, measured: Measured, ref: float, ref_indexed: float, rss: tuple[int | None, int | None]
) -> None:
    print(f"file: {gen.rows:,} rows, {gen.size / 1e6:.1f} MB; {measured.batches} batches")
    print(
        f"ingest (upload start -> ledger 'loaded'): {fmt_rate(gen.valid, measured.seconds)};"
        f" upload {measured.upload_seconds:.2f} s, file taken up at"
        f" {measured.start_seconds:.2f} s, load {measured.seconds - measured.start_seconds:.2f} s"
    )
    print(f"psql \\copy of the clean file ({gen.valid:,} valid rows only): {fmt_rate(gen.valid, ref)}")
    print(f"ratio ingest / psql \\copy: {ref / measured.seconds:.3f}")
    print(
        "psql \\copy into a table that also has hired_employees' index on datetime:"
        f" {fmt_rate(gen.valid, ref_indexed)}; ratio ingest / that: {ref_indexed / measured.seconds:.3f}"
    )
    for phase, cpu in (("the upload", measured.cpu_upload), ("the load after it", measured.cpu)):
        used = ", ".join(f"{name} {seconds:.2f}" for name, seconds in cpu.items())
        print(f"CPU seconds during {phase}: {used}")
    print(f"consumer peak RSS (VmHWM): {mb(rss[1])} (idle before the load: {mb(rss[0])})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the generated file")
    parser.add_argument("--invalid-rate", type=float, default=0.001, help="share of invalid rows")
    parser.add_argument("--seed", type=int, default=2021)
    parser.add_argument(
        "--work-dir", type=Path, help="where the generated files and server state go (default: a temp dir)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep generated files (reused by the next run) and server state"
    )
    parser.add_argument("--batch-rows", type=int, help="INGEST_BATCH_ROWS for the consumer")
    parser.add_argument(
        "--drop-datetime-index",
        action="store_true",
        help="experiment: drop hired_employees' index on datetime before the upload, to see what it costs",
    )
    parser.add_argument(
        "--without-projection",
        action="store_true",
        help="reference: disable the hires projection's triggers (migration 005) for the load",
    )
    parser.add_argument("--part-mb", type=int, default=16, help="multipart upload part size (MiB)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the load")
    parser.add_argument(
        "--py-spy",
        metavar="OUT",
        help="record the consumer with py-spy into OUT (.svg flame graph, .txt collapsed stacks)",
    )
    parser.add_argument("--py-spy-bin", default="py-spy", help="the py-spy executable")
    args = parser.parse_args(argv)

    temporary = args.work_dir is None
    work: Path = Path(tempfile.mkdtemp(prefix="ingest-bench-")) if temporary else args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    state = work / "state"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir()
    stem = f"hired_employees_{args.rows}_{args.seed}_{args.invalid_rate}"
    path, clean, counts = work / f"{stem}.csv", work / f"{stem}.clean.csv", work / f"{stem}.counts"

    with terminate_on_signals():
        stack: Stack | None = None
        try:
            if counts.is_file() and path.is_file() and clean.is_file():  # kept from an earlier run
                valid, invalid = map(int, counts.read_text().split())
                gen = Generated(path, clean, args.rows, valid, invalid, path.stat().st_size)
                print(f"reusing {path}")
            else:
                t = time.perf_counter()
                gen = generate(path, clean, args.rows, args.invalid_rate, args.seed)
                counts.write_text(f"{gen.valid} {gen.invalid}\n")
                print(f"generated {path} in {time.perf_counter() - t:.1f} s")
            print(f"{gen.rows:,} rows: {gen.valid:,} valid, {gen.invalid:,} invalid; {gen.size / 1e6:.1f} MB")

            stack = Stack(state, args.batch_rows)
            if args.py_spy:
                stack.profile(args.py_spy, args.py_spy_bin)
            pids = stack.pids()
            idle_kb = read_status_kb(pids["consumer"], "VmRSS")
            key = f"hired_employees/{stem}.csv"
            measured = asyncio.run(run_ingest(args, gen, stack.pg.env(), stack.s3, key, pids))
            peak_kb = read_status_kb(pids["consumer"], "VmHWM")  # before anything stops it
            ref = asyncio.run(run_reference(gen, stack.pg, "bench_reference", datetime_index=False))
            ref_indexed = asyncio.run(
                run_reference(gen, stack.pg, "bench_reference_indexed", datetime_index=True)
            )
            problems = asyncio.run(
                verify(gen, stack.pg.env(), key, measured, projection=not args.without_projection)
            )
            report(gen, measured, ref, ref_indexed, (idle_kb, peak_kb))
            if problems:
                print("CORRECTNESS CHECK FAILED:")
                for problem in problems:
                    print(f"  - {problem}")
                return 1
            print(
                f"correctness: loaded {measured.loaded:,} = valid, rejected {measured.rejected:,} = invalid;"
                " the table equals psql's load of the clean file"
            )
            return 0
        finally:
            if stack is not None:
                stack.close()
            if args.keep:
                print(f"kept {work}")
            elif temporary:
                shutil.rmtree(work, ignore_errors=True)
            else:
                shutil.rmtree(state, ignore_errors=True)
                for generated in (path, clean, counts):
                    generated.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
