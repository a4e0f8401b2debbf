"""POST /tables/{table}/rows over real HTTP: the batch goes into the bucket, a real `hiring ingest`
process applies it, the answer names the rejects by request row; shapes, limits, Idempotency-Key and
scopes."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from services.query.options import QueryOptions
from services.query.rows import csv_body_rows, json_rows_to_csv, row_of_line
from shared.dictionary import TABLES
from tests.system.consumers import ConsumerProcess, name_by_id

if TYPE_CHECKING:
    from tests.system.query_fixtures import Client, ClientFactory
    from tests.system.stack import Stack

pytest_plugins = ("tests.system.query_fixtures",)

EMPLOYEES = TABLES["hired_employees"]


def _keys(fresh: Stack) -> list[str]:
    listed = fresh.s3().list_objects_v2(Bucket=fresh.bucket)
    return sorted(o["Key"] for o in listed.get("Contents", []))


# ---- pure: the request shapes --------------------------------------------------------------------------


def test_json_rows_become_csv_lines_in_column_order_and_rows_map_back() -> None:
    body = json.dumps(
        [
            {"job_id": 2, "department_id": "3", "datetime": "2021-01-01T00:00:00Z", "name": "Zoë", "id": 1},
            {"id": 2, "name": 'multi\nline, "quoted"', "datetime": "x", "department_id": 1, "job_id": 1},
            {"id": 8.0, "name": None, "datetime": "2021-01-01 00:00:00", "department_id": 1, "job_id": 1},
            {"id": 4, "name": "Old\rMac", "datetime": "2021-01-01 00:00:00", "department_id": 1, "job_id": 1},
        ]
    ).encode()
    batch = json_rows_to_csv(EMPLOYEES, body)
    assert batch.data.decode() == (
        '1,Zoë,2021-01-01T00:00:00Z,3,2\r\n2,"multi\nline, ""quoted""",x,1,1\r\n'
        "8.0,,2021-01-01 00:00:00,1,1\r\n"
        '4,"Old\rMac",2021-01-01 00:00:00,1,1\r\n'
    )
    assert batch.rows == 4 and batch.starts == (1, 2, 4, 5)
    assert [row_of_line(batch.starts, n) for n in (1, 2, 3, 4, 5, 6)] == [0, 1, 1, 2, 3, 3]
    assert row_of_line(None, 7) == 7


def test_csv_body_counts_lines_without_header_and_blanks() -> None:
    batch = csv_body_rows(TABLES["jobs"], b"ID, Job\r\n1,a\r\n\r\n  \n2,b")
    assert batch.rows == 2 and batch.starts is None


# ---- over HTTP, with a consumer ---------------------------------------------------------------------------


async def test_json_batch_is_applied_and_rejects_are_named_by_row(
    client: Client, fresh: Stack, tmp_path: Path
) -> None:
    rows: list[dict[str, Any]] = [
        {
            "id": 1,
            "name": "Zoë Ñúñez 山田",
            "datetime": "2021-07-27T16:02:08.123456+05:00",
            "department_id": 1,
            "job_id": 2,
        },
        {"id": 2, "name": "", "datetime": "2021-07-27T16:02:08Z", "department_id": 1, "job_id": 2},
        {
            "id": "3",
            "name": 'Line\nbreak, "quoted"',
            "datetime": "2021-01-01 00:00:00",
            "department_id": "4",
            "job_id": "5",
        },
        {"id": 9, "name": "Old\rMac", "datetime": "2021-01-01T00:00:00Z", "department_id": 1, "job_id": 1},
        {
            "id": 8.0,
            "name": "decimal id",
            "datetime": "2021-01-01T00:00:00Z",
            "department_id": 1,
            "job_id": 1,
        },
        {"id": 5, "name": "no datetime", "department_id": 1, "job_id": 1},
        {"id": 6, "name": "bad date", "datetime": "2021-02-30T00:00:00Z", "department_id": 1, "job_id": 1},
        {
            "id": 2147483648,
            "name": "too big",
            "datetime": "2021-01-01T00:00:00Z",
            "department_id": 1,
            "job_id": 1,
        },
    ]
    with ConsumerProcess(fresh.env, tmp_path / "consumer.log"):
        resp = await client.post("/tables/hired_employees/rows", json=rows)
        body = await resp.json()
    assert resp.status == 201, body
    assert (body["table"], body["rows_loaded"], body["rows_rejected"]) == ("hired_employees", 3, 5)
    assert [r["row"] for r in body["rejects"]] == [1, 4, 5, 6, 7]
    reasons = {r["row"]: r["reason"] for r in body["rejects"]}
    assert reasons[1] == "name is empty" and "not an integer" in reasons[4]
    assert "datetime is empty" in reasons[5] and "32 bits" in reasons[7]
    # queryable at once, exactly the values sent
    conn = await fresh.connect()
    try:
        got = {
            r["id"]: tuple(r)[1:]
            for r in await conn.fetch(
                "SELECT id, name, datetime, department_id, job_id FROM hired_employees ORDER BY id"
            )
        }
    finally:
        await conn.close()
    assert got == {
        1: ("Zoë Ñúñez 山田", datetime(2021, 7, 27, 11, 2, 8, 123456, tzinfo=UTC), 1, 2),
        3: ('Line\nbreak, "quoted"', datetime(2021, 1, 1, tzinfo=UTC), 4, 5),
        9: ("Old\rMac", datetime(2021, 1, 1, tzinfo=UTC), 1, 1),
    }
    # an ordinary upload: status, rejects and its object under the table's batches/ prefix
    status = await (await client.get(f"/uploads/{body['id']}")).json()
    assert (status["status"], status["rows_loaded"], status["rows_rejected"]) == ("loaded", 3, 5)
    assert status["key"] == f"hired_employees/batches/{body['id']}.csv"
    page = await (await client.get(f"/uploads/{body['id']}/rejects")).json()
    # row 2 spans lines 3-4 (LF in its text), row 3 lines 5-6 (a lone CR ends a line too)
    assert [r["line"] for r in page["rejects"]] == [2, 7, 8, 9, 10]
    assert _keys(fresh) == [status["key"]]


