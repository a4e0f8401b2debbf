"""The CSV reader and the batch builder (pure: no server).

Records and batches must not depend on how the bytes arrive (chunk boundaries anywhere), on which
path a line takes (the fast pattern or field-by-field validation), or on where a read starts (a
resumed read from a committed offset gives what a full read gives from there).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable
from datetime import UTC, datetime

import pytest

from services.ingest import reader as reader_module
from services.ingest.batches import Batch, RejectedRow, copy_columns
from services.ingest.reader import BOM, MAX_RECORD_LINES, Block, CsvRecordReader, Record
from shared.dictionary import TABLES, Table, Value
from tests.unit.batching import batches, read_batches

EMPLOYEES = TABLES["hired_employees"]
JOBS = TABLES["jobs"]


# ---- helpers ---------------------------------------------------------------------------------


def chunked(data: bytes, sizes: Iterable[int]) -> list[bytes]:
    out, at = [], 0
    for size in sizes:
        if at >= len(data):
            break
        out.append(data[at : at + size])
        at += size
    if at < len(data):
        out.append(data[at:])
    return out


def random_chunks(data: bytes, rng: random.Random, largest: int = 64) -> list[bytes]:
    return chunked(data, iter(lambda: rng.randint(1, largest), 0))


def records(data: bytes | list[bytes], **kwargs: int) -> list[Record]:
    chunks = [data] if isinstance(data, bytes) else data
    reader = CsvRecordReader(**kwargs)
    out = [r for chunk in chunks for r in reader.feed(chunk)]
    return out + list(reader.finish())


def decode_copy(table: Table, data: bytes) -> list[tuple[Value, ...]]:
    """The rows of a batch's COPY text (format text, delimiter ','), typed as PostgreSQL reads them."""
    rows = []
    for line in data.decode("utf-8").split("\n")[:-1]:
        fields, current, i = [], [], 0
        while i < len(line):
            if line[i] == "\\":
                current.append({"n": "\n", "r": "\r", "t": "\t"}.get(line[i + 1], line[i + 1]))
                i += 2
            elif line[i] == ",":
                fields.append("".join(current))
                current, i = [], i + 1
            else:
                current.append(line[i])
                i += 1
        fields.append("".join(current))
        assert len(fields) == len(copy_columns(table)), line
        values: list[Value] = []
        for column, text in zip(table.columns, fields, strict=False):
            if column.type == "integer":
                values.append(int(text))
            elif column.type == "text":
                values.append(text)
            else:
                value = datetime.fromisoformat(text)
                values.append((value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC))
        rows.append((*values, int(fields[-3]), int(fields[-2])))
    return rows


class Outcome:
    """Everything a sequence of batches says: rows (as read by COPY), rejects, skips, checkpoints."""

    def __init__(self, table: Table, found: list[Batch]) -> None:
        self.rows = sorted((r for b in found for r in decode_copy(table, b.copy_data)), key=lambda r: r[-1])
        self.rejects = [r for b in found for r in b.rejects]
        self.skipped = sum(b.skipped for b in found)
        self.loaded = sum(b.row_count for b in found)
        self.end = (found[-1].end_offset, found[-1].end_line) if found else (0, 0)

    def key(self) -> tuple[object, ...]:
        return (self.rows, self.rejects, self.skipped, self.loaded, self.end)


def fast_outcome(table: Table, chunks: list[bytes], batch_rows: int = 7, **kwargs: int) -> Outcome:
    return Outcome(table, list(read_batches(table, chunks, batch_rows=batch_rows, object_id=9, **kwargs)))


