"""CORS (the Fetch standard) for browser front ends on other origins: off unless HIRING_CORS_ORIGINS
names them. A preflight (OPTIONS with Access-Control-Request-Method) from an allowed origin is answered
here, before the API-key check (browsers send no credentials with it); every other answer to an
allowed origin carries Access-Control-Allow-Origin. Other origins get no CORS headers: the browser
then keeps the answer from the page."""

from __future__ import annotations

from collections.abc import Set
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

ALLOWED_HEADERS: Final = "Authorization, X-API-Key, Content-Type, Accept, Idempotency-Key, traceparent"
EXPOSED_HEADERS: Final = "Link, Location, Retry-After"
PREFLIGHT_MAX_AGE: Final = "600"


def _methods(request: web.Request) -> set[str]:
    """The methods the requested path answers, empty when the API has no such path. An OPTIONS
    request matches no route: the router's 405 names the methods it would have taken."""
    error = getattr(request.match_info, "http_exception", None)  # set on a MatchInfoError
    if isinstance(error, web.HTTPMethodNotAllowed):
        return set(error.allowed_methods)
    resource = request.match_info.route.resource
    return {route.method for route in resource} if resource is not None else set()


def install(app: web.Application, middlewares: list[Middleware], origins: Set[str]) -> None:
    """Answer preflights before `middlewares` (the API-key check among them) and put the CORS headers
    on every answer to an allowed origin (streamed ones too: they are added as it is prepared)."""
    any_origin = "*" in origins

    def allowed(request: web.Request) -> str | None:
        origin = request.headers.get("Origin")
        return origin if origin is not None and (any_origin or origin.lower() in origins) else None

    @web.middleware
    async def preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return await handler(request)
        if allowed(request) is None:
            return web.Response(status=403)  # no CORS headers: the browser refuses the real request
        methods = _methods(request)
        if not methods:
            return web.Response(status=404)
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": ", ".join(sorted(methods)),
                "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
            },
        )

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        origin = allowed(request)
        if origin is None:
            return
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        vary = response.headers.get("Vary")
        response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"

    middlewares.insert(0, preflight)
    app.on_response_prepare.append(add_headers)
