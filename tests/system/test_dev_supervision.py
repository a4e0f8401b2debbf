"""`hiring dev` supervises what it starts (issue 8 item 5, issue 12 item 12) and services wait for a
database that is not up yet (issue 12 item 13): real processes, loopback only, bounded in time."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from services.dev.ports import free_port
from services.dev.postgres import _is_postgres
from services.dev.process import is_alive
from tests.system.stack import Stack

DATA = Path(__file__).resolve().parents[1] / "data" / "globant"
CLI = [sys.executable, "-m", "services.cli"]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc).encode()


def _post_csv(url: str, body: bytes) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "text/csv"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc).encode()


def _status(api: str, upload_id: str) -> str | None:
    status, body = _get(f"{api}/uploads/{upload_id}")
    answer: dict[str, str] = json.loads(body) if status == 200 else {}
    return answer.get("status")


def _wait(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.stdout.read().decode(errors="replace") if proc.stdout else ""


# ---- the port --------------------------------------------------------------------------------------


def test_a_port_in_use_is_refused_at_once_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        started = time.monotonic()
        done = subprocess.run(
            [*CLI, "dev", "--port", str(port), "--state-dir", str(tmp_path / "state")],
            capture_output=True,
            timeout=60,
            check=False,
        )
        took = time.monotonic() - started
    out = (done.stdout + done.stderr).decode()
    assert done.returncode == 1, out
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    assert f"port {port} on 127.0.0.1 is already in use" in lines[0]
    assert "hiring dev is up" not in out and "Traceback" not in out
    assert not (tmp_path / "state" / "postgres").exists(), "nothing may start on a refused port"
    assert took < 30  # at once: no PostgreSQL, no moto (generous: the machine is shared)


def test_hiring_query_on_a_port_in_use_says_so_in_one_line(stack: Stack) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*CLI, "query", "--host", "127.0.0.1", "--port", str(port)],
            env={**os.environ, **stack.env, "HIRING_LOG_FORMAT": "json"},
            capture_output=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 1
    lines = done.stderr.decode().strip().splitlines()
    last = json.loads(lines[-1])  # JSON logs: the last line too
    assert last["event"] == "service.failed" and last["service"] == "hiring-query"
    assert last["error"].startswith("cannot listen on") and str(port) in last["error"], last
    assert b"Traceback" not in done.stderr


# ---- supervision ----------------------------------------------------------------------------------


@contextmanager
def _hiring_dev(
    tmp_path: Path, *extra: str
) -> Iterator[tuple[subprocess.Popen[bytes], str, Path, dict[str, str]]]:
    port = free_port()
    env_file = tmp_path / "dev.env"
    proc = subprocess.Popen(
        [
            *CLI,
            "dev",
            "--port",
            str(port),
            "--state-dir",
            str(tmp_path / "state"),
            "--env-file",
            str(env_file),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out = ""
    try:
        _wait("the env file", lambda: env_file.exists() or proc.poll() is not None, 180)
        assert proc.poll() is None, _stop(proc)
        env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        yield proc, f"http://127.0.0.1:{port}", tmp_path / "state", env
    finally:
        out = _stop(proc)
        print(out[-6000:])
    assert proc.returncode == 0, out[-3000:]


def _postmaster(state: Path) -> int:
    return int((state / "postgres" / "pgdata" / "postmaster.pid").read_text().split("\n", 1)[0])


def _children(pid: int) -> list[str]:
    """The command lines of `pid`'s direct children."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, ValueError, IndexError):
            continue
    return found


