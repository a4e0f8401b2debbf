"""Tracing, trace-correlated logs and metrics, end to end: a real `hiring query` and a real
`hiring ingest` process export OTLP/HTTP to a receiver in this process (tests/system/otlp.py).

One run (module fixture `traced`) uploads a file through the API, drops another straight into the
bucket and sends an undecodable message; the tests then read what was exported, logged and stored.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from services.dev.ports import free_port
from services.ingest.app import IngestOptions, run_ingest
from services.ingest.consumer import ConsumerOptions
from services.ingest.load import LoadOptions
from services.query.app import build_app
from services.query.options import QueryOptions
from shared.logs import add_trace_context
from shared.telemetry import Telemetry, current_traceparent, parse_traceparent, setup_telemetry
from tests.system.consumers import ROOT, ConsumerProcess, eventually
from tests.system.otlp import ExportedSpan, MetricPoint, OtlpReceiver
from tests.system.stack import Stack

API_KEY = "k3y-for-tracing-tests-5d1c7e"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
ROWS, BAD_EVERY, BATCH_ROWS = 100, 10, 40  # 90 loaded, 10 rejected, in 3 batches
DROPPED_KEY = "jobs/dropped-by-another-tool.csv"


def employees(n: int, bad_every: int) -> bytes:
    lines = []
    for i in range(1, n + 1):
        when = "not-a-date" if i % bad_every == 0 else f"2021-0{1 + i % 9}-1{i % 10}T10:00:00Z"
        lines.append(f"{i},Emp {i},{when},{1 + i % 12},{1 + i % 180}")
    return ("\n".join(lines) + "\n").encode()


class QueryProcess:
    """`python -m services.cli query` on a free port, JSON logs into a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {**os.environ, **env, "HIRING_LOG_FORMAT": "json"}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> QueryProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "services.cli",
                    "query",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


