"""Child processes of the dev stack: tied to our lifetime, isolated from the terminal, stopped in steps."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1
# Loaded here, not in the forked child: the child of a threaded parent must not allocate or import.
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


@dataclass(frozen=True)
class Account:
    """The unprivileged system user a server runs as when we are root."""

    name: str
    uid: int
    gid: int


def _die_with_parent(sig: int) -> Callable[[], None] | None:
    """A preexec hook so the child gets `sig` when the thread that started it dies, even by SIGKILL.

    It runs after the uid switch (the kernel clears the setting on a credential change).
    """
    if _libc is None:
        return None
    libc, parent = _libc, os.getpid()

    def hook() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the hook ran
            os.kill(os.getpid(), sig)

    return hook


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Our environment without PG* variables (they would redirect PostgreSQL tools), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(extra or {})
    return env


def spawn(
    argv: Sequence[str],
    *,
    log: IO[bytes],
    death_signal: int,
    run_as: Account | None = None,
    env: Mapping[str, str] | None = None,
    pass_fds: Sequence[int] = (),
) -> subprocess.Popen[bytes]:
    """Start a server as our direct child, in its own process group so a terminal's Ctrl-C reaches
    only us (we stop children in order), and signalled with `death_signal` if we die first.
    `pass_fds` stay open in the child under the same numbers (a listening socket we hand over)."""
    return subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd="/",
        env=dict(env) if env is not None else None,
        process_group=0,
        preexec_fn=_die_with_parent(death_signal),
        user=run_as.uid if run_as else None,
        group=run_as.gid if run_as else None,
        extra_groups=[] if run_as else None,
        pass_fds=tuple(pass_fds),
    )


def is_alive(pid: int) -> bool:
    """True when `pid` is a running process: a zombie (exited, not yet reaped by its parent) is not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[:1]  # the name, in parentheses, may hold spaces
    return bool(state) and state[0] not in ("Z", "X", "x")


def run(
    argv: Sequence[str],
    *,
    log: IO[bytes],
    run_as: Account | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 300.0,
) -> int:
    """Run a one-shot tool (initdb, createdb) to completion; its output goes to `log`."""
    done = subprocess.run(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd="/",
        env=dict(env) if env is not None else None,
        timeout=timeout,
        check=False,
        user=run_as.uid if run_as else None,
        group=run_as.gid if run_as else None,
        extra_groups=[] if run_as else None,
    )
    return done.returncode


def stop(proc: subprocess.Popen[bytes], steps: Sequence[tuple[int, float]]) -> None:
    """Send each (signal, grace seconds) in turn until the process exits; SIGKILL as the last resort."""
    for sig, grace in [*steps, (signal.SIGKILL, 10.0)]:
        if proc.poll() is not None:
            return
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue
