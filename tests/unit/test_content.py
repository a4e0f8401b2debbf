"""Object bytes -> CSV text (pure): gzip decompressed as it streams, other binary refused with a reason."""

from __future__ import annotations

import bz2
import gzip
import io
import itertools
import lzma
import random
import tarfile
import zipfile
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest.content import SNIFF_BYTES, ContentDecoder, UnreadableContent, identify

CSV = b"".join(b"%d,Name %d,2021-07-27T16:02:08Z,1,2\r\n" % (i, i) for i in range(1, 2000))


def decode(chunks: list[bytes], *, skip: int = 0, check: bool = True) -> bytes:
    decoder = ContentDecoder(skip=skip, check=check)
    out = [piece for chunk in chunks for piece in decoder.feed(chunk)]
    out += decoder.finish()
    return b"".join(out)


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def reason(data: bytes) -> str:
    with pytest.raises(UnreadableContent) as caught:
        decode(chunked(data, 1000))
    return str(caught.value)


# ---- plain text and gzip --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 100, 4096, 1 << 20])
def test_plain_text_passes_through_in_any_chunking(size: int) -> None:
    for data in (CSV, b"", b"1", b"\xef\xbb\xbf1,Dev\n", CSV[:SNIFF_BYTES], CSV[: SNIFF_BYTES + 1]):
        assert decode(chunked(data, size)) == data


@pytest.mark.parametrize("size", [1, 2, 3, 10, 100, 4096, 1 << 20])
def test_gzip_is_decompressed_in_any_chunking(size: int) -> None:
    decoder = ContentDecoder()
    packed = gzip.compress(CSV)
    assert decode(chunked(packed, size)) == CSV
    list(decoder.feed(packed))
    assert decoder.compressed is True


def test_concatenated_gzip_members_and_nul_padding() -> None:
    # `cat a.gz b.gz` is a valid gzip file of both contents; some tools pad with NULs
    packed = gzip.compress(CSV[:1000]) + gzip.compress(b"") + gzip.compress(CSV[1000:])
    for size in (1, 7, 1 << 20):
        assert decode(chunked(packed, size)) == CSV
        assert decode(chunked(packed + b"\x00" * 512, size)) == CSV


def test_an_empty_gzip_stream_is_an_empty_file() -> None:
    assert decode([gzip.compress(b"")]) == b""


def test_decompressed_pieces_are_bounded() -> None:
    text = b"1,a\n" * (8 << 20)  # 32 MiB that compress to ~30 KiB
    packed = gzip.compress(text, compresslevel=9)
    decoder = ContentDecoder(piece_bytes=64 << 10)
    total = 0
    for chunk in chunked(packed, 16 << 10):
        for piece in decoder.feed(chunk):
            assert len(piece) <= max(64 << 10, SNIFF_BYTES)
            total += len(piece)
    total += sum(map(len, decoder.finish()))
    assert total == len(text) == decoder.text_bytes


@pytest.mark.parametrize("cut", [2, 5, 10, 30, -9, -1])
def test_a_truncated_gzip_stream_fails_with_a_reason(cut: int) -> None:
    packed = gzip.compress(CSV)
    assert reason(packed[:cut]).startswith("the gzip stream is truncated: it ends after")


def test_a_corrupt_gzip_stream_fails_with_a_reason() -> None:
    packed = bytearray(gzip.compress(CSV))
    packed[-6] ^= 0xFF  # the CRC-32 or length in the trailer
    assert reason(bytes(packed)).startswith("the gzip stream is corrupt")
    damaged = bytearray(gzip.compress(CSV))
    damaged[30:60] = bytes(30)
    assert reason(bytes(damaged)).startswith("the gzip stream is corrupt")


def test_bytes_after_the_gzip_stream_fail() -> None:
    assert reason(gzip.compress(CSV) + b"trailing,garbage\n") == (
        "not CSV text: bytes that are not gzip follow the end of the gzip stream"
    )


@pytest.mark.parametrize("skip", [0, 1, 5, SNIFF_BYTES, len(CSV) - 1, len(CSV)])
def test_skip_drops_the_text_before_a_checkpoint(skip: int) -> None:
    for data in (CSV, gzip.compress(CSV)):
        for size in (3, 1000):
            assert decode(chunked(data, size), skip=skip) == CSV[skip:]


def test_unchecked_bytes_are_given_as_they_are() -> None:
    # a ranged read from the middle of an object: neither sniffed nor decompressed
    for data in (b"\x1f\x8b\x08 not really", b"PK\x03\x04", bytes(100)):
        assert decode([data], check=False) == data