def slow_outcome(table: Table, data: bytes, batch_rows: int = 7) -> Outcome:
    reader_records = records(data, expected_fields=len(table.columns))
    return Outcome(table, list(batches(table, reader_records, batch_rows=batch_rows, object_id=9)))


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# A file with a bit of everything: header, BOM, blank lines, CRLF, quoting, invalid rows.
CORPUS = (
    BOM
    + b"id,name,datetime,department_id,job_id\r\n"
    + b"1,Harold Vogt,2021-11-07T02:48:42Z,2,96\n"
    + b"2,Ty Hofer,2021-05-30T05:43:46Z,8,\n"
    + b"\n"
    + b"   \t \n"
    + b'3,"Crowthe, Lotti",2021-10-01T13:04:21Z,12,71\r\n'
    + b'4,"Line one\nline two ""quoted""",2021-10-10 22:22:17.5+02:00,6,80\n'
    + b"5,  Padded  , 2021-01-01T00:00:00 , 007 ,-1\n"
    + b"6,Jos\xe9 Bad Byte,2021-01-01T00:00:00Z,1,1\n"
    + b"7,Back\\slash,2021-01-01T00:00:00Z,1,1\n"
    + b'8,O"Brien,2021-01-01T00:00:00Z,1,1\n'
    + b'9,"Bad"quote,2021-01-01T00:00:00Z,1,1\n'
    + b"id,not,a,header,here\n"
    + b"10,Zo\xc3\xab,2020-02-29T23:59:59Z,3,4\r\n"
    + b"11,Nul\x00Byte,2021-01-01T00:00:00Z,1,1\n"
    + b",,,,\n"
    + b"12,Tab\there,2021-01-01T00:00:00-14:59,1,1\n"
    + b"13,Last line without end,2021-02-29T00:00:00Z,1,1"
)


# ---- lines, headers, blanks, BOM, CRLF -------------------------------------------------------


def test_corpus_line_by_line() -> None:
    found = {r.line: r for r in records(CORPUS)}
    assert found[1].fields == ["id", "name", "datetime", "department_id", "job_id"]  # BOM gone, CR gone
    assert found[2].fields == ["1", "Harold Vogt", "2021-11-07T02:48:42Z", "2", "96"]
    assert (found[4].raw, found[5].raw) == ("", "   \t ")
    assert found[6].fields == ["3", "Crowthe, Lotti", "2021-10-01T13:04:21Z", "12", "71"]
    assert found[7].fields == ["4", 'Line one\nline two "quoted"', "2021-10-10 22:22:17.5+02:00", "6", "80"]
    assert (found[7].line, found[7].end_line) == (7, 8)
    assert 8 not in found and found[9].line == 9  # line numbers go on after a record of two lines
    assert found[10].fields is None and found[10].error == "not valid UTF-8 (byte 0xe9 at column 6)"
    assert found[12].fields == ["8", 'O"Brien', "2021-01-01T00:00:00Z", "1", "1"]  # a quote inside a field
    assert found[13].error is not None and found[13].error.startswith("malformed CSV quoting")
    assert found[15].fields is not None and found[15].fields[1] == "Zoë"
    assert found[19].raw == "13,Last line without end,2021-02-29T00:00:00Z,1,1"
    assert found[19].end_offset == len(CORPUS)


def test_corpus_batches() -> None:
    outcome = fast_outcome(EMPLOYEES, [CORPUS])
    by_id = {r[0]: r for r in outcome.rows}
    assert sorted(by_id) == [1, 3, 4, 5, 7, 8, 10, 12]
    assert by_id[1] == (1, "Harold Vogt", ts("2021-11-07T02:48:42Z"), 2, 96, 9, 2)
    assert by_id[3][1] == "Crowthe, Lotti" and by_id[3][-1] == 6
    assert by_id[4][1:3] == ('Line one\nline two "quoted"', ts("2021-10-10T20:22:17.5+00:00"))
    assert by_id[5][1:5] == ("Padded", ts("2021-01-01T00:00:00Z"), 7, -1)
    assert by_id[7][1] == "Back\\slash" and by_id[8][1] == 'O"Brien' and by_id[12][1] == "Tab\there"
    assert by_id[12][2] == ts("2021-01-01T14:59:00Z")
    reasons = {r.line: r.reason for r in outcome.rejects}
    assert reasons == {
        3: "job_id is empty",
        10: "not valid UTF-8 (byte 0xe9 at column 6)",
        13: "malformed CSV quoting: ',' expected after '\"'",
        14: "id 'id' is not an integer (only digits, with an optional leading '-'); "
        "datetime 'a' is not an ISO 8601 date and time (e.g. 2021-07-27T16:02:08Z); "
        "department_id 'header' is not an integer (only digits, with an optional leading '-'); "
        "job_id 'here' is not an integer (only digits, with an optional leading '-')",
        16: "name contains a NUL character (U+0000), which the database cannot store",
        17: "id is empty; name is empty; datetime is empty; department_id is empty; job_id is empty",
        19: "datetime '2021-02-29T00:00:00Z' is not a valid date and time (day is out of range for month)",
    }
    nul = next(r for r in outcome.rejects if r.line == 16)
    assert nul.raw == "11,Nul\ufffdByte,2021-01-01T00:00:00Z,1,1"  # NUL cannot be stored in a text column
    assert outcome.skipped == 3  # the header and two blank lines
    # lines read = loaded + rejected + header and blank lines (+1: one record spans two lines)
    assert outcome.loaded + len(outcome.rejects) + outcome.skipped + 1 == 19
    assert outcome.end == (len(CORPUS), 19)


