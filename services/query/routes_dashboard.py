"""`GET /`: the dashboard page for people (CONTRACT §4), and its static files. Open even when the
API has keys: the page holds no data; it asks the API for it (with a key the person types, kept in
the browser's localStorage, when the API wants one). Chart.js is vendored (static/, MIT, its
license beside it): no build step, no CDN, works offline."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from aiohttp import web

from services.query.endpoints import Endpoint, Param
from services.query.errors import ApiError
from services.query.schemas import ErrorBody

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
FILES: Final = frozenset(
    {"dashboard.html", "dashboard.js", "dashboard.css", "chart.umd.min.js", "chart.js-LICENSE.md"}
)
_HEADERS: Final = {
    # only our own files run; the page talks to this API and nothing else
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none';"
    " base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",  # revalidated (ETag / Last-Modified): a new version shows at once
}


def _file(name: str) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / name, headers=_HEADERS)


async def dashboard(request: web.Request) -> web.FileResponse:
    return _file("dashboard.html")


async def static_file(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if name not in FILES:
        raise ApiError(404, f"no static file {name!r}")
    return _file(name)


ENDPOINTS: Final = (
    Endpoint(
        "GET",
        "/",
        dashboard,
        "The dashboard (HTML): both metrics for a year as charts and tables, the latest uploads",
        scope=None,
        responses={200: str},
        media_types=("text/html",),
    ),
    Endpoint(
        "GET",
        "/static/{name}",
        static_file,
        "The dashboard's scripts, style sheet and the vendored Chart.js",
        scope=None,
        responses={200: str, 404: ErrorBody},
        media_types=("text/html", "text/javascript", "text/css", "text/markdown"),
        params=(Param("name", "path", {"type": "string"}, "a file name", True),),
    ),
)
