"""API keys: `HIRING_API_KEYS` and the middleware that checks them.

Format: comma-separated `KEY:SCOPES` entries, SCOPES being `read`, `upload`, `admin` or several joined
by `+` (`read+upload`; whitespace around entries is ignored), e.g.
`HIRING_API_KEYS=k3y-for-dashboards:read,k3y-for-etl:read+upload,k3y-for-ops:read+admin`.
A key is 8 to 256 printable ASCII characters without spaces, `,` or `:`. In AWS the value comes from a
Secrets Manager secret injected into that variable. Empty or unset: the API is open.

When keys are set, every endpoint but the public ones (/healthz, /readyz) needs a key, sent as
`Authorization: Bearer <key>` or `X-API-Key: <key>`: GETs need `read`, `POST /upload` and
`POST /tables/{table}/rows` need `upload`, backups and restores need `admin` (each endpoint names
its scope in services/query/endpoints.py).
No key: 401; an unknown key or one without the scope: 403. Keys are kept only as SHA-256 digests and
never logged.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Final, get_args

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from services.query.endpoints import Endpoint, Scope
from services.query.errors import ApiError
from shared.config import ConfigError

log = structlog.get_logger()

SCOPES: Final[frozenset[str]] = frozenset(get_args(Scope))
_KEY_RE: Final = re.compile(r"[\x21-\x7e]{8,256}")
_FORMAT: Final = (
    "expected comma-separated KEY:SCOPES entries, SCOPES read, upload, admin or several joined by +"
)


class ApiKey:
    __slots__ = ("number", "scopes")

    def __init__(self, number: int, scopes: frozenset[str]) -> None:
        self.number = number  # its position in HIRING_API_KEYS (1-based): names it in logs
        self.scopes = scopes


class ApiKeys:
    """The configured keys, by SHA-256 digest; empty means the API is open."""

    def __init__(self, keys: Mapping[str, frozenset[str]] | None = None) -> None:
        self._by_digest: dict[bytes, ApiKey] = {}
        for number, (key, scopes) in enumerate((keys or {}).items(), start=1):
            self._by_digest[_digest(key)] = ApiKey(number, frozenset(scopes))

    @property
    def enabled(self) -> bool:
        return bool(self._by_digest)

    def __len__(self) -> int:
        return len(self._by_digest)

    def lookup(self, presented: str) -> ApiKey | None:
        return self._by_digest.get(_digest(presented))


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def parse_api_keys(value: str, var: str = "HIRING_API_KEYS") -> ApiKeys:
    """Parse the variable; ConfigError names the variable and the entry's position, never the key."""
    keys: dict[str, frozenset[str]] = {}
    entries = [e.strip() for e in value.split(",")]
    for number, entry in enumerate(entries, start=1):
        if not entry:
            continue
        key, sep, scope_text = entry.rpartition(":")
        if not sep or not key:
            raise ConfigError(f"{var}: entry {number} is malformed: {_FORMAT}")
        if not _KEY_RE.fullmatch(key) or ":" in key:
            raise ConfigError(
                f"{var}: entry {number} has a malformed key: 8-256 printable ASCII characters without "
                "spaces, ',' or ':'"
            )
        scopes = frozenset(s.strip() for s in scope_text.split("+"))
        if not scopes or not scopes <= SCOPES:
            raise ConfigError(f"{var}: entry {number} has unknown scopes {scope_text!r}: {_FORMAT}")
        if key in keys:
            raise ConfigError(f"{var}: entry {number} repeats an earlier key")
        keys[key] = scopes
    return ApiKeys(keys)


def presented_key(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth:
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = request.headers.get("X-API-Key", "").strip()
    return key or None


def auth_middleware(keys: ApiKeys, endpoints: Mapping[tuple[str, str], Endpoint]) -> Middleware:
    """Checks the key of every request to a non-public endpoint. A request that matches no endpoint
    (404/405) still needs a valid key, so the API's shape is not shown to strangers."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not keys.enabled:
            return await handler(request)
        resource = request.match_info.route.resource
        method = "GET" if request.method == "HEAD" else request.method
        endpoint = endpoints.get((method, resource.canonical)) if resource is not None else None
        if endpoint is not None and endpoint.scope is None:
            return await handler(request)
        presented = presented_key(request)
        if presented is None:
            _deny(request, "missing_key")
            raise ApiError(
                401,
                "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                headers={"WWW-Authenticate": 'Bearer realm="hiring"'},
            )
        key = keys.lookup(presented)
        if key is None:
            _deny(request, "unknown_key")
            raise ApiError(403, "the API key is not valid")
        if endpoint is not None and endpoint.scope not in key.scopes:
            _deny(request, "missing_scope", key_number=key.number, scope=endpoint.scope)
            raise ApiError(
                403, f"this API key does not have the {endpoint.scope!r} scope this endpoint needs"
            )
        return await handler(request)

    return middleware


def _deny(request: web.Request, reason: str, **fields: object) -> None:
    log.warning(
        "auth.denied",
        reason=reason,
        method=request.method,
        path=request.path,
        remote=request.remote,
        **fields,
    )
