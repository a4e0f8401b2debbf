"""`/healthz` (liveness: the process answers, no I/O) and `/readyz` (the database and the bucket)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Final

from aiohttp import web

from services.query import sql
from services.query.endpoints import Endpoint
from services.query.http import encode, json_response
from services.query.schemas import Health, Readiness
from services.query.state import POOL, S3, SETTINGS, STOPPING

CHECK_TIMEOUT: Final = 3.0
_HEALTHY: Final = encode(Health(status="ok"))


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=_HEALTHY, content_type="application/json")


async def _check(probe: Awaitable[object]) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await probe
    except TimeoutError:
        return f"down: no answer in {CHECK_TIMEOUT:g} s"
    except Exception as exc:
        return f"down: {type(exc).__name__}: {exc}".splitlines()[0][:300]
    return "ok"


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    stopping_event = app.get(STOPPING)  # set on SIGTERM: still serving, but no new traffic please
    if stopping_event is not None and stopping_event.is_set():
        stopping = "not checked: shutting down"
        body = Readiness(status="not ready", database=stopping, bucket=stopping, error="shutting down")
        return json_response(body, status=503)
    database, bucket = await asyncio.gather(
        _check(sql.ping(app[POOL])),
        _check(app[S3].head_bucket(Bucket=app[SETTINGS].bucket)),
    )
    down = [name for name, state in (("database", database), ("bucket", bucket)) if state != "ok"]
    if down:
        body = Readiness(
            status="not ready",
            database=database,
            bucket=bucket,
            error=f"not ready: {' and '.join(down)} down",
        )
        return json_response(body, status=503)
    return json_response(Readiness(status="ready", database=database, bucket=bucket))


ENDPOINTS: Final = (
    Endpoint(
        "GET", "/healthz", healthz, "Liveness: the process answers", scope=None, responses={200: Health}
    ),
    Endpoint(
        "GET",
        "/readyz",
        readyz,
        "Readiness: the database and the raw bucket are reachable",
        scope=None,
        responses={200: Readiness, 503: Readiness},
    ),
)