def test_header_is_skipped_only_as_the_first_line() -> None:
    data = b"1,Dev\nid,job\nID,Again\n"
    outcome = fast_outcome(JOBS, [data])
    assert [r[:2] for r in outcome.rows] == [(1, "Dev")]
    assert [r.line for r in outcome.rejects] == [2, 3] and outcome.skipped == 0
    first = fast_outcome(JOBS, [b" Id ,Job\n1,Dev\n"])
    assert first.skipped == 1 and first.loaded == 1 and not first.rejects


@pytest.mark.parametrize(
    ("data", "skipped", "rejects"),
    [
        (b"id,job\n1,Dev\n", 1, []),
        (BOM + b"ID,JOB\r\n1,Dev\r\n", 1, []),  # a BOM before a header, any case, CRLF
        (BOM + b"id,job\r1,Dev\r", 1, []),  # a BOM before a header, lone CR
        (b'"id"," Job "\n1,Dev\n', 1, []),  # quoted and padded: trimmed, it is the header
        (b"id,job\n", 1, []),  # a header and nothing else
        (b"id,job", 1, []),
        (
            b"id,department\n1,Dev\n",
            0,
            [(1, "id,department", "a header of table departments (id, department), not of jobs (id, job)")],
        ),
        (
            b"id,job,\n1,Dev\n",  # a trailing empty field: not exactly the column names
            0,
            [
                (
                    1,
                    "id,job,",
                    "looks like a header, but a header of jobs is exactly its column names"
                    " (id, job, in any case); this line has 3 fields: 'id', 'job', ''",
                )
            ],
        ),
        (
            b"id\n1,Dev\n",
            0,
            [
                (
                    1,
                    "id",
                    "looks like a header, but a header of jobs is exactly its column"
                    " names (id, job, in any case); this line has 1 field: 'id'",
                )
            ],
        ),
        (
            b"\nid,job\n1,Dev\n",  # only the first line can be the header
            1,
            [(2, "id,job", "a header line, but only a file's first line is taken for its header")],
        ),
        (
            b"id,jobs\n1,Dev\n",
            0,
            [(1, "id,jobs", "id 'id' is not an integer (only digits, with an optional leading '-')")],
        ),
    ],
)
def test_header_rule(data: bytes, skipped: int, rejects: list[tuple[int, str, str]]) -> None:
    for size in (1, 3, len(data) or 1):
        outcome = fast_outcome(JOBS, chunked(data, itertools.repeat(size)))
        assert (outcome.skipped, [(r.line, r.raw, r.reason) for r in outcome.rejects]) == (skipped, rejects)
        assert outcome.loaded == (1 if b"1,Dev" in data else 0)


def test_a_header_of_the_wrong_table_is_rejected_not_skipped() -> None:
    data = b"id,name,datetime,department_id,job_id\n1,Dev\n"
    outcome = fast_outcome(JOBS, [data])
    assert outcome.skipped == 0 and outcome.loaded == 1
    assert outcome.rejects[0].reason == (
        "a header of table hired_employees (id, name, datetime, department_id, job_id), not of jobs (id, job)"
    )


def test_a_resumed_read_does_not_take_line_one_for_a_header() -> None:
    data = b"id,job\n1,Dev\n"
    # resumed right after line 1: line numbers go on from there
    outcome = fast_outcome(JOBS, [data[7:]], start_offset=7, start_line=1)
    assert outcome.loaded == 1 and outcome.rows[0][-1] == 2


