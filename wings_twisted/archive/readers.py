"""
Reading the archives users upload (``api.md`` §5.9): what format a file is in, and its entries.

`open_archive` identifies a format by content first (magic numbers; for a compressed stream, whether
what it holds starts with a tar header) and by name only where content cannot tell (an empty tar):

| content | read as |
| --- | --- |
| ``PK\\x03\\x04`` / ``PK\\x05\\x06`` (zip, jar) | `zipfile`, entries in central-directory order |
| gzip, bzip2, xz, Zstandard around a tar | the tar reader over the decompressing `Source` |
| gzip, bzip2, xz, Zstandard around anything else | one file: the archive's name without the compression suffix |
| ustar / GNU / v7 tar header | the tar reader |
| 7-zip | ``py7zr`` (pushes contents into the extractor) |
| RAR | refused with `Unsupported` (no pure-Python reader exists: every one runs ``unrar``) |
| anything else | `UnknownFormat` |

An `Entry` describes one member (its name as stored, kind, declared size, mode, mtime) and reads its
content in bounded pieces; nothing is ever read whole.  Declared sizes are not trusted by the
extractor: it counts what it writes.  Entries are yielded lazily and a member's content must be read
before the next entry is asked for (streams cannot go back).  `Archive.entries` may be called again
for a second pass (the quota pre-walk of §5.9 step 3): every pass reads the file from its start
with ``pread``.

Pure and blocking: no Twisted.
"""

from __future__ import annotations

import os
import stat as _stat
import zipfile
import zlib
from typing import Callable, Iterator

from .codecs import (Damaged, FdSource, ReadAhead, Source, bzip2_source, gzip_source, xz_source,
                     zstd_source)
from .entries import Archive, Entry, Kind, UnknownFormat, Unsupported, nothing
from .tarfmt import BLOCK, DIRTYPE, REGTYPE, SYMTYPE, HeaderError, padding, parse_header, \
    parse_pax

__all__ = ["RAR_REFUSED", "Archive", "Entry", "Kind", "UnknownFormat", "Unsupported",
           "open_archive", "single_file_name", "tar_entries"]

#: Largest PAX or GNU long-name header accepted (they hold names, not content).
MAX_META = 1024 * 1024
_PIECE = 1024 * 1024


# -- tar ---------------------------------------------------------------------------------------


class _Stream:
    """
    Exact and bounded reads over a `Source`, with a small look-ahead buffer.
    """

    def __init__(self, source: Source) -> None:
        self._source = source
        self._buffer = b""
        self._offset = 0

    def read(self, size: int) -> bytes:
        """
        At most ``size`` bytes.
        """
        if self._offset < len(self._buffer):
            data = self._buffer[self._offset:self._offset + size]
            self._offset += len(data)
            return data
        return self._source.read(size)

    def exact(self, size: int) -> bytes:
        """
        ``size`` bytes, or fewer only at the end of the stream.
        """
        pieces = []
        wanted = size
        while wanted:
            data = self.read(min(wanted, _PIECE))
            if not data:
                break
            pieces.append(data)
            wanted -= len(data)
        return b"".join(pieces)

    def skip(self, size: int) -> None:
        """
        Read and drop ``size`` bytes; `Damaged` when the stream ends first.
        """
        while size:
            data = self.read(min(size, _PIECE))
            if not data:
                raise Damaged("the archive ends inside an entry")
            size -= len(data)

    def push_back(self, data: bytes) -> None:
        """
        Make ``data`` the next bytes read.
        """
        self._buffer = data + self._buffer[self._offset:]
        self._offset = 0


class _Content:
    """
    The content of one tar member: at most ``size`` bytes, `Damaged` if the stream ends first.
    """

    def __init__(self, stream: _Stream, size: int) -> None:
        self._stream = stream
        self.left = size

    def read(self, size: int) -> bytes:
        if not self.left:
            return b""
        data = self._stream.read(min(size, self.left))
        if not data:
            raise Damaged("the archive ends inside an entry")
        self.left -= len(data)
        return data


def _tar_kind(kind: bytes) -> Kind:
    if kind in (REGTYPE, b"7"):
        return Kind.FILE
    if kind == DIRTYPE:
        return Kind.DIRECTORY
    if kind == SYMTYPE:
        return Kind.SYMLINK
    if kind == b"1":
        return Kind.HARDLINK
    return Kind.OTHER


def _meta(stream: _Stream, size: int) -> bytes:
    if not 0 <= size <= MAX_META:
        raise Damaged("an extended header is too large")
    data = stream.exact(size)
    if len(data) != size:
        raise Damaged("the archive ends inside a header")
    stream.skip(padding(size))
    return data


