"""PostgreSQL pool and schema migrations (applied by `hiring migrate` and at every service start)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib.resources
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias, TypeVar

import asyncpg
import structlog
from opentelemetry import trace

from shared.aws import AwsClients
from shared.config import AwsSettings, DatabaseSettings

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    # A connection of its own, or one acquired from a pool: both run statements alike.
    DbConnection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]

log = structlog.get_logger("shared.db")
T = TypeVar("T")

# Any constant works; it only has to be the same in every process that migrates.
_MIGRATION_LOCK = 0x68_69_72_65  # "hire"
FIRST_RETRY_DELAY = 0.5  # seconds; doubles per attempt up to MAX_RETRY_DELAY
MAX_RETRY_DELAY = 8.0
# what a database that is not up yet (or restarting, or not yet accepting this many clients) raises
_NOT_YET: tuple[type[BaseException], ...] = (
    OSError,  # refused, unreachable, name not resolved yet
    TimeoutError,
    asyncpg.CannotConnectNowError,  # starting up, shutting down, in recovery
    asyncpg.TooManyConnectionsError,
    asyncpg.ConnectionDoesNotExistError,
)


class DatabaseUnavailable(Exception):
    """The database could not be reached at start within the settings' start_timeout, or refused
    us for good (wrong password, no such database); str() is one line saying which and why."""


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


async def _with_retry(db: DatabaseSettings, attempt: Callable[[], Awaitable[T]]) -> T:
    """`attempt()` until it succeeds, retrying what a database not up yet raises with a backoff
    (FIRST_RETRY_DELAY doubling to MAX_RETRY_DELAY) for `db.start_timeout` seconds, one log line
    per failed attempt; DatabaseUnavailable after that, or at once for an error retrying cannot fix."""
    deadline = time.monotonic() + db.start_timeout
    delay = FIRST_RETRY_DELAY
    for number in range(1, 1_000_000):
        try:
            return await attempt()
        except _NOT_YET as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DatabaseUnavailable(
                    f"PostgreSQL at {db.dsn_summary()} is unreachable after {number} attempts over "
                    f"{db.start_timeout:g} s (HIRING_DB_START_TIMEOUT): {_reason(exc)}"
                ) from exc
            wait = min(delay, left)
            log.warning("db.unreachable", attempt=number, retry_in=round(wait, 2), reason=_reason(exc))
            await asyncio.sleep(wait)
            delay = min(delay * 2, MAX_RETRY_DELAY)
        except (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidCatalogNameError) as exc:
            raise DatabaseUnavailable(f"PostgreSQL at {db.dsn_summary()} refused us: {_reason(exc)}") from exc
    raise AssertionError("unreachable")


def password_of(db: DatabaseSettings) -> str | Callable[[], Awaitable[str]] | None:
    """What asyncpg gets as `password`: the fixed one, or (with `db.password_secret`) a coroutine
    function asyncpg calls for every new connection, which reads the secret's current value.

    RDS rotates its managed master password (every 7 days by default) while tasks keep running and
    their pools reopen connections: a password read once at start fails within minutes of a rotation.
    If the secret cannot be read, the fixed password is tried and the failure is logged."""
    if not db.password_secret:
        return db.password or None

    async def current() -> str:
        try:
            return await read_secret_password(db)
        except Exception as exc:
            log.warning("database password secret unreadable, using RDS_PASSWORD", error=str(exc)[:300])
            return db.password

    return current


async def read_secret_password(db: DatabaseSettings) -> str:
    """The password in `db.password_secret` now: its JSON "password" field, or the whole string."""
    aws = AwsSettings(region=db.secret_region, endpoint_url=db.secret_endpoint_url)
    async with AwsClients(aws).client("secretsmanager") as client:
        value = str((await client.get_secret_value(SecretId=db.password_secret))["SecretString"])
    if value.lstrip().startswith("{"):
        return str(json.loads(value)["password"])
    return value


async def connect(db: DatabaseSettings, **kwargs: Any) -> asyncpg.Connection:
    """One connection, retried while the database is not up yet (see _with_retry)."""
    return await _with_retry(
        db,
        lambda: asyncpg.connect(
            host=db.host,
            port=db.port,
            user=db.user,
            password=password_of(db),
            database=db.database,
            **kwargs,
        ),
    )


async def create_pool(
    db: DatabaseSettings, *, min_size: int = 1, max_size: int = 10, tracer: trace.Tracer | None = None
) -> asyncpg.Pool:
    """A pool, retried while the database is not up yet (DatabaseUnavailable once it gives up); with
    a `tracer`, every statement run on its connections is a CLIENT span."""
    extra: dict[str, Any] = {}
    if tracer is not None:
        extra["connection_class"] = traced_connection_class(tracer, db)

    async def attempt() -> asyncpg.Pool:
        pool = await asyncpg.create_pool(
            host=db.host,
            port=db.port,
            user=db.user,
            password=password_of(db),
            database=db.database,
            min_size=min_size,
            max_size=max_size,
            command_timeout=600,
            **extra,
        )
        assert pool is not None
        return pool

    return await _with_retry(db, attempt)


# ---- tracing ------------------------------------------------------------------------------------
# A Connection subclass per pool (asyncpg's documented `connection_class`), so the tracer is the one
# the composition root handed over: nothing is patched process-wide, unlike
# opentelemetry-instrumentation-asyncpg, which wraps asyncpg's classes for the whole process and does
# not trace COPY. Spans follow the database semantic conventions; a statement's text is recorded,
# its arguments never are.

_untraced: contextvars.ContextVar[bool] = contextvars.ContextVar("hiring_db_untraced", default=False)
_FIRST_WORD = re.compile(r"\s*(?:--[^\n]*\n\s*)*([A-Za-z]+)")
_TARGETS = {
    "INSERT": re.compile(r"\bINTO\s+([A-Za-z_][\w.]*)", re.IGNORECASE),
    "UPDATE": re.compile(r"\bUPDATE\s+([A-Za-z_][\w.]*)", re.IGNORECASE),
    "DELETE": re.compile(r"\bFROM\s+([A-Za-z_][\w.]*)", re.IGNORECASE),
    "SELECT": re.compile(r"\bFROM\s+([A-Za-z_][\w.]*)", re.IGNORECASE),
}
MAX_QUERY_TEXT = 2000


def operation_of(query: str) -> str:
    """The statement's first keyword, upper-cased (SELECT, INSERT, WITH, ...)."""
    found = _FIRST_WORD.match(query)
    return found.group(1).upper() if found else "QUERY"