@pytest.mark.parametrize("blank", [b"", b" ", b"\t  ", b"\r", b" \r", "\u00a0\u3000".encode()])
def test_blank_lines_are_neither_loaded_nor_rejected(blank: bytes) -> None:
    data = b"1,Dev\n" + blank + b"\n2,Ops\n"
    outcome = fast_outcome(JOBS, [data])
    assert outcome.loaded == 2 and not outcome.rejects and outcome.skipped == 1
    assert [r[-1] for r in outcome.rows] == [1, 3]


@pytest.mark.parametrize(
    ("data", "rows"),
    [
        (BOM + b"1,Dev\n", [(1, "Dev", 9, 1)]),
        (BOM + b"id,job\n1,Dev", [(1, "Dev", 9, 2)]),
        (BOM, []),
        (b"", []),
        (BOM + b"\n", []),
    ],
)
def test_bom_in_any_chunking(data: bytes, rows: list[tuple[Value, ...]]) -> None:
    for size in (1, 2, 3, 4, 100):
        assert fast_outcome(JOBS, chunked(data, itertools.repeat(size))).rows == rows


def test_bytes_shorter_than_a_bom_are_data() -> None:
    outcome = fast_outcome(JOBS, [b"\xef\xbb"])
    assert outcome.loaded == 0 and [r.reason for r in outcome.rejects] == [
        "not valid UTF-8 (byte 0xef at column 1)"
    ]


def test_a_bom_later_in_the_file_is_not_skipped() -> None:
    outcome = fast_outcome(JOBS, [b"1,Dev\n" + BOM + b"2,Ops\n"])
    assert outcome.loaded == 1 and outcome.rejects[0].line == 2


def test_crlf_offsets_and_raw() -> None:
    data = b"1,Dev\r\n2,Ops\r\nx,y\r\n"
    found = records(data)
    assert [r.raw for r in found] == ["1,Dev", "2,Ops", "x,y"]
    assert [r.end_offset for r in found] == [7, 14, 19]
    outcome = fast_outcome(JOBS, [data])
    assert [r[1] for r in outcome.rows] == ["Dev", "Ops"] and outcome.rejects[0].raw == "x,y"


# ---- lone CR line ends (old Mac exports) and mixed line ends -----------------------------------

# Issue 12, case 1: a Mac Excel export, lone CR line ends and a header.
MAC_EXPORT = (
    b"id,name,datetime,department_id,job_id\r"
    b"61001,Ana Ruiz,2021-02-03T10:00:00Z,1,1\r"
    b"61002,Luis Paz,2021-05-06T11:00:00Z,2,3\r"
    b"61003,,2021-05-06T11:00:00Z,2,3\r"
)


def test_a_mac_export_with_lone_cr_line_ends_and_a_header() -> None:
    for size in (1, 2, 5, 40, len(MAC_EXPORT)):
        outcome = fast_outcome(EMPLOYEES, chunked(MAC_EXPORT, itertools.repeat(size)))
        assert [r[:5] for r in outcome.rows] == [
            (61001, "Ana Ruiz", ts("2021-02-03T10:00:00Z"), 1, 1),
            (61002, "Luis Paz", ts("2021-05-06T11:00:00Z"), 2, 3),
        ]
        assert [r[-1] for r in outcome.rows] == [2, 3]
        assert [(r.line, r.raw, r.reason) for r in outcome.rejects] == [
            (4, "61003,,2021-05-06T11:00:00Z,2,3", "name is empty")
        ]
        # every line accounted for: 1 header + 2 loaded + 1 rejected = 4 lines
        assert outcome.skipped == 1 and outcome.end == (len(MAC_EXPORT), 4)


def test_lone_cr_records_have_exact_offsets() -> None:
    data = b"1,Dev\r2,Ops\rx,y\r3,Last"
    found = records(data)
    assert [(r.line, r.raw, r.end_offset) for r in found] == [
        (1, "1,Dev", 6),
        (2, "2,Ops", 12),
        (3, "x,y", 16),
        (4, "3,Last", len(data)),
    ]
    for size in (1, 2, 3, 7):
        assert records(chunked(data, itertools.repeat(size))) == found