async def terminate(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM and wait without blocking the event loop (the process flushes its telemetry on exit)."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.to_thread(proc.wait, 40)
    except subprocess.TimeoutExpired:
        proc.kill()
        await asyncio.to_thread(proc.wait, 10)


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


@dataclass
class Run:
    stack: Stack
    queue: str
    spans: list[ExportedSpan]
    metrics: list[MetricPoint]
    bodies: list[bytes]
    query_log: str
    consumer_log: str
    upload_id: str
    upload_key: str
    status: dict[str, Any]
    ledger: dict[str, dict[str, Any]]  # key -> ingest_objects row
    upload_row_trace_id: str | None


def _file_spans_done(spans: list[ExportedSpan], queue: str, keys: Iterable[str]) -> bool:
    done = {
        s.attributes.get("aws.s3.key")
        for s in spans
        if s.name == f"process {queue}" and s.attributes.get("hiring.outcome") == "loaded"
    }
    return set(keys) <= done and any(s.name == "GET /uploads/{id}" for s in spans)


@pytest.fixture(scope="module")
async def traced(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Run]:
    own = await asyncio.to_thread(stack.isolated)
    await stack.reset_data()
    tmp = tmp_path_factory.mktemp("tracing")
    queue = own.queue_url.rsplit("/", 1)[-1]
    with OtlpReceiver() as otlp:
        env = {
            **own.env,
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
            "HIRING_API_KEYS": f"{API_KEY}:read+upload",
        }
        query = QueryProcess(env, tmp / "query.log")
        consumer = ConsumerProcess(env, tmp / "consumer.log", INGEST_BATCH_ROWS=str(BATCH_ROWS))
        conn = await own.connect()
        try:
            query.start()
            consumer.start()
            async with aiohttp.ClientSession(query.url) as http:

                async def ready() -> int:
                    try:
                        async with http.get("/readyz") as r:
                            return r.status
                    except aiohttp.ClientError:
                        return 0

                await eventually(ready, lambda s: s == 200, what="query API ready")
                async with http.get("/metrics/hires", headers={"X-API-Key": "not-the-key-123"}) as r:
                    assert r.status == 403
                form = aiohttp.FormData()
                form.add_field(
                    "file",
                    employees(ROWS, BAD_EVERY),
                    filename="hired_employees.csv",
                    content_type="text/csv",
                )
                async with http.post("/upload", data=form, headers=AUTH) as r:
                    assert r.status == 202, await r.text()
                    (accepted,) = (await r.json())["uploads"]
                await asyncio.to_thread(
                    own.s3().put_object, Bucket=own.bucket, Key=DROPPED_KEY, Body=b"1,Dev\n2,QA\n"
                )
                await asyncio.to_thread(
                    own.sqs().send_message, QueueUrl=own.queue_url, MessageBody="this is not an S3 event"
                )

                async def status() -> dict[str, Any]:
                    async with http.get(f"/uploads/{accepted['id']}", headers=AUTH) as r:
                        return dict(await r.json())

                final = await eventually(status, lambda s: s["status"] == "loaded", what="upload loaded")
                await eventually(
                    lambda: conn.fetch("SELECT key FROM ingest_objects WHERE status = 'loaded'"),
                    lambda rows: len(rows) == 2,
                    what="both files loaded",
                )

                async def exported() -> list[ExportedSpan]:
                    return otlp.snapshot()[0]

                await eventually(
                    exported,
                    lambda s: _file_spans_done(s, queue, [accepted["key"], DROPPED_KEY]),
                    what="the spans of both files exported",
                )
        finally:
            await terminate(query.proc)
            await terminate(consumer.proc)
        ledger = {
            r["key"]: dict(r)
            for r in await conn.fetch("SELECT key, upload_id, trace_id, rows_loaded FROM ingest_objects")
        }
        upload_trace = await conn.fetchval("SELECT trace_id FROM uploads WHERE id = $1::uuid", accepted["id"])
        await conn.close()
        spans, metrics = otlp.snapshot()
        yield Run(
            stack=own,
            queue=queue,
            spans=spans,
            metrics=metrics,
            bodies=list(otlp.bodies),
            query_log=query.log(),
            consumer_log=consumer.log(),
            upload_id=accepted["id"],
            upload_key=accepted["key"],
            status=final,
            ledger=ledger,
            upload_row_trace_id=upload_trace,
        )


# ---- helpers over exported spans --------------------------------------------------------------------


def one(spans: Iterable[ExportedSpan], what: str) -> ExportedSpan:
    found = list(spans)
    assert len(found) == 1, f"expected one {what}, found {[(s.name, s.attributes) for s in found]}"
    return found[0]


def children(spans: list[ExportedSpan], parent: ExportedSpan) -> list[ExportedSpan]:
    return [s for s in spans if s.trace_id == parent.trace_id and s.parent_span_id == parent.span_id]


def descendants(spans: list[ExportedSpan], root: ExportedSpan) -> list[ExportedSpan]:
    out, todo = [], [root]
    while todo:
        for child in children(spans, todo.pop()):
            out.append(child)
            todo.append(child)
    return out


def file_span(run: Run, key: str) -> ExportedSpan:
    """The span of the delivery that loaded `key` (moto, like S3 at times, may send a second event for
    a multipart upload: that delivery's span says `busy` or `duplicate`)."""
    return one(
        (
            s
            for s in run.spans
            if s.name == f"process {run.queue}"
            and s.attributes.get("aws.s3.key") == key
            and s.attributes.get("hiring.outcome") == "loaded"
        ),
        f"file span of {key}",
    )


def post_span(run: Run) -> ExportedSpan:
    return one((s for s in run.spans if s.name == "POST /upload"), "POST /upload span")


def points(run: Run, name: str, **attributes: Any) -> list[MetricPoint]:
    return [
        p
        for p in run.metrics
        if p.name == name and all(p.attributes.get(k) == v for k, v in attributes.items())
    ]


def latest(run: Run, name: str, **attributes: Any) -> float:
    """A cumulative metric's last exported value (0 when never exported)."""
    found = points(run, name, **attributes)
    return max((p.value for p in found), default=0)


# ---- the trace of one upload ------------------------------------------------------------------------


def test_the_upload_request_is_a_server_span_with_its_s3_and_database_calls(traced: Run) -> None:
    post = post_span(traced)
    assert (post.service, post.kind, post.parent_span_id) == ("hiring-query", "SERVER", None)
    assert post.resource["service.version"] and post.resource["deployment.environment"] == "local"
    assert {k: post.attributes[k] for k in ("http.request.method", "http.route", "url.path")} == {
        "http.request.method": "POST",
        "http.route": "/upload",
        "url.path": "/upload",
    }
    assert post.attributes["http.response.status_code"] == 202 and post.status == "UNSET"
    under = descendants(traced.spans, post)
    s3_calls = {s.name for s in under if s.attributes.get("rpc.service") == "S3"}
    assert {"S3.CreateMultipartUpload", "S3.UploadPart", "S3.CompleteMultipartUpload"} <= s3_calls
    upload_part = next(s for s in under if s.name == "S3.UploadPart")
    assert upload_part.kind == "CLIENT" and upload_part.attributes["aws.s3.key"] == traced.upload_key
    insert = one((s for s in under if s.attributes.get("db.operation") == "INSERT"), "INSERT INTO uploads")
    assert insert.name == "INSERT uploads" and insert.attributes["db.system"] == "postgresql"
    assert insert.attributes["db.collection.name"] == "uploads" and insert.attributes["db.namespace"]
    # the status polls and the refused request are spans too; 4xx is the client's, not an error
    assert any(
        s.name == "GET /uploads/{id}" and s.attributes["http.route"] == "/uploads/{id}" for s in traced.spans
    )
    refused = one((s for s in traced.spans if s.name == "GET /metrics/hires"), "GET /metrics/hires")
    assert refused.attributes["http.response.status_code"] == 403 and refused.status == "UNSET"


def test_the_consumers_file_span_links_to_the_upload_and_holds_batches_copy_and_merge(traced: Run) -> None:
    post, file = post_span(traced), file_span(traced, traced.upload_key)
    assert (file.service, file.kind, file.parent_span_id) == ("hiring-ingest", "CONSUMER", None)
    assert file.trace_id != post.trace_id  # S3 events carry no context: a new trace, linked
    (upload_link,) = [link for link in file.links if link.attributes.get("hiring.link") == "upload"]
    assert (upload_link.trace_id, upload_link.span_id) == (post.trace_id, post.span_id)
    attrs = file.attributes
    assert attrs["hiring.upload.trace_id"] == post.trace_id and attrs["hiring.upload.id"] == traced.upload_id
    assert {
        k: attrs[k] for k in ("messaging.system", "messaging.operation.type", "messaging.destination.name")
    } == {
        "messaging.system": "aws_sqs",
        "messaging.operation.type": "process",
        "messaging.destination.name": traced.queue,
    }
    assert attrs["messaging.message.id"] and attrs["aws.s3.bucket"] == traced.stack.bucket
    assert attrs["hiring.table"] == "hired_employees" and attrs["hiring.object.version"]
    assert (attrs["hiring.rows.loaded"], attrs["hiring.rows.rejected"], attrs["hiring.batches"]) == (
        90,
        10,
        3,
    )
    # it also links to the poll that received its message
    (receive_link,) = [link for link in file.links if link.attributes.get("hiring.link") == "receive"]
    receive = one((s for s in traced.spans if s.span_id == receive_link.span_id), "receive span")
    assert receive.name == f"receive {traced.queue}" and receive.kind == "CLIENT"
    assert any(s.name == "SQS.ReceiveMessage" for s in children(traced.spans, receive))

    under = descendants(traced.spans, file)
    batches = [s for s in children(traced.spans, file) if s.name == "batch hired_employees"]
    assert len(batches) == 3
    assert sum(b.attributes["hiring.batch.rows"] for b in batches) == 90
    assert sum(b.attributes["hiring.batch.rejects"] for b in batches) == 10
    for batch in batches:
        # Either COPY straight into the table (no id of the batch is there yet), or COPY into the
        # staging table and the merge INSERT (later line / later upload wins).
        statements = children(traced.spans, batch)
        copy = [s for s in statements if s.name in ("COPY hired_employees", "COPY stage_hired_employees")]
        assert copy and all(c.attributes["db.system"] == "postgresql" for c in copy)
        assert all(c.attributes["db.operation"] == "COPY" and c.kind == "CLIENT" for c in copy)
        if any(c.name == "COPY stage_hired_employees" for c in copy):
            merge = [s for s in statements if s.name == "INSERT hired_employees"]
            assert len(merge) == 1 and merge[0].attributes["db.operation"] == "INSERT"
            assert "INSERT INTO hired_employees" in merge[0].attributes["db.query.text"]
    names = {s.name for s in under}
    assert {"S3.HeadObject", "S3.GetObject", "SQS.DeleteMessage"} <= names
    head = next(s for s in under if s.name == "S3.HeadObject")
    assert head.attributes["aws.s3.key"] == traced.upload_key and head.attributes["rpc.system"] == "aws-api"
    delete = next(s for s in under if s.name == "SQS.DeleteMessage")
    assert delete.attributes["messaging.system"] == "aws_sqs"
    assert delete.attributes["messaging.destination.name"] == traced.queue
    assert all(s.status != "ERROR" for s in [file, *under])


def test_upload_status_and_ledger_carry_the_file_spans_trace_id(traced: Run) -> None:
    file = file_span(traced, traced.upload_key)
    assert len(traced.status["trace_id"]) == 32 and int(traced.status["trace_id"], 16)
    assert traced.status["trace_id"] == file.trace_id == traced.ledger[traced.upload_key]["trace_id"]
    assert str(traced.ledger[traced.upload_key]["upload_id"]) == traced.upload_id
    assert traced.upload_row_trace_id == post_span(traced).trace_id  # uploads.trace_id: the request's


def test_a_file_dropped_into_the_bucket_starts_a_fresh_trace(traced: Run) -> None:
    file = file_span(traced, DROPPED_KEY)
    assert file.parent_span_id is None
    assert [link.attributes["hiring.link"] for link in file.links] == ["receive"]
    assert "hiring.upload.trace_id" not in file.attributes and "hiring.upload.id" not in file.attributes
    assert file.trace_id not in {post_span(traced).trace_id, file_span(traced, traced.upload_key).trace_id}
    assert traced.ledger[DROPPED_KEY]["trace_id"] == file.trace_id
    assert file.attributes["hiring.rows.loaded"] == 2


def test_an_undecodable_message_is_an_error_span(traced: Run) -> None:
    failed = [
        s
        for s in traced.spans
        if s.name == f"process {traced.queue}" and s.attributes.get("error.type") == "undecodable"
    ]
    assert failed and all(s.status == "ERROR" for s in failed)
    assert {s.attributes["hiring.sqs.receive_count"] for s in failed} >= {1}


# ---- logs ---------------------------------------------------------------------------------------------


def test_the_object_loaded_log_line_carries_the_trace_id(traced: Run) -> None:
    lines = json_lines(traced.consumer_log)
    (loaded,) = [e for e in lines if e.get("event") == "object loaded" and e.get("key") == traced.upload_key]
    assert loaded["trace_id"] == traced.status["trace_id"] == file_span(traced, traced.upload_key).trace_id
    assert len(loaded["span_id"]) == 16 and loaded["upload_id"] == traced.upload_id
    assert loaded["bucket"] == traced.stack.bucket
    (accepted,) = [e for e in json_lines(traced.query_log) if e.get("event") == "upload.accepted"]
    assert accepted["trace_id"] == post_span(traced).trace_id and accepted["upload_id"] == traced.upload_id
    # outside any span (start-up, polling) no ids are made up
    started = next(e for e in lines if e.get("event") == "consumer started")
    assert "trace_id" not in started


def test_no_secret_reaches_a_log_line_or_a_span(traced: Run) -> None:
    password = traced.stack.env["RDS_PASSWORD"]
    assert len(password) >= 16, (
        "the stack's database must have a real password for this test to mean anything"
    )
    exported = b"".join(traced.bodies)
    assert exported and traced.query_log and traced.consumer_log
    for secret in (password, API_KEY, "not-the-key-123"):
        assert secret not in traced.query_log
        assert secret not in traced.consumer_log
        assert secret.encode() not in exported


# ---- metrics ------------------------------------------------------------------------------------------


def test_metrics_count_rows_files_batches_lag_and_messages_left_for_redrive(traced: Run) -> None:
    assert latest(traced, "hiring.ingest.rows.loaded", table="hired_employees") == 90
    assert latest(traced, "hiring.ingest.rows.rejected", table="hired_employees") == 10
    assert latest(traced, "hiring.ingest.rows.loaded", table="jobs") == 2
    assert latest(traced, "hiring.ingest.files.processed", table="hired_employees", outcome="loaded") == 1
    assert latest(traced, "hiring.ingest.files.processed", table="jobs", outcome="loaded") == 1
    assert latest(traced, "hiring.ingest.batch.duration", table="hired_employees") == 3
    assert latest(traced, "hiring.ingest.lag", table="hired_employees") == 1
    left = points(traced, "hiring.ingest.messages.left_for_redrive", reason="undecodable")
    assert left and {p.attributes["receive_count"] for p in left} >= {1}
    assert all(p.service == "hiring-ingest" for p in points(traced, "hiring.ingest.rows.loaded"))
    http = points(traced, "http.server.request.duration", **{"http.route": "/upload"})
    assert (
        http
        and http[-1].service == "hiring-query"
        and http[-1].attributes["http.response.status_code"] == 202
    )


# ---- tracing off --------------------------------------------------------------------------------------


def _otel_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("Otel")]


