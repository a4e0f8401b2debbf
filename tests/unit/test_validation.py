"""CONTRACT §1's field rules, pinned on both validation paths (pure: no server).

`validate_fields` is the reference. `fast_lines_pattern` lets whole lines through to COPY as they
stand; every line it matches must be one `validate_fields` accepts, with the values PostgreSQL's
COPY (text format, delimiter ',', time zone UTC) reads from its text. `copy_reading` below models
that reading: int() for integers, the text itself, and datetime.fromisoformat (which reads these
ISO 8601 shapes as PostgreSQL does) with UTC for a timestamp without an offset.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from shared.dictionary import (
    TABLES,
    FieldError,
    Table,
    Value,
    fast_lines_pattern,
    header_problem,
    is_csv_key,
    is_gzip_key,
    is_header,
    table_for_key,
    validate_fields,
)

EMPLOYEES = TABLES["hired_employees"]
DEPARTMENTS = TABLES["departments"]
JOBS = TABLES["jobs"]
GOOD = ["1", "Harold Vogt", "2021-11-07T02:48:42Z", "2", "96"]


def row(**changes: str) -> list[str]:
    """A valid hired_employees row with some fields replaced."""
    names = EMPLOYEES.column_names
    return [changes.get(name, GOOD[i]) for i, name in enumerate(names)]


def reason(table: Table, fields: list[str]) -> str:
    with pytest.raises(FieldError) as caught:
        validate_fields(table, fields)
    return str(caught.value)


def fast(table: Table, line: str) -> bool:
    """Whether the fast pattern takes `line` (one line, without its line end) as it stands."""
    text = line + "\n"
    m = fast_lines_pattern(table).match(text)
    return m is not None and m.end() == len(text)


def copy_reading(table: Table, line: str) -> tuple[Value, ...]:
    """What PostgreSQL's COPY reads from a line the fast pattern matched."""
    values: list[Value] = []
    for column, text in zip(table.columns, line.split(","), strict=True):
        if column.type == "integer":
            values.append(int(text))
        elif column.type == "text":
            values.append(text)
        else:
            value = datetime.fromisoformat(text)
            values.append((value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC))
    return tuple(values)


# ---- the rules, one by one -------------------------------------------------------------------


def test_a_valid_row_is_typed() -> None:
    assert validate_fields(EMPLOYEES, GOOD) == (
        1,
        "Harold Vogt",
        datetime(2021, 11, 7, 2, 48, 42, tzinfo=UTC),
        2,
        96,
    )
    assert validate_fields(DEPARTMENTS, ["5", "Engineering"]) == (5, "Engineering")
    assert validate_fields(JOBS, ["1", "Marketing Assistant"]) == (1, "Marketing Assistant")


@pytest.mark.parametrize(
    ("table", "fields", "expected"),
    [
        (EMPLOYEES, GOOD[:4], "expected 5 fields (id, name, datetime, department_id, job_id), got 4"),
        (EMPLOYEES, [*GOOD, "7"], "expected 5 fields (id, name, datetime, department_id, job_id), got 6"),
        (DEPARTMENTS, ["", "", ""], "expected 2 fields (id, department), got 3"),  # the line ",,"
        (JOBS, ["1"], "expected 2 fields (id, job), got 1"),
        (JOBS, [], "expected 2 fields (id, job), got 0"),
    ],
)
def test_wrong_number_of_fields(table: Table, fields: list[str], expected: str) -> None:
    assert reason(table, fields) == expected


def test_a_row_of_empty_fields_names_every_one() -> None:
    assert reason(EMPLOYEES, ["", "", "", "", ""]) == (
        "id is empty; name is empty; datetime is empty; department_id is empty; job_id is empty"
    )
    assert reason(JOBS, ["", ""]) == "id is empty; job is empty"


@pytest.mark.parametrize("blank", ["", " ", "\t", "  \t ", "\u00a0", "\u3000"])
def test_a_field_empty_after_trimming_is_empty(blank: str) -> None:
    assert reason(EMPLOYEES, row(job_id=blank)) == "job_id is empty"
    assert reason(EMPLOYEES, row(name=blank)) == "name is empty"
    assert reason(EMPLOYEES, row(datetime=blank)) == "datetime is empty"


