"""Upload order: the one definition of "the later upload wins" (pure).

Every object version gets an order key when the ledger first sees it. Every row of a table carries
the key's time (`src_order`, microseconds since the epoch), the ledger id of the version that wrote
it (`src_object`) and its line (`src_line`). A row is replaced by an incoming one exactly when the
incoming one is not earlier: a later upload time; or, at the same time, the same file and a later
line, or another file whose full order key sorts later. The time is compared on the row itself, so
the rule holds under concurrent consumers whatever each transaction's snapshot can see; the rare
tie between two files is settled by `upload_order_of()` (migration 007), which reads the ledger with
a snapshot of its own taken when it is called.

The key sorts by the S3 event time (milliseconds in S3 and emulators; microseconds kept when
given), then S3's sequencer (which orders events on the same key: compared as hex after
left-padding), then a hash of key and version that makes the order total and deterministic. It
holds only letters, digits and dots, so it travels in COPY text unescaped. shared/migrations/004 has its SQL
twin, used once to rewrite the keys of existing ledger rows.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Final, NamedTuple

SEQUENCER_WIDTH: Final = 24

# The rule, as the merge's ON CONFLICT ... DO UPDATE ... WHERE clause (t: the row in the table,
# excluded: the incoming one). services/ingest/sql.py builds every merge with it.
LATER_WINS_SQL: Final = """t.src_order < excluded.src_order
   OR (t.src_order = excluded.src_order
       AND CASE WHEN t.src_object = excluded.src_object THEN t.src_line <= excluded.src_line
                ELSE upload_order_of(t.src_object) < upload_order_of(excluded.src_object) END)"""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class Provenance(NamedTuple):
    """Where a row's values came from: its writer's order key, ledger id and line."""

    key: str
    object_id: int
    line: int


def order_key(event_time: datetime, sequencer: str | None, key: str, version: str) -> str:
    """The text key that sorts object versions in upload order (see the module docstring).

    `event_time` must be timezone-aware; it is compared in UTC.
    """
    stamp = event_time.astimezone(UTC).strftime("%Y%m%dT%H%M%S%f")
    seq = (sequencer or "").upper().rjust(SEQUENCER_WIDTH, "0")
    digest = hashlib.sha256(f"{len(key)}:{key}{version}".encode()).hexdigest()[:16]
    return f"{stamp}.{seq}.{digest}"


def order_time(key: str) -> int:
    """The time part of an order key, in microseconds since the epoch (0 for the empty key): the
    value a row carries in `src_order`."""
    if not key:
        return 0
    stamp = datetime.strptime(key[:21], "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC)
    return (stamp - _EPOCH) // timedelta(microseconds=1)


def later_wins(current: Provenance, incoming: Provenance) -> bool:
    """Whether `incoming` replaces `current` (the same comparison as LATER_WINS_SQL)."""
    now, then = order_time(current.key), order_time(incoming.key)
    if now != then:
        return then > now
    if current.object_id == incoming.object_id:
        return incoming.line >= current.line
    return incoming.key > current.key
