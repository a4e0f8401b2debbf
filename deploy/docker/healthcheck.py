#!/usr/bin/env python3
"""Container health check for the hiring image (Docker HEALTHCHECK and the ECS container health check).

It looks at the container's main command (/proc/1/cmdline, e.g. `tini -- hiring query --port 8080`):
- `hiring query [--port N]`: GET http://127.0.0.1:N/healthz (N defaults to 8080) must answer 2xx;
- anything else (`hiring ingest`, `hiring migrate`, ...): healthy while the container runs, since
  tini exits, and the container with it, when the command does.

Exit 0 when healthy, 1 otherwise, with one line on stdout saying why. Standard library only.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

DEFAULT_PORT = 8080
TIMEOUT_S = 3.0


def main_command(cmdline: bytes) -> list[str]:
    """The arguments after `hiring` in PID 1's command line ([] when `hiring` is not in it)."""
    argv = [part.decode(errors="replace") for part in cmdline.split(b"\0") if part]
    for i, arg in enumerate(argv):
        if arg == "hiring" or arg.endswith("/hiring"):
            return argv[i + 1 :]
    return []


def query_port(args: list[str]) -> int:
    for i, arg in enumerate(args):
        if arg == "--port" and i + 1 < len(args) and args[i + 1].isdigit():
            return int(args[i + 1])
        if arg.startswith("--port=") and arg[7:].isdigit():
            return int(arg[7:])
    return DEFAULT_PORT


def main() -> int:
    try:
        with open("/proc/1/cmdline", "rb") as f:
            args = main_command(f.read())
    except OSError:
        args = []
    if not args or args[0] != "query":
        print(f"ok: {' '.join(args[:1]) or 'command'} is running")
        return 0
    url = f"http://127.0.0.1:{query_port(args)}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:  # a fixed loopback URL
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {url}: {exc}")
        return 1
    if 200 <= status < 300:
        print(f"ok: {url} answered {status}")
        return 0
    print(f"unhealthy: {url} answered {status}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
