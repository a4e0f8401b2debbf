"""A throwaway PostgreSQL for `hiring dev` and the tests: initdb once, then `postgres` as our child.

State directory layout: `pgdata/` (the cluster), `postgres.log` (server and tool output) and
`postgres.password` (the `hiring` role's password, so a second start on the same state reuses it).
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from services.dev.ports import free_port
from services.dev.process import Account, child_env, is_alive, run, spawn, stop

DATABASE = "hiring"
USER = "hiring"
SERVICE_ACCOUNT = "hiring-pg"  # created when we are root and there is no `postgres` user
BINDIR_VAR = "HIRING_PG_BINDIR"  # points at a PostgreSQL bin directory to use instead of the search

# Durability is worthless for a throwaway database; speed is not.
_SERVER_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "256MB",
    # /dev/shm is often 64MB in containers: files in the data dir avoid parallel-query failures.
    "dynamic_shared_memory_type": "mmap",
    "TimeZone": "UTC",
    "logging_collector": "off",
}
_SOCKET_PATH_MAX = 107  # sun_path; longer socket paths make postgres refuse to start


class PostgresError(RuntimeError):
    """PostgreSQL could not be set up or started; the message says why and shows its log."""


def bin_dir_candidates() -> list[Path]:
    """PostgreSQL bin directories found here, best first: $HIRING_PG_BINDIR, pgserver's bundled
    PostgreSQL 16 (installed with the project), `pg_config --bindir`, then /usr/lib/postgresql."""
    found: list[Path] = []
    if os.environ.get(BINDIR_VAR):
        found.append(Path(os.environ[BINDIR_VAR]))
    # find_spec, not import: importing pgserver sets up runtime directories we do not use.
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.submodule_search_locations:
        found += [Path(loc) / "pginstall" / "bin" for loc in spec.submodule_search_locations]
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False).stdout
        if out.strip():
            found.append(Path(out.strip()))
    versioned = Path("/usr/lib/postgresql").glob("*/bin")
    found += sorted(
        versioned, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True
    )
    usable = [d for d in found if os.access(d / "postgres", os.X_OK) and os.access(d / "initdb", os.X_OK)]
    return list(dict.fromkeys(usable))


def server_major(bin_dir: Path) -> str:
    out = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=False
    )
    match = re.search(r"(\d+)", out.stdout)
    return match.group(1) if match else "?"


def choose_bin_dir(major: str | None) -> Path:
    """The first candidate, or the first of major version `major` (an existing cluster's)."""
    candidates = bin_dir_candidates()
    if not candidates:
        raise PostgresError(
            "no PostgreSQL binaries found: install the dev extra (pip install -e '.[dev]', which"
            f" bundles pgserver's PostgreSQL 16) or set {BINDIR_VAR}"
        )
    if major is None:
        return candidates[0]
    for bin_dir in candidates:
        if server_major(bin_dir) == major:
            return bin_dir
    have = ", ".join(f"{d} ({server_major(d)})" for d in candidates)
    raise PostgresError(f"the data directory is PostgreSQL {major} but only these are installed: {have}")


def service_account() -> Account | None:
    """Who runs the server: None (ourselves) unless we are root, which initdb and postgres refuse."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", SERVICE_ACCOUNT):
        try:
            entry = pwd.getpwnam(name)
            return Account(name, entry.pw_uid, entry.pw_gid)
        except KeyError:
            continue
    cmd = ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin"]
    try:
        done = subprocess.run([*cmd, SERVICE_ACCOUNT], capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise PostgresError(f"running as root needs an unprivileged user; useradd is missing: {exc}") from exc
    try:  # another process may have created it at the same moment: the lookup decides
        entry = pwd.getpwnam(SERVICE_ACCOUNT)
    except KeyError:
        raise PostgresError(
            f"could not create system user {SERVICE_ACCOUNT}: {done.stderr.strip()}"
        ) from None
    return Account(SERVICE_ACCOUNT, entry.pw_uid, entry.pw_gid)


def ensure_traversable(path: Path) -> None:
    """Let other users pass through `path` and its parents (o+x, never o+r), so the service account
    reaches binaries and data under root-only directories such as pytest's 0700 temp dirs."""
    for part in [path, *path.parents]:
        mode = part.stat().st_mode
        if not mode & stat.S_IXOTH:
            part.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _chown_tree(root: Path, account: Account) -> None:
    for dirpath, _, files in os.walk(root):
        for name in [dirpath, *(os.path.join(dirpath, f) for f in files)]:
            os.lchown(name, account.uid, account.gid)


def _tail(path: Path, start: int = 0, limit: int = 4000) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(start, path.stat().st_size - limit))
            return f.read().decode("utf-8", "replace").strip()
    except OSError:
        return "(no log)"


