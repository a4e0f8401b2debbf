"""The batch rows API's request shapes (CONTRACT §4, `POST /tables/{table}/rows`): pure functions that
turn a request body into the CSV object the ingest consumer applies, or say why the body is not that
shape. Row validation is not here: the consumer validates every row by the data dictionary
(shared/dictionary.py) and keeps each invalid one with its reason.

A JSON body is an array of 1 to MAX_ROWS objects keyed by the table's column names; each value is a
string or a number (written as JSON wrote it, so `8.0` stays `8.0` and is rejected as an integer),
or null / absent (an empty field: rejected as empty). A text/csv body holds 1 to MAX_ROWS lines and
is stored as sent: its line numbers are the file's.
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import io
from collections.abc import Sequence
from typing import Any, Final

import msgspec

from shared.dictionary import Table

MAX_ROWS: Final = 1000
MAX_BODY_BYTES: Final = 8 * 1024 * 1024  # 1000 rows of a few KiB each; more is not a batch


class ShapeError(ValueError):
    """The body is not the shape the endpoint takes (400); str() says what is wrong."""


class TooManyRows(ValueError):
    """More than MAX_ROWS rows (413)."""


class BatchFile(msgspec.Struct, frozen=True):
    """The CSV object to write, and where each request row starts in it.

    `starts[i]` is the 1-based physical line where row i starts (a JSON row whose text holds a line
    end spans several lines); None for a CSV body, whose rows are named by their line numbers."""

    data: bytes
    rows: int
    starts: tuple[int, ...] | None


def request_digest(method: str, path: str, content_type: str, body: bytes) -> bytes:
    """SHA-256 of what makes two requests the same request (for Idempotency-Key)."""
    h = hashlib.sha256()
    for part in (method.encode(), path.encode(), content_type.encode()):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    h.update(body)
    return h.digest()


def _field(table: Table, row: int, column: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):  # a bool is an int to Python: refuse it before the int case
        raise ShapeError(f"row {row}: {column} is a JSON boolean; give a number or a string")
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return _number(value)
    kind = "an array" if isinstance(value, list) else "an object"
    raise ShapeError(f"row {row}: {column} is {kind}; give a number or a string")


def _number(value: int | float) -> str:
    if isinstance(value, int):
        return str(value)
    text = repr(value)  # 8.0 -> '8.0': the integer rule then rejects it, as it would in a file
    return text


def _encode_row(writer: Any, out: io.StringIO, fields: list[str]) -> str:
    out.seek(0)
    out.truncate()
    writer.writerow(fields)
    return out.getvalue()


def json_rows_to_csv(table: Table, body: bytes) -> BatchFile:
    """The rows of a JSON body as a CSV object (no header, the table's column order, RFC 4180
    quoting, CRLF line ends). Raises ShapeError (400) or TooManyRows (413)."""
    try:
        # floats as Decimal would lose nothing either, but the text JSON gave is what we want:
        # msgspec keeps ints exact (any size) and gives floats as Python floats (repr round-trips)
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise ShapeError(f"malformed JSON: {exc}") from None
    if not isinstance(decoded, list):
        raise ShapeError("the body must be a JSON array of row objects")
    if not decoded:
        raise ShapeError(f"no rows: send 1 to {MAX_ROWS} row objects")
    if len(decoded) > MAX_ROWS:
        raise TooManyRows(f"{len(decoded)} rows: a batch holds at most {MAX_ROWS}")
    columns = table.column_names
    known = frozenset(columns)
    out = io.StringIO()
    # CRLF line ends: the csv module quotes a field holding any character of the line terminator, and
    # the reader takes a lone CR for a line end, so a text with a CR must be quoted too
    writer = csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    parts: list[str] = []
    starts: list[int] = []
    line = 1
    for i, item in enumerate(decoded):
        if not isinstance(item, dict):
            raise ShapeError(f"row {i} is not a JSON object keyed by column names ({', '.join(columns)})")
        unknown = sorted(k for k in item if k not in known)
        if unknown:
            raise ShapeError(f"row {i}: unknown column {unknown[0]!r}: {table.name} has {', '.join(columns)}")
        text = _encode_row(writer, out, [_field(table, i, c, item.get(c)) for c in columns])
        parts.append(text)
        starts.append(line)
        line += _line_ends(text)
    return BatchFile("".join(parts).encode("utf-8", "surrogatepass"), len(decoded), tuple(starts))


def _line_ends(text: str) -> int:
    """Physical lines the reader counts in `text` (LF, CRLF or a lone CR each end one)."""
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def csv_body_rows(table: Table, body: bytes) -> BatchFile:
    """A text/csv body, stored as sent. Counts its rows (non-blank physical lines, without a header
    line of this table's column names) to enforce 1..MAX_ROWS. Raises ShapeError or TooManyRows."""
    if b"\x00" in body or body[:2] == b"\x1f\x8b":
        raise ShapeError("the body is binary (NUL bytes or gzip): send UTF-8 CSV text")
    text = body.decode("utf-8", errors="replace").removeprefix("\ufeff")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    rows = [ln for ln in lines if ln.strip()]
    if rows and _is_header(table, rows[0]):
        rows = rows[1:]
    if not rows:
        raise ShapeError(f"no rows: send 1 to {MAX_ROWS} CSV lines")
    if len(rows) > MAX_ROWS:
        raise TooManyRows(f"{len(rows)} lines: a batch holds at most {MAX_ROWS}")
    return BatchFile(body, len(rows), None)


def _is_header(table: Table, line: str) -> bool:
    try:
        fields = next(csv.reader([line]))
    except (csv.Error, StopIteration):
        return False
    return [f.strip().lower() for f in fields] == list(table.column_names)


def row_of_line(starts: Sequence[int] | None, line: int) -> int:
    """The request row a reject's line belongs to: its JSON array position, or the CSV line itself."""
    if starts is None:
        return line
    return max(0, bisect.bisect_right(starts, line) - 1)
