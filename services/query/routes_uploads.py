"""`POST /upload`, `GET /uploads/{id}`, `GET /uploads/{id}/rejects`."""

from __future__ import annotations

import asyncio
import re
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Final, TypeVar
from urllib.parse import unquote

import structlog
from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import content_disposition_filename, parse_content_disposition
from aiohttp.web_protocol import RequestPayloadError
from botocore.exceptions import BotoCoreError, ClientError

from services.query import formats, rejects_csv, sql, upload_refs
from services.query.endpoints import Endpoint, Param
from services.query.errors import ApiError, expect_continue
from services.query.http import CSV, VARY_ACCEPT, json_response
from services.query.params import int_param, single
from services.query.schemas import (
    ErrorBody,
    Reject,
    RejectsPage,
    UploadAccepted,
    UploadsAccepted,
    UploadStatus,
)
from services.query.state import OPTIONS, POOL, S3, SETTINGS
from services.query.storage import ObjectWriter
from shared.dictionary import TABLES, table_for_key
from shared.telemetry import TRACEPARENT, current_trace_id, current_traceparent

log = structlog.get_logger()
T = TypeVar("T")

READ_SIZE: Final = 256 * 1024
RAW_CONTENT_TYPES: Final = frozenset(
    {"text/csv", "application/csv", "text/plain", "application/octet-stream"}
)
DEFAULT_REJECTS_LIMIT: Final = 1000
MAX_REJECTS_LIMIT: Final = 10_000
MAX_OFFSET: Final = 2**31 - 1
FILE_FIELD: Final = "file"  # a part of this name is a file even without a file name
_KNOWN: Final = ", ".join(sorted(TABLES))
MAX_NAME_CHARS: Final = 200  # keeps `<table>/<uuid>/<name>` within S3's 1024-byte key limit
# control characters (PostgreSQL text refuses NUL) and what XML 1.0, which S3 answers in, cannot carry
_UNSAFE_NAME_CHARS: Final = re.compile(r"[\x00-\x1f\x7f\ufffe\uffff]")
# errors aiohttp raises for a body it cannot read as the client framed it (multipart boundaries and
# part headers, chunked or compressed transfer): the client's fault, a 400
_BODY_ERRORS: Final = (ValueError, AssertionError, HttpProcessingError, RequestPayloadError)


def _known_table(table: str, where: str) -> str:
    if table not in TABLES:
        raise ApiError(400, f"unknown table {table!r} ({where}): the known tables are {_KNOWN}")
    return table


def base_name(name: str) -> str:
    """The file's base name as a client sent it, made safe to store and show: valid UTF-8 (what is
    not becomes U+FFFD), no control characters, no directories (`/` or a Windows path's `\\`),
    surrounding whitespace trimmed, at most MAX_NAME_CHARS characters. May be empty."""
    try:  # aiohttp keeps undecodable header bytes as surrogate escapes: back to bytes
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = name.encode("utf-8", "surrogatepass")
    text = _UNSAFE_NAME_CHARS.sub("", raw.decode("utf-8", "replace"))
    text = text.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if len(text) <= MAX_NAME_CHARS:
        return text
    stem, dot, suffix = text.rpartition(".")
    if dot and stem and len(suffix) < 16:  # keep the start (it names the table) and the extension
        return stem[: MAX_NAME_CHARS - len(suffix) - 1] + "." + suffix
    return text[:MAX_NAME_CHARS]


def safe_filename(name: str | None, table: str) -> str:
    """The file name part of the key: the base name, ending in `.csv` so the consumer takes it;
    `<table>.csv` when there is none."""
    base = base_name(name or "")
    if base in ("", ".", ".."):
        base = f"{table}.csv"
    if not base.lower().endswith(".csv"):
        base += ".csv"
    return base


