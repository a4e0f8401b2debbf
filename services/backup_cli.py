"""`hiring backup` and `hiring restore` (CONTRACT §6): the command-line side of shared/backup.

Exit statuses: 0 done; 1 (restore) the snapshot is in the bucket but no consumer applied it within
--wait seconds (it will be applied when one runs); 2 refused (a corrupt, truncated, foreign or
mismatched backup, an unusable target) or failed, with the reason on stderr.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from shared import db
from shared.aws import AwsClients
from shared.backup import restore
from shared.backup.backup import BackupError, new_backup_id, write_backup
from shared.backup.store import parse_location
from shared.config import Settings


async def run_backup(
    settings: Settings, tables: Sequence[str] | None, to: str, *, new_folder: bool = False
) -> int:
    """`new_folder`: write into `<to>/<backup-id>/` (how scheduled runs keep each backup apart)."""
    backup_id = new_backup_id()
    try:
        target = parse_location(to)
    except ValueError as exc:
        print(f"hiring backup: {exc}", file=sys.stderr)
        return 2
    if new_folder:
        target = target.child(backup_id)
    conn = await db.connect(settings.db)
    try:
        if target.is_s3:
            async with AwsClients(settings.aws).s3() as s3:
                made = await write_backup(conn, s3, target, tables, backup_id=backup_id)
        else:  # a directory: no S3 client to build
            made = await write_backup(conn, None, target, tables, backup_id=backup_id)
    except BackupError as exc:
        print(f"hiring backup: {exc}", file=sys.stderr)
        return 2
    except (BotoCoreError, ClientError) as exc:
        print(f"hiring backup: the bucket did not take the backup: {exc}", file=sys.stderr)
        return 2
    finally:
        await conn.close()
    for name, entry in made.tables.items():
        print(f"{name}: {entry.rows} rows, {entry.bytes} bytes, sha256 {entry.sha256}")
    print(f"backup {made.id} written to {target} (manifest.json)")
    return 0


async def run_restore(settings: Settings, table: str, source: str, wait_seconds: float) -> int:
    try:
        location = parse_location(source)
    except ValueError as exc:
        print(f"hiring restore: {exc}", file=sys.stderr)
        return 2
    pool = await db.create_pool(settings.db, min_size=1, max_size=2)
    try:
        async with AwsClients(settings.aws).s3() as s3:
            with tempfile.TemporaryDirectory(prefix="hiring-restore-") as scratch:
                try:
                    prepared = await restore.prepare(s3, location, table, Path(scratch))
                except restore.Refused as exc:
                    print(f"hiring restore: refused, nothing changed: {exc}", file=sys.stderr)
                    return 2
                restore_id, key = await restore.submit(s3, pool, settings.bucket, prepared)
            print(
                f"{prepared.rows} rows of {table} from backup {prepared.backup_id} verified; "
                f"snapshot s3://{settings.bucket}/{key} (upload {restore_id})"
            )
            outcome = await restore.wait(pool, restore_id, wait_seconds)
    except (BotoCoreError, ClientError) as exc:
        print(f"hiring restore: the bucket did not answer: {exc}", file=sys.stderr)
        return 2
    finally:
        await pool.close()
    if outcome.status == "loaded":
        print(f"restored: {table} now holds the backup's {outcome.rows_loaded} rows")
        return 0
    if outcome.status == "failed":
        print(f"hiring restore: the snapshot failed to apply: {outcome.error}", file=sys.stderr)
        return 2
    print(
        f"hiring restore: no ingest consumer applied upload {restore_id} within {wait_seconds:g} s; "
        "it is in the bucket and will be applied when one runs",
        file=sys.stderr,
    )
    return 1
