"""`POST /backups`, `GET /backups` and `POST /tables/{table}/restore` (CONTRACT §6, admin scope).

Backups go into the raw bucket's `backups/<id>/` prefix (which the ingest consumer never ingests),
written by shared/backup, the code `hiring backup` runs too. `POST /backups` answers once the backup
is complete (201); a client that goes away does not stop it halfway. For large tables on a schedule,
`hiring backup` as an ECS task is the better fit (deploy/terraform/backup.tf).

A restore checks the backup first (manifest, schema, size, SHA-256, every record): a backup that is
not there is 404, one that does not pass is 422 with the reason, and nothing changes. Then it writes
the table's snapshot object into the raw bucket and waits (HIRING_RESTORE_WAIT_SECONDS, 120) for the
ingest consumer to apply it: 201 once applied, else 202 with the upload id to follow.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from pathlib import Path
from typing import Final

import msgspec
import structlog
from aiohttp import web
from botocore.exceptions import BotoCoreError, ClientError

from services.query.endpoints import Endpoint, Param
from services.query.errors import ApiError
from services.query.http import json_response
from services.query.schemas import (
    BackupInfo,
    BackupList,
    BackupRequest,
    BackupTable,
    ErrorBody,
    RestoreRequest,
    RestoreResult,
)
from services.query.state import OPTIONS, POOL, S3, SETTINGS
from shared.backup import manifest, restore
from shared.backup.backup import write_backup
from shared.backup.store import Location, get_bytes, list_folders
from shared.dictionary import TABLES

log = structlog.get_logger()

PREFIX: Final = "backups"
_BACKUP_ID: Final = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,99}")
_MAX_BODY: Final = 64 * 1024


def _location(request: web.Request, backup_id: str) -> Location:
    return Location(bucket=request.app[SETTINGS].bucket, prefix=f"{PREFIX}/{backup_id}")


def _info(request: web.Request, made: manifest.Manifest) -> BackupInfo:
    return BackupInfo(
        id=made.id,
        location=str(_location(request, made.id)),
        created_at=made.created_at,
        ingest_object_id=made.history.ingest_object_id,
        tables={n: BackupTable(rows=e.rows, bytes=e.bytes, sha256=e.sha256) for n, e in made.tables.items()},
    )


async def _body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > _MAX_BODY:
        raise ApiError(413, f"the body is more than {_MAX_BODY} bytes")
    body = await request.content.read(_MAX_BODY + 1)
    if len(body) > _MAX_BODY:
        raise ApiError(413, f"the body is more than {_MAX_BODY} bytes")
    return body


async def create_backup(request: web.Request) -> web.Response:
    body = await _body(request)
    tables: list[str] = list(TABLES)
    if body.strip():
        try:
            asked = msgspec.json.decode(body, type=BackupRequest)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ApiError(
                400, f'malformed body: {exc}; expected {{"tables": ["jobs", ...]}} or none'
            ) from None
        if asked.tables is not None:
            unknown = [t for t in asked.tables if t not in TABLES]
            if unknown or not asked.tables:
                raise ApiError(400, f"tables must name some of {', '.join(sorted(TABLES))}")
            tables = list(dict.fromkeys(asked.tables))
    app = request.app

    async def run() -> manifest.Manifest:
        from shared.backup.backup import new_backup_id

        backup_id = new_backup_id()
        async with app[POOL].acquire() as conn:
            return await write_backup(
                conn,
                app[S3],
                Location(bucket=app[SETTINGS].bucket, prefix=f"{PREFIX}/{backup_id}"),
                tables,
                backup_id=backup_id,
            )

    try:
        made = await asyncio.shield(asyncio.ensure_future(run()))  # a client leaving does not cut it short
    except (BotoCoreError, ClientError) as exc:
        log.error("backup.storage_failed", error=str(exc))
        raise ApiError(502, f"the bucket did not take the backup: {exc}") from None
    return json_response(_info(request, made), status=201)


async def list_backups(request: web.Request) -> web.Response:
    s3 = request.app[S3]
    bucket = request.app[SETTINGS].bucket
    found: list[BackupInfo] = []
    for name in await list_folders(s3, bucket, PREFIX):
        data = await get_bytes(s3, Location(bucket=bucket, prefix=f"{PREFIX}/{name}"), manifest.MANIFEST)
        if data is None:
            continue  # being written, or not a backup
        try:
            found.append(_info(request, manifest.decode(data)))
        except manifest.ManifestError as exc:
            log.warning("backup.unreadable_manifest", backup=name, error=str(exc))
    found.sort(key=lambda b: b.created_at, reverse=True)
    return json_response(BackupList(backups=found))


async def restore_table(request: web.Request) -> web.Response:
    name = request.match_info["table"]
    if name not in TABLES:
        raise ApiError(404, f"no table {name!r}: the tables are {', '.join(sorted(TABLES))}")
    try:
        asked = msgspec.json.decode(await _body(request), type=RestoreRequest)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ApiError(400, f'malformed body: {exc}; expected {{"backup": "<backup id>"}}') from None
    if not _BACKUP_ID.fullmatch(asked.backup):
        raise ApiError(400, f"malformed backup id {asked.backup!r}")
    app = request.app
    source = _location(request, asked.backup)
    if await get_bytes(app[S3], source, manifest.MANIFEST) is None:
        raise ApiError(404, f"no backup {asked.backup!r} in s3://{app[SETTINGS].bucket}/{PREFIX}/")

    async def run() -> tuple[str, restore.Prepared, restore.Outcome]:
        with tempfile.TemporaryDirectory(prefix="hiring-restore-") as scratch:
            prepared = await restore.prepare(app[S3], source, name, Path(scratch))
            restore_id, key = await restore.submit(app[S3], app[POOL], app[SETTINGS].bucket, prepared)
        log.info("restore.submitted", restore_id=str(restore_id), table=name, backup=asked.backup, key=key)
        outcome = await restore.wait(app[POOL], restore_id, app[OPTIONS].restore_wait_seconds)
        return str(restore_id), prepared, outcome

    try:
        restore_id, prepared, outcome = await asyncio.shield(asyncio.ensure_future(run()))
    except restore.Refused as exc:
        raise ApiError(422, f"backup {asked.backup} cannot be restored: {exc}") from None
    except (BotoCoreError, ClientError) as exc:
        log.error("restore.storage_failed", error=str(exc))
        raise ApiError(502, f"the bucket did not answer: {exc}") from None
    if outcome.status == "failed":
        raise ApiError(422, f"restore {restore_id} failed: {outcome.error or 'no reason recorded'}")
    done = outcome.status == "loaded"
    body = RestoreResult(
        id=restore_id,
        table=name,
        backup=prepared.backup_id,
        rows=prepared.rows,
        status="loaded" if done else ("queued" if outcome.status is None else "processing"),
        rows_loaded=outcome.rows_loaded,
    )
    response = json_response(body, status=201 if done else 202)
    response.headers["Location"] = f"/uploads/{restore_id}"
    return response


_ERRORS: Final = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 413: ErrorBody}

ENDPOINTS: Final = (
    Endpoint(
        "POST",
        "/backups",
        create_backup,
        "Back up tables as Avro files plus manifest.json into the bucket's backups/<id>/ prefix",
        scope="admin",
        responses={201: BackupInfo, **_ERRORS, 502: ErrorBody},
        request_body={
            "application/json": {
                "type": "object",
                "properties": {
                    "tables": {"type": "array", "items": {"type": "string", "enum": sorted(TABLES)}}
                },
                "description": "optional: the tables to back up (default all)",
            }
        },
    ),
    Endpoint(
        "GET",
        "/backups",
        list_backups,
        "The complete backups in the bucket, newest first",
        scope="admin",
        responses={200: BackupList, 401: ErrorBody, 403: ErrorBody},
    ),
    Endpoint(
        "POST",
        "/tables/{table}/restore",
        restore_table,
        "Replace a table with its rows in a backup (checked first); answers once applied",
        scope="admin",
        responses={201: RestoreResult, 202: RestoreResult, **_ERRORS, 404: ErrorBody, 422: ErrorBody},
        params=(
            Param("table", "path", {"type": "string", "enum": sorted(TABLES)}, "the table to restore", True),
        ),
        request_body={
            "application/json": {
                "type": "object",
                "required": ["backup"],
                "properties": {"backup": {"type": "string", "description": "a backup id from GET /backups"}},
            }
        },
    ),
)
