"""The object store over S3: resolve the version an event names, and stream its bytes.

Events from S3 name a version by `versionId` (versioned buckets); events from emulators carry
none, so the version is found by the event's ETag: HEAD first, then the version listing when the
key was overwritten since. In a bucket without versioning the identity is the ETag plus the
event's sequencer (or time), and reads are pinned with If-Match so a newer object under the same
key is never read in its place.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import ClientError

from services.ingest.content import GZIP_MAGIC, ContentDecoder
from services.ingest.events import ObjectEvent
from services.ingest.ports import ListedVersion, ObjectGone, ObjectKind, ObjectVersion

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

_GONE_CODES: Final = {"NoSuchKey", "NoSuchVersion", "404", "NoSuchBucket", "PreconditionFailed", "412"}
_DENIED_CODES: Final = {"AccessDenied", "403", "InvalidObjectState"}
KIND_METADATA: Final = "hiring-kind"  # x-amz-meta-hiring-kind: snapshot marks a restore


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def unversioned_identity(event: ObjectEvent, etag: str | None) -> str:
    """The ledger identity of a version in a bucket without versioning: its content and event."""
    return f"etag:{etag}@{event.sequencer or event.event_time.strftime('%Y%m%dT%H%M%S.%f')}"


def _etag(head: dict[str, Any]) -> str | None:
    etag = head.get("ETag")
    return str(etag).strip('"') if etag else None


class S3ObjectStore:
    """ObjectStore (services/ingest/ports.py) over an aiobotocore S3 client."""

    def __init__(self, s3: S3Client, *, chunk_bytes: int = 16 << 10) -> None:
        self._s3 = s3
        # Small reads keep the event loop responsive: parsing one chunk is one uninterrupted slice
        # of CPU, and the batch being committed waits for the loop between its statements.
        self._chunk_bytes = chunk_bytes

    async def resolve(self, event: ObjectEvent) -> ObjectVersion:
        head = await self._head(event.bucket, event.key, event.version_id)
        if event.version_id is None and event.etag and _etag(head) != event.etag:
            head = await self._find_version(event)  # overwritten since: look among the versions
        vid = head.get("VersionId")
        vid = None if vid in (None, "null") else str(vid)
        etag = _etag(head) or event.etag
        metadata = {str(k).lower(): str(v) for k, v in (head.get("Metadata") or {}).items()}
        kind = ObjectKind.SNAPSHOT if metadata.get(KIND_METADATA) == "snapshot" else ObjectKind.FILE
        return ObjectVersion(
            bucket=event.bucket,
            key=event.key,
            version=vid or unversioned_identity(event, etag),
            s3_version_id=vid,
            etag=etag,
            size=head.get("ContentLength", event.size),
            metadata=metadata,
            kind=kind,
        )

    async def read(self, version: ObjectVersion, offset: int) -> AsyncIterator[bytes]:
        """The version's text from text offset `offset` on (services/ingest/content.py): gzip
        content decompressed while it streams, other binary content refused (UnreadableContent,
        an ObjectGone). A gzip object resumed mid-file is read again from its start and the text
        before `offset` dropped: a ranged GET cannot start inside a deflate stream."""
        if offset and not await self._starts_with(version, GZIP_MAGIC):
            if version.size is not None and offset >= version.size:
                return  # a plain object read to its end: nothing left (a range past it is an error)
            decoder, start = ContentDecoder(check=False), offset  # examined when it was read from 0
        else:
            decoder, start = ContentDecoder(skip=offset), 0
        async for chunk in self._get(version, start):
            for piece in decoder.feed(chunk):
                yield piece
        for piece in decoder.finish():
            yield piece

    async def _starts_with(self, version: ObjectVersion, magic: bytes) -> bool:
        head = b""
        async for chunk in self._get(version, 0, last=len(magic) - 1):
            head += chunk
        return head.startswith(magic)

    async def _get(
        self, version: ObjectVersion, offset: int, last: int | None = None
    ) -> AsyncIterator[bytes]:
        """The stored bytes from `offset` (to `last`, inclusive), as they are."""
        kwargs: dict[str, Any] = {"Bucket": version.bucket, "Key": version.key}
        if version.s3_version_id:
            kwargs["VersionId"] = version.s3_version_id
        elif version.etag:
            kwargs["IfMatch"] = version.etag  # unversioned: never read a newer object under this key
        if offset or last is not None:
            kwargs["Range"] = f"bytes={offset}-{'' if last is None else last}"
        try:
            resp = await self._s3.get_object(**kwargs)
        except ClientError as exc:
            code = _error_code(exc)
            if code in _GONE_CODES or code in _DENIED_CODES:
                raise ObjectGone(
                    f"object s3://{version.bucket}/{version.key} cannot be read: {code}"
                ) from exc
            raise
        async with resp["Body"] as body:
            async for chunk in body.iter_chunks(self._chunk_bytes):
                yield chunk

    async def _head(self, bucket: str, key: str, version_id: str | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if version_id:
            kwargs["VersionId"] = version_id
        try:
            return dict(await self._s3.head_object(**kwargs))
        except ClientError as exc:
            code = _error_code(exc)
            if code in _GONE_CODES:
                raise ObjectGone(f"object s3://{bucket}/{key} no longer exists ({code})") from exc
            if code in _DENIED_CODES:
                raise ObjectGone(f"object s3://{bucket}/{key} cannot be read: {code}") from exc
            raise

    async def _find_version(self, event: ObjectEvent) -> dict[str, Any]:
        paginator = self._s3.get_paginator("list_object_versions")
        async for page in paginator.paginate(Bucket=event.bucket, Prefix=event.key):
            for v in page.get("Versions", []):
                if v.get("Key") == event.key and str(v.get("ETag", "")).strip('"') == event.etag:
                    return await self._head(event.bucket, event.key, v.get("VersionId"))
        raise ObjectGone(
            f"object s3://{event.bucket}/{event.key} with ETag {event.etag} is no longer in the bucket"
        )

    async def visible_versions(self, bucket: str, prefix: str = "") -> list[ListedVersion]:
        versions: list[ListedVersion] = []
        markers: dict[str, datetime] = {}  # key -> its latest delete marker
        paginator = self._s3.get_paginator("list_object_versions")
        async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for m in page.get("DeleteMarkers", []):
                when = m["LastModified"].astimezone(UTC)
                markers[m["Key"]] = max(when, markers.get(m["Key"], when))
            for v in page.get("Versions", []):
                vid = v.get("VersionId")
                versions.append(
                    ListedVersion(
                        bucket=bucket,
                        key=v["Key"],
                        version_id=None if vid in (None, "null") else str(vid),
                        etag=str(v.get("ETag", "")).strip('"') or None,
                        size=v.get("Size"),
                        last_modified=v["LastModified"].astimezone(UTC),
                    )
                )
        # A version is hidden by a delete marker made after it (S3 lists times to the millisecond;
        # a version and a marker of the same instant: the marker, made by a later request, wins).
        return [v for v in versions if v.key not in markers or v.last_modified > markers[v.key]]
