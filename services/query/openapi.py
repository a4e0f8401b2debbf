"""`GET /openapi.json`: an OpenAPI 3.1 document built from the endpoint registry and the msgspec
types of every body, so it describes exactly the routes the app serves."""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Any, Final

import msgspec
from aiohttp import web

from services.query.endpoints import Endpoint
from services.query.http import encode
from services.query.schemas import ErrorBody
from services.query.state import OPENAPI

REF_TEMPLATE: Final = "#/components/schemas/{name}"
_SECURITY: Final[list[dict[str, list[str]]]] = [{"bearerKey": []}, {"headerKey": []}]


def response_types(endpoints: Sequence[Endpoint]) -> list[Any]:
    seen: list[Any] = []
    for ep in endpoints:
        for body_type in ep.responses.values():
            if body_type not in seen:
                seen.append(body_type)
    return seen


def _hoist(schema: Any, components: dict[str, Any]) -> Any:
    """`schema` with its own `$defs` moved into the document's components (msgspec.json.schema()
    refers to `#/$defs/...`, which would resolve against the document's root)."""
    if isinstance(schema, dict):
        for name, definition in schema.get("$defs", {}).items():
            components.setdefault(name, _hoist(definition, components))
        return {
            k: (
                REF_TEMPLATE.format(name=v.removeprefix("#/$defs/"))
                if k == "$ref" and isinstance(v, str)
                else _hoist(v, components)
            )
            for k, v in schema.items()
            if k != "$defs"
        }
    if isinstance(schema, list):
        return [_hoist(item, components) for item in schema]
    return schema


def build_document(
    endpoints: Sequence[Endpoint], *, secured: bool = True, version: str = "0.1.0"
) -> dict[str, Any]:
    """The document; `secured`: the service has API keys (else no operation says it needs one)."""
    types = response_types(endpoints)
    schemas, components = msgspec.json.schema_components(types, ref_template=REF_TEMPLATE)
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        responses: dict[str, Any] = {}
        for status, body_type in sorted(ep.responses.items()):
            if ep.media_types and 200 <= status < 300:  # not JSON: a page, a script, a file
                content: dict[str, Any] = {media: {"schema": {"type": "string"}} for media in ep.media_types}
                responses[str(status)] = {"description": HTTPStatus(status).phrase, "content": content}
                continue
            content = {"application/json": {"schema": schemas[types.index(body_type)]}}
            if ep.csv_columns and status == 200:
                content["text/csv"] = {
                    "schema": {"type": "string"},
                    "example": ",".join(ep.csv_columns) + "\n",
                }
            responses[str(status)] = {"description": HTTPStatus(status).phrase, "content": content}
        operation: dict[str, Any] = {
            "operationId": ep.handler.__name__,
            "summary": ep.summary,
            "responses": responses,
            "security": _SECURITY if secured and ep.scope is not None else [],
        }
        if secured and ep.scope is not None:
            operation["x-required-scope"] = ep.scope
        if ep.params:
            operation["parameters"] = [
                {
                    "name": p.name,
                    "in": p.location,
                    "required": p.required or p.location == "path",
                    "description": p.description,
                    "schema": dict(p.schema),
                }
                for p in ep.params
            ]
        if ep.request_body:
            operation["requestBody"] = {
                "required": True,
                "content": {
                    ct: {"schema": _hoist(dict(schema), components)} for ct, schema in ep.request_body.items()
                },
            }
        paths.setdefault(ep.path, {})[ep.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Hiring pipeline query API",
            "version": version,
            "description": "Uploads CSV files into the raw bucket, follows their ingestion, and serves the "
            'hiring metrics. Errors are JSON {"error": "..."}. When the service has API keys '
            "(HIRING_API_KEYS), every endpoint but /healthz and /readyz needs one with the scope named "
            "in x-required-scope.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearerKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Authorization: Bearer <key>",
                },
                "headerKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


def render(endpoints: Sequence[Endpoint], *, secured: bool = True) -> bytes:
    return encode(build_document(endpoints, secured=secured))


ENDPOINTS: Final = (
    Endpoint(
        "GET",
        "/openapi.json",
        openapi_json,
        "This OpenAPI 3.1 document",
        scope="read",
        responses={200: dict[str, Any], 401: ErrorBody, 403: ErrorBody},
    ),
)
