"""A real `hiring query` process on a free local port, for tests that need the server itself (its
HTTP timeouts, a client outside the test's event loop such as schemathesis) rather than an app in the
test's loop (tests/system/query_fixtures.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping

from services.dev.ports import free_port


@contextlib.contextmanager
def query_server(env: Mapping[str, str], *, ready: str = "/readyz", seconds: float = 90) -> Iterator[str]:
    """`hiring query` on 127.0.0.1 with `env` over this process's environment (JSON logs; its output
    is discarded). Yields the base URL (`http://127.0.0.1:PORT`) once GET `ready` answers 2xx; at the
    end, SIGTERM and a wait of up to 30 s for it to exit. Fails the test if the process exits or does
    not answer within `seconds`."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "query", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, **env, "HIRING_LOG_FORMAT": "json"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + seconds
        while True:
            try:
                with urllib.request.urlopen(f"{url}{ready}", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "hiring query did not start"
                time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
