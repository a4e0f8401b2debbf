"""Response helpers: msgspec JSON bodies and RFC 9110 `Accept` negotiation (§12.5.1)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from aiohttp import web

JSON: Final = "application/json"
CSV: Final = "text/csv"
VARY_ACCEPT: Final = {"Vary": "Accept"}

_encoder = msgspec.json.Encoder()


def encode(body: Any) -> bytes:
    return _encoder.encode(body)


def json_response(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return raw_json_response(encode(body), status=status, headers=headers)


def raw_json_response(
    payload: bytes, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(body=payload, status=status, content_type=JSON, headers=headers)


def csv_response(payload: bytes, *, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=payload, content_type=CSV, charset="utf-8", headers=headers)


@dataclass(frozen=True)
class MediaRange:
    """One element of an `Accept` header: `type/subtype` (either may be `*`), its parameters other
    than `q`, and its weight `q` (0 to 1; 0 means "not this")."""

    type: str
    subtype: str
    params: tuple[tuple[str, str], ...]
    q: float

    def specificity(self, media_type: str) -> int:
        """How specifically this range names `media_type` (3: exactly with parameters, 2: exactly,
        1: `type/*`, 0: `*/*`), or -1 when it does not match it."""
        main, _, sub = media_type.partition("/")
        if self.type == "*":
            return 0 if self.subtype == "*" else -1
        if self.type != main:
            return -1
        if self.subtype == "*":
            return 1
        if self.subtype != sub:
            return -1
        return 3 if self.params else 2


def _qvalue(text: str) -> float | None:
    """RFC 9110 §12.4.2: `0`, `0.ddd` or `1`, `1.000`; None for anything else."""
    text = text.strip()
    if not text or len(text) > 5 or text[0] not in "01" or (len(text) > 1 and text[1] != "."):
        return None
    if not all(c.isascii() and c.isdigit() for c in text[2:]):
        return None
    q = float(text)
    return q if q <= 1.0 else None


def parse_accept(header: str) -> list[MediaRange]:
    """The well-formed media ranges of an `Accept` header; malformed elements (no `/`, a bad `q`,
    `*/json`) are left out, as a lenient server does."""
    ranges: list[MediaRange] = []
    for element in header.split(","):
        fields = element.split(";")
        media_range = fields[0].strip().lower()
        main, slash, sub = media_range.partition("/")
        if not slash or not main or not sub or "/" in sub or (main == "*" and sub != "*"):
            continue
        q: float | None = 1.0
        params: list[tuple[str, str]] = []
        for param in fields[1:]:
            name, _, value = param.partition("=")
            name = name.strip().lower()
            if name == "q":
                q = _qvalue(value)
                break  # what follows q are accept-ext parameters: they do not narrow the range
            if name:
                params.append((name, value.strip().strip('"').lower()))
        if q is not None:
            ranges.append(MediaRange(main, sub, tuple(params), q))
    return ranges


def negotiate(header: str | None, offers: Sequence[str]) -> str | None:
    """The offer the request's `Accept` prefers, None when none is acceptable (answer 406).

    Each offer gets the `q` of the most specific range that matches it; a higher `q` wins, then the
    offer named more specifically (`text/csv, */*` asks for CSV), then the order of `offers`. No
    header, or one with no well-formed element, accepts anything: the first offer."""
    ranges = parse_accept(header) if header else []
    if not ranges:
        return offers[0] if offers else None
    best: tuple[float, int, int] | None = None
    chosen: str | None = None
    for position, offer in enumerate(offers):
        matched = max(((r.specificity(offer), r.q) for r in ranges), default=(-1, 0.0))
        specificity, q = matched
        if specificity < 0 or q <= 0:
            continue
        rank = (q, specificity, -position)
        if best is None or rank > best:
            best, chosen = rank, offer
    return chosen


def wants_csv(accept: str) -> bool:
    """True when `accept` prefers text/csv to application/json (the first offer)."""
    return negotiate(accept, (JSON, CSV)) == CSV