def tar_entries(source: Source) -> Iterator[Entry]:
    """
    The entries of a tar stream (ustar, PAX, GNU, v7), read sequentially from ``source``.

    The stream may end without the end-of-archive blocks.  Global PAX headers are skipped.
    :raises Damaged: a header that is not a tar header, or the stream ends inside an entry.
    """
    stream = _Stream(source)
    pax: dict[str, bytes] = {}
    long_name: bytes | None = None
    while True:
        block = stream.exact(BLOCK)
        if not block:
            return
        if len(block) < BLOCK:
            raise Damaged("the archive ends inside a header")
        try:
            header = parse_header(block)
        except HeaderError as e:
            raise Damaged(str(e)) from None
        if header is None:
            return
        if header.kind == b"x":
            try:
                pax = parse_pax(_meta(stream, header.size))
            except HeaderError as e:
                raise Damaged(str(e)) from None
            continue
        if header.kind == b"g":
            _meta(stream, header.size)
            continue
        if header.kind in (b"L", b"K"):
            value = _meta(stream, header.size).split(b"\x00", 1)[0]
            if header.kind == b"L":
                long_name = value
            # A K record (a long link target) is read and dropped: links are never extracted.
            continue
        name = header.name
        if long_name is not None:
            name = os.fsdecode(long_name)
        if "path" in pax:
            name = os.fsdecode(pax["path"])
        size = header.size
        mtime: float = header.mtime
        try:
            if "size" in pax:
                size = int(pax["size"])
            if "mtime" in pax:
                mtime = float(pax["mtime"])
        except ValueError:
            raise Damaged("a bad PAX record") from None
        kind = _tar_kind(header.kind)
        if any(key.startswith("GNU.sparse") for key in pax):
            kind = Kind.OTHER
        if kind is Kind.DIRECTORY or size < 0:
            size = max(size, 0)
        pax, long_name = {}, None
        content = _Content(stream, size)
        yield Entry(name, kind, size, header.mode, mtime, content.read)
        stream.skip(content.left + padding(size))


class _TarArchive:
    """
    A tar stream, optionally inside a compression layer.
    """

    indexed = False

    def __init__(self, fd: int, layer: Callable[[Source], Source] | None) -> None:
        self._fd = fd
        self._layer = layer

    def entries(self) -> Iterator[Entry]:
        if self._layer is None:
            yield from tar_entries(FdSource(self._fd))
            return
        source = ReadAhead(self._layer(FdSource(self._fd)))
        try:
            yield from tar_entries(source)
        finally:
            source.close()

    def sizes(self) -> Iterator[int]:
        for entry in self.entries():
            if entry.kind is Kind.FILE:
                yield entry.size

    def close(self) -> None:
        pass


class _SingleFile:
    """
    A compressed stream that holds one file (``x.log.gz`` → ``x.log``).
    """

    indexed = False

    def __init__(self, fd: int, layer: Callable[[Source], Source], name: str) -> None:
        self._fd = fd
        self._layer = layer
        self._name = name

    def entries(self) -> Iterator[Entry]:
        source = ReadAhead(self._layer(FdSource(self._fd)))
        try:
            yield Entry(self._name, Kind.FILE, -1, -1, None, source.read)
        finally:
            source.close()

    def sizes(self) -> Iterator[int]:
        # The size is only known by decompressing: the extractor checks the quota as it writes,
        # which ends the same way (400, nothing left behind) without decompressing twice.
        return iter(())

    def close(self) -> None:
        pass


# -- zip ---------------------------------------------------------------------------------------


def _zip_mtime(info: zipfile.ZipInfo) -> float:
    extra = info.extra
    position = 0
    while position + 4 <= len(extra):
        tag = int.from_bytes(extra[position:position + 2], "little")
        length = int.from_bytes(extra[position + 2:position + 4], "little")
        body = extra[position + 4:position + 4 + length]
        if tag == 0x5455 and len(body) >= 5 and body[0] & 1:
            return float(int.from_bytes(body[1:5], "little", signed=True))
        position += 4 + length
    # MS-DOS times carry no zone: read as UTC, as Go does.
    import calendar
    try:
        return float(calendar.timegm(info.date_time + (0, 0, 0)))
    except (ValueError, OverflowError):
        return 0.0


def _zip_entry_kind(info: zipfile.ZipInfo) -> tuple[Kind, int]:
    unix = info.external_attr >> 16 if info.create_system == 3 else 0
    if unix:
        kind_bits = _stat.S_IFMT(unix)
        if _stat.S_ISLNK(unix):
            return Kind.SYMLINK, _stat.S_IMODE(unix)
        if _stat.S_ISDIR(unix) or info.filename.endswith("/"):
            return Kind.DIRECTORY, _stat.S_IMODE(unix)
        if kind_bits in (0, _stat.S_IFREG):
            return Kind.FILE, _stat.S_IMODE(unix)
        return Kind.OTHER, _stat.S_IMODE(unix)
    if info.filename.endswith("/") or info.external_attr & 0x10:
        return Kind.DIRECTORY, -1
    return Kind.FILE, -1


