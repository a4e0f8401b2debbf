"""`manifest.json`: what a backup holds, what it reflects, and how to check its files."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import msgspec

FORMAT: Final = "hiring-backup/1"
MANIFEST: Final = "manifest.json"


class TableEntry(msgspec.Struct, frozen=True):
    """One table's file: its name in the folder, rows, bytes, SHA-256 (hex), Avro schema, codec, and
    the upload-history position of that table (the greatest order_key of its loaded uploads)."""

    file: str
    rows: int
    bytes: int
    sha256: str
    schema: dict[str, Any]
    codec: str
    order_key: str | None


class History(msgspec.Struct, frozen=True):
    """The upload-history position the backup reflects, read in the same snapshot as the rows: the
    greatest ledger id (`ingest_objects.id`) of a loaded object, and the transaction snapshot."""

    ingest_object_id: int | None
    snapshot: str


class Manifest(msgspec.Struct, frozen=True):
    format: str
    id: str
    created_at: datetime
    database: str
    history: History
    tables: dict[str, TableEntry]


class ManifestError(ValueError):
    """manifest.json is not a readable backup manifest; str() says why."""


def encode(manifest: Manifest) -> bytes:
    return msgspec.json.format(msgspec.json.encode(manifest), indent=2) + b"\n"


def decode(data: bytes) -> Manifest:
    try:
        manifest = msgspec.json.decode(data, type=Manifest)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ManifestError(f"manifest.json is not a backup manifest: {exc}") from None
    if manifest.format != FORMAT:
        raise ManifestError(f"manifest.json has format {manifest.format!r}; this version reads {FORMAT!r}")
    return manifest