async def test_without_an_endpoint_nothing_is_exported_and_no_exporter_thread_runs(
    fresh: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    with OtlpReceiver() as otlp:
        # What an OTLP exporter built with its defaults would send to: ours must build none at all.
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{otlp.url}/v1/traces")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", f"{otlp.url}/v1/metrics")
        for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.setenv(var, fresh.env[var])
        settings = fresh.settings("hiring-query")
        assert settings.telemetry.otlp_endpoint is None
        telemetry = setup_telemetry(settings.telemetry)
        assert not telemetry.enabled
        assert isinstance(telemetry.tracer_provider, trace.NoOpTracerProvider)

        client = TestClient(TestServer(build_app(settings, QueryOptions())))
        await client.start_server()
        stop = asyncio.Event()
        options = IngestOptions(ConsumerOptions(wait_seconds=1), LoadOptions())
        ingest = asyncio.create_task(
            run_ingest(fresh.settings("hiring-ingest", require_queue=True), options, stop)
        )
        try:
            form = aiohttp.FormData()
            form.add_field("file", b"1,Dev\n2,QA\n", filename="jobs.csv", content_type="text/csv")
            response = await client.post("/upload", data=form)
            assert response.status == 202
            (accepted,) = (await response.json())["uploads"]

            async def status() -> dict[str, Any]:
                seen = _otel_threads()
                assert not seen, f"exporter threads running with tracing off: {seen}"
                return dict(await (await client.get(f"/uploads/{accepted['id']}")).json())

            done = await eventually(status, lambda s: s["status"] == "loaded", what="upload loaded")
            # the ingestion still has a trace id (made locally, exported nowhere): logs and status agree
            assert re.fullmatch(r"[0-9a-f]{32}", done["trace_id"]) and done["rows_loaded"] == 2
        finally:
            stop.set()
            await ingest
            await client.close()
        assert not _otel_threads()
        await asyncio.sleep(0.3)
        assert otlp.requests == 0


