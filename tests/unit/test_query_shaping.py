"""Pure unit tests of the query service's shaping: metric order, the mean, CSV, Accept, year."""

from __future__ import annotations

import csv
import io
import random

import pytest

from services.query.errors import ApiError
from services.query.http import wants_csv
from services.query.metrics import (
    DEPARTMENTS_COLUMNS,
    HIRES_COLUMNS,
    PairHires,
    departments_above_mean,
    hires_rows,
    render_csv,
)
from services.query.routes_metrics import parse_year
from services.query.schemas import DepartmentRow, HireRow


def pair(department_id: int, department: str, job_id: int, job: str, *quarters: int) -> PairHires:
    q = (*quarters, 0, 0, 0, 0)[:4]
    return PairHires(department_id, department, job_id, job, *q)


def test_hires_order_is_case_folded_then_exact_then_ids_whatever_the_input_order() -> None:
    pairs = [
        pair(1, "sales", 1, "Clerk", 1),
        pair(2, "Sales", 1, "Clerk", 1),
        pair(3, "Ops", 2, "GIS Technical Architect", 1),
        pair(3, "Ops", 1, "General Manager", 1),
        pair(4, "Ops", 1, "General Manager", 1),
        pair(5, "Ops", 3, "general manager", 1),
        pair(6, "ÉCOLE", 1, "Clerk", 1),
        pair(7, "ecole", 1, "Clerk", 1),
        pair(8, "Zeta", 1, "Clerk", 1),
        pair(9, "ß", 1, "Clerk", 1),
        pair(10, "SS", 1, "Clerk", 1),
    ]
    expected = [
        ("ecole", "Clerk"),  # 'e' < 'o' < 's' < 'z' < 'é' (code points after folding)
        ("Ops", "General Manager"),  # department 3
        ("Ops", "General Manager"),  # department 4 (same text: by id)
        ("Ops", "general manager"),  # same folded job: exact text 'G' < 'g'
        ("Ops", "GIS Technical Architect"),
        ("Sales", "Clerk"),
        ("sales", "Clerk"),
        ("SS", "Clerk"),  # 'ß'.casefold() == 'ss': exact text 'SS' < 'ß'
        ("ß", "Clerk"),
        ("Zeta", "Clerk"),
        ("ÉCOLE", "Clerk"),
    ]
    for seed in range(5):
        shuffled = pairs[:]
        random.Random(seed).shuffle(shuffled)
        assert [(r.department, r.job) for r in hires_rows(shuffled)] == expected


def test_hires_keep_only_pairs_with_hires_and_carry_quarters() -> None:
    rows = hires_rows([pair(1, "Ops", 1, "Clerk", 0, 0, 0, 0), pair(1, "Ops", 2, "Driver", 0, 2, 0, 5)])
    assert rows == [HireRow("Ops", "Driver", 0, 2, 0, 5)]


def test_departments_above_the_mean_of_all_departments() -> None:
    pairs = [pair(1, "A", 1, "j", 5, 5), pair(2, "B", 1, "j", 3, 3), pair(2, "B", 2, "k", 0, 0, 0, 0)]
    # totals 10 and 6; with 2 departments the mean is 8
    assert departments_above_mean(pairs, 2) == [DepartmentRow(1, "A", 10)]
    # a third department with no hires: mean 16 / 3
    assert departments_above_mean(pairs, 3) == [DepartmentRow(1, "A", 10), DepartmentRow(2, "B", 6)]
    assert departments_above_mean([], 3) == []
    assert departments_above_mean([], 0) == []


def test_departments_mean_is_compared_exactly() -> None:
    # 3 departments, 1 + 1 + 1 hires: mean exactly 1, nobody above (no float rounding)
    pairs = [pair(d, f"D{d}", 1, "j", 1) for d in (1, 2, 3)]
    assert departments_above_mean(pairs, 3) == []
    # 10 + 10 + 11 over 3: 11 > 10.33
    pairs = [pair(1, "a", 1, "j", 10), pair(2, "b", 1, "j", 10), pair(3, "c", 1, "j", 11)]
    assert departments_above_mean(pairs, 3) == [DepartmentRow(3, "c", 11)]


def test_departments_ties_by_id() -> None:
    pairs = [pair(9, "Z", 1, "j", 4), pair(2, "Y", 1, "j", 4), pair(5, "X", 1, "j", 3)]
    assert [d.id for d in departments_above_mean(pairs, 5)] == [2, 9, 5]  # mean 11 / 5


def test_csv_has_a_header_and_rfc4180_quoting() -> None:
    rows = [HireRow('R&D, "Labs"', "Clerk\nNight", 1, 0, 0, 2), HireRow("Ops", "Ärzte", 0, 0, 1, 0)]
    text = render_csv(HIRES_COLUMNS, rows).decode("utf-8")
    assert text.startswith("department,job,Q1,Q2,Q3,Q4\n")
    assert list(csv.reader(io.StringIO(text))) == [
        list(HIRES_COLUMNS),
        ['R&D, "Labs"', "Clerk\nNight", "1", "0", "0", "2"],
        ["Ops", "Ärzte", "0", "0", "1", "0"],
    ]
    assert (
        render_csv(DEPARTMENTS_COLUMNS, [DepartmentRow(8, "Support", 216)])
        == b"id,department,hired\n8,Support,216\n"
    )


@pytest.mark.parametrize(
    ("accept", "csv_wanted"),
    [
        ("", False),
        ("*/*", False),
        ("application/json", False),
        ("text/csv", True),
        ("TEXT/CSV", True),
        ("text/csv; charset=utf-8", True),
        ("text/csv, */*", True),
        ("text/*", True),
        ("application/json;q=0, */*", True),
        ("text/*, application/json", False),
        ("text/csv, application/json", False),
        ("text/csv;q=0.9, application/json;q=0.8", True),
        ("application/json;q=0.9, text/csv", True),
        ("text/csv;q=0", False),
        ("text/html, text/csv;q=0.1", True),
    ],
)
def test_accept_negotiation(accept: str, csv_wanted: bool) -> None:
    assert wants_csv(accept) is csv_wanted


@pytest.mark.parametrize(
    ("raw", "year"), [(None, 2021), ("2021", 2021), ("1", 1), ("9999", 9999), ("0042", 42)]
)
def test_year_values(raw: str | None, year: int) -> None:
    assert parse_year(raw) == year


@pytest.mark.parametrize("raw", ["", "0", "10000", "-2021", "2021.5", "twenty", "٢٠٢١", "1e3"])
def test_bad_years(raw: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_year(raw)
    assert caught.value.status == 400
