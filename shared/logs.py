"""structlog set-up shared by both services: JSON lines in containers, readable lines in a terminal."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog
from opentelemetry import trace


def configure_logging(service: str, *, json: bool | None = None, level: str = "INFO") -> None:
    """Configure structlog and the stdlib root logger once per process (the composition root calls it).

    `json=None` follows HIRING_LOG_FORMAT (`json` or `console`), else picks JSON when stderr is
    not a terminal (containers, log collectors).
    """
    if json is None:
        chosen = os.environ.get("HIRING_LOG_FORMAT", "").strip().lower()
        json = chosen == "json" if chosen in ("json", "console") else not sys.stderr.isatty()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_trace_context,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_service(service),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer] if json else [*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")


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
