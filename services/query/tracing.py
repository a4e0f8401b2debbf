"""The query service's HTTP server spans and request-duration metric (a middleware, added by the
composition root only when telemetry is on).

Spans follow the HTTP semantic conventions: a SERVER span per request named `POST /upload` or
`GET /uploads/{id}` (method and route template, never the raw path), continuing the caller's trace
when the request carries a W3C `traceparent`. Only the method, route, path, scheme, status,
server and client addresses and the user agent are recorded: no headers (API keys travel in
them), no query string. 5xx answers are errors; 4xx answers are the client's and are not.
"""

from __future__ import annotations

import time
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

UNTRACED_PATHS: Final = frozenset({"/healthz"})  # liveness probes every few seconds: noise, no I/O
_KNOWN_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"}
)
_DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_propagator: Final = TraceContextTextMapPropagator()


def route_of(request: web.Request) -> str | None:
    """The matched route's template (`/uploads/{id}`), or None when no route matched."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else None


def telemetry_middleware(tracer: trace.Tracer, meter: metrics.Meter) -> Middleware:
    duration = meter.create_histogram(
        "http.server.request.duration",
        unit="s",
        description="Duration of HTTP server requests",
        explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
    )

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in UNTRACED_PATHS:
            return await handler(request)
        started = time.perf_counter()
        method = request.method if request.method in _KNOWN_METHODS else "_OTHER"
        route = route_of(request)
        attributes: dict[str, str | int] = {
            "http.request.method": method,
            "url.path": request.path,
            "url.scheme": request.scheme,
        }
        if route is not None:
            attributes["http.route"] = route
        host = request.url.host
        if host:
            attributes["server.address"] = host
        if request.url.port is not None:
            attributes["server.port"] = request.url.port
        if request.remote:
            attributes["client.address"] = request.remote
        agent = request.headers.get("User-Agent")
        if agent:
            attributes["user_agent.original"] = agent[:256]
        parent = _propagator.extract(request.headers)
        name = f"{method} {route}" if route is not None else method
        status = 500
        error_type: str | None = None
        with tracer.start_as_current_span(
            name,
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:  # raised responses (the error middleware lets < 400 through)
                status = exc.status
                raise
            except BaseException as exc:
                error_type = type(exc).__name__
                span.record_exception(exc)
                raise
            finally:
                span.set_attribute("http.response.status_code", status)
                labels: dict[str, str | int] = {
                    "http.request.method": method,
                    "http.response.status_code": status,
                    "url.scheme": request.scheme,
                }
                if route is not None:
                    labels["http.route"] = route
                if status >= 500 or error_type is not None:
                    error_type = error_type or str(status)
                    span.set_attribute("error.type", error_type)
                    span.set_status(Status(StatusCode.ERROR))
                    labels["error.type"] = error_type
                duration.record(time.perf_counter() - started, labels)

    return middleware
