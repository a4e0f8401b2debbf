"""Incremental CSV record reader: bytes in, records out, with exact line numbers and byte offsets.

Pure and synchronous: the loader feeds it chunks as they stream from S3, so memory stays bounded
by one chunk plus one record, whatever the file's size. RFC 4180 quoting is honoured (a quoted
field may span lines); each record keeps its raw text and the byte offset just past it, so a
resumed read can start exactly at a committed record boundary.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator

import msgspec

BOM = b"\xef\xbb\xbf"
# A stray quote must not swallow the rest of a file: a record still open after this many lines
# is rejected line by line instead.
MAX_RECORD_LINES = 64
MAX_RECORD_BYTES = 1 << 20


class Record(msgspec.Struct):
    line: int  # 1-based physical line where the record starts
    raw: str  # the record's text without its line end (lossy where bytes were not UTF-8)
    fields: list[str] | None  # None when the record could not be parsed: see `error`
    error: str | None
    end_offset: int  # byte offset in the object just past this record
    end_line: int  # last physical line of the record


class CsvRecordReader:
    """Feed bytes with `feed`, then `finish`; both yield complete records in order."""

    def __init__(self, *, start_offset: int = 0, start_line: int = 0) -> None:
        self._buf = b""
        self._offset = start_offset  # byte offset of self._buf[0] in the object
        self._line = start_line  # physical lines consumed before self._buf
        self._at_start = start_offset == 0
        # physical lines of an open quoted record: (line bytes incl. end, offset after it)
        self._pending: list[bytes] = []

    def feed(self, chunk: bytes) -> Iterator[Record]:
        buf = self._buf + chunk if self._buf else chunk
        if self._at_start:
            if len(buf) < len(BOM) and BOM.startswith(buf):
                self._buf = buf
                return
            if buf.startswith(BOM):
                buf = buf[len(BOM) :]
                self._offset += len(BOM)
            self._at_start = False
        start = 0
        find = buf.find
        while True:
            nl = find(b"\n", start)
            if nl < 0:
                break
            yield from self._line_in(buf[start : nl + 1])
            start = nl + 1
        self._buf = buf[start:]

    def finish(self) -> Iterator[Record]:
        if self._at_start and self._buf:  # a file shorter than a BOM
            self._at_start = False
        if self._buf:
            last, self._buf = self._buf, b""
            yield from self._line_in(last)
        while self._pending:  # an unterminated quote at end of file
            yield from self._reject_first_pending("unbalanced quote: a quoted field is never closed")

    def _line_in(self, line: bytes) -> Iterator[Record]:
        if self._pending:
            self._pending.append(line)
            if _quotes_balanced(self._pending):
                yield self._record(self._pending)
                self._pending = []
            elif len(self._pending) >= MAX_RECORD_LINES or sum(map(len, self._pending)) > MAX_RECORD_BYTES:
                yield from self._reject_first_pending("unbalanced quote: a quoted field is never closed")
            return
        if b'"' in line and line.count(b'"') % 2:
            self._pending = [line]
            return
        yield self._record([line])

    def _reject_first_pending(self, reason: str) -> Iterator[Record]:
        first, rest = self._pending[0], self._pending[1:]
        self._pending = []
        raw, _ = _decode(first)
        self._line += 1
        self._offset += len(first)
        yield Record(self._line, raw, None, reason, self._offset, self._line)
        for line in rest:  # parse what follows afresh: the stray quote may have been the only problem
            yield from self._line_in(line)

    def _record(self, lines: list[bytes]) -> Record:
        first_line = self._line + 1
        self._line += len(lines)
        self._offset += sum(map(len, lines))
        data = lines[0] if len(lines) == 1 else b"".join(lines)
        text, bad = _decode(data)
        raw = text.rstrip("\r\n") if text.endswith("\n") else text
        if bad:
            return Record(first_line, raw, None, bad, self._offset, self._line)
        if '"' not in raw:
            fields = raw.split(",") if raw else []
            return Record(first_line, raw, fields, None, self._offset, self._line)
        try:
            rows = list(csv.reader([raw], strict=True)) if "\n" not in raw else _parse_multiline(raw)
        except csv.Error as exc:
            return Record(first_line, raw, None, f"malformed CSV quoting: {exc}", self._offset, self._line)
        if len(rows) != 1:
            return Record(first_line, raw, None, "malformed CSV quoting", self._offset, self._line)
        return Record(first_line, raw, rows[0], None, self._offset, self._line)


def _parse_multiline(raw: str) -> list[list[str]]:
    return list(csv.reader(raw.splitlines(keepends=True), strict=True))


def _quotes_balanced(lines: list[bytes]) -> bool:
    return sum(line.count(b'"') for line in lines) % 2 == 0


def _decode(data: bytes) -> tuple[str, str | None]:
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return (
            data.decode("utf-8", errors="replace"),
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at column {exc.start + 1})",
        )


def is_blank(raw: str) -> bool:
    return not raw.strip()