@pytest.mark.parametrize(
    "text",
    [
        "abc",
        "+5",
        "8.0",
        "1e3",
        "0x10",
        "1_000",
        "--5",
        "-",
        "5-",
        "1 2",
        "\u0661\u0662",
        "²",
        "\uff15",
        "1.",
        ".5",
    ],
)
def test_what_is_not_an_integer(text: str) -> None:
    assert reason(EMPLOYEES, row(department_id=text)) == (
        f"department_id {text!r} is not an integer (only digits, with an optional leading '-')"
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [("007", 7), ("0", 0), ("-0", 0), ("-12", -12), (" 42 ", 42), ("\t3\u00a0", 3), ("0000000000001", 1)],
)
def test_integers_trimmed_with_leading_zeros(text: str, value: int) -> None:
    assert validate_fields(EMPLOYEES, row(job_id=text))[4] == value


def test_32_bit_bounds_both_signs() -> None:
    assert validate_fields(EMPLOYEES, row(id="2147483647"))[0] == 2**31 - 1
    assert validate_fields(EMPLOYEES, row(id="-2147483648"))[0] == -(2**31)
    for text in ("2147483648", "-2147483649", "99999999999999999999"):
        assert reason(EMPLOYEES, row(id=text)) == (
            f"id {text!r} does not fit in 32 bits (-2147483648 to 2147483647)"
        )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2021-07-27T16:02:08Z", datetime(2021, 7, 27, 16, 2, 8, tzinfo=UTC)),
        ("2021-07-27 16:02:08Z", datetime(2021, 7, 27, 16, 2, 8, tzinfo=UTC)),  # space separator
        ("2021-07-27T16:02:08z", datetime(2021, 7, 27, 16, 2, 8, tzinfo=UTC)),
        ("2021-07-27T16:02:08", datetime(2021, 7, 27, 16, 2, 8, tzinfo=UTC)),  # no offset: UTC
        ("2021-07-27T16:02:08.5Z", datetime(2021, 7, 27, 16, 2, 8, 500000, tzinfo=UTC)),
        ("2021-07-27T16:02:08,25Z", datetime(2021, 7, 27, 16, 2, 8, 250000, tzinfo=UTC)),
        ("2021-07-27T16:02:08.123456Z", datetime(2021, 7, 27, 16, 2, 8, 123456, tzinfo=UTC)),
        ("2021-07-27T16:02:08.123456789Z", datetime(2021, 7, 27, 16, 2, 8, 123456, tzinfo=UTC)),
        ("2021-07-27T16:02:08+05:00", datetime(2021, 7, 27, 11, 2, 8, tzinfo=UTC)),  # offset honoured
        ("2021-07-27T16:02:08-0330", datetime(2021, 7, 27, 19, 32, 8, tzinfo=UTC)),
        ("2021-07-27T16:02:08+05", datetime(2021, 7, 27, 11, 2, 8, tzinfo=UTC)),
        ("2021-07-27T23:30:00-01:00", datetime(2021, 7, 28, 0, 30, 0, tzinfo=UTC)),  # next day in UTC
        ("2021-01-01T00:30:00+01:00", datetime(2020, 12, 31, 23, 30, 0, tzinfo=UTC)),  # previous year
        ("  2021-07-27T16:02:08Z\t", datetime(2021, 7, 27, 16, 2, 8, tzinfo=UTC)),  # trimmed
        ("2020-02-29T00:00:00Z", datetime(2020, 2, 29, tzinfo=UTC)),
        ("2000-02-29T00:00:00Z", datetime(2000, 2, 29, tzinfo=UTC)),
    ],
)
def test_timestamps(text: str, expected: datetime) -> None:
    value = validate_fields(EMPLOYEES, row(datetime=text))[2]
    assert isinstance(value, datetime) and value == expected
    assert value.utcoffset() == timedelta(0)  # stored in UTC


@pytest.mark.parametrize(
    "text",
    [
        "2021-07-27",  # a date alone
        "2021-07-27T",
        "16:02:08",
        "2021-07-27T16:02",  # no seconds
        "2021-07-27t16:02:08Z",
        "2021-07-27_16:02:08Z",
        "2021/07/27 16:02:08",
        "27-07-2021 16:02:08",
        "20210727T160208Z",
        "2021-7-27T16:02:08Z",
        "2021-07-27T16:02:08.Z",
        "2021-07-27T16:02:08.1234567890Z",
        "2021-07-27T16:02:08 Z",
        "2021-07-27T16:02:08+5:00",
        "2021-07-27T16:02:08UTC",
        "2021-07-27T16:02:08Z garbage",
        "\u0662\u0660\u0662\u0661-07-27T16:02:08Z",  # other scripts' digits
        "2021-07-27T16:02:08+\u0660\u0665:00",
        "yesterday",
    ],
)
def test_not_an_iso_timestamp(text: str) -> None:
    assert reason(EMPLOYEES, row(datetime=text)) == (
        f"datetime {text!r} is not an ISO 8601 date and time (e.g. 2021-07-27T16:02:08Z)"
    )


