"""OpenTelemetry set-up shared by both services: one `Telemetry` per process, built by the
composition root from `TelemetrySettings` and handed down (tracers and meters are never looked up
through OpenTelemetry's global providers, which this module leaves untouched).

With an OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT) spans go through a BatchSpanProcessor and
metrics through a PeriodicExportingMetricReader to OTLP/HTTP exporters at `<endpoint>/v1/traces`
and `<endpoint>/v1/metrics`; the exporters and processors read the other standard variables
themselves (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _COMPRESSION, OTEL_BSP_SCHEDULE_DELAY,
OTEL_METRIC_EXPORT_INTERVAL, OTEL_TRACES_SAMPLER, OTEL_RESOURCE_ATTRIBUTES, ...). Without one the
providers are OpenTelemetry's no-op ones (the consumer's tracer still makes trace ids, see
`Telemetry.ids_only`): no exporter, no processor, no thread, and instrumented code asks
`Telemetry.enabled` to skip its own work.
"""

from __future__ import annotations

import importlib.metadata
import threading
import uuid
from collections.abc import Callable
from typing import Final

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.config import TelemetrySettings

PACKAGE: Final = "hiring-pipeline"
TRACEPARENT: Final = "traceparent"  # W3C Trace Context header, also the S3 metadata key of an upload
_propagator: Final = TraceContextTextMapPropagator()


def package_version() -> str:
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _signal_url(endpoint: str, signal: str) -> str:
    return f"{endpoint.rstrip('/')}/v1/{signal}"


class Telemetry:
    """The tracer and meter providers of one process, and how to stop them."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider,
        meter_provider: metrics.MeterProvider,
        *,
        enabled: bool,
        shutdown: Callable[[], None] | None = None,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.enabled = enabled
        self._shutdown = shutdown
        self._stopped = threading.Event()

    @classmethod
    def disabled(cls) -> Telemetry:
        """No-op providers: every span and instrument they make does nothing."""
        return cls(trace.NoOpTracerProvider(), metrics.NoOpMeterProvider(), enabled=False)

    @classmethod
    def ids_only(cls) -> Telemetry:
        """Spans with real trace ids that go nowhere: no processor, no exporter, no thread.

        For the consumer with tracing off, so each ingestion still has the trace id CONTRACT §4
        promises in `GET /uploads/{id}` and its log lines carry it. `enabled` stays False: the
        per-statement and per-call spans that only an exporter would want are not made.
        """
        from opentelemetry.sdk.trace import TracerProvider

        return cls(TracerProvider(), metrics.NoOpMeterProvider(), enabled=False)

    def tracer(self, scope: str) -> trace.Tracer:
        return self.tracer_provider.get_tracer(scope, package_version())

    def meter(self, scope: str) -> metrics.Meter:
        return self.meter_provider.get_meter(scope, package_version())

    def shutdown(self) -> None:
        """Export what is buffered and stop the exporter threads; safe to call more than once."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._shutdown is not None:
            self._shutdown()


def setup_telemetry(settings: TelemetrySettings, *, ids_without_export: bool = False) -> Telemetry:
    """The process's telemetry: OTLP/HTTP export when `settings.otlp_endpoint` is set, else no-op
    (or, with `ids_without_export`, `Telemetry.ids_only()`)."""
    if not settings.otlp_endpoint:
        return Telemetry.ids_only() if ids_without_export else Telemetry.disabled()
    # Imported here: a process without an endpoint never loads the SDK or the exporters.
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create(
        {
            "service.name": settings.service_name,
            "service.version": package_version(),
            "service.instance.id": str(uuid.uuid4()),
            "deployment.environment": settings.environment,
            "deployment.environment.name": settings.environment,
        }
    )
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=_signal_url(settings.otlp_endpoint, "traces")))
    )
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=_signal_url(settings.otlp_endpoint, "metrics"))
    )
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])

    def shutdown() -> None:
        tracer_provider.shutdown()  # flushes the span queue first
        meter_provider.shutdown()  # collects and exports once more

    return Telemetry(tracer_provider, meter_provider, enabled=True, shutdown=shutdown)


# ---- trace context helpers ----------------------------------------------------------------------


def trace_id_of(span: trace.Span) -> str | None:
    """The span's trace id as 32 lowercase hex digits, or None for a no-op span."""
    ctx = span.get_span_context()
    return trace.format_trace_id(ctx.trace_id) if ctx.is_valid else None


def current_trace_id() -> str | None:
    return trace_id_of(trace.get_current_span())


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the current span (None outside a recording span)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get(TRACEPARENT)


def parse_traceparent(value: str | None) -> trace.SpanContext | None:
    """The remote span context a `traceparent` names, or None if it is absent or malformed."""
    if not value:
        return None
    extracted = _propagator.extract({TRACEPARENT: value}, context=Context())  # never the current span
    ctx = trace.get_current_span(extracted).get_span_context()
    return ctx if ctx.is_valid else None