# ---- units --------------------------------------------------------------------------------------------


def test_log_lines_get_trace_and_span_ids_only_inside_a_span() -> None:
    tracer = TracerProvider().get_tracer("test")  # no processor: nothing exported, no thread
    assert add_trace_context(None, "info", {"event": "x"}) == {"event": "x"}
    with tracer.start_as_current_span("work") as span:
        event = add_trace_context(None, "info", {"event": "x"})
        ctx = span.get_span_context()
        assert event["trace_id"] == f"{ctx.trace_id:032x}" and event["span_id"] == f"{ctx.span_id:016x}"
        parent = current_traceparent()
        assert parent is not None and parent.startswith(f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-")
        parsed = parse_traceparent(parent)
        assert parsed is not None and (parsed.trace_id, parsed.span_id) == (ctx.trace_id, ctx.span_id)
    for bad in (None, "", "garbage", "00-" + "0" * 32 + "-" + "0" * 16 + "-01"):
        assert parse_traceparent(bad) is None
    assert current_traceparent() is None


def test_disabled_telemetry_is_free() -> None:
    telemetry = Telemetry.disabled()
    with telemetry.tracer("t").start_as_current_span("nothing") as span:
        assert not span.get_span_context().is_valid
    telemetry.meter("m").create_counter("c").add(1)
    telemetry.shutdown()
    telemetry.shutdown()
    assert not _otel_threads()
