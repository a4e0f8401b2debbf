"""Hypothesis property tests over arbitrary bytes for the reader, the batch builder and the validators
(issue 8's fault suite; pure, no server).

For any bytes, in any chunking, with any batch size:
- no exception escapes;
- every byte and every line is accounted for: the last batch ends at the end of the input, its
  line count is the input's physical lines (LF, CRLF or lone CR), and rows loaded + rejected +
  header and blank lines = records read (a record is one line, or several when a quoted field
  spans them);
- every reject keeps its line, raw text and a non-empty reason;
- a row is loaded only if validate_fields accepts it, with the values COPY reads;
- the chunking, the batch size and the path (fast pattern or field by field) change nothing.
"""

from __future__ import annotations

import itertools
import re

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from services.ingest.reader import BOM, CsvRecordReader, Record
from shared.dictionary import TABLES, FieldError, Table, fast_lines_pattern, validate_fields
from tests.unit.batching import batches, read_batches
from tests.unit.test_reader import Outcome, decode_copy

_EOL = re.compile(rb"\r\n|\r|\n")

# Pieces that make CSV-like text with every hazard: quotes, line ends of every kind, padding, BOMs,
# headers, NULs, bytes that are not UTF-8, values of every type, valid and not.
_TOKENS = [
    b"1",
    b"42",
    b"-7",
    b"007",
    b"2147483648",
    b"x",
    b"Ana",
    b"Jos\xc3\xa9",
    b"\xff",
    b"\x00",
    b"\\",
    b",",
    b",",
    b",",
    b'"',
    b'""',
    b"\n",
    b"\n",
    b"\r\n",
    b"\r",
    b" ",
    b"\t",
    BOM,
    b"2021-07-27T16:02:08Z",
    b"2021-07-27 16:02:08.5+05:30",
    b"2021-02-30T00:00:00Z",
    b"2021-07-27",
    b"id",
    b"job",
    b"department",
    b"name",
    b"datetime",
    b"department_id",
    b"job_id",
    b"id,job\n",
    b"ID,Job\r",
    b"id,department\r\n",
    b"id,name,datetime,department_id,job_id\r",
]
_ROWS = [
    b"%d,Ana,2021-07-27T16:02:08Z,1,2",
    b'%d,"Ruiz, Ana",2021-07-27T16:02:08Z,1,2',
    b"%d,Dev",
    b'%d,"D\r\nev"',
    b'"%d","Quoted","2021-07-27T16:02:08Z","1","2"',
    b"%d, Padded ,2021-07-27 16:02:08,01,2",
]
csv_like = st.lists(
    st.one_of(
        st.sampled_from(_TOKENS),
        st.tuples(st.sampled_from(_ROWS), st.integers(-5, 99)).map(
            lambda t: t[0] % t[1] if b"%d" in t[0] else t[0]
        ),
    ),
    max_size=80,
).map(b"".join)
any_bytes = st.one_of(st.binary(max_size=400), csv_like)
tables = st.sampled_from(list(TABLES.values()))


def physical_lines(data: bytes) -> int:
    """Lines in the bytes, counted independently of the reader: LF, CRLF or lone CR each end one."""
    if data.startswith(BOM):
        data = data[len(BOM) :]
    ends = len(_EOL.findall(data))
    return ends + (1 if data and not data.endswith((b"\n", b"\r")) else 0)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)] or [b""]


def all_records(chunks: list[bytes], table: Table) -> list[Record]:
    reader = CsvRecordReader(expected_fields=len(table.columns))
    found = [r for chunk in chunks for r in reader.feed(chunk)]
    return found + list(reader.finish())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_bytes, tables, st.lists(st.integers(0, 10_000), max_size=8), st.integers(1, 12))
