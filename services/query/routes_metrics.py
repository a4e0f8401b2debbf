"""`GET /metrics/hires` and `GET /metrics/departments` (CONTRACT §4), answered from the metrics cache."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from services.query import formats
from services.query.endpoints import Endpoint, Param
from services.query.http import CSV, VARY_ACCEPT, csv_response, raw_json_response
from services.query.metrics import DEPARTMENTS_COLUMNS, HIRES_COLUMNS
from services.query.params import int_param, single
from services.query.schemas import DepartmentRow, ErrorBody, HireRow
from services.query.state import METRICS

DEFAULT_YEAR: Final = 2021


def parse_year(raw: str | None) -> int:
    """`?year=`: an integer from 1 to 9999 (default 2021); anything else is a 400."""
    return int_param(raw, "year", DEFAULT_YEAR, 1, 9999)


async def hires(request: web.Request) -> web.Response:
    chosen = formats.pick(request)
    year = await request.app[METRICS].year(parse_year(single(request.query, "year")))
    if chosen == CSV:
        return csv_response(year.hires_csv, headers=VARY_ACCEPT)
    return raw_json_response(year.hires_json, headers=VARY_ACCEPT)


async def departments(request: web.Request) -> web.Response:
    chosen = formats.pick(request)
    year = await request.app[METRICS].year(parse_year(single(request.query, "year")))
    if chosen == CSV:
        return csv_response(year.departments_csv, headers=VARY_ACCEPT)
    return raw_json_response(year.departments_json, headers=VARY_ACCEPT)


_YEAR = Param(
    "year",
    "query",
    {"type": "integer", "minimum": 1, "maximum": 9999, "default": DEFAULT_YEAR},
    "the calendar year (UTC)",
)
_ERRORS = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 406: ErrorBody}

ENDPOINTS: Final = (
    Endpoint(
        "GET",
        "/metrics/hires",
        hires,
        "Hires per department and job in a year, by UTC quarter, ordered by department then job",
        scope="read",
        responses={200: list[HireRow], **_ERRORS},
        params=(_YEAR,),
        csv_columns=HIRES_COLUMNS,
    ),
    Endpoint(
        "GET",
        "/metrics/departments",
        departments,
        "Departments that hired more than the mean over all departments in a year, most hires first",
        scope="read",
        responses={200: list[DepartmentRow], **_ERRORS},
        params=(_YEAR,),
        csv_columns=DEPARTMENTS_COLUMNS,
    ),
)
