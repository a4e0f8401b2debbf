"""The query service's own settings (beyond CONTRACT §3), read once from the environment by the CLI."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from services.query.auth import ApiKeys, parse_api_keys
from shared.config import ConfigError, int_setting

DEFAULT_MAX_UPLOAD_BYTES = 1 << 30  # 1 GiB
# above a load balancer's idle timeout (ALB: 60 s), or it may reuse a connection we are closing
DEFAULT_HEADER_TIMEOUT = 75
DEFAULT_BODY_TIMEOUT = 60


@dataclass(frozen=True)
class QueryOptions:
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    api_keys: ApiKeys = field(default_factory=ApiKeys)
    db_pool_size: int = 10
    rows_wait_seconds: int = 30  # POST /tables/{table}/rows: how long it waits for a consumer
    restore_wait_seconds: int = 120  # POST /tables/{table}/restore: the same, for a whole table
    # on SIGTERM, keep serving this long with /readyz failing (a load balancer or API Gateway may
    # still route here until it notices), then close the listener
    shutdown_grace_seconds: int = 0
    # seconds a connection may take to send a whole request head (and may stay idle between requests)
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT  # seconds a request body may send nothing (then 408)
    cors_origins: frozenset[str] = frozenset()  # browser origins allowed to call the API; "*": any


def parse_origins(value: str, var: str = "HIRING_CORS_ORIGINS") -> frozenset[str]:
    """Comma-separated origins (`https://app.example.com`, `http://localhost:3000`) or `*`; empty: none."""
    origins: set[str] = set()
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        if item == "*":
            origins.add(item)
            continue
        parts = urlsplit(item)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
            raise ConfigError(f"{var}: {item!r} is not an origin: expected scheme://host[:port] or *")
        origins.add(f"{parts.scheme}://{parts.netloc.lower()}")
    return frozenset(origins)


def load_options(env: Mapping[str, str]) -> QueryOptions:
    """`HIRING_MAX_UPLOAD_BYTES`, `HIRING_API_KEYS`, `HIRING_QUERY_DB_POOL`, `HIRING_ROWS_WAIT_SECONDS`,
    `HIRING_RESTORE_WAIT_SECONDS`, `HIRING_SHUTDOWN_GRACE_SECONDS`, `HIRING_HTTP_HEADER_TIMEOUT`,
    `HIRING_HTTP_BODY_TIMEOUT` (seconds), `HIRING_CORS_ORIGINS`; ConfigError names a bad one."""
    return QueryOptions(
        max_upload_bytes=int_setting(
            env, "HIRING_MAX_UPLOAD_BYTES", DEFAULT_MAX_UPLOAD_BYTES, low=1, high=5 * 1024**4
        ),
        api_keys=parse_api_keys(env.get("HIRING_API_KEYS", "")),
        db_pool_size=int_setting(env, "HIRING_QUERY_DB_POOL", 10, low=1, high=200),
        rows_wait_seconds=int_setting(env, "HIRING_ROWS_WAIT_SECONDS", 30, low=1, high=600),
        restore_wait_seconds=int_setting(env, "HIRING_RESTORE_WAIT_SECONDS", 120, low=1, high=3600),
        shutdown_grace_seconds=int_setting(env, "HIRING_SHUTDOWN_GRACE_SECONDS", 0, low=0, high=300),
        header_timeout=float(
            int_setting(env, "HIRING_HTTP_HEADER_TIMEOUT", DEFAULT_HEADER_TIMEOUT, low=1, high=3600)
        ),
        body_timeout=float(
            int_setting(env, "HIRING_HTTP_BODY_TIMEOUT", DEFAULT_BODY_TIMEOUT, low=1, high=3600)
        ),
        cors_origins=parse_origins(env.get("HIRING_CORS_ORIGINS", "")),
    )
