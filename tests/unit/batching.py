"""Whole-file batching for tests: what the loader commits, without the I/O.

The loader feeds `BatchBuilder` from a streamed object (services/ingest/load.py); these helpers
feed it from records or chunks already in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from services.ingest.batches import Batch, BatchBuilder
from services.ingest.reader import CsvRecordReader, Record
from shared.dictionary import Table


def batches(
    table: Table, records: Iterable[Record], *, batch_rows: int, object_id: int = 0, order: int = 0
) -> Iterator[Batch]:
    """All batches of `records` (for callers that have every record at hand, such as tests)."""
    builder = BatchBuilder(table, batch_rows=batch_rows, object_id=object_id, order=order)
    for record in records:
        batch = builder.add(record)
        if batch is not None:
            yield batch
    batch = builder.flush()
    if batch is not None:
        yield batch


def read_batches(
    table: Table,
    chunks: Iterable[bytes],
    *,
    batch_rows: int,
    object_id: int = 0,
    order: int = 0,
    start_offset: int = 0,
    start_line: int = 0,
) -> Iterator[Batch]:
    """All batches of a file given as chunks of bytes: what the loader commits, without the I/O."""
    reader = CsvRecordReader(
        start_offset=start_offset, start_line=start_line, expected_fields=len(table.columns)
    )
    builder = BatchBuilder(table, batch_rows=batch_rows, object_id=object_id, order=order)
    for chunk in chunks:
        yield from builder.add_items(reader.feed_items(chunk))
    yield from builder.add_items(reader.finish())
    batch = builder.flush()
    if batch is not None:
        yield batch
