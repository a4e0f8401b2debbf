"""structlog set-up shared by both services: JSON lines in containers, readable lines in a terminal.

Every line a process writes after `configure_logging` is one log record: one JSON object, or one
console line. Besides structlog's own loggers that covers the standard library's logging (asyncpg's
pool, aiohttp, botocore: through structlog's ProcessorFormatter), `warnings`, exceptions nobody
handled in an asyncio loop (`loop_exception_handler`), in a thread, or at the top of the process.
Tracebacks travel inside the record (`exception`), never as lines of their own.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import logging
import os
import sys
import threading
import traceback
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO

import structlog
from opentelemetry import trace

_log = structlog.get_logger("hiring")


def json_wanted(env: dict[str, str] | None = None) -> bool:
    """HIRING_LOG_FORMAT (`json` or `console`) decides; unset: JSON unless stderr is a terminal."""
    chosen = (env if env is not None else os.environ).get("HIRING_LOG_FORMAT", "").strip().lower()
    return chosen == "json" if chosen in ("json", "console") else not sys.stderr.isatty()


def configure_logging(service: str, *, json: bool | None = None, level: str = "INFO") -> None:
    """Configure structlog, the stdlib root logger, warnings and the process's exception hooks, once
    per process (the composition root calls it). `json=None` follows `json_wanted()`."""
    if json is None:
        json = json_wanted()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_trace_context,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_service(service),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=one_line_exception)
    )
    final = [structlog.processors.format_exc_info, renderer] if json else [_one_line, renderer]
    structlog.configure(
        processors=[*shared, *final],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # the standard library's records (asyncpg, aiohttp, botocore, py.warnings) through the same chain
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_exception


def _one_line(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """Console lines stay lines: line breaks inside values (asyncio's messages have them) shown as ⏎."""
    for key, value in event.items():
        if isinstance(value, str) and ("\n" in value or "\r" in value):
            event[key] = value.replace("\r\n", " ⏎ ").replace("\n", " ⏎ ").replace("\r", " ⏎ ")
    return event


def one_line_exception(sio: TextIO, exc_info: Any) -> None:
    """A console renderer's exception as one line: `ValueError: boom (at a.py:12 in f < b.py:30 in g)`,
    innermost frame first."""
    exc_type, exc, tb = exc_info
    frames = traceback.extract_tb(tb)[::-1][:4]
    where = " < ".join(f"{os.path.basename(f.filename)}:{f.lineno} in {f.name}" for f in frames)
    text = " ".join(traceback.format_exception_only(exc_type, exc)).replace("\n", " ").strip()
    sio.write(f" exception={text!r}" + (f" at={where!r}" if where else ""))


def loop_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """An asyncio loop's handler for exceptions nobody awaited (a task's, a callback's): one record."""
    exc = context.get("exception")
    fields: dict[str, Any] = {"error": context.get("message", "unhandled exception in the event loop")}
    for key in ("task", "future", "handle"):
        if key in context:
            fields[key] = repr(context[key])[:300]
    if isinstance(exc, BaseException):
        _log.error("asyncio.unhandled", exc_info=exc, **fields)
    else:
        _log.error("asyncio.unhandled", **fields)


def _log_uncaught(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    _log.critical("process.crashed", exc_info=(exc_type, exc, tb))


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    thread = args.thread.name if args.thread is not None else "?"
    exc = args.exc_value if args.exc_value is not None else args.exc_type()
    _log.error("thread.crashed", thread=thread, exc_info=(args.exc_type, exc, args.exc_traceback))


def fatal(command: str, message: str) -> None:
    """The last line of a process that cannot start (a bad setting, no database): one JSON object
    when logs are JSON (`service` is `command` with dashes), else `command: message`; logging need
    not be configured yet."""
    if json_wanted():
        record = {
            "event": "service.failed",
            "error": message,
            "level": "error",
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "service": command.replace(" ", "-"),
        }
        print(jsonlib.dumps(record), file=sys.stderr, flush=True)
    else:
        print(f"{command}: {message}", file=sys.stderr, flush=True)


def _add_service(service: str) -> Any:
    def processor(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("service", service)
        return event

    return processor


def add_trace_context(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """`trace_id` and `span_id` (hex, as trace back ends show them) of the current span, if any.

    Reads OpenTelemetry's context (a contextvar), not a provider: works whoever made the span, and
    adds nothing when tracing is off (no-op spans have no valid context)."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event.setdefault("trace_id", trace.format_trace_id(ctx.trace_id))
        event.setdefault("span_id", trace.format_span_id(ctx.span_id))
    return event
