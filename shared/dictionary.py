"""The data dictionary (CONTRACT §1) and key routing (CONTRACT §2): pure functions, no I/O."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
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
    (`jobs.csv`, `hired_employees_2021-07.csv`).
    """
    parts = [p for p in key.split("/") if p]
    if not parts:
        return None
    if len(parts) > 1 and parts[0] in TABLES:
        return parts[0]
    stem = parts[-1]
    if "." in stem:
        stem = stem.rsplit(".", 1)[0]
    stem = stem.lower()
    for name in _BY_LENGTH:
        if stem.startswith(name):
            return name
    return None


def is_csv_key(key: str) -> bool:
    return key.lower().endswith(".csv")


# ---- field validation -------------------------------------------------------------------------

_INT_RE: Final = re.compile(r"-?[0-9]+")
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
# Date, 'T' or space, time with optional fraction, optional Z or ±HH:MM / ±HHMM / ±HH offset.
_TS_RE: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?"
    r"(Z|z|[+-]\d{2}(?::?\d{2})?)?"
)


class FieldError(ValueError):
    """A field failed validation; str() is a reason a person can act on."""


def parse_int(column: str, text: str) -> int:
    if not text:
        raise FieldError(f"{column} is empty")
    if not _INT_RE.fullmatch(text):
        raise FieldError(f"{column} {text!r} is not an integer")
    value = int(text)
    if not _INT_MIN <= value <= _INT_MAX:
        raise FieldError(f"{column} {text!r} does not fit in 32 bits")
    return value


def parse_text(column: str, text: str) -> str:
    if not text:
        raise FieldError(f"{column} is empty")
    return text


def parse_timestamp(column: str, text: str) -> datetime:
    if not text:
        raise FieldError(f"{column} is empty")
    m = _TS_RE.fullmatch(text)
    if m is None:
        raise FieldError(f"{column} {text!r} is not an ISO 8601 date and time")
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
    from datetime import timedelta, timezone

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


def validate_fields(table: Table, fields: list[str]) -> tuple[Value, ...]:
    """Trimmed, typed values of one row, or FieldError with the row's first problem(s)."""
    if len(fields) != len(table.columns):
        raise FieldError(
            f"expected {len(table.columns)} fields ({', '.join(table.column_names)}), got {len(fields)}"
        )
    values: list[Value] = []
    problems: list[str] = []
    for column, raw in zip(table.columns, fields, strict=True):
        try:
            values.append(_PARSERS[column.type](column.name, raw.strip()))
        except FieldError as exc:
            problems.append(str(exc))
    if problems:
        raise FieldError("; ".join(problems))
    return tuple(values)


def is_header(fields: list[str]) -> bool:
    return bool(fields) and fields[0].strip().lower() == "id"
