"""Liveness, readiness and the JSON shape of every error, over HTTP."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.query.app import build_app
from services.query.options import QueryOptions

if TYPE_CHECKING:
    from tests.system.stack import Stack

pytest_plugins = ("tests.system.query_fixtures",)

Client = TestClient[web.Request, web.Application]


async def test_liveness_and_readiness(client: Client) -> None:
    response = await client.get("/healthz")
    assert (response.status, await response.json()) == (200, {"status": "ok"})
    response = await client.get("/readyz")
    assert response.status == 200
    assert await response.json() == {"status": "ready", "database": "ok", "bucket": "ok", "error": None}


async def test_not_ready_when_the_bucket_is_missing(fresh: Stack, aws_credentials: None) -> None:
    settings = msgspec.structs.replace(fresh.settings("hiring-query"), bucket="no-such-bucket-here")
    async with TestClient(TestServer(build_app(settings, QueryOptions()))) as client:
        response = await client.get("/readyz")
        assert response.status == 503
        body = await response.json()
        assert body["database"] == "ok"
        assert body["bucket"].startswith("down:")
        assert body["error"] == "not ready: bucket down"
        assert (await client.get("/healthz")).status == 200  # alive all the same


async def test_errors_are_json_never_html_or_tracebacks(client: Client) -> None:
    for method, path, status, words in [
        ("GET", "/nowhere", 404, "no such endpoint"),
        ("GET", "/metrics", 404, "no such endpoint"),
        ("DELETE", "/metrics/hires", 405, "not allowed"),
        ("PUT", "/upload", 405, "allowed: POST"),
        ("GET", "/upload", 405, "not allowed"),
    ]:
        response = await client.request(method, path)
        assert response.status == status, path
        assert response.content_type == "application/json"
        body = await response.json()
        assert list(body) == ["error"] and words in body["error"], body
    response = await client.delete("/metrics/hires")
    assert "GET" in response.headers["Allow"]
