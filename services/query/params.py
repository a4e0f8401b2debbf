"""Query-string parameters: a bad value is a 400 that names the parameter and what it accepts."""

from __future__ import annotations

import re
from typing import Final

from multidict import MultiMapping

from services.query.errors import ApiError

_DIGITS: Final = re.compile(r"[0-9]{1,10}")


def single(query: MultiMapping[str], name: str) -> str | None:
    """The one value of `?name=`, None when absent; given more than once is a 400 (which one would
    the client mean?)."""
    values = query.getall(name, [])
    if len(values) > 1:
        raise ApiError(400, f"{name} is given {len(values)} times: give it once")
    return values[0] if values else None


def int_param(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    """A non-negative decimal integer from `low` to `high`; `default` when absent."""
    if raw is None:
        return default
    text = raw.strip()
    if not _DIGITS.fullmatch(text) or not low <= int(text) <= high:
        raise ApiError(400, f"bad {name} {_shown(raw)}: expected an integer from {low} to {high}")
    return int(text)


def _shown(raw: str) -> str:
    """The value as the client sent it, quoted, cut short: an error message echoes it safely."""
    return repr(raw if len(raw) <= 40 else raw[:40] + "…")
