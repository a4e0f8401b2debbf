"""`hiring upload` (CONTRACT §7) and `hiring retract`: the client side of the load history.

`hiring upload PATH... [--table T] [--api URL | --bucket] [--wait]` sends files (and the CSV files in
folders) one after another, in the order given, so "later upload wins" means what the user typed:
- `--api URL` (default `$HIRING_API_URL`, else http://127.0.0.1:8080): `POST /upload` for a file up to
  `--presign-above` bytes (8 MiB, under API Gateway's 10 MB request limit), else presigned S3 part
  URLs from `POST /uploads/presigned`, so a big file never passes through the API. The API key, if
  the service has keys, comes from `$HIRING_API_KEY` (sent as `Authorization: Bearer`).
- `--bucket`: straight into the configured raw bucket (CONTRACT §3's variables), as any S3 tool
  would, with the upload's id in the object's `upload-id` metadata; followed in the ledger
  (`ingest_objects`, so the database settings are needed too).

A progress bar per file shows the bytes sent, then (with `--wait`) the bytes of the file the consumer
has committed and the rows loaded so far. A table per file ends it. Exit status: 0 when every file
loaded, 1 when any row was rejected, 2 when any file failed or could not be sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import msgspec
from rich import box
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn
from rich.table import Table

from shared.dictionary import TABLES, table_for_key

API_URL_VAR: Final = "HIRING_API_URL"
API_KEY_VAR: Final = "HIRING_API_KEY"
DEFAULT_API_URL: Final = "http://127.0.0.1:8080"
PRESIGN_ABOVE: Final = 8 * 1024 * 1024  # under API Gateway's 10 MB request limit
BUCKET_PART_SIZE: Final = 8 * 1024 * 1024
READ_SIZE: Final = 256 * 1024
PART_CONCURRENCY: Final = 4
POLL_SECONDS: Final = 0.5
CSV_SUFFIXES: Final = (".csv", ".csv.gz")
FINAL_STATES: Final = frozenset({"loaded", "failed", "retracted"})


class Exit(enum.IntEnum):
    LOADED = 0
    REJECTS = 1
    FAILED = 2


# ---- what to send ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalFile:
    path: Path
    name: str  # relative to the folder it was found in (or the file's own name): also its key's tail
    table: str | None  # None: no table could be told (the file is not sent)
    size: int


@dataclass(frozen=True)
class Unusable:
    path: str
    reason: str


def collect(paths: Sequence[str], table: str | None) -> tuple[list[LocalFile], list[Unusable]]:
    """The files to send, in order: each file named, then each folder's `*.csv` / `*.csv.gz`
    (any case) by sorted relative path. The table is `table`, else the one the relative path names
    (CONTRACT §2: first path segment or file name)."""
    found: list[LocalFile] = []
    bad: list[Unusable] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            members = sorted(
                p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(CSV_SUFFIXES)
            )
            if not members:
                bad.append(Unusable(text, "folder holds no .csv or .csv.gz file"))
            for member in members:
                found.append(_local(member, member.relative_to(path).as_posix(), table))
        elif path.is_file():
            found.append(_local(path, path.name, table))
        else:
            bad.append(Unusable(text, "no such file or folder"))
    return found, bad


def _local(path: Path, name: str, table: str | None) -> LocalFile:
    return LocalFile(path, name, table or table_for_key(name), path.stat().st_size)


# ---- progress and outcome -------------------------------------------------------------------------


@dataclass
class Outcome:
    file: LocalFile
    id: str | None = None
    key: str | None = None
    status: str = "not sent"
    rows_loaded: int = 0
    rows_rejected: int = 0
    error: str | None = None
    reasons: list[str] = field(default_factory=list)

    @property
    def code(self) -> Exit:
        if self.status in ("loaded", "queued", "processing") and self.error is None:
            return Exit.REJECTS if self.rows_rejected else Exit.LOADED
        return Exit.FAILED


Progressed = Callable[[int], None]  # bytes sent since the last call


class _Status(msgspec.Struct):
    id: str
    status: str
    rows_loaded: int = 0
    rows_rejected: int = 0
    error: str | None = None
    bytes_done: int = 0
    key: str = ""


# ---- through the API ------------------------------------------------------------------------------


class _Accepted(msgspec.Struct):
    id: str
    key: str
    status: str


class _AcceptedList(msgspec.Struct):
    uploads: list[_Accepted]


class _PresignedPart(msgspec.Struct):
    part_number: int
    url: str


class _Presigned(msgspec.Struct):
    id: str
    key: str
    part_size: int
    parts: list[_PresignedPart]


class _Reason(msgspec.Struct):
    reason: str
    count: int


class _Reasons(msgspec.Struct):
    reasons: list[_Reason]


class ApiError(Exception):
    """The API answered an error (its `error` text) or could not be reached."""


class Api:
    """The query API over HTTP, with the key from $HIRING_API_KEY when set."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, key: str | None) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}

    async def request(self, method: str, path: str, **kw: Any) -> tuple[int, bytes]:
        try:
            async with self._session.request(
                method, self._base + path, headers={**self._headers, **kw.pop("headers", {})}, **kw
            ) as resp:
                body = await resp.read()
        except aiohttp.ClientError as exc:
            raise ApiError(f"cannot reach {self._base}: {exc}") from None
        if resp.status >= 400:
            raise ApiError(f"{method} {path}: {resp.status} {_error_text(body)}")
        return resp.status, body

    async def send(
        self, file: LocalFile, table: str, progressed: Progressed, presign_above: int
    ) -> _Accepted:
        if file.size > presign_above:
            return await self._send_presigned(file, table, progressed)
        with aiohttp.MultipartWriter("form-data") as form:
            part = form.append_payload(
                aiohttp.payload.AsyncIterablePayload(
                    _read_chunks(file.path, progressed), content_type="text/csv"
                )
            )
            part.set_content_disposition("form-data", name="file", filename=Path(file.name).name)
            _, body = await self.request("POST", "/upload", params={"table": table}, data=form)
        return msgspec.json.decode(body, type=_AcceptedList).uploads[0]

    async def _send_presigned(self, file: LocalFile, table: str, progressed: Progressed) -> _Accepted:
        request = {"table": table, "filename": Path(file.name).name, "size_bytes": file.size}
        _, body = await self.request("POST", "/uploads/presigned", json=request)
        plan = msgspec.json.decode(body, type=_Presigned)
        limit = asyncio.Semaphore(PART_CONCURRENCY)

        async def put(part: _PresignedPart) -> None:
            offset = (part.part_number - 1) * plan.part_size
            async with limit:
                data = await asyncio.to_thread(_read_range, file.path, offset, plan.part_size)
                try:  # to S3 itself: the URL carries its signature, our API key must not go there
                    async with self._session.put(part.url, data=data) as resp:
                        if resp.status >= 300:
                            text = (await resp.text())[:300]
                            raise ApiError(f"part {part.part_number}: S3 answered {resp.status}: {text}")
                except aiohttp.ClientError as exc:
                    raise ApiError(f"part {part.part_number}: {exc}") from None
                progressed(len(data))

        await asyncio.gather(*(put(p) for p in plan.parts))
        _, body = await self.request("POST", f"/uploads/{plan.id}/complete")
        return msgspec.json.decode(body, type=_Accepted)

    async def status(self, upload_id: str) -> _Status:
        _, body = await self.request("GET", f"/uploads/{upload_id}")
        return msgspec.json.decode(body, type=_Status)

    async def reasons(self, upload_id: str) -> list[str]:
        _, body = await self.request("GET", f"/uploads/{upload_id}/rejects/reasons")
        return [f"{r.count} x {r.reason}" for r in msgspec.json.decode(body, type=_Reasons).reasons]


