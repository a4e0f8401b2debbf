"""Every error leaves the service as JSON `{"error": "..."}` with a 4xx/5xx status, never a traceback."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final

import structlog
from aiohttp import HttpVersion11, web
from aiohttp.typedefs import Handler

from services.query.http import json_response
from services.query.schemas import ErrorBody

log = structlog.get_logger()

ExpectHandler = Callable[[web.Request], Awaitable[web.StreamResponse | None]]


class ApiError(Exception):
    """Raised by handlers: answered as `{"error": message}` with `status`."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    # a message may echo client input: lone surrogates (undecodable bytes) would not encode as JSON
    text = message.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    response = json_response(ErrorBody(error=text), status=status)
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


_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


def expect_continue(max_body: Callable[[web.Request], int | None] = lambda _r: None) -> ExpectHandler:
    """An `Expect` handler (it runs before the middlewares, when the request has the header): a JSON
    417 for anything but `100-continue`, a JSON 413 when the declared Content-Length is over
    `max_body(request)` (so the client never sends it), else `100 Continue`."""

    async def handler(request: web.Request) -> web.StreamResponse | None:
        expect = request.headers.get("Expect", "")
        if expect.strip().lower() != "100-continue":
            return error_response(417, f"unsupported Expect {expect[:100]!r}: only 100-continue is known")
        limit = max_body(request)
        declared = request.content_length
        if limit is not None and declared is not None and declared > limit:
            return error_response(
                413,
                f"the request body is {declared} bytes; the limit is {limit} bytes",
                {"Connection": "close"},
            )
        if request.version == HttpVersion11:
            await request.writer.write(_CONTINUE)
            request.writer.output_size = 0  # as aiohttp's own handler: the answer proper starts here
        return None

    return handler
