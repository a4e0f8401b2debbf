"""`POST /tables/{table}/rows`: the challenge's batch insert (CONTRACT §4), as an upload.

The batch becomes one object `<table>/batches/<id>.csv` in the raw bucket (metadata `upload-id`),
so it is part of the bucket's history like any file: the ingest consumer validates and applies it,
a replay rebuilds it, `GET /uploads/{id}` and `/rejects` know it. The handler waits for the consumer
to finish that object and answers 201 with the outcome, rejects named by request row.

No consumer within HIRING_ROWS_WAIT_SECONDS (default 30): the answer is 202 with the id and the
status so far (the object stays in the bucket and will be applied when a consumer runs); a retry with
the same Idempotency-Key then waits for that same batch and writes nothing new.

Idempotency-Key (1 to 255 printable ASCII characters): the key, the SHA-256 of the request (method,
table, content type, body) and the answer are kept for IDEMPOTENCY_TTL (24 hours). The same key and
request answers the stored result without writing anything; the same key with another request is
422. Two requests with the same key at once: the second waits for the first (the key's row is the
first one's, uncommitted, until it has its answer) and then answers as a retry.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Final

import asyncpg
import structlog
from aiohttp import web
from botocore.exceptions import BotoCoreError, ClientError

from services.query import rows, sql
from services.query.endpoints import Endpoint, Param
from services.query.errors import ApiError
from services.query.http import encode, raw_json_response
from services.query.schemas import BatchPending, BatchResult, ErrorBody, RowReject, UploadState
from services.query.state import OPTIONS, POOL, S3, SETTINGS
from services.query.storage import ObjectWriter
from shared.dictionary import TABLES, Table

if TYPE_CHECKING:
    from shared.db import DbConnection

    Db = DbConnection | asyncpg.Pool
from shared.telemetry import TRACEPARENT, current_trace_id, current_traceparent

log = structlog.get_logger()

IDEMPOTENCY_TTL: Final = timedelta(hours=24)
JSON_TYPES: Final = frozenset({"application/json"})
CSV_TYPES: Final = frozenset({"text/csv", "application/csv"})
_POLL_FIRST, _POLL_MAX = 0.01, 0.2  # seconds between looks at the ledger: quick at first, then calmer


class Answer:
    """A response to give (and, when `final`, to keep for the Idempotency-Key)."""

    __slots__ = ("final", "headers", "payload", "status")

    def __init__(self, status: int, payload: bytes, *, final: bool, headers: dict[str, str] | None = None):
        self.status = status
        self.payload = payload
        self.final = final
        self.headers = headers or {}

    def response(self) -> web.Response:
        response = raw_json_response(self.payload, status=self.status)
        response.headers.update(self.headers)
        return response


def _table(request: web.Request) -> Table:
    name = request.match_info["table"]
    table = TABLES.get(name)
    if table is None:
        raise ApiError(404, f"no table {name!r}: the tables are {', '.join(sorted(TABLES))}")
    return table


def _idempotency_key(request: web.Request) -> str | None:
    values = request.headers.getall("Idempotency-Key", [])
    if not values:
        return None
    if len(values) > 1:
        raise ApiError(400, "Idempotency-Key is given more than once")
    key = values[0].strip()
    if not 1 <= len(key) <= 255 or not key.isascii() or not key.isprintable():
        raise ApiError(400, "Idempotency-Key must be 1 to 255 printable ASCII characters")
    return key


async def _read_body(request: web.Request) -> bytes:
    limit = rows.MAX_BODY_BYTES
    declared = request.content_length
    if declared is not None and declared > limit:
        raise ApiError(413, f"the body is {declared} bytes; a batch may be at most {limit} bytes")
    body = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"the body is more than {limit} bytes; a batch may be at most {limit} bytes")
    return bytes(body)


def _parse(table: Table, content_type: str, body: bytes) -> rows.BatchFile:
    try:
        if content_type in JSON_TYPES:
            return rows.json_rows_to_csv(table, body)
        if content_type in CSV_TYPES:
            return rows.csv_body_rows(table, body)
    except rows.ShapeError as exc:
        raise ApiError(400, str(exc)) from None
    except rows.TooManyRows as exc:
        raise ApiError(413, str(exc)) from None
    raise ApiError(
        415,
        f"unsupported Content-Type {content_type!r}: send application/json (an array of row objects) "
        "or text/csv (CSV lines)",
    )


async def _write(
    request: web.Request, table: Table, batch_id: uuid.UUID, batch: rows.BatchFile, db: Db | None = None
) -> str:
    """The batch's object into the raw bucket, with its `uploads` row recorded first (as POST /upload
    does), on `db` when the caller holds a connection (see `_answer`). Returns the key. Raises
    ApiError(502) when the bucket does not take it."""
    app = request.app
    db = app[POOL] if db is None else db
    key = f"{table.name}/batches/{batch_id}.csv"
    metadata = {"upload-id": str(batch_id)}
    traceparent = current_traceparent()
    if traceparent is not None:
        metadata[TRACEPARENT] = traceparent
    writer = ObjectWriter(app[S3], app[SETTINGS].bucket, key, metadata=metadata)
    recorded = False
    try:
        await writer.write(batch.data)
        await writer.finish()
        upload = sql.NewUpload(
            batch_id, table.name, writer.bucket, key, None, writer.size, current_trace_id()
        )
        await sql.insert_uploads(db, [upload])
        recorded = True
        await writer.complete()
    except BaseException as exc:
        await asyncio.shield(writer.discard())
        if recorded:
            await asyncio.shield(sql.delete_uploads(db, [batch_id]))
        if isinstance(exc, BotoCoreError | ClientError):
            log.error("rows.storage_failed", error=str(exc), batch_id=str(batch_id))
            raise ApiError(502, f"the raw bucket did not take the batch: {exc}") from None
        raise
    log.info("rows.written", batch_id=str(batch_id), table=table.name, key=key, rows=batch.rows)
    return key


async def _wait(db: Db, batch_id: uuid.UUID, seconds: float) -> sql.Outcome | None:
    """The batch's ledger row once the consumer finished it (loaded or failed), or its latest state
    (possibly None: not seen yet) when `seconds` pass first. `db`: the pool, or a connection already
    held (READ COMMITTED: each look sees what the consumer committed since)."""
    deadline = time.monotonic() + seconds
    pause = _POLL_FIRST
    while True:
        outcome = await sql.upload_outcome(db, batch_id)
        if outcome is not None and outcome.status != "processing":
            return outcome
        left = deadline - time.monotonic()
        if left <= 0:
            return outcome
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, _POLL_MAX)


async def _answer(
    request: web.Request,
    table: Table,
    batch_id: uuid.UUID,
    starts: tuple[int, ...] | None,
    db: Db | None = None,
) -> Answer:
    """`db`: a connection the caller holds (the Idempotency-Key owner's), so a request that already
    holds one never waits for a second: with as many such requests as the pool has connections, a
    second acquire would wait for ever."""
    pool = request.app[POOL] if db is None else db
    wait = request.app[OPTIONS].rows_wait_seconds
    outcome = await _wait(pool, batch_id, wait)
    if outcome is None or outcome.status == "processing":
        status: UploadState = "queued" if outcome is None else "processing"
        body = BatchPending(
            id=str(batch_id),
            table=table.name,
            status=status,
            detail=f"no ingest consumer finished the batch within {wait} s; it is in the bucket and "
            f"will be applied: follow GET /uploads/{batch_id}",
        )
        return Answer(202, encode(body), final=False, headers={"Location": f"/uploads/{batch_id}"})
    if outcome.status == "failed":
        message = f"batch {batch_id} failed: {outcome.error or 'no reason recorded'}"
        return Answer(422, encode(ErrorBody(error=message)), final=True)
    found = await sql.reject_lines(pool, outcome.object_id)
    rejects = [RowReject(row=rows.row_of_line(starts, line), reason=reason) for line, reason in found]
    body_ok = BatchResult(
        id=str(batch_id),
        table=table.name,
        rows_loaded=outcome.rows_loaded,
        rows_rejected=outcome.rows_rejected,
        rejects=rejects,
    )
    return Answer(201, encode(body_ok), final=True, headers={"Location": f"/uploads/{batch_id}"})


async def post_rows(request: web.Request) -> web.Response:
    table = _table(request)
    key = _idempotency_key(request)
    content_type = request.content_type
    body = await _read_body(request)
    batch = _parse(table, content_type, body)
    if key is None:
        batch_id = uuid.uuid4()
        await _write(request, table, batch_id, batch)
        return (await _answer(request, table, batch_id, batch.starts)).response()
    digest = rows.request_digest(request.method, table.name, content_type, body)
    # shielded: a client that goes away must not roll the key back after its batch was written
    # (a retry would then write it again)
    work = asyncio.ensure_future(_idempotent(request, table, batch, key, digest))
    return (await asyncio.shield(work)).response()


async def _idempotent(
    request: web.Request, table: Table, batch: rows.BatchFile, key: str, digest: bytes
) -> Answer:
    pool = request.app[POOL]
    wait = request.app[OPTIONS].rows_wait_seconds
    batch_id = uuid.uuid4()
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            try:
                owner = await sql.claim_key(
                    conn,
                    key,
                    digest,
                    batch_id,
                    table.name,
                    ttl=IDEMPOTENCY_TTL,
                    lock_timeout_ms=int(wait * 1000) + 5000,
                )
            except asyncpg.LockNotAvailableError:
                raise ApiError(
                    409, "a request with this Idempotency-Key is still being applied; retry later"
                ) from None
            if owner is None:  # ours: write, wait, keep the answer, then let the key go
                await _write(request, table, batch_id, batch, conn)
                answer = await _answer(request, table, batch_id, batch.starts, conn)
                if answer.final:
                    await sql.store_answer(conn, key, answer.status, answer.payload)
                await tx.commit()
                return answer
            await tx.commit()
        except BaseException:
            await asyncio.shield(tx.rollback())
            raise
    if owner.request_sha256 != digest:
        raise ApiError(
            422, "this Idempotency-Key was used with another request (another body or table) within 24 h"
        )
    if owner.status_code is not None and owner.response is not None:
        log.info("rows.replayed", batch_id=str(owner.batch_id), table=table.name)
        return Answer(owner.status_code, owner.response, final=True)
    # the first request answered 202 (no consumer in time): wait for its batch, not a new one
    answer = await _answer(request, table, owner.batch_id, batch.starts)
    if answer.final:
        async with pool.acquire() as conn:
            await sql.store_answer(conn, key, answer.status, answer.payload)
    return answer


_ERRORS: Final = {
    400: ErrorBody,
    401: ErrorBody,
    403: ErrorBody,
    404: ErrorBody,
    409: ErrorBody,
    413: ErrorBody,
    415: ErrorBody,
    422: ErrorBody,
}

ENDPOINTS: Final = (
    Endpoint(
        "POST",
        "/tables/{table}/rows",
        post_rows,
        "Insert 1 to 1000 rows in one request; answers once the valid rows are queryable",
        scope="upload",
        responses={201: BatchResult, 202: BatchPending, **_ERRORS},
        params=(
            Param(
                "table",
                "path",
                {"type": "string", "enum": sorted(TABLES)},
                "the table the rows belong to",
                True,
            ),
        ),
        request_body={
            "application/json": {
                "type": "array",
                "minItems": 1,
                "maxItems": rows.MAX_ROWS,
                "items": {
                    "type": "object",
                    "additionalProperties": {"type": ["string", "number", "null"]},
                },
                "description": "row objects keyed by the table's column names",
            },
            "text/csv": {
                "type": "string",
                "description": "1 to 1000 CSV lines, the table's columns in order",
            },
        },
    ),
)