def part_filename(part: BodyPartReader) -> str | None:
    """The `filename` of a part's Content-Disposition (RFC 7578), percent-decoded, None for a plain
    form field. Browsers send backslashes unescaped (`C:\\data\\jobs.csv`): they are kept, not read
    as quoted-string escapes. ApiError 400 when the header names a file that cannot be read."""
    header = part.headers.get(hdrs.CONTENT_DISPOSITION)
    if header is None:
        return None
    with warnings.catch_warnings():  # aiohttp warns about malformed headers: we answer them instead
        warnings.simplefilter("ignore")
        _, params = parse_content_disposition(header.replace("\\", "\\\\"))
        name = content_disposition_filename(params, "filename")
    if name is None:
        if "filename" in header.lower():
            raise ApiError(400, f"malformed multipart body: cannot read the file name in {header[:200]!r}")
        return None
    # clients such as aiohttp percent-encode the name; others send it raw (where a '%' is rare)
    return unquote(name)


@dataclass(frozen=True)
class _File:
    id: uuid.UUID
    table: str
    filename: str | None
    writer: ObjectWriter

    def row(self) -> sql.NewUpload:
        w = self.writer
        name = base_name(self.filename) if self.filename is not None else None
        return sql.NewUpload(self.id, self.table, w.bucket, w.key, name or None, w.size, current_trace_id())


class _Batch:
    """The files of one request: all land in the bucket, or none does."""

    def __init__(self, request: web.Request) -> None:
        app = request.app
        self._s3 = app[S3]
        self._pool = app[POOL]
        self._bucket = app[SETTINGS].bucket
        self._max_bytes = app[OPTIONS].max_upload_bytes
        self.files: list[_File] = []
        self.received = 0
        self._rows_inserted = False

    async def receive(self, table: str, filename: str | None, chunks: AsyncIterator[bytes]) -> None:
        upload_id = uuid.uuid4()
        key = f"{table}/{upload_id}/{safe_filename(filename, table)}"
        metadata = {"upload-id": str(upload_id)}
        traceparent = current_traceparent()  # S3 events carry no trace context: the consumer links to it
        if traceparent is not None:
            metadata[TRACEPARENT] = traceparent
        writer = ObjectWriter(self._s3, self._bucket, key, metadata=metadata)
        self.files.append(_File(upload_id, table, filename, writer))
        async for chunk in chunks:
            self.received += len(chunk)
            if self.received > self._max_bytes:
                raise ApiError(413, self.too_large(None))
            await writer.write(chunk)
        if writer.size == 0:
            raise ApiError(400, f"file {filename or table!r} is empty")
        await writer.finish()

    def too_large(self, declared: int | None) -> str:
        size = f"{declared} bytes" if declared is not None else f"more than {self._max_bytes} bytes"
        return f"the upload is {size}; the limit is {self._max_bytes} bytes (HIRING_MAX_UPLOAD_BYTES)"

    async def commit(self) -> None:
        """Record the uploads, then make the objects visible: the consumer, reading an object's
        `upload-id`, always finds its row."""
        await sql.insert_uploads(self._pool, [f.row() for f in self.files])
        self._rows_inserted = True
        for f in self.files:
            await f.writer.complete()

    async def rollback(self) -> None:
        await asyncio.gather(*(f.writer.discard() for f in self.files))
        if self._rows_inserted:
            try:
                await sql.delete_uploads(self._pool, [f.id for f in self.files])
            except Exception as exc:
                log.error("upload.rollback_failed", error=str(exc), uploads=[str(f.id) for f in self.files])


async def _timely(aw: Awaitable[T], seconds: float) -> T:
    """`await aw`, a read of the request body: ApiError 408 when the client sends nothing for
    `seconds` (a stalled upload must not hold its connection and buffers forever)."""
    try:
        async with asyncio.timeout(seconds):
            return await aw
    except TimeoutError:
        raise ApiError(
            408,
            f"the request body stalled: nothing arrived for {seconds:g} s (HIRING_HTTP_BODY_TIMEOUT)",
            headers={"Connection": "close"},
        ) from None


async def _raw_chunks(request: web.Request, seconds: float) -> AsyncIterator[bytes]:
    while chunk := await _timely(request.content.read(READ_SIZE), seconds):
        yield chunk


async def _part_chunks(part: BodyPartReader, seconds: float, first: bytes = b"") -> AsyncIterator[bytes]:
    if first:
        yield first
    while chunk := await _timely(part.read_chunk(READ_SIZE), seconds):
        yield chunk
    if not part.at_eof():  # the body ended before the part's closing boundary: a truncated file
        raise ApiError(400, f"malformed multipart body: the part of {part.filename!r} is cut short")