def _error_text(body: bytes) -> str:
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body[:300].decode("utf-8", "replace")
    return str(doc.get("error", doc)) if isinstance(doc, dict) else str(doc)


async def _read_chunks(path: Path, progressed: Progressed) -> AsyncIterator[bytes]:
    with path.open("rb") as fh:
        while chunk := await asyncio.to_thread(fh.read, READ_SIZE):
            progressed(len(chunk))
            yield chunk


def _read_range(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as fh:
        fh.seek(offset)
        return fh.read(size)


# ---- straight into the bucket ---------------------------------------------------------------------


class Bucket:
    """The raw bucket through aiobotocore, followed in the ledger (PostgreSQL)."""

    def __init__(self, s3: Any, bucket: str, pool: Any) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._pool = pool
        self._sent: dict[str, tuple[str, str | None]] = {}  # upload id -> (key, version)

    async def send(self, file: LocalFile, table: str, progressed: Progressed, part_size: int) -> _Accepted:
        upload_id = str(uuid.uuid4())
        # the table's prefix (the consumer takes the table from it), then the path as the user has it
        key = file.name if file.name.split("/", 1)[0] == table else f"{table}/{file.name}"
        meta = {"Metadata": {"upload-id": upload_id}, "ContentType": "text/csv"}
        if file.size <= part_size:
            data = await asyncio.to_thread(file.path.read_bytes)
            done = await self._s3.put_object(Bucket=self._bucket, Key=key, Body=data, **meta)
            progressed(len(data))
        else:
            done = await self._multipart(file, key, meta, progressed, part_size)
        self._sent[upload_id] = (key, done.get("VersionId"))
        return _Accepted(id=upload_id, key=key, status="queued")

    async def _multipart(
        self, file: LocalFile, key: str, meta: dict[str, Any], progressed: Progressed, part_size: int
    ) -> Any:
        created = await self._s3.create_multipart_upload(Bucket=self._bucket, Key=key, **meta)
        mpu = created["UploadId"]
        count = -(-file.size // part_size)
        limit = asyncio.Semaphore(PART_CONCURRENCY)

        async def put(number: int) -> dict[str, Any]:
            async with limit:
                data = await asyncio.to_thread(_read_range, file.path, (number - 1) * part_size, part_size)
                sent = await self._s3.upload_part(
                    Bucket=self._bucket, Key=key, UploadId=mpu, PartNumber=number, Body=data
                )
                progressed(len(data))
                return {"PartNumber": number, "ETag": sent["ETag"]}

        try:
            parts = await asyncio.gather(*(put(n) for n in range(1, count + 1)))
            return await self._s3.complete_multipart_upload(
                Bucket=self._bucket, Key=key, UploadId=mpu, MultipartUpload={"Parts": list(parts)}
            )
        except BaseException:
            await self._s3.abort_multipart_upload(Bucket=self._bucket, Key=key, UploadId=mpu)
            raise

    async def status(self, upload_id: str) -> _Status:
        key, version = self._sent[upload_id]
        row = await self._pool.fetchrow(
            "SELECT status, rows_loaded, rows_rejected, error, bytes_done FROM ingest_objects"
            " WHERE upload_id = $1::uuid OR (bucket = $2 AND key = $3 AND version = $4)"
            " ORDER BY id DESC LIMIT 1",
            upload_id,
            self._bucket,
            key,
            version,
        )
        if row is None:
            return _Status(id=upload_id, status="queued", key=key)
        return _Status(id=upload_id, key=key, **dict(row))

    async def reasons(self, upload_id: str) -> list[str]:
        return []  # the API's /rejects/reasons has them; here only the ledger's counts are read


# ---- the command ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadOptions:
    paths: tuple[str, ...]
    table: str | None = None
    api_url: str | None = None  # None with bucket=False: $HIRING_API_URL or the default
    bucket: bool = False
    wait: bool = False
    presign_above: int = PRESIGN_ABOVE
    part_size: int = BUCKET_PART_SIZE


Target = Api | Bucket


async def run_upload(opts: UploadOptions, env: Mapping[str, str], console: Console, err: Console) -> int:
    """Send, follow (with `wait`), print the table; the exit status."""
    files, unusable = collect(opts.paths, opts.table)
    outcomes = [Outcome(LocalFile(Path(u.path), u.path, None, 0), error=u.reason) for u in unusable]
    async with _target(opts, env) as target:
        with Progress(
            TextColumn("{task.description}", style="bold"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TextColumn("{task.fields[state]}"),
            console=err,
        ) as progress:
            mine: list[tuple[Outcome, TaskID]] = []
            for file in files:
                outcome = Outcome(file)
                outcomes.append(outcome)
                task = progress.add_task(file.name, total=max(file.size, 1), state="sending")
                mine.append((outcome, task))
                await _send_one(target, outcome, progress, task, opts)
            if opts.wait:
                await asyncio.gather(
                    *(
                        _follow(target, o, progress, t)
                        for o, t in mine
                        if o.id is not None and o.error is None
                    )
                )
    console.print(_table(outcomes, opts.wait))
    for line in _details(outcomes):
        console.print(line, highlight=False, markup=False)
    return max((o.code for o in outcomes), default=Exit.LOADED)


async def _send_one(
    target: Target, outcome: Outcome, progress: Progress, task: TaskID, opts: UploadOptions
) -> None:
    file = outcome.file
    if file.table is None:
        outcome.error = (
            f"cannot tell the table of {file.name!r}: name it after one of {', '.join(sorted(TABLES))}"
            " (or its folder), or pass --table"
        )
        progress.update(task, state="not sent")
        return
    if file.size == 0:
        outcome.error = "the file is empty"
        progress.update(task, state="not sent")
        return

    def progressed(n: int) -> None:
        progress.advance(task, n)

    try:
        if isinstance(target, Api):
            accepted = await target.send(file, file.table, progressed, opts.presign_above)
        else:
            accepted = await target.send(file, file.table, progressed, opts.part_size)
    except (ApiError, OSError) as exc:
        outcome.error = str(exc)
        progress.update(task, state="not sent")
        return
    except Exception as exc:  # botocore's errors, without importing botocore here
        outcome.error = f"{type(exc).__name__}: {exc}"
        progress.update(task, state="not sent")
        return
    outcome.id, outcome.key, outcome.status = accepted.id, accepted.key, accepted.status
    progress.update(task, completed=file.size, state=f"sent: {accepted.id}")


async def _follow(target: Target, outcome: Outcome, progress: Progress, task: TaskID) -> None:
    assert outcome.id is not None
    progress.reset(task, total=max(outcome.file.size, 1), state="queued")
    while True:
        try:
            status = await target.status(outcome.id)
        except ApiError as exc:
            outcome.error = str(exc)
            return
        outcome.status = status.status
        outcome.rows_loaded, outcome.rows_rejected = status.rows_loaded, status.rows_rejected
        progress.update(
            task,
            completed=status.bytes_done,
            state=f"{status.status}: {status.rows_loaded:,} rows loaded, {status.rows_rejected:,} rejected",
        )
        if status.status in FINAL_STATES:
            if status.status == "loaded":
                progress.update(task, completed=outcome.file.size)
            else:
                outcome.error = status.error or f"the upload was {status.status}"
            if status.rows_rejected:
                with contextlib.suppress(ApiError):  # the counts are there; the reasons are a courtesy
                    outcome.reasons = await target.reasons(outcome.id)
            return
        await asyncio.sleep(POLL_SECONDS)


def _table(outcomes: Sequence[Outcome], waited: bool) -> Table:
    """One row per file (ids whole: they are what a user copies); errors and reasons go below it."""
    table = Table(title="hiring upload", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("file", no_wrap=True)
    table.add_column("table", no_wrap=True)
    table.add_column("id", no_wrap=True, min_width=max((len(o.id or "") for o in outcomes), default=1))
    table.add_column("status", no_wrap=True, min_width=10)
    if waited:
        table.add_column("loaded", justify="right", no_wrap=True)
        table.add_column("rejected", justify="right", no_wrap=True)
    for o in outcomes:
        status = o.status if o.error is None or o.id else "not sent"
        row = [o.file.name, o.file.table or "-", o.id or "-", status]
        if waited:
            row += [f"{o.rows_loaded:,}", f"{o.rows_rejected:,}"]
        table.add_row(*row)
    return table


def _details(outcomes: Sequence[Outcome]) -> list[str]:
    """`file: error` or `file: reject reasons`, for the files that have any."""
    lines = []
    for o in outcomes:
        if o.error:
            lines.append(f"{o.file.name}: {o.error}")
        elif o.reasons:
            lines.append(f"{o.file.name}: rejected rows: {'; '.join(o.reasons)}")
    return lines


class _target:
    """The API or the bucket, opened for the command and closed after it."""

    def __init__(self, opts: UploadOptions, env: Mapping[str, str]) -> None:
        self._opts, self._env = opts, env
        self._close: list[Callable[[], Awaitable[Any]]] = []

    async def __aenter__(self) -> Target:
        if not self._opts.bucket:
            session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=30))
            self._close.append(session.close)
            url = self._opts.api_url or self._env.get(API_URL_VAR) or DEFAULT_API_URL
            return Api(session, url, self._env.get(API_KEY_VAR) or None)
        from shared import db
        from shared.aws import AwsClients
        from shared.config import load_settings

        settings = load_settings(self._env, service_name="hiring-upload")
        pool = await db.create_pool(settings.db, min_size=1, max_size=2)
        self._close.append(pool.close)
        clients = AwsClients(settings.aws)
        s3_cm = clients.s3()
        s3 = await s3_cm.__aenter__()
        self._close.append(lambda: s3_cm.__aexit__(None, None, None))
        return Bucket(s3, settings.bucket, pool)

    async def __aexit__(self, *exc: object) -> None:
        for close in reversed(self._close):
            await close()


def wide_console() -> Console:
    """stdout; not a terminal (a pipe, a file): wide enough that no cell is cut."""
    return Console(width=None if sys.stdout.isatty() else 240)


def main_upload(opts: UploadOptions) -> int:
    console = wide_console()
    err = Console(stderr=True)
    try:
        return asyncio.run(run_upload(opts, os.environ, console, err))
    except KeyboardInterrupt:
        return 130


# ---- hiring retract -------------------------------------------------------------------------------


async def run_retract(
    upload_id: str, api_url: str | None, wait: bool, env: Mapping[str, str], console: Console
) -> int:
    """`DELETE /uploads/{id}`; with `wait`, until its status is `retracted`. 0 done, 2 refused."""
    url = api_url or env.get(API_URL_VAR) or DEFAULT_API_URL
    async with aiohttp.ClientSession() as session:
        api = Api(session, url, env.get(API_KEY_VAR) or None)
        try:
            _, body = await api.request("DELETE", f"/uploads/{upload_id}")
            status = msgspec.json.decode(body, type=_Status)
            console.print(f"retracting {status.id} ({status.key}): the delete is in the bucket")
            while wait and status.status != "retracted":
                await asyncio.sleep(POLL_SECONDS)
                status = await api.status(upload_id)
        except ApiError as exc:
            print(f"hiring retract: {exc}", file=sys.stderr)
            return Exit.FAILED
    if status.status == "retracted":
        console.print(f"{status.id}: retracted")
    else:
        console.print(f"{status.id}: {status.status} until a consumer applies the delete, then retracted")
    return Exit.LOADED