@pytest.mark.parametrize(
    ("data", "lines", "blank"),
    [
        (b"1,Dev\r\r\n2,Ops\r\n", 3, 1),  # CR CR LF: a lone CR, then CRLF ending a blank line
        (b"1,Dev\n\r2,Ops\r", 3, 1),  # LF, then a blank line ended by a lone CR
        (b"1,Dev\r\n\r\n2,Ops\n", 3, 1),
        (b"1,Dev\r\r\r2,Ops", 4, 2),
        (b"1,Dev\n2,Ops\r\n3,QA\r4,PM\n", 4, 0),  # all three line ends in one file
        (b"1,Dev\r", 1, 0),  # a lone CR at the very end
        (b"\r", 1, 1),
        (b"\r\r", 2, 2),
    ],
)
def test_mixed_line_ends(data: bytes, lines: int, blank: int) -> None:
    whole = fast_outcome(JOBS, [data])
    assert not whole.rejects and whole.skipped == blank and whole.end == (len(data), lines)
    assert whole.loaded == lines - blank
    for size in (1, 2, 3):
        assert fast_outcome(JOBS, chunked(data, itertools.repeat(size))).key() == whole.key()
    assert slow_outcome(JOBS, data).key() == whole.key()


def test_a_lone_cr_inside_an_unquoted_field_ends_the_line() -> None:
    # CONTRACT §1: a lone CR is a line end, so this is two lines of the wrong shape, both rejected
    outcome = fast_outcome(EMPLOYEES, [b"1,Ana\rRuiz,2021-02-03T10:00:00Z,1,1\n"])
    assert [(r.line, r.raw) for r in outcome.rejects] == [(1, "1,Ana"), (2, "Ruiz,2021-02-03T10:00:00Z,1,1")]
    assert outcome.rejects[0].reason.startswith("expected 5 fields")


@pytest.mark.parametrize("eol", [b"\r", b"\n", b"\r\n"])
def test_a_quoted_field_spanning_lines_keeps_its_line_ends(eol: bytes) -> None:
    data = (
        eol.join(
            [
                b'1,"Line one' + eol + b'line two ""quoted""",2021-02-03T10:00:00Z,1,1',
                b'2,"a\rb\r\nc\nd",2021-02-03T10:00:00Z,1,1',  # every kind of line end inside one field
                b"3,Plain,2021-02-03T10:00:00Z,1,1",
                b'4,"ends with a CR\r",2021-02-03T10:00:00Z,1,1',
            ]
        )
        + eol
    )
    expected = [
        (1, "Line one" + eol.decode() + 'line two "quoted"', 1),
        (2, "a\rb\r\nc\nd", 3),  # physical lines 3 to 6
        (3, "Plain", 7),
        (4, "ends with a CR", 8),  # lines 8 and 9; the field is trimmed like any other
    ]
    for size in (1, 2, 3, 16, len(data)):
        outcome = fast_outcome(EMPLOYEES, chunked(data, itertools.repeat(size)))
        assert [(r[0], r[1], r[-1]) for r in outcome.rows] == expected, size
        assert not outcome.rejects and outcome.end == (len(data), 9)


def test_quoted_plain_fields_with_lone_cr_line_ends_take_the_fast_path() -> None:
    data = b'"1","Ana","2021-07-27T16:02:08Z","1","2"\r"2","Bo","2021-07-27T16:02:08Z","1","2"\r3,"C",x,1,2'
    items = list(CsvRecordReader().feed_items(data))
    assert isinstance(items[0], Block) and items[0].quoted and items[0].lines == 2
    assert items[0].data.count(b"\n") == 2 and len(items[0].data) == data.index(b"3,")  # offsets hold
    outcome = fast_outcome(EMPLOYEES, [data])
    assert [r[:2] for r in outcome.rows] == [(1, "Ana"), (2, "Bo")] and outcome.rejects[0].line == 3


def test_a_long_line_ending_in_a_lone_cr_at_a_chunk_boundary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader_module, "MAX_RECORD_BYTES", 100)
    monkeypatch.setattr(reader_module, "LONG_LINE_KEEP", 5)
    long_line = b"2," + b"x" * 298  # 300 bytes, then its lone CR is the last byte of a chunk
    for tail in (b"3,Ops\r", b"\n3,Ops\r"):  # a lone CR, or a CRLF split across chunks
        data = b"1,Dev\r" + long_line + b"\r" + tail
        found = records([data[:307], data[307:]])
        assert [(r.line, r.fields is None) for r in found] == [(1, False), (2, True), (3, False)]
        assert found[1].end_offset == 6 + 301 + (len(tail) - 6) and found[2].end_offset == len(data)