@pytest.mark.parametrize(
    "text",
    [
        "2021-02-30T10:00:00Z",
        "2021-02-29T10:00:00Z",
        "1900-02-29T10:00:00Z",
        "2021-04-31T10:00:00Z",
        "2021-13-01T10:00:00Z",
        "2021-00-10T10:00:00Z",
        "2021-01-00T10:00:00Z",
        "2021-07-27T24:00:00Z",
        "2021-07-27T16:60:00Z",
        "2021-07-27T16:02:60Z",
        "0000-01-01T00:00:00Z",
    ],
)
def test_impossible_dates_and_times(text: str) -> None:
    assert reason(EMPLOYEES, row(datetime=text)).startswith(
        f"datetime {text!r} is not a valid date and time ("
    )


def test_offsets_out_of_range() -> None:
    assert reason(EMPLOYEES, row(datetime="2021-07-27T16:02:08+24:00")) == (
        "datetime '2021-07-27T16:02:08+24:00' has an invalid UTC offset"
    )
    assert reason(EMPLOYEES, row(datetime="2021-07-27T16:02:08+05:60")).endswith("has an invalid UTC offset")
    assert reason(EMPLOYEES, row(datetime="0001-01-01T00:00:00+01:00")) == (
        "datetime '0001-01-01T00:00:00+01:00' is out of range in UTC"
    )


def test_text_is_trimmed_and_kept_as_is_inside() -> None:
    assert validate_fields(EMPLOYEES, row(name="  Ana  María\t"))[1] == "Ana  María"
    assert validate_fields(EMPLOYEES, row(name="\u00a0Zoë\u2003"))[1] == "Zoë"
    odd = 'O"Brien, \\ Jr.\r\nline two'
    assert validate_fields(EMPLOYEES, row(name=odd))[1] == odd


def test_text_with_nul_is_refused() -> None:
    assert reason(EMPLOYEES, row(name="Ana\x00")) == (
        "name contains a NUL character (U+0000), which the database cannot store"
    )


def test_several_problems_are_all_named() -> None:
    assert reason(EMPLOYEES, row(id="x", datetime="2021-07-27", job_id="")) == (
        "id 'x' is not an integer (only digits, with an optional leading '-'); "
        "datetime '2021-07-27' is not an ISO 8601 date and time (e.g. 2021-07-27T16:02:08Z); job_id is empty"
    )


# ---- headers (CONTRACT §1): exactly the table's column names, trimmed, any case ----------------


@pytest.mark.parametrize(
    ("table", "fields"),
    [
        (EMPLOYEES, ["id", "name", "datetime", "department_id", "job_id"]),
        (EMPLOYEES, ["ID", " Name", "DateTime ", "\tDEPARTMENT_ID", "Job_Id\u00a0"]),
        (JOBS, [" Id ", "Job"]),
        (DEPARTMENTS, ["id", "department"]),
    ],
)
def test_a_header_is_exactly_the_column_names(table: Table, fields: list[str]) -> None:
    assert is_header(table, fields)
    assert header_problem(table, fields, first=True) is None


@pytest.mark.parametrize(
    ("table", "fields", "problem"),
    [
        # issue 12's Mac export read as one line: not a header, whatever its first field ("expected 5
        # fields" says why; the reader now ends lines at a lone CR, tests/unit/test_reader.py)
        (EMPLOYEES, ["id", "name", "datetime", "department_id", "job_id\r61001", "Ana Ruiz"], None),
        (JOBS, ["id", "department"], "a header of table departments (id, department), not of jobs (id, job)"),
        (DEPARTMENTS, ["id", "job"], "a header of table jobs (id, job), not of departments (id, department)"),
        (JOBS, ["id", "name", "datetime", "department_id", "job_id"], "a header of table hired_employees"),
        (
            JOBS,
            ["id", "job", ""],
            "looks like a header, but a header of jobs is exactly its column names (id, job, in any case);"
            " this line has 3 fields: 'id', 'job', ''",
        ),
        (JOBS, ["id"], "this line has 1 field: 'id'"),
        (JOBS, ["job", "id"], "looks like a header"),  # columns out of order
        (EMPLOYEES, ["id", "name", "datetime", "department_id"], "looks like a header"),  # one missing
        (JOBS, ["id", "jobs"], None),  # a misspelling that is no column name: plain validation says why
        (JOBS, ["identifier", "job"], None),
        (JOBS, ["x", "id"], None),
        (JOBS, [], None),
        (JOBS, ["", ""], None),
    ],
)
def test_what_is_not_a_header(table: Table, fields: list[str], problem: str | None) -> None:
    assert not is_header(table, fields)
    found = header_problem(table, fields, first=True)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
    with pytest.raises(FieldError):  # and as data it is invalid: rejected, never silently skipped
        validate_fields(table, fields)


