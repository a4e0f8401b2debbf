"""`GET /uploads/{id}/rejects` as CSV: every rejected row of an upload, streamed page by page from one
database cursor, so an export of a million rejects holds one page in memory."""

from __future__ import annotations

import csv
import io
from typing import Final

from aiohttp import web

from services.query import sql
from services.query.schemas import Reject
from services.query.state import POOL

COLUMNS: Final = ("line", "raw", "reason")


def encode_rows(rows: list[tuple[object, ...]]) -> bytes:
    """RFC 4180 CSV lines (CRLF, quotes doubled); raw text keeps its commas, quotes and newlines."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue().encode()


async def stream(
    request: web.Request, row: sql.UploadRow, offset: int, limit: int | None
) -> web.StreamResponse:
    """Header line first, then the rejects by line from `offset` (at most `limit`)."""
    safe_id = "".join(c for c in row.id if c.isalnum() or c == "-")
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="rejects-{safe_id}.csv"',
            "Vary": "Accept",
        }
    )
    if row.object_id is None:  # queued: no rejects yet
        response.content_length = len(header := encode_rows([COLUMNS]))
        await response.prepare(request)
        await response.write(header)
        await response.write_eof()
        return response
    async with request.app[POOL].acquire() as conn, conn.transaction(readonly=True):
        pages = sql.reject_pages(conn, row.object_id, offset, limit)
        first: list[Reject] = await anext(pages, [])
        await response.prepare(request)  # after the first read: a database error is still a JSON 500
        await response.write(encode_rows([COLUMNS, *((r.line, r.raw, r.reason) for r in first)]))
        async for page in pages:
            await response.write(encode_rows([(r.line, r.raw, r.reason) for r in page]))
    await response.write_eof()
    return response
