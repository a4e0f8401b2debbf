"""Every error leaves the service as JSON `{"error": "..."}` with a 4xx/5xx status, never a traceback."""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from services.query.http import json_response
from services.query.schemas import ErrorBody

log = structlog.get_logger()


class ApiError(Exception):
    """Raised by handlers: answered as `{"error": message}` with `status`."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    response = json_response(ErrorBody(error=message), status=status)
    if headers:
        response.headers.update(headers)
    return response


_HTTP_MESSAGES = {
    404: "not found",
    405: "method not allowed",
    413: "request body too large",
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        if exc.status >= 500:
            log.error(
                "request.failed",
                method=request.method,
                path=request.path,
                status=exc.status,
                error=exc.message,
            )
        return error_response(exc.status, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:  # redirects and the like are not errors
            raise
        if exc.status == 404:
            message = f"no such endpoint: {request.method} {request.path}"
        elif exc.status == 405 and isinstance(exc, web.HTTPMethodNotAllowed):
            allowed = ", ".join(sorted(exc.allowed_methods))
            message = f"method {request.method} is not allowed on {request.path} (allowed: {allowed})"
        else:
            message = _HTTP_MESSAGES.get(exc.status) or exc.reason.lower()
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate")}
        return error_response(exc.status, message, headers)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("request.crashed", method=request.method, path=request.path)
        return error_response(500, "internal server error")