async def _receive_multipart(request: web.Request, batch: _Batch, table_param: str | None) -> None:
    seconds = request.app[OPTIONS].body_timeout
    reader = await request.multipart()
    while True:
        part = await _timely(reader.next(), seconds)
        if part is None:
            return
        if not isinstance(part, BodyPartReader):
            raise ApiError(400, "nested multipart bodies are not supported: send one file per part")
        filename = part_filename(part)
        if filename is None and part.name == FILE_FIELD:
            filename = ""  # a file sent as a plain field (curl -F file=<jobs.csv): no name, ?table= tells
        if filename is None:
            continue  # a plain form field: nothing to store
        first = b""
        if not base_name(filename):
            # a form's file input left blank: browsers send filename="" and no bytes
            first = await _timely(part.read_chunk(READ_SIZE), seconds)
            if not first and part.at_eof():
                continue
        if table_param is not None and batch.files:
            raise ApiError(
                400, "?table= applies to a single file part; name each file after its table instead"
            )
        if table_param is not None:
            table = table_param
        else:
            found = table_for_key(base_name(filename))
            if found is None:
                raise ApiError(
                    400,
                    f"cannot tell the table of file {base_name(filename)!r}: name it after one of the "
                    f"known tables ({_KNOWN}), e.g. jobs.csv, or pass ?table=",
                )
            table = found
        await batch.receive(table, filename, _part_chunks(part, seconds, first))


def _body_error(exc: BaseException, what: str) -> ApiError:
    if isinstance(exc, RequestPayloadError) and exc.__cause__ is not None:
        exc = exc.__cause__  # the parser's own error says what was wrong
    detail = exc.message if isinstance(exc, HttpProcessingError) else str(exc)
    detail = " ".join(detail.split())[:300] or type(exc).__name__
    return ApiError(400, f"malformed {what}: {detail}")


async def upload(request: web.Request) -> web.Response:
    batch = _Batch(request)
    declared = request.content_length
    if declared is not None and declared > request.app[OPTIONS].max_upload_bytes:
        raise ApiError(413, batch.too_large(declared))
    table_param = single(request.query, "table")
    if table_param is not None:
        _known_table(table_param, "?table=")
    content_type = request.content_type
    try:
        try:
            if content_type == "multipart/form-data":
                await _receive_multipart(request, batch, table_param)
                if not batch.files:
                    raise ApiError(400, "no file part: send each CSV as a multipart part with a filename")
            elif content_type in RAW_CONTENT_TYPES:
                if table_param is None:
                    raise ApiError(400, f"a raw CSV body needs ?table= (one of {_KNOWN})")
                body_timeout = request.app[OPTIONS].body_timeout
                await batch.receive(table_param, None, _raw_chunks(request, body_timeout))
            else:
                raise ApiError(
                    415,
                    f"unsupported Content-Type {content_type!r}: send multipart/form-data with file "
                    "parts or a text/csv body with ?table=",
                )
        except _BODY_ERRORS as exc:
            what = "multipart body" if content_type == "multipart/form-data" else "request body"
            raise _body_error(exc, what) from None
        await batch.commit()
    except (BotoCoreError, ClientError) as exc:
        await asyncio.shield(batch.rollback())
        log.error("upload.storage_failed", error=str(exc), files=len(batch.files))
        raise ApiError(502, f"the raw bucket did not take the file: {exc}") from None
    except BaseException as exc:
        await asyncio.shield(batch.rollback())
        if not isinstance(exc, ApiError):
            log.warning("upload.aborted", error=repr(exc), files=len(batch.files), received=batch.received)
        raise
    accepted = [
        UploadAccepted(id=str(f.id), table=f.table, key=f.writer.key, status="queued") for f in batch.files
    ]
    for f in batch.files:
        log.info(
            "upload.accepted", upload_id=str(f.id), table=f.table, key=f.writer.key, size_bytes=f.writer.size
        )
    return json_response(UploadsAccepted(uploads=accepted), status=202)