# ---- quoting -----------------------------------------------------------------------------------


def test_quoted_fields_with_commas_newlines_and_doubled_quotes() -> None:
    data = b'1,"a, b"\n2,"x\r\ny ""z"""\n3,""\n4,plain\n'
    found = records(data)
    assert [(r.line, r.fields) for r in found] == [
        (1, ["1", "a, b"]),
        (2, ["2", 'x\r\ny "z"']),
        (4, ["3", ""]),
        (5, ["4", "plain"]),
    ]
    outcome = fast_outcome(JOBS, [data])
    assert [r[:2] for r in outcome.rows] == [(1, "a, b"), (2, 'x\r\ny "z"'), (4, "plain")]
    assert [r.reason for r in outcome.rejects] == ["job is empty"]


def test_an_unbalanced_quote_costs_its_own_line_only() -> None:
    lines = [b'1,"never closed', *[b"%d,Job %d" % (i, i) for i in range(2, 200)]]
    outcome = fast_outcome(JOBS, [b"\n".join(lines) + b"\n"])
    assert [(r.line, r.reason) for r in outcome.rejects] == [
        (1, "unbalanced quote: a quoted field is never closed")
    ]
    assert outcome.loaded == 198


def test_two_stray_quotes_do_not_swallow_the_lines_between() -> None:
    lines = [b"%d,Job %d" % (i, i) for i in range(1, 40)]
    lines[4] = b'5,"stray'  # opens a quoted field at a field start...
    lines[20] = b'21,"another'  # ...which this one would close: not a record of 2 fields
    outcome = fast_outcome(JOBS, [b"\n".join(lines) + b"\n"])
    assert [r.line for r in outcome.rejects] == [5, 21]
    assert outcome.rejects[0].reason == (
        "unbalanced quote: the quoted field opened here is closed only on line 21,"
        " which does not make a row of 2 fields"
    )
    assert outcome.loaded == 37 and [r[-1] for r in outcome.rows] == [
        n for n in range(1, 40) if n not in (5, 21)
    ]


def test_an_unbalanced_quote_at_the_end_of_the_file() -> None:
    outcome = fast_outcome(JOBS, [b'1,Dev\n2,"open\n3,Ops'])
    assert [(r.line, r.raw) for r in outcome.rejects] == [(2, '2,"open')]
    assert [r[:2] for r in outcome.rows] == [(1, "Dev"), (3, "Ops")]


def test_an_open_quote_is_given_up_after_max_record_lines() -> None:
    lines = [b'1,"open', *[b"%d,Job" % i for i in range(2, MAX_RECORD_LINES + 10)], b'99,close"']
    outcome = fast_outcome(JOBS, [b"\n".join(lines) + b"\n"])
    assert [r.line for r in outcome.rejects] == [1]
    assert outcome.loaded == MAX_RECORD_LINES + 9  # the last line's quote is not at a field start


# ---- bytes -------------------------------------------------------------------------------------


def test_bad_utf8_rejects_that_row_only() -> None:
    data = b'1,Ok\n2,Bad \xff\xfe\n3,\xc3\n4,Fine \xc3\xa9\n5,"multi\nline \xff"\n6,Ok\n'
    outcome = fast_outcome(JOBS, [data])
    assert [(r.line, r.reason) for r in outcome.rejects] == [
        (2, "not valid UTF-8 (byte 0xff at column 7)"),
        (3, "not valid UTF-8 (byte 0xc3 at column 3)"),
        (5, "not valid UTF-8 (byte 0xff at column 15)"),
    ]
    assert outcome.rejects[0].raw == "2,Bad \ufffd\ufffd"
    assert [r[:2] for r in outcome.rows] == [(1, "Ok"), (4, "Fine é"), (6, "Ok")]


