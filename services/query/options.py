"""The query service's own settings (beyond CONTRACT §3), read from the environment by the factory."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from services.query.auth import ApiKeys, parse_api_keys
from shared.config import int_setting

DEFAULT_MAX_UPLOAD_BYTES = 1 << 30  # 1 GiB


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


def load_options(env: Mapping[str, str]) -> QueryOptions:
    """`HIRING_MAX_UPLOAD_BYTES`, `HIRING_API_KEYS`, `HIRING_QUERY_DB_POOL`, `HIRING_ROWS_WAIT_SECONDS`,
    `HIRING_RESTORE_WAIT_SECONDS`, `HIRING_SHUTDOWN_GRACE_SECONDS`; ConfigError names a bad one."""
    return QueryOptions(
        max_upload_bytes=int_setting(
            env, "HIRING_MAX_UPLOAD_BYTES", DEFAULT_MAX_UPLOAD_BYTES, low=1, high=5 * 1024**4
        ),
        api_keys=parse_api_keys(env.get("HIRING_API_KEYS", "")),
        db_pool_size=int_setting(env, "HIRING_QUERY_DB_POOL", 10, low=1, high=200),
        rows_wait_seconds=int_setting(env, "HIRING_ROWS_WAIT_SECONDS", 30, low=1, high=600),
        restore_wait_seconds=int_setting(env, "HIRING_RESTORE_WAIT_SECONDS", 120, low=1, high=3600),
        shutdown_grace_seconds=int_setting(env, "HIRING_SHUTDOWN_GRACE_SECONDS", 0, low=0, high=300),
    )
