"""Fixtures for every test: `stack` (one per session) and `fresh` (a clean slate per test).

The backend is chosen by HIRING_TEST_STACK (see tests/system/stack.py); nothing else switches it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.system.stack import Stack, StackUnavailable, open_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The running stack: env has CONTRACT §3's variables (+ AWS test credentials, HIRING_DLQ_URL)."""
    try:
        with open_stack(tmp_path_factory.mktemp("stack")) as running:
            yield running
    except StackUnavailable as exc:
        pytest.exit(str(exc), returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture
async def fresh(stack: Stack) -> Stack:
    """This test's own bucket, queue and DLQ (so no other test's events reach it) and empty tables."""
    own = await asyncio.to_thread(stack.isolated)
    await stack.reset_data()
    return own
