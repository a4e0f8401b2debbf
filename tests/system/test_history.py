"""The load history over real HTTP (CONTRACT §4): GET /uploads over API uploads and files dropped into
the bucket by another tool, ids of both forms, filters and paging, rejects as CSV and per reason,
DELETE's scope and its delete of exactly the upload's object version. A real consumer process."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from services.query.routes_presign import part_size_for
from tests.system.consumers import ConsumerProcess
from tests.system.stack import Stack

if TYPE_CHECKING:
    from tests.system.query_fixtures import Client, ClientFactory

pytest_plugins = ("tests.system.query_fixtures",)

JOBS = b'1,Marketing Assistant\n2,"VP, Sales"\nx,Bad\n3,\n8.0,Also bad\n'
DEPARTMENTS = b"1,Product Management\n2,Sales\n"


async def _upload(client: Client, name: str, payload: bytes) -> str:
    form = aiohttp.FormData()
    form.add_field("file", payload, filename=name, content_type="text/csv")
    resp = await client.post("/upload", data=form)
    assert resp.status == 202, await resp.text()
    return str((await resp.json())["uploads"][0]["id"])


async def _put(stack: Stack, key: str, body: bytes) -> str:
    """Like any S3 tool would: no metadata; the S3 version id."""

    def put() -> str:
        return str(stack.s3().put_object(Bucket=stack.bucket, Key=key, Body=body)["VersionId"])

    return await asyncio.to_thread(put)


async def _history(client: Client, query: str = "") -> dict[str, Any]:
    resp = await client.get(f"/uploads{query}")
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def _until(client: Client, query: str, done: Any, wait: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + wait
    while True:
        body = await _history(client, query)
        if done(body):
            return body
        assert time.monotonic() < deadline, f"history never got there: {body}"
        await asyncio.sleep(0.2)


def _finished(n: int) -> Any:
    return lambda b: len(b["uploads"]) == n and all(u["status"] in ("loaded", "failed") for u in b["uploads"])


async def test_history_lists_api_uploads_and_bucket_drops_with_ids_usable_everywhere(
    client: Client, fresh: Stack, tmp_path: Path
) -> None:
    queued = await _upload(client, "jobs.csv", JOBS)
    early = await _history(client)
    assert [(u["id"], u["status"], u["ledger_id"]) for u in early["uploads"]] == [(queued, "queued", None)]
    version = await _put(fresh, "departments/2021.csv", DEPARTMENTS)
    with ConsumerProcess(fresh.env, tmp_path / "consumer.log"):
        body = await _until(client, "", _finished(2))
    newest, older = body["uploads"]
    # newest first: the bucket drop came after the API upload
    assert newest["id"].startswith("obj-") and newest["id"] == f"obj-{newest['ledger_id']}"
    assert (newest["key"], newest["version"], newest["bucket"], newest["table"]) == (
        "departments/2021.csv",
        version,
        fresh.bucket,
        "departments",
    )
    assert (newest["status"], newest["rows_loaded"], newest["rows_rejected"]) == ("loaded", 2, 0)
    assert newest["lines_done"] == 2 and newest["bytes_done"] == len(DEPARTMENTS)
    assert older["id"] == queued and older["version"] is not None and older["filename"] == "jobs.csv"
    assert (older["status"], older["rows_loaded"], older["rows_rejected"]) == ("loaded", 2, 3)
    assert body["next_after"] is None

    # each item is what GET /uploads/{id} answers, by either form of its id
    for item in body["uploads"]:
        for ref in {item["id"], f"obj-{item['ledger_id']}"}:
            resp = await client.get(f"/uploads/{ref}")
            assert resp.status == 200
            assert await resp.json() == item
    rejects = await (await client.get(f"/uploads/obj-{older['ledger_id']}/rejects")).json()
    assert [r["line"] for r in rejects["rejects"]] == [3, 4, 5] and rejects["upload_id"] == queued
    none = await (await client.get(f"/uploads/{newest['id']}/rejects")).json()
    assert none["rejects"] == [] and none["status"] == "loaded"

    # filters and paging
    assert [u["id"] for u in (await _history(client, "?table=jobs"))["uploads"]] == [queued]
    assert (await _history(client, "?status=failed"))["uploads"] == []
    assert [u["id"] for u in (await _history(client, "?status=loaded&table=departments"))["uploads"]] == [
        newest["id"]
    ]
    first = await _history(client, "?limit=1")
    assert [u["id"] for u in first["uploads"]] == [newest["id"]] and first["next_after"] == newest["id"]
    second = await _history(client, f"?limit=1&after={first['next_after']}")
    assert [u["id"] for u in second["uploads"]] == [queued] and second["next_after"] is None
    # `after` takes either form of the id
    also = await _history(client, f"?limit=1&after=obj-{newest['ledger_id']}")
    assert [u["id"] for u in also["uploads"]] == [queued]


async def test_rejects_as_csv_and_counted_per_reason(client: Client, fresh: Stack, tmp_path: Path) -> None:
    bad = (
        b"1,Ok,2021-01-01T00:00:00Z,1,1\n"
        b"2,Ann,2021-13-01T00:00:00Z,1,1\n"  # invalid date
        b"3,Bo,2021-02-01T00:00:00Z,x,1\n"  # not an integer
        b"4,Cy,2021-02-01T00:00:00Z,y,1\n"  # not an integer, another value
        b'5,"Dee, ""the"" boss",2021-02-01T00:00:00Z,1\n'  # 4 fields
        b"6,Ed,2021-02-01,1,1\n"  # a date alone
    )
    upload_id = await _upload(client, "hired_employees.csv", bad)
    with ConsumerProcess(fresh.env, tmp_path / "consumer.log"):
        await _until(client, "", _finished(1))

    resp = await client.get(f"/uploads/{upload_id}/rejects", headers={"Accept": "text/csv"})
    assert resp.status == 200 and resp.content_type == "text/csv" and resp.headers["Vary"] == "Accept"
    rows = list(csv.reader(io.StringIO(await resp.text())))
    assert rows[0] == ["line", "raw", "reason"]
    assert [r[0] for r in rows[1:]] == ["2", "3", "4", "5", "6"]
    assert rows[4][1] == '5,"Dee, ""the"" boss",2021-02-01T00:00:00Z,1'  # the raw line, intact
    json_page = await (await client.get(f"/uploads/{upload_id}/rejects")).json()
    assert [[str(r["line"]), r["raw"], r["reason"]] for r in json_page["rejects"]] == rows[1:]
    # an explicit limit and offset page the CSV too; JSON when JSON is preferred
    resp = await client.get(
        f"/uploads/{upload_id}/rejects?limit=2&offset=1", headers={"Accept": "text/csv;q=0.9, */*;q=0.1"}
    )
    assert [r[0] for r in csv.reader(io.StringIO(await resp.text()))] == ["line", "3", "4"]
    resp = await client.get(
        f"/uploads/{upload_id}/rejects", headers={"Accept": "application/json, text/csv;q=0.5"}
    )
    assert resp.content_type == "application/json"

    reasons = await (await client.get(f"/uploads/{upload_id}/rejects/reasons")).json()
    assert reasons["rows_rejected"] == 5 and reasons["status"] == "loaded"
    counted = {r["reason"]: (r["count"], r["first_line"]) for r in reasons["reasons"]}
    integer = [k for k in counted if k.startswith("department_id") and "not an integer" in k]
    assert len(integer) == 1 and counted[integer[0]] == (2, 3)  # two values, one kind
    assert "'x'" not in integer[0] and "…" in integer[0]
    assert sum(c for c, _ in counted.values()) == 5
    assert reasons["reasons"][0]["count"] == 2  # most frequent first
    example = next(r["example"] for r in reasons["reasons"] if r["first_line"] == 3)
    assert "'x'" in example  # the full reason of its first line


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("?status=done", "bad status"),
        ("?table=people", "unknown table"),
        ("?limit=0", "bad limit"),
        ("?limit=1001", "bad limit"),
        ("?after=obj-999999", "bad after"),
        ("?after=nope", "bad after"),
        ("?status=loaded&status=failed", "more than once"),
    ],
)
async def test_bad_history_queries_are_400(client: Client, query: str, fragment: str) -> None:
    resp = await client.get(f"/uploads{query}")
    assert resp.status == 400
    assert fragment in (await resp.json())["error"]


@pytest.mark.parametrize("ref", ["obj-", "obj-x", "12", "obj-1234567890123456789012", "%00"])
async def test_malformed_ids_are_400_and_unknown_ones_404(client: Client, ref: str) -> None:
    for path in (f"/uploads/{ref}", f"/uploads/{ref}/rejects", f"/uploads/{ref}/rejects/reasons"):
        resp = await client.get(path)
        assert resp.status == 400, path
    assert (await client.get("/uploads/obj-424242")).status == 404
    assert (await client.delete("/uploads/obj-424242")).status == 404


async def test_delete_needs_admin_and_deletes_exactly_that_object_version(
    make_client: ClientFactory, fresh: Stack, tmp_path: Path
) -> None:
    keys = "r3ad-only-key:read+upload,adm1n-key-000:read+admin"
    client = await make_client(api_keys=keys)
    reader = {"Authorization": "Bearer r3ad-only-key"}
    admin = {"Authorization": "Bearer adm1n-key-000"}
    first = await _put(fresh, "jobs/all.csv", b"1,First\n")
    second = await _put(fresh, "jobs/all.csv", b"1,Second\n")
    with ConsumerProcess(fresh.env, tmp_path / "consumer.log"):
        deadline = time.monotonic() + 90
        while True:
            body = await (await client.get("/uploads", headers=reader)).json()
            if len(body["uploads"]) == 2 and all(u["status"] == "loaded" for u in body["uploads"]):
                break
            assert time.monotonic() < deadline, body
            await asyncio.sleep(0.2)
    by_version = {u["version"]: u for u in body["uploads"]}
    target = by_version[first]["id"]
    assert (await client.delete(f"/uploads/{target}")).status == 401
    resp = await client.delete(f"/uploads/{target}", headers=reader)
    assert resp.status == 403 and "admin" in (await resp.json())["error"]
    resp = await client.delete(f"/uploads/{target}", headers=admin)
    assert resp.status == 202, await resp.text()
    assert (await resp.json())["id"] == target

    def versions() -> list[str]:
        listing = fresh.s3().list_object_versions(Bucket=fresh.bucket, Prefix="jobs/all.csv")
        return [v["VersionId"] for v in listing.get("Versions", [])]

    assert await asyncio.to_thread(versions) == [second]  # the other version of the same key is kept


def test_presigned_part_sizes_stay_within_s3s_limits() -> None:
    mib = 1024 * 1024
    assert part_size_for(1) == 8 * mib
    assert part_size_for(80 * mib) == 8 * mib
    five_gb = 5 * 1024**3
    assert part_size_for(five_gb) == 8 * mib  # 640 parts
    five_tib = 5 * 1024**4
    size = part_size_for(five_tib)
    assert size % mib == 0 and -(-five_tib // size) <= 10_000
