"""The whole path through real HTTP: POST /upload -> S3 -> SQS -> a real consumer -> PostgreSQL ->
the metrics and the upload's status and rejects, as a user sees them."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from tests.system.consumers import ConsumerProcess, name_by_id
from tests.system.stack import Stack

if TYPE_CHECKING:
    from tests.system.query_fixtures import Client

pytest_plugins = ("tests.system.query_fixtures",)

DATA = Path(__file__).resolve().parents[1] / "data"


async def _upload(client: Client, name: str, payload: bytes) -> str:
    form = aiohttp.FormData()
    form.add_field("file", payload, filename=name, content_type="text/csv")
    resp = await client.post("/upload", data=form)
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    return str(body["uploads"][0]["id"])


async def _finished(client: Client, upload_id: str, wait: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + wait
    while True:
        status: dict[str, Any] = await (await client.get(f"/uploads/{upload_id}")).json()
        if status["status"] in ("loaded", "failed"):
            return status
        assert time.monotonic() < deadline, f"upload {upload_id} still {status['status']}"
        await asyncio.sleep(0.2)


async def test_challenge_files_uploaded_in_any_order_give_the_expected_metrics(
    client: Client, fresh: Stack, tmp_path: Path
) -> None:
    with ConsumerProcess(fresh.env, tmp_path / "consumer.log", INGEST_CONCURRENCY="3"):
        ids = {}
        for table in ("hired_employees", "jobs", "departments"):  # employees before their departments
            ids[table] = await _upload(
                client, f"{table}.csv", (DATA / "globant" / f"{table}.csv").read_bytes()
            )
        statuses = {t: await _finished(client, i) for t, i in ids.items()}
    assert {t: (s["status"], s["rows_loaded"], s["rows_rejected"]) for t, s in statuses.items()} == {
        "hired_employees": ("loaded", 1929, 70),
        "jobs": ("loaded", 183, 0),
        "departments": ("loaded", 12, 0),
    }
    # each ingestion has its trace id, tracing on or off (here: off), and the consumer's log has it
    trace_id = statuses["hired_employees"]["trace_id"]
    assert isinstance(trace_id, str) and re.fullmatch(r"[0-9a-f]{32}", trace_id)
    assert len({s["trace_id"] for s in statuses.values()}) == 3
    loaded_lines = [
        json.loads(line)
        for line in (tmp_path / "consumer.log").read_text().splitlines()
        if '"object loaded"' in line
    ]
    assert any(line.get("trace_id") == trace_id for line in loaded_lines)
    expected = json.loads((DATA / "globant-2021.json").read_text())
    assert await (await client.get("/metrics/hires?year=2021")).json() == expected["hires"]
    departments = await (await client.get("/metrics/departments?year=2021")).json()
    assert departments == expected["departments"]
    assert [d["id"] for d in departments] == [8, 5, 6, 7, 4, 3, 9]
    rejects = await (await client.get(f"/uploads/{ids['hired_employees']}/rejects")).json()
    assert len(rejects["rejects"]) == 70
    assert rejects["rejects"][0] == {
        "line": 2,
        "raw": "2,Ty Hofer,2021-05-30T05:43:46Z,8,",
        "reason": "job_id is empty",
    }


async def test_bad_bytes_and_bad_rows_are_rejected_and_the_rest_is_loaded(
    client: Client, fresh: Stack, tmp_path: Path
) -> None:
    payload = (
        b"\xef\xbb\xbfid,job\r\n"  # BOM and a header line
        b"1,Engineer\r\n"
        b"2,Caf\xe9 owner\r\n"  # Latin-1, not UTF-8
        b"   \r\n"  # blank: ignored
        b'3,"Quoted, with comma"\r\n'
        b"4,\r\n"
        b"5.0,Decimal id\r\n"
        b"6,Six,extra\r\n"
    )
    with ConsumerProcess(fresh.env, tmp_path / "consumer.log"):
        upload_id = await _upload(client, "jobs.csv", payload)
        status = await _finished(client, upload_id)
    assert (status["status"], status["rows_loaded"], status["rows_rejected"]) == ("loaded", 2, 4)
    rejects = (await (await client.get(f"/uploads/{upload_id}/rejects")).json())["rejects"]
    assert [r["line"] for r in rejects] == [3, 6, 7, 8]
    reasons = " | ".join(r["reason"] for r in rejects)
    assert "UTF-8" in rejects[0]["reason"] and "job is empty" in reasons and "not an integer" in reasons
    assert "expected 2 fields" in rejects[3]["reason"]
    conn = await fresh.connect()
    try:
        assert await name_by_id(conn, "jobs") == {1: "Engineer", 3: "Quoted, with comma"}
    finally:
        await conn.close()
