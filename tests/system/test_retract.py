"""Undo through the API and the command (CONTRACT §2, §4): `DELETE /uploads/{id}` and `hiring retract`
delete the upload's object version; a real consumer takes the ObjectRemoved event, each id the upload
wrote returns to the latest remaining upload's value (or disappears), and the status is `retracted`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from tests.system.consumers import ROOT, ConsumerProcess
from tests.system.stack import Stack

if TYPE_CHECKING:
    from tests.system.query_fixtures import Client, ClientFactory

pytest_plugins = ("tests.system.query_fixtures",)


async def _upload(client: Client, name: str, payload: bytes, headers: dict[str, str]) -> str:
    form = aiohttp.FormData()
    form.add_field("file", payload, filename=name, content_type="text/csv")
    resp = await client.post("/upload", data=form, headers=headers)
    assert resp.status == 202, await resp.text()
    return str((await resp.json())["uploads"][0]["id"])


async def _status(client: Client, upload_id: str, want: str, headers: dict[str, str]) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while True:
        body: dict[str, Any] = await (await client.get(f"/uploads/{upload_id}", headers=headers)).json()
        if body["status"] == want:
            return body
        assert time.monotonic() < deadline, f"{upload_id} still {body['status']}, not {want}"
        await asyncio.sleep(0.2)


async def _jobs(fresh: Stack) -> dict[int, str]:
    conn = await fresh.connect()
    try:
        return {r["id"]: r["job"] for r in await conn.fetch("SELECT id, job FROM jobs ORDER BY id")}
    finally:
        await conn.close()


async def test_retract_by_api_and_command_reverts_rows_to_the_latest_remaining_upload(
    make_client: ClientFactory, fresh: Stack, tmp_path: Path
) -> None:
    client = await make_client(api_keys="etl-k3y-000001:read+upload,ops-k3y-000001:read+admin")
    etl = {"Authorization": "Bearer etl-k3y-000001"}
    ops = {"Authorization": "Bearer ops-k3y-000001"}
    with ConsumerProcess(fresh.env, tmp_path / "consumer.log"):
        first = await _upload(client, "jobs.csv", b"1,Analyst\n2,Engineer\n", etl)
        await _status(client, first, "loaded", etl)
        second = await _upload(client, "jobs.csv", b"2,Senior Engineer\n3,Manager\n", etl)
        await _status(client, second, "loaded", etl)
        assert await _jobs(fresh) == {1: "Analyst", 2: "Senior Engineer", 3: "Manager"}

        resp = await client.delete(f"/uploads/{second}", headers=ops)
        assert resp.status == 202
        done = await _status(client, second, "retracted", etl)
        assert done["id"] == second
        # id 2 returns to the first upload's value; id 3, which only the retracted one had, is gone
        assert await _jobs(fresh) == {1: "Analyst", 2: "Engineer"}
        history = await (await client.get("/uploads?status=retracted", headers=etl)).json()
        assert [u["id"] for u in history["uploads"]] == [second]
        # again: still 202, nothing else changes
        assert (await client.delete(f"/uploads/{second}", headers=ops)).status == 202

        # the command, with the key from HIRING_API_KEY
        url = str(client.make_url("")).rstrip("/")
        done_cmd = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "services.cli", "retract", first, "--api", url, "--wait"],
            env={**os.environ, "HIRING_API_KEY": "ops-k3y-000001"},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done_cmd.returncode == 0, done_cmd.stdout + done_cmd.stderr
        assert f"{first}: retracted" in done_cmd.stdout
        assert await _jobs(fresh) == {}
