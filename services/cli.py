"""The `hiring` command: wires the services together (it sits above both; they never import each other)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from shared.config import ConfigError, Settings, load_settings
from shared.db import DatabaseUnavailable
from shared.logs import configure_logging, fatal, loop_exception_handler


def _settings(service: str, *, require_queue: bool = False) -> Settings:
    return load_settings(os.environ, service_name=service, require_queue=require_queue)


def _run_until_signal(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `main(stop)`; SIGTERM/SIGINT set `stop` so it can drain and return."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(loop_exception_handler)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())


def cmd_ingest(_: argparse.Namespace) -> int:
    from services.ingest.app import load_options, run_ingest

    settings = _settings("hiring-ingest", require_queue=True)
    options = load_options(os.environ)
    configure_logging(settings.telemetry.service_name)
    _run_until_signal(lambda stop: run_ingest(settings, options, stop))
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from services.query.app import ListenError, build_app, serve
    from services.query.options import load_options

    settings = _settings("hiring-query")
    options = load_options(os.environ)
    configure_logging(settings.telemetry.service_name)
    # `hiring dev` binds the port itself and hands the listening socket over (--listen-fd)
    sock = socket.socket(fileno=args.listen_fd) if args.listen_fd is not None else None

    async def main(stop: asyncio.Event) -> None:
        await serve(build_app(settings, options), stop, host=args.host, port=args.port, sock=sock)

    try:
        _run_until_signal(main)
    except ListenError as exc:
        fatal("hiring query", str(exc))
        return 1
    return 0


def cmd_migrate(_: argparse.Namespace) -> int:
    from shared.db import connect, migrate

    settings = _settings("hiring-migrate")
    configure_logging(settings.telemetry.service_name)

    async def main() -> None:
        conn = await connect(settings.db)
        try:
            applied = await migrate(conn)
        finally:
            await conn.close()
        print(f"migrations applied: {', '.join(applied) if applied else 'none (schema up to date)'}")

    asyncio.run(main())
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from services.ingest.cli_replay import run_replay

    settings = _settings("hiring-replay")
    configure_logging(settings.telemetry.service_name)
    tables = [args.table] if args.table else None
    return asyncio.run(run_replay(settings, tables))


def cmd_check(args: argparse.Namespace) -> int:
    from services.query.check import run_check

    settings = _settings("hiring-check")
    configure_logging(settings.telemetry.service_name)
    return asyncio.run(run_check(settings, repair=args.repair))


def cmd_backup(args: argparse.Namespace) -> int:
    from services.backup_cli import run_backup

    settings = _settings("hiring-backup")
    configure_logging(settings.telemetry.service_name)
    return asyncio.run(run_backup(settings, args.table, args.to, new_folder=args.new_folder))


def cmd_restore(args: argparse.Namespace) -> int:
    from services.backup_cli import run_restore

    settings = _settings("hiring-restore")
    configure_logging(settings.telemetry.service_name)
    return asyncio.run(run_restore(settings, args.table, args.source, args.wait))


def cmd_dev(args: argparse.Namespace) -> int:
    from services.dev.supervisor import DevOptions, run_dev

    configure_logging("hiring-dev", json=False)
    return run_dev(
        DevOptions(
            port=args.port,
            consumers=args.consumers,
            state_dir=Path(args.state_dir) if args.state_dir else None,
            env_file=Path(args.env_file) if args.env_file else None,
            otlp_endpoint=args.otlp,
            host=args.host,
        )
    )


def cmd_upload(args: argparse.Namespace) -> int:
    from services.upload_cli import UploadOptions, main_upload

    return main_upload(
        UploadOptions(
            paths=tuple(args.paths),
            table=args.table,
            api_url=args.api,
            bucket=args.bucket,
            wait=args.wait,
            presign_above=args.presign_above,
        )
    )


def cmd_retract(args: argparse.Namespace) -> int:
    from services.upload_cli import run_retract, wide_console

    return asyncio.run(run_retract(args.id, args.api, args.wait, os.environ, wide_console()))


def cmd_dlq(args: argparse.Namespace) -> int:
    from services.dlq_cli import main_dlq

    configure_logging("hiring-dlq", json=False)
    if args.action == "redrive" and not args.all and not args.ids:
        print("hiring dlq redrive: name message ids, or --all", file=sys.stderr)
        return 2
    return main_dlq(args.action, args.ids, args.all)


def _consumers(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 64, got {text!r}")
    return int(text)


def _bytes(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number of bytes, got {text!r}")
    return int(text)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {text!r}")
    return int(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hiring", description="The hiring pipeline: ingest consumers and query API."
    )
    sub = p.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="run the whole system locally (PostgreSQL, S3+SQS, consumers, API)")
    dev.add_argument("--port", type=_port, default=8080, help="API port (default 8080)")
    dev.add_argument("--host", default="127.0.0.1", help="API address (default 127.0.0.1)")
    dev.add_argument(
        "--consumers",
        type=_consumers,
        default=1,
        help="ingest consumer processes (default 1; 0: none, run your own with the env file)",
    )
    dev.add_argument("--state-dir", help="keep the database and logs here (default: a temporary directory)")
    dev.add_argument("--env-file", help="write the stack's environment here once it is ready")
    dev.add_argument(
        "--otlp", default=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"), help="OTLP/HTTP endpoint"
    )
    dev.set_defaults(func=cmd_dev)

    ing = sub.add_parser("ingest", help="run one ingest consumer against the configured stack")
    ing.set_defaults(func=cmd_ingest)

    q = sub.add_parser("query", help="run the query API against the configured stack")
    q.add_argument("--port", type=_port, default=8080)
    q.add_argument("--host", default="0.0.0.0")
    q.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)  # a listening socket from hiring dev
    q.set_defaults(func=cmd_query)

    m = sub.add_parser("migrate", help="apply the database schema")
    m.set_defaults(func=cmd_migrate)

    r = sub.add_parser("replay", help="rebuild the tables from the objects in the bucket")
    r.add_argument("--table", choices=["hired_employees", "departments", "jobs"])
    r.set_defaults(func=cmd_replay)

    u = sub.add_parser(
        "upload",
        help="upload CSV files and folders (through the API, or straight into the bucket)",
        description="Exit status: 0 every file loaded, 1 some row was rejected, 2 a file failed or was not"
        " sent. Through the API, $HIRING_API_URL is the default URL and $HIRING_API_KEY the API key.",
    )
    u.add_argument("paths", nargs="+", metavar="PATH", help="CSV files, and folders of them")
    u.add_argument(
        "--table", choices=["hired_employees", "departments", "jobs"], help="the table of every file"
    )
    where = u.add_mutually_exclusive_group()
    where.add_argument("--api", metavar="URL", help="the query API (default $HIRING_API_URL or :8080)")
    where.add_argument("--bucket", action="store_true", help="put into S3_RAW_BUCKET, follow the ledger")
    u.add_argument("--wait", action="store_true", help="follow each file until it is loaded or failed")
    u.add_argument(
        "--presign-above",
        type=_bytes,
        default=8 * 1024 * 1024,
        metavar="BYTES",
        help="through the API, send bigger files by presigned S3 part URLs (default 8 MiB)",
    )
    u.set_defaults(func=cmd_upload)

    rt = sub.add_parser("retract", help="undo an upload: DELETE /uploads/ID (admin scope)")
    rt.add_argument("id", metavar="ID", help="an upload id (a UUID or obj-<n>, from GET /uploads)")
    rt.add_argument("--api", metavar="URL", help="the query API (default $HIRING_API_URL or :8080)")
    rt.add_argument("--wait", action="store_true", help="until its status is retracted")
    rt.set_defaults(func=cmd_retract)

    c = sub.add_parser("check", help="recount the metrics' hires projection from the table and compare")
    c.add_argument("--repair", action="store_true", help="rebuild the projection when it differs")
    c.set_defaults(func=cmd_check)

    dq = sub.add_parser(
        "dlq",
        help="the dead-letter queue: list its messages and why, or redrive them",
        description="The DLQ is $HIRING_DLQ_URL, else the one SQS_QUEUE_URL's RedrivePolicy names.",
    )
    dq_sub = dq.add_subparsers(dest="action", required=True)
    dq_sub.add_parser("list", help="each message, its objects and why it is there (event log, ledger)")
    rd = dq_sub.add_parser("redrive", help="send messages back to the ingest queue (loaded ones: dropped)")
    rd.add_argument("ids", nargs="*", metavar="ID", help="SQS message ids (from hiring dlq list)")
    rd.add_argument("--all", action="store_true", help="every decodable message")
    dq.set_defaults(func=cmd_dlq, ids=[], all=False)
    tables = ["hired_employees", "departments", "jobs"]
    b = sub.add_parser("backup", help="write tables as Avro files plus manifest.json")
    b.add_argument(
        "--table", action="append", choices=tables, help="a table to back up (repeat; default all)"
    )
    b.add_argument("--to", required=True, help="a directory or s3://bucket/prefix")
    b.add_argument(
        "--new-folder", action="store_true", help="write into a new folder <to>/<backup-id>/ (scheduled runs)"
    )
    b.set_defaults(func=cmd_backup)

    rs = sub.add_parser("restore", help="replace a table with its rows in a backup (checked first)")
    rs.add_argument("--table", required=True, choices=tables)
    rs.add_argument(
        "--from", dest="source", required=True, help="the backup: a directory or s3://bucket/prefix"
    )
    rs.add_argument("--wait", type=float, default=300.0, help="seconds to wait for a consumer to apply it")
    rs.set_defaults(func=cmd_restore)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        fatal(f"hiring {args.command}", f"configuration error: {exc}")
        return 2
    except DatabaseUnavailable as exc:
        fatal(f"hiring {args.command}", str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