async def test_csv_batch_rejects_are_named_by_line(client: Client, fresh: Stack, tmp_path: Path) -> None:
    payload = b"id,job\n1,Ingeniera de Datos\n\n2,\n3,Analyst\nx,y\n"
    with ConsumerProcess(fresh.env, tmp_path / "consumer.log"):
        resp = await client.post(
            "/tables/jobs/rows", data=payload, headers={"Content-Type": "text/csv; charset=utf-8"}
        )
        body = await resp.json()
    assert resp.status == 201, body
    assert (body["rows_loaded"], body["rows_rejected"]) == (2, 2)
    assert [r["row"] for r in body["rejects"]] == [4, 6]
    conn = await fresh.connect()
    try:
        assert await name_by_id(conn, "jobs") == {1: "Ingeniera de Datos", 3: "Analyst"}
    finally:
        await conn.close()


# ---- shapes and limits: nothing applied ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "content_type", "status", "message"),
    [
        ("/tables/nope/rows", b'[{"id": 1, "job": "a"}]', "application/json", 404, "no table 'nope'"),
        ("/tables/jobs/rows", b'[{"id": 1, "jobb": "a"}]', "application/json", 400, "unknown column 'jobb'"),
        ("/tables/jobs/rows", b'[{"id": 1, "job": "a"}', "application/json", 400, "malformed JSON"),
        ("/tables/jobs/rows", b'{"id": 1, "job": "a"}', "application/json", 400, "JSON array"),
        ("/tables/jobs/rows", b"[]", "application/json", 400, "no rows"),
        ("/tables/jobs/rows", b"[1, 2]", "application/json", 400, "row 0 is not a JSON object"),
        ("/tables/jobs/rows", b'[{"id": true, "job": "a"}]', "application/json", 400, "boolean"),
        ("/tables/jobs/rows", b'[{"id": 1, "job": ["a"]}]', "application/json", 400, "array"),
        ("/tables/jobs/rows", b"", "application/json", 400, "malformed JSON"),
        ("/tables/jobs/rows", b"\n \n", "text/csv", 400, "no rows"),
        ("/tables/jobs/rows", b"id,job\n", "text/csv", 400, "no rows"),
        ("/tables/jobs/rows", b"\x1f\x8b\x08\x00", "text/csv", 400, "binary"),
        ("/tables/jobs/rows", b"1,a", "application/xml", 415, "unsupported Content-Type"),
        (
            "/tables/jobs/rows",
            json.dumps([{"id": i, "job": "j"} for i in range(1001)]).encode(),
            "application/json",
            413,
            "at most 1000",
        ),
        ("/tables/jobs/rows", b"".join(b"%d,j\n" % i for i in range(1001)), "text/csv", 413, "at most 1000"),
        ("/tables/jobs/rows", b"[" + b" " * (9 * 1024 * 1024) + b"]", "application/json", 413, "at most"),
    ],
)
async def test_bad_shapes_are_refused_and_nothing_is_applied(
    client: Client, fresh: Stack, path: str, body: bytes, content_type: str, status: int, message: str
) -> None:
    resp = await client.post(path, data=body, headers={"Content-Type": content_type})
    answer = await resp.json()
    assert resp.status == status, answer
    assert message in answer["error"]
    assert _keys(fresh) == []
    conn = await fresh.connect()
    try:
        assert await conn.fetchval("SELECT count(*) FROM uploads") == 0
    finally:
        await conn.close()


async def test_bad_idempotency_key_is_refused(client: Client) -> None:
    resp = await client.post(
        "/tables/jobs/rows", json=[{"id": 1, "job": "a"}], headers={"Idempotency-Key": ""}
    )
    assert resp.status == 400 and "Idempotency-Key" in (await resp.json())["error"]


