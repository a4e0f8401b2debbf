"""A real OTLP/HTTP receiver for tests: an aiohttp server on 127.0.0.1 (in a thread of its own, so
a test blocking its event loop never stalls an exporter) that accepts POST /v1/traces and
/v1/metrics, decodes the protobuf requests with opentelemetry-proto and keeps what they held."""

from __future__ import annotations

import asyncio
import gzip
import threading
import zlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from google.protobuf.message import Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from services.dev.ports import free_port


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return _attributes(v.kvlist_value.values)
    return getattr(v, kind) if kind else None


def _attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


def _hex(raw: bytes) -> str:
    return raw.hex()


@dataclass(frozen=True)
class ExportedLink:
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ExportedSpan:
    service: str
    resource: dict[str, Any]
    scope: str
    name: str
    kind: str  # SERVER, CLIENT, CONSUMER, INTERNAL, PRODUCER
    trace_id: str
    span_id: str
    parent_span_id: str | None
    attributes: dict[str, Any]
    links: list[ExportedLink]
    status: str  # UNSET, OK, ERROR
    events: list[str]


@dataclass(frozen=True)
class MetricPoint:
    service: str
    name: str
    kind: str  # sum, histogram, gauge
    attributes: dict[str, Any]
    value: float  # a sum's value, a histogram's count
    total: float | None = None  # a histogram's sum


@dataclass
class OtlpReceiver:
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    spans: list[ExportedSpan] = field(default_factory=list)
    metrics: list[MetricPoint] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)  # every decoded request body, for greps
    requests: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = asyncio.Event()
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ---- life ---------------------------------------------------------------------------------

    def start(self) -> OtlpReceiver:
        self._thread = threading.Thread(target=self._run, name="otlp-receiver", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the OTLP receiver did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(10)

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._traces)
        app.router.add_post("/v1/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.host, self.port).start()
        self._ready.set()
        try:
            await self._stopped.wait()
        finally:
            await runner.cleanup()

    # ---- handlers -----------------------------------------------------------------------------

    async def _body(self, request: web.Request) -> bytes:
        raw = await request.read()
        encoding = request.headers.get("Content-Encoding", "").lower()
        if encoding == "gzip":
            raw = gzip.decompress(raw)
        elif encoding == "deflate":
            raw = zlib.decompress(raw)
        with self._lock:
            self.requests += 1
            self.bodies.append(raw)
        return raw

    @staticmethod
    def _answer(message: Message) -> web.Response:
        return web.Response(body=message.SerializeToString(), content_type="application/x-protobuf")

    async def _traces(self, request: web.Request) -> web.Response:
        req = ExportTraceServiceRequest()
        req.ParseFromString(await self._body(request))
        found: list[ExportedSpan] = []
        for rs in req.resource_spans:
            resource = _attributes(rs.resource.attributes)
            service = str(resource.get("service.name", ""))
            for ss in rs.scope_spans:
                for s in ss.spans:
                    found.append(
                        ExportedSpan(
                            service=service,
                            resource=resource,
                            scope=ss.scope.name,
                            name=s.name,
                            kind=PbSpan.SpanKind.Name(s.kind).removeprefix("SPAN_KIND_"),
                            trace_id=_hex(s.trace_id),
                            span_id=_hex(s.span_id),
                            parent_span_id=_hex(s.parent_span_id) or None,
                            attributes=_attributes(s.attributes),
                            links=[
                                ExportedLink(
                                    _hex(link.trace_id), _hex(link.span_id), _attributes(link.attributes)
                                )
                                for link in s.links
                            ],
                            status={0: "UNSET", 1: "OK", 2: "ERROR"}[s.status.code],
                            events=[e.name for e in s.events],
                        )
                    )
        with self._lock:
            self.spans.extend(found)
        return self._answer(ExportTraceServiceResponse())

    async def _metrics(self, request: web.Request) -> web.Response:
        req = ExportMetricsServiceRequest()
        req.ParseFromString(await self._body(request))
        found: list[MetricPoint] = []
        for rm in req.resource_metrics:
            service = str(_attributes(rm.resource.attributes).get("service.name", ""))
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    data = m.WhichOneof("data")
                    if data in ("sum", "gauge"):
                        for p in getattr(m, data).data_points:
                            value = p.as_int if p.WhichOneof("value") == "as_int" else p.as_double
                            found.append(MetricPoint(service, m.name, data, _attributes(p.attributes), value))
                    elif data == "histogram":
                        for p in m.histogram.data_points:
                            found.append(
                                MetricPoint(service, m.name, data, _attributes(p.attributes), p.count, p.sum)
                            )
        with self._lock:
            self.metrics.extend(found)
        return self._answer(ExportMetricsServiceResponse())

    # ---- reading ------------------------------------------------------------------------------

    def snapshot(self) -> tuple[list[ExportedSpan], list[MetricPoint]]:
        with self._lock:
            return list(self.spans), list(self.metrics)