def test_a_line_longer_than_the_limit_is_skipped_not_held(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader_module, "MAX_RECORD_BYTES", 1000)
    monkeypatch.setattr(reader_module, "LONG_LINE_KEEP", 10)
    long_line = b"2," + b"x" * 5000
    data = b"1,Dev\n" + long_line + b"\n3,Ops\n" + b"4," + b"y" * 3000
    reader = CsvRecordReader()
    found: list[Record] = []
    for chunk in chunked(data, itertools.repeat(300)):
        found += reader.feed(chunk)
        assert len(reader._buf) <= 1300  # never the whole line
    found += reader.finish()
    assert [(r.line, r.fields is None) for r in found] == [(1, False), (2, True), (3, False), (4, True)]
    assert found[1].raw == "2,xxxxxxxx" and found[1].error == (
        "line is 5003 bytes long, more than the 1000 a row may have (raw text cut to its first 10 bytes)"
    )
    assert found[1].end_offset == 6 + len(long_line) + 1 and found[3].end_offset == len(data)


def test_text_that_copy_would_misread_is_escaped() -> None:
    name = 'a\\b, c\nd\re\tf\\N "g"'
    data = b'1,"' + name.replace('"', '""').encode() + b'"\n2,\\.\n'
    outcome = fast_outcome(JOBS, [data])
    assert [r[:2] for r in outcome.rows] == [(1, name), (2, "\\.")]


# ---- properties: chunking, paths, resuming ---------------------------------------------------


def tricky_file(rng: random.Random, lines: int = 300, eol: bytes | None = None) -> bytes:
    """Lines of every shape; between them LF, CRLF or lone CR (one of them, or any mix by default)."""
    pieces = [
        b"%d,Ana,2021-07-27T16:02:08Z,1,2",
        b"%d,Jos\xc3\xa9 M\xc3\xbcller,2021-07-27 16:02:08.25+05:30,12,183",
        b"%d, padded ,2021-07-27T16:02:08 ,007,1",
        b'%d,"Quoted, with comma",2021-07-27T16:02:08Z,1,2',
        b'%d,"Two\nlines",2021-07-27T16:02:08Z,1,2',
        b'%d,"stray quote,2021-07-27T16:02:08Z,1,2',
        b"%d,bad \xff byte,2021-07-27T16:02:08Z,1,2",
        b"%d,Ana,2021-02-30T16:02:08Z,1,2",
        b"%d,Ana,2021-07-27,1,2",
        b"%d,Ana,2021-07-27T16:02:08Z,1",
        b"%d,back\\slash,2021-07-27T16:02:08Z,1,+2",
        b"",
        b"  ",
        b",,,,",
        b"%d,Ana,2021-07-27T16:02:08Z,1,2\r",
        b'"%d","Ana","2021-07-27T16:02:08Z","1","2"',
        b'%d,"Quoted Name",2021-07-27T16:02:08Z,1,"2"\r',
        b'%d,"",2021-07-27T16:02:08Z,1,2',
        b'%d," padded ",2021-07-27T16:02:08Z,1,2',
        b'%d,"a""b",2021-07-27T16:02:08Z,1,2',
        b'%d,"x"y,2021-07-27T16:02:08Z,1,2',
        b'%d,"back\\slash",2021-07-27T16:02:08Z,1,2',
    ]
    weights = [40, 10, 4, 3, 2, 1, 2, 2, 2, 2, 2, 2, 1, 1, 4, 4, 4, 1, 1, 1, 1, 1]
    out = []
    for i in range(1, lines + 1):
        piece = rng.choices(pieces, weights)[0]
        out.append(piece % i if b"%d" in piece else piece)
    ends = [eol] if eol else [b"\n", b"\r\n", b"\r"]
    return b"".join(line + rng.choice(ends) for line in out)[: None if rng.random() < 0.5 else -1]


@pytest.mark.parametrize("seed", range(8))
def test_property_chunk_boundaries_change_nothing(seed: int) -> None:
    rng = random.Random(seed)
    data = BOM + tricky_file(rng, eol=[b"\n", b"\r", b"\r\n", None][seed % 4])
    whole_records = records(data)
    whole = fast_outcome(EMPLOYEES, [data], batch_rows=rng.randint(1, 50))
    for largest in (1, 7, 64, 4096):
        chunks = random_chunks(data, rng, largest)
        assert records(chunks) == whole_records
        batch_rows = rng.randint(1, 50)
        assert fast_outcome(EMPLOYEES, chunks, batch_rows).key()[:4] == whole.key()[:4]


