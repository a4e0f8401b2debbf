"""Every request and response body of the query API, as msgspec Structs (the OpenAPI document is built
from these)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

UploadState = Literal["queued", "processing", "loaded", "failed", "retracted"]


class ErrorBody(msgspec.Struct, frozen=True):
    """Every 4xx/5xx answer."""

    error: str


class Health(msgspec.Struct, frozen=True):
    status: Literal["ok"]


class Readiness(msgspec.Struct, frozen=True):
    """`/readyz`: each dependency is "ok" or "down: <why>"; `error` is set when one is down (503)."""

    status: Literal["ready", "not ready"]
    database: str
    bucket: str
    error: str | None = None


class HireRow(msgspec.Struct, frozen=True):
    """One department and job with its hires per UTC quarter of the year asked for."""

    department: str
    job: str
    Q1: int
    Q2: int
    Q3: int
    Q4: int


class DepartmentRow(msgspec.Struct, frozen=True):
    """A department that hired more than the mean of that year's hires over all departments."""

    id: int
    department: str
    hired: int


class UploadAccepted(msgspec.Struct, frozen=True):
    id: str
    table: str
    key: str
    status: UploadState


class UploadsAccepted(msgspec.Struct, frozen=True):
    """`POST /upload` (202): one entry per file, in request order."""

    uploads: list[UploadAccepted]


class UploadStatus(msgspec.Struct, frozen=True):
    """`GET /uploads/{id}`: the upload and the outcome of its latest ingestion."""

    id: str
    table: str | None  # None for an object whose key names no table (it failed with that reason)
    key: str
    status: UploadState
    rows_loaded: int
    rows_rejected: int
    trace_id: str | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    filename: str | None
    size_bytes: int | None
    # where it is in the bucket and the ledger (None while queued): the object version it stands for
    bucket: str | None = None
    version: str | None = None
    ledger_id: int | None = None  # ingest_objects.id
    lines_done: int = 0  # the committed checkpoint: physical lines and bytes of the file applied
    bytes_done: int = 0


class Reject(msgspec.Struct, frozen=True):
    line: int
    raw: str
    reason: str


class RejectsPage(msgspec.Struct, frozen=True):
    """`GET /uploads/{id}/rejects`: a page of rejected rows ordered by line; `next_offset` is null on the
    last page."""

    upload_id: str
    status: UploadState
    limit: int
    offset: int
    next_offset: int | None
    rejects: list[Reject]


class UploadsPage(msgspec.Struct, frozen=True):
    """`GET /uploads`: newest first; pass `next_after` as `?after=` for the next page (null: the last)."""

    limit: int
    next_after: str | None
    uploads: list[UploadStatus]


class ReasonCount(msgspec.Struct, frozen=True):
    """Rejects of one kind: the reason with the row's own values replaced by '…', how many rows, the
    first such line and the full reason given for it."""

    reason: str
    count: int
    first_line: int
    example: str


class RejectReasons(msgspec.Struct, frozen=True):
    """`GET /uploads/{id}/rejects/reasons`: the upload's rejects counted per kind, most frequent first."""

    upload_id: str
    status: UploadState
    rows_rejected: int
    reasons: list[ReasonCount]


class RowReject(msgspec.Struct, frozen=True):
    """A row of a batch that was not inserted: its position in the JSON array (from 0), or its line
    number in a text/csv body, and why."""

    row: int
    reason: str


class BatchResult(msgspec.Struct, frozen=True):
    """`POST /tables/{table}/rows` (201): the batch was applied; its valid rows are queryable. `id` is
    an upload id (`GET /uploads/{id}`, `/rejects`)."""

    id: str
    table: str
    rows_loaded: int
    rows_rejected: int
    rejects: list[RowReject]


class BatchPending(msgspec.Struct, frozen=True):
    """`POST /tables/{table}/rows` (202): the batch is in the bucket but no ingest consumer finished it
    in time; follow `GET /uploads/{id}`. A retry with the same Idempotency-Key waits for this batch
    again and never writes another."""

    id: str
    table: str
    status: UploadState
    detail: str


class BackupTable(msgspec.Struct, frozen=True):
    rows: int
    bytes: int
    sha256: str


class BackupInfo(msgspec.Struct, frozen=True):
    """A backup in the bucket's `backups/<id>/` prefix: one Avro file per table plus manifest.json.
    `ingest_object_id` is the last loaded upload (ledger id) it reflects."""

    id: str
    location: str
    created_at: datetime
    ingest_object_id: int | None
    tables: dict[str, BackupTable]


class BackupList(msgspec.Struct, frozen=True):
    """`GET /backups`: complete backups (those with a manifest), newest first."""

    backups: list[BackupInfo]


class BackupRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /backups` body (optional): the tables to back up, default all."""

    tables: list[str] | None = None


class RestoreRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /tables/{table}/restore` body: the id of a backup in the bucket (from `GET /backups`)."""

    backup: str


class RestoreResult(msgspec.Struct, frozen=True):
    """`POST /tables/{table}/restore`: 201 once the table holds the backup's rows (`status` loaded), or
    202 while the ingest consumer has not applied the snapshot yet; `id` is its upload id."""

    id: str
    table: str
    backup: str
    rows: int
    status: UploadState
    rows_loaded: int
