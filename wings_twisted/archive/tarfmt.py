"""
The tar header format: building the headers of the archives this daemon writes, and reading the
headers of whatever archive a user uploads.

Writing (``backups.md`` §5.1): POSIX ustar headers, with a PAX extended header only for a field that
ustar cannot hold — a name that no ``prefix``/``name`` split fits, a non-ASCII name or link text, a
size of 8 GiB or more, a negative or huge modification time.  No GNU long-name headers, no hard-link
entries, no fractional times, owner names empty.  The archive ends with two zero blocks and is not
padded to a 10 KiB record (as Go's writer; readers do not care).

Reading (``backups.md`` §5.5): ustar, PAX (``x`` per entry, ``g`` global: its ``path``/``size``
records are honoured the way ``tar`` does only for ``x``; a global header is skipped) and GNU
(``L``/``K`` long names) headers, octal or base-256 numbers, through `tarfile.TarInfo.frombuf`
for the 512-byte block itself.  Everything here is pure: bytes in, values out.
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass

__all__ = [
    "BLOCK",
    "END_OF_ARCHIVE",
    "DIRTYPE",
    "REGTYPE",
    "SYMTYPE",
    "Header",
    "HeaderError",
    "encode_header",
    "padding",
    "parse_header",
    "parse_pax",
]

BLOCK = 512
#: Two zero blocks close an archive.
END_OF_ARCHIVE = bytes(2 * BLOCK)
REGTYPE = b"0"
SYMTYPE = b"2"
DIRTYPE = b"5"
PAXTYPE = b"x"

_NAME = 100
_PREFIX = 155
_MAX_SIZE = 8 ** 11          # 12-byte field: 11 octal digits
_MAX_ID = 8 ** 7             # 8-byte field: 7 octal digits
_ZERO_BLOCK = bytes(BLOCK)


class HeaderError(Exception):
    """
    A header block that is not a tar header (bad checksum, garbage), or a PAX record that cannot
    be parsed.
    """


def padding(size: int) -> int:
    """
    The zero bytes that follow ``size`` bytes of content up to the next block.
    """
    return -size % BLOCK


def _octal(value: int, width: int) -> bytes:
    # width - 1 digits and a NUL, as Go writes them.
    return b"%0*o\x00" % (width - 1, value)


def _split(name: bytes) -> tuple[bytes, bytes] | None:
    """
    ``(prefix, name)`` fields for a name longer than the name field, or ``None`` when no split at
    a ``/`` fits both fields.
    """
    if len(name) <= _NAME:
        return b"", name
    start = len(name) - _NAME - 1
    index = name.find(b"/", max(start, 0))
    while 0 < index <= _PREFIX:
        if len(name) - index - 1 <= _NAME and index < len(name) - 1:
            return name[:index], name[index + 1:]
        index = name.find(b"/", index + 1)
    return None


def _record(key: str, value: bytes) -> bytes:
    body = b" " + key.encode("ascii") + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return str(length).encode("ascii") + body


def _block(name: bytes, prefix: bytes, mode: int, uid: int, gid: int, size: int, mtime: int,
           kind: bytes, linkname: bytes) -> bytes:
    head = b"".join((
        name.ljust(_NAME, b"\x00"),
        _octal(mode, 8), _octal(uid, 8), _octal(gid, 8),
        _octal(size, 12), _octal(mtime, 12),
        b"        ",
        kind,
        linkname.ljust(_NAME, b"\x00"),
        b"ustar\x0000",
        bytes(32), bytes(32),            # uname, gname: empty (backups.md §5.2)
        _octal(0, 8), _octal(0, 8),      # devmajor, devminor
        prefix.ljust(_PREFIX, b"\x00"),
        bytes(12),
    ))
    checksum = b"%06o\x00 " % sum(head)
    return head[:148] + checksum + head[156:]


def encode_header(name: str, *, kind: bytes, mode: int, size: int = 0, mtime: int = 0,
                  uid: int = 0, gid: int = 0, linkname: str = "") -> bytes:
    """
    The header block(s) of one entry: one ustar block, preceded by a PAX header only where a
    field does not fit.

    :param name: the member name (directories end with ``/``); undecodable bytes are kept as
        surrogate escapes and written back as the bytes they were.
    :param mode: ``st_mode & 0o7777``.
    :param mtime: whole seconds.
    """
    raw_name = os.fsencode(name)
    raw_link = os.fsencode(linkname)
    pax: list[bytes] = []
    split = _split(raw_name) if raw_name.isascii() else None
    if split is None:
        pax.append(_record("path", raw_name))
        split = b"", _ascii_stub(raw_name)
    if not raw_link.isascii() or len(raw_link) > _NAME:
        pax.append(_record("linkpath", raw_link))
        raw_link = _ascii_stub(raw_link)
    if not 0 <= size < _MAX_SIZE:
        pax.append(_record("size", b"%d" % size))
        size_field = 0
    else:
        size_field = size
    if not 0 <= mtime < _MAX_SIZE:
        pax.append(_record("mtime", b"%d" % mtime))
        mtime_field = 0
    else:
        mtime_field = mtime
    ids = []
    for key, value in (("uid", uid), ("gid", gid)):
        if not 0 <= value < _MAX_ID:
            pax.append(_record(key, b"%d" % value))
            value = 0
        ids.append(value)
    prefix, short = split
    block = _block(short, prefix, mode, ids[0], ids[1], size_field, mtime_field, kind, raw_link)
    if not pax:
        return block
    if any(not _is_utf8(r) for r in pax):
        pax.insert(0, _record("hdrcharset", b"BINARY"))
    records = b"".join(pax)
    stub = b"PaxHeaders.0/" + _ascii_stub(os.path.basename(raw_name.rstrip(b"/")))[:_NAME - 13]
    extended = _block(stub, b"", 0o644, 0, 0, len(records), mtime_field, PAXTYPE, b"")
    return extended + records + bytes(padding(len(records))) + block


def _ascii_stub(raw: bytes) -> bytes:
    return raw.decode("ascii", "replace").encode("ascii", "replace")[:_NAME]


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@dataclass
class Header:
    """
    One header block as read, before PAX or GNU long-name records are applied.
    """

    name: str
    kind: bytes
    size: int
    mode: int
    mtime: float
    linkname: str


def parse_header(block: bytes) -> Header | None:
    """
    Parse one 512-byte block; ``None`` for a zero block (the end of the archive).

    :raises HeaderError: not a tar header.
    """
    if block == _ZERO_BLOCK:
        return None
    try:
        info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError as e:
        raise HeaderError(str(e)) from None
    kind = info.type or REGTYPE
    if kind == b"\x00":
        kind = REGTYPE
    return Header(info.name, kind, info.size, info.mode, info.mtime, info.linkname)


def parse_pax(data: bytes) -> dict[str, bytes]:
    """
    The records of a PAX extended header, values as raw bytes.

    :raises HeaderError: a malformed record.
    """
    records: dict[str, bytes] = {}
    position = 0
    while position < len(data):
        if data[position] == 0:
            break
        space = data.find(b" ", position)
        if space < 0:
            raise HeaderError("bad PAX record")
        try:
            length = int(data[position:space])
        except ValueError:
            raise HeaderError("bad PAX record length") from None
        end = position + length
        if length <= 0 or end > len(data) or data[end - 1:end] != b"\n":
            raise HeaderError("bad PAX record length")
        key, equals, value = data[space + 1:end - 1].partition(b"=")
        if not equals:
            raise HeaderError("bad PAX record")
        records[key.decode("utf-8", "replace")] = value
        position = end
    return records
