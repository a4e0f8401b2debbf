"""POST /upload, GET /uploads/{id} and its rejects, over HTTP against the stack's S3 and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from services.query.options import QueryOptions
from services.query.storage import PART_SIZE
from tests.system.stack import Stack

if TYPE_CHECKING:
    from tests.system.query_fixtures import ClientFactory, Seed

pytest_plugins = ("tests.system.query_fixtures",)

Client = TestClient[web.Request, web.Application]
JOBS = b"1,Marketing Assistant\n2,VP Sales\n"
DEPARTMENTS = b"1,Product Management\r\n2,Sales\r\n"
EMPLOYEES = b"1,Harold Vogt,2021-11-07T02:48:42Z,2,96\n"


def _form(*files: tuple[str, bytes], fields: dict[str, str] | None = None) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for name, value in (fields or {}).items():
        form.add_field(name, value)
    for filename, content in files:
        form.add_field("file", content, filename=filename, content_type="text/csv")
    return form


async def _objects(stack: Stack) -> list[Mapping[str, object]]:
    """Every object version and delete marker in the test's (versioned) bucket, and pending multipart
    uploads: what an upload may leave behind."""

    def scan() -> list[Mapping[str, object]]:
        s3 = stack.s3()
        found: list[Mapping[str, object]] = []
        versions = s3.list_object_versions(Bucket=stack.bucket)
        found += versions.get("Versions", [])
        found += versions.get("DeleteMarkers", [])
        found += s3.list_multipart_uploads(Bucket=stack.bucket).get("Uploads", [])
        return found

    return await asyncio.to_thread(scan)


async def _get_object(stack: Stack, key: str) -> tuple[bytes, dict[str, str], str]:
    def get() -> tuple[bytes, dict[str, str], str]:
        got = stack.s3().get_object(Bucket=stack.bucket, Key=key)
        return got["Body"].read(), got["Metadata"], got["ContentType"]

    return await asyncio.to_thread(get)


async def _upload_rows(seed: Seed) -> list[dict[str, Any]]:
    rows = await seed.conn.fetch("SELECT * FROM uploads ORDER BY created_at, key")
    return [dict(r) for r in rows]


async def _error(response: aiohttp.ClientResponse, status: int) -> str:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error"}
    return str(body["error"])


async def _assert_nothing_left(fresh: Stack, seed: Seed) -> None:
    assert await _objects(fresh) == []
    assert await _upload_rows(seed) == []


# ---- POST /upload: what lands -------------------------------------------------------------------------


async def test_multipart_upload_of_several_files_lands_each_with_its_upload_row(
    client: Client, fresh: Stack, seed: Seed
) -> None:
    response = await client.post(
        "/upload",
        data=_form(
            ("jobs.csv", JOBS), ("departments.csv", DEPARTMENTS), ("hired_employees_2021-07.csv", EMPLOYEES)
        ),
    )
    assert response.status == 202, await response.text()
    uploads = (await response.json())["uploads"]
    assert [(u["table"], u["status"]) for u in uploads] == [
        ("jobs", "queued"),
        ("departments", "queued"),
        ("hired_employees", "queued"),
    ]
    rows = {str(r["id"]): r for r in await _upload_rows(seed)}
    assert set(rows) == {u["id"] for u in uploads}
    for upload, (filename, content) in zip(
        uploads,
        [("jobs.csv", JOBS), ("departments.csv", DEPARTMENTS), ("hired_employees_2021-07.csv", EMPLOYEES)],
        strict=True,
    ):
        uuid.UUID(upload["id"], version=4)
        assert upload["key"] == f"{upload['table']}/{upload['id']}/{filename}"
        body, metadata, content_type = await _get_object(fresh, upload["key"])
        assert body == content
        assert metadata == {"upload-id": upload["id"]}
        assert content_type == "text/csv"
        row = rows[upload["id"]]
        assert (row["table_name"], row["bucket"], row["key"], row["filename"], row["size_bytes"]) == (
            upload["table"],
            fresh.bucket,
            upload["key"],
            filename,
            len(content),
        )


async def test_file_larger_than_a_part_is_streamed_in_parts(client: Client, fresh: Stack, seed: Seed) -> None:
    line = b"1,Harold Vogt,2021-11-07T02:48:42Z,2,96\n"
    content = line * ((2 * PART_SIZE + 12345) // len(line))  # two full parts and a smaller last one

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(content), 1 << 20):
            yield content[start : start + (1 << 20)]

    response = await client.post(
        "/upload?table=hired_employees", data=chunks(), headers={"Content-Type": "text/csv"}
    )
    assert response.status == 202, await response.text()
    (upload,) = (await response.json())["uploads"]
    body, metadata, _ = await _get_object(fresh, upload["key"])
    assert body == content
    assert metadata == {"upload-id": upload["id"]}
    head = await asyncio.to_thread(fresh.s3().head_object, Bucket=fresh.bucket, Key=upload["key"])
    assert head["ETag"].strip('"').endswith("-3")  # a multipart object of three parts
    assert (await _upload_rows(seed))[0]["size_bytes"] == len(content)


async def test_raw_text_csv_body_with_table(client: Client, fresh: Stack, seed: Seed) -> None:
    response = await client.post("/upload?table=jobs", data=JOBS, headers={"Content-Type": "text/csv"})
    assert response.status == 202
    (upload,) = (await response.json())["uploads"]
    assert upload["table"] == "jobs"
    assert upload["key"] == f"jobs/{upload['id']}/jobs.csv"
    assert (await _get_object(fresh, upload["key"]))[0] == JOBS
    assert [r["filename"] for r in await _upload_rows(seed)] == [None]


async def test_table_parameter_names_the_table_of_a_single_part(client: Client, fresh: Stack) -> None:
    response = await client.post("/upload?table=departments", data=_form(("export (1).txt", DEPARTMENTS)))
    assert response.status == 202
    (upload,) = (await response.json())["uploads"]
    assert upload["table"] == "departments"
    # the key ends in .csv so the consumer takes it
    assert upload["key"] == f"departments/{upload['id']}/export (1).txt.csv"


async def test_directory_parts_of_a_file_name_are_dropped(client: Client) -> None:
    response = await client.post("/upload", data=_form(("../../etc/jobs.csv", JOBS)))
    assert response.status == 202
    (upload,) = (await response.json())["uploads"]
    assert upload["key"] == f"jobs/{upload['id']}/jobs.csv"


async def test_non_utf8_bytes_are_stored_as_sent(client: Client, fresh: Stack) -> None:
    content = b"1,Caf\xe9\n2,\xff\xfe broken\n"
    response = await client.post("/upload?table=jobs", data=content, headers={"Content-Type": "text/csv"})
    assert response.status == 202
    (upload,) = (await response.json())["uploads"]
    assert (await _get_object(fresh, upload["key"]))[0] == content


async def test_plain_form_fields_are_ignored(client: Client) -> None:
    response = await client.post("/upload", data=_form(("jobs.csv", JOBS), fields={"note": "hello"}))
    assert response.status == 202
    assert len((await response.json())["uploads"]) == 1


# ---- POST /upload: what is refused, and leaves nothing behind ----------------------------------------


async def test_unknown_table_is_400_naming_the_known_tables(client: Client, fresh: Stack, seed: Seed) -> None:
    message = await _error(await client.post("/upload", data=_form(("salaries.csv", b"1,2\n"))), 400)
    assert "salaries.csv" in message
    assert all(t in message for t in ("departments", "hired_employees", "jobs"))
    message = await _error(
        await client.post("/upload?table=salaries", data=b"1,2\n", headers={"Content-Type": "text/csv"}), 400
    )
    assert "salaries" in message and "hired_employees" in message
    # a bad second part: the good first one does not land either
    response = await client.post("/upload", data=_form(("jobs.csv", JOBS), ("salaries.csv", b"1,2\n")))
    await _error(response, 400)
    await _assert_nothing_left(fresh, seed)


async def test_empty_file_is_400(client: Client, fresh: Stack, seed: Seed) -> None:
    assert "empty" in await _error(await client.post("/upload", data=_form(("jobs.csv", b""))), 400)
    response = await client.post("/upload?table=jobs", data=b"", headers={"Content-Type": "text/csv"})
    assert "empty" in await _error(response, 400)
    response = await client.post("/upload", data=_form(("jobs.csv", JOBS), ("departments.csv", b"")))
    assert "departments.csv" in await _error(response, 400)
    await _assert_nothing_left(fresh, seed)


async def test_no_file_part_is_400(client: Client, fresh: Stack, seed: Seed) -> None:
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("note", "no file here")
    form.add_field("other", "nor here")
    assert "no file part" in await _error(await client.post("/upload", data=form), 400)
    await _assert_nothing_left(fresh, seed)


async def test_raw_body_without_table_is_400(client: Client) -> None:
    response = await client.post("/upload", data=JOBS, headers={"Content-Type": "text/csv"})
    assert "?table=" in await _error(response, 400)


async def test_table_parameter_with_several_parts_is_400(client: Client, fresh: Stack, seed: Seed) -> None:
    response = await client.post("/upload?table=jobs", data=_form(("a.csv", JOBS), ("b.csv", JOBS)))
    assert "single file part" in await _error(response, 400)
    await _assert_nothing_left(fresh, seed)


async def test_other_content_types_are_415(client: Client) -> None:
    response = await client.post("/upload?table=jobs", json={"rows": []})
    assert "Content-Type" in await _error(response, 415)


async def test_declared_body_over_the_limit_is_413_before_reading_it(
    make_client: ClientFactory, fresh: Stack, seed: Seed
) -> None:
    client = await make_client(options=QueryOptions(max_upload_bytes=1000))
    response = await client.post("/upload?table=jobs", data=b"x" * 1001, headers={"Content-Type": "text/csv"})
    message = await _error(response, 413)
    assert "1001 bytes" in message and "limit is 1000 bytes" in message
    response = await client.post(
        "/upload?table=jobs", data=b"1,a\n" * 250, headers={"Content-Type": "text/csv"}
    )
    assert response.status == 202  # exactly the limit is fine
    assert len(await _upload_rows(seed)) == 1


async def test_streamed_body_over_the_limit_is_413_and_leaves_nothing(
    make_client: ClientFactory, fresh: Stack, seed: Seed
) -> None:
    """No Content-Length (chunked): the limit is found while streaming, after a part went to S3."""
    limit = PART_SIZE + PART_SIZE // 2
    client = await make_client(options=QueryOptions(max_upload_bytes=limit))

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(2 * PART_SIZE // (1 << 20)):
            yield b"9" * (1 << 20)

    response = await client.post("/upload?table=jobs", data=chunks(), headers={"Content-Type": "text/csv"})
    assert f"limit is {limit} bytes" in await _error(response, 413)
    await _assert_nothing_left(fresh, seed)
    # the same, as a multipart part of a request that also carried a good file
    form = aiohttp.FormData()
    form.add_field("file", JOBS, filename="jobs.csv")
    form.add_field("file", b"9" * (2 * PART_SIZE), filename="departments.csv")
    response = await client.post("/upload", data=form)
    await _error(response, 413)
    await _assert_nothing_left(fresh, seed)


@pytest.mark.parametrize("kind", ["raw", "multipart"])
async def test_client_disconnect_mid_upload_leaves_nothing(
    client: Client, fresh: Stack, seed: Seed, kind: str
) -> None:
    declared = 3 * PART_SIZE
    if kind == "raw":
        head = b""
        headers = f"Content-Type: text/csv\r\nContent-Length: {declared}\r\n"
        path = "/upload?table=jobs"
    else:
        boundary = "b0undary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="jobs.csv"\r\n'
            "Content-Type: text/csv\r\n\r\n"
        ).encode()
        headers = f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {declared}\r\n"
        path = "/upload"
    assert client.port is not None
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(f"POST {path} HTTP/1.1\r\nHost: test\r\n{headers}\r\n".encode() + head)
    sent = 0
    while sent < PART_SIZE + (1 << 20):  # more than a part: the multipart upload has begun
        writer.write(b"7" * (1 << 20))
        await writer.drain()
        sent += 1 << 20
    for _ in range(100):  # the first part reached S3
        if await _objects(fresh):
            break
        await asyncio.sleep(0.1)
    assert await _objects(fresh), "the upload never began"
    writer.transport.abort()  # the client goes away mid-body
    for _ in range(100):
        if not await _objects(fresh) and not await _upload_rows(seed):
            break
        await asyncio.sleep(0.1)
    await _assert_nothing_left(fresh, seed)
    assert await reader.read() == b""


# ---- GET /uploads/{id} and its rejects ------------------------------------------------------------------


async def _uploaded(client: Client, content: bytes = JOBS, filename: str = "jobs.csv") -> dict[str, Any]:
    response = await client.post("/upload", data=_form((filename, content)))
    assert response.status == 202
    (upload,) = (await response.json())["uploads"]
    return dict(upload)


async def _ledger_row(seed: Seed, upload: dict[str, Any], bucket: str, **fields: Any) -> int:
    values = {
        "bucket": bucket,
        "key": upload["key"],
        "version": f"v-{uuid.uuid4().hex}",
        "event_time": "2021-07-01T00:00:00Z",
        "order_key": "0001",
        "table_name": upload["table"],
        "upload_id": upload["id"],
        **fields,
    }
    columns = ", ".join(values)
    params = ", ".join(
        f"${i}::text::timestamptz" if isinstance(v, str) and k.endswith(("_time", "_at")) else f"${i}"
        for i, (k, v) in enumerate(values.items(), start=1)
    )
    args = [uuid.UUID(v) if k == "upload_id" else v for k, v in values.items()]
    object_id: int = await seed.conn.fetchval(
        f"INSERT INTO ingest_objects ({columns}) VALUES ({params}) RETURNING id", *args
    )
    return object_id


async def test_fresh_upload_is_queued_then_follows_its_latest_ledger_row(
    client: Client, fresh: Stack, seed: Seed
) -> None:
    upload = await _uploaded(client)
    response = await client.get(f"/uploads/{upload['id']}")
    assert response.status == 200
    status = await response.json()
    assert {k: status[k] for k in ("id", "table", "key", "status", "rows_loaded", "rows_rejected")} == {
        **upload,
        "rows_loaded": 0,
        "rows_rejected": 0,
    }
    assert status["error"] is None and status["started_at"] is None and status["finished_at"] is None
    assert status["created_at"] and status["filename"] == "jobs.csv" and status["size_bytes"] == len(JOBS)

    await _ledger_row(seed, upload, fresh.bucket, status="processing", started_at="2021-07-01T00:00:01Z")
    assert (await (await client.get(f"/uploads/{upload['id']}")).json())["status"] == "processing"

    trace = "0af7651916cd43dd8448eb211c80319c"
    await _ledger_row(
        seed,
        upload,
        fresh.bucket,
        status="loaded",
        rows_loaded=2,
        rows_rejected=1,
        trace_id=trace,
        started_at="2021-07-01T00:00:02Z",
        finished_at="2021-07-01T00:00:03+00:00",
    )
    status = await (await client.get(f"/uploads/{upload['id']}")).json()
    assert (status["status"], status["rows_loaded"], status["rows_rejected"], status["trace_id"]) == (
        "loaded",
        2,
        1,
        trace,
    )
    assert status["started_at"] == "2021-07-01T00:00:02Z" and status["finished_at"] == "2021-07-01T00:00:03Z"


async def test_failed_upload_says_why(client: Client, fresh: Stack, seed: Seed) -> None:
    upload = await _uploaded(client)
    await _ledger_row(seed, upload, fresh.bucket, status="failed", error="the object is not UTF-8 text")
    status = await (await client.get(f"/uploads/{upload['id']}")).json()
    assert (status["status"], status["error"]) == ("failed", "the object is not UTF-8 text")


async def test_unknown_upload_is_404_and_malformed_id_400(client: Client) -> None:
    missing = uuid.uuid4()
    assert str(missing) in await _error(await client.get(f"/uploads/{missing}"), 404)
    assert "UUID" in await _error(await client.get("/uploads/not-a-uuid"), 400)
    await _error(await client.get(f"/uploads/{missing}/rejects"), 404)
    await _error(await client.get("/uploads/12345/rejects"), 400)


async def test_rejects_are_listed_by_line_and_paged(client: Client, fresh: Stack, seed: Seed) -> None:
    upload = await _uploaded(client)
    response = await client.get(f"/uploads/{upload['id']}/rejects")
    assert await response.json() == {
        "upload_id": upload["id"],
        "status": "queued",
        "limit": 1000,
        "offset": 0,
        "next_offset": None,
        "rejects": [],
    }
    object_id = await _ledger_row(seed, upload, fresh.bucket, status="loaded", rows_loaded=1, rows_rejected=5)
    await seed.conn.executemany(
        "INSERT INTO ingest_rejects (object_id, line, raw, reason) VALUES ($1, $2, $3, $4)",
        [(object_id, line, f"raw {line}", f"reason {line}") for line in (9, 2, 5, 12, 7)],
    )
    everything = await (await client.get(f"/uploads/{upload['id']}/rejects")).json()
    assert [r["line"] for r in everything["rejects"]] == [2, 5, 7, 9, 12]
    assert everything["rejects"][0] == {"line": 2, "raw": "raw 2", "reason": "reason 2"}
    assert everything["status"] == "loaded" and everything["next_offset"] is None

    page = await (await client.get(f"/uploads/{upload['id']}/rejects?limit=2")).json()
    assert ([r["line"] for r in page["rejects"]], page["next_offset"]) == ([2, 5], 2)
    page = await (await client.get(f"/uploads/{upload['id']}/rejects?limit=2&offset=2")).json()
    assert ([r["line"] for r in page["rejects"]], page["next_offset"]) == ([7, 9], 4)
    page = await (await client.get(f"/uploads/{upload['id']}/rejects?limit=2&offset=4")).json()
    assert ([r["line"] for r in page["rejects"]], page["next_offset"]) == ([12], None)
    page = await (await client.get(f"/uploads/{upload['id']}/rejects?offset=50")).json()
    assert page["rejects"] == [] and page["next_offset"] is None
    page = await (await client.get(f"/uploads/{upload['id']}/rejects?limit=10000")).json()
    assert page["limit"] == 10000


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=10001", "limit=x", "limit=", "limit=-1", "offset=-1", "offset=1.5", "offset=abc"],
)
async def test_bad_paging_is_400(client: Client, query: str) -> None:
    upload = await _uploaded(client)
    message = await _error(await client.get(f"/uploads/{upload['id']}/rejects?{query}"), 400)
    assert query.split("=")[0] in message


async def test_upload_made_by_other_tools_is_unknown(client: Client, fresh: Stack) -> None:
    """An object put straight into the bucket has no upload row: nothing to report here."""
    await asyncio.to_thread(fresh.s3().put_object, Bucket=fresh.bucket, Key="jobs/direct.csv", Body=JOBS)
    await _error(await client.get(f"/uploads/{uuid.uuid4()}"), 404)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data; boundary=xyz", b"this is not a multipart body"),
        ("multipart/form-data", b"--xyz\r\n\r\n--xyz--\r\n"),
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="f"; filename="jobs.csv"\r\n',
        ),
        (  # a file cut short: its bytes, but no closing boundary
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="f"; filename="jobs.csv"\r\n\r\n1,Clerk\n',
        ),
    ],
)
async def test_malformed_multipart_is_400(
    client: Client, fresh: Stack, seed: Seed, content_type: str, body: bytes
) -> None:
    response = await client.post("/upload", data=body, headers={"Content-Type": content_type})
    assert "multipart" in await _error(response, 400)
    await _assert_nothing_left(fresh, seed)
