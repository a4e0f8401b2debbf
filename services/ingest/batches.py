"""Records -> batches of typed rows and rejects (pure; the loader commits each batch)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import msgspec

from services.ingest.reader import Record
from shared.dictionary import FieldError, Table, is_header, validate_fields


class RejectedRow(msgspec.Struct, array_like=True):
    line: int
    raw: str
    reason: str


class Batch(msgspec.Struct):
    rows: list[tuple[Any, ...]]  # typed values in column order, then the line number
    rejects: list[RejectedRow]
    skipped: int  # header and blank lines
    end_offset: int  # byte offset just past the batch's last record: the resume point
    end_line: int  # physical lines consumed up to end_offset


class BatchBuilder:
    """Collects records into batches of at most `batch_rows` loaded-or-rejected rows."""

    def __init__(self, table: Table, *, batch_rows: int) -> None:
        self._table = table
        self._batch_rows = batch_rows
        self._rows: list[tuple[Any, ...]] = []
        self._rejects: list[RejectedRow] = []
        self._skipped = 0
        self._last: Record | None = None

    def add(self, record: Record) -> Batch | None:
        """Take one record; return a full batch when this record completes one."""
        self._last = record
        if record.fields is None:
            self._rejects.append(RejectedRow(record.line, record.raw, record.error or "unreadable line"))
        elif not record.raw.strip():
            self._skipped += 1  # blank: neither loaded nor rejected
        elif record.line == 1 and is_header(record.fields):
            self._skipped += 1
        else:
            try:
                self._rows.append((*validate_fields(self._table, record.fields), record.line))
            except FieldError as exc:
                self._rejects.append(RejectedRow(record.line, record.raw, str(exc)))
        if len(self._rows) + len(self._rejects) >= self._batch_rows:
            return self.flush()
        return None

    def flush(self) -> Batch | None:
        """The batch of what was added since the last one, or None if nothing was."""
        last = self._last
        if last is None or not (self._rows or self._rejects or self._skipped):
            return None
        batch = Batch(self._rows, self._rejects, self._skipped, last.end_offset, last.end_line)
        self._rows, self._rejects, self._skipped = [], [], 0
        return batch


def batches(table: Table, records: Iterable[Record], *, batch_rows: int) -> Iterator[Batch]:
    """All batches of `records` (for callers that have every record at hand, such as tests)."""
    builder = BatchBuilder(table, batch_rows=batch_rows)
    for record in records:
        batch = builder.add(record)
        if batch is not None:
            yield batch
    batch = builder.flush()
    if batch is not None:
        yield batch