def test_the_header_after_the_first_line_is_data_with_its_reason() -> None:
    assert header_problem(JOBS, ["id", "job"], first=False) == (
        "a header line, but only a file's first line is taken for its header"
    )


# ---- keys (CONTRACT §2): the table and whether the object is a CSV, plain or gzip ---------------


@pytest.mark.parametrize(
    ("key", "table"),
    [
        ("hired_employees/2021/07.csv", "hired_employees"),
        ("hired_employees/2021.csv.gz", "hired_employees"),
        ("jobs.csv", "jobs"),
        ("jobs.csv.gz", "jobs"),
        ("JOBS.CSV.GZ", "jobs"),
        ("uploads/2021/departments_2021-07.csv.gz", "departments"),
        ("hired_employees_2021-07.csv", "hired_employees"),
        ("departments", "departments"),
        ("jobs/", "jobs"),
        ("other/file.csv", None),
        ("", None),
        ("csv.gz", None),
    ],
)
def test_table_for_key(key: str, table: str | None) -> None:
    assert table_for_key(key) == table


@pytest.mark.parametrize(
    ("key", "csv", "gzip"),
    [
        ("jobs.csv", True, False),
        ("jobs.CSV", True, False),
        ("hired_employees/2021.csv.gz", True, True),
        ("hired_employees/2021.CSV.GZ", True, True),
        ("jobs.gz", False, True),
        ("jobs.csv.zip", False, False),
        ("jobs.xlsx", False, False),
        ("jobs.csv/", False, False),
    ],
)
def test_csv_and_gzip_keys(key: str, csv: bool, gzip: bool) -> None:
    assert (is_csv_key(key), is_gzip_key(key)) == (csv, gzip)


# ---- the fast path: a subset of the rules, read by COPY as validate_fields reads it -----------


@pytest.mark.parametrize(
    "line",
    [
        "1,Harold Vogt,2021-11-07T02:48:42Z,2,96",
        "-5,a,2021-11-07 02:48:42,0,007",
        "123456789,Zoë Müller-Ødegård 李,2021-11-07T02:48:42.5+05:30,12,183",
        "1,x\ty,2020-02-29T23:59:59.999999-14:59,1,1",
        "1,Ana,2021-11-07T02:48:42Z,2,96\r",  # CRLF
    ],
)
def test_fast_lines_are_valid_with_the_values_copy_reads(line: str) -> None:
    assert fast(EMPLOYEES, line)
    plain = line.rstrip("\r")
    assert validate_fields(EMPLOYEES, plain.split(",")) == copy_reading(EMPLOYEES, plain)


@pytest.mark.parametrize(
    "line",
    [
        "1, Ana,2021-11-07T02:48:42Z,2,96",  # needs trimming
        "1,Ana ,2021-11-07T02:48:42Z,2,96",
        "1,Ana\u00a0,2021-11-07T02:48:42Z,2,96",
        "1,\u3000Ana,2021-11-07T02:48:42Z,2,96",
        "1,Ana\x1f,2021-11-07T02:48:42Z,2,96",  # str.strip() trims U+001F too
        "1,a\\b,2021-11-07T02:48:42Z,2,96",  # COPY's escape character
        "1,a\x00b,2021-11-07T02:48:42Z,2,96",
        "1,a\rb,2021-11-07T02:48:42Z,2,96",
        "1,a\udce9b,2021-11-07T02:48:42Z,2,96",  # an undecodable byte
        "1234567890,Ana,2021-11-07T02:48:42Z,2,96",  # 10 digits: checked the full way
        "1,Ana,0999-11-07T02:48:42Z,2,96",  # years outside 1000-2999
        "1,Ana,3000-11-07T02:48:42Z,2,96",
        "1,Ana,2021-11-07T02:48:42.1234567Z,2,96",  # COPY would round, validate_fields truncates
        "1,Ana,2021-11-07T02:48:42+15:00,2,96",
        "1,Ana,2021-11-07T02:48:42+0530,2,96",
        "1,Ana,2021-11-07T02:48:42z,2,96",
        "1,Ana,2021-02-29T02:48:42Z,2,96",
        "1,Ana,2100-02-29T02:48:42Z,2,96",
        "1,,2021-11-07T02:48:42Z,2,96",
        "1,Ana,2021-11-07T02:48:42Z,2",
        "1,Ana,2021-11-07T02:48:42Z,2,96,",
        "id,name,datetime,department_id,job_id",
        "",
        "   ",
        '1,"Ana",2021-11-07T02:48:42Z,2,96',
    ],
)
def test_lines_left_to_the_full_path(line: str) -> None:
    assert not fast(EMPLOYEES, line)


