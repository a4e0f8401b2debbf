"""Every line a service writes is one log record (issue 8 item 6): the standard library's loggers
(asyncpg's pool, aiohttp), warnings, and exceptions nobody handled in a task, a thread or the process
itself, in a real process with the services' logging set-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

PROGRAM = textwrap.dedent(
    """
    import asyncio, logging, threading, warnings
    import structlog
    from shared.logs import configure_logging, loop_exception_handler

    configure_logging("hiring-test")
    structlog.get_logger().info("plain", n=1)
    try:
        raise ConnectionResetError("the server closed the connection\\nunexpectedly")
    except ConnectionResetError:
        logging.getLogger("asyncpg.pool").warning(
            "connection could not be reset\\nsecond line", exc_info=True
        )
    warnings.warn("a warning\\nover two lines", RuntimeWarning)

    async def main():
        asyncio.get_running_loop().set_exception_handler(loop_exception_handler)
        async def boom():
            raise ValueError("nobody awaited this")
        task = asyncio.get_running_loop().create_task(boom())
        await asyncio.sleep(0.05)
        del task  # the loop reports the exception when the task is collected
        import gc; gc.collect()
        await asyncio.sleep(0.05)

    asyncio.run(main())
    thread = threading.Thread(target=lambda: 1 / 0, name="worker")
    thread.start(); thread.join()
    raise SystemError("the end")
    """
)


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_every_line_is_one_record(fmt: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        env={**os.environ, "HIRING_LOG_FORMAT": fmt},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 6, done.stderr
    if fmt == "json":
        records = [json.loads(line) for line in lines]
        assert [r["event"] for r in records] == [
            "plain",
            "connection could not be reset\nsecond line",
            records[2]["event"],  # the warnings module's own text
            "asyncio.unhandled",
            "thread.crashed",
            "process.crashed",
        ]
        assert records[1]["logger"] == "asyncpg.pool" and records[1]["level"] == "warning"
        assert "ConnectionResetError" in records[1]["exception"]
        assert records[2]["logger"] == "py.warnings" and "a warning" in records[2]["event"]
        assert "ValueError: nobody awaited this" in records[3]["exception"]
        assert records[4]["thread"] == "worker" and "ZeroDivisionError" in records[4]["exception"]
        assert records[5]["level"] == "critical" and "SystemError: the end" in records[5]["exception"]
        assert all(r["service"] == "hiring-test" for r in records)
    else:
        assert "Traceback" not in done.stderr
        assert "connection could not be reset ⏎ second line" in lines[1]
        assert "ConnectionResetError: the server closed the connection unexpectedly" in lines[1]
        assert "a warning ⏎ over two lines" in lines[2]
        assert "ValueError" in lines[3] and "ZeroDivisionError" in lines[4] and "SystemError" in lines[5]
