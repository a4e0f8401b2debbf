"""`hiring check`: recount the hires projection from hired_employees and compare, cell by cell.

Exit status 0 when the projection (folded cells plus unfolded deltas) equals the recount, 1 when
it does not (the first differing cells are printed; `--repair` then rebuilds it from the table).
"""

from __future__ import annotations

import sys
from typing import TextIO

from services.query import sql
from shared.config import Settings
from shared.db import connect


def describe(report: sql.ProjectionReport) -> list[str]:
    """Lines a person reads: the totals, then each differing cell."""
    lines = [
        f"hired_employees rows: {report.employees}; projection total: {report.projected}"
        f" ({report.cells} folded cells, {report.deltas} unfolded delta rows)"
    ]
    if report.bad_cells:
        lines.append(f"cells at 0 or below (never valid): {report.bad_cells}")
    for d in report.diffs:
        lines.append(
            f"  year {d.year} Q{d.quarter} department {d.department_id} job {d.job_id}:"
            f" projection {d.projected}, recount {d.counted}"
        )
    lines.append("projection OK" if report.ok else "projection DIFFERS from hired_employees")
    return lines


async def run_check(settings: Settings, *, repair: bool = False, out: TextIO = sys.stdout) -> int:
    conn = await connect(settings.db)
    try:
        report = await sql.check_projection(conn)
        for line in describe(report):
            print(line, file=out)
        if report.ok:
            return 0
        if repair:
            cells = await sql.rebuild_projection(conn)
            print(f"rebuilt from hired_employees: {cells} cells", file=out)
        return 1
    finally:
        await conn.close()