@pytest.mark.slow
def test_postgres_killed_under_hiring_dev_comes_back_and_serves(tmp_path: Path) -> None:
    with _hiring_dev(tmp_path, "--consumers", "0") as (proc, api, state, env):
        # --consumers 0: no consumer among its children, the API and the servers only
        children = _children(proc.pid)
        assert not [c for c in children if " ingest" in c], children
        assert [c for c in children if " query" in c], children
        status, body = _post_csv(f"{api}/upload?table=jobs", (DATA / "jobs.csv").read_bytes())
        assert status == 202, body
        first = json.loads(body)["uploads"][0]["id"]

        # hiring dev's PostgreSQL runs with synchronous_commit=off: a commit younger than the WAL
        # writer's flush (at most 3 x 200 ms) can be lost with the postmaster; let it be flushed
        time.sleep(2)
        old = _postmaster(state)
        os.kill(old, signal.SIGKILL)
        # reaped (no zombie), restarted on the same port, serving again
        _wait(
            "postgres restarted",
            lambda: (state / "postgres" / "pgdata" / "postmaster.pid").exists() and _postmaster(state) != old,
            120,
        )
        assert not is_alive(old)
        _wait("the API ready again", lambda: _get(f"{api}/readyz")[0] == 200, 120)

        def upload_works() -> bool:
            return (
                _post_csv(f"{api}/upload?table=departments", (DATA / "departments.csv").read_bytes())[0]
                == 202
            )

        _wait("an upload accepted after the restart", upload_works, 60)
        assert _status(api, first) == "queued"  # nothing consumes it yet

        # our own consumer joins with the env file (the same PostgreSQL port as before the kill)
        consumer = subprocess.Popen(
            [*CLI, "ingest"],
            env={**os.environ, **env, "HIRING_LOG_FORMAT": "json"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait(
                "the upload loaded by our own consumer",
                lambda: _status(api, first) == "loaded",
                120,
            )
        finally:
            consumer.send_signal(signal.SIGTERM)
            consumer.wait(60)


def test_a_zombie_pid_is_not_a_running_postgres(tmp_path: Path) -> None:
    fake = tmp_path / "postgres"  # /proc/<pid>/comm is the executable's name
    shutil.copy("/bin/sleep", fake)
    running = subprocess.Popen([str(fake), "30"])
    try:
        assert is_alive(running.pid) and _is_postgres(running.pid)
    finally:
        running.kill()
    _wait(
        "it exited",
        lambda: Path(f"/proc/{running.pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z",
        10,
    )
    # exited but not reaped: a zombie with the name still in /proc
    assert Path(f"/proc/{running.pid}/comm").read_text().strip() == "postgres"
    assert not is_alive(running.pid) and not _is_postgres(running.pid)
    running.wait()
    assert not _is_postgres(running.pid)


# ---- waiting for the database at start --------------------------------------------------------------


def test_a_service_without_a_database_retries_then_exits_with_one_line(stack: Stack) -> None:
    closed = free_port()
    started = time.monotonic()
    done = subprocess.run(
        [*CLI, "query", "--host", "127.0.0.1", "--port", str(free_port())],
        env={
            **os.environ,
            **stack.env,
            "RDS_ENDPOINT": f"127.0.0.1:{closed}",
            "HIRING_DB_START_TIMEOUT": "3",
            "HIRING_LOG_FORMAT": "json",
        },
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == b""
    lines = done.stderr.decode().strip().splitlines()
    events = [json.loads(line) for line in lines]  # every line a service writes is one JSON object
    retries = [e for e in events if e["event"] == "db.unreachable"]
    assert len(retries) >= 3, lines  # 0.5 + 1 + 2 s of backoff fit in 3 s
    assert [e["attempt"] for e in retries] == list(range(1, len(retries) + 1))
    assert all("ConnectionRefusedError" in e["reason"] or "OSError" in e["reason"] for e in retries), retries
    last = events[-1]
    assert (last["event"], last["level"], last["service"]) == ("service.failed", "error", "hiring-query")
    assert (
        last["error"].startswith("PostgreSQL at hiring@127.0.0.1:") and "unreachable after" in last["error"]
    )
    assert "HIRING_DB_START_TIMEOUT" in last["error"]
    assert time.monotonic() - started < 60


class _Forwarder:
    """A TCP forwarder on 127.0.0.1:`port` to `target`, started on demand (a database coming up late)."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port, self.target = port, target
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._client, "127.0.0.1", self.port), self.loop
        ).result(10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_a_service_started_before_its_database_waits_for_it(stack: Stack) -> None:
    late = free_port()
    api_port = free_port()
    db_host, _, db_port = stack.env["RDS_ENDPOINT"].rpartition(":")
    proc = subprocess.Popen(
        [*CLI, "query", "--host", "127.0.0.1", "--port", str(api_port)],
        env={**os.environ, **stack.env, "RDS_ENDPOINT": f"127.0.0.1:{late}", "HIRING_LOG_FORMAT": "json"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    lines: list[bytes] = []
    stderr = proc.stderr
    assert stderr is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(stderr.readline, b"")))
    reader.start()
    forwarder = _Forwarder(late, (db_host, int(db_port)))
    try:
        _wait("a refused attempt", lambda: any(b"db.unreachable" in line for line in lines), 60)
        assert proc.poll() is None
        forwarder.start()
        _wait(
            "the API ready once the database is",
            lambda: _get(f"http://127.0.0.1:{api_port}/readyz")[0] == 200,
            60,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        forwarder.stop()
        reader.join(10)
    assert proc.returncode == 0
    events = [json.loads(line) for line in lines]
    assert any(e["event"] == "db.unreachable" for e in events), lines
    assert any(e["event"] == "query.listening" for e in events), lines
