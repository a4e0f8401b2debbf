"""Incremental CSV record reader: bytes in, records out, with exact line numbers and byte offsets.

Pure and synchronous: the loader feeds it chunks as they stream from S3, so memory stays bounded
by one chunk plus one record, whatever the file's size (a line longer than MAX_RECORD_BYTES is
skipped to its end and rejected, not buffered). RFC 4180 quoting is honoured (a quoted field may
span lines); each record keeps its raw text and the byte offset just past it, so a resumed read can
start exactly at a committed record boundary.

Lines end in LF, CRLF or a lone CR (old Mac exports; CONTRACT §1): a CR not followed by LF ends a
line, except inside a quoted field, where any line end is part of the field's text (as Python's
csv module reads it). A CR that is the last byte fed so far waits for the next byte: CR LF is one
line end.

`feed_items` gives the bulk of a file as `Block`s: runs of whole lines that need no CSV parsing
(no quote character, or quotes only around whole fields without quotes, commas or line ends in
them), validated many lines at a time (services/ingest/batches.py). Any other line, and whatever
follows an open quoted field, comes as a `Record`. `feed` gives everything as records (the same
records: one per line of a block).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator

import msgspec

BOM = b"\xef\xbb\xbf"
# A stray quote must not swallow the rest of a file: a record still open after this many lines
# (or bytes) is rejected line by line instead.
MAX_RECORD_LINES = 64
MAX_RECORD_BYTES = 1 << 20
# What a reject keeps of a line longer than MAX_RECORD_BYTES.
LONG_LINE_KEEP = 4096

UNBALANCED = "unbalanced quote: a quoted field is never closed"

# A record whose quoted fields are all closed: a quote opens a quoted field only at the start of a
# field (elsewhere it is an ordinary character); inside one, "" is a quote and " closes it.
_FIELD = rb'(?>"(?:[^"]|"")*+"[^,]*|[^,"][^,]*|)'
_CLOSED_RECORD = re.compile(_FIELD + rb"(?:," + _FIELD + rb")*")
# Whole lines whose quotes, if any, only wrap whole fields holding no quote, comma or line end.
# A lone CR ends such a line only when the byte after it is known (and is not LF).
_SIMPLE_FIELD = rb'(?:"[^",\r\n]*"|[^",\r\n]*)'
_SIMPLE_EOL = rb"(?:\r\n|\r(?=[^\n])|\n)"
_SIMPLE_LINES = re.compile(
    rb"(?:" + _SIMPLE_FIELD + rb"(?:," + _SIMPLE_FIELD + rb")*" + _SIMPLE_EOL + rb")*+"
)
_EOL = re.compile(rb"\r\n?|\n")
_LONE_CR = re.compile(rb"\r(?!\n)")


class Record(msgspec.Struct):
    line: int  # 1-based physical line where the record starts
    raw: str  # the record's text without its line end (lossy where bytes were not UTF-8)
    fields: list[str] | None  # None when the record could not be parsed: see `error`
    error: str | None
    end_offset: int  # byte offset in the object just past this record
    end_line: int  # last physical line of the record


class Block(msgspec.Struct):
    """Whole physical lines, no quoted field open before them, and each line one record: either no
    quote in any line, or (`quoted`) quotes only around whole fields that hold no quote, comma or
    line end, so that dropping every quote character leaves the fields' text."""

    data: bytes  # the lines' bytes, each ending in LF or CRLF: a lone CR line end is given as LF

    first_line: int  # 1-based line number of the block's first line
    start_offset: int  # byte offset of data[0] in the object
    lines: int  # how many lines: data.count(b"\n")
    quoted: bool = False

    @property
    def end_offset(self) -> int:
        return self.start_offset + len(self.data)

    @property
    def end_line(self) -> int:
        return self.first_line + self.lines - 1

    def records(self) -> Iterator[Record]:
        """The block's lines as records (what `CsvRecordReader.feed` gives for them)."""
        offset = self.start_offset
        for number, line in enumerate(self.data.split(b"\n")[:-1], start=self.first_line):
            offset += len(line) + 1
            yield make_record(line + b"\n", number, number, offset)


Item = Block | Record