@example(
    b"id,name,datetime,department_id,job_id\r61001,Ana Ruiz,2021-02-03T10:00:00Z,1,1\r",
    TABLES["hired_employees"],
    [],
    5,
)
@example(b"1,Dev\r\r\n2,Ops", TABLES["jobs"], [6], 1)
def test_property_every_line_is_accounted_for(
    data: bytes, table: Table, cuts: list[int], batch_rows: int
) -> None:
    found = list(read_batches(table, chunked(data, cuts), batch_rows=batch_rows, object_id=3))
    outcome = Outcome(table, found)
    records = all_records(chunked(data, cuts[::-1]), table)
    lines = physical_lines(data)

    # every byte and every line, in order, with nothing between records
    assert outcome.end == ((len(data), lines) if found else (0, 0))
    if records:
        assert [r.line for r in records] == [1, *(r.end_line + 1 for r in records[:-1])]
        assert (records[-1].end_line, records[-1].end_offset) == (lines, len(data))
    else:
        assert lines == 0
    # rows loaded + rejected + header and blank lines = records read
    assert outcome.loaded + len(outcome.rejects) + outcome.skipped == len(records)
    assert all(b.row_count + len(b.rejects) <= batch_rows for b in found)
    assert all(b.end_offset <= len(data) for b in found)

    by_line = {r.line: r for r in records}
    for reject in outcome.rejects:
        assert reject.reason and reject.raw == by_line[reject.line].raw.replace("\x00", "\ufffd")
    for row in outcome.rows:  # loaded only what validate_fields accepts, with its values
        line = row[-1]  # the batch's src_line column
        assert isinstance(line, int)
        record = by_line[line]
        assert record.fields is not None and row[-2] == 3
        assert tuple(validate_fields(table, record.fields)) == row[:-2]

    # the path a line takes and the batch size change nothing
    slow = Outcome(table, list(batches(table, records, batch_rows=batch_rows + 3, object_id=3)))
    assert slow.key()[:4] == outcome.key()[:4]


@settings(max_examples=200, deadline=None)
@given(any_bytes, tables, st.integers(0, 400))
def test_property_resuming_at_a_record_boundary_gives_the_rest(data: bytes, table: Table, pick: int) -> None:
    records = all_records([data], table)
    if not records:
        return
    at = records[pick % len(records)]
    reader = CsvRecordReader(
        start_offset=at.end_offset, start_line=at.end_line, expected_fields=len(table.columns)
    )
    rest = list(reader.feed(data[at.end_offset :])) + list(reader.finish())
    assert rest == records[records.index(at) + 1 :]


_field_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"])
    | st.sampled_from("0123456789-+:.TZ ,\r\n\x00"),
    max_size=30,
)


@settings(max_examples=500, deadline=None)
@given(tables, st.lists(_field_text, max_size=7))
def test_property_validation_gives_values_or_reasons(table: Table, fields: list[str]) -> None:
    try:
        values = validate_fields(table, fields)
    except FieldError as exc:
        assert str(exc)
    else:
        assert len(values) == len(table.columns)
        assert all(
            isinstance(v, str) and v and v == v.strip() and "\x00" not in v
            for v in values
            if isinstance(v, str)
        )


_fast_piece = st.sampled_from(
    [
        "1",
        "-12",
        "007",
        "123456789",
        "Ana",
        "Ruiz Ana",
        "2021-07-27T16:02:08Z",
        "2020-02-29 23:59:59.123456",
        "2021-07-27T16:02:08+14:59",
        "2021-07-27T16:02:08-00:30",
        "0",
        "x",
        "a b",
        "é",
    ]
)


@settings(max_examples=500, deadline=None)
@given(tables, st.lists(_fast_piece, min_size=1, max_size=6), st.sampled_from(["\n", "\r\n"]))
def test_property_the_fast_pattern_takes_only_valid_lines(table: Table, fields: list[str], eol: str) -> None:
    line = ",".join(fields)
    m = fast_lines_pattern(table).match(line + eol)
    if m is not None and m.end() == len(line) + len(eol):
        values = validate_fields(table, fields)  # raises if the fast path let an invalid line through
        assert decode_copy(table, (line + ",3,1,\n").encode())[0][:-2] == values
