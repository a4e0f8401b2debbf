"""docs/data-dictionary.md gives the exact reject reasons and file errors: each example in its tables
is run through the reader and the validators, and must be rejected on that line with that text."""

from __future__ import annotations

import codecs
import re
from pathlib import Path

import pytest

from services.ingest.content import identify
from shared.dictionary import TABLES
from tests.unit.batching import read_batches

DOC = Path(__file__).resolve().parents[2] / "docs" / "data-dictionary.md"
_ROW = re.compile(r"^\| `(\w+)` \| `(.+?)` \| (\d+) \| `(.+)` \|$")
_FILE_ROW = re.compile(r"^\| `(.+?)` \| `(not CSV text: .+)` \|$")


def _bytes(shown: str) -> bytes:
    """The doc's notation: `\\n` a line end, `\\xNN` a byte, everything else UTF-8 text."""
    raw: bytes = codecs.escape_decode(shown.encode())[0]
    return raw


def _examples(pattern: re.Pattern[str]) -> list[tuple[str, ...]]:
    return [m.groups() for line in DOC.read_text(encoding="utf-8").splitlines() if (m := pattern.match(line))]


def test_the_doc_has_its_examples() -> None:
    assert len(_examples(_ROW)) >= 20
    assert len(_examples(_FILE_ROW)) >= 4


@pytest.mark.parametrize(("table", "content", "line", "reason"), _examples(_ROW))
def test_each_reject_reason_in_the_doc_is_what_the_reader_gives(
    table: str, content: str, line: str, reason: str
) -> None:
    batches = list(read_batches(TABLES[table], [_bytes(content)], batch_rows=100))
    rejects = [(r.line, r.reason) for b in batches for r in b.rejects]
    assert (int(line), reason) in rejects


@pytest.mark.parametrize(("head", "error"), _examples(_FILE_ROW))
def test_each_file_error_in_the_doc_is_what_the_content_check_gives(head: str, error: str) -> None:
    assert identify(_bytes(head)) == error
