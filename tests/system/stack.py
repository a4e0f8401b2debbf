"""The system the tests run against: one switch, two backends, the same resources.

Default: the embedded stack `hiring dev` uses (EmbeddedPostgres + moto's server, both child
processes). HIRING_TEST_STACK=containers: PostgreSQL and moto's server as containers through
testcontainers, images named by HIRING_POSTGRES_IMAGE and HIRING_MOTO_IMAGE (upstream defaults;
`bash deploy/images.sh` builds local stand-ins where Docker Hub cannot be reached and writes their
names to .env). With no Docker engine that is an error, never a skip.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import urllib.request
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from services.dev.localaws import MotoServer, Provisioned, clients, provision
from services.dev.postgres import EmbeddedPostgres
from shared.config import DEFAULT_BUCKET, Settings, load_settings
from shared.db import connect, migrate

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client
    from types_boto3_sqs import SQSClient

BACKEND_VAR = "HIRING_TEST_STACK"
REGION = "us-east-1"
QUEUE = "hiring-ingest"
DLQ_VAR = "HIRING_DLQ_URL"  # not a CONTRACT §3 name: only tests and tools read it
# pinned upstream defaults (a moving tag changes behaviour under us); the variables name stand-ins
POSTGRES_IMAGE_VAR, POSTGRES_IMAGE = "HIRING_POSTGRES_IMAGE", "postgres:16-alpine"
MOTO_IMAGE_VAR, MOTO_IMAGE = "HIRING_MOTO_IMAGE", "motoserver/moto:5.2.5"
RYUK_VAR = "TESTCONTAINERS_RYUK_DISABLED"

T = TypeVar("T")
_names = itertools.count(1)


class StackUnavailable(RuntimeError):
    """The selected backend cannot run here; the test session must stop with this message."""


@dataclass(frozen=True)
class Stack:
    """A running stack, or one test's share of it (its own bucket, queue and DLQ)."""

    env: dict[str, str]
    backend: str
    endpoint_url: str
    region: str
    bucket: str
    queue_url: str
    dlq_url: str
    postgres: EmbeddedPostgres | None = field(default=None, compare=False, repr=False)

    def settings(self, service_name: str = "tests", **kw: Any) -> Settings:
        return load_settings(self.env, service_name=service_name, **kw)

    def s3(self) -> S3Client:
        """A boto3 S3 client of the stack's endpoint."""
        s3: S3Client = clients(self.endpoint_url, self.region)[0]
        return s3

    def sqs(self) -> SQSClient:
        """A boto3 SQS client of the stack's endpoint."""
        sqs: SQSClient = clients(self.endpoint_url, self.region)[1]
        return sqs

    async def connect(self) -> asyncpg.Connection:
        return await connect(self.settings().db)

    def isolated(self, max_receive_count: int = 5, visibility_timeout: int = 60) -> Stack:
        """This stack with a new bucket, queue and DLQ of unique names: no other test's events."""
        name = f"hiring-t{next(_names):04d}-{uuid.uuid4().hex[:8]}"
        made = provision(self.endpoint_url, self.region, name, name, max_receive_count, visibility_timeout)
        return self._with(made)

    async def reset_data(self) -> None:
        """Empty every table the migrations made (schema_migrations stays)."""
        conn = await self.connect()
        try:
            names = await conn.fetch(
                "SELECT format('%I', tablename) AS t FROM pg_tables"
                " WHERE schemaname = 'public' AND tablename <> 'schema_migrations'"
            )
            if names:
                tables = ", ".join(r["t"] for r in names)
                await conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
        finally:
            await conn.close()

    def _with(self, made: Provisioned) -> Stack:
        env = {
            **self.env,
            "S3_RAW_BUCKET": made.bucket,
            "SQS_QUEUE_URL": made.queue_url,
            DLQ_VAR: made.dlq_url,
        }
        return Stack(
            env=env,
            backend=self.backend,
            endpoint_url=self.endpoint_url,
            region=self.region,
            bucket=made.bucket,
            queue_url=made.queue_url,
            dlq_url=made.dlq_url,
            postgres=self.postgres,
        )


