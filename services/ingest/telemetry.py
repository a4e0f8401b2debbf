"""The ingest consumer's spans and metrics, in one place; the composition root builds one
`IngestTelemetry` from the process's `Telemetry` and hands it to the Consumer and the Loader.

A trace of one file: `receive <queue>` (one per long poll, CLIENT) is linked from
`process <queue>` (CONSUMER, the root of a new trace per message: S3 notifications carry no trace
context), which links to the upload's trace when the object's metadata has a `traceparent`
(`POST /upload` puts it there) and holds the HEAD/GET of the object, the ledger statements, one
`batch <table>` span per committed batch (its COPY and merge statements as children) and the SQS
delete. Rejected rows are counted, never a span each.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

import structlog
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from services.ingest.events import ObjectEvent
from shared.dictionary import table_for_key
from shared.telemetry import Telemetry, parse_traceparent

if TYPE_CHECKING:
    from services.ingest.batches import Batch
    from services.ingest.handler import FileOutcome
    from services.ingest.ports import QueueMessage

log = structlog.get_logger("ingest")

SCOPE: Final = "hiring.ingest"
_BATCH_SECONDS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_LAG_SECONDS: Final = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


def _messaging(queue: str, operation: str, kind: str) -> dict[str, str]:
    return {
        "messaging.system": "aws_sqs",
        "messaging.destination.name": queue,
        "messaging.operation.name": operation,
        "messaging.operation.type": kind,
    }


def _fail(span: trace.Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:500]))
    span.set_attribute("error.type", type(exc).__name__)


class IngestTelemetry:
    def __init__(self, telemetry: Telemetry | None = None) -> None:
        telemetry = telemetry or Telemetry.disabled()
        self.enabled = telemetry.enabled
        self.tracer = telemetry.tracer(SCOPE)
        meter = telemetry.meter(SCOPE)
        self.rows_loaded = meter.create_counter(
            "hiring.ingest.rows.loaded", unit="{row}", description="Rows committed into a table"
        )
        self.rows_rejected = meter.create_counter(
            "hiring.ingest.rows.rejected", unit="{row}", description="Rows rejected (kept in ingest_rejects)"
        )
        self.files_processed = meter.create_counter(
            "hiring.ingest.files.processed",
            unit="{file}",
            description="Object versions finished: loaded now, or a duplicate delivery of one already done",
        )
        self.files_failed = meter.create_counter(
            "hiring.ingest.files.failed",
            unit="{file}",
            description="Object versions that failed: for good (unreadable, no table) or for this attempt",
        )
        self.batch_duration = meter.create_histogram(
            "hiring.ingest.batch.duration",
            unit="s",
            description="Time to commit one batch (COPY, merge, rejects, checkpoint)",
            explicit_bucket_boundaries_advisory=_BATCH_SECONDS,
        )
        self.lag = meter.create_histogram(
            "hiring.ingest.lag",
            unit="s",
            description="From the S3 event time of an object to the commit of its last batch",
            explicit_bucket_boundaries_advisory=_LAG_SECONDS,
        )
        self.left_for_redrive = meter.create_counter(
            "hiring.ingest.messages.left_for_redrive",
            unit="{message}",
            description="Messages left on the queue after failing (undecodable, or their file failed); "
            "the queue's redrive policy moves them to the dead-letter queue after maxReceiveCount receives",
        )

    # ---- the SQS side -------------------------------------------------------------------------

    @contextlib.contextmanager
    def receiving(self, queue: str) -> Iterator[trace.Span]:
        """One long poll of the queue; set `messaging.batch.message_count` with `received`."""
        with self.tracer.start_as_current_span(
            f"receive {queue}",
            context=Context(),  # a root: polls are not part of any file's trace
            kind=SpanKind.CLIENT,
            attributes=_messaging(queue, "ReceiveMessage", "receive"),
        ) as span:
            yield span

    @staticmethod
    def received(span: trace.Span, count: int) -> None:
        span.set_attribute("messaging.batch.message_count", count)

    @contextlib.contextmanager
    def processing(
        self, queue: str, message: QueueMessage, receive: trace.SpanContext | None
    ) -> Iterator[trace.Span]:
        """The span of one message (and of its file: S3 sends one record per message): a new trace."""
        attributes: dict[str, str | int] = {
            **_messaging(queue, "process", "process"),
            "hiring.sqs.receive_count": message.receive_count,
        }
        if message.message_id:
            attributes["messaging.message.id"] = message.message_id
        links = (
            [Link(receive, {"hiring.link": "receive"})] if receive is not None and receive.is_valid else []
        )
        with self.tracer.start_as_current_span(
            f"process {queue}", context=Context(), kind=SpanKind.CONSUMER, links=links, attributes=attributes
        ) as span:
            yield span

    def message_left(self, reason: str, receives: int, exc: BaseException | None = None) -> None:
        """The message stays on the queue for its redrive policy (counted; the span says why; the
        exception itself was recorded where it was raised, by the file's span)."""
        span = trace.get_current_span()
        description = f"{type(exc).__name__}: {exc}" if exc is not None else reason
        span.set_status(Status(StatusCode.ERROR, description[:500]))
        span.set_attribute("error.type", type(exc).__name__ if exc is not None else reason)
        self.left_for_redrive.add(1, {"reason": reason, "receive_count": receives})

    # ---- one file ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def object_span(
        self,
        queue: str,
        event: ObjectEvent,
        *,
        separate: bool,
        benign: tuple[type[BaseException], ...] = (),
    ) -> Iterator[trace.Span]:
        """The file's span: the message's own span, or (`separate`, a message naming several
        objects) a child of it. Log lines inside carry the bucket and key."""
        table = table_for_key(event.key)
        span_cm: contextlib.AbstractContextManager[trace.Span] = (
            self.tracer.start_as_current_span(
                f"process {queue}",
                kind=SpanKind.CONSUMER,
                attributes=_messaging(queue, "process", "process"),
                record_exception=False,
                set_status_on_exception=False,
            )
            if separate
            else contextlib.nullcontext(trace.get_current_span())
        )
        with span_cm as span, structlog.contextvars.bound_contextvars(bucket=event.bucket, key=event.key):
            span.set_attributes(
                {
                    "aws.s3.bucket": event.bucket,
                    "aws.s3.key": event.key,
                    "hiring.table": table or "",
                    "hiring.s3.event_name": event.event_name,
                    "hiring.s3.event_time": event.event_time.isoformat(),
                }
            )
            try:
                yield span
            except benign:
                raise
            except Exception as exc:
                _fail(span, exc)
                self.files_failed.add(1, {"table": table or "unknown", "error.type": type(exc).__name__})
                raise

    def object_done(self, outcome: FileOutcome) -> None:
        """One file's outcome: the span's attributes and links, the metrics, the log line."""
        span = trace.get_current_span()
        table = outcome.table or "unknown"
        kind = outcome.kind.value
        span.set_attribute("hiring.outcome", kind)
        if outcome.object_id is not None:
            span.set_attribute("hiring.object.id", outcome.object_id)
        if outcome.version is not None:
            span.set_attribute("hiring.object.version", outcome.version.version)
            if outcome.upload_id:
                span.set_attribute("hiring.upload.id", outcome.upload_id)
            linked = parse_traceparent(outcome.version.metadata.get("traceparent"))
            if linked is not None:
                span.add_link(linked, {"hiring.link": "upload"})
                span.set_attribute("hiring.upload.trace_id", trace.format_trace_id(linked.trace_id))
        span.set_attributes(
            {
                "hiring.rows.loaded": outcome.rows_loaded,
                "hiring.rows.rejected": outcome.rows_rejected,
                "hiring.batches": outcome.batches,
            }
        )
        fields = {"object_id": outcome.object_id, "upload_id": outcome.upload_id, "table": outcome.table}
        if kind == "loaded":
            self.files_processed.add(1, {"table": table, "outcome": kind})
            lag = (datetime.now(UTC) - outcome.event.event_time).total_seconds()
            self.lag.record(max(lag, 0.0), {"table": table})
            log.info(
                "object loaded",
                **fields,
                rows_loaded=outcome.rows_loaded,
                rows_rejected=outcome.rows_rejected,
                batches=outcome.batches,
                seconds=round(outcome.seconds, 3),
            )
        elif kind == "duplicate":
            self.files_processed.add(1, {"table": table, "outcome": kind})
            log.info("object duplicate", **fields)
        elif kind == "failed":
            span.set_status(Status(StatusCode.ERROR, (outcome.detail or "failed")[:500]))
            span.set_attribute("error.type", "object_failed")
            self.files_failed.add(1, {"table": table, "error.type": "object_failed"})
            log.error("object failed", **fields, reason=outcome.detail)
        elif kind == "ignored":
            log.info("event ignored", reason=outcome.detail, event_name=outcome.event.event_name)
        else:
            log.info(f"object {kind}", **fields)

    # ---- one batch --------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def batch(self, table: str, batch: Batch) -> AsyncIterator[None]:
        """One batch's transaction: a span (its statements as children), its duration and row counts."""
        started = time.perf_counter()
        attributes: dict[str, str | int] = {
            "hiring.table": table,
            "hiring.batch.rows": batch.row_count,
            "hiring.batch.rejects": len(batch.rejects),
            "hiring.batch.end_line": batch.end_line,
        }
        failed: str | None = None
        try:
            with self.tracer.start_as_current_span(f"batch {table}", attributes=attributes):
                yield
        except BaseException as exc:
            failed = type(exc).__name__
            raise
        finally:
            seconds = time.perf_counter() - started
            if failed is None:
                self.batch_duration.record(seconds, {"table": table})
                self.rows_loaded.add(batch.row_count, {"table": table})
                self.rows_rejected.add(len(batch.rejects), {"table": table})
            else:
                self.batch_duration.record(seconds, {"table": table, "error.type": failed})
