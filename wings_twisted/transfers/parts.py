"""
Reading the multipart body of an incoming transfer as it arrives (transfers.md §4.3): part order,
the archive's hash, the checksum parts.  Pure: no Twisted, no I/O.

`PartReader.feed` takes the body in any pieces (it keeps only what could be a split delimiter)
and:

* ``archive``: hashes every byte of the part body (SHA-256: exactly the bytes between the part's
  blank line and the CRLF of the next delimiter; the headers and delimiters are never hashed) and
  hands it to the sink ``on_archive`` gave; a second archive part is refused;
* ``checksum`` and every name starting with ``checksum_archive`` (Pelican): refused before the
  archive part ended (``archive must be sent before the checksum``, upstream's text); at most
  1 KiB; ASCII whitespace trimmed; hexadecimal in either case; must equal the digest
  (``checksums don't match``); each one that matches counts in ``verified``;
* anything else: skipped (its content read and dropped), as upstream;
* after the closing delimiter an archive and a verified checksum are required
  (``missing archive or checksum``); bytes after it are counted in ``epilogue`` and dropped.

Every refusal raises `BodyError` (400).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Callable

import multipart
from multipart import MultipartError, MultipartSegment, PushMultipartParser

from .framing import ARCHIVE_PART, CHECKSUM_ARCHIVE_PART, CHECKSUM_PART

__all__ = ["BodyError", "CHECKSUM_LIMIT", "PartReader"]

#: Largest checksum part read.
CHECKSUM_LIMIT = 1024

ORDER = "archive must be sent before the checksum"
TWO_ARCHIVES = "The transfer body holds more than one archive part."
BAD_CHECKSUM = "The checksum part is not a hexadecimal SHA-256 digest."
MISMATCH = "checksums don't match"
MISSING = "missing archive or checksum"
BAD_BODY = "The transfer body is not a valid multipart form: {}."

_HEX = re.compile(rb"[0-9A-Fa-f]+")
_CHECKSUM = "checksum"


#: The parser's state once the closing delimiter was read (``multipart`` 2.x keeps it private and
#: only sets ``closed`` when asked to close; ``tests/unit/test_transfer_parts.py`` pins it).
_COMPLETE = getattr(multipart, "_COMPLETE", None)


def closing_delimiter_read(parser: PushMultipartParser) -> bool:
    """
    Whether ``parser`` has read the closing delimiter.
    """
    return parser.closed or (_COMPLETE is not None and getattr(parser, "_state", None) is _COMPLETE)


class BodyError(Exception):
    """
    The body breaks the rules of the module docstring: 400 with ``message``.
    """

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PartReader:
    """
    The parts of one transfer body; see the module docstring.

    :param on_archive: called when the archive part starts; returns where its bytes go.
    :param on_archive_end: called with the digest (lower-case hex) when the archive part ended.
    """

    def __init__(self, boundary: bytes, *, on_archive: Callable[[], Callable[[bytes], None]],
                 on_archive_end: Callable[[str], None]) -> None:
        self._parser = PushMultipartParser(boundary, header_charset="latin-1",
                                           max_header_count=16)
        self._on_archive = on_archive
        self._on_archive_end = on_archive_end
        self._part: str | None = None
        self._archive_write: Callable[[bytes], None] | None = None
        self._archive_started = False
        self._hash = hashlib.sha256()
        self._checksum = bytearray()
        #: Whether the archive part ended, its digest, and its size.
        self.archive_done = False
        self.digest: str | None = None
        self.archive_bytes = 0
        #: Checksum parts that matched the digest.
        self.verified = 0
        #: Whether the closing delimiter was read, and the bytes after it.
        self.complete = False
        self.epilogue = 0

    def feed(self, chunk: bytes) -> bool:
        """
        The next bytes of the body; ``True`` once the closing delimiter was read and the checks
        after it passed.

        :raises BodyError: at the first broken rule (the reader is unusable afterwards).
        """
        if self.complete:
            self.epilogue += len(chunk)
            return True
        try:
            for event in self._parser.parse(chunk):
                self._event(event)
        except MultipartError as e:
            raise BodyError(BAD_BODY.format(str(e).rstrip(".") or "parse error")) from None
        if closing_delimiter_read(self._parser):
            self.complete = True
            if not (self.archive_done and self.verified):
                raise BodyError(MISSING)
        return self.complete

    def _event(self, event: Any) -> None:
        if isinstance(event, MultipartSegment):
            self._start(event.name or "")
        elif event is None:
            self._end()
        elif self._part == ARCHIVE_PART:
            self._hash.update(event)
            self.archive_bytes += len(event)
            assert self._archive_write is not None
            self._archive_write(event)
        elif self._part == _CHECKSUM:
            self._checksum += event
            if len(self._checksum) > CHECKSUM_LIMIT:
                raise BodyError(BAD_CHECKSUM)

    def _start(self, name: str) -> None:
        if name == ARCHIVE_PART:
            if self._archive_started:
                raise BodyError(TWO_ARCHIVES)
            self._archive_started = True
            self._part = ARCHIVE_PART
            self._archive_write = self._on_archive()
        elif name == CHECKSUM_PART or name.startswith(CHECKSUM_ARCHIVE_PART):
            if not self.archive_done:
                raise BodyError(ORDER)
            self._part = _CHECKSUM
            self._checksum = bytearray()
        else:
            self._part = None

    def _end(self) -> None:
        part, self._part = self._part, None
        if part == ARCHIVE_PART:
            self.archive_done = True
            self.digest = self._hash.hexdigest()
            self._archive_write = None
            self._on_archive_end(self.digest)
        elif part == _CHECKSUM:
            value = bytes(self._checksum).strip(b" \t\r\n\f\v")
            if not _HEX.fullmatch(value):
                raise BodyError(BAD_CHECKSUM)
            if value.decode("ascii").lower() != self.digest:
                raise BodyError(MISMATCH)
            self.verified += 1
