"""The representation a negotiated endpoint answers (JSON or CSV), or 406 (CONTRACT §4)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from aiohttp import web

from services.query.errors import ApiError
from services.query.http import CSV, JSON, VARY_ACCEPT, negotiate

JSON_OR_CSV: Final = (JSON, CSV)


def pick(request: web.Request, offers: Sequence[str] = JSON_OR_CSV) -> str:
    """The offer the request's `Accept` prefers; ApiError 406 (with `Vary: Accept`) when it accepts
    none of them. Answers built from the choice carry `Vary: Accept` too (http.VARY_ACCEPT)."""
    accept = ", ".join(request.headers.getall("Accept", []))
    chosen = negotiate(accept, offers)
    if chosen is None:
        raise ApiError(
            406,
            f"nothing acceptable: this endpoint answers {' or '.join(offers)}, and Accept excludes them",
            headers=dict(VARY_ACCEPT),
        )
    return chosen
