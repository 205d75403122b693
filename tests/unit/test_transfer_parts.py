"""
The transfer body byte for byte (transfers.md §3.4) and its reading on the destination (§4.3):
``transfers.framing`` and ``transfers.parts``.
"""

from __future__ import annotations

import hashlib

import multipart
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.transfers.framing import (
    Framing,
    body,
    multipart_boundary,
    new_boundary,
)
from wings_twisted.transfers.parts import BodyError, PartReader, closing_delimiter_read

from .transfer_support import tar_gz

B = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789ab"


class _Collect:
    def __init__(self) -> None:
        self.archive = b""
        self.ends: list[str] = []

    def start(self) -> object:
        def write(data: bytes) -> None:
            self.archive += data
        return write

    def end(self, digest: str) -> None:
        self.ends.append(digest)


def reader(boundary: bytes = B) -> tuple[PartReader, _Collect]:
    collect = _Collect()
    return PartReader(boundary, on_archive=collect.start,  # type: ignore[arg-type]
                      on_archive_end=collect.end), collect


def feed_all(parts: PartReader, data: bytes, piece: int = 0) -> bool:
    if not piece:
        return parts.feed(data)
    complete = False
    for start in range(0, len(data), piece):
        complete = parts.feed(data[start:start + piece])
    return complete


def field(name: bytes, value: bytes, boundary: bytes = B) -> bytes:
    return (b"\r\n--" + boundary + b"\r\nContent-Disposition: form-data; name=\"" + name
            + b"\"\r\n\r\n" + value)


class FramingTests(SynchronousTestCase):
    """
    transfers.md §3.4: the layout upstream's Go writer produces.
    """

    def test_exact_bytes(self) -> None:
        """
        ``archive`` (file part), ``checksum``, ``checksum_archive``, closing delimiter: CRLF
        everywhere, no preamble, no epilogue.
        """
        framing = Framing(B)
        digest = "ab" * 32
        self.assertEqual(body(framing, b"GZIP", digest), (
            b"--" + B + b"\r\n"
            b'Content-Disposition: form-data; name="archive"; filename="archive.tar.gz"\r\n'
            b"Content-Type: application/octet-stream\r\n"
            b"\r\n"
            b"GZIP"
            b"\r\n--" + B + b"\r\n"
            b'Content-Disposition: form-data; name="checksum"\r\n'
            b"\r\n" + digest.encode() +
            b"\r\n--" + B + b"\r\n"
            b'Content-Disposition: form-data; name="checksum_archive"\r\n'
            b"\r\n" + digest.encode() +
            b"\r\n--" + B + b"--\r\n"))
        self.assertEqual(framing.content_type, b"multipart/form-data; boundary=" + B)

    def test_without_checksum_archive(self) -> None:
        """
        ``system.transfers.send_checksum_archive: false``: ``archive`` and ``checksum`` only
        (upstream's body).
        """
        data = body(Framing(B, checksum_archive=False), b"x", "00" * 32)
        self.assertNotIn(b"checksum_archive", data)
        self.assertTrue(data.endswith(b'name="checksum"\r\n\r\n' + b"00" * 32 + b"\r\n--" + B
                                      + b"--\r\n"))

    def test_boundary(self) -> None:
        """
        60 lower-case hex characters, fresh each time.
        """
        first, second = new_boundary(), new_boundary()
        self.assertRegex(first.decode(), r"^[0-9a-f]{60}$")
        self.assertNotEqual(first, second)
        self.assertEqual(len(Framing().boundary), 60)

    def test_content_type(self) -> None:
        """
        Any ``multipart/*`` with a valid boundary, quoted or not, parameters in any order;
        anything else is refused.
        """
        cases = {
            b"multipart/form-data; boundary=" + B: B,
            b'Multipart/Form-Data; charset=utf-8; boundary="a b c"': b"a b c",
            b"multipart/mixed;boundary=x": b"x",
            b"application/octet-stream; boundary=x": None,
            b"multipart/form-data": None,
            b"multipart/form-data; boundary=": None,
            b"multipart/form-data; boundary=" + b"a" * 71: None,
            b"multipart/form-data; boundary=bad\x00": None,
            b"": None,
        }
        for header, expected in cases.items():
            self.assertEqual(multipart_boundary(header), expected, header)
        self.assertIsNone(multipart_boundary(None))


