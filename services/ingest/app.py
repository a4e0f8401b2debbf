"""Composition root of the ingest service: settings in, clients built and handed down, run until stopped."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import msgspec
import structlog

from services.ingest.consumer import Consumer, ConsumerOptions
from services.ingest.handler import HandlerOptions, ObjectHandler
from services.ingest.ledger import Ledger
from services.ingest.load import DEFAULT_BATCH_ROWS, LoadOptions
from services.ingest.source import S3ObjectStore
from services.ingest.sqs_queue import SqsQueue
from services.ingest.telemetry import IngestTelemetry
from shared.aws import AwsClients
from shared.config import Settings, int_setting
from shared.db import connect, create_pool, migrate
from shared.telemetry import Telemetry, setup_telemetry

log = structlog.get_logger("ingest")


class IngestOptions(msgspec.Struct, frozen=True):
    consumer: ConsumerOptions
    load: LoadOptions
    max_stalls: int = 3


def load_options(env: Mapping[str, str]) -> IngestOptions:
    """The consumer's knobs (INGEST_*), validated like CONTRACT §3's settings."""
    return IngestOptions(
        consumer=ConsumerOptions(
            concurrency=int_setting(env, "INGEST_CONCURRENCY", 4, high=64),
            # a stop waits for the open long poll (see consumer.py): short polls keep stops quick
            wait_seconds=int_setting(env, "INGEST_WAIT_SECONDS", 5, low=0, high=20),
            visibility_timeout=int_setting(env, "INGEST_VISIBILITY_TIMEOUT", 60, low=3, high=43_200),
            retry_delay=int_setting(env, "INGEST_RETRY_DELAY", 5, low=0, high=900),
            drain_seconds=float(int_setting(env, "INGEST_DRAIN_SECONDS", 20, low=0, high=3600)),
        ),
        load=LoadOptions(
            batch_rows=int_setting(env, "INGEST_BATCH_ROWS", DEFAULT_BATCH_ROWS, high=1_000_000)
        ),
        max_stalls=int_setting(env, "INGEST_MAX_STALLS", 3, low=1, high=100),
    )


async def run_ingest(
    settings: Settings, options: IngestOptions, stop: asyncio.Event, *, telemetry: Telemetry | None = None
) -> None:
    """One consumer process: migrate, then consume until `stop` is set, then drain.

    Telemetry comes from `settings.telemetry` (OTLP export when OTEL_EXPORTER_OTLP_ENDPOINT is set)
    unless the caller passes its own, which it then also shuts down itself."""
    assert settings.queue_url is not None, "load_settings(require_queue=True) guarantees it"
    owned = telemetry is None
    # ids_without_export: every ingestion has a trace id (ledger, logs), tracing on or off
    telemetry = (
        setup_telemetry(settings.telemetry, ids_without_export=True) if telemetry is None else telemetry
    )
    try:
        await _consume(settings, options, stop, telemetry)
    finally:
        if owned:
            await asyncio.to_thread(telemetry.shutdown)  # flush the last spans and metrics


async def _consume(
    settings: Settings, options: IngestOptions, stop: asyncio.Event, telemetry: Telemetry
) -> None:
    assert settings.queue_url is not None
    conn = await connect(settings.db)
    try:
        applied = await migrate(conn)
        if applied:
            log.info("schema migrated", applied=applied)
    finally:
        await conn.close()
    tracer = telemetry.tracer("hiring.ingest") if telemetry.enabled else None
    # One connection per file in flight (it holds the file's lock) plus a few for the ledger.
    pool = await create_pool(
        settings.db, min_size=1, max_size=options.consumer.concurrency + 4, tracer=tracer
    )
    clients = AwsClients(settings.aws, tracer=tracer)
    ingest_telemetry = IngestTelemetry(telemetry)
    try:
        async with (
            clients.s3(max_pool_connections=options.consumer.concurrency + 4) as s3,
            clients.sqs() as sqs,
        ):
            handler = ObjectHandler(
                Ledger(pool),
                S3ObjectStore(s3),
                HandlerOptions(raw_bucket=settings.bucket, max_stalls=options.max_stalls, load=options.load),
                observe=ingest_telemetry.batch,
            )
            queue = await SqsQueue.open(sqs, settings.queue_url)
            consumer = Consumer(queue, handler, options.consumer, ingest_telemetry)
            await consumer.run(stop)
    finally:
        await pool.close()
