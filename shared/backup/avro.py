"""The Avro form of the data dictionary: one record schema per table (ints as `int`, text as `string`,
timestamps as `long` with logicalType `timestamp-micros`), and the CSV form a restore writes."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import IO, Any, Final

from shared.dictionary import TABLES, ColumnType, Table

NAMESPACE: Final = "hiring"
_AVRO_TYPES: Final[dict[ColumnType, Any]] = {
    "integer": "int",
    "text": "string",
    "timestamptz": {"type": "long", "logicalType": "timestamp-micros"},
}


def schema(table: Table) -> dict[str, Any]:
    """The Avro record schema of `table` (JSON-able; every field is required, as in the dictionary)."""
    return {
        "type": "record",
        "name": table.name,
        "namespace": NAMESPACE,
        "fields": [{"name": c.name, "type": _AVRO_TYPES[c.type]} for c in table.columns],
    }


def table_of_schema(found: Mapping[str, Any]) -> Table | None:
    """The table whose schema `found` is (as written in a manifest or an Avro file header), or None."""
    for table in TABLES.values():
        if same_schema(found, schema(table)):
            return table
    return None


def same_schema(found: Mapping[str, Any], expected: Mapping[str, Any]) -> bool:
    """Whether two record schemas have the same name and fields (names, types, logical types), in
    order; fastavro's parsed form (`hiring.jobs` as the name, extra keys) compares equal too."""
    if not isinstance(found, Mapping) or found.get("type") != "record":
        return False
    name = str(found.get("name", ""))
    if name not in (expected["name"], f"{NAMESPACE}.{expected['name']}"):
        return False
    fields = found.get("fields")
    if not isinstance(fields, list) or len(fields) != len(expected["fields"]):
        return False
    for got, want in zip(fields, expected["fields"], strict=True):
        if not isinstance(got, Mapping) or got.get("name") != want["name"]:
            return False
        if _type_of(got.get("type")) != _type_of(want["type"]):
            return False
    return True


def _type_of(value: Any) -> tuple[str, str | None]:
    if isinstance(value, Mapping):
        return str(value.get("type")), value.get("logicalType")
    return str(value), None


def csv_timestamp(value: datetime) -> str:
    """ISO 8601 in UTC with microseconds (`2021-07-27T16:02:08.000000Z`), four-digit years always."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def write_csv(table: Table, records: Iterable[Mapping[str, Any]], out: IO[str]) -> int:
    """The records as CSV lines: no header, the table's columns in dictionary order, RFC 4180
    quoting, CRLF line ends. Returns how many rows it wrote."""
    # CRLF: the csv module then quotes any field holding a CR or an LF (a lone CR ends a line too)
    writer = csv.writer(out, lineterminator="\r\n")
    names = table.column_names
    stamps = frozenset(c.name for c in table.columns if c.type == "timestamptz")
    count = 0
    for record in records:
        writer.writerow([csv_timestamp(record[n]) if n in stamps else record[n] for n in names])
        count += 1
    return count
