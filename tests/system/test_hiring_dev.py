"""`hiring dev` as a user runs it: one command, the whole system, an env file, a clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from services.dev.ports import free_port

DATA = Path(__file__).resolve().parents[1] / "data" / "globant"


def _processes_with_env(tag: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if tag.encode() in f.read().split(b"\0"):
                    found.append(int(pid))
        except OSError:
            continue
    return found


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _post_file(url: str, path: Path) -> dict[str, Any]:
    boundary = "hiringtestboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
            "Content-Type: text/csv\r\n\r\n"
        ).encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 202
        accepted: dict[str, Any] = json.loads(resp.read())
        return accepted


@pytest.mark.slow
def test_hiring_dev_runs_the_system_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env_file = tmp_path / "dev.env"
    tag = f"HIRING_TEST_TAG={tmp_path}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli",
            "dev",
            "--port",
            str(port),
            "--consumers",
            "2",
            "--state-dir",
            str(tmp_path / "state"),
            "--env-file",
            str(env_file),
        ],
        env={**os.environ, "HIRING_TEST_TAG": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while not env_file.exists():
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "no env file within 120 s"
            time.sleep(0.2)
        env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        for var in (
            "S3_RAW_BUCKET",
            "SQS_QUEUE_URL",
            "RDS_ENDPOINT",
            "RDS_DB_NAME",
            "RDS_USERNAME",
            "RDS_PASSWORD",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",  # the AWS CLI's name for it
            "AWS_ENDPOINT_URL",
        ):
            assert env.get(var), var
        # the file is what a POSIX shell reads with `set -a; . FILE`
        shell = subprocess.run(
            ["sh", "-c", f'set -a; . "{env_file}"; echo "$RDS_ENDPOINT|$SQS_QUEUE_URL"'],
            capture_output=True,
            text=True,
            check=True,
        )
        assert shell.stdout.strip() == f"{env['RDS_ENDPOINT']}|{env['SQS_QUEUE_URL']}"
        api = f"http://127.0.0.1:{port}"
        assert _get(f"{api}/readyz")[0] == 200
        accepted = _post_file(f"{api}/upload", DATA / "jobs.csv")
        upload_id = accepted["uploads"][0]["id"]
        deadline = time.monotonic() + 60
        while True:
            status = json.loads(_get(f"{api}/uploads/{upload_id}")[1])
            if status["status"] in ("loaded", "failed") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert (status["status"], status["rows_loaded"], status["rows_rejected"]) == ("loaded", 183, 0)
        assert len(_processes_with_env(tag)) >= 5  # postgres, moto, 2 consumers, the API (and dev itself)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    out = proc.stdout.read().decode() if proc.stdout else ""
    assert code == 0, out[-3000:]
    assert "hiring dev is up" in out and "open: no API keys configured" in out
    time.sleep(0.5)
    assert _processes_with_env(tag) == [], f"left running after SIGTERM: {_processes_with_env(tag)}"
    assert not env_file.exists(), "a stale env file would point other processes at a dead stack"
