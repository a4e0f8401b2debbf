"""Issue 12, API: no client input gets a 5xx, file names as clients really send them, RFC 9110
content negotiation, `Expect: 100-continue`, repeated parameters. Over HTTP against the real stack."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from typing import TYPE_CHECKING

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from services.query.options import QueryOptions

if TYPE_CHECKING:
    from tests.system.query_fixtures import ClientFactory, Seed
    from tests.system.stack import Stack

pytest_plugins = ("tests.system.query_fixtures",)

Client = TestClient[web.Request, web.Application]
JOBS = b"1,Marketing Assistant\n2,VP Sales\n"
B = "hiringBoundary42"


def _multipart(*parts: bytes) -> bytes:
    """A multipart/form-data body of these raw parts (each its header lines, a blank line, content)."""
    return (
        b"".join(b"--" + B.encode() + b"\r\n" + p + b"\r\n" for p in parts) + b"--" + B.encode() + b"--\r\n"
    )


def _file_part(disposition: bytes, content: bytes = JOBS, extra: bytes = b"") -> bytes:
    return (
        b"Content-Disposition: " + disposition + b"\r\n" + extra + b"Content-Type: text/csv\r\n\r\n" + content
    )


async def _post_multipart(client: Client, body: bytes, path: str = "/upload") -> aiohttp.ClientResponse:
    return await client.post(path, data=body, headers={"Content-Type": f"multipart/form-data; boundary={B}"})


async def _error(response: aiohttp.ClientResponse, status: int) -> str:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error"}
    return str(body["error"])


async def _stored(seed: Seed) -> list[tuple[str, str, str | None]]:
    rows = await seed.conn.fetch("SELECT table_name, key, filename FROM uploads ORDER BY created_at")
    return [(r["table_name"], r["key"], r["filename"]) for r in rows]


# ---- file names (items 7 and 8) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("disposition", "stored_name"),
    [
        # old browsers and some clients send the whole Windows path, backslashes unescaped
        (b'form-data; name="file"; filename="C:\\data\\jobs.csv"', "jobs.csv"),
        (b'form-data; name="file"; filename="\\\\server\\share\\jobs.csv"', "jobs.csv"),
        (b'form-data; name="file"; filename="/home/ana/exports/jobs.csv"', "jobs.csv"),
        (b'form-data; name="file"; filename="C:/data/jobs.csv"', "jobs.csv"),
        # a NUL, percent-encoded or raw, and other control characters are dropped
        (b'form-data; name="file"; filename="jobs%00.csv"', "jobs.csv"),
        (b'form-data; name="file"; filename="jobs%0D%0A.csv"', "jobs.csv"),
        # bytes that are not UTF-8 (Latin-1 from an old client), raw or percent-encoded
        (b'form-data; name="file"; filename="jobs-caf\xe9.csv"', "jobs-caf\ufffd.csv"),
        (b'form-data; name="file"; filename="jobs-%ff.csv"', "jobs-\ufffd.csv"),
        # RFC 5987's extended form wins over the plain one
        (
            b'form-data; name="file"; filename="x.csv"; filename*=UTF-8\'\'jobs-%C3%A9t%C3%A9.csv',
            "jobs-été.csv",
        ),
        # characters XML 1.0 cannot carry (S3 answers in XML)
        ('form-data; name="file"; filename="jobs\ufffe.csv"'.encode(), "jobs.csv"),
    ],
)
async def test_file_names_as_clients_send_them(
    client: Client, seed: Seed, disposition: bytes, stored_name: str
) -> None:
    response = await _post_multipart(client, _multipart(_file_part(disposition)))
    assert response.status == 202, await response.text()
    (upload,) = (await response.json())["uploads"]
    assert upload["table"] == "jobs"
    assert upload["key"] == f"jobs/{upload['id']}/{stored_name}"
    assert await _stored(seed) == [("jobs", upload["key"], stored_name)]


async def test_a_very_long_file_name_is_cut_to_fit_an_s3_key(client: Client, seed: Seed) -> None:
    name = "jobs-" + "é" * 2000 + ".csv"
    disposition = f'form-data; name="file"; filename="{name}"'.encode()
    response = await _post_multipart(client, _multipart(_file_part(disposition)))
    assert response.status == 202, await response.text()
    (upload,) = (await response.json())["uploads"]
    assert len(upload["key"].encode()) <= 1024
    assert upload["key"].endswith("éé.csv")


async def test_a_name_that_is_only_a_directory_needs_a_table(client: Client, seed: Seed) -> None:
    body = _multipart(_file_part(b'form-data; name="file"; filename="C:\\data\\"'))
    assert "cannot tell the table" in await _error(await _post_multipart(client, body), 400)
    response = await _post_multipart(client, body, "/upload?table=jobs")
    assert response.status == 202
    (upload,) = (await response.json())["uploads"]
    assert upload["key"] == f"jobs/{upload['id']}/jobs.csv"


# ---- malformed multipart framing: 400, never 500 (item 8) -------------------------------------------


@pytest.mark.parametrize(
    "part",
    [
        # a control character in a part header's name, a header line with no colon, a folded line
        b'Content-Disposition: form-data; name="file"; filename="jobs.csv"\r\nX-Bad\x01Name: 1\r\n\r\n1,a\n',
        b'Content-Disposition: form-data; name="file"; filename="jobs.csv"\r\nno colon here\r\n\r\n1,a\n',
        b'Content-Disposition: form-data; name="file";\r\n filename="jobs.csv"\r\n\r\n1,a\n',
        b'Content-Disposition: form-data; name="file"; filename="jobs.csv"\r\n\tfolded\r\n\r\n1,a\n',
        b'Content-Disposition: form-data; name="file"; filename="jobs.csv"\r\nX-A: \x00\r\n\r\n1,a\n',
        b'Content-Disposition: form-data; name="file"; filename="jobs\x01\x7f.csv"\r\n\r\n1,a\n',
        # a header longer than the parser takes
        b'Content-Disposition: form-data; name="file"; filename="jobs.csv"\r\nX-Long: '
        + b"a" * 20000
        + b"\r\n\r\n1,a\n",
        # a Content-Disposition that names a file nobody can read
        b'Content-Disposition: form-data; name="file"; filename="jobs.csv"; filename="b.csv"\r\n\r\n1,a\n',
        b'Content-Disposition: ;;; filename="jobs.csv"\r\n\r\n1,a\n',
        # a nested multipart
        b'Content-Disposition: form-data; name="file"; filename="jobs.csv"\r\n'
        b"Content-Type: multipart/mixed; boundary=inner\r\n\r\n--inner\r\n\r\n1,a\r\n--inner--",
    ],
)
async def test_malformed_part_headers_are_400(client: Client, seed: Seed, part: bytes) -> None:
    response = await _post_multipart(client, _multipart(part))
    assert "multipart" in await _error(response, 400)
    assert await _stored(seed) == []


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data; boundary=" + "b" * 100, b"--" + b"b" * 100 + b"\r\n\r\n"),
        ("multipart/form-data; boundary=", b"\r\n"),
        ("multipart/form-data", b"anything"),
        (f"multipart/form-data; boundary={B}", b"not a boundary at all\r\n"),
        (f"multipart/form-data; boundary={B}", b""),
    ],
)
async def test_malformed_multipart_framing_is_400(
    client: Client, seed: Seed, content_type: str, body: bytes
) -> None:
    response = await client.post("/upload", data=body, headers={"Content-Type": content_type})
    await _error(response, 400)
    assert await _stored(seed) == []


async def test_malformed_compressed_or_chunked_bodies_are_400(client: Client, stack: Stack) -> None:
    response = await client.post(
        "/upload?table=jobs",
        data=b"this is not gzip",
        headers={"Content-Type": "text/csv", "Content-Encoding": "gzip"},
    )
    assert "content-encoding" in await _error(response, 400)
    # a chunked body whose chunk size is not hex: aiohttp's parser answers 400 itself
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        b"POST /upload?table=jobs HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n1,a\n\r\n0\r\n\r\n"
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert status_line.split()[1] == b"400", status_line


# ---- an empty unnamed part (item 10) ----------------------------------------------------------------


async def test_a_blank_optional_file_input_is_skipped(client: Client, seed: Seed) -> None:
    blank = (
        b'Content-Disposition: form-data; name="extra"; filename=""\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
    )
    body = _multipart(_file_part(b'form-data; name="file"; filename="jobs.csv"'), blank)
    response = await _post_multipart(client, body)
    assert response.status == 202, await response.text()
    assert len((await response.json())["uploads"]) == 1
    # alone, it is a form with no file
    assert "no file part" in await _error(await _post_multipart(client, _multipart(blank)), 400)
    # an unnamed part with content is a file whose table must be given
    unnamed = _multipart(_file_part(b'form-data; name="file"; filename=""'))
    assert "cannot tell the table" in await _error(await _post_multipart(client, unnamed), 400)
    response = await _post_multipart(client, unnamed, "/upload?table=jobs")
    assert response.status == 202


# ---- Expect: 100-continue (item 10) -------------------------------------------------------------


async def _raw_exchange(client: Client, head: bytes, body: bytes | None) -> tuple[bytes, bytes]:
    """Send `head`, read the first status line; then send `body` (if any) and read the final one."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(head)
        await writer.drain()
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        if body is None:
            return first, b""
        writer.write(body)
        await writer.drain()
        final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        return first, final
    finally:
        writer.close()