def backend() -> str:
    chosen = os.environ.get(BACKEND_VAR, "").strip() or "embedded"
    if chosen not in ("embedded", "containers"):
        raise StackUnavailable(f"{BACKEND_VAR}={chosen!r}: expected 'embedded' (default) or 'containers'")
    return chosen


@contextmanager
def open_stack(state_dir: Path) -> Iterator[Stack]:
    """Start the selected backend, provision the default bucket and queue, migrate; stop on exit."""
    kind = backend()
    with ExitStack() as cleanup:
        postgres: EmbeddedPostgres | None = None
        if kind == "embedded":
            postgres = EmbeddedPostgres(state_dir / "postgres")
            cleanup.callback(postgres.stop)
            postgres.start()
            db_env = postgres.env()
            moto = MotoServer(log_path=state_dir / "moto.log")
            cleanup.callback(moto.stop)
            endpoint_url = moto.start()
        else:
            db_env, endpoint_url = _start_containers(cleanup)
        made = provision(endpoint_url, REGION, DEFAULT_BUCKET, QUEUE)
        env = {
            **db_env,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": endpoint_url,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
        }
        base = Stack(env, kind, endpoint_url, REGION, made.bucket, made.queue_url, made.dlq_url, postgres)
        stack = base._with(made)
        run_async(_migrate(stack))
        yield stack


def _start_containers(cleanup: ExitStack) -> tuple[dict[str, str], str]:
    try:
        import docker

        engine = docker.from_env()
        engine.ping()
    except Exception as exc:
        raise StackUnavailable(
            f"{BACKEND_VAR}=containers but no Docker engine is reachable ({exc}); "
            f"start Docker (bash deploy/dockerd.sh start), or unset {BACKEND_VAR} to use the embedded stack"
        ) from exc
    pg_image = os.environ.get(POSTGRES_IMAGE_VAR, "").strip() or POSTGRES_IMAGE
    moto_image = os.environ.get(MOTO_IMAGE_VAR, "").strip() or MOTO_IMAGE
    missing = [i for i in (pg_image, moto_image) if not engine.images.list(name=i)]
    if missing:
        raise StackUnavailable(
            f"{BACKEND_VAR}=containers: image(s) {', '.join(missing)} not here; run `bash deploy/images.sh` "
            f"and `set -a; . ./.env; set +a` ({POSTGRES_IMAGE_VAR}, {MOTO_IMAGE_VAR} name its stand-ins)"
        )
    # Ryuk (testcontainers' reaper) is one more image to pull; our ExitStack stops what it starts
    os.environ.setdefault(RYUK_VAR, "true")
    from testcontainers.community.postgres import PostgresContainer
    from testcontainers.core.container import DockerContainer

    password = uuid.uuid4().hex
    try:
        pg = PostgresContainer(pg_image, username="hiring", password=password, dbname="hiring", driver=None)
        cleanup.callback(pg.stop)
        pg.start()
        aws = DockerContainer(moto_image).with_exposed_ports(5000)
        cleanup.callback(aws.stop)
        aws.start()
        endpoint_url = f"http://{aws.get_container_host_ip()}:{aws.get_exposed_port(5000)}"
        _wait_http(f"{endpoint_url}/moto-api/", timeout=60)
    except Exception as exc:
        raise StackUnavailable(f"{BACKEND_VAR}=containers: a container did not start: {exc}") from exc
    db_env = {
        "RDS_ENDPOINT": f"{pg.get_container_host_ip()}:{pg.get_exposed_port(5432)}",
        "RDS_DB_NAME": "hiring",
        "RDS_USERNAME": "hiring",
        "RDS_PASSWORD": password,
    }
    return db_env, endpoint_url


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError as exc:  # URLError is an OSError
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout:.0f}s: {exc}") from exc
        time.sleep(0.2)


async def _migrate(stack: Stack) -> None:
    conn = await stack.connect()
    try:
        await migrate(conn)
    finally:
        await conn.close()


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, in a thread so no caller's event loop is touched."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
