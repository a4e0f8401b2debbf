"""Upload order: the one definition of "the later upload wins" (pure).

Every object version gets an order key when the ledger first sees it; every row of a table carries
the key of the version that wrote it (`src_order`) and its line (`src_line`). A row is replaced by
an incoming one exactly when (src_order, src_line) of the incoming row is not smaller: a later
line of the same file, or any line of a file uploaded later. Comparing values held on the row
itself (never a lookup of the ledger) keeps the rule right under concurrent consumers, whatever
each transaction's snapshot can see.

The key sorts by the S3 event time (milliseconds in S3 and emulators; microseconds kept when
given), then S3's sequencer (which orders events on the same key: compared as hex after
left-padding), then a hash of key and version that makes the order total and deterministic. It
holds only letters, digits and dots, so it travels in COPY text unescaped. shared/migrations/004 has its SQL
twin, used once to rewrite the keys of existing ledger rows.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Final, NamedTuple

SEQUENCER_WIDTH: Final = 24

# The rule, as the merge's ON CONFLICT ... DO UPDATE ... WHERE clause (t: the row in the table,
# excluded: the incoming one). services/ingest/sql.py builds every merge with it.
LATER_WINS_SQL: Final = "(t.src_order, t.src_line) <= (excluded.src_order, excluded.src_line)"


class Provenance(NamedTuple):
    """Where a row's values came from: its writer's order key and line."""

    order: str
    line: int


def order_key(event_time: datetime, sequencer: str | None, key: str, version: str) -> str:
    """The text key that sorts object versions in upload order (see the module docstring).

    `event_time` must be timezone-aware; it is compared in UTC.
    """
    stamp = event_time.astimezone(UTC).strftime("%Y%m%dT%H%M%S%f")
    seq = (sequencer or "").upper().rjust(SEQUENCER_WIDTH, "0")
    digest = hashlib.sha256(f"{len(key)}:{key}{version}".encode()).hexdigest()[:16]
    return f"{stamp}.{seq}.{digest}"


def later_wins(current: Provenance, incoming: Provenance) -> bool:
    """Whether `incoming` replaces `current` (the same comparison as LATER_WINS_SQL)."""
    return incoming >= current
