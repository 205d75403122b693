"""
The archive byte formats (``wings_twisted.archive.tarfmt`` and ``codecs``): tar headers as written
and read, the gzip writer and its levels, and the bounded decompressing sources.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
import zlib

import zstandard
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.archive.codecs import (Damaged, GzipWriter, bzip2_source, gzip_level,
                                          gzip_source, xz_source, zstd_source)
from wings_twisted.archive.readers import Kind, tar_entries
from wings_twisted.archive.tarfmt import (BLOCK, DIRTYPE, REGTYPE, SYMTYPE, HeaderError,
                                          encode_header, parse_header, parse_pax)

from .archive_support import Member, tar_bytes


class _Bytes:
    """
    A `Source` over bytes.
    """

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int) -> bytes:
        return self._data.read(size)


def _drain(source: object, size: int = 65536) -> bytes:
    pieces = []
    while True:
        piece = source.read(size)  # type: ignore[attr-defined]
        if not piece:
            return b"".join(pieces)
        assert len(piece) <= size
        pieces.append(piece)


def _read_with_tarfile(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        return archive.getmembers()


class TarHeaderTests(SynchronousTestCase):
    """
    ``encode_header``: ustar where it fits, PAX only where it does not.
    """

    def test_short_name_is_one_ustar_block(self) -> None:
        """
        A short ASCII name gives exactly one block with the ustar magic and no owner names.
        """
        block = encode_header("world/level.dat", kind=REGTYPE, mode=0o644, size=5, mtime=100)
        self.assertEqual(len(block), BLOCK)
        self.assertEqual(block[257:263], b"ustar\x00")
        self.assertEqual(block[265:265 + 64], bytes(64))
        info = _read_with_tarfile(block + b"hello" + bytes(BLOCK - 5) + bytes(2 * BLOCK))[0]
        self.assertEqual((info.name, info.size, info.mode, info.mtime, info.uid, info.gid),
                         ("world/level.dat", 5, 0o644, 100, 0, 0))

    def test_long_name_uses_the_prefix_field(self) -> None:
        """
        A 200-byte name that can be split at a ``/`` goes into prefix + name, without PAX.
        """
        name = "a" * 120 + "/" + "b" * 79
        block = encode_header(name, kind=REGTYPE, mode=0o600)
        self.assertEqual(len(block), BLOCK)
        self.assertEqual(_read_with_tarfile(block + bytes(2 * BLOCK))[0].name, name)

    def test_unsplittable_and_non_ascii_names_use_pax(self) -> None:
        """
        A name no split fits, a non-ASCII name and a long link text get a PAX header; tarfile
        reads the full values back.
        """
        for name, link in (("c" * 300, ""), ("caf\u00e9/men\u00fc.txt", ""),
                           ("link", "t" * 150)):
            kind = SYMTYPE if link else REGTYPE
            data = encode_header(name, kind=kind, mode=0o644, linkname=link)
            self.assertGreater(len(data), BLOCK)
            self.assertEqual(data[156:157], b"x")
            info = _read_with_tarfile(data + bytes(2 * BLOCK))[0]
            self.assertEqual((info.name, info.linkname), (name, link))

    def test_undecodable_name_bytes_are_kept(self) -> None:
        """
        A name with bytes that are not UTF-8 is written back as the same bytes.
        """
        name = b"bad\xff.txt".decode("utf-8", "surrogateescape")
        data = encode_header(name, kind=REGTYPE, mode=0o644)
        self.assertIn(b"hdrcharset=BINARY", data)
        entries = list(tar_entries(_Bytes(data + bytes(2 * BLOCK))))
        self.assertEqual(entries[0].name, name)

    def test_huge_size_and_negative_mtime_use_pax(self) -> None:
        """
        A size of 8 GiB or more and a negative time do not fit ustar fields.
        """
        data = encode_header("big", kind=REGTYPE, mode=0o644, size=9 << 30, mtime=-5)
        records = parse_pax(data[BLOCK:2 * BLOCK])
        self.assertEqual((records["size"], records["mtime"]), (b"9663676416", b"-5"))

    def test_directory_header(self) -> None:
        """
        A directory member is type 5 and its name ends with ``/``.
        """
        block = encode_header("world/", kind=DIRTYPE, mode=0o755)
        header = parse_header(block)
        assert header is not None
        self.assertEqual((header.kind, header.name, header.mode), (DIRTYPE, "world", 0o755))

    def test_zero_block_and_garbage(self) -> None:
        """
        A zero block is the end of an archive; anything without a valid checksum is refused.
        """
        self.assertIsNone(parse_header(bytes(BLOCK)))
        self.assertRaises(HeaderError, parse_header, b"x" * BLOCK)

    def test_bad_pax_records(self) -> None:
        """
        PAX records whose lengths do not add up are refused.
        """
        self.assertEqual(parse_pax(b"11 path=ab\n"), {"path": b"ab"})
        for bad in (b"99 path=ab\n", b"x path=ab\n", b"6 ab\n", b"nospace"):
            self.assertRaises(HeaderError, parse_pax, bad)


class TarReaderTests(SynchronousTestCase):
    """
    ``tar_entries`` over archives written by ``tarfile`` in every dialect.
    """

    def test_dialects(self) -> None:
        """
        GNU long names, PAX and ustar archives give the same entries.
        """
        members = [Member("d" * 150 + "/f.txt", b"data"), Member("dir", kind="dir"),
                   Member("sym", b"target", kind="symlink"), Member("hard", b"sym", kind="hardlink"),
                   Member("fifo", kind="fifo")]
        for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
            entries = []
            for entry in tar_entries(_Bytes(tar_bytes(members, fmt=fmt))):
                entries.append((entry.name, entry.kind, _drain(entry)))
            self.assertEqual(entries, [("d" * 150 + "/f.txt", Kind.FILE, b"data"),
                                       ("dir", Kind.DIRECTORY, b""),
                                       ("sym", Kind.SYMLINK, b""),
                                       ("hard", Kind.HARDLINK, b""),
                                       ("fifo", Kind.OTHER, b"")])

    def test_unread_content_is_skipped(self) -> None:
        """
        An entry whose content is not read is skipped over.
        """
        data = tar_bytes([Member("a", b"x" * 3000), Member("b", b"y")])
        self.assertEqual([e.name for e in tar_entries(_Bytes(data))], ["a", "b"])

    def test_truncated_archive_is_damaged(self) -> None:
        """
        An archive cut inside an entry's content or header raises ``Damaged``.
        """
        data = tar_bytes([Member("a", b"x" * 3000)])
        with self.assertRaises(Damaged):
            for entry in tar_entries(_Bytes(data[:BLOCK + 1000])):
                _drain(entry)
        with self.assertRaises(Damaged):
            list(tar_entries(_Bytes(data[:300])))

    def test_garbage_is_damaged(self) -> None:
        """
        Bytes that are not a tar header raise ``Damaged``.
        """
        with self.assertRaises(Damaged):
            list(tar_entries(_Bytes(b"not a tar" * 100)))


class GzipWriterTests(SynchronousTestCase):
    """
    ``GzipWriter`` and the levels of ``system.backups.compression_level``.
    """

    def test_levels(self) -> None:
        """
        ``none`` stores, ``best_compression`` is 9, everything else (typos included) is 1.
        """
        self.assertEqual([gzip_level(s) for s in ("none", "best_speed", "best_compression", "x")],
                         [0, 1, 9, 1])

    def test_one_member_readable_by_gzip(self) -> None:
        """
        Every level writes one gzip member that the standard library reads back, with nothing
        after its trailer, in pieces of at most about 1 MiB.
        """
        data = b"".join(b"line %d of the log\n" % i for i in range(200000))
        for level in (0, 1, 9):
            pieces: list[bytes] = []
            writer = GzipWriter(pieces.append, level)
            for start in range(0, len(data), 100000):
                writer.write(data[start:start + 100000])
            writer.close()
            blob = b"".join(pieces)
            self.assertEqual(gzip.decompress(blob), data)
            inflater = zlib.decompressobj(31)
            inflater.decompress(blob)
            self.assertEqual((inflater.eof, inflater.unused_data), (True, b""))
            self.assertEqual(writer.written, len(blob))
            self.assertLessEqual(max(len(p) for p in pieces), 2 * 1024 * 1024)
        self.assertLess(len(blob), len(data) // 5)


class SourceTests(SynchronousTestCase):
    """
    The decompressing sources: complete, bounded, strict about damage.
    """

    payload = b"".join(b"%08d" % i for i in range(100000))

    def test_every_codec_round_trips(self) -> None:
        """
        gzip, bzip2, xz and Zstandard sources give back the bytes, never more than asked.
        """
        cases = [(gzip_source, gzip.compress(self.payload)), (bzip2_source, bz2.compress(self.payload)),
                 (xz_source, lzma.compress(self.payload)),
                 (zstd_source, zstandard.ZstdCompressor().compress(self.payload))]
        for make, blob in cases:
            self.assertEqual(_drain(make(_Bytes(blob)), 1000), self.payload)

    def test_several_members_and_streams(self) -> None:
        """
        Concatenated gzip members, bzip2 and xz streams and zstd frames are read through; trailing
        zeros after gzip and xz are ignored.
        """
        half = self.payload[:400000], self.payload[400000:]
        cases = [(gzip_source, gzip.compress(half[0]) + gzip.compress(half[1]) + bytes(10)),
                 (bzip2_source, bz2.compress(half[0]) + bz2.compress(half[1])),
                 (xz_source, lzma.compress(half[0]) + bytes(8) + lzma.compress(half[1])),
                 (zstd_source, zstandard.ZstdCompressor().compress(half[0])
                  + zstandard.ZstdCompressor().compress(half[1]))]
        for make, blob in cases:
            self.assertEqual(_drain(make(_Bytes(blob))), self.payload)

    def test_a_bomb_is_read_in_bounded_pieces(self) -> None:
        """
        1 GiB of zeros compressed to about 1 MiB is never expanded more than asked per read.
        """
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
        blob = b"".join(compressor.compress(bytes(1 << 20)) for _ in range(64)) + compressor.flush()
        zeros = zstandard.ZstdCompressor(level=19).compress(bytes(256 << 20))
        self.assertLess(len(zeros), 64 * 1024)
        source = zstd_source(_Bytes(zeros))
        self.assertLessEqual(len(source.read(1 << 30)), 16 << 20)
        source = gzip_source(_Bytes(blob))
        total = 0
        for _ in range(100):
            piece = source.read(4096)
            self.assertLessEqual(len(piece), 4096)
            total += len(piece)
        self.assertEqual(total, 409600)

    def test_truncated_or_corrupt_streams_are_damaged(self) -> None:
        """
        A stream cut short, or with corrupt bytes, raises ``Damaged``.
        """
        cases = [(gzip_source, gzip.compress(self.payload)), (bzip2_source, bz2.compress(self.payload)),
                 (xz_source, lzma.compress(self.payload)),
                 (zstd_source, zstandard.ZstdCompressor().compress(self.payload))]
        for make, blob in cases:
            self.assertRaises(Damaged, _drain, make(_Bytes(blob[:len(blob) // 2])))
            corrupt = blob[:20] + bytes(200) + blob[220:]
            self.assertRaises(Damaged, _drain, make(_Bytes(corrupt)))
