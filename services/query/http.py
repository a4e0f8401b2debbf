"""Response helpers: msgspec JSON bodies and `Accept` negotiation."""

from __future__ import annotations

from typing import Any, Final

import msgspec
from aiohttp import web

JSON: Final = "application/json"
CSV: Final = "text/csv"

_encoder = msgspec.json.Encoder()


def encode(body: Any) -> bytes:
    return _encoder.encode(body)


def json_response(body: Any, *, status: int = 200) -> web.Response:
    return raw_json_response(encode(body), status=status)


def raw_json_response(payload: bytes, *, status: int = 200) -> web.Response:
    return web.Response(body=payload, status=status, content_type=JSON)


def csv_response(payload: bytes) -> web.Response:
    return web.Response(body=payload, content_type=CSV, charset="utf-8")


def _preference(accept: str, media_type: str) -> tuple[float, int]:
    """(q, specificity) the `Accept` header gives `media_type`; the most specific matching range wins."""
    main = media_type.split("/", 1)[0]
    best: tuple[int, float] = (-1, 0.0)
    for item in accept.split(","):
        fields = [f.strip() for f in item.split(";")]
        media_range = fields[0].lower()
        q = 1.0
        for param in fields[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media_range == media_type:
            specificity = 2
        elif media_range == f"{main}/*":
            specificity = 1
        elif media_range == "*/*":
            specificity = 0
        else:
            continue
        if specificity > best[0]:
            best = (specificity, q)
    return (best[1], best[0]) if best[0] >= 0 else (0.0, -1)


def wants_csv(accept: str) -> bool:
    """CSV when the request's `Accept` prefers text/csv to application/json (by q, then by how
    specifically it names it: `text/csv, */*` asks for CSV); JSON otherwise."""
    if "csv" not in accept.lower():
        return False
    csv_pref = _preference(accept, CSV)
    return csv_pref[0] > 0 and csv_pref > _preference(accept, JSON)