class CsvRecordReader:
    """Feed bytes with `feed_items` (or `feed`), then `finish`; all yield items in file order.

    `expected_fields`, when given, lets a multi-line record that does not parse into that many
    fields be taken for what it almost always is, a stray quote: its first line is rejected and
    the lines after it are read afresh, so one bad quote never costs the valid rows after it.
    """

    def __init__(
        self, *, start_offset: int = 0, start_line: int = 0, expected_fields: int | None = None
    ) -> None:
        self._buf = b""
        self._offset = start_offset  # byte offset of self._buf[0] in the object
        self._line = start_line  # physical lines consumed before self._buf
        self._at_start = start_offset == 0
        self._expected = expected_fields
        # physical lines (with their line ends) of a record whose quoted field is still open
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        # a line longer than MAX_RECORD_BYTES being skipped: its first bytes, and its length so far
        self._long: bytes | None = None
        self._long_bytes = 0

    def feed(self, chunk: bytes) -> Iterator[Record]:
        for item in self.feed_items(chunk):
            if isinstance(item, Block):
                yield from item.records()
            else:
                yield item

    def feed_items(self, chunk: bytes) -> Iterator[Item]:
        buf = self._buf + chunk if self._buf else chunk
        self._buf = b""
        if self._at_start:
            if len(buf) < len(BOM) and BOM.startswith(buf):
                self._buf = buf
                return
            if buf.startswith(BOM):
                buf = buf[len(BOM) :]
                self._offset += len(BOM)
            self._at_start = False
        start, size = 0, len(buf)
        while start < size:
            if self._long is not None:
                end = _line_end(buf, start)
                if end < 0:
                    held = 1 if buf.endswith(b"\r") else 0  # an LF may follow: keep the CR
                    self._long_bytes += size - held - start
                    start = size - held
                    break
                self._long_bytes += end - start
                start = end
                yield self._long_record()
                continue
            if self._pending:
                end = _line_end(buf, start)
                if end < 0:
                    break
                yield from self._line_in(buf[start:end])
                start = end
                continue
            quote = buf.find(b'"', start)
            last = _last_line_end(buf, start, quote if quote >= 0 else size)
            if last >= 0:  # whole lines before the first quote: a block
                yield self._block(buf[start:last])
                start = last
                continue
            if quote < 0:
                break  # no whole line left
            simple = _SIMPLE_LINES.match(buf, start)
            if simple is not None and simple.end() > start:  # quotes around plain fields only
                yield self._block(buf[start : simple.end()], quoted=True)
                start = simple.end()
                continue
            end = _line_end(buf, quote)
            if end < 0:
                break
            yield from self._line_in(buf[start:end])
            start = end
        rest = buf[start:]
        if len(rest) > MAX_RECORD_BYTES and self._long is None:
            # No line end in sight: skip to it rather than hold the line in memory.
            while self._pending:
                yield from self._reject_first_pending(UNBALANCED)
            held = 1 if rest.endswith(b"\r") else 0  # an LF may follow: keep the CR
            self._long, self._long_bytes = rest[:LONG_LINE_KEEP], len(rest) - held
            rest = rest[len(rest) - held :]
        self._buf = rest

    def finish(self) -> Iterator[Record]:
        if self._at_start and self._buf:  # a file shorter than a BOM
            self._at_start = False
        if self._long is not None:
            yield self._long_record()
        elif self._buf:  # the last line, without a line end or with a CR held back
            last, self._buf = self._buf, b""
            yield from self._line_in(last)
        while self._pending:  # an unterminated quote at end of file
            yield from self._reject_first_pending(UNBALANCED)

    # ---- internals ------------------------------------------------------------------------------

    def _block(self, data: bytes, *, quoted: bool = False) -> Block:
        crs = data.count(b"\r")
        if crs:  # lone CR line ends become LF: the same length, so offsets hold
            crlfs = data.count(b"\r\n")
            if not crlfs:
                data = data.replace(b"\r", b"\n")
            elif crlfs != crs:
                data = _LONE_CR.sub(b"\n", data)
        lines = data.count(b"\n")
        block = Block(data, self._line + 1, self._offset, lines, quoted)
        self._line += lines
        self._offset += len(data)
        return block

    def _long_record(self) -> Record:
        assert self._long is not None
        kept, length = self._long, self._long_bytes
        self._long, self._long_bytes = None, 0
        self._line += 1
        self._offset += length
        raw = kept.decode("utf-8", errors="replace")
        reason = (
            f"line is {length} bytes long, more than the {MAX_RECORD_BYTES} a row may have"
            f" (raw text cut to its first {LONG_LINE_KEEP} bytes)"
        )
        return Record(self._line, raw, None, reason, self._offset, self._line)

    def _line_in(self, line: bytes) -> Iterator[Record]:
        if self._pending:
            self._pending.append(line)
            self._pending_bytes += len(line)
            data = b"".join(self._pending)
            if _CLOSED_RECORD.fullmatch(data.rstrip(b"\r\n")):
                if not self._makes_a_row(data):
                    # Not a record spanning lines but a stray quote: reject its line only.
                    end = self._line + len(self._pending)
                    yield from self._reject_first_pending(
                        f"unbalanced quote: the quoted field opened here is closed only on line {end},"
                        f" which does not make a row of {self._expected} fields"
                    )
                    return
                record = self._record(self._pending)
                self._pending, self._pending_bytes = [], 0
                yield record
            elif len(self._pending) >= MAX_RECORD_LINES or self._pending_bytes > MAX_RECORD_BYTES:
                yield from self._reject_first_pending(UNBALANCED)
            return
        if b'"' in line and not _CLOSED_RECORD.fullmatch(line.rstrip(b"\r\n")):
            self._pending, self._pending_bytes = [line], len(line)
            return
        yield self._record([line])

    def _makes_a_row(self, data: bytes) -> bool:
        """Whether a closed multi-line record parses into the expected number of fields."""
        if self._expected is None:
            return True
        try:
            rows = list(csv.reader([_strip_line_end(data.decode("utf-8", errors="replace"))], strict=True))
        except csv.Error:
            return False
        return len(rows) == 1 and len(rows[0]) == self._expected

    def _reject_first_pending(self, reason: str) -> Iterator[Record]:
        first, rest = self._pending[0], self._pending[1:]
        self._pending, self._pending_bytes = [], 0
        raw, _ = _decode(first)
        self._line += 1
        self._offset += len(first)
        yield Record(self._line, _strip_line_end(raw), None, reason, self._offset, self._line)
        for line in rest:  # parse what follows afresh: the stray quote may have been the only problem
            yield from self._line_in(line)

    def _record(self, lines: list[bytes]) -> Record:
        first_line = self._line + 1
        self._line += len(lines)
        self._offset += sum(map(len, lines))
        data = lines[0] if len(lines) == 1 else b"".join(lines)
        return make_record(data, first_line, self._line, self._offset)


