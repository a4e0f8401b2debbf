"""`hiring dev`: the whole system on one machine, from nothing but Python.

Starts a throwaway PostgreSQL, moto's S3 + SQS with the bucket, queue, dead-letter queue and
notification, applies the schema, then runs N `hiring ingest` consumers and `hiring query` as child
processes, exactly as they run in production, and writes the env file other processes join with.
Everything it starts it supervises: a child that dies is reaped, logged and restarted (PostgreSQL and
S3 + SQS on the same ports); one that keeps dying stops the whole stack with a message saying so.
Everything it starts it stops, in reverse order, on SIGTERM or Ctrl-C.

The API's port is bound here, before anything starts, and the listening socket is handed to the
`hiring query` child: a port in use is refused at once, the readiness probe can only reach our own
child, and a restarted API takes the same socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from services.dev.localaws import MotoServer, provision
from services.dev.postgres import EmbeddedPostgres, PostgresError
from services.dev.process import child_env, spawn, stop
from shared.config import DEFAULT_BUCKET, load_settings
from shared.db import connect, migrate

log = structlog.get_logger("dev")

QUEUE_NAME = "hiring-ingest"
REGION = "us-east-1"
MAX_RESTARTS = 5  # within RESTART_WINDOW seconds; one more stops the stack
RESTART_WINDOW = 60.0


class StackFailed(RuntimeError):
    """The stack cannot go on (a port in use, a part that keeps dying); the message says why."""


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port for the API; StackFailed with one clear line when the
    port is taken (no SO_REUSEPORT: a second listener would share the port's connections)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT of our own last run only
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StackFailed(
                f"port {port} on {host} is already in use (another hiring dev?): stop it or pass --port"
            ) from None
        raise StackFailed(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


@dataclass(frozen=True)
class DevOptions:
    port: int = 8080
    consumers: int = 1
    state_dir: Path | None = None
    env_file: Path | None = None
    otlp_endpoint: str | None = None
    host: str = "127.0.0.1"


@dataclass
class _Restarts:
    """When a part of the stack was restarted; too many within the window means give up."""

    name: str
    times: list[float] = field(default_factory=list)

    def note(self, code: int | None) -> None:
        now = time.monotonic()
        self.times = [t for t in self.times if now - t < RESTART_WINDOW] + [now]
        if len(self.times) > MAX_RESTARTS:
            raise StackFailed(
                f"{self.name} exited {len(self.times)} times within {RESTART_WINDOW:.0f} s "
                f"(last exit code {code}): stopping the stack; its output is above"
            )
        log.warning("exited; restarting", part=self.name, code=code, restart=len(self.times))


@dataclass
class _Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    pass_fds: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.restarts = _Restarts(self.name)


def stack_env(
    pg_env: dict[str, str], aws_endpoint: str, queue_url: str, dlq_url: str, otlp: str | None
) -> dict[str, str]:
    """CONTRACT §3's variables for this stack (plus the DLQ's URL and local dummy credentials)."""
    env = {
        "S3_RAW_BUCKET": DEFAULT_BUCKET,
        "SQS_QUEUE_URL": queue_url,
        **pg_env,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,  # what the AWS CLI reads
        "AWS_ENDPOINT_URL": aws_endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "HIRING_DLQ_URL": dlq_url,
    }
    if otlp:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp
    return env


def write_env_file(path: Path, env: dict[str, str]) -> None:
    """KEY=value lines a POSIX shell reads with `set -a; . FILE`; written whole or not at all."""
    for key, value in env.items():
        if any(c in value for c in "\n'\"$`\\ ;&|<>()"):
            raise ValueError(f"{key} has a character a shell would misread: {value!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    tmp.chmod(0o600)  # it holds the database password
    os.replace(tmp, path)


async def _migrate(env: dict[str, str]) -> list[str]:
    settings = load_settings(env, service_name="hiring-dev")
    conn = await connect(settings.db)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


def _wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    """Until `url` answers 200; RuntimeError if `proc` (the server behind it) exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the query API exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f}s")


