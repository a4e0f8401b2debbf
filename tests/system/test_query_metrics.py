"""The two metrics over HTTP against PostgreSQL, one edge case per test (CONTRACT §4)."""

from __future__ import annotations

import asyncio
import csv
import io
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

if TYPE_CHECKING:
    from tests.system.query_fixtures import ClientFactory, Seed

pytest_plugins = ("tests.system.query_fixtures",)

Client = TestClient[web.Request, web.Application]


async def _get(client: Client, path: str) -> Any:
    response = await client.get(path)
    assert response.status == 200, await response.text()
    return await response.json()


async def test_department_with_no_hires_lowers_the_mean(client: Client, seed: Seed) -> None:
    await seed.departments([(1, "Alpha"), (2, "Beta"), (3, "Gamma")])
    await seed.jobs([(1, "Clerk")])
    alpha = [(i, f"a{i}", "2021-02-01T00:00:00Z", 1, 1) for i in range(1, 11)]  # 10 hires
    beta = [(i, f"b{i}", "2021-05-01T00:00:00Z", 2, 1) for i in range(11, 17)]  # 6 hires
    await seed.employees(alpha + beta)
    # mean over all three departments: 16 / 3 = 5.33 -> Alpha and Beta are above it
    assert await _get(client, "/metrics/departments?year=2021") == [
        {"id": 1, "department": "Alpha", "hired": 10},
        {"id": 2, "department": "Beta", "hired": 6},
    ]
    await seed.conn.execute("DELETE FROM departments WHERE id = 3")
    # mean over the two left: 8 -> only Alpha
    assert await _get(client, "/metrics/departments?year=2021") == [
        {"id": 1, "department": "Alpha", "hired": 10}
    ]


async def test_hired_equal_to_the_mean_is_not_above_it(client: Client, seed: Seed) -> None:
    await seed.departments([(1, "Alpha"), (2, "Beta")])
    await seed.jobs([(1, "Clerk")])
    await seed.employees([(1, "a", "2021-01-05T00:00:00Z", 1, 1), (2, "b", "2021-01-05T00:00:00Z", 2, 1)])
    assert await _get(client, "/metrics/departments") == []


async def test_departments_ordered_by_hired_desc_then_id(client: Client, seed: Seed) -> None:
    await seed.departments([(7, "Seven"), (3, "Three"), (5, "Five"), (9, "Nine")])
    await seed.jobs([(1, "Clerk")])
    rows, next_id = [], 1
    for department, hires in ((7, 4), (3, 4), (5, 6), (9, 0)):
        for _ in range(hires):
            rows.append((next_id, "x", "2021-06-01T12:00:00Z", department, 1))
            next_id += 1
    await seed.employees(rows)
    # mean 14 / 4 = 3.5
    assert await _get(client, "/metrics/departments") == [
        {"id": 5, "department": "Five", "hired": 6},
        {"id": 3, "department": "Three", "hired": 4},
        {"id": 7, "department": "Seven", "hired": 4},
    ]


async def test_quarters_are_utc_whatever_the_offset_or_the_database_time_zone(
    make_client: ClientFactory, seed: Seed
) -> None:
    await seed.departments([(1, "Ops")])
    await seed.jobs([(1, "Clerk")])
    await seed.employees(
        [
            (1, "last second of Q1", "2021-03-31T23:59:59Z", 1, 1),  # Q1
            (2, "first second of Q2", "2021-04-01T00:00:00Z", 1, 1),  # Q2
            (3, "Q2 locally, Q1 in UTC", "2021-04-01T01:00:00+02:00", 1, 1),  # 2021-03-31T23:00Z: Q1
            (4, "2020 locally, 2021 in UTC", "2020-12-31T23:30:00-01:00", 1, 1),  # 2021-01-01T00:30Z: Q1
            (5, "2021 locally, 2020 in UTC", "2021-01-01T00:30:00+01:00", 1, 1),  # 2020: not counted
            (6, "last microsecond of 2021", "2021-12-31T23:59:59.999999Z", 1, 1),  # Q4
            (7, "2022 locally, Q4 in UTC", "2022-01-01T00:30:00+01:00", 1, 1),  # Q4
            (8, "Q3 locally, Q4 in UTC", "2021-09-30T22:00:00-05:00", 1, 1),  # 2021-10-01T03:00Z: Q4
            (9, "first second of 2022", "2022-01-01T00:00:00Z", 1, 1),  # 2022: not counted
        ],
    )
    database = await seed.conn.fetchval("SELECT current_database()")
    # The pool's sessions run in a zone far from UTC: quarters must not move.
    await seed.conn.execute(f"ALTER DATABASE \"{database}\" SET timezone TO 'Pacific/Kiritimati'")
    try:
        client = await make_client()
        assert await _get(client, "/metrics/hires?year=2021") == [
            {"department": "Ops", "job": "Clerk", "Q1": 3, "Q2": 1, "Q3": 0, "Q4": 3}
        ]
        assert await _get(client, "/metrics/hires?year=2020") == [
            {"department": "Ops", "job": "Clerk", "Q1": 0, "Q2": 0, "Q3": 0, "Q4": 1}
        ]
        assert await _get(client, "/metrics/hires?year=2022") == [
            {"department": "Ops", "job": "Clerk", "Q1": 1, "Q2": 0, "Q3": 0, "Q4": 0}
        ]
    finally:
        await seed.conn.execute(f'ALTER DATABASE "{database}" RESET timezone')


