"""The compose end-to-end tests need a Docker engine and the images of `bash deploy/images.sh`; they
run when HIRING_COMPOSE_E2E=1 (as `.ci/run` does after building the images), and are not collected
otherwise, so the README's test command stays the embedded stack's."""

from __future__ import annotations

import os

collect_ignore = [] if os.environ.get("HIRING_COMPOSE_E2E", "") == "1" else ["test_compose.py"]
