"""SIGTERM with HIRING_SHUTDOWN_GRACE_SECONDS: the API keeps answering for the grace period with
/readyz failing (API Gateway or a load balancer may still route to a stopping ECS task), then stops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from services.dev.ports import free_port
from tests.system.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
GRACE = 3


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_sigterm_keeps_serving_for_the_grace_period_with_readiness_failing(
    stack: Stack, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "query.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "query", "--host", "127.0.0.1", "--port", str(port)],
            env={**os.environ, **stack.env, "HIRING_SHUTDOWN_GRACE_SECONDS": str(GRACE)},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(f"{url}/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "query.log").read_text()
            time.sleep(0.2)

        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        time.sleep(0.5)
        status, body = _get(f"{url}/readyz")
        assert (status, body["error"]) == (503, "shutting down")
        assert _get(f"{url}/healthz")[0] == 200
        assert _get(f"{url}/metrics/departments?year=2021")[0] == 200  # real requests still served
        assert proc.wait(GRACE + 30) == 0
        assert time.monotonic() - sent >= GRACE
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    try:
        urllib.request.urlopen(f"{url}/healthz", timeout=2)
        raise AssertionError("still listening after the grace period")
    except urllib.error.URLError:
        pass
