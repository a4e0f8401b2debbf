"""A local S3 + SQS: moto's server as our child process (the `dev` extra installs moto).

The resources on it (bucket, queue, DLQ, notification) come from `services.dev.provisioning`, the
one definition that compose's `aws-init` uses too; `provision` is re-exported here for callers.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

import boto3
from botocore.config import Config

from services.dev.ports import free_port
from services.dev.process import child_env, spawn, stop
from services.dev.provisioning import Provisioned, provision

__all__ = ["LocalAwsError", "MotoServer", "Provisioned", "clients", "provision"]


class LocalAwsError(RuntimeError):
    """The local S3/SQS server could not be started."""


class MotoServer:
    """moto's S3 + SQS over HTTP on 127.0.0.1; state is in memory and dies with the process."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int | None = None, log_path: Path | None = None
    ) -> None:
        self.host = host
        self.port = port or 0
        self.log_path = log_path
        self._fixed_port = port is not None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (benchmarks count its CPU), else None."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self, timeout: float = 60.0) -> str:
        """Start the server and return its endpoint URL once it answers HTTP."""
        if self._proc is not None and self._proc.poll() is None:
            return self.endpoint_url
        if importlib.util.find_spec("moto") is None:
            raise LocalAwsError(
                "moto is not installed: the local S3 + SQS of `hiring dev` needs the dev extra"
                " (pip install -e '.[dev]'; the test extra includes it)"
            )
        # an unnamed temp file when no log is wanted: it still lets a failure show the output.
        # It stays open while the server runs; stop() closes it.
        self._log = self.log_path.open("ab") if self.log_path else tempfile.TemporaryFile()  # noqa: SIM115
        for _attempt in range(5):
            if not self._fixed_port:
                self.port = free_port(self.host)
            start = self._log.tell()
            argv = [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]
            self._proc = spawn(argv, log=self._log, env=child_env(), death_signal=signal.SIGTERM)
            try:
                if self._wait_ready(self._proc, timeout):
                    return self.endpoint_url
            except LocalAwsError:
                self.stop()
                raise
            output = self._output(start)
            self._proc = None
            if "Address already in use" in output and not self._fixed_port:
                continue
            self.stop()
            raise LocalAwsError(f"moto server did not start:\n{output}")
        self.stop()
        raise LocalAwsError("moto server found no free port after 5 attempts")

    def poll(self) -> int | None:
        """The server's exit code once it has exited (reaped), None while it runs or before start."""
        return self._proc.poll() if self._proc is not None else None

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop(proc, [(signal.SIGTERM, 5.0)])
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=1) as resp:
                    if resp.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        stop(proc, [(signal.SIGTERM, 5.0)])
        raise LocalAwsError(f"moto server did not answer within {timeout:.0f}s:\n{self._output(0)}")

    def _output(self, start: int) -> str:
        assert self._log is not None
        self._log.flush()
        self._log.seek(start)
        text = self._log.read()[-4000:].decode("utf-8", "replace").strip()
        self._log.seek(0, os.SEEK_END)
        return text


def clients(endpoint_url: str | None, region: str) -> tuple[Any, Any]:
    """boto3 S3 and SQS clients (for tools and tests); dummy credentials against a local endpoint."""
    kwargs: dict[str, Any] = {"region_name": region, "endpoint_url": endpoint_url}
    if endpoint_url is not None and not os.environ.get("AWS_ACCESS_KEY_ID"):
        kwargs.update(aws_access_key_id="test", aws_secret_access_key="test")
    config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"})
    return boto3.client("s3", config=config, **kwargs), boto3.client("sqs", config=config, **kwargs)