class PartReaderTests(SynchronousTestCase):
    """
    transfers.md §4.3 and the conformance checks §11.2–§11.4.
    """

    def test_our_body_in_any_pieces(self) -> None:
        """
        Our body is read the same whatever the pieces it arrives in (down to one byte): the
        archive part handed on whole, its digest, both checksums verified.
        """
        archive = tar_gz({"a": b"1" * 5000})
        digest = hashlib.sha256(archive).hexdigest()
        data = body(Framing(B), archive, digest)
        for piece in (0, 1, 7, 4096):
            parts, collect = reader()
            self.assertTrue(feed_all(parts, data, piece))
            self.assertEqual(collect.archive, archive)
            self.assertEqual(collect.ends, [digest])
            self.assertEqual(parts.verified, 2)
            self.assertEqual(parts.archive_bytes, len(archive))

    def test_upstream_body(self) -> None:
        """
        transfers.md §11.2: a body shaped like upstream's (60-hex boundary, ``archive`` +
        ``checksum`` only) is accepted.
        """
        archive = tar_gz({"world/level.dat": b"\x00" * 100})
        framing = Framing(B, checksum_archive=False)
        parts, _ = reader()
        self.assertTrue(parts.feed(body(framing, archive, hashlib.sha256(archive).hexdigest())))
        self.assertEqual(parts.verified, 1)

    def test_pelican_body(self) -> None:
        """
        A body with only a ``checksum_archive``-prefixed part (Pelican's name) is accepted.
        """
        archive = b"gz"
        data = (Framing(B).head() + archive
                + field(b"checksum_archive_1", hashlib.sha256(archive).hexdigest().encode())
                + b"\r\n--" + B + b"--\r\n")
        parts, _ = reader()
        self.assertTrue(parts.feed(data))

    def test_padding_after_the_gzip_trailer(self) -> None:
        """
        transfers.md §11.3: the checksum covers the whole part, so a part whose tar stream ends
        kilobytes before the part does (zero padding) verifies.
        """
        archive = tar_gz({"a": b"data"}, padding=8192)
        parts, collect = reader()
        self.assertTrue(parts.feed(body(Framing(B), archive, hashlib.sha256(archive).hexdigest())))
        self.assertEqual(collect.archive, archive)

    def test_checksum_before_archive(self) -> None:
        """
        transfers.md §11.4: ``checksum`` before ``archive`` fails with upstream's text.
        """
        data = (b"--" + B + b'\r\nContent-Disposition: form-data; name="checksum"\r\n\r\n'
                + b"00" * 32 + b"\r\n--" + B + b"--\r\n")
        parts, _ = reader()
        with self.assertRaises(BodyError) as caught:
            parts.feed(data)
        self.assertEqual(caught.exception.message, "archive must be sent before the checksum")

    def test_missing_checksum(self) -> None:
        """
        transfers.md §11.4: an archive without a checksum part fails at the closing delimiter.
        """
        parts, _ = reader()
        with self.assertRaises(BodyError) as caught:
            parts.feed(Framing(B).head() + b"gz" + b"\r\n--" + B + b"--\r\n")
        self.assertEqual(caught.exception.message, "missing archive or checksum")

    def test_missing_archive(self) -> None:
        """
        A body with no part at all fails the same way.
        """
        parts, _ = reader()
        with self.assertRaises(BodyError):
            parts.feed(b"--" + B + b"--\r\n")

    def test_upper_case_checksum_and_whitespace(self) -> None:
        """
        transfers.md §11.4: an upper-case hex checksum is accepted, surrounding whitespace
        trimmed.
        """
        archive = b"anything"
        value = b" \t" + hashlib.sha256(archive).hexdigest().upper().encode() + b"\r\n "
        data = Framing(B).head() + archive + field(b"checksum", value) + b"\r\n--" + B + b"--\r\n"
        parts, _ = reader()
        self.assertTrue(parts.feed(data))

    def test_mismatch_and_bad_hex(self) -> None:
        """
        A checksum that differs fails with ``checksums don't match``; one that is not hex, or
        longer than 1 KiB, is refused; both names must match when both are sent.
        """
        archive = b"x"
        good = hashlib.sha256(archive).hexdigest().encode()
        for value, message in ((b"00" * 32, "checksums don't match"),
                               (b"zz" * 32, "The checksum part is not a hexadecimal SHA-256 "
                                            "digest."),
                               (b"0" * 2000, "The checksum part is not a hexadecimal SHA-256 "
                                             "digest.")):
            parts, _ = reader()
            with self.assertRaises(BodyError) as caught:
                parts.feed(Framing(B).head() + archive + field(b"checksum", value)
                           + b"\r\n--" + B + b"--\r\n")
            self.assertEqual(caught.exception.message, message)
        parts, _ = reader()
        with self.assertRaises(BodyError):
            parts.feed(Framing(B).head() + archive + field(b"checksum", good)
                       + field(b"checksum_archive", b"11" * 32) + b"\r\n--" + B + b"--\r\n")

    def test_other_parts_skipped(self) -> None:
        """
        Unknown parts (before or after the archive) are read and dropped.
        """
        archive = b"gz"
        digest = hashlib.sha256(archive).hexdigest().encode()
        data = (b"--" + B + b'\r\nContent-Disposition: form-data; name="hello"\r\n\r\nworld'
                + b"\r\n" + Framing(B).head() + archive + field(b"note", b"x" * 5000)
                + field(b"checksum", digest) + b"\r\n--" + B + b"--\r\n")
        parts, collect = reader()
        self.assertTrue(parts.feed(data))
        self.assertEqual(collect.archive, archive)

    def test_two_archives(self) -> None:
        """
        A second archive part is refused.
        """
        head = Framing(B).head()
        parts, _ = reader()
        with self.assertRaises(BodyError):
            parts.feed(head + b"a" + b"\r\n" + head + b"b")

    def test_epilogue_counted(self) -> None:
        """
        Bytes after the closing delimiter are counted and dropped.
        """
        archive = b"gz"
        parts, collect = reader()
        self.assertTrue(parts.feed(body(Framing(B), archive, hashlib.sha256(archive).hexdigest())
                                   + b"junk"))
        parts.feed(b"more" * 100)
        self.assertEqual(parts.epilogue, 400)
        self.assertEqual(collect.archive, archive)

    def test_garbage(self) -> None:
        """
        A body that is not multipart is a 400 ``BodyError``, never a crash.
        """
        parts, _ = reader()
        with self.assertRaises(BodyError) as caught:
            parts.feed(b"--" + B + b"\r\nno colon here\r\n\r\n")
        self.assertEqual(caught.exception.status, 400)

    def test_multipart_internals(self) -> None:
        """
        The ``multipart`` internals ``closing_delimiter_read`` relies on: a module-level
        ``_COMPLETE`` state the parser enters at the closing delimiter without being closed.
        """
        self.assertTrue(hasattr(multipart, "_COMPLETE"))
        parser = multipart.PushMultipartParser(b"x")
        list(parser.parse(b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--x--\r\n"))
        self.assertFalse(parser.closed)
        self.assertTrue(closing_delimiter_read(parser))
