"""The data dictionary (CONTRACT §1) and key routing (CONTRACT §2): pure functions, no I/O."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Final, Literal

import msgspec

ColumnType = Literal["integer", "text", "timestamptz"]


class Column(msgspec.Struct, frozen=True):
    name: str
    type: ColumnType


class Table(msgspec.Struct, frozen=True):
    name: str
    columns: tuple[Column, ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


TABLES: Final[dict[str, Table]] = {
    "hired_employees": Table(
        "hired_employees",
        (
            Column("id", "integer"),
            Column("name", "text"),
            Column("datetime", "timestamptz"),
            Column("department_id", "integer"),
            Column("job_id", "integer"),
        ),
    ),
    "departments": Table("departments", (Column("id", "integer"), Column("department", "text"))),
    "jobs": Table("jobs", (Column("id", "integer"), Column("job", "text"))),
}

# Longest first, so a stem like "hired_employees_2021" is not mistaken for a shorter table name.
_BY_LENGTH: Final = sorted(TABLES, key=len, reverse=True)


def table_for_key(key: str) -> str | None:
    """The table an object key (or an uploaded file name) belongs to, or None.

    The first path segment when it names a table (`hired_employees/2021/07.csv`), else the file
    name's stem when it starts with a table name
    (`jobs.csv`, `hired_employees_2021-07.csv`, `jobs.csv.gz`).
    """
    parts = [p for p in key.split("/") if p]
    if not parts:
        return None
    if len(parts) > 1 and parts[0] in TABLES:
        return parts[0]
    stem = parts[-1].lower().removesuffix(".gz")
    if "." in stem:
        stem = stem.rsplit(".", 1)[0]
    for name in _BY_LENGTH:
        if stem.startswith(name):
            return name
    return None


def is_csv_key(key: str) -> bool:
    """Whether the key names a CSV file, plain or gzip-compressed (`.csv`, `.csv.gz`, any case)."""
    return key.lower().endswith((".csv", ".csv.gz"))


# Keys under this prefix of the raw bucket hold backups (CONTRACT §6): never ingested, never replayed.
BACKUP_PREFIX: Final = "backups/"


def is_backup_key(key: str) -> bool:
    return key.startswith(BACKUP_PREFIX)


def is_gzip_key(key: str) -> bool:
    return key.lower().endswith(".gz")


# ---- field validation -------------------------------------------------------------------------
#
# Two paths, one rule set. `validate_fields` is the reference: it takes one row's fields and gives
# typed values or the reasons the row is invalid. `fast_lines_pattern` matches runs of whole lines
# that are plainly valid (the common shape of every field), so the loader can hand their bytes to
# PostgreSQL's COPY unchanged; any line it does not match goes through `validate_fields`. The fast
# pattern therefore accepts a subset of what `validate_fields` accepts, and only text whose value
# PostgreSQL reads exactly as `validate_fields` does (tests/unit/test_validation.py pins both).

_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
# Date, 'T' or space, time with optional fraction, optional Z or ±HH:MM / ±HHMM / ±HH offset.
# ASCII digits only: `\d` would also take other scripts' digits, which int() reads but no one means.
_TS_RE: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[T ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:[.,]([0-9]{1,9}))?"
    r"(Z|z|[+-][0-9]{2}(?::?[0-9]{2})?)?"
)
_TS_EXAMPLE: Final = "e.g. 2021-07-27T16:02:08Z"


class FieldError(ValueError):
    """A field failed validation; str() is a reason a person can act on."""


def parse_int(column: str, text: str) -> int:
    if not text:
        raise FieldError(f"{column} is empty")
    digits = text[1:] if text[0] == "-" else text
    # isdigit() alone would take '²' or '٣'; the ASCII set is what the contract allows
    if not digits or not digits.isascii() or not digits.isdigit():
        raise FieldError(f"{column} {text!r} is not an integer (only digits, with an optional leading '-')")
    value = int(text)
    if not _INT_MIN <= value <= _INT_MAX:
        raise FieldError(f"{column} {text!r} does not fit in 32 bits ({_INT_MIN} to {_INT_MAX})")
    return value


def parse_text(column: str, text: str) -> str:
    if not text:
        raise FieldError(f"{column} is empty")
    if "\x00" in text:
        raise FieldError(f"{column} contains a NUL character (U+0000), which the database cannot store")
    return text


_COMMON_TS: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


def _fast_timestamp(text: str) -> datetime | None:
    """`YYYY-MM-DDTHH:MM:SSZ`, the shape of nearly every value, read by the C parser; else None."""
    if _COMMON_TS.fullmatch(text) and text[11:13] < "24":  # some Pythons read 24:00 as midnight
        try:
            return datetime.fromisoformat(text)  # this exact shape means the same to both parsers
        except ValueError:
            return None  # an impossible date or time: the full parser says why
    return None


def parse_timestamp(column: str, text: str) -> datetime:
    if not text:
        raise FieldError(f"{column} is empty")
    fast = _fast_timestamp(text)
    if fast is not None:
        return fast
    m = _TS_RE.fullmatch(text)
    if m is None:
        raise FieldError(f"{column} {text!r} is not an ISO 8601 date and time ({_TS_EXAMPLE})")
    year, month, day, hour, minute, second, frac, tz = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    try:
        value = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro)
    except ValueError as exc:
        raise FieldError(f"{column} {text!r} is not a valid date and time ({exc})") from None
    if tz is None or tz in ("Z", "z"):
        return value.replace(tzinfo=UTC)
    sign = -1 if tz[0] == "-" else 1
    digits = tz[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:4] or "0")
    if hours > 23 or minutes > 59:
        raise FieldError(f"{column} {text!r} has an invalid UTC offset")
    offset = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        return value.replace(tzinfo=offset).astimezone(UTC)
    except OverflowError:
        raise FieldError(f"{column} {text!r} is out of range in UTC") from None


Value = int | str | datetime
_PARSERS: Final[dict[str, Callable[[str, str], Value]]] = {
    "integer": parse_int,
    "text": parse_text,
    "timestamptz": parse_timestamp,
}


@functools.cache
def _plan(table: Table) -> tuple[tuple[str, Callable[[str, str], Value]], ...]:
    return tuple((c.name, _PARSERS[c.type]) for c in table.columns)


def validate_fields(table: Table, fields: list[str]) -> tuple[Value, ...]:
    """Trimmed, typed values of one row, or FieldError with the row's problems, all of them."""
    plan = _plan(table)
    if len(fields) != len(plan):
        raise FieldError(
            f"expected {len(table.columns)} fields ({', '.join(table.column_names)}), got {len(fields)}"
        )
    try:
        return tuple([parse(name, raw.strip()) for (name, parse), raw in zip(plan, fields, strict=True)])
    except FieldError:
        pass
    problems: list[str] = []  # again, field by field, to name every problem
    for (name, parse), raw in zip(plan, fields, strict=True):
        try:
            parse(name, raw.strip())
        except FieldError as exc:
            problems.append(str(exc))
    raise FieldError("; ".join(problems))