_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError)


class _ZipArchive:
    """
    A zip (or jar) file, read through its central directory.
    """

    indexed = True

    def __init__(self, fd: int) -> None:
        self._file = open(fd, "rb", closefd=False)
        try:
            self._zip = zipfile.ZipFile(self._file)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as e:
            self._file.close()
            raise Damaged(str(e)) from None

    def sizes(self) -> Iterator[int]:
        for info in self._zip.infolist():
            if _zip_entry_kind(info)[0] is Kind.FILE:
                yield info.file_size

    def entries(self) -> Iterator[Entry]:
        for info in self._zip.infolist():
            kind, mode = _zip_entry_kind(info)
            if kind is not Kind.FILE:
                yield Entry(info.filename, kind, 0, mode, _zip_mtime(info), nothing)
                continue
            if info.flag_bits & 0x1:
                raise Unsupported("Encrypted archives cannot be extracted.")
            try:
                handle = self._zip.open(info)
            except NotImplementedError as e:
                raise Unsupported(str(e)) from None
            except _ZIP_ERRORS as e:
                raise Damaged(str(e)) from None
            with handle:
                yield Entry(info.filename, kind, info.file_size, mode, _zip_mtime(info),
                            _guarded(handle.read))

    def close(self) -> None:
        self._zip.close()
        self._file.close()


def _guarded(read: Callable[[int], bytes]) -> Callable[[int], bytes]:
    def guarded(size: int) -> bytes:
        try:
            return read(size)
        except _ZIP_ERRORS as e:
            raise Damaged(str(e)) from None
        except NotImplementedError as e:
            raise Unsupported(str(e)) from None
    return guarded


# -- identification ----------------------------------------------------------------------------

_LAYERS: tuple[tuple[bytes, Callable[[Source], Source], tuple[str, ...]], ...] = (
    (b"\x1f\x8b", gzip_source, (".tar.gz", ".tgz", ".gz", ".gzip")),
    (b"BZh", bzip2_source, (".tar.bz2", ".tbz2", ".tbz", ".bz2", ".bz")),
    (b"\xfd7zXZ\x00", xz_source, (".tar.xz", ".txz", ".xz")),
    (b"\x28\xb5\x2f\xfd", zstd_source, (".tar.zst", ".tzst", ".tar.zstd", ".zst", ".zstd")),
)
SEVEN_ZIP_MAGIC = b"7z\xbc\xaf\x27\x1c"
RAR_MAGIC = b"Rar!\x1a\x07"
RAR_REFUSED = "RAR archives cannot be extracted on this node; use zip, 7z or tar.gz instead."


def _is_tar(head: bytes) -> bool:
    if len(head) < BLOCK:
        return False
    try:
        return parse_header(head[:BLOCK]) is not None
    except HeaderError:
        return False


def _is_empty_tar(head: bytes, name: str) -> bool:
    return head[:BLOCK] == bytes(BLOCK) and name.lower().endswith((".tar", ".tar.gz", ".tgz"))


def single_file_name(name: str, suffixes: tuple[str, ...]) -> str:
    """
    The name a single compressed file extracts to: its own without the compression suffix
    (``.tgz`` → ``.tar``), else with ``.out`` appended.
    """
    lower = name.lower()
    for suffix in suffixes:
        if lower.endswith(suffix) and len(name) > len(suffix):
            stem = name[:-len(suffix)]
            if suffix.startswith(".t") and not suffix.startswith(".tar"):
                return stem + ".tar"
            return stem
    return name + ".out"


def open_archive(fd: int, name: str) -> Archive:
    """
    Identify the archive open on ``fd`` (named ``name``) and open it for reading.

    :raises UnknownFormat: not a format read here.
    :raises Unsupported: RAR.
    :raises Damaged: a zip whose directory cannot be read.
    """
    head = os.pread(fd, BLOCK + 8, 0)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _ZipArchive(fd)
    if head.startswith(SEVEN_ZIP_MAGIC):
        from .sevenzip import SevenZipArchive
        return SevenZipArchive(fd)
    if head.startswith(RAR_MAGIC):
        raise Unsupported(RAR_REFUSED)
    for magic, layer, suffixes in _LAYERS:
        if head.startswith(magic):
            try:
                inner = _Stream(layer(FdSource(fd))).exact(BLOCK)
            except Damaged:
                inner = b""
            if _is_tar(inner) or _is_empty_tar(inner, name):
                return _TarArchive(fd, layer)
            return _SingleFile(fd, layer, single_file_name(name, suffixes))
    if _is_tar(head) or _is_empty_tar(head, name):
        return _TarArchive(fd, None)
    raise UnknownFormat(name)