# ---- what is refused, and why ---------------------------------------------------------------------


def _zip(names: list[str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name in names:
            z.writestr(name, "<x/>")
    return buf.getvalue()


def _tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("jobs.csv")
        info.size = len(CSV)
        t.addfile(info, io.BytesIO(CSV))
    return buf.getvalue()


REFUSED = [
    (_zip(["[Content_Types].xml", "xl/workbook.xml"]), "an Excel workbook (.xlsx, a ZIP archive)"),
    (_zip(["jobs.csv"]), "a ZIP archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600), "a legacy Excel workbook (.xls)"),
    (b"PAR1\x15\x00\x15\x1c" + bytes(100) + b"PAR1", "an Apache Parquet file"),
    (bz2.compress(CSV), "bzip2-compressed data"),
    (lzma.compress(CSV), "xz-compressed data"),
    (b"(\xb5/\xfd" + bytes(20), "Zstandard-compressed data"),
    (gzip.compress(gzip.compress(CSV)), "gzip-compressed data inside gzip"),
    (gzip.compress(_tar()), "a tar archive"),  # a .tar.gz
    (_tar(), "a tar archive"),
    (b"%PDF-1.7\n" + CSV, "a PDF document"),
    (b"Obj\x01" + bytes(50), "an Apache Avro data file"),
    (CSV.decode().encode("utf-16"), "UTF-16 text (little-endian); save it as CSV UTF-8"),
    (CSV.decode().encode("utf-16-be"), "UTF-16 text (big-endian, no byte order mark)"),
    (CSV.decode().encode("utf-16-le"), "UTF-16 text (little-endian, no byte order mark)"),
    (b"\xfe\xff" + CSV.decode().encode("utf-16-be"), "UTF-16 text (big-endian); save it as CSV UTF-8"),
    (CSV.decode().encode("utf-32"), "UTF-32 text (little-endian)"),
    (bytes(5000), "binary content (4096 of the first 4096 bytes are NUL)"),
    (b"\x01\x02\x00\x00" * 300, "binary content (600 of the first 1200 bytes are NUL)"),
    (random.Random(1).randbytes(10_000), "binary content ("),
    (gzip.compress(random.Random(2).randbytes(10_000)), "bytes are not UTF-8)"),
]


@pytest.mark.parametrize(("data", "what"), REFUSED)
def test_binary_content_fails_with_a_reason_naming_it(data: bytes, what: str) -> None:
    found = reason(data)
    assert found.startswith("not CSV text: ") and what in found, found
    for size in (1, 5000):  # in any chunking, before any text is given out
        decoder = ContentDecoder()
        with pytest.raises(UnreadableContent):
            for chunk in itertools.chain(chunked(data, size)):
                assert not list(decoder.feed(chunk))
            list(decoder.finish())


@pytest.mark.parametrize(
    "data",
    [
        CSV,
        "1,José Müller,2021-07-27T16:02:08Z,1,2\n".encode("latin-1") * 100,  # Latin-1: its rows say why
        b"1,Nul\x00Byte\n" + CSV,  # one NUL costs its row only
        b"\xef\xbb\xbf" + CSV,
        "1,日本語の名前,2021-07-27T16:02:08Z,1,2\n".encode() * 100,
        b"id,job\n",
        b"",
        b"\n\n\n",
    ],
)
def test_text_is_not_refused(data: bytes) -> None:
    assert identify(data[:SNIFF_BYTES]) is None
    assert decode(chunked(data, 100)) == data
    assert decode([gzip.compress(data)]) == data


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=6000), st.integers(1, 700), st.booleans())
def test_property_any_bytes_are_text_as_they_are_or_refused_with_a_reason(
    data: bytes, size: int, packed: bool
) -> None:
    try:
        out = decode(chunked(gzip.compress(data) if packed else data, size))
    except UnreadableContent as exc:
        assert str(exc)
    else:
        if packed or not data.startswith(b"\x1f\x8b"):
            assert out == data


def test_zlib_never_escapes() -> None:
    rng = random.Random(3)
    for _ in range(300):
        packed = bytearray(gzip.compress(CSV[: rng.randint(0, 3000)]))
        for _ in range(rng.randint(1, 4)):
            packed[rng.randrange(len(packed))] = rng.randrange(256)
        try:
            decode(chunked(bytes(packed), rng.randint(1, 500)))
        except UnreadableContent as exc:
            assert str(exc)
        except zlib.error:  # pragma: no cover - the failure this test exists to catch
            pytest.fail("zlib.error escaped")