def make_record(data: bytes, first_line: int, end_line: int, end_offset: int) -> Record:
    """The record of `data`: one or more whole physical lines, with their line ends."""
    text, bad = _decode(data)
    raw = _strip_line_end(text)
    if bad:
        return Record(first_line, raw, None, bad, end_offset, end_line)
    if '"' not in raw:
        fields = raw.split(",") if raw else []
        return Record(first_line, raw, fields, None, end_offset, end_line)
    try:
        rows = list(csv.reader([raw], strict=True))
    except csv.Error as exc:
        return Record(first_line, raw, None, f"malformed CSV quoting: {exc}", end_offset, end_line)
    if len(rows) != 1:
        return Record(first_line, raw, None, "malformed CSV quoting", end_offset, end_line)
    return Record(first_line, raw, rows[0], None, end_offset, end_line)


def _strip_line_end(text: str) -> str:
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith(("\n", "\r")):
        return text[:-1]
    return text


def _line_end(buf: bytes, start: int) -> int:
    """The position just past the first line end at or after `start`, or -1 if none is known yet
    (none, or a CR that is the last byte: an LF may follow)."""
    m = _EOL.search(buf, start)
    if m is None or (m.end() == len(buf) and buf[-1] == 0x0D):
        return -1
    return m.end()


def _last_line_end(buf: bytes, start: int, stop: int) -> int:
    """The position just past the last line end in buf[start:stop], or -1 (as `_line_end`)."""
    lf = buf.rfind(b"\n", start, stop)
    cr = buf.rfind(b"\r", lf + 1 if lf >= start else start, stop)
    if cr < 0:
        return lf + 1 if lf >= 0 else -1
    if cr + 1 < len(buf):  # a lone CR: what follows it is not an LF (else lf would be past it)
        return cr + 1
    return _last_line_end(buf, start, cr)  # the last byte: an LF may follow


def _decode(data: bytes) -> tuple[str, str | None]:
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return (
            data.decode("utf-8", errors="replace"),
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at column {exc.start + 1})",
        )