async def test_expect_100_continue_over_the_limit_is_413_before_the_body(
    make_client: ClientFactory, seed: Seed
) -> None:
    client = await make_client(options=QueryOptions(max_upload_bytes=1000))
    head = (
        b"POST /upload?table=jobs HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
        b"Content-Length: 5000000000\r\nExpect: 100-continue\r\n\r\n"
    )
    first, _ = await _raw_exchange(client, head, None)  # no body is ever sent
    assert first.startswith(b"HTTP/1.1 413"), first
    assert b"application/json" in first
    # within the limit: 100 Continue, then the upload
    head = (
        b"POST /upload?table=jobs HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
        + f"Content-Length: {len(JOBS)}\r\n".encode()
        + b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    first, final = await _raw_exchange(client, head, JOBS)
    assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert final.startswith(b"HTTP/1.1 202"), final
    assert len(await _stored(seed)) == 1


async def test_an_unknown_expectation_is_a_json_417(client: Client) -> None:
    response = await client.get("/healthz", headers={"Expect": "something-else"})
    assert "Expect" in await _error(response, 417)


# ---- content negotiation and repeated parameters (item 9) ---------------------------------------------


@pytest.mark.parametrize(
    ("accept", "answer"),
    [
        (None, "application/json"),
        ("application/json;q=0, */*", "text/csv"),
        ("application/json;q=0, text/*", "text/csv"),
        ("text/*", "text/csv"),
        ("text/*, application/json", "application/json"),
        ("*/*;q=0.1, text/csv;q=0.5", "text/csv"),
        ("text/csv;q=0.000, */*", "application/json"),
        ("application/*", "application/json"),
        ("text/csv;q=1, application/json;q=1", "application/json"),
        ("TEXT/CSV ; Q=0.7, application/json ; q=0.6", "text/csv"),
        ("garbage", "application/json"),  # nothing well-formed: as if absent
        ("text/csv;q=2", "application/json"),  # a malformed q leaves that element out
    ],
)
@pytest.mark.parametrize("path", ["/metrics/hires", "/metrics/departments"])
async def test_metrics_negotiate_per_rfc_9110(
    client: Client, path: str, accept: str | None, answer: str
) -> None:
    headers = {"Accept": accept} if accept is not None else {}
    response = await client.get(path, headers=headers, skip_auto_headers=["Accept"])
    assert response.status == 200, await response.text()
    assert response.content_type == answer
    assert response.headers["Vary"] == "Accept"


@pytest.mark.parametrize(
    "accept", ["application/json;q=0, text/csv;q=0", "text/html", "image/*", "*/*;q=0", "application/xml"]
)
@pytest.mark.parametrize("path", ["/metrics/hires", "/metrics/departments"])
async def test_nothing_acceptable_is_406(client: Client, path: str, accept: str) -> None:
    response = await client.get(path, headers={"Accept": accept})
    message = await _error(response, 406)
    assert "application/json" in message and "text/csv" in message
    assert response.headers["Vary"] == "Accept"


async def test_rejects_answer_csv_when_asked(client: Client, seed: Seed) -> None:
    upload_id = uuid.uuid4()
    await seed.conn.execute(
        "INSERT INTO uploads (id, table_name, bucket, key) VALUES ($1, 'jobs', 'b', 'jobs/u/jobs.csv')",
        upload_id,
    )
    response = await client.get(f"/uploads/{upload_id}/rejects", headers={"Accept": "text/csv"})
    assert response.status == 200, await response.text()
    assert response.content_type == "text/csv"
    assert response.headers["Vary"] == "Accept"
    assert list(csv.reader(io.StringIO(await response.text()))) == [["line", "raw", "reason"]]
    response = await client.get(f"/uploads/{upload_id}/rejects")
    assert response.content_type == "application/json"
    assert response.headers["Vary"] == "Accept"
    await _error(await client.get(f"/uploads/{upload_id}/rejects", headers={"Accept": "text/html"}), 406)


@pytest.mark.parametrize(
    "query",
    [
        "/metrics/hires?year=2021&year=2020",
        "/metrics/departments?year=2021&year=2021",
        "/uploads/00000000-0000-0000-0000-000000000000/rejects?limit=1&limit=2",
        "/uploads/00000000-0000-0000-0000-000000000000/rejects?offset=1&offset=1",
    ],
)
async def test_a_parameter_given_twice_is_400(client: Client, query: str) -> None:
    message = await _error(await client.get(query), 400)
    assert "given 2 times" in message


async def test_table_given_twice_is_400(client: Client, seed: Seed) -> None:
    response = await client.post(
        "/upload?table=jobs&table=departments", data=JOBS, headers={"Content-Type": "text/csv"}
    )
    assert "table is given 2 times" in await _error(response, 400)
    assert await _stored(seed) == []


@pytest.mark.parametrize(
    "query",
    [
        "/metrics/hires?year=%00",
        "/metrics/hires?year=%ED%A0%80",
        "/metrics/hires?year=%FF%FE",
        "/uploads/%00/rejects",
        "/uploads/%ED%A0%80",
        "/uploads/00000000-0000-0000-0000-000000000000/rejects?limit=%00",
    ],
)
async def test_undecodable_or_nul_query_values_are_400(client: Client, query: str) -> None:
    response = await client.get(query)
    await _error(response, 400)


async def test_undecodable_table_parameter_is_400(client: Client, seed: Seed) -> None:
    for table in ("%00", "%ED%A0%80", "%FF"):
        response = await client.post(
            f"/upload?table={table}", data=JOBS, headers={"Content-Type": "text/csv"}
        )
        await _error(response, 400)
    assert await _stored(seed) == []
