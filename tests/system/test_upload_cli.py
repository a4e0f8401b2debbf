"""`hiring upload` and the presigned upload path as a user runs them: real `hiring query` and `hiring
ingest` processes on the test's own bucket and queue, the command as a subprocess."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from services.dev.ports import free_port
from tests.system.consumers import ROOT, ConsumerProcess
from tests.system.stack import Stack

DATA = Path(__file__).resolve().parents[1] / "data" / "globant"


@dataclass
class Running:
    url: str
    env: dict[str, str]
    stack: Stack


def _query_process(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    out = log.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "query", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, **env, "HIRING_LOG_FORMAT": "json"},
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    out.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return proc, url
        except (urllib.error.URLError, OSError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"hiring query did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.2)


@pytest.fixture
def running(fresh: Stack, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Running]:
    keys = getattr(request, "param", "")
    env = {**fresh.env, "HIRING_API_KEYS": keys}
    proc, url = _query_process(env, tmp_path / "query.log")
    try:
        with ConsumerProcess(fresh.env, tmp_path / "consumer.log"):
            yield Running(url, {k: v for k, v in fresh.env.items()}, fresh)
    finally:
        proc.terminate()
        proc.wait(30)


def hiring_upload(
    *args: str, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    inherited = {k: v for k, v in os.environ.items() if k not in ("HIRING_API_KEY", "HIRING_API_URL")}
    run_env = {**inherited, **(env or {}), "COLUMNS": "250"}
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "upload", *args],
        env=run_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _row(stdout: str, name: str) -> list[str]:
    """The summary table's row for file `name`: file, table, id, status, then the counts."""
    for line in stdout.splitlines():
        cells = line.split()
        if cells and cells[0] == name:
            return cells
    raise AssertionError(f"no row for {name} in:\n{stdout}")


def test_a_folder_uploads_with_progress_and_a_table_exit_1_for_rejects(
    running: Running, tmp_path: Path
) -> None:
    folder = tmp_path / "challenge"
    folder.mkdir()
    for name in ("departments.csv", "jobs.csv", "hired_employees.csv"):
        (folder / name).write_bytes((DATA / name).read_bytes())
    (folder / "notes.txt").write_text("not a CSV: skipped")
    done = hiring_upload(str(folder), "--api", running.url, "--wait")
    assert done.returncode == 1, done.stdout + done.stderr  # hired_employees.csv has 70 rejected rows
    employees = _row(done.stdout, "hired_employees.csv")
    assert employees[:2] == ["hired_employees.csv", "hired_employees"]
    assert employees[3:6] == ["loaded", "1,929", "70"]
    # under the table, the reasons, counted
    assert (
        "hired_employees.csv: rejected rows: 21 x department_id is empty; 19 x name is empty" in done.stdout
    )
    assert _row(done.stdout, "jobs.csv")[3:6] == ["loaded", "183", "0"]
    assert _row(done.stdout, "departments.csv")[3:6] == ["loaded", "12", "0"]
    assert "notes.txt" not in done.stdout
    # progress went to stderr: each file's bar, the bytes, then the rows loaded
    assert "hired_employees.csv" in done.stderr and "1,929 rows loaded" in done.stderr
    # the ids it printed are the API's
    upload_id = employees[2]
    with urllib.request.urlopen(f"{running.url}/uploads/{upload_id}") as resp:
        assert b'"rows_loaded":1929' in resp.read()


