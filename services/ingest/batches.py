"""Records and blocks -> batches of COPY-ready rows and rejects (pure; the loader commits each batch).

A batch's rows are PostgreSQL COPY input in text format with ',' as the delimiter (COPY_FORMAT,
COPY_DELIMITER), one line per row: the table's columns, then src_object, src_line and src_order
(copy_columns): the row's provenance, which decides upload order (services/ingest/order.py). A
line of a block that shared.dictionary's fast pattern matches goes in as its own bytes (less any quotes
around whole fields) plus that suffix, so the common row costs no per-field work in Python; any
other line (a comma or quote inside a quoted field, padding, odd types, invalid) is validated field
by field, and its typed values are written out with COPY's escapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, Final

import msgspec

from services.ingest.reader import Block, Item, Record, make_record
from shared.dictionary import (
    FieldError,
    Table,
    Value,
    fast_lines_pattern,
    header_problem,
    is_header,
    validate_fields,
)

# For asyncpg's copy_to_table: COPY ... FROM STDIN (FORMAT text, DELIMITER ',').
COPY_FORMAT: Final = "text"
COPY_DELIMITER: Final = ","
# In text format only the delimiter, backslash, LF and CR need escaping.
_ESCAPES: Final = str.maketrans({"\\": "\\\\", ",": "\\,", "\n": "\\n", "\r": "\\r"})
# A typed value as COPY text: integers as digits, timestamps in ISO 8601 with their offset (UTC).
_ENCODERS: Final[dict[str, Callable[[Any], str]]] = {
    "integer": str,
    "text": lambda value: value.translate(_ESCAPES),
    "timestamptz": datetime.isoformat,
}


def copy_columns(table: Table) -> list[str]:
    """The columns of a batch's COPY rows, in order."""
    return [*table.column_names, "src_object", "src_line", "src_order"]


class RejectedRow(msgspec.Struct, array_like=True):
    line: int
    raw: str
    reason: str


class Batch(msgspec.Struct):
    copy_data: bytes  # the rows, as COPY text (see the module docstring)
    row_count: int
    rejects: list[RejectedRow]
    skipped: int  # header and blank lines
    end_offset: int  # byte offset just past the batch's last record: the resume point
    end_line: int  # physical lines consumed up to end_offset


class BatchBuilder:
    """Collects records and blocks into batches of at most `batch_rows` loaded-or-rejected rows.

    Every row gets the provenance suffix `,<object_id>,<line>,<order>`: `order` is the upload time
    of the object in microseconds (services/ingest/order.py, order_time).
    """

    def __init__(self, table: Table, *, batch_rows: int, object_id: int = 0, order: int = 0) -> None:
        if batch_rows < 1:
            raise ValueError("batch_rows must be at least 1")
        self._table = table
        self._batch_rows = batch_rows
        self._match = fast_lines_pattern(table).match
        self._encoders = [_ENCODERS[c.type] for c in table.columns]
        self._prefix = f",{object_id},"
        self._suffix = f",{order}\n"
        self._format = (b"%b," + str(object_id).encode() + b",%d," + str(order).encode() + b"\n").__mod__
        self._parts: list[bytes] = []
        self._count = 0
        self._rejects: list[RejectedRow] = []
        self._skipped = 0
        self._end: tuple[int, int] | None = None  # (offset, line) just past what was added

    def add_items(self, items: Iterable[Item]) -> Iterator[Batch]:
        """Take a reader's items; yield each batch as it fills."""
        for item in items:
            if isinstance(item, Block):
                yield from self.add_block(item)
            elif (batch := self.add(item)) is not None:
                yield batch

    def add(self, record: Record) -> Batch | None:
        """Take one record; return a full batch when this record completes one."""
        self._end = (record.end_offset, record.end_line)
        if record.fields is None:
            self._reject(record.line, record.raw, record.error or "unreadable line")
        elif not record.raw.strip():
            self._skipped += 1  # blank: neither loaded nor rejected
        elif record.line == 1 and is_header(self._table, record.fields):
            self._skipped += 1
        else:
            try:
                values = validate_fields(self._table, record.fields)
            except FieldError as exc:
                header = header_problem(self._table, record.fields, first=record.line == 1)
                self._reject(record.line, record.raw, header or str(exc))
            else:
                self._parts.append(self._encode(values, record.line))
                self._count += 1
        if self._count + len(self._rejects) >= self._batch_rows:
            return self.flush()
        return None

    def add_block(self, block: Block) -> Iterator[Batch]:
        """Take a block of lines; yield each batch it completes."""
        data = block.data
        fields = data.replace(b'"', b"") if block.quoted else data  # the fields' text (see Block)
        # surrogateescape: one character per undecodable byte, which the fast pattern refuses
        text = fields.decode("utf-8", errors="surrogateescape")
        lines = data.split(b"\n")  # as they are in the file: offsets, and the full path
        if b"\r" in fields:
            copy_lines = fields.replace(b"\r\n", b"\n").split(b"\n")
        else:
            copy_lines = fields.split(b"\n") if block.quoted else lines
        match, fmt, first = self._match, self._format, block.first_line
        offset = block.start_offset  # of line i
        i = pos = 0  # the next line: its index in the block and its position in `text`
        while i < block.lines:
            m = match(text, pos)  # always matches, if only the empty string
            run_end = m.end() if m else pos
            good = text.count("\n", pos, run_end)  # lines taken as they stand
            while good:
                j = i + min(good, self._batch_rows - self._count - len(self._rejects))
                self._parts.append(
                    b"".join(map(fmt, zip(copy_lines[i:j], range(first + i, first + j), strict=True)))
                )
                self._count += j - i
                offset += sum(map(len, lines[i:j])) + (j - i)
                good -= j - i
                i = j
                self._end = (offset, first + i - 1)
                if self._count + len(self._rejects) >= self._batch_rows:
                    batch = self.flush()
                    assert batch is not None
                    yield batch
            if i >= block.lines:
                break
            # line i is not plainly valid: the full path decides, and says why if it is not valid
            offset += len(lines[i]) + 1
            record = make_record(lines[i] + b"\n", first + i, first + i, offset)
            i += 1
            pos = text.index("\n", run_end) + 1
            if (batch := self.add(record)) is not None:
                yield batch

    def flush(self) -> Batch | None:
        """The batch of what was added since the last one, or None if nothing was."""
        if self._end is None or not (self._count or self._rejects or self._skipped):
            return None
        end_offset, end_line = self._end
        data = b"".join(self._parts)
        batch = Batch(data, self._count, self._rejects, self._skipped, end_offset, end_line)
        self._parts, self._count, self._rejects, self._skipped = [], 0, [], 0
        return batch

    def _reject(self, line: int, raw: str, reason: str) -> None:
        # PostgreSQL text cannot hold NUL: such a line is kept with U+FFFD in its place
        self._rejects.append(RejectedRow(line, raw.replace("\x00", "\ufffd"), reason))

    def _encode(self, values: tuple[Value, ...], line: int) -> bytes:
        fields = [encode(value) for encode, value in zip(self._encoders, values, strict=True)]
        return f"{','.join(fields)}{self._prefix}{line}{self._suffix}".encode()
