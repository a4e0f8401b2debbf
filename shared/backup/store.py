"""Where a backup lives: a local directory or an S3 prefix (`s3://bucket/prefix`), and the few
operations backup and restore need on either, streamed through files (never a whole file in memory)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any, Final

import msgspec
from botocore.exceptions import ClientError

PART_SIZE: Final = 8 * 1024 * 1024
_MISSING_CODES: Final = frozenset({"NoSuchKey", "404", "NotFound"})


class Location(msgspec.Struct, frozen=True):
    """A backup folder: `directory`, or `bucket` + `prefix` (no trailing slash; may be empty)."""

    directory: str | None = None
    bucket: str | None = None
    prefix: str = ""

    @property
    def is_s3(self) -> bool:
        return self.bucket is not None

    def child(self, name: str) -> Location:
        """The folder `name` inside this one."""
        if self.directory is not None:
            return Location(directory=str(Path(self.directory) / name))
        return Location(bucket=self.bucket, prefix=self.key(name))

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def __str__(self) -> str:
        if self.bucket is not None:
            return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        return str(self.directory)


def parse_location(text: str) -> Location:
    """`s3://bucket[/prefix]` or a directory path. Raises ValueError for a malformed S3 URL."""
    if text.startswith("s3://"):
        bucket, _, prefix = text[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"{text!r}: expected s3://bucket/prefix")
        return Location(bucket=bucket, prefix=prefix.strip("/"))
    if not text:
        raise ValueError("an empty path is not a backup folder")
    return Location(directory=text)


async def put_file(s3: Any, loc: Location, name: str, path: Path, content_type: str) -> None:
    """Put a local file into the folder (moved when the folder is a directory)."""
    if loc.directory is not None:
        target = Path(loc.directory) / name
        await asyncio.to_thread(os.replace if _same_fs(path, target) else shutil.move, path, target)
        return
    assert loc.bucket is not None
    key = loc.key(name)
    size = (await asyncio.to_thread(path.stat)).st_size
    if size <= PART_SIZE:
        data = await asyncio.to_thread(path.read_bytes)
        await s3.put_object(Bucket=loc.bucket, Key=key, Body=data, ContentType=content_type)
        return
    await upload_multipart(s3, loc.bucket, key, path, content_type=content_type, metadata={})


async def upload_multipart(
    s3: Any, bucket: str, key: str, path: Path, *, content_type: str, metadata: dict[str, str]
) -> None:
    """A local file as one S3 object, PART_SIZE at a time; aborted (nothing visible) on any error."""
    created = await s3.create_multipart_upload(
        Bucket=bucket, Key=key, ContentType=content_type, Metadata=metadata
    )
    upload_id = created["UploadId"]
    parts: list[dict[str, Any]] = []
    try:
        with path.open("rb") as f:
            while chunk := f.read(PART_SIZE):
                number = len(parts) + 1
                sent = await s3.upload_part(
                    Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk
                )
                parts.append({"PartNumber": number, "ETag": sent["ETag"]})
        if not parts:  # S3 wants at least one part
            sent = await s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"")
            parts.append({"PartNumber": 1, "ETag": sent["ETag"]})
        await s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    except BaseException:
        await asyncio.shield(s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id))
        raise


def _same_fs(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_dev == b.parent.stat().st_dev
    except OSError:
        return False


async def put_bytes(s3: Any, loc: Location, name: str, data: bytes, content_type: str) -> None:
    if loc.directory is not None:
        target = Path(loc.directory) / name
        partial = target.with_name(target.name + ".partial")
        await asyncio.to_thread(partial.write_bytes, data)
        os.replace(partial, target)
        return
    await s3.put_object(Bucket=loc.bucket, Key=loc.key(name), Body=data, ContentType=content_type)


async def get_bytes(s3: Any, loc: Location, name: str) -> bytes | None:
    """A small file's content (the manifest), None when it is not there."""
    if loc.directory is not None:
        path = Path(loc.directory) / name
        return await asyncio.to_thread(path.read_bytes) if path.is_file() else None
    try:
        resp = await s3.get_object(Bucket=loc.bucket, Key=loc.key(name))
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) in _MISSING_CODES:
            return None
        raise
    async with resp["Body"] as body:
        data: bytes = await body.read()
    return data


async def fetch_file(s3: Any, loc: Location, name: str, scratch: Path) -> Path | None:
    """A local path holding the file: the file itself in a directory, else a download into
    `scratch`; None when it is not there."""
    if loc.directory is not None:
        path = Path(loc.directory) / name
        return path if path.is_file() else None
    target = scratch / name
    try:
        resp = await s3.get_object(Bucket=loc.bucket, Key=loc.key(name))
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) in _MISSING_CODES:
            return None
        raise
    with target.open("wb") as f:
        async with resp["Body"] as body:
            async for chunk in body.iter_chunks(1024 * 1024):
                f.write(chunk)
    return target


async def list_folders(s3: Any, bucket: str, prefix: str) -> list[str]:
    """The names of the `folders` right under `prefix/` in a bucket."""
    names: list[str] = []
    paginator = s3.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/", Delimiter="/"):
        for common in page.get("CommonPrefixes", []):
            names.append(common["Prefix"][len(prefix) + 1 :].rstrip("/"))
    return names