# ---- Idempotency-Key ---------------------------------------------------------------------------------


async def test_same_key_same_body_applies_once_other_body_is_422(
    client: Client, fresh: Stack, tmp_path: Path
) -> None:
    rows = [{"id": 1, "job": "Engineer"}, {"id": 2, "job": ""}]
    with ConsumerProcess(fresh.env, tmp_path / "consumer.log"):
        first = await client.post("/tables/jobs/rows", json=rows, headers={"Idempotency-Key": "k-1"})
        first_body = await first.json()
        assert first.status == 201, first_body
        again = await client.post("/tables/jobs/rows", json=rows, headers={"Idempotency-Key": "k-1"})
        assert (again.status, await again.json()) == (201, first_body)
        other = await client.post(
            "/tables/jobs/rows", json=[{"id": 1, "job": "Other"}], headers={"Idempotency-Key": "k-1"}
        )
        assert other.status == 422 and "another request" in (await other.json())["error"]
        # the same body for another table is another request too
        same_body = await client.post(
            "/tables/departments/rows",
            data=json.dumps(rows).replace("job", "department").encode(),
            headers={"Idempotency-Key": "k-2", "Content-Type": "application/json"},
        )
        assert same_body.status == 201
        # two at once with a new key: one batch, the same answer twice
        racing = await asyncio.gather(
            *(
                client.post(
                    "/tables/jobs/rows", json=[{"id": 3, "job": "Racer"}], headers={"Idempotency-Key": "k-3"}
                )
                for _ in range(2)
            )
        )
        answers = [(r.status, await r.json()) for r in racing]
    assert answers[0] == answers[1] and answers[0][0] == 201
    assert len(_keys(fresh)) == 3  # k-1's batch, k-2's batch, k-3's batch
    conn = await fresh.connect()
    try:
        assert await conn.fetchval("SELECT count(*) FROM ingest_objects") == 3
        assert await name_by_id(conn, "jobs") == {1: "Engineer", 3: "Racer"}
    finally:
        await conn.close()


async def test_no_consumer_in_time_answers_202_and_a_retry_waits_for_the_same_batch(
    make_client: ClientFactory, fresh: Stack, tmp_path: Path
) -> None:
    client = await make_client(options=QueryOptions(rows_wait_seconds=1))
    rows = [{"id": 7, "job": "Patient"}]
    first = await client.post("/tables/jobs/rows", json=rows, headers={"Idempotency-Key": "slow-1"})
    pending = await first.json()
    assert first.status == 202, pending
    assert pending["status"] == "queued" and first.headers["Location"] == f"/uploads/{pending['id']}"
    with ConsumerProcess(fresh.env, tmp_path / "consumer.log"):
        for _ in range(60):
            retry = await client.post("/tables/jobs/rows", json=rows, headers={"Idempotency-Key": "slow-1"})
            done = await retry.json()
            if retry.status == 201:
                break
            assert retry.status == 202 and done["id"] == pending["id"]
        assert retry.status == 201, done
    assert done["id"] == pending["id"] and done["rows_loaded"] == 1
    assert len(_keys(fresh)) == 1


async def test_rows_need_the_upload_scope(make_client: ClientFactory) -> None:
    client = await make_client(
        api_keys="reader-key-0001:read,uploader-key-0002:upload", options=QueryOptions(rows_wait_seconds=1)
    )
    rows = [{"id": 1, "job": "a"}]
    assert (await client.post("/tables/jobs/rows", json=rows)).status == 401
    denied = await client.post("/tables/jobs/rows", json=rows, headers={"X-API-Key": "reader-key-0001"})
    assert denied.status == 403
    allowed = await client.post("/tables/jobs/rows", json=rows, headers={"X-API-Key": "uploader-key-0002"})
    assert allowed.status == 202  # accepted; no consumer runs in this test


async def test_more_keyed_requests_at_once_than_pool_connections_all_complete(
    make_client: ClientFactory, fresh: Stack, tmp_path: Path
) -> None:
    """Each Idempotency-Key owner holds a pool connection while it waits: it must wait on that one,
    or a full pool would leave every owner waiting for a second connection for ever."""
    client = await make_client(options=QueryOptions(db_pool_size=2, rows_wait_seconds=60))
    with ConsumerProcess(fresh.env, tmp_path / "consumer.log"):
        answers = await asyncio.wait_for(
            asyncio.gather(
                *(
                    client.post(
                        "/tables/jobs/rows",
                        json=[{"id": i, "job": f"job {i}"}],
                        headers={"Idempotency-Key": f"p-{i}"},
                    )
                    for i in range(5)
                )
            ),
            timeout=120,
        )
        statuses = [(r.status, (await r.json())["rows_loaded"]) for r in answers]
    assert statuses == [(201, 1)] * 5
