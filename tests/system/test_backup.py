"""Backups (CONTRACT §6) through the real command and the real API: Avro files an independent reader
(the `avro` package, not fastavro) reads back value for value, manifest.json, the bucket's backups/
prefix, and every way a restore must refuse a backup before it changes anything."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import avro.datafile
import avro.io
import pytest

from shared.backup import avro as avro_schemas
from shared.dictionary import TABLES
from tests.system.stack import run_async

if TYPE_CHECKING:
    import asyncpg

    from tests.system.query_fixtures import ClientFactory
    from tests.system.stack import Stack

pytest_plugins = ("tests.system.query_fixtures",)

ADMIN = "admin-key-0003"
UPLOADER = "uploader-key-0002"
KEYS = f"{UPLOADER}:read+upload,{ADMIN}:admin"

# Values at the edges of the dictionary: 32-bit extremes, non-ASCII, CSV-special characters, a line
# end inside text, microseconds, early and late years.
EMPLOYEES: list[tuple[int, str, datetime, int, int]] = [
    (-2147483648, "Zoë Ñúñez 山田 🚀", datetime(2021, 7, 27, 16, 2, 8, 123456, tzinfo=UTC), 1, 1),
    (2, 'Comma, "quote"\nand a second line', datetime(1000, 1, 1, 0, 0, 0, 1, tzinfo=UTC), 2, 3),
    (3, "Ана Петрова", datetime(2999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), -5, 2147483647),
    (2147483647, "x", datetime(2021, 1, 1, tzinfo=UTC), 0, 0),
]
DEPARTMENTS: list[tuple[int, str]] = [
    (1, "Ingeniería"),
    (2, 'R&D, "Labs"'),
    (-3, "日本支社"),
    (4, "Old\rMac"),  # a lone CR: a line end to the reader unless quoted
]
JOBS: list[tuple[int, str]] = [(1, "Développeur"), (2, "Data\nEngineer"), (3, "QA, Tester")]
SEEDED: dict[str, list[tuple[Any, ...]]] = {
    "hired_employees": list(EMPLOYEES),
    "departments": list(DEPARTMENTS),
    "jobs": list(JOBS),
}


async def seed_all(conn: asyncpg.Connection) -> None:
    for name, rows in SEEDED.items():
        table = TABLES[name]
        columns = ", ".join(table.column_names)
        marks = ", ".join(f"${i}" for i in range(1, len(table.columns) + 1))
        await conn.executemany(
            f"INSERT INTO {name} ({columns}, src_object, src_line) VALUES ({marks}, 0, 0)", rows
        )


async def table_rows(conn: asyncpg.Connection, name: str) -> list[tuple[Any, ...]]:
    columns = ", ".join(TABLES[name].column_names)
    return [tuple(r) for r in await conn.fetch(f"SELECT {columns} FROM {name} ORDER BY id")]


def hiring(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env={**os.environ, **env, "HIRING_LOG_FORMAT": "json"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def read_with_avro_package(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any], bytes]:
    """Records, writer schema and codec of an Avro file, by the Apache `avro` package."""
    with path.open("rb") as f, avro.datafile.DataFileReader(f, avro.io.DatumReader()) as reader:
        records: list[dict[str, Any]] = []
        for record in reader:
            assert isinstance(record, dict), record  # an Avro record reads as a dict
            records.append(record)
        schema, codec = reader.get_meta("avro.schema"), reader.get_meta("avro.codec")
    assert schema is not None and codec is not None, "the file names no schema or no codec"
    return records, json.loads(schema), codec


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- hiring backup --to DIR -------------------------------------------------------------------------


async def test_backup_to_a_folder_is_read_back_value_for_value_by_another_avro_reader(
    fresh: Stack, db: asyncpg.Connection, tmp_path: Path
) -> None:
    await seed_all(db)
    folder = tmp_path / "backup"
    done = await asyncio.to_thread(hiring, fresh.env, "backup", "--to", str(folder))
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == "hiring-backup/1" and set(manifest["tables"]) == set(TABLES)
    assert manifest["history"]["ingest_object_id"] is None  # nothing was ever ingested here
    datetime.fromisoformat(manifest["created_at"])
    for name, rows in SEEDED.items():
        entry = manifest["tables"][name]
        path = folder / f"{name}.avro"
        assert entry["file"] == f"{name}.avro" and entry["rows"] == len(rows)
        assert entry["sha256"] == sha256(path) and entry["bytes"] == path.stat().st_size
        assert entry["schema"] == avro_schemas.schema(TABLES[name])
        records, schema, codec = read_with_avro_package(path)
        assert codec == b"deflate"
        assert schema["fields"] == avro_schemas.schema(TABLES[name])["fields"]
        got = sorted((tuple(r[c] for c in TABLES[name].column_names) for r in records), key=lambda r: r[0])
        assert got == sorted(rows, key=lambda r: r[0])  # timestamps equal to the microsecond, text exact
    ids = {f["name"]: f["type"] for f in manifest["tables"]["hired_employees"]["schema"]["fields"]}
    assert ids == {
        "id": "int",
        "name": "string",
        "datetime": {"type": "long", "logicalType": "timestamp-micros"},
        "department_id": "int",
        "job_id": "int",
    }
    assert sorted(p.name for p in folder.iterdir()) == [
        "departments.avro",
        "hired_employees.avro",
        "jobs.avro",
        "manifest.json",
    ]
    # one table; and a folder that already holds a backup is refused
    only = await asyncio.to_thread(
        hiring, fresh.env, "backup", "--table", "jobs", "--to", str(tmp_path / "j")
    )
    assert only.returncode == 0, only.stderr[-3000:]
    assert set(json.loads((tmp_path / "j" / "manifest.json").read_text())["tables"]) == {"jobs"}
    again = await asyncio.to_thread(hiring, fresh.env, "backup", "--to", str(folder))
    assert again.returncode == 2 and "already holds a backup" in again.stderr


async def test_backup_reflects_one_snapshot_and_its_history_position(
    fresh: Stack, db: asyncpg.Connection, tmp_path: Path
) -> None:
    await db.execute(
        "INSERT INTO ingest_objects (bucket, key, version, event_time, order_key, table_name, status)"
        " VALUES ('b', 'jobs/a.csv', 'v1', now(), '0001', 'jobs', 'loaded'),"
        " ('b', 'jobs/b.csv', 'v2', now(), '0002', 'jobs', 'failed')"
    )
    await seed_all(db)
    loaded = await db.fetchval("SELECT id FROM ingest_objects WHERE status = 'loaded'")
    done = await asyncio.to_thread(hiring, fresh.env, "backup", "--to", str(tmp_path / "b"))
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["history"]["ingest_object_id"] == loaded
    assert manifest["tables"]["jobs"]["order_key"] == "0001"
    assert manifest["tables"]["departments"]["order_key"] is None


# ---- POST /backups, GET /backups ---------------------------------------------------------------------


async def test_backups_over_http_need_admin_and_land_under_the_backups_prefix(
    make_client: ClientFactory, fresh: Stack, db: asyncpg.Connection, tmp_path: Path
) -> None:
    await seed_all(db)
    client = await make_client(api_keys=KEYS)
    denied = await client.post("/backups", headers={"X-API-Key": UPLOADER})
    assert denied.status == 403
    assert (await client.get("/backups", headers={"X-API-Key": UPLOADER})).status == 403
    admin = {"X-API-Key": ADMIN}
    resp = await client.post("/backups", headers=admin)
    made = await resp.json()
    assert resp.status == 201, made
    assert made["location"] == f"s3://{fresh.bucket}/backups/{made['id']}"
    assert {n: t["rows"] for n, t in made["tables"].items()} == {n: len(r) for n, r in SEEDED.items()}
    bad = await client.post("/backups", headers=admin, json={"tables": ["nope"]})
    assert bad.status == 400
    some = await client.post("/backups", headers=admin, json={"tables": ["jobs"]})
    assert some.status == 201 and set((await some.json())["tables"]) == {"jobs"}
    listed = await (await client.get("/backups", headers=admin)).json()
    assert [b["id"] for b in listed["backups"]] == [(await some.json())["id"], made["id"]]
    # the objects: only under backups/<id>/, each file's SHA-256 as its manifest says
    s3 = fresh.s3()
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=fresh.bucket)["Contents"])
    assert all(k.startswith("backups/") for k in keys)
    prefix = f"backups/{made['id']}/"
    assert sorted(k for k in keys if k.startswith(prefix)) == [
        prefix + f for f in ("departments.avro", "hired_employees.avro", "jobs.avro", "manifest.json")
    ]
    manifest = json.loads(s3.get_object(Bucket=fresh.bucket, Key=prefix + "manifest.json")["Body"].read())
    for name, entry in manifest["tables"].items():
        data = s3.get_object(Bucket=fresh.bucket, Key=prefix + entry["file"])["Body"].read()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] == made["tables"][name]["sha256"]
        path = tmp_path / entry["file"]
        path.write_bytes(data)
        records, _, _ = read_with_avro_package(path)
        assert len(records) == len(SEEDED[name])


# ---- restores refused: nothing changes ------------------------------------------------------------------


def _rewrite_manifest(folder: Path, change: Any) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def _resum(folder: Path, name: str) -> None:
    def change(m: dict[str, Any]) -> None:
        m["tables"][name]["sha256"] = sha256(folder / f"{name}.avro")
        m["tables"][name]["bytes"] = (folder / f"{name}.avro").stat().st_size

    _rewrite_manifest(folder, change)


def _flip_byte(folder: Path) -> None:
    path = folder / "jobs.avro"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(folder: Path) -> None:
    path = folder / "jobs.avro"
    path.write_bytes(path.read_bytes()[:-20])


def _truncate_and_resum(folder: Path) -> None:
    _truncate(folder)
    _resum(folder, "jobs")


def _foreign_file(folder: Path) -> None:
    shutil.copy(folder / "departments.avro", folder / "jobs.avro")
    _resum(folder, "jobs")


def _not_avro(folder: Path) -> None:
    (folder / "jobs.avro").write_bytes(b"1,Engineer\n2,Analyst\n")
    _resum(folder, "jobs")


def _other_schema(folder: Path) -> None:
    def change(m: dict[str, Any]) -> None:
        m["tables"]["jobs"]["schema"]["fields"][0]["type"] = "string"

    _rewrite_manifest(folder, change)


def _more_rows_claimed(folder: Path) -> None:
    def change(m: dict[str, Any]) -> None:
        m["tables"]["jobs"]["rows"] = 999

    _rewrite_manifest(folder, change)


def _table_missing(folder: Path) -> None:
    _rewrite_manifest(folder, lambda m: m["tables"].pop("jobs"))


def _garbage_manifest(folder: Path) -> None:
    (folder / "manifest.json").write_text("{not json")


def _other_format(folder: Path) -> None:
    _rewrite_manifest(folder, lambda m: m.update(format="someone-else/2"))


def _no_manifest(folder: Path) -> None:
    (folder / "manifest.json").unlink()


def _file_missing(folder: Path) -> None:
    (folder / "jobs.avro").unlink()


def _escaping_file_name(folder: Path) -> None:
    _rewrite_manifest(folder, lambda m: m["tables"]["jobs"].update(file="../jobs.avro"))


@pytest.fixture(scope="module")
def good_backup(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One backup of the seeded tables by `hiring backup`, copied by each test that damages it."""

    async def seed() -> None:
        await stack.reset_data()
        conn = await stack.connect()
        try:
            await seed_all(conn)
        finally:
            await conn.close()

    run_async(seed())
    folder = tmp_path_factory.mktemp("good") / "backup"
    made = hiring(stack.env, "backup", "--to", str(folder))
    assert made.returncode == 0, made.stderr[-3000:]
    run_async(stack.reset_data())
    return folder


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_flip_byte, "does not match its SHA-256"),
        (_truncate, "truncated or altered"),
        (_truncate_and_resum, "corrupt"),
        (_foreign_file, "another schema than table jobs"),
        (_not_avro, "not an Avro object container file"),
        (_other_schema, "another schema than the table's"),
        (_more_rows_claimed, "the manifest says 999"),
        (_table_missing, "holds no jobs"),
        (_garbage_manifest, "not a backup manifest"),
        (_other_format, "format 'someone-else/2'"),
        (_no_manifest, "no manifest.json"),
        (_file_missing, "has no jobs.avro"),
        (_escaping_file_name, "outside its folder"),
    ],
)
async def test_a_damaged_backup_is_refused_and_nothing_changes(
    good_backup: Path, fresh: Stack, db: asyncpg.Connection, tmp_path: Path, damage: Any, reason: str
) -> None:
    await seed_all(db)
    folder = tmp_path / "backup"
    shutil.copytree(good_backup, folder)
    await db.execute("UPDATE jobs SET job = 'changed since' WHERE id = 1")
    before = await table_rows(db, "jobs")
    damage(folder)
    done = await asyncio.to_thread(hiring, fresh.env, "restore", "--table", "jobs", "--from", str(folder))
    assert done.returncode == 2, (done.stdout, done.stderr[-3000:])
    assert "refused, nothing changed" in done.stderr and reason in done.stderr, done.stderr[-3000:]
    assert await table_rows(db, "jobs") == before
    assert await db.fetchval("SELECT count(*) FROM uploads") == 0
    assert "Contents" not in fresh.s3().list_objects_v2(Bucket=fresh.bucket)