def test_clean_files_exit_0_and_unsendable_ones_exit_2(running: Running, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs_2021.csv"
    jobs.write_bytes(b"1,Marketing Assistant\n2,VP Sales\n")
    done = hiring_upload(str(jobs), "--api", running.url, "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _row(done.stdout, "jobs_2021.csv")[3:6] == ["loaded", "2", "0"]

    people = tmp_path / "people.csv"
    people.write_bytes(b"1,x\n")
    done = hiring_upload(
        str(people), str(tmp_path / "missing.csv"), str(jobs), "--api", running.url, "--wait"
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert _row(done.stdout, "people.csv")[1:5] == ["-", "-", "not", "sent"]
    assert "people.csv: cannot tell the table of 'people.csv'" in done.stdout
    assert f"{tmp_path / 'missing.csv'}: no such file or folder" in done.stdout
    assert _row(done.stdout, "jobs_2021.csv")[3] == "loaded"  # the others are still sent
    # --table names the table of files whose names do not
    done = hiring_upload(str(people), "--table", "jobs", "--api", running.url, "--wait")
    assert done.returncode == 0 and _row(done.stdout, "people.csv")[1] == "jobs"

    # without --wait: sent and queued, 0
    done = hiring_upload(str(jobs), "--api", running.url)
    assert done.returncode == 0 and _row(done.stdout, "jobs_2021.csv")[3] == "queued"
    # an API that is not there: 2
    done = hiring_upload(str(jobs), "--api", f"http://127.0.0.1:{free_port()}", "--wait")
    assert done.returncode == 2 and "cannot reach" in done.stdout


@pytest.mark.parametrize("running", ["upl0ad-key-0001:read+upload,r3ad-key-00001:read"], indirect=True)
def test_api_keys_come_from_HIRING_API_KEY(running: Running, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.csv"
    jobs.write_bytes(b"1,Marketing Assistant\n")
    done = hiring_upload(str(jobs), "--api", running.url, "--wait")
    assert done.returncode == 2 and "401" in done.stdout
    done = hiring_upload(str(jobs), "--api", running.url, env={"HIRING_API_KEY": "r3ad-key-00001"})
    assert done.returncode == 2 and "403" in done.stdout and "upload" in done.stdout
    done = hiring_upload(
        str(jobs), "--wait", env={"HIRING_API_KEY": "upl0ad-key-0001", "HIRING_API_URL": running.url}
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_bucket_mode_puts_into_the_raw_bucket_and_follows_the_ledger(
    running: Running, tmp_path: Path
) -> None:
    folder = tmp_path / "drop"
    (folder / "hired_employees" / "2021").mkdir(parents=True)
    (folder / "hired_employees" / "2021" / "07.csv").write_bytes(
        b"1,Ann,2021-07-01T10:00:00Z,1,1\n2,Bob,not a date,1,1\n"
    )
    (folder / "jobs.csv").write_bytes(b"1,Analyst\n")
    done = hiring_upload(str(folder), "--bucket", "--wait", env=running.env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert _row(done.stdout, "hired_employees/2021/07.csv")[3:6] == ["loaded", "1", "1"]
    assert _row(done.stdout, "jobs.csv")[3:6] == ["loaded", "1", "0"]

    def keys() -> dict[str, dict[str, str]]:
        s3 = running.stack.s3()
        listing = s3.list_objects_v2(Bucket=running.stack.bucket)
        return {
            o["Key"]: s3.head_object(Bucket=running.stack.bucket, Key=o["Key"])["Metadata"]
            for o in listing.get("Contents", [])
        }

    found = keys()
    assert set(found) == {"hired_employees/2021/07.csv", "jobs/jobs.csv"}
    # the id it printed is the object's upload-id, and the API knows it
    upload_id = _row(done.stdout, "jobs.csv")[2]
    assert found["jobs/jobs.csv"]["upload-id"] == upload_id
    with urllib.request.urlopen(f"{running.url}/uploads/{upload_id}") as resp:
        assert b'"status":"loaded"' in resp.read()


def _employees(n: int, seed: int) -> bytes:
    rnd = random.Random(seed)
    lines = [
        f"{i},Name {rnd.randrange(10**6)} {'x' * rnd.randrange(20)},"
        f"2021-{rnd.randrange(1, 13):02d}-{rnd.randrange(1, 29):02d}T{rnd.randrange(24):02d}:00:00Z,"
        f"{rnd.randrange(1, 13)},{rnd.randrange(1, 184)}\n"
        for i in range(1, n + 1)
    ]
    return "".join(lines).encode()


def test_big_files_go_by_presigned_parts_never_through_the_api(running: Running, tmp_path: Path) -> None:
    big = tmp_path / "hired_employees_big.csv"
    big.write_bytes(_employees(400_000, 7))
    size = big.stat().st_size
    assert size > 17 * 1024 * 1024  # three parts of 8 MiB
    done = hiring_upload(str(big), "--api", running.url, "--wait", timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
    row = _row(done.stdout, "hired_employees_big.csv")
    assert row[3:6] == ["loaded", "400,000", "0"]

    def stored() -> tuple[int, str, dict[str, str], list[Any]]:
        s3 = running.stack.s3()
        found = s3.list_objects_v2(Bucket=running.stack.bucket)["Contents"]
        assert len(found) == 1
        head = s3.head_object(Bucket=running.stack.bucket, Key=found[0]["Key"])
        pending = s3.list_multipart_uploads(Bucket=running.stack.bucket).get("Uploads", [])
        return head["ContentLength"], head["ETag"], head["Metadata"], pending

    length, etag, metadata, pending = asyncio.run(asyncio.to_thread(stored))
    assert length == size and etag.strip('"').endswith("-3")  # a multipart object of 3 parts
    assert metadata["upload-id"] == row[2] and pending == []
    # the API process never held the file: its log says the upload was presigned
    assert "upload.presigned" in (tmp_path / "query.log").read_text()


async def test_presign_and_complete_over_http(running: Running) -> None:
    body = b"1,Analyst\n2,Engineer\n"
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            f"{running.url}/uploads/presigned", json={"filename": "x.csv", "size_bytes": 5}
        )
        assert resp.status == 400 and "cannot tell the table" in (await resp.json())["error"]
        for bad in (
            {"filename": "jobs.csv"},
            {"filename": "jobs.csv", "size_bytes": 0},
            [1],
            {"filename": 1},
        ):
            resp = await http.post(f"{running.url}/uploads/presigned", json=bad)
            assert resp.status == 400, bad
        resp = await http.post(
            f"{running.url}/uploads/presigned", json={"filename": "jobs.csv", "size_bytes": len(body)}
        )
        assert resp.status == 201, await resp.text()
        plan = await resp.json()
        assert len(plan["parts"]) == 1 and plan["key"].startswith(f"jobs/{plan['id']}/")
        status = await (await http.get(f"{running.url}/uploads/{plan['id']}")).json()
        assert status["status"] == "queued"
        # completing before the bytes are there is refused, and can be retried
        resp = await http.post(f"{running.url}{plan['complete_url']}")
        assert resp.status == 400 and "declared 21 bytes" in (await resp.json())["error"]
        async with http.put(plan["parts"][0]["url"], data=body) as put:
            assert put.status == 200
        resp = await http.post(f"{running.url}{plan['complete_url']}")
        assert resp.status == 202
        assert (await http.post(f"{running.url}{plan['complete_url']}")).status == 202  # idempotent
        deadline = time.monotonic() + 60
        while status["status"] != "loaded":
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.2)
            status = await (await http.get(f"{running.url}/uploads/{plan['id']}")).json()
        assert (status["rows_loaded"], status["filename"]) == (2, "jobs.csv")
