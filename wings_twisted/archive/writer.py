"""
Writing tar streams: `TarWriter` turns members (directories, symlinks, open regular files) into tar
bytes for any sink, and `write_tar_gz` drives it over a walk of a volume (`archive.walk`) into a
`GzipWriter`.

Regular files are stored from the ``fstat`` of the descriptor already open (``backups.md`` §5.3):
exactly ``st_size`` bytes are copied — a file that grew is cut there, one that shrank is padded
with zeros and logged — so the header never lies about the content.  Contents are read in 1 MiB
pieces (``readv`` into one reused buffer); small members are gathered into one buffer before they
are handed on, so that the compressor sees few, large writes.  Nothing holds a whole file.

Pure and blocking: no Twisted; runs in a worker thread.  `Cancelled` is raised between members
and between pieces of a large file once the ``cancel`` event is set.
"""

from __future__ import annotations

import os
import stat as _stat
import threading
from typing import Callable

from twisted.logger import Logger

from .tarfmt import DIRTYPE, END_OF_ARCHIVE, REGTYPE, SYMTYPE, encode_header, padding

__all__ = ["Cancelled", "TarWriter"]

log = Logger()

_PIECE = 1024 * 1024
_GATHER = 256 * 1024
_ZEROS = bytes(_PIECE)


class Cancelled(Exception):
    """
    The archive job was stopped (client gone, transfer cancelled, daemon shutting down).
    """


class TarWriter:
    """
    A tar stream written to ``out`` in pieces.

    :param out: receives the tar bytes, in order (a `GzipWriter`'s ``write``...); it must be done
        with what it is handed when it returns (large pieces are views of a reused buffer).
    :param cancel: when set, the next member or piece raises `Cancelled`.
    """

    def __init__(self, out: Callable[[bytes | bytearray | memoryview], object], *,
                 cancel: threading.Event | None = None) -> None:
        self._out = out
        self._cancel = cancel
        self._gathered = bytearray()
        self._buffer = bytearray(_PIECE)
        #: Members written.
        self.members = 0
        #: Bytes of file contents written (headers and padding excluded; ``backups.md`` §5.4).
        self.content_bytes = 0

    def _check(self) -> None:
        if self._cancel is not None and self._cancel.is_set():
            raise Cancelled()

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        self._gathered += data
        if len(self._gathered) >= _GATHER:
            self._flush()

    def _flush(self) -> None:
        if self._gathered:
            data, self._gathered = self._gathered, bytearray()
            self._out(data)

    def add_directory(self, name: str, st: os.stat_result) -> None:
        """
        A directory member ``name/`` with the mode and mtime of ``st``.
        """
        self._check()
        self._write(encode_header(name.rstrip("/") + "/", kind=DIRTYPE,
                                  mode=_stat.S_IMODE(st.st_mode), mtime=int(st.st_mtime)))
        self.members += 1

    def add_symlink(self, name: str, target: str, st: os.stat_result) -> None:
        """
        A symlink member holding its target text as stored.
        """
        self._check()
        self._write(encode_header(name, kind=SYMTYPE, mode=_stat.S_IMODE(st.st_mode),
                                  mtime=int(st.st_mtime), linkname=target))
        self.members += 1

    def add_file(self, name: str, fd: int, st: os.stat_result) -> None:
        """
        A regular-file member: the header from ``st`` (the descriptor's ``fstat``), then exactly
        ``st_size`` bytes read from ``fd``'s current position.
        """
        self._check()
        size = st.st_size
        self._write(encode_header(name, kind=REGTYPE, mode=_stat.S_IMODE(st.st_mode), size=size,
                                  mtime=int(st.st_mtime)))
        remaining = size
        view = memoryview(self._buffer)
        while remaining:
            want = min(remaining, _PIECE)
            got = os.readv(fd, [view[:want]])
            if got == 0:
                log.warn("{name} shrank while it was archived: {missing} bytes padded with zeros",
                         name=name, missing=remaining)
                self._pad(remaining)
                self.content_bytes += remaining
                remaining = 0
                break
            remaining -= got
            if got >= _GATHER:
                self._flush()
                self._out(view[:got])
            else:
                self._write(view[:got])
            # Counted per piece: a transfer's progress line moves inside a large file too.
            self.content_bytes += got
            self._check()
        tail = padding(size)
        if tail:
            self._write(_ZEROS[:tail])
        self.members += 1

    def _pad(self, count: int) -> None:
        while count:
            piece = min(count, _PIECE)
            self._write(_ZEROS[:piece])
            count -= piece

    def close(self) -> None:
        """
        The end-of-archive blocks; everything gathered is handed on.
        """
        self._write(END_OF_ARCHIVE)
        self._flush()