@pytest.mark.parametrize("seed", range(8))
def test_property_fast_and_full_paths_agree(seed: int) -> None:
    rng = random.Random(100 + seed)
    data = tricky_file(rng, eol=[b"\n", b"\r", b"\r\n", None][seed % 4])
    batch_rows = rng.randint(1, 40)
    fast = fast_outcome(EMPLOYEES, random_chunks(data, rng, 512), batch_rows)
    slow = slow_outcome(EMPLOYEES, data, batch_rows)
    assert fast.key() == slow.key()
    assert fast.loaded > 100


@pytest.mark.parametrize("seed", range(4))
def test_property_resuming_at_any_record_boundary(seed: int) -> None:
    rng = random.Random(200 + seed)
    data = tricky_file(rng, 120)
    full = records(data, expected_fields=5)
    for i, record in enumerate(full):
        offset, line = record.end_offset, record.end_line
        rest = data[offset:]
        assert (
            records(random_chunks(rest, rng), start_offset=offset, start_line=line, expected_fields=5)
            == (full[i + 1 :])
        )


@pytest.mark.parametrize("seed", range(4))
def test_property_resuming_at_a_batch_checkpoint(seed: int) -> None:
    rng = random.Random(300 + seed)
    data = tricky_file(rng, 400)
    batch_rows = rng.randint(5, 60)
    found = list(read_batches(EMPLOYEES, random_chunks(data, rng, 200), batch_rows=batch_rows, object_id=9))
    for i, batch in enumerate(found[:-1]):
        offset, line = batch.end_offset, batch.end_line
        resumed = list(
            read_batches(
                EMPLOYEES,
                random_chunks(data[offset:], rng, 200),
                batch_rows=batch_rows,
                object_id=9,
                start_offset=offset,
                start_line=line,
            )
        )
        assert Outcome(EMPLOYEES, resumed).key() == Outcome(EMPLOYEES, found[i + 1 :]).key()


def test_batches_hold_at_most_batch_rows() -> None:
    data = tricky_file(random.Random(7), 500)
    for batch_rows in (1, 3, 50):
        found = list(read_batches(EMPLOYEES, [data], batch_rows=batch_rows))
        assert all(b.row_count + len(b.rejects) <= batch_rows for b in found)
        assert all(len(decode_copy(EMPLOYEES, b.copy_data)) == b.row_count for b in found)
        assert [b.end_offset for b in found] == sorted(b.end_offset for b in found)


def test_rejected_rows_keep_line_raw_and_reason() -> None:
    (batch,) = read_batches(JOBS, [b"1,Dev\nx,QA\n"], batch_rows=10)
    assert batch.rejects == [
        RejectedRow(2, "x,QA", "id 'x' is not an integer (only digits, with an optional leading '-')")
    ]


def test_every_row_carries_its_provenance_on_both_paths() -> None:
    # fast path (plain line) and full path (a comma inside quotes) alike: object, line, upload time
    data = b'1,A,2021-03-01T00:00:00Z,1,1\n2,"B, b",2020-01-01 00:00:00,1,1\n'
    (batch,) = read_batches(EMPLOYEES, [data], batch_rows=10, object_id=7, order=1609459200000000)
    rows = batch.copy_data.decode().splitlines()
    assert [r.rsplit(",", 3)[1:] for r in rows] == [
        ["7", "1", "1609459200000000"],
        ["7", "2", "1609459200000000"],
    ]


def test_lines_quoting_whole_plain_fields_take_the_fast_path() -> None:
    data = (
        b'"1","Ana","2021-07-27T16:02:08Z","1","2"\n'
        b'2,"B, b",2021-07-27T16:02:08Z,1,2\n'  # a comma inside: parsed as CSV
        b'3,"C",2021-07-27T16:02:08Z,1,2\n'
    )
    items = list(CsvRecordReader().feed_items(data))
    assert [(type(i).__name__, getattr(i, "quoted", None)) for i in items] == [
        ("Block", True),
        ("Record", None),
        ("Block", True),
    ]
    outcome = fast_outcome(EMPLOYEES, [data])
    assert [r[:2] for r in outcome.rows] == [(1, "Ana"), (2, "B, b"), (3, "C")]