# ---- status and rejects -------------------------------------------------------------------------


async def upload_status(request: web.Request) -> web.Response:
    return json_response(upload_refs.status_body(await upload_refs.from_path(request)))


async def upload_rejects(request: web.Request) -> web.StreamResponse:
    chosen = formats.pick(request)
    given_limit = single(request.query, "limit")
    offset = int_param(single(request.query, "offset"), "offset", 0, 0, MAX_OFFSET)
    if chosen == CSV:  # an export: every reject unless ?limit= is given
        limit_or_all = None if given_limit is None else int_param(given_limit, "limit", 0, 1, 2**31 - 1)
        return await rejects_csv.stream(request, await upload_refs.from_path(request), offset, limit_or_all)
    limit = int_param(given_limit, "limit", DEFAULT_REJECTS_LIMIT, 1, MAX_REJECTS_LIMIT)
    row = await upload_refs.from_path(request)
    rejects: list[Reject] = []
    next_offset: int | None = None
    if row.object_id is not None:
        found = await sql.rejects(request.app[POOL], row.object_id, limit + 1, offset)
        rejects = found[:limit]
        if len(found) > limit:
            next_offset = offset + limit
    body = RejectsPage(
        upload_id=row.id,
        status=upload_refs.state(row),
        limit=limit,
        offset=offset,
        next_offset=next_offset,
        rejects=rejects,
    )
    return json_response(body, headers=VARY_ACCEPT)


def _max_upload(request: web.Request) -> int:
    return request.app[OPTIONS].max_upload_bytes


_ID = Param(
    "id",
    "path",
    upload_refs.ID_SCHEMA,
    "the upload's id: a UUID from POST /upload, or any id from GET /uploads (obj-<n> for a file put"
    " into the bucket by another tool)",
    True,
)
_ERRORS = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody}

ENDPOINTS: Final = (
    Endpoint(
        "POST",
        "/upload",
        upload,
        "Upload CSV files into the raw bucket; each is ingested asynchronously",
        scope="upload",
        responses={
            202: UploadsAccepted,
            400: ErrorBody,
            401: ErrorBody,
            403: ErrorBody,
            413: ErrorBody,
            408: ErrorBody,
            415: ErrorBody,
            417: ErrorBody,
        },
        expect=expect_continue(_max_upload),
        params=(
            Param(
                "table",
                "query",
                {"type": "string", "enum": sorted(TABLES)},
                "the table of a raw text/csv body or of a single file part (default: from the file name)",
            ),
        ),
        request_body={
            "multipart/form-data": {
                "type": "object",
                "properties": {
                    FILE_FIELD: {
                        "type": "array",
                        "items": {"type": "string", "format": "binary", "minLength": 1},
                        "minItems": 1,
                    }
                },
                "required": [FILE_FIELD],
                "description": "one or more file parts (a part with a file name, or named `file`); each"
                " file's name tells its table (jobs.csv), or ?table= for a single one; other fields are"
                " ignored",
            },
            "text/csv": {"type": "string", "minLength": 1, "description": "one CSV file; needs ?table="},
        },
    ),
    Endpoint(
        "GET",
        "/uploads/{id}",
        upload_status,
        "The state of an upload: queued, processing, loaded or failed, with row counts",
        scope="read",
        responses={200: UploadStatus, **_ERRORS},
        params=(_ID,),
    ),
    Endpoint(
        "GET",
        "/uploads/{id}/rejects",
        upload_rejects,
        "The rejected rows of an upload (line, raw text, reason), ordered by line; as CSV (every row,"
        " unless ?limit= is given) when Accept prefers text/csv",
        scope="read",
        responses={200: RejectsPage, **_ERRORS, 406: ErrorBody},
        csv_columns=rejects_csv.COLUMNS,
        params=(
            _ID,
            Param(
                "limit",
                "query",
                {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_REJECTS_LIMIT,
                    "default": DEFAULT_REJECTS_LIMIT,
                },
                "page size",
            ),
            Param(
                "offset",
                "query",
                {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0},
                "rows to skip",
            ),
        ),
    ),
)
