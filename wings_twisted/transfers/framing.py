"""
The multipart body of a transfer, byte for byte (transfers.md §3.4), and the reading of its
``Content-Type`` on the destination (§4.3).

With ``B`` the boundary (60 lower-case hex characters from 30 random bytes, as upstream) and CRLF
line ends, the source writes::

    "--" B CRLF
    "Content-Disposition: form-data; name=\\"archive\\"; filename=\\"archive.tar.gz\\"" CRLF
    "Content-Type: application/octet-stream" CRLF
    CRLF
    <the gzip stream>                                          (hashed: §3.4.2)
    CRLF "--" B CRLF
    "Content-Disposition: form-data; name=\\"checksum\\"" CRLF
    CRLF
    <64 lower-case hex>
    [CRLF "--" B CRLF
     "Content-Disposition: form-data; name=\\"checksum_archive\\"" CRLF
     CRLF
     <the same 64 hex>]                                        (system.transfers.send_checksum_archive)
    CRLF "--" B "--" CRLF

which is what Go's ``multipart.Writer`` produces for ``CreateFormFile("archive",
"archive.tar.gz")``, ``WriteField("checksum", …)`` and ``Close()`` (headers in sorted order, no
preamble, no epilogue).  `Framing` makes each piece; `body` joins them for tests and peers.
"""

from __future__ import annotations

import re
import secrets

__all__ = ["ARCHIVE_FILE", "ARCHIVE_PART", "CHECKSUM_ARCHIVE_PART", "CHECKSUM_PART",
           "Framing", "body", "multipart_boundary", "new_boundary"]

ARCHIVE_PART = "archive"
ARCHIVE_FILE = "archive.tar.gz"
CHECKSUM_PART = "checksum"
CHECKSUM_ARCHIVE_PART = "checksum_archive"
CRLF = b"\r\n"

#: RFC 2046 §5.1.1: 1 to 70 characters from this set, not ending with a space.
_BCHARS = re.compile(rb"^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$")


def new_boundary() -> bytes:
    """
    60 lower-case hex characters from 30 bytes of the system CSPRNG (upstream's shape).
    """
    return secrets.token_hex(30).encode("ascii")


class Framing:
    """
    The framing bytes of one transfer body around the archive stream.
    """

    def __init__(self, boundary: bytes | None = None, *, checksum_archive: bool = True) -> None:
        """
        :param boundary: given by tests and by a resumed push; a fresh `new_boundary` otherwise.
        :param checksum_archive: add the ``checksum_archive`` part Pelican destinations need.
        """
        self.boundary = boundary if boundary is not None else new_boundary()
        self.checksum_archive = checksum_archive

    @property
    def content_type(self) -> bytes:
        """
        The request's ``Content-Type`` (Go's ``FormDataContentType``).
        """
        return b"multipart/form-data; boundary=" + self.boundary

    def head(self) -> bytes:
        """
        Everything before the first archive byte.
        """
        return (b"--" + self.boundary + CRLF
                + b'Content-Disposition: form-data; name="archive"; filename="archive.tar.gz"'
                + CRLF + b"Content-Type: application/octet-stream" + CRLF + CRLF)

    def field(self, name: str, value: bytes) -> bytes:
        """
        A simple form field after a part: its delimiter, headers and value.
        """
        return (CRLF + b"--" + self.boundary + CRLF
                + b'Content-Disposition: form-data; name="' + name.encode("ascii") + b'"'
                + CRLF + CRLF + value)

    def tail(self, digest: str) -> bytes:
        """
        Everything after the last archive byte: the checksum part(s) and the closing delimiter.

        :param digest: the SHA-256 of the archive part body, as lower-case hex.
        """
        value = digest.encode("ascii")
        pieces = [self.field(CHECKSUM_PART, value)]
        if self.checksum_archive:
            pieces.append(self.field(CHECKSUM_ARCHIVE_PART, value))
        pieces.append(self.closing())
        return b"".join(pieces)

    def closing(self) -> bytes:
        """
        The closing delimiter.
        """
        return CRLF + b"--" + self.boundary + b"--" + CRLF


def body(framing: Framing, archive: bytes, digest: str) -> bytes:
    """
    A whole body for an archive held in memory (tests, small peers).
    """
    return framing.head() + archive + framing.tail(digest)


def multipart_boundary(content_type: bytes | None) -> bytes | None:
    """
    The boundary of a ``multipart/*`` content type (any subtype, parameters in any order, the
    value quoted or not), or ``None`` when the header is missing, not multipart, or carries no
    valid RFC 2046 boundary.
    """
    if not content_type:
        return None
    kind, _, rest = content_type.partition(b";")
    if not kind.strip().lower().startswith(b"multipart/"):
        return None
    for parameter in rest.split(b";"):
        key, _, value = parameter.strip().partition(b"=")
        if key.strip().lower() != b"boundary":
            continue
        value = value.strip()
        if len(value) >= 2 and value[:1] == value[-1:] == b'"':
            value = value[1:-1]
        return value if _BCHARS.match(value) else None
    return None
