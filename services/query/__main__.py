"""`python -m services.query [--host H] [--port P]`: the query API against the configured stack (the
same as `hiring query`), configured from the environment (CONTRACT §3)."""

from __future__ import annotations

import argparse
import os
import sys

from services.query.app import run
from shared.config import ConfigError, load_settings
from shared.logs import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.query", description=__doc__)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    configure_logging("hiring-query")
    try:
        run(load_settings(os.environ, service_name="hiring-query"), args.host, args.port)
    except ConfigError as exc:
        print(f"hiring query: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