class DevStack:
    def __init__(self, options: DevOptions) -> None:
        self.options = options
        self._temp_state = options.state_dir is None
        self.state_dir = (options.state_dir or Path(tempfile.mkdtemp(prefix="hiring-dev-"))).absolute()
        self.postgres = EmbeddedPostgres(self.state_dir / "postgres")
        self.moto = MotoServer(log_path=self.state_dir / "moto.log")
        self.children: list[_Child] = []
        self.env: dict[str, str] = {}
        self.listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._postgres_restarts = _Restarts("PostgreSQL")
        self._moto_restarts = _Restarts("the local S3 + SQS (moto)")

    def start(self) -> None:
        self.listener = listen(self.options.host, self.options.port)  # first: a taken port stops us here
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log.info("starting PostgreSQL", state_dir=str(self.state_dir))
        self.postgres.start()
        log.info("starting local S3 + SQS (moto)")
        endpoint = self.moto.start()
        res = provision(endpoint, REGION, DEFAULT_BUCKET, QUEUE_NAME)
        self.env = stack_env(
            self.postgres.env(), endpoint, res.queue_url, res.dlq_url, self.options.otlp_endpoint
        )
        applied = asyncio.run(_migrate(self.env))
        log.info("schema ready", applied=applied)
        cli = [sys.executable, "-m", "services.cli"]
        for i in range(self.options.consumers):
            self.children.append(_Child(f"ingest-{i + 1}", [*cli, "ingest"]))
        fd = self.listener.fileno()
        self.children.append(_Child("query", [*cli, "query", "--listen-fd", str(fd)], pass_fds=(fd,)))
        for child in self.children:
            self._spawn(child)
        query = self.children[-1]
        assert query.proc is not None
        _wait_http(f"http://{self._api_host()}:{self.options.port}/readyz", 60, query.proc)
        if self.options.env_file:
            write_env_file(self.options.env_file, self.env)

    def _api_host(self) -> str:
        return "127.0.0.1" if self.options.host in ("0.0.0.0", "::", "") else self.options.host

    def _spawn(self, child: _Child) -> None:
        env = child_env(
            {
                **self.env,
                "OTEL_SERVICE_NAME": "hiring-query" if child.name == "query" else "hiring-ingest",
                "HIRING_LOG_FORMAT": os.environ.get("HIRING_LOG_FORMAT", "console"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        cwd_root = str(Path(__file__).resolve().parents[2])  # the checkout, for `-m services.cli`
        env["PYTHONPATH"] = os.pathsep.join(p for p in (cwd_root, env.get("PYTHONPATH", "")) if p)
        child.proc = spawn(
            child.argv, log=sys.stderr.buffer, death_signal=signal.SIGTERM, env=env, pass_fds=child.pass_fds
        )

    def banner(self) -> str:
        api = f"http://{self._api_host()}:{self.options.port}"
        lines = [
            "hiring dev is up:",
            f"  API            {api}   (try: curl {api}/readyz)",
            f"  consumers      {self.options.consumers} x hiring ingest"
            if self.options.consumers
            else "  consumers      none (--consumers 0): run your own `hiring ingest` with the env file",
            f"  PostgreSQL     {self.env['RDS_ENDPOINT']} db={self.env['RDS_DB_NAME']}"
            f" user={self.env['RDS_USERNAME']}",
            f"  S3 + SQS       {self.env['AWS_ENDPOINT_URL']} bucket={self.env['S3_RAW_BUCKET']}",
            f"  queue          {self.env['SQS_QUEUE_URL']}",
            f"  state          {self.state_dir}",
        ]
        if self.options.env_file:
            lines.append(
                f"  env file       {self.options.env_file}   (join with: set -a; . {self.options.env_file})"
            )
        if os.environ.get("HIRING_API_KEYS"):
            lines.append("  access         API keys required (HIRING_API_KEYS)")
        else:
            lines.append(
                "  access         open: no API keys configured (set HIRING_API_KEYS to require them)"
            )
        lines.append(f"  tracing        {self.options.otlp_endpoint or 'off (pass --otlp URL)'}")
        lines.append("Ctrl-C stops everything.")
        return "\n".join(lines)

    def watch(self, stop_event: threading.Event) -> None:
        """Until stop_event is set: reap, log and restart whatever exited (PostgreSQL and S3 + SQS on
        their ports, so every client's settings stay right). StackFailed when a part keeps dying."""
        while not stop_event.wait(0.5):
            code = self.postgres.poll()
            if code is not None:
                self._postgres_restarts.note(code)
                try:
                    self.postgres.restart()
                except PostgresError as exc:
                    raise StackFailed(f"PostgreSQL exited and could not restart: {exc}") from None
                log.info("PostgreSQL is back", endpoint=self.postgres.endpoint)
            code = self.moto.poll()
            if code is not None:
                self._moto_restarts.note(code)
                self._restart_moto()
            for child in self.children:
                if child.proc is not None and child.proc.poll() is not None:
                    child.restarts.note(child.proc.returncode)
                    self._spawn(child)

    def _restart_moto(self) -> None:
        """moto keeps its state in memory: it comes back empty, on the same port, and is provisioned
        again (bucket, queues, notification); objects stored before are gone."""
        port, self.moto = self.moto.port, MotoServer(port=self.moto.port, log_path=self.moto.log_path)
        try:
            endpoint = self.moto.start()
            provision(endpoint, REGION, DEFAULT_BUCKET, QUEUE_NAME)
        except Exception as exc:
            raise StackFailed(
                f"the local S3 + SQS exited and could not restart on port {port}: {exc}"
            ) from None
        log.warning("the local S3 + SQS is back, empty: objects uploaded before are gone", endpoint=endpoint)

    def stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        procs = [c.proc for c in self.children if c.proc is not None and c.proc.poll() is None]
        for proc in procs:  # all at once: consumers drain in parallel
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            stop(proc, [(signal.SIGTERM, 25.0)])
        if self.listener is not None:
            self.listener.close()
        self.moto.stop()
        self.postgres.stop()
        if self.options.env_file and self.options.env_file.exists():
            self.options.env_file.unlink()
        if self._temp_state:
            shutil.rmtree(self.state_dir, ignore_errors=True)


class _Interrupted(BaseException):
    pass


def run_dev(options: DevOptions) -> int:
    stack = DevStack(options)
    stop_event = threading.Event()

    started = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        stop_event.set()
        if not started.is_set():
            raise _Interrupted  # abandon start-up; `finally` stops whatever had started

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        stack.start()
        started.set()
        print(stack.banner(), file=sys.stderr, flush=True)
        stack.watch(stop_event)
        return 0
    except _Interrupted:
        return 0
    except StackFailed as exc:
        log.error(f"hiring dev: {exc}")
        return 1
    except Exception as exc:
        log.error("hiring dev failed", error=f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        stack.stop()
        if stack.listener is not None:  # else nothing had started: the error line says it all
            log.info("stopped")
