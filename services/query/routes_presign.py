"""Uploads that never pass through the API process (API Gateway takes at most 10 MB per request):
`POST /uploads/presigned` opens an S3 multipart upload under the upload's own key, tagged with its
`upload-id` like `POST /upload`, and hands out one presigned `UploadPart` URL per part; the client
PUTs the parts straight to S3, then `POST /uploads/{id}/complete` makes the object visible (and so
sends the bucket's event). The upload is recorded before any byte is sent, so the consumer always
finds its row."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

import msgspec
import structlog
from aiohttp import web
from botocore.exceptions import BotoCoreError, ClientError

from services.query import sql, upload_refs
from services.query.endpoints import Endpoint, Param
from services.query.errors import ApiError
from services.query.http import json_response
from services.query.routes_uploads import base_name, safe_filename
from services.query.schemas import ErrorBody, UploadAccepted
from services.query.state import POOL, S3, SETTINGS
from shared.dictionary import TABLES, table_for_key
from shared.telemetry import TRACEPARENT, current_trace_id, current_traceparent

log = structlog.get_logger()

MIN_PART_SIZE: Final = 8 * 1024 * 1024  # S3's minimum is 5 MiB for every part but the last
MAX_PARTS: Final = 10_000  # S3's limit
MAX_OBJECT_BYTES: Final = 5 * 1024**4  # S3's largest object, 5 TiB
URL_SECONDS: Final = 3600
MAX_BODY_BYTES: Final = 64 * 1024


class PresignRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """`POST /uploads/presigned`: the file's name (tells the table unless `table` is given) and its
    exact size in bytes."""

    filename: str
    size_bytes: Annotated[int, msgspec.Meta(ge=1, le=MAX_OBJECT_BYTES)]
    table: str | None = None


class PresignedPart(msgspec.Struct, frozen=True):
    part_number: int
    url: str  # PUT the part's bytes here (no other header needed); S3 answers its ETag


class PresignedUpload(msgspec.Struct, frozen=True):
    """Part n holds bytes [(n-1)*part_size, n*part_size) of the file; then POST `complete_url`."""

    id: str
    table: str
    key: str
    part_size: int
    expires_at: datetime
    parts: list[PresignedPart]
    complete_url: str


def part_size_for(size: int) -> int:
    """At least 8 MiB, and large enough that the file takes at most 10,000 parts (whole MiB)."""
    mib = 1024 * 1024
    return max(MIN_PART_SIZE, math.ceil(size / MAX_PARTS / mib) * mib)


def _read_request(body: bytes) -> PresignRequest:
    try:
        req = msgspec.json.decode(body, type=PresignRequest)
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"bad request body: {exc} (expected {{filename, size_bytes, table?}})") from None
    if not 1 <= req.size_bytes <= MAX_OBJECT_BYTES:
        raise ApiError(400, f"size_bytes {req.size_bytes}: expected 1 to {MAX_OBJECT_BYTES} (5 TiB)")
    return req


async def presign(request: web.Request) -> web.Response:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise ApiError(413, f"the request body is limited to {MAX_BODY_BYTES} bytes")
    req = _read_request(await request.content.read(MAX_BODY_BYTES + 1))
    table = req.table or table_for_key(req.filename)
    if table is None or table not in TABLES:
        raise ApiError(
            400,
            f"cannot tell the table of {req.filename!r}: name it after one of {', '.join(sorted(TABLES))}"
            ' or give "table"',
        )
    app = request.app
    bucket, s3 = app[SETTINGS].bucket, app[S3]
    upload_id = uuid.uuid4()
    filename = safe_filename(req.filename, table)
    key = f"{table}/{upload_id}/{filename}"
    part_size = part_size_for(req.size_bytes)
    count = max(1, math.ceil(req.size_bytes / part_size))
    metadata = {"upload-id": str(upload_id)}
    if (traceparent := current_traceparent()) is not None:
        metadata[TRACEPARENT] = traceparent
    # the name as stored and shown: no NUL (PostgreSQL text refuses it), no control characters
    name = base_name(req.filename) or None
    row = sql.NewUpload(upload_id, table, bucket, key, name, req.size_bytes, current_trace_id())
    await sql.insert_uploads(app[POOL], [row])
    try:
        created = await s3.create_multipart_upload(
            Bucket=bucket, Key=key, Metadata=metadata, ContentType="text/csv"
        )
        parts = [
            PresignedPart(
                n,
                await s3.generate_presigned_url(
                    "upload_part",
                    Params={"Bucket": bucket, "Key": key, "UploadId": created["UploadId"], "PartNumber": n},
                    ExpiresIn=URL_SECONDS,
                ),
            )
            for n in range(1, count + 1)
        ]
    except (ClientError, BotoCoreError) as exc:
        await sql.delete_uploads(app[POOL], [upload_id])
        log.error("presign.s3_failed", key=key, error=str(exc))
        raise ApiError(502, f"the bucket refused the upload: {exc}") from None
    log.info("upload.presigned", upload_id=str(upload_id), table=table, key=key, parts=count)
    body = PresignedUpload(
        id=str(upload_id),
        table=table,
        key=key,
        part_size=part_size,
        expires_at=datetime.now(UTC) + timedelta(seconds=URL_SECONDS),
        parts=parts,
        complete_url=f"/uploads/{upload_id}/complete",
    )
    return json_response(body, status=201)


async def complete(request: web.Request) -> web.Response:
    """Complete the upload's S3 multipart upload once every byte declared is there (202); 400 when
    parts are missing (send them, then complete again); idempotent once completed."""
    row = await upload_refs.from_path(request)
    if row.upload_key is None:
        raise ApiError(409, f"upload {row.id} was not made by POST /uploads/presigned: nothing to complete")
    accepted = UploadAccepted(id=row.id, table=row.table_name or "", key=row.upload_key, status="queued")
    bucket, s3 = request.app[SETTINGS].bucket, request.app[S3]
    try:
        pending = await _pending_upload(s3, bucket, row.upload_key)
        if pending is None:
            if row.object_id is not None or await _exists(s3, bucket, row.upload_key):
                return json_response(accepted, status=202)  # completed already
            raise ApiError(409, f"upload {row.id} has no open S3 upload (expired, or aborted)")
        parts = await _parts(s3, bucket, row.upload_key, pending)
        sent = sum(p["Size"] for p in parts)
        if sent != row.size_bytes:
            raise ApiError(
                400,
                f"upload {row.id} declared {row.size_bytes} bytes, S3 holds {sent} in {len(parts)} parts:"
                " send the missing parts, then complete again",
            )
        await s3.complete_multipart_upload(
            Bucket=bucket,
            Key=row.upload_key,
            UploadId=pending,
            MultipartUpload={"Parts": [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in parts]},
        )
    except (ClientError, BotoCoreError) as exc:
        log.error("presign.complete_failed", upload_id=row.id, error=str(exc))
        raise ApiError(502, f"the bucket refused to complete the upload: {exc}") from None
    log.info("upload.accepted", upload_id=row.id, table=row.table_name, key=row.upload_key, size_bytes=sent)
    return json_response(accepted, status=202)


async def _pending_upload(s3: Any, bucket: str, key: str) -> str | None:
    listing = await s3.list_multipart_uploads(Bucket=bucket, Prefix=key)
    found = [u["UploadId"] for u in listing.get("Uploads", []) if u["Key"] == key]
    return found[0] if found else None


async def _parts(s3: Any, bucket: str, key: str, upload_id: str) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    marker = 0
    while True:
        page = await s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker)
        parts += page.get("Parts", [])
        if not page.get("IsTruncated"):
            return sorted(parts, key=lambda p: p["PartNumber"])
        marker = int(page["NextPartNumberMarker"])


async def _exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        await s3.head_object(Bucket=bucket, Key=key)
    except ClientError:
        return False
    return True


_ERRORS = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody}

ENDPOINTS: Final = (
    Endpoint(
        "POST",
        "/uploads/presigned",
        presign,
        "Start an upload that goes straight to S3 (any size up to 5 TiB): presigned part URLs",
        scope="upload",
        responses={201: PresignedUpload, **_ERRORS, 413: ErrorBody, 502: ErrorBody},
        request_body={"application/json": msgspec.json.schema(PresignRequest)},
    ),
    Endpoint(
        "POST",
        "/uploads/{id}/complete",
        complete,
        "Finish a presigned upload once its parts are in S3: the object becomes visible and is ingested",
        scope="upload",
        responses={202: UploadAccepted, **_ERRORS, 404: ErrorBody, 409: ErrorBody, 502: ErrorBody},
        params=(Param("id", "path", upload_refs.ID_SCHEMA, "the id POST /uploads/presigned answered", True),),
    ),
)
