"""An object's bytes -> CSV text bytes: gzip decompressed as it streams, other binary refused (pure).

CONTRACT §1: an object whose key ends in `.gz`, or whose `Content-Encoding` is `gzip`, is
decompressed while it streams; other compressed or binary content fails with a reason that says
what it is. The bytes themselves decide: gzip's magic number starts a gzip stream whatever the key
says (a gzip body uploaded under a `.csv` name is read, not rejected line by line), and a `.gz`
key whose bytes are plain text is read as it is. The first bytes of the text (SNIFF_BYTES) are
then checked for the signatures of archives, workbooks, other compressors and binary data, so
such a file fails with one reason instead of a reject per "line" of noise.

Memory stays bounded: a decompressed piece is at most `piece_bytes`, whatever the ratio.
Offsets downstream (the reader's, the ledger's `bytes_done`) are in decompressed bytes, so a
gzip object resumed after a crash is read again from its start and `skip` drops the bytes before
the checkpoint (a ranged GET cannot start inside a deflate stream).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Final

from services.ingest.ports import ObjectGone

GZIP_MAGIC: Final = b"\x1f\x8b"
SNIFF_BYTES: Final = 4096
PIECE_BYTES: Final = 64 << 10

_COMPRESSED_ADVICE: Final = "; only gzip is decompressed: compress the CSV with gzip, or upload it as it is"
_SHEET_ADVICE: Final = "; save the sheet as CSV (UTF-8) and upload that"
_UTF8_ADVICE: Final = "; save it as CSV UTF-8"

# (signature at offset 0, what it is, what to do)
_SIGNATURES: Final[tuple[tuple[bytes, str, str], ...]] = (
    (b"PK\x03\x04", "a ZIP archive", _COMPRESSED_ADVICE),
    (b"PK\x05\x06", "an empty ZIP archive", _COMPRESSED_ADVICE),
    (b"PK\x07\x08", "a ZIP archive", _COMPRESSED_ADVICE),
    (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        "a legacy Excel workbook (.xls) or another OLE2 document",
        _SHEET_ADVICE,
    ),
    (b"PAR1", "an Apache Parquet file", ""),
    (b"Obj\x01", "an Apache Avro data file", ""),
    (GZIP_MAGIC, "gzip-compressed data inside gzip (compressed twice)", "; compress it once"),
    (b"\xfd7zXZ\x00", "xz-compressed data", _COMPRESSED_ADVICE),
    (b"(\xb5/\xfd", "Zstandard-compressed data", _COMPRESSED_ADVICE),
    (b"\x04\x22\x4d\x18", "LZ4-compressed data", _COMPRESSED_ADVICE),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", _COMPRESSED_ADVICE),
    (b"Rar!\x1a\x07", "a RAR archive", _COMPRESSED_ADVICE),
    (b"%PDF-", "a PDF document", ""),
    (b"\x89PNG\r\n\x1a\n", "a PNG image", ""),
    (b"\xff\xd8\xff", "a JPEG image", ""),
    (b"SQLite format 3\x00", "an SQLite database", ""),
    (b"\xff\xfe\x00\x00", "UTF-32 text (little-endian)", _UTF8_ADVICE),
    (b"\x00\x00\xfe\xff", "UTF-32 text (big-endian)", _UTF8_ADVICE),
    (b"\xff\xfe", "UTF-16 text (little-endian)", _UTF8_ADVICE),
    (b"\xfe\xff", "UTF-16 text (big-endian)", _UTF8_ADVICE),
)


class UnreadableContent(ObjectGone):
    """The object's bytes cannot be read as CSV text; str() says what they are, for a person.

    An ObjectGone: the version can never be applied, and is marked failed with this reason."""


def identify(head: bytes) -> str | None:
    """Why the first bytes of a text stream are not CSV text, or None if they may be.

    `head` is the start of the (decompressed) content, SNIFF_BYTES long unless the content is
    shorter. Looks for known signatures, then for bytes no text has: many NULs, or mostly bytes
    that are not UTF-8.
    """
    for magic, what, advice in _SIGNATURES:
        if head.startswith(magic):
            if magic == b"PK\x03\x04" and (b"[Content_Types].xml" in head or b"xl/" in head):
                what, advice = "an Excel workbook (.xlsx, a ZIP archive)", _SHEET_ADVICE
            return f"not CSV text: the content is {what}{advice}"
    if head.startswith(b"BZh") and head[4:10] == b"1AY&SY":
        return f"not CSV text: the content is bzip2-compressed data{_COMPRESSED_ADVICE}"
    if len(head) > 262 and head[257:262] == b"ustar":
        return f"not CSV text: the content is a tar archive{_COMPRESSED_ADVICE}"
    nuls = head.count(0)
    if nuls >= 4 and nuls * 16 >= len(head):  # text has no NUL; a stray one costs its row only
        odd = head[1::2].count(0)
        if nuls * 3 >= len(head) and (odd * 10 >= nuls * 9 or odd * 10 <= nuls):
            order = "little" if odd * 2 > nuls else "big"
            what = f"looks like UTF-16 text ({order}-endian, no byte order mark)"
            return f"not CSV text: the content {what}{_UTF8_ADVICE}"
        return f"not CSV text: binary content ({nuls} of the first {len(head)} bytes are NUL)"
    if len(head) >= 64:
        bad = head.decode("utf-8", errors="replace").count("\ufffd")
        if bad * 4 > len(head):  # a Latin-1 file has a few such bytes, not a quarter of them
            return f"not CSV text: binary content ({bad} of the first {len(head)} bytes are not UTF-8)"
    return None


class ContentDecoder:
    """Feed an object's raw bytes in order with `feed`, then `finish`; both yield its text bytes.

    Raises UnreadableContent when the content is not CSV text (decided once its first
    SNIFF_BYTES of text are known, or at `finish` for a shorter object), or when a gzip stream is
    corrupt or truncated. `skip` drops that many bytes from the start of the text (a resumed
    read); `check=False` passes plain bytes through unexamined (a ranged read from the middle of
    an object already examined).
    """

    def __init__(self, *, skip: int = 0, check: bool = True, piece_bytes: int = PIECE_BYTES) -> None:
        self._skip = skip
        self._check = check
        self._piece = piece_bytes
        self._raw_head = b""  # raw bytes held until gzip or not can be told
        self.compressed: bool | None = None  # known after the first bytes
        self._z: zlib._Decompress | None = None
        self._members = 0  # gzip members decompressed to their end
        self._member_bytes = 0  # compressed bytes fed to the current gzip member
        self._padding = False  # after a gzip member: only NUL padding may follow
        self._raw_total = 0
        self._head = b""  # text held until it is examined
        self._examined = not check
        self.text_bytes = 0  # text bytes given out, plus those skipped

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        self._raw_total += len(chunk)
        if self.compressed is None:
            self._raw_head += chunk
            if len(self._raw_head) < len(GZIP_MAGIC):
                return
            chunk, self._raw_head = self._raw_head, b""
            self.compressed = self._check and chunk.startswith(GZIP_MAGIC)
            if self.compressed:
                self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        if self.compressed:
            for piece in self._inflate(chunk):
                yield from self._text(piece)
        else:
            yield from self._text(chunk)

    def finish(self) -> Iterator[bytes]:
        if self.compressed is None:  # shorter than the magic number
            head, self._raw_head = self._raw_head, b""
            self.compressed = False
            yield from self._text(head)
        if self.compressed and self._member_bytes and self._z is not None and not self._z.eof:
            raise UnreadableContent(
                f"the gzip stream is truncated: it ends after {self._raw_total} compressed bytes"
                " without its end marker"
            )
        if not self._examined:
            yield from self._release()

    # ---- internals ------------------------------------------------------------------------------

    def _inflate(self, data: bytes) -> Iterator[bytes]:
        while data:
            if self._padding:
                if data.strip(b"\x00"):
                    raise UnreadableContent(
                        "not CSV text: bytes that are not gzip follow the end of the gzip stream"
                    )
                return
            assert self._z is not None
            if self._members and not self._member_bytes:  # after a member: another, or NUL padding
                if not data[0]:
                    self._padding = True
                    continue
                if not data.startswith(GZIP_MAGIC[: len(data)]):
                    raise UnreadableContent(
                        "not CSV text: bytes that are not gzip follow the end of the gzip stream"
                    )
            self._member_bytes += len(data)
            try:
                out = self._z.decompress(data, self._piece)
            except zlib.error as exc:
                raise UnreadableContent(
                    f"the gzip stream is corrupt (within its first {self._raw_total} compressed bytes): {exc}"
                ) from None
            if out:
                yield out
            data = self._z.unconsumed_tail
            if self._z.eof:  # a member ends; another may follow (concatenated gzip files)
                data = self._z.unused_data + data
                self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._members += 1
                self._member_bytes = 0

    def _text(self, piece: bytes) -> Iterator[bytes]:
        if not piece:
            return
        if not self._examined:
            self._head += piece
            if len(self._head) < SNIFF_BYTES:
                return
            yield from self._release()
            return
        yield from self._give(piece)

    def _release(self) -> Iterator[bytes]:
        head, self._head = self._head, b""
        self._examined = True
        problem = identify(head[:SNIFF_BYTES])
        if problem is not None:
            raise UnreadableContent(problem)
        yield from self._give(head)

    def _give(self, piece: bytes) -> Iterator[bytes]:
        self.text_bytes += len(piece)
        if self._skip:
            dropped = min(self._skip, len(piece))
            self._skip -= dropped
            piece = piece[dropped:]
        if piece:
            yield piece
