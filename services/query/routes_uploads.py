"""`POST /upload`, `GET /uploads/{id}`, `GET /uploads/{id}/rejects`."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

import structlog
from aiohttp import BodyPartReader, web
from botocore.exceptions import BotoCoreError, ClientError

from services.query import rejects_csv, sql, upload_refs
from services.query.endpoints import Endpoint, Param
from services.query.errors import ApiError
from services.query.http import json_response, wants_csv
from services.query.params import int_param
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

READ_SIZE: Final = 256 * 1024
RAW_CONTENT_TYPES: Final = frozenset(
    {"text/csv", "application/csv", "text/plain", "application/octet-stream"}
)
DEFAULT_REJECTS_LIMIT: Final = 1000
MAX_REJECTS_LIMIT: Final = 10_000
_KNOWN: Final = ", ".join(sorted(TABLES))
_UNSAFE_NAME_CHARS: Final = re.compile(r"[\x00-\x1f\x7f]")


def _known_table(table: str, where: str) -> str:
    if table not in TABLES:
        raise ApiError(400, f"unknown table {table!r} ({where}): the known tables are {_KNOWN}")
    return table


def safe_filename(name: str | None, table: str) -> str:
    """The file name part of the key: the base name the client gave (no directories, no control
    characters), ending in `.csv` so the consumer takes it; `<table>.csv` when there is none."""
    base = _UNSAFE_NAME_CHARS.sub("", (name or "").replace("\\", "/").rsplit("/", 1)[-1]).strip()
    if base in ("", ".", ".."):
        base = f"{table}.csv"
    if not base.lower().endswith(".csv"):
        base += ".csv"
    return base


@dataclass(frozen=True)
class _File:
    id: uuid.UUID
    table: str
    filename: str | None
    writer: ObjectWriter

    def row(self) -> sql.NewUpload:
        w = self.writer
        return sql.NewUpload(self.id, self.table, w.bucket, w.key, self.filename, w.size, current_trace_id())


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


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(READ_SIZE):
        yield chunk
    if not part.at_eof():  # the body ended before the part's closing boundary: a truncated file
        raise ApiError(400, f"malformed multipart body: the part of {part.filename!r} is cut short")


async def _receive_multipart(request: web.Request, batch: _Batch, table_param: str | None) -> None:
    reader = await request.multipart()
    while True:
        part = await reader.next()
        if part is None:
            return
        if not isinstance(part, BodyPartReader):
            raise ApiError(400, "nested multipart bodies are not supported: send one file per part")
        if part.filename is None:
            continue  # a plain form field: nothing to store
        # clients such as aiohttp percent-encode the name; others send it raw (where a '%' is rare)
        filename = unquote(part.filename)
        if table_param is not None and batch.files:
            raise ApiError(
                400, "?table= applies to a single file part; name each file after its table instead"
            )
        if table_param is not None:
            table = table_param
        else:
            found = table_for_key(filename)
            if found is None:
                raise ApiError(
                    400,
                    f"cannot tell the table of file {filename!r}: name it after one of the known "
                    f"tables ({_KNOWN}), e.g. jobs.csv, or pass ?table=",
                )
            table = found
        await batch.receive(table, filename, _part_chunks(part))


async def upload(request: web.Request) -> web.Response:
    batch = _Batch(request)
    declared = request.content_length
    if declared is not None and declared > request.app[OPTIONS].max_upload_bytes:
        raise ApiError(413, batch.too_large(declared))
    table_param = request.query.get("table")
    if table_param is not None:
        _known_table(table_param, "?table=")
    content_type = request.content_type
    try:
        if content_type == "multipart/form-data":
            try:
                await _receive_multipart(request, batch, table_param)
            except (ValueError, AssertionError) as exc:  # what aiohttp raises on a malformed body
                raise ApiError(400, f"malformed multipart body: {exc}") from None
            if not batch.files:
                raise ApiError(400, "no file part: send each CSV as a multipart part with a filename")
        elif content_type in RAW_CONTENT_TYPES:
            if table_param is None:
                raise ApiError(400, f"a raw CSV body needs ?table= (one of {_KNOWN})")
            await batch.receive(table_param, None, request.content.iter_chunked(READ_SIZE))
        else:
            raise ApiError(
                415,
                f"unsupported Content-Type {content_type!r}: send multipart/form-data with file parts "
                "or a text/csv body with ?table=",
            )
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
    row = await upload_refs.from_path(request)
    given_limit = request.query.get("limit")
    offset = int_param(request.query.get("offset"), "offset", 0, 0, 2**31 - 1)
    if wants_csv(request.headers.get("Accept", "")):  # an export: every reject unless ?limit= is given
        limit_or_all = None if given_limit is None else int_param(given_limit, "limit", 0, 1, 2**31 - 1)
        return await rejects_csv.stream(request, row, offset, limit_or_all)
    limit = int_param(given_limit, "limit", DEFAULT_REJECTS_LIMIT, 1, MAX_REJECTS_LIMIT)
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
    response = json_response(body)
    response.headers["Vary"] = "Accept"
    return response


_ID = Param(
    "id",
    "path",
    {"type": "string"},
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
            415: ErrorBody,
        },
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
                "additionalProperties": {"type": "string", "format": "binary"},
                "description": "one or more file parts; each file's name tells its table (jobs.csv)",
            },
            "text/csv": {"type": "string", "description": "one CSV file; needs ?table="},
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
        responses={200: RejectsPage, **_ERRORS},
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
            Param("offset", "query", {"type": "integer", "minimum": 0, "default": 0}, "rows to skip"),
        ),
    ),
)
