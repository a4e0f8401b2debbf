"""Upload order (services/ingest/order.py): pure."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from services.ingest.order import Provenance, later_wins, order_key, order_time

T1 = datetime(2021, 1, 1, 0, 0, 0, 1000, tzinfo=UTC)
T2 = datetime(2021, 1, 1, 0, 0, 0, 2000, tzinfo=UTC)


def test_order_key_sorts_by_time_then_sequencer() -> None:
    assert order_key(T1, None, "z", "v") < order_key(T2, None, "a", "v")
    # same millisecond: S3's sequencer decides; shorter ones are left-padded before comparing
    assert order_key(T1, "FF", "k", "v") < order_key(T1, "0100", "k", "v")
    assert order_key(T1, "ff", "k", "v") == order_key(T1, "FF", "k", "v")


def test_order_key_is_total_and_travels_in_copy_text_unescaped() -> None:
    keys = {
        order_key(T1, None, key, version) for key in ("a", "a,b", "x\\y\n", "ñ") for version in ("1", "2")
    }
    assert len(keys) == 8  # distinct versions never tie
    assert all(re.fullmatch(r"[0-9A-Za-z.]+", k) for k in keys)


def test_other_timezones_compare_in_utc() -> None:
    from datetime import timedelta, timezone

    later_there = datetime(
        2021, 1, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=5))
    )  # 20:00 UTC the day before
    assert order_key(later_there, None, "k", "v") < order_key(T1, None, "k", "v")


def test_the_time_part_is_what_rows_carry() -> None:
    key = order_key(T1, "FF", "k", "v")
    assert order_time(key) == int(T1.timestamp()) * 1_000_000 + 1000
    assert order_time("") == 0  # rows written by hand
    assert order_time(order_key(T2, None, "a", "v")) - order_time(key) == 1000


def test_later_upload_wins_then_later_line() -> None:
    early, late = order_key(T1, None, "a", "v"), order_key(T2, None, "b", "v")
    assert later_wins(Provenance(early, 1, 9), Provenance(late, 2, 1))
    assert not later_wins(Provenance(late, 2, 1), Provenance(early, 1, 9))
    assert later_wins(
        Provenance(early, 1, 3), Provenance(early, 1, 3)
    )  # a resumed batch re-applies its lines
    assert later_wins(Provenance(early, 1, 3), Provenance(early, 1, 4))
    assert not later_wins(Provenance(early, 1, 4), Provenance(early, 1, 3))
    assert later_wins(Provenance("", 0, 5), Provenance(early, 1, 1))  # rows written by hand sort first


def test_two_files_at_the_same_time_are_ordered_by_their_full_keys() -> None:
    first, second = sorted([order_key(T1, "0A", "k", "v1"), order_key(T1, "0B", "k", "v2")])
    assert later_wins(Provenance(first, 1, 50), Provenance(second, 2, 1))
    assert not later_wins(Provenance(second, 2, 1), Provenance(first, 1, 50))