def target_of(operation: str, query: str) -> str | None:
    """The table a plain INSERT/UPDATE/DELETE/SELECT works on (its first one), for the span name."""
    pattern = _TARGETS.get(operation)
    found = pattern.search(query) if pattern is not None else None
    return found.group(1) if found else None


class TracedConnection(asyncpg.Connection):
    _hiring_tracer: ClassVar[trace.Tracer]
    _hiring_attributes: ClassVar[dict[str, str | int]]

    @contextlib.contextmanager
    def _traced(self, operation: str, query: str | None, collection: str | None = None) -> Iterator[None]:
        if _untraced.get():
            yield
            return
        if collection is None and query is not None:
            collection = target_of(operation, query)
        attributes: dict[str, str | int] = {
            **self._hiring_attributes,
            "db.operation": operation,
            "db.operation.name": operation,
        }
        if query is not None:
            text = query.strip()[:MAX_QUERY_TEXT]
            attributes["db.statement"] = text
            attributes["db.query.text"] = text
        if collection is not None:
            attributes["db.collection.name"] = collection
        name = f"{operation} {collection}" if collection else operation
        with self._hiring_tracer.start_as_current_span(
            name, kind=trace.SpanKind.CLIENT, attributes=attributes
        ):
            yield

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> Any:
        with self._traced(operation_of(query), query):
            return await super().execute(query, *args, **kwargs)

    async def executemany(self, command: str, args: Any, **kwargs: Any) -> Any:
        with self._traced(operation_of(command), command):
            return await super().executemany(command, args, **kwargs)

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> Any:
        with self._traced(operation_of(query), query):
            return await super().fetch(query, *args, **kwargs)

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
        with self._traced(operation_of(query), query):
            return await super().fetchrow(query, *args, **kwargs)

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        with self._traced(operation_of(query), query):
            return await super().fetchval(query, *args, **kwargs)

    async def copy_records_to_table(self, table_name: str, **kwargs: Any) -> Any:
        with self._traced("COPY", None, table_name):
            return await super().copy_records_to_table(table_name, **kwargs)

    async def copy_to_table(self, table_name: str, **kwargs: Any) -> Any:
        with self._traced("COPY", None, table_name):
            return await super().copy_to_table(table_name, **kwargs)

    async def reset(self, **kwargs: Any) -> Any:
        # The pool resets a connection on every release: bookkeeping, not the service's own SQL.
        token = _untraced.set(True)
        try:
            return await super().reset(**kwargs)
        finally:
            _untraced.reset(token)


def traced_connection_class(tracer: trace.Tracer, db: DatabaseSettings) -> type[TracedConnection]:
    attributes: dict[str, str | int] = {
        "db.system": "postgresql",
        "db.system.name": "postgresql",
        "db.name": db.database,
        "db.namespace": db.database,
        "server.address": db.host,
        "server.port": db.port,
    }
    return type(
        "TracedConnection", (TracedConnection,), {"_hiring_tracer": tracer, "_hiring_attributes": attributes}
    )


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every file in shared/migrations, in order."""
    found = []
    for entry in importlib.resources.files("shared.migrations").iterdir():
        name = entry.name
        if name.endswith(".sql"):
            found.append((int(name.split("_", 1)[0]), name, entry.read_text(encoding="utf-8")))
    return sorted(found)


async def migrate(conn: DbConnection) -> list[str]:
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
