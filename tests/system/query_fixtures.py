"""Fixtures for the query service's tests. A test module loads them with
`pytest_plugins = ("tests.system.query_fixtures",)` and imports names from here only under TYPE_CHECKING
(importing it first would keep pytest from rewriting its asserts).

The app runs on a real port (aiohttp's TestServer) against the session's stack (tests/system/conftest.py):
requests go over HTTP, the database is PostgreSQL, the bucket is the stack's S3 server.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from typing import Any, Protocol

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.query.app import build_app
from services.query.auth import parse_api_keys
from services.query.options import QueryOptions
from tests.system.stack import Stack

Client = TestClient[web.Request, web.Application]
"""A client of a query app on a real port (aiohttp's TestClient)."""


class ClientFactory(Protocol):
    """`make_client`'s call: a client of a query app started for this test."""

    def __call__(self, *, api_keys: str = "", options: QueryOptions | None = None) -> Awaitable[Client]: ...


@pytest.fixture
def aws_credentials(fresh: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stack's test credentials in this process's environment, where the app's S3 client looks."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, fresh.env[var])


@pytest.fixture
async def make_client(fresh: Stack, aws_credentials: None) -> AsyncIterator[ClientFactory]:
    """`await make_client(api_keys=..., options=...)`: a client of a query app started for this test
    (against this test's bucket and the emptied tables); all are closed at the end of the test."""
    clients: list[Client] = []

    async def make(*, api_keys: str = "", options: QueryOptions | None = None) -> Client:
        settings = fresh.settings("hiring-query")
        options = options or QueryOptions()
        if api_keys:
            options = dataclasses.replace(options, api_keys=parse_api_keys(api_keys))
        app = build_app(settings, options)
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def client(make_client: ClientFactory) -> Client:
    """An open (no API keys) query app with the default options."""
    return await make_client()


@pytest.fixture
async def db(fresh: Stack) -> AsyncIterator[asyncpg.Connection]:
    conn = await fresh.connect()
    try:
        yield conn
    finally:
        await conn.close()


# ---- rows straight into the tables (src_object/src_line are the ingest's bookkeeping: 0 here) ---------


class Seed:
    """Inserts rows into the three tables; a later row with the same id replaces the earlier one."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def departments(self, rows: Iterable[tuple[int, str]]) -> None:
        await self.conn.executemany(
            "INSERT INTO departments (id, department, src_object, src_line) VALUES ($1, $2, 0, 0)"
            " ON CONFLICT (id) DO UPDATE SET department = excluded.department",
            list(rows),
        )

    async def jobs(self, rows: Iterable[tuple[int, str]]) -> None:
        await self.conn.executemany(
            "INSERT INTO jobs (id, job, src_object, src_line) VALUES ($1, $2, 0, 0)"
            " ON CONFLICT (id) DO UPDATE SET job = excluded.job",
            list(rows),
        )

    async def employees(self, rows: Iterable[Sequence[Any]]) -> None:
        """(id, name, datetime, department_id, job_id); datetime as ISO 8601 text (offsets honoured)
        or a datetime."""
        await self.conn.executemany(
            "INSERT INTO hired_employees (id, name, datetime, department_id, job_id, src_object, src_line)"
            " VALUES ($1, $2, $3::text::timestamptz, $4, $5, 0, 0)"
            " ON CONFLICT (id) DO UPDATE SET name = excluded.name, datetime = excluded.datetime,"
            " department_id = excluded.department_id, job_id = excluded.job_id",
            [(r[0], r[1], r[2] if isinstance(r[2], str) else r[2].isoformat(), r[3], r[4]) for r in rows],
        )


@pytest.fixture
def seed(db: asyncpg.Connection) -> Seed:
    return Seed(db)
