"""The query service's composition root: `build_app` wires settings, the database pool, the S3 client,
the metrics cache and the routes; `serve` / `run` put it on a port until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Final

import structlog
from aiohttp import web
from opentelemetry import trace

from services.query import (
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
from services.query.auth import ApiKeys, auth_middleware, parse_api_keys
from services.query.cache import MetricsCache
from services.query.endpoints import Endpoint
from services.query.errors import error_middleware
from services.query.options import QueryOptions, load_options
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


def build_app(
    settings: Settings,
    *,
    api_keys: ApiKeys | str | None = None,
    options: QueryOptions | None = None,
    env: Mapping[str, str] | None = None,
    telemetry: Telemetry | None = None,
) -> web.Application:
    """The query API. Service options come from `options`, else from `env` (default: os.environ):
    HIRING_MAX_UPLOAD_BYTES, HIRING_API_KEYS, HIRING_QUERY_DB_POOL. `api_keys` (an ApiKeys or a string
    in the HIRING_API_KEYS format; "" means open) overrides the keys of either.
    Telemetry: `telemetry` (the caller shuts it down), else built from `settings.telemetry` and shut
    down (flushed) with the app.
    Raises shared.config.ConfigError naming a malformed variable."""
    if options is None:
        options = load_options(os.environ if env is None else env)
    if api_keys is not None:
        keys = parse_api_keys(api_keys) if isinstance(api_keys, str) else api_keys
        options = dataclasses.replace(options, api_keys=keys)
    by_route: dict[tuple[str, str], Endpoint] = {(ep.method, ep.path): ep for ep in ENDPOINTS}
    owned = telemetry is None
    telemetry = setup_telemetry(settings.telemetry) if telemetry is None else telemetry
    middlewares = [error_middleware, auth_middleware(options.api_keys, by_route)]
    if telemetry.enabled:  # outermost: its span sees the final status of every answer
        middlewares.insert(0, telemetry_middleware(telemetry.tracer(SCOPE), telemetry.meter(SCOPE)))
    app = web.Application(middlewares=middlewares)
    app[TELEMETRY] = telemetry
    if owned:
        app.on_cleanup.append(_shutdown_telemetry)
    app[SETTINGS] = settings
    app[OPTIONS] = options
    app[STOPPING] = asyncio.Event()
    app[OPENAPI] = openapi.render(ENDPOINTS)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(projection.folding)  # keeps the hires projection's backlog small
    app.cleanup_ctx.append(_s3)
    _add_routes(app, ENDPOINTS)
    return app


def _add_routes(app: web.Application, endpoints: Sequence[Endpoint]) -> None:
    for ep in endpoints:
        if ep.method == "GET":
            app.router.add_get(ep.path, ep.handler)
        else:
            app.router.add_route(ep.method, ep.path, ep.handler)


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
    settings: Settings,
    host: str = "0.0.0.0",
    port: int = 8080,
    *,
    app: web.Application | None = None,
    stop: asyncio.Event | None = None,
    started: asyncio.Event | None = None,
) -> None:
    """Serve until `stop` is set, or (without `stop`) until SIGTERM or SIGINT; then finish the
    requests in flight and close the pool and the S3 client. `started` is set once it listens."""
    app = app if app is not None else build_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=10.0)
    await runner.setup()
    own_signals: list[signal.Signals] = []
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
                loop.add_signal_handler(sig, stop.set)
                own_signals.append(sig)
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info(
            "query.listening",
            host=host,
            port=port,
            database=settings.db.dsn_summary(),
            bucket=settings.bucket,
            api_keys=len(app[OPTIONS].api_keys) or "none (open)",
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
        for sig in own_signals:
            asyncio.get_running_loop().remove_signal_handler(sig)
        await runner.cleanup()
    log.info("query.stopped")


def run(settings: Settings, host: str = "0.0.0.0", port: int = 8080) -> None:
    """Blocking entry point for `hiring query`: serve until SIGTERM or SIGINT."""
    asyncio.run(serve(settings, host, port))
