"""The query service's composition root: `build_app` wires settings, options, the database pool, the
S3 client, the metrics cache and the routes; `serve` puts it on a port until told to stop.

`hiring query` (services/cli.py) is the one entry point: it reads the settings and options once,
handles the signals, and calls these two."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Final

import structlog
from aiohttp import web
from opentelemetry import trace

from services.query import (
    cors,
    health,
    openapi,
    projection,
    routes_backups,
    routes_dashboard,
    routes_history,
    routes_metrics,
    routes_presign,
    routes_rows,
    routes_uploads,
)
from services.query.auth import auth_middleware
from services.query.cache import MetricsCache
from services.query.endpoints import Endpoint
from services.query.errors import error_middleware, expect_continue
from services.query.options import QueryOptions
from services.query.state import METRICS, OPENAPI, OPTIONS, POOL, S3, SETTINGS, STOPPING, TELEMETRY
from services.query.tracing import telemetry_middleware
from shared import db
from shared.aws import AwsClients
from shared.config import Settings
from shared.telemetry import Telemetry, setup_telemetry

log = structlog.get_logger()
SCOPE: Final = "hiring.query"

ENDPOINTS: Final[tuple[Endpoint, ...]] = (
    *health.ENDPOINTS,
    *routes_uploads.ENDPOINTS,
    *routes_history.ENDPOINTS,
    *routes_presign.ENDPOINTS,
    *routes_rows.ENDPOINTS,
    *routes_backups.ENDPOINTS,
    *routes_metrics.ENDPOINTS,
    *openapi.ENDPOINTS,
    *routes_dashboard.ENDPOINTS,
)


class ListenError(Exception):
    """The API's address cannot be bound (in use, or not ours); str() is one line saying so."""


def build_app(
    settings: Settings, options: QueryOptions, *, telemetry: Telemetry | None = None
) -> web.Application:
    """The query API: `settings` are CONTRACT §3's, `options` the service's own (options.load_options).
    Telemetry: `telemetry` (the caller shuts it down), else built from `settings.telemetry` and shut
    down (flushed) with the app."""
    by_route: dict[tuple[str, str], Endpoint] = {(ep.method, ep.path): ep for ep in ENDPOINTS}
    owned = telemetry is None
    telemetry = setup_telemetry(settings.telemetry) if telemetry is None else telemetry
    middlewares = [error_middleware, auth_middleware(options.api_keys, by_route)]
    app = web.Application()
    if options.cors_origins:
        cors.install(app, middlewares, options.cors_origins)
    if telemetry.enabled:  # outermost: its span sees the final status of every answer
        middlewares.insert(0, telemetry_middleware(telemetry.tracer(SCOPE), telemetry.meter(SCOPE)))
    app.middlewares.extend(middlewares)
    app[TELEMETRY] = telemetry
    if owned:
        app.on_cleanup.append(_shutdown_telemetry)
    app[SETTINGS] = settings
    app[OPTIONS] = options
    app[STOPPING] = asyncio.Event()
    app[OPENAPI] = openapi.render(ENDPOINTS, secured=options.api_keys.enabled)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(projection.folding)  # keeps the hires projection's backlog small
    app.cleanup_ctx.append(_s3)
    _add_routes(app, ENDPOINTS)
    return app


def _add_routes(app: web.Application, endpoints: Sequence[Endpoint]) -> None:
    default_expect = expect_continue()
    for ep in endpoints:
        expect = ep.expect or default_expect
        if ep.method == "GET":  # and HEAD
            app.router.add_get(ep.path, ep.handler, expect_handler=expect)
        else:
            app.router.add_route(ep.method, ep.path, ep.handler, expect_handler=expect)


def _tracer(app: web.Application) -> trace.Tracer | None:
    """The tracer for the pool and the S3 client, None (nothing wrapped at all) when tracing is off."""
    telemetry = app[TELEMETRY]
    return telemetry.tracer(SCOPE) if telemetry.enabled else None


async def _shutdown_telemetry(app: web.Application) -> None:
    await asyncio.to_thread(app[TELEMETRY].shutdown)  # flush the last spans and metrics


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    pool = await db.create_pool(
        settings.db, min_size=1, max_size=app[OPTIONS].db_pool_size, tracer=_tracer(app)
    )
    try:
        async with pool.acquire() as conn:
            applied = await db.migrate(conn)
        if applied:
            log.info("db.migrated", applied=applied)
        app[POOL] = pool
        app[METRICS] = MetricsCache(pool)
        yield
    finally:
        await pool.close()


async def _s3(app: web.Application) -> AsyncIterator[None]:
    async with AwsClients(app[SETTINGS].aws, tracer=_tracer(app)).s3() as s3:
        app[S3] = s3
        yield


async def serve(
    app: web.Application,
    stop: asyncio.Event,
    *,
    host: str = "0.0.0.0",
    port: int = 8080,
    sock: socket.socket | None = None,
    started: asyncio.Event | None = None,
) -> None:
    """Serve `app` on host:port, or on `sock` (a listening socket handed over by a supervisor), until
    `stop` is set; then finish the requests in flight and close the pool and the S3 client.
    `started` is set once it listens. ListenError when the port cannot be bound."""
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=10.0,
        # also bounds how long a connection may take to send a request head (slow clients)
        keepalive_timeout=app[OPTIONS].header_timeout,
    )
    await runner.setup()
    try:
        site: web.BaseSite = (
            web.SockSite(runner, sock) if sock is not None else web.TCPSite(runner, host, port)
        )
        try:
            await site.start()
        except OSError as exc:
            raise ListenError(f"cannot listen on {site.name}: {exc.strerror or exc}") from exc
        settings, options = app[SETTINGS], app[OPTIONS]
        log.info(
            "query.listening",
            address=site.name,
            database=settings.db.dsn_summary(),
            bucket=settings.bucket,
            api_keys=len(options.api_keys) or "none (open)",
        )
        if started is not None:
            started.set()
        await stop.wait()
        grace = app[OPTIONS].shutdown_grace_seconds
        if grace:
            # API Gateway (through Cloud Map) or a load balancer may route here for a while yet:
            # keep answering, with /readyz failing, before the listener closes
            app[STOPPING].set()
            log.info("query.draining", seconds=grace)
            await asyncio.sleep(grace)
        log.info("query.stopping")
    finally:
        await runner.cleanup()
    log.info("query.stopped")
