"""The challenge's own numbers: its three files (tests/data/globant, copies of ../shared/data/globant)
loaded straight into the tables, valid rows only, then both metrics over HTTP."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.test_utils import TestClient

from shared.dictionary import TABLES, FieldError, Value, is_header, validate_fields

if TYPE_CHECKING:
    from tests.system.query_fixtures import Seed

pytest_plugins = ("tests.system.query_fixtures",)

Client = TestClient[web.Request, web.Application]
DATA = Path(__file__).resolve().parents[1] / "data"


def valid_rows(table: str) -> list[tuple[Value, ...]]:
    """The file's valid rows by id, a later line replacing an earlier one; invalid rows skipped."""
    by_id: dict[Value, tuple[Value, ...]] = {}
    with (DATA / "globant" / f"{table}.csv").open(encoding="utf-8-sig", newline="") as f:
        for number, fields in enumerate(csv.reader(f), start=1):
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            if number == 1 and is_header(TABLES[table], fields):
                continue
            try:
                values = validate_fields(TABLES[table], fields)
            except FieldError:
                continue
            by_id[values[0]] = values
    return list(by_id.values())


async def load_challenge_files(seed: Seed) -> None:
    for table in ("departments", "jobs", "hired_employees"):
        rows = valid_rows(table)
        columns = [*TABLES[table].column_names, "src_object", "src_line"]
        await seed.conn.copy_records_to_table(table, records=[(*r, 0, 0) for r in rows], columns=columns)


async def test_the_challenge_numbers_for_2021(client: Client, seed: Seed) -> None:
    await load_challenge_files(seed)
    expected = json.loads((DATA / "globant-2021.json").read_text(encoding="utf-8"))

    response = await client.get("/metrics/departments?year=2021")
    assert response.status == 200
    departments = await response.json()
    assert [(d["department"], d["hired"]) for d in departments] == [
        ("Support", 216),
        ("Engineering", 205),
        ("Human Resources", 201),
        ("Services", 200),
        ("Business Development", 185),
        ("Research and Development", 148),
        ("Marketing", 142),
    ]
    assert [d["id"] for d in departments] == [8, 5, 6, 7, 4, 3, 9]
    assert departments == expected["departments"]

    response = await client.get("/metrics/hires?year=2021")
    assert response.status == 200
    hires = await response.json()
    assert len(hires) == 933
    assert sum(r["Q1"] + r["Q2"] + r["Q3"] + r["Q4"] for r in hires) == 1643
    assert hires == expected["hires"]
    # the default year is 2021
    assert await (await client.get("/metrics/hires")).json() == hires