async def test_restore_over_http_refuses_unknown_and_damaged_backups(
    make_client: ClientFactory, fresh: Stack, db: asyncpg.Connection
) -> None:
    await seed_all(db)
    client = await make_client(api_keys=KEYS)
    admin = {"X-API-Key": ADMIN}
    made = await (await client.post("/backups", headers=admin)).json()
    denied = await client.post(
        "/tables/jobs/restore", json={"backup": made["id"]}, headers={"X-API-Key": UPLOADER}
    )
    assert denied.status == 403
    cases = [
        ("/tables/nope/restore", {"backup": made["id"]}, 404, "no table 'nope'"),
        ("/tables/jobs/restore", {"backup": "20200101T000000Z-000000"}, 404, "no backup"),
        ("/tables/jobs/restore", {"backup": "../../etc"}, 400, "malformed backup id"),
        ("/tables/jobs/restore", {"id": made["id"]}, 400, "malformed body"),
    ]
    for path, body, status, message in cases:
        resp = await client.post(path, json=body, headers=admin)
        answer = await resp.json()
        assert (resp.status, message in answer["error"]) == (status, True), (path, body, answer)
    s3 = fresh.s3()
    key = f"backups/{made['id']}/jobs.avro"
    data = s3.get_object(Bucket=fresh.bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=fresh.bucket, Key=key, Body=data[:-10])
    resp = await client.post("/tables/jobs/restore", json={"backup": made["id"]}, headers=admin)
    answer = await resp.json()
    assert resp.status == 422 and "truncated or altered" in answer["error"], answer
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=fresh.bucket)["Contents"]]
    assert all(k.startswith("backups/") for k in keys)
    assert await db.fetchval("SELECT count(*) FROM uploads") == 0