async def test_hires_ordered_case_folded_then_exact_text_then_ids(client: Client, seed: Seed) -> None:
    await seed.departments(
        [
            (1, "sales"),
            (2, "Sales"),
            (3, "Ops"),
            (4, "Ops"),
            (5, "Zoo"),
            (6, "Ärzte"),
            (7, "STRASSE"),
            (8, "Straße"),
        ],
    )
    await seed.jobs([(1, "GIS Technical Architect"), (2, "General Manager"), (3, "analyst")])
    employees = []
    for n, (department, job) in enumerate(
        [(1, 1), (2, 1), (3, 1), (4, 1), (3, 2), (3, 3), (5, 1), (6, 1), (7, 1), (8, 1)], start=1
    ):
        employees.append((n, f"e{n}", "2021-07-01T00:00:00Z", department, job))
    await seed.employees(employees)
    got = [(r["department"], r["job"]) for r in await _get(client, "/metrics/hires")]
    assert got == [
        ("Ops", "analyst"),  # case-folded: 'analyst' < 'general manager' < 'gis technical architect'
        ("Ops", "General Manager"),  # (in C collation 'GIS' would sort before 'General')
        ("Ops", "GIS Technical Architect"),  # department 3 ...
        ("Ops", "GIS Technical Architect"),  # ... then department 4: the same names, by id
        ("Sales", "GIS Technical Architect"),  # 'sales' == 'sales' case-folded: exact text 'Sales' < 'sales'
        ("sales", "GIS Technical Architect"),
        ("STRASSE", "GIS Technical Architect"),  # 'Straße'.casefold() == 'strasse': exact text decides
        ("Straße", "GIS Technical Architect"),
        ("Zoo", "GIS Technical Architect"),  # code points after case folding: 'z' < 'ä'
        ("Ärzte", "GIS Technical Architect"),
    ]


async def test_employees_with_unknown_department_or_job_are_not_counted(client: Client, seed: Seed) -> None:
    await seed.departments([(1, "Ops"), (2, "Sales")])
    await seed.jobs([(1, "Clerk")])
    await seed.employees(
        [
            (1, "counted", "2021-02-01T00:00:00Z", 1, 1),
            (2, "counted", "2021-02-01T00:00:00Z", 1, 1),
            (3, "no such department", "2021-02-01T00:00:00Z", 99, 1),
            (4, "no such job", "2021-02-01T00:00:00Z", 2, 99),
            (5, "neither", "2021-02-01T00:00:00Z", 98, 98),
        ],
    )
    assert await _get(client, "/metrics/hires") == [
        {"department": "Ops", "job": "Clerk", "Q1": 2, "Q2": 0, "Q3": 0, "Q4": 0}
    ]
    # Sales' only employee has no job: it counts 0, so the mean is 2 / 2 = 1
    assert await _get(client, "/metrics/departments") == [{"id": 1, "department": "Ops", "hired": 2}]


async def test_year_without_data_gives_empty_lists(client: Client, seed: Seed) -> None:
    await seed.departments([(1, "Ops")])
    await seed.jobs([(1, "Clerk")])
    await seed.employees([(1, "a", "2021-02-01T00:00:00Z", 1, 1)])
    for year in ("1999", "1", "9999"):
        assert await _get(client, f"/metrics/hires?year={year}") == []
        assert await _get(client, f"/metrics/departments?year={year}") == []


