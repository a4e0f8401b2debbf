"""Pure shaping of the two metrics (CONTRACT §4): ordering, the departments above the mean, CSV.

No I/O: the database hands over one aggregate per (department id, job id) pair, everything else is
decided here, so the order does not depend on the database's locale.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

import msgspec

from services.query.schemas import DepartmentRow, HireRow

HIRES_COLUMNS = ("department", "job", "Q1", "Q2", "Q3", "Q4")
DEPARTMENTS_COLUMNS = ("id", "department", "hired")


class PairHires(msgspec.Struct, frozen=True):
    """Hires of one (department, job) pair in one year, per UTC quarter (from the database)."""

    department_id: int
    department: str
    job_id: int
    job: str
    q1: int
    q2: int
    q3: int
    q4: int

    @property
    def total(self) -> int:
        return self.q1 + self.q2 + self.q3 + self.q4


def _pair_order(p: PairHires) -> tuple[str, str, str, str, int, int]:
    # Department then job compared case-folded (code point by code point, as str compares), ties by
    # the exact text, then by ids.
    return (p.department.casefold(), p.job.casefold(), p.department, p.job, p.department_id, p.job_id)


def hires_rows(pairs: Iterable[PairHires]) -> list[HireRow]:
    """`/metrics/hires`: pairs with at least one hire, in the contract's order."""
    kept = sorted((p for p in pairs if p.total > 0), key=_pair_order)
    return [HireRow(p.department, p.job, p.q1, p.q2, p.q3, p.q4) for p in kept]


def departments_above_mean(pairs: Iterable[PairHires], department_count: int) -> list[DepartmentRow]:
    """`/metrics/departments`: departments whose hires exceed the mean over all `department_count`
    departments (those with no hires count as 0), by hires descending, then id.

    The comparison is exact: hired > total / n  <=>  hired * n > total.
    """
    hired: dict[int, int] = {}
    names: dict[int, str] = {}
    for p in pairs:
        hired[p.department_id] = hired.get(p.department_id, 0) + p.total
        names[p.department_id] = p.department
    total = sum(hired.values())
    if department_count <= 0:
        return []
    above = [d for d, n in hired.items() if n * department_count > total]
    above.sort(key=lambda d: (-hired[d], d))
    return [DepartmentRow(d, names[d], hired[d]) for d in above]


def render_csv(columns: Sequence[str], rows: Iterable[msgspec.Struct]) -> bytes:
    """CSV (RFC 4180 quoting, LF line ends) with a header line; fields in `columns` order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([getattr(row, c) for c in columns])
    return out.getvalue().encode("utf-8")
