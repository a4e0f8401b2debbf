"""The load history (CONTRACT §4): `GET /uploads` over every ingested object version, the rejects of
an upload counted per reason, and `DELETE /uploads/{id}` (retract: delete its object version, whose
ObjectRemoved event makes the consumers undo what it contributed)."""

from __future__ import annotations

from typing import Any, Final

import structlog
from aiohttp import web
from botocore.exceptions import BotoCoreError, ClientError

from services.query import sql, upload_refs
from services.query.endpoints import Endpoint, Param
from services.query.errors import ApiError
from services.query.http import json_response
from services.query.params import int_param
from services.query.schemas import ErrorBody, RejectReasons, UploadsPage, UploadStatus
from services.query.state import POOL, S3, SETTINGS
from shared.dictionary import TABLES

log = structlog.get_logger()

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 1000
STATUSES: Final = ("queued", "processing", "loaded", "failed", "retracted")
UNVERSIONED_PREFIX: Final = "etag:"  # the ledger's version of an object in an unversioned bucket


async def list_uploads(request: web.Request) -> web.Response:
    query = request.query
    for name in ("status", "table", "limit", "after"):
        if len(query.getall(name, [])) > 1:
            raise ApiError(400, f"{name} is given more than once")
    status = query.get("status")
    if status is not None and status not in STATUSES:
        raise ApiError(400, f"bad status {status!r}: expected one of {', '.join(STATUSES)}")
    table = query.get("table")
    if table is not None and table not in TABLES:
        raise ApiError(400, f"unknown table {table!r}: the known tables are {', '.join(sorted(TABLES))}")
    limit = int_param(query.get("limit"), "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    after: sql.UploadRow | None = None
    if (cursor := query.get("after")) is not None:
        try:
            after = await upload_refs.find(request, cursor)
        except ApiError as exc:
            raise ApiError(400, f"bad after {cursor!r}: {exc.message}") from None
    rows = await sql.list_uploads(request.app[POOL], status=status, table=table, after=after, limit=limit + 1)
    page = rows[:limit]
    next_after = page[-1].id if len(rows) > limit else None
    return json_response(
        UploadsPage(limit=limit, next_after=next_after, uploads=[upload_refs.status_body(r) for r in page])
    )


async def reject_reasons(request: web.Request) -> web.Response:
    row = await upload_refs.from_path(request)
    reasons = [] if row.object_id is None else await sql.reject_reasons(request.app[POOL], row.object_id)
    body = RejectReasons(
        upload_id=row.id,
        status=upload_refs.state(row),
        rows_rejected=row.rows_rejected or 0,
        reasons=reasons,
    )
    return json_response(body)


async def retract(request: web.Request) -> web.Response:
    """202 once the upload's object version is deleted from the bucket (or already was); the consumer
    that takes the ObjectRemoved event retracts its rows and sets the status `retracted`."""
    row = await upload_refs.from_path(request)
    if row.status == "retracted":
        return json_response(upload_refs.status_body(row), status=202)
    bucket = request.app[SETTINGS].bucket
    if row.bucket != bucket:
        raise ApiError(409, f"upload {row.id} is in bucket {row.bucket!r}, not the raw bucket {bucket!r}")
    s3 = request.app[S3]
    try:
        deleted = await _delete_object_version(s3, bucket, row)
    except (ClientError, BotoCoreError) as exc:
        log.error("retract.s3_failed", upload_id=row.id, key=row.key, error=str(exc))
        raise ApiError(502, f"the bucket refused the delete: {exc}") from None
    log.info("upload.retract_requested", upload_id=row.id, bucket=bucket, key=row.key, deleted=deleted)
    return json_response(upload_refs.status_body(row), status=202)


async def _delete_object_version(s3: Any, bucket: str, row: sql.UploadRow) -> list[str]:
    """Delete exactly the object version the upload stands for; the versions deleted (may be none
    when it is already gone). 409 when that version cannot be told apart from a later one."""
    if row.version is not None and not row.version.startswith(UNVERSIONED_PREFIX):
        await s3.delete_object(Bucket=bucket, Key=row.key, VersionId=row.version)
        return [row.version]
    if row.version is not None:  # unversioned bucket: the key is the object; is it still this one?
        try:
            head = await s3.head_object(Bucket=bucket, Key=row.key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return []
            raise
        if row.etag is not None and head.get("ETag", "").strip('"') != row.etag.strip('"'):
            raise ApiError(
                409,
                f"{row.key!r} was overwritten since upload {row.id}: in an unversioned bucket its content"
                " is gone already; retract the later upload instead",
            )
        await s3.delete_object(Bucket=bucket, Key=row.key)
        return ["null"]
    # queued: no consumer has seen it yet; the key is the upload's own (it holds the upload's UUID)
    key = row.upload_key or row.key
    listing = await s3.list_object_versions(Bucket=bucket, Prefix=key)
    versions = [v["VersionId"] for v in listing.get("Versions", []) if v["Key"] == key]
    if not versions:
        raise ApiError(409, f"upload {row.id} has no object in the bucket yet: nothing to retract")
    for version in versions:
        await s3.delete_object(Bucket=bucket, Key=key, VersionId=version)
    return list(versions)


_ID = Param(
    "id", "path", upload_refs.ID_SCHEMA, "an upload id from GET /uploads: a UUID, or obj-<n>", required=True
)
_ERRORS = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody}

ENDPOINTS: Final = (
    Endpoint(
        "GET",
        "/uploads",
        list_uploads,
        "The load history: every ingested object version (API uploads, files put into the bucket by any"
        " tool, batches) and the uploads not yet ingested, newest first",
        scope="read",
        responses={200: UploadsPage, 400: ErrorBody, 401: ErrorBody, 403: ErrorBody},
        params=(
            Param("status", "query", {"type": "string", "enum": list(STATUSES)}, "only this status"),
            Param("table", "query", {"type": "string", "enum": sorted(TABLES)}, "only this table"),
            Param(
                "limit",
                "query",
                {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
                "page size",
            ),
            Param("after", "query", upload_refs.ID_SCHEMA, "the previous page's next_after"),
        ),
    ),
    Endpoint(
        "GET",
        "/uploads/{id}/rejects/reasons",
        reject_reasons,
        "The upload's rejected rows counted per reason (the rows' own values taken out)",
        scope="read",
        responses={200: RejectReasons, **_ERRORS},
        params=(_ID,),
    ),
    Endpoint(
        "DELETE",
        "/uploads/{id}",
        retract,
        "Retract an upload: its object version is deleted from the bucket, and the consumers undo what it"
        " contributed (each id returns to the latest remaining upload's value, or disappears); then its"
        " status is `retracted`",
        scope="admin",
        responses={202: UploadStatus, **_ERRORS, 409: ErrorBody, 502: ErrorBody},
        params=(_ID,),
    ),
)