# The fast path's shapes (str patterns: `\s` is Unicode whitespace, exactly what str.strip() trims).
# integer: at most 9 digits, so it always fits in 32 bits.
_FAST_INT: Final = r"-?[0-9]{1,9}"
# text: no surrounding whitespace (nothing to trim), no quote or comma (the line is not quoted),
# no backslash (COPY's escape character), no CR, NUL or lone surrogate (undecodable bytes).
_FAST_TEXT_END: Final = r'[^\s",\\\x00\ud800-\udfff]'
_FAST_TEXT: Final = _FAST_TEXT_END + r'(?:[^",\\\r\n\x00\ud800-\udfff]*' + _FAST_TEXT_END + ")?"
# timestamptz: years 1000-2999 (no overflow in UTC, no year 0), real calendar dates (29 February
# in leap years only), 00:00:00-23:59:59, at most 6 fractional digits (no rounding), and Z, no
# offset (UTC: the COPY session's time zone is UTC) or ±HH:MM up to 14:59.
_FAST_LEAP_DAY: Final = r"(?:[12][0-9](?:0[48]|[2468][048]|[13579][26])|(?:12|16|20|24|28)00)-02-29"
_FAST_DATE: Final = (
    r"(?:[12][0-9]{3}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)"
    r"|(?:0[13578]|1[02])-31)|" + _FAST_LEAP_DAY + ")"
)
_FAST_TIME: Final = (
    r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?(?:Z|[+-](?:0[0-9]|1[0-4]):[0-5][0-9])?"
)
_FAST: Final[dict[str, str]] = {
    "integer": _FAST_INT,
    "text": _FAST_TEXT,
    "timestamptz": _FAST_DATE + "[T ]" + _FAST_TIME,
}


@functools.cache
def fast_lines_pattern(table: Table) -> re.Pattern[str]:
    """Matches a run (possibly empty) of whole lines, each ending in LF or CRLF, that are valid
    rows of `table` as they stand: every field already trimmed, plainly typed, unquoted.

    A line this matches is accepted by `validate_fields`, and PostgreSQL's COPY (text format,
    delimiter ',', session time zone UTC) reads its fields as exactly the values `validate_fields`
    gives. Lines it stops at may still be valid: they take the full path.
    """
    line = ",".join(_FAST[c.type] for c in table.columns)
    return re.compile(f"(?:{line}\\r?\\n)*+")  # possessive: whole lines, never given back


def is_header(table: Table, fields: list[str]) -> bool:
    """Whether a file's first line is `table`'s header: its fields, trimmed, are exactly the
    table's column names, in order, in any case (CONTRACT §1). Any other first line is data."""
    names = table.column_names
    return len(fields) == len(names) and all(
        f.strip().lower() == n for f, n in zip(fields, names, strict=True)
    )


def header_problem(table: Table, fields: list[str], *, first: bool) -> str | None:
    """Why an invalid line of a `table` file looks like a header, or None if it does not.

    A line looks like a header when each of its non-empty fields, trimmed, is a column name of some
    table: the header of another table, a header with a column missing, added, misspelt into
    another's or followed by an empty field, or this table's header after the first line. Such a
    line is data, and invalid: this reason says more than the validation errors of its fields.
    """
    if is_header(table, fields):
        return None if first else "a header line, but only a file's first line is taken for its header"
    cleaned = [f.strip().lower() for f in fields]
    for other in TABLES.values():
        if other.name != table.name and tuple(cleaned) == other.column_names:
            return (
                f"a header of table {other.name} ({', '.join(other.column_names)}),"
                f" not of {table.name} ({', '.join(table.column_names)})"
            )
    known = {name for t in TABLES.values() for name in t.column_names}
    present = [f for f in cleaned if f]
    if present and all(f in known for f in present):
        return (
            f"looks like a header, but a header of {table.name} is exactly its column names"
            f" ({', '.join(table.column_names)}, in any case); this line has {len(fields)}"
            f" field{'' if len(fields) == 1 else 's'}: {', '.join(repr(f) for f in fields)}"
        )
    return None
