"""Issue 12 item 10: configurable CORS (off by default) and read timeouts for slow clients."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from services.query.auth import parse_api_keys
from services.query.options import QueryOptions, load_options
from shared.config import ConfigError
from tests.system.query_server import query_server

if TYPE_CHECKING:
    from tests.system.query_fixtures import Client, ClientFactory
    from tests.system.stack import Stack

pytest_plugins = ("tests.system.query_fixtures",)
APP = "https://dashboard.example.com"


def test_cors_origins_setting() -> None:
    assert load_options({}).cors_origins == frozenset()
    options = load_options({"HIRING_CORS_ORIGINS": " https://A.example.com , http://localhost:3000,"})
    assert options.cors_origins == {"https://a.example.com", "http://localhost:3000"}
    assert load_options({"HIRING_CORS_ORIGINS": "*"}).cors_origins == {"*"}
    for bad in ("example.com", "ftp://x.example.com", "https://x.example.com/path"):
        with pytest.raises(ConfigError, match="HIRING_CORS_ORIGINS"):
            load_options({"HIRING_CORS_ORIGINS": bad})
    with pytest.raises(ConfigError, match="HIRING_HTTP_BODY_TIMEOUT"):
        load_options({"HIRING_HTTP_BODY_TIMEOUT": "0"})


async def test_no_cors_headers_by_default(client: Client) -> None:
    response = await client.get("/metrics/hires", headers={"Origin": APP})
    assert response.status == 200
    assert "Access-Control-Allow-Origin" not in response.headers
    response = await client.options(
        "/metrics/hires", headers={"Origin": APP, "Access-Control-Request-Method": "GET"}
    )
    assert response.status == 405  # no preflight answered: the browser refuses the call
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_allowed_origins_get_cors_headers_even_with_api_keys(make_client: ClientFactory) -> None:
    options = dataclasses.replace(
        QueryOptions(), cors_origins=frozenset({APP}), api_keys=parse_api_keys("k3y-for-dash:read")
    )
    client = await make_client(options=options)
    # the preflight carries no key and is answered before the key check
    response = await client.options(
        "/metrics/hires",
        headers={
            "Origin": APP,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == APP
    assert "GET" in response.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    # the real request, with and without the key: both answers readable by the page (errors too)
    for headers, status in (({"Authorization": "Bearer k3y-for-dash"}, 200), ({}, 401)):
        response = await client.get("/metrics/hires", headers={"Origin": APP, **headers})
        assert response.status == status
        assert response.headers["Access-Control-Allow-Origin"] == APP
        assert "Origin" in response.headers["Vary"]
        assert ("Accept" in response.headers["Vary"]) is (status == 200)  # the negotiated answer's Vary kept
    # another origin: no CORS headers, preflight refused
    other = "https://evil.example.com"
    response = await client.get(
        "/metrics/hires", headers={"Origin": other, "Authorization": "Bearer k3y-for-dash"}
    )
    assert "Access-Control-Allow-Origin" not in response.headers
    response = await client.options(
        "/metrics/hires", headers={"Origin": other, "Access-Control-Request-Method": "GET"}
    )
    assert response.status == 403 and "Access-Control-Allow-Origin" not in response.headers
    # a preflight for a path the API does not have
    response = await client.options(
        "/nowhere", headers={"Origin": APP, "Access-Control-Request-Method": "GET"}
    )
    assert response.status == 404


# ---- slow clients, against a real `hiring query` ----------------------------------------------------


@pytest.fixture
def slow_api(stack: Stack) -> Iterator[str]:
    env = {**stack.env, "HIRING_HTTP_HEADER_TIMEOUT": "2", "HIRING_HTTP_BODY_TIMEOUT": "2"}
    with query_server(env, ready="/healthz") as url:
        yield url


async def test_a_request_head_that_never_ends_is_cut_off(slow_api: str) -> None:
    host, port = slow_api.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    started = time.monotonic()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    await writer.drain()
    for _ in range(3):  # a slowloris: a byte now and then, never the end of the head
        await asyncio.sleep(0.5)
        writer.write(b"a")
        await writer.drain()
    assert await asyncio.wait_for(reader.read(), 15) == b""  # closed, nothing answered
    assert time.monotonic() - started < 12
    writer.close()


async def test_a_stalled_upload_body_is_408(slow_api: str) -> None:
    host, port = slow_api.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /upload?table=jobs HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
        b"Content-Length: 1000\r\n\r\n1,Clerk\n"
    )
    await writer.drain()
    started = time.monotonic()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
    assert head.startswith(b"HTTP/1.1 408"), head
    assert time.monotonic() - started < 12
    length = int(
        next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1]
    )
    body = json.loads(await reader.readexactly(length))
    assert "stalled" in body["error"]
    writer.close()
