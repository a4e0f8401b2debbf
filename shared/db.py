"""PostgreSQL pool and schema migrations (applied by `hiring migrate` and at every service start)."""

from __future__ import annotations

import importlib.resources
from typing import Any

import asyncpg

from shared.config import DatabaseSettings

# Any constant works; it only has to be the same in every process that migrates.
_MIGRATION_LOCK = 0x68_69_72_65  # "hire"


async def connect(db: DatabaseSettings, **kwargs: Any) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=db.host, port=db.port, user=db.user, password=db.password or None, database=db.database, **kwargs
    )


async def create_pool(db: DatabaseSettings, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        host=db.host,
        port=db.port,
        user=db.user,
        password=db.password or None,
        database=db.database,
        min_size=min_size,
        max_size=max_size,
        command_timeout=600,
    )
    assert pool is not None
    return pool


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every file in shared/migrations, in order."""
    found = []
    for entry in importlib.resources.files("shared.migrations").iterdir():
        name = entry.name
        if name.endswith(".sql"):
            found.append((int(name.split("_", 1)[0]), name, entry.read_text(encoding="utf-8")))
    return sorted(found)


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply the migrations not yet applied; safe when several processes start at once.

    Returns the names of the migrations this call applied.
    """
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in migrations():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            applied.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied
