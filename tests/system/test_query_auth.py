"""API keys: HIRING_API_KEYS parsing (pure) and the access control over HTTP."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from services.query.auth import parse_api_keys
from services.query.options import load_options
from shared.config import ConfigError

if TYPE_CHECKING:
    from tests.system.query_fixtures import ClientFactory

pytest_plugins = ("tests.system.query_fixtures",)

Client = TestClient[web.Request, web.Application]
READER = "reader-key-0001"
UPLOADER = "uploader-key-0002"
ADMIN = "admin-key-0003"
KEYS = f"{READER}:read, {UPLOADER}:upload,{ADMIN}:read+upload"


# ---- the variable's format ------------------------------------------------------------------------------


def test_parse_keys_and_scopes() -> None:
    keys = parse_api_keys(KEYS)
    assert keys.enabled and len(keys) == 3
    reader, uploader, admin = (keys.lookup(k) for k in (READER, UPLOADER, ADMIN))
    assert reader is not None and reader.scopes == {"read"} and reader.number == 1
    assert uploader is not None and uploader.scopes == {"upload"}
    assert admin is not None and admin.scopes == {"read", "upload"}
    assert keys.lookup("nope-nope-nope") is None
    assert keys.lookup(READER.upper()) is None


@pytest.mark.parametrize("value", ["", "  ", ",", " , ,"])
def test_no_keys_means_open(value: str) -> None:
    assert not parse_api_keys(value).enabled


def test_scopes_may_be_spaced_and_in_any_order() -> None:
    key = parse_api_keys("abcdefgh12: upload + read ,").lookup("abcdefgh12")
    assert key is not None and key.scopes == {"read", "upload"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("s3cr3t-value-xyz", "entry 1 is malformed"),
        ("s3cr3t-value-xyz:", "entry 1 has unknown scopes"),
        ("s3cr3t-value-xyz:write", "entry 1 has unknown scopes"),
        ("s3cr3t-value-xyz:read+root", "entry 1 has unknown scopes"),
        ("good-key-0001:read,s3cr3t:read", "entry 2 has a malformed key"),
        ("s3cr3t value xyz:read", "entry 1 has a malformed key"),
        ("s3cr3t:x:read", "entry 1 has a malformed key"),
        ("s3cr3t-value-xyz:read,s3cr3t-value-xyz:upload", "entry 2 repeats an earlier key"),
        (":read", "entry 1 is malformed"),
    ],
)
def test_malformed_keys_are_a_config_error_that_never_shows_the_key(value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_api_keys(value)
    message = str(caught.value)
    assert message.startswith("HIRING_API_KEYS")
    assert expected in message
    assert "s3cr3t" not in message
    assert "\n" not in message


def test_the_options_read_the_variables() -> None:
    options = load_options({"HIRING_API_KEYS": "k3y-for-etl:read+upload", "HIRING_MAX_UPLOAD_BYTES": "1000"})
    assert options.max_upload_bytes == 1000
    assert len(options.api_keys) == 1 and options.api_keys.lookup("k3y-for-etl") is not None
    with pytest.raises(ConfigError, match="HIRING_API_KEYS"):
        load_options({"HIRING_API_KEYS": "short:read"})
    with pytest.raises(ConfigError, match="HIRING_MAX_UPLOAD_BYTES"):
        load_options({"HIRING_MAX_UPLOAD_BYTES": "1GB"})


# ---- over HTTP -------------------------------------------------------------------------------------------


@pytest.fixture
async def guarded(make_client: ClientFactory) -> Client:
    return await make_client(api_keys=KEYS)


async def _status(client: Client, method: str, path: str, key: str | None = None, how: str = "bearer") -> int:
    headers = {}
    if key is not None:
        headers = {"Authorization": f"Bearer {key}"} if how == "bearer" else {"X-API-Key": key}
    form: aiohttp.FormData | None = None
    if method == "POST":
        form = aiohttp.FormData()
        form.add_field("file", b"1,Clerk\n", filename="jobs.csv")
    response = await client.request(method, path, headers=headers, data=form)
    if response.status >= 400:
        assert response.content_type == "application/json"
        assert set(await response.json()) >= {"error"}
    return response.status


async def test_health_endpoints_are_public(guarded: Client) -> None:
    assert await _status(guarded, "GET", "/healthz") == 200
    assert await _status(guarded, "GET", "/readyz") == 200


@pytest.mark.parametrize("path", ["/metrics/hires", "/metrics/departments?year=2020", "/openapi.json"])
async def test_reads_need_a_key_with_the_read_scope(guarded: Client, path: str) -> None:
    assert await _status(guarded, "GET", path) == 401
    assert await _status(guarded, "GET", path, "not-a-known-key") == 403
    assert await _status(guarded, "GET", path, UPLOADER) == 403
    assert await _status(guarded, "GET", path, READER) == 200
    assert await _status(guarded, "GET", path, READER, how="header") == 200
    assert await _status(guarded, "GET", path, ADMIN) == 200


async def test_upload_needs_the_upload_scope(guarded: Client) -> None:
    assert await _status(guarded, "POST", "/upload") == 401
    assert await _status(guarded, "POST", "/upload", "not-a-known-key") == 403
    assert await _status(guarded, "POST", "/upload", READER) == 403
    assert await _status(guarded, "POST", "/upload", UPLOADER) == 202
    assert await _status(guarded, "POST", "/upload", ADMIN, how="header") == 202


async def test_upload_status_needs_read(guarded: Client) -> None:
    path = "/uploads/2b7f4f64-2d3c-4a8e-9b55-0d5c8b3c9e61"
    assert await _status(guarded, "GET", path) == 401
    assert await _status(guarded, "GET", path, UPLOADER) == 403
    assert await _status(guarded, "GET", path, READER) == 404  # allowed in; there is no such upload
    assert await _status(guarded, "GET", path + "/rejects", READER) == 404


async def test_unknown_routes_and_methods_do_not_answer_strangers(guarded: Client) -> None:
    assert await _status(guarded, "GET", "/nowhere") == 401
    assert await _status(guarded, "GET", "/nowhere", READER) == 404
    assert await _status(guarded, "DELETE", "/metrics/hires") == 401
    assert await _status(guarded, "DELETE", "/metrics/hires", READER) == 405


async def test_401_says_how_to_send_a_key(guarded: Client) -> None:
    response = await guarded.get("/metrics/hires", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status == 401
    assert "Bearer" in response.headers["WWW-Authenticate"]
    assert "X-API-Key" in (await response.json())["error"]


async def test_denials_are_logged_without_the_key(guarded: Client) -> None:
    wrong = "wrong-key-that-must-not-be-logged"
    with capture_logs() as logs:
        await _status(guarded, "GET", "/metrics/hires")
        await _status(guarded, "GET", "/metrics/hires", wrong)
        await _status(guarded, "POST", "/upload", READER)
    denied = [e for e in logs if e["event"] == "auth.denied"]
    assert [e["reason"] for e in denied] == ["missing_key", "unknown_key", "missing_scope"]
    assert denied[2]["key_number"] == 1 and denied[2]["scope"] == "upload"
    assert all(e["path"] for e in denied)
    for secret in (wrong, READER):
        assert secret not in repr(logs)


async def test_without_keys_the_api_is_open(client: Client) -> None:
    assert await _status(client, "GET", "/metrics/hires") == 200
    assert await _status(client, "POST", "/upload") == 202
    assert await _status(client, "GET", "/metrics/hires", "any-key-at-all") == 200