class EmbeddedPostgres:
    """One PostgreSQL cluster in `state_dir`, run as a child process; sync API, stop() is idempotent."""

    def __init__(
        self,
        state_dir: Path,
        *,
        port: int | None = None,
        bin_dir: Path | None = None,
        database: str = DATABASE,
        user: str = USER,
        start_timeout: float = 60.0,
    ) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.data_dir = self.state_dir / "pgdata"
        self.log_path = self.state_dir / "postgres.log"
        self.database = database
        self.user = user
        self.password = ""
        self.port = port or 0
        self.socket_dir = self.data_dir
        self.bin_dir = bin_dir
        self._fixed_port = port is not None
        self._start_timeout = start_timeout
        self._password_path = self.state_dir / "postgres.password"
        self._proc: subprocess.Popen[bytes] | None = None
        self._own_socket_dir: Path | None = None
        self._lock = threading.RLock()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def env(self) -> dict[str, str]:
        """CONTRACT §3's database variables for this server."""
        if self._proc is None:
            raise PostgresError("EmbeddedPostgres.env() before start()")
        return {
            "RDS_ENDPOINT": self.endpoint,
            "RDS_DB_NAME": self.database,
            "RDS_USERNAME": self.user,
            "RDS_PASSWORD": self.password,
        }

    def start(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return
            self.state_dir.mkdir(parents=True, exist_ok=True)
            account = service_account()
            existing = (self.data_dir / "PG_VERSION").is_file()
            if self.bin_dir is None:
                major = (self.data_dir / "PG_VERSION").read_text().strip() if existing else None
                self.bin_dir = choose_bin_dir(major)
            if account is not None:
                ensure_traversable(self.bin_dir)
                ensure_traversable(self.state_dir)
            if existing:
                self._prepare_existing(account)
            else:
                self._initdb(account)
            self.socket_dir = self._pick_socket_dir(account)
            try:
                self._run_server(account)
                self._alias_default_socket()
                self._create_database()
            except BaseException:
                self.stop()  # a half-started server must not outlive the error
                raise
            atexit.register(self.stop)

    def poll(self) -> int | None:
        """The server's exit code once it has exited (and is reaped: no zombie stays behind), None
        while it runs or when it was never started."""
        with self._lock:
            return self._proc.poll() if self._proc is not None else None

    def restart(self, timeout: float = 60.0) -> None:
        """Start the server again on its data and its port after it died (or stop it first if it
        still runs). Retries while the dead server's backends still hold its shared memory or its
        port; PostgresError if it cannot come back within `timeout` seconds."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is not None:
                stop(proc, [(signal.SIGINT, 10.0), (signal.SIGQUIT, 5.0)])  # reaps it
            fixed, self._fixed_port = self._fixed_port, True  # clients know this port
            deadline = time.monotonic() + timeout
            try:
                while True:
                    try:
                        self.start()
                        return
                    except PostgresError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.5)
            finally:
                self._fixed_port = fixed

    def stop(self) -> None:
        """Fast shutdown (SIGINT: roll back, disconnect clients), then immediate (SIGQUIT), then SIGKILL.
        SIGTERM would be a "smart" shutdown, which waits for every client to leave."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is not None:
                stop(proc, [(signal.SIGINT, 20.0), (signal.SIGQUIT, 5.0)])
            if self._own_socket_dir is not None:
                shutil.rmtree(self._own_socket_dir, ignore_errors=True)
                self._own_socket_dir = None
            atexit.unregister(self.stop)

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- set-up -------------------------------------------------------------------------------------

    def _initdb(self, account: Account | None) -> None:
        assert self.bin_dir is not None
        if self.data_dir.exists():  # a half-made cluster from an interrupted first start
            shutil.rmtree(self.data_dir)
        self.data_dir.mkdir(mode=0o700)
        self.password = secrets.token_hex(16)
        # initdb reads the password from a file the service account can read; it lives only for the call
        fd, pwfile = tempfile.mkstemp(prefix=".initdb-", dir=self.state_dir)
        try:
            os.write(fd, (self.password + "\n").encode())
            os.close(fd)
            if account is not None:
                os.chown(pwfile, account.uid, account.gid)
                os.chown(self.data_dir, account.uid, account.gid)
            argv = [
                str(self.bin_dir / "initdb"),
                f"--pgdata={self.data_dir}",
                f"--username={self.user}",
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",  # TCP and the unix socket both need the password
                "--encoding=UTF8",
                "--locale=C",  # no dependency on the machine's locales; ordering is done in Python
                "--no-sync",
                "--no-instructions",
            ]
            start = self._log_size()
            with self.log_path.open("ab") as log:
                code = run(argv, log=log, run_as=account, env=child_env({"LC_ALL": "C"}))
            if code != 0:
                raise PostgresError(f"initdb failed (exit {code}):\n{_tail(self.log_path, start)}")
        finally:
            Path(pwfile).unlink(missing_ok=True)
        # written only after initdb succeeded: a password file means a usable cluster
        self._password_path.write_text(self.password + "\n")
        self._password_path.chmod(0o600)

    def _prepare_existing(self, account: Account | None) -> None:
        try:
            self.password = self._password_path.read_text().strip()
        except FileNotFoundError:
            raise PostgresError(
                f"{self.data_dir} exists but {self._password_path} is missing: "
                f"delete {self.state_dir} to start over"
            ) from None
        if account is not None and self.data_dir.stat().st_uid != account.uid:
            _chown_tree(self.data_dir, account)
        pidfile = self.data_dir / "postmaster.pid"
        if pidfile.exists():
            pid = int(pidfile.read_text().split("\n", 1)[0] or 0)
            if pid and _is_postgres(pid):
                raise PostgresError(f"a PostgreSQL (pid {pid}) is already running on {self.data_dir}")
            pidfile.unlink()  # left by a killed server; its pid may now belong to something else

    def _pick_socket_dir(self, account: Account | None) -> Path:
        # clients read a ',' in a host as a list of hosts, and sun_path has a length limit
        path = str(self.data_dir / ".s.PGSQL.65535")
        if len(path) <= _SOCKET_PATH_MAX and "," not in path:
            return self.data_dir
        own = Path(tempfile.mkdtemp(prefix="hiring-pg-"))
        if account is not None:
            os.chown(own, account.uid, account.gid)
        self._own_socket_dir = own
        return own

    # -- running ------------------------------------------------------------------------------------

    def _run_server(self, account: Account | None) -> None:
        assert self.bin_dir is not None
        for _attempt in range(5):
            if not self._fixed_port:
                self.port = free_port()
            settings = {
                **_SERVER_SETTINGS,
                "listen_addresses": "127.0.0.1",
                "unix_socket_directories": f'"{self.socket_dir}"',
            }
            argv = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
            for key, value in settings.items():
                argv += ["-c", f"{key}={value}"]
            start = self._log_size()
            with self.log_path.open("ab") as log:
                # SIGINT (fast shutdown) if we die: clients may still be connected
                proc = spawn(argv, log=log, run_as=account, env=child_env(), death_signal=signal.SIGINT)
            self._proc = proc
            if self._wait_ready(proc):
                return
            self._proc = None
            stop(proc, [(signal.SIGINT, 5.0)])
            log_text = _tail(self.log_path, start)
            if "could not bind" in log_text and not self._fixed_port:
                continue  # another process took the port between free_port() and bind
            raise PostgresError(f"postgres did not start (exit {proc.returncode}):\n{log_text}")
        raise PostgresError(f"postgres found no free port after 5 attempts:\n{_tail(self.log_path)}")

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> bool:
        """True once postmaster.pid says "ready" (what `pg_ctl -w` waits for); False if it exited."""
        deadline = time.monotonic() + self._start_timeout
        pidfile = self.data_dir / "postmaster.pid"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                lines = pidfile.read_text().split("\n")
            except OSError:
                lines = []
            if len(lines) > 7 and lines[0] == str(proc.pid) and lines[7].strip() == "ready":
                return True
            time.sleep(0.02)
        self._proc = None
        stop(proc, [(signal.SIGINT, 5.0), (signal.SIGQUIT, 5.0)])
        raise PostgresError(
            f"postgres did not accept connections within {self._start_timeout:.0f}s:\n{_tail(self.log_path)}"
        )

    def _alias_default_socket(self) -> None:
        """Link `.s.PGSQL.5432` to our socket: RDS_ENDPOINT=<socket dir> carries no port, so clients
        (shared.config) look for 5432's socket; the directory is ours alone, so the alias is safe."""
        if self.port == 5432:
            return
        alias = self.socket_dir / ".s.PGSQL.5432"
        alias.unlink(missing_ok=True)
        alias.symlink_to(f".s.PGSQL.{self.port}")

    def _create_database(self) -> None:
        assert self.bin_dir is not None
        createdb = self.bin_dir / "createdb"
        argv = [str(createdb), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, self.database]
        start = self._log_size()
        with self.log_path.open("ab") as log:
            code = run(argv, log=log, env=child_env({"PGPASSWORD": self.password}), timeout=60)
        if code != 0 and "already exists" not in _tail(self.log_path, start):
            raise PostgresError(
                f"createdb {self.database} failed (exit {code}):\n{_tail(self.log_path, start)}"
            )

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0


def _is_postgres(pid: int) -> bool:
    """A live PostgreSQL server has this pid: a zombie left by a killed one does not count."""
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return False
    return name in ("postgres", "postmaster") and is_alive(pid)