def test_fast_dates_are_exactly_the_real_dates_in_1000_to_2999() -> None:
    years = [
        1000,
        1582,
        1600,
        1700,
        1800,
        1900,
        1999,
        2000,
        2001,
        2004,
        2020,
        2021,
        2023,
        2024,
        2100,
        2400,
        2999,
    ]
    for year in years:
        for month in range(0, 14):
            for day in range(0, 33):
                text = f"{year:04d}-{month:02d}-{day:02d}T12:00:00Z"
                try:
                    real: date | None = date(year, month, day)
                except ValueError:
                    real = None
                assert fast(EMPLOYEES, f"1,a,{text},1,1") == (real is not None), text


def test_fast_times_and_offsets_are_exactly_the_valid_ones() -> None:
    for hour in range(26):
        for minute in (0, 59, 60):
            text = f"2021-07-27T{hour:02d}:{minute:02d}:{minute:02d}"
            valid = hour < 24 and minute < 60
            assert fast(EMPLOYEES, f"1,a,{text},1,1") == valid, text
    for hours in range(0, 17):
        for minutes in (0, 30, 59, 60):
            for sign in "+-":
                offset = f"{sign}{hours:02d}:{minutes:02d}"
                line = f"1,a,2021-07-27T12:00:00{offset},1,1"
                assert fast(EMPLOYEES, line) == (hours <= 14 and minutes < 60), offset
                if fast(EMPLOYEES, line):
                    shift = timedelta(hours=hours, minutes=minutes) * (1 if sign == "+" else -1)
                    expected = datetime(2021, 7, 27, 12, tzinfo=timezone(shift))
                    assert (
                        validate_fields(EMPLOYEES, line.split(","))[2]
                        == expected
                        == copy_reading(EMPLOYEES, line)[2]
                    )


PIECES = [
    *"0123456789",
    "-",
    "+",
    ".",
    ",",
    ":",
    " ",
    "\t",
    "T",
    "Z",
    "z",
    "a",
    "é",
    "李",
    "\u00a0",
    "\u2003",
    "\x1c",
    "\\",
    '"',
    "\x00",
    "\r",
    "\udce9",
    "2021-07-27",
    "T16:02:08",
    " 16:02:08",
    ".5",
    ".1234567",
    "Z",
    "+05:30",
    "-14:59",
    "+15:00",
    "2020-02-29",
    "2021-02-29",
    "1999-12-31T23:59:59",
    "0999-01-01",
]


def random_line(rng: random.Random) -> str:
    """A line built near the shape of a valid row, so both outcomes of the fast pattern are common."""
    fields = list(GOOD)
    for _ in range(rng.randint(0, 3)):
        i = rng.randrange(len(fields))
        pieces = [rng.choice(PIECES) for _ in range(rng.randint(0, 4))]
        if rng.random() < 0.5:
            fields[i] = "".join(pieces)
        else:
            at = rng.randint(0, len(fields[i]))
            fields[i] = fields[i][:at] + "".join(pieces) + fields[i][at:]
    return ",".join(fields)


def test_property_every_fast_line_is_valid_and_read_alike() -> None:
    rng = random.Random(20210727)
    taken = 0
    for _ in range(30_000):
        line = random_line(rng)
        if "\n" in line or not fast(EMPLOYEES, line):
            continue
        taken += 1
        plain = line[:-1] if line.endswith("\r") else line
        assert validate_fields(EMPLOYEES, plain.split(",")) == copy_reading(EMPLOYEES, plain), line
    assert taken > 3_000  # the generator does reach the fast path


@pytest.mark.parametrize("table", [EMPLOYEES, DEPARTMENTS, JOBS])
def test_fast_pattern_matches_runs_of_whole_lines(table: Table) -> None:
    lines = {
        EMPLOYEES: ["1,Ana,2021-07-27T16:02:08Z,1,2", "2,Bob,2021-07-27 16:02:08,3,4"],
        DEPARTMENTS: ["1,Sales", "2,Research and Development"],
        JOBS: ["1,VP Sales", "2,Account Representative II"],
    }[table]
    text = "\n".join(lines) + "\r\n" + "x,bad\n" + lines[0] + "\n"
    m = fast_lines_pattern(table).match(text)
    assert m is not None and m.end() == text.index("x,bad")
    assert fast_lines_pattern(table).match("x,bad\n") is not None  # an empty run, never None
