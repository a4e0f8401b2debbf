"""Streaming one file into the raw bucket without holding it in memory: an S3 multipart upload of
8 MiB parts (the last may be smaller), completed only when the caller says so, aborted otherwise."""

from __future__ import annotations

from typing import Any, Final

import structlog

log = structlog.get_logger()

PART_SIZE: Final = 8 * 1024 * 1024


class ObjectWriter:
    """`write()` chunks, `finish()` sends the last part, `complete()` makes the object visible (and so
    sends the bucket's event); `discard()` undoes whatever was done. Nothing is created before the
    first byte, so an empty file costs no S3 call."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        key: str,
        *,
        metadata: dict[str, str],
        content_type: str = "text/csv",
        part_size: int = PART_SIZE,
    ) -> None:
        self._s3 = s3
        self.bucket = bucket
        self.key = key
        self._metadata = metadata
        self._content_type = content_type
        self._part_size = part_size
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._completed = False
        self._version_id: str | None = None  # of the completed object, in a versioned bucket
        self.size = 0

    async def write(self, data: bytes) -> None:
        self.size += len(data)
        self._buffer += data
        while len(self._buffer) >= self._part_size:
            chunk = bytes(self._buffer[: self._part_size])
            del self._buffer[: self._part_size]
            await self._send_part(chunk)

    async def finish(self) -> None:
        """Send what is buffered as the last part (all bytes are then in S3, not yet visible)."""
        if self._buffer:
            chunk = bytes(self._buffer)
            self._buffer.clear()
            await self._send_part(chunk)

    async def complete(self) -> None:
        if self._upload_id is None:
            raise RuntimeError("nothing was written")
        done = await self._s3.complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self._upload_id, MultipartUpload={"Parts": self._parts}
        )
        self._completed = True
        self._version_id = done.get("VersionId")

    async def discard(self) -> None:
        """Abort the multipart upload, or delete the object (its version, in a versioned bucket) if it
        was completed; never raises."""
        try:
            if self._completed and self._version_id:
                await self._s3.delete_object(Bucket=self.bucket, Key=self.key, VersionId=self._version_id)
            elif self._completed:
                await self._s3.delete_object(Bucket=self.bucket, Key=self.key)
            elif self._upload_id is not None:
                await self._s3.abort_multipart_upload(
                    Bucket=self.bucket, Key=self.key, UploadId=self._upload_id
                )
        except Exception as exc:
            log.error("upload.discard_failed", bucket=self.bucket, key=self.key, error=str(exc))
        self._buffer.clear()

    async def _send_part(self, chunk: bytes) -> None:
        if self._upload_id is None:
            created = await self._s3.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, Metadata=self._metadata, ContentType=self._content_type
            )
            self._upload_id = created["UploadId"]
        number = len(self._parts) + 1
        sent = await self._s3.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self._upload_id, PartNumber=number, Body=chunk
        )
        self._parts.append({"PartNumber": number, "ETag": sent["ETag"]})
