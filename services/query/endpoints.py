"""The endpoint registry: one entry per route, read by the router (app.py), the access control
(auth.py) and the OpenAPI document (openapi.py), so the three cannot drift apart."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from services.query.errors import ExpectHandler

Scope = Literal["read", "upload", "admin"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Param:
    """A query or path parameter, as OpenAPI describes it."""

    name: str
    location: Literal["query", "path"]
    schema: Mapping[str, Any]
    description: str
    required: bool = False


@dataclass(frozen=True)
class Endpoint:
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    path: str  # aiohttp's canonical form, `{name}` for path parameters (the same in OpenAPI)
    handler: Handler
    summary: str
    scope: Scope | None  # the API-key scope it needs; None: public (no key even when keys are set)
    responses: Mapping[int, Any]  # status -> the msgspec type of its JSON body
    params: tuple[Param, ...] = ()
    request_body: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # content type -> schema
    csv_columns: tuple[str, ...] = ()  # non-empty: also answers text/csv with these columns
    media_types: tuple[str, ...] = ()  # non-empty: its 2xx answers are these, not JSON (a page, a file)
    expect: ExpectHandler | None = None  # answers `Expect: 100-continue`; None: errors.expect_continue()
