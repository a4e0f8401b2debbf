"""Typed application state, set by the composition root (app.py) and read by the handlers."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from aiohttp import web

from services.query.cache import MetricsCache
from services.query.options import QueryOptions
from shared.config import Settings
from shared.telemetry import Telemetry

SETTINGS = web.AppKey("settings", Settings)
OPTIONS = web.AppKey("options", QueryOptions)
POOL = web.AppKey("pool", asyncpg.Pool)
S3 = web.AppKey[Any]("s3")  # an aiobotocore S3 client (untyped)
METRICS = web.AppKey("metrics", MetricsCache)
OPENAPI = web.AppKey("openapi", bytes)  # the rendered document
TELEMETRY = web.AppKey("telemetry", Telemetry)
STOPPING = web.AppKey("stopping", asyncio.Event)  # set on SIGTERM: /readyz fails during the grace period
