"""A small OTLP/HTTP receiver with Jaeger's query API shape (the compose stand-in for Jaeger).

POST /v1/traces and /v1/metrics on :4318 (application/x-protobuf, optionally gzip); on :16686
GET /api/services and GET /api/traces/{traceID} answer like Jaeger's HTTP query API
({"data": [...]}), so a check written against Jaeger works against this too. Keeps at most
MAX_SPANS spans in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import signal
from collections import OrderedDict
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

MAX_SPANS = 50_000
KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
SPANS: web.AppKey[OrderedDict[tuple[str, str], dict[str, Any]]] = web.AppKey("spans", OrderedDict)


def _body(request_bytes: bytes, encoding: str) -> bytes:
    return gzip.decompress(request_bytes) if encoding == "gzip" else request_bytes


async def traces(request: web.Request) -> web.Response:
    req = ExportTraceServiceRequest()
    req.ParseFromString(_body(await request.read(), request.headers.get("Content-Encoding", "")))
    spans = request.app[SPANS]
    for rs in req.resource_spans:
        res = {kv.key: kv.value.string_value for kv in rs.resource.attributes}
        service = res.get("service.name", "unknown")
        for ss in rs.scope_spans:
            for s in ss.spans:
                item = {
                    "traceID": s.trace_id.hex(),
                    "spanID": s.span_id.hex(),
                    "operationName": s.name,
                    "references": (
                        [
                            {
                                "refType": "CHILD_OF",
                                "traceID": s.trace_id.hex(),
                                "spanID": s.parent_span_id.hex(),
                            }
                        ]
                        if s.parent_span_id
                        else []
                    )
                    + [
                        {"refType": "FOLLOWS_FROM", "traceID": ln.trace_id.hex(), "spanID": ln.span_id.hex()}
                        for ln in s.links
                    ],
                    "startTime": s.start_time_unix_nano // 1000,
                    "duration": (s.end_time_unix_nano - s.start_time_unix_nano) // 1000,
                    "tags": [{"key": "span.kind", "type": "string", "value": KINDS.get(s.kind, "")}],
                    "service": service,
                }
                spans[(item["traceID"], item["spanID"])] = item
    while len(spans) > MAX_SPANS:
        spans.popitem(last=False)
    return web.Response(
        body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf"
    )


async def metrics(request: web.Request) -> web.Response:
    req = ExportMetricsServiceRequest()
    req.ParseFromString(_body(await request.read(), request.headers.get("Content-Encoding", "")))
    return web.Response(
        body=ExportMetricsServiceResponse().SerializeToString(), content_type="application/x-protobuf"
    )


async def services(request: web.Request) -> web.Response:
    names = sorted({s["service"] for s in request.app[SPANS].values()})
    return web.json_response({"data": names, "total": len(names)})


async def trace(request: web.Request) -> web.Response:
    trace_id = request.match_info["trace_id"].lower().rjust(32, "0")
    found = [s for (t, _), s in request.app[SPANS].items() if t == trace_id]
    if not found:
        return web.json_response(
            {"data": [], "errors": [{"code": 404, "msg": "trace not found"}]}, status=404
        )
    processes: dict[str, dict[str, Any]] = {}
    out = []
    for s in found:
        pid = "p" + str(1 + sorted({x["service"] for x in found}).index(s["service"]))
        processes[pid] = {"serviceName": s["service"], "tags": []}
        out.append({**{k: v for k, v in s.items() if k != "service"}, "processID": pid})
    return web.json_response({"data": [{"traceID": trace_id, "spans": out, "processes": processes}]})


async def main() -> None:
    shared: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
    otlp, query = web.Application(client_max_size=64 * 1024 * 1024), web.Application()
    otlp[SPANS] = query[SPANS] = shared
    otlp.add_routes([web.post("/v1/traces", traces), web.post("/v1/metrics", metrics)])
    query.add_routes([web.get("/api/services", services), web.get("/api/traces/{trace_id}", trace)])
    runners = [web.AppRunner(otlp), web.AppRunner(query)]
    for runner, port in zip(runners, (4318, 16686), strict=True):
        await runner.setup()
        await web.TCPSite(runner, "0.0.0.0", port).start()
    print("otlp-receiver: OTLP/HTTP on :4318, Jaeger-style query API on :16686", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        for runner in runners:
            await runner.cleanup()


if __name__ == "__main__":
    loop = asyncio.new_event_loop()
    task = loop.create_task(main())
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    loop.add_signal_handler(signal.SIGINT, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        loop.run_until_complete(task)
