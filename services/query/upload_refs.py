"""Upload ids: the UUID of an upload (POST /upload, a presigned upload, or any object whose metadata
carries `upload-id`), or `obj-<n>` for the ledger row `ingest_objects.id = n` (a file put into the
bucket by any tool). Both forms name the same item where both exist."""

from __future__ import annotations

import re
import uuid
from typing import Final

from aiohttp import web

from services.query import sql
from services.query.errors import ApiError
from services.query.schemas import UploadState, UploadStatus
from services.query.state import POOL

LEDGER_PREFIX: Final = "obj-"
_LEDGER_ID: Final = re.compile(r"obj-([0-9]{1,18})")
# what parse_upload_id takes, for the OpenAPI document (its canonical forms)
ID_SCHEMA: Final = {
    "type": "string",
    "pattern": "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    "|obj-[0-9]{1,18})$",
}
_STATES: Final[frozenset[str]] = frozenset({"processing", "loaded", "failed", "retracted"})


def parse_upload_id(raw: str) -> uuid.UUID | int:
    """A UUID, or the ledger id of `obj-<n>`; ApiError 400 naming both forms otherwise."""
    text = raw.strip()
    found = _LEDGER_ID.fullmatch(text)
    if found is not None:
        return int(found.group(1))
    try:
        return uuid.UUID(text)
    except ValueError:
        raise ApiError(
            400, f"malformed upload id {raw!r}: expected a UUID or obj-<n> (an id from GET /uploads)"
        ) from None


async def find(request: web.Request, raw: str) -> sql.UploadRow:
    ref = parse_upload_id(raw)
    pool = request.app[POOL]
    row = await (sql.upload_by_ledger_id(pool, ref) if isinstance(ref, int) else sql.upload_status(pool, ref))
    if row is None:
        raise ApiError(404, f"no upload {raw.strip()}")
    return row


async def from_path(request: web.Request) -> sql.UploadRow:
    """The upload the path's `{id}` names: 400 when malformed, 404 when unknown."""
    return await find(request, request.match_info["id"])


def state(row: sql.UploadRow) -> UploadState:
    status = row.status
    if status is None:
        return "queued"
    if status not in _STATES:  # the ledger's CHECK constraint allows no other value
        raise ApiError(500, f"upload {row.id} has an unknown ledger status {status!r}")
    return status  # type: ignore[return-value]


def status_body(row: sql.UploadRow) -> UploadStatus:
    return UploadStatus(
        id=row.id,
        table=row.table_name,
        key=row.key,
        status=state(row),
        rows_loaded=row.rows_loaded or 0,
        rows_rejected=row.rows_rejected or 0,
        trace_id=row.trace_id,
        error=row.error,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        filename=row.filename,
        size_bytes=row.size_bytes,
        bucket=row.bucket,
        version=row.version,
        ledger_id=row.object_id,
        lines_done=row.lines_done or 0,
        bytes_done=row.bytes_done or 0,
    )