async def test_year_defaults_to_2021(client: Client, seed: Seed) -> None:
    await seed.departments([(1, "Ops")])
    await seed.jobs([(1, "Clerk")])
    await seed.employees([(1, "a", "2021-02-01T00:00:00Z", 1, 1), (2, "b", "2022-02-01T00:00:00Z", 1, 1)])
    assert await _get(client, "/metrics/hires") == await _get(client, "/metrics/hires?year=2021")
    assert await _get(client, "/metrics/hires") == [
        {"department": "Ops", "job": "Clerk", "Q1": 1, "Q2": 0, "Q3": 0, "Q4": 0}
    ]


@pytest.mark.parametrize(
    "year", ["abc", "0", "10000", "2021.0", "-1", "", "+2021", "2O21", "99999999999999999999"]
)
@pytest.mark.parametrize("path", ["/metrics/hires", "/metrics/departments"])
async def test_bad_year_is_400(client: Client, path: str, year: str) -> None:
    response = await client.get(path, params={"year": year})
    assert response.status == 400
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error"} and "year" in body["error"]


async def test_csv_when_accept_asks_for_it(client: Client, seed: Seed) -> None:
    await seed.departments([(1, 'Research, "R&D"'), (2, "Ops")])
    await seed.jobs([(1, "Clerk")])
    await seed.employees(
        [
            (1, "a", "2021-02-01T00:00:00Z", 1, 1),
            (2, "b", "2021-08-01T00:00:00Z", 1, 1),
            (3, "c", "2021-08-01T00:00:00Z", 2, 1),
        ],
    )
    response = await client.get("/metrics/hires", headers={"Accept": "text/csv"})
    assert response.status == 200
    assert response.content_type == "text/csv"
    text = await response.text()
    assert list(csv.reader(io.StringIO(text))) == [
        ["department", "job", "Q1", "Q2", "Q3", "Q4"],
        ["Ops", "Clerk", "0", "0", "1", "0"],
        ['Research, "R&D"', "Clerk", "1", "0", "1", "0"],
    ]
    response = await client.get(
        "/metrics/departments", headers={"Accept": "text/csv;q=0.9, application/json;q=0.5"}
    )
    assert response.content_type == "text/csv"
    assert list(csv.reader(io.StringIO(await response.text()))) == [
        ["id", "department", "hired"],
        ["1", 'Research, "R&D"', "2"],
    ]
    # JSON by default, and when JSON is preferred
    for accept in ("application/json", "*/*", "application/json, text/csv;q=0.5"):
        response = await client.get("/metrics/departments", headers={"Accept": accept})
        assert response.content_type == "application/json", accept


async def test_csv_of_a_year_without_data_is_the_header_alone(client: Client) -> None:
    response = await client.get("/metrics/hires?year=1999", headers={"Accept": "text/csv"})
    assert await response.text() == "department,job,Q1,Q2,Q3,Q4\n"
    response = await client.get("/metrics/departments?year=1999", headers={"Accept": "text/csv"})
    assert await response.text() == "id,department,hired\n"


async def test_cached_results_follow_every_committed_write(client: Client, seed: Seed) -> None:
    await seed.departments([(1, "Ops"), (2, "Sales")])
    await seed.jobs([(1, "Clerk")])
    await seed.employees([(1, "a", "2021-02-01T00:00:00Z", 1, 1)])
    assert await _get(client, "/metrics/departments") == [{"id": 1, "department": "Ops", "hired": 1}]
    assert await _get(client, "/metrics/departments") == [{"id": 1, "department": "Ops", "hired": 1}]
    # a new employee
    await seed.employees([(2, "b", "2021-02-02T00:00:00Z", 1, 1)])
    assert await _get(client, "/metrics/hires") == [
        {"department": "Ops", "job": "Clerk", "Q1": 2, "Q2": 0, "Q3": 0, "Q4": 0}
    ]
    # a renamed department, inside a transaction: invisible until it commits
    async with seed.conn.transaction():
        await seed.conn.execute("UPDATE departments SET department = 'Operations' WHERE id = 1")
        assert (await _get(client, "/metrics/departments"))[0]["department"] == "Ops"
    assert (await _get(client, "/metrics/departments"))[0]["department"] == "Operations"
    # an employee moved to another year, concurrent readers
    await seed.conn.execute("UPDATE hired_employees SET datetime = '2020-05-05T00:00:00Z' WHERE id = 2")
    answers = await asyncio.gather(*(_get(client, "/metrics/hires") for _ in range(20)))
    assert all(
        a == [{"department": "Operations", "job": "Clerk", "Q1": 1, "Q2": 0, "Q3": 0, "Q4": 0}]
        for a in answers
    )
    # everything gone
    await seed.conn.execute("TRUNCATE hired_employees")
    assert await _get(client, "/metrics/hires") == []
    assert await _get(client, "/metrics/departments") == []
