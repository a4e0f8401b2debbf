"""Query-string parameters: a bad value is a 400 that names the parameter and what it accepts."""

from __future__ import annotations

import re
from typing import Final

from services.query.errors import ApiError

_DIGITS: Final = re.compile(r"[0-9]{1,10}")


def int_param(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    """A non-negative decimal integer from `low` to `high`; `default` when absent."""
    if raw is None:
        return default
    text = raw.strip()
    if not _DIGITS.fullmatch(text) or not low <= int(text) <= high:
        raise ApiError(400, f"bad {name} {raw!r}: expected an integer from {low} to {high}")
    return int(text)
