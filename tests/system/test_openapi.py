"""The OpenAPI document stays in step with the app: the same routes, the Structs' schemas, and the live
answers match them. (openapi-spec-validator and jsonschema come with moto[server].)"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import jsonschema
import msgspec
from openapi_spec_validator import validate as validate_spec

from services.query.app import ENDPOINTS
from services.query.endpoints import Endpoint
from services.query.openapi import REF_TEMPLATE

if TYPE_CHECKING:
    from tests.system.query_fixtures import Client, ClientFactory, Seed

pytest_plugins = ("tests.system.query_fixtures",)


async def _document(client: Client) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    document: dict[str, Any] = await response.json()
    return document


async def test_the_document_is_valid_openapi_3_1(client: Client) -> None:
    document = await _document(client)
    assert document["openapi"] == "3.1.0"
    validate_spec(document)


async def test_every_served_route_is_documented_and_nothing_else(client: Client) -> None:
    document = await _document(client)
    documented = {
        (method.upper(), path) for path, operations in document["paths"].items() for method in operations
    }
    served = {
        (route.method, route.resource.canonical)
        for route in client.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert documented == served
    assert {(ep.method, ep.path) for ep in ENDPOINTS} == served


async def test_response_schemas_are_the_structs_schemas(client: Client) -> None:
    document = await _document(client)
    components = document["components"]["schemas"]
    for ep in ENDPOINTS:
        operation = document["paths"][ep.path][ep.method.lower()]
        assert set(operation["responses"]) == {str(s) for s in ep.responses}
        for status, body_type in ep.responses.items():
            (schema,), expected_components = msgspec.json.schema_components(
                [body_type], ref_template=REF_TEMPLATE
            )
            content = operation["responses"][str(status)]["content"]
            if ep.media_types and 200 <= status < 300:  # a page or a file, not JSON
                assert set(content) == set(ep.media_types), (ep.path, status)
                continue
            assert content["application/json"]["schema"] == schema, (ep.path, status)
            for name, component in expected_components.items():
                assert components[name] == component, name
            assert ("text/csv" in content) == (bool(ep.csv_columns) and status == 200)


async def test_live_answers_match_the_documented_schemas(client: Client, seed: Seed) -> None:
    await seed.departments([(1, "Ops"), (2, "Sales")])
    await seed.jobs([(1, "Clerk")])
    await seed.employees([(1, "a", "2021-02-01T00:00:00Z", 1, 1), (2, "b", "2021-05-01T00:00:00Z", 1, 1)])
    document = await _document(client)
    form_response = await client.post(
        "/upload?table=jobs", data=b"1,Clerk\n", headers={"Content-Type": "text/csv"}
    )
    upload_id = (await form_response.json())["uploads"][0]["id"]
    calls = [
        ("POST", "/upload", form_response),
        ("GET", "/uploads/{id}", await client.get(f"/uploads/{upload_id}")),
        ("GET", "/uploads/{id}", await client.get(f"/uploads/{uuid.uuid4()}")),
        ("GET", "/uploads/{id}", await client.get("/uploads/nope")),
        ("GET", "/uploads/{id}/rejects", await client.get(f"/uploads/{upload_id}/rejects")),
        ("GET", "/metrics/hires", await client.get("/metrics/hires")),
        ("GET", "/metrics/departments", await client.get("/metrics/departments")),
        ("GET", "/metrics/departments", await client.get("/metrics/departments?year=x")),
        ("GET", "/healthz", await client.get("/healthz")),
        ("GET", "/readyz", await client.get("/readyz")),
        ("GET", "/openapi.json", await client.get("/openapi.json")),
    ]
    by_route: dict[tuple[str, str], Endpoint] = {(ep.method, ep.path): ep for ep in ENDPOINTS}
    for method, path, response in calls:
        body = await response.read()
        declared = by_route[(method, path)].responses[response.status]
        msgspec.json.decode(body, type=declared, strict=True)  # the Struct accepts it
        schema = document["paths"][path][method.lower()]["responses"][str(response.status)]["content"][
            "application/json"
        ]["schema"]
        jsonschema.validate(msgspec.json.decode(body), {**schema, "components": document["components"]})


async def test_security_is_documented_only_when_the_service_has_keys(make_client: ClientFactory) -> None:
    open_api = await _document(await make_client())
    operations = [op for ops in open_api["paths"].values() for op in ops.values()]
    assert all(op["security"] == [] and "x-required-scope" not in op for op in operations)
    guarded = await make_client(api_keys="k3y-for-docs:read")
    response = await guarded.get("/openapi.json", headers={"X-API-Key": "k3y-for-docs"})
    document = await response.json()
    hires = document["paths"]["/metrics/hires"]["get"]
    assert hires["security"] and hires["x-required-scope"] == "read"
    assert document["paths"]["/healthz"]["get"]["security"] == []
    validate_spec(document)
