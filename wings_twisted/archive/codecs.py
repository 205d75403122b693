"""
Compressed byte streams: the gzip writer of the archives this daemon makes, and the bounded
decompressing readers of the archives users upload.

**Writing.** `GzipWriter` turns the tar stream into one gzip member (``backups.md`` §5.1, one final
block, nothing after the trailer).  ``system.backups.compression_level`` picks the level
(`gzip_level`): ``none`` stores (level 0), ``best_compression`` is zlib's level 9, anything else
(``best_speed``, the default, and typos) is level 1.  Level 1 runs on ISA-L (the ``isal`` package):
on this project's 2-core reference machine its deflate is 5–10× faster than zlib's level 1 at a
similar ratio, which is what makes a single worker thread beat ``tar c | pigz -1`` (see
``bench/RESULTS.md``) while leaving the other core to the game servers.  ISA-L releases the GIL
while it compresses, so the reactor keeps answering.  Without ``isal`` zlib's level 1 is used.

**Reading.** Every reader is a `Source`: ``read(size)`` returns at most ``size`` bytes (``b""`` at the
end), so a decompression bomb can never expand more than one call's worth in memory.  gzip (several
members accepted, trailing zeros ignored), bzip2 and xz (several streams accepted) and Zstandard
(several frames).  Damaged input raises `Damaged`.

Pure and blocking: no Twisted.
"""

from __future__ import annotations

import bz2
import lzma
import os
import queue
import threading
import zlib
from typing import Any, Callable, Protocol, cast

_isal: Any
try:
    from isal import isal_zlib as _isal
except ImportError:  # pragma: no cover - the package is a dependency; this is the fallback
    _isal = None

__all__ = [
    "IN_CHUNK",
    "Damaged",
    "ReadAhead",
    "FdSource",
    "GzipWriter",
    "Source",
    "bzip2_source",
    "gzip_level",
    "gzip_source",
    "xz_source",
    "zstd_source",
]

#: Compressed bytes read from the archive at a time.
IN_CHUNK = 1024 * 1024
_OUT_CHUNK = 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZSTD_PIECE = 512
#: Pieces of `_AHEAD_PIECE` bytes a `ReadAhead` keeps ready (small pieces stay below glibc's
#: mmap threshold, so freed ones are reused instead of growing the heap).
_AHEAD = 8
_AHEAD_PIECE = 128 * 1024

_INFLATE_ERRORS: tuple[type[Exception], ...] = (zlib.error,)
if _isal is not None:
    _INFLATE_ERRORS = (zlib.error, cast("type[Exception]", _isal.error))


class Damaged(Exception):
    """
    The archive ends early or its compressed data is corrupt.
    """


class Source(Protocol):
    """
    A stream of bytes read in bounded pieces.
    """

    def read(self, size: int) -> bytes:
        """
        At most ``size`` bytes (at least one unless the stream has ended); ``b""`` at the end.
        """


def gzip_level(setting: str) -> int:
    """
    The gzip level of ``system.backups.compression_level`` (``backups.md`` §2).
    """
    if setting == "none":
        return 0
    if setting == "best_compression":
        return 9
    return 1


class GzipWriter:
    """
    Compress what is written into one gzip member handed to ``out`` in pieces of about 1 MiB.

    :param out: receives the compressed bytes (a file write, a hash-and-send...).
    :param level: 0 (stored), 1 (ISA-L when available) or 9 (zlib).
    """

    def __init__(self, out: Callable[[bytes], object], level: int) -> None:
        self._out = out
        if level == 1 and _isal is not None:
            self._compressor: Any = _isal.compressobj(1, zlib.DEFLATED, 31)
        else:
            self._compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
        self._pending: list[bytes] = []
        self._pending_size = 0
        #: Compressed bytes handed to ``out`` so far.
        self.written = 0
        #: Uncompressed bytes written so far.
        self.consumed = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """
        Compress ``data``.
        """
        self.consumed += len(data)
        compressed = self._compressor.compress(data)
        if compressed:
            self._pending.append(compressed)
            self._pending_size += len(compressed)
            if self._pending_size >= _OUT_CHUNK:
                self._emit()

    def close(self) -> None:
        """
        Finish the member (final block and trailer) and hand out everything left.
        """
        tail = self._compressor.flush()
        if tail:
            self._pending.append(tail)
            self._pending_size += len(tail)
        self._emit()

    def _emit(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending = []
        self._pending_size = 0
        self.written += len(data)
        self._out(data)


class FdSource:
    """
    An open file read from ``offset`` with ``pread`` (its own position: two sources over one
    descriptor do not disturb each other).
    """

    def __init__(self, fd: int, offset: int = 0) -> None:
        self._fd = fd
        self._position = offset

    def read(self, size: int) -> bytes:
        """
        At most ``size`` bytes.
        """
        data = os.pread(self._fd, size, self._position)
        self._position += len(data)
        return data


class _ZlibStyle:
    """
    gzip members through a ``decompressobj`` (ISA-L's when available, zlib's otherwise).
    """

    def __init__(self, raw: Source) -> None:
        self._raw = raw
        self._module: Any = _isal if _isal is not None else zlib
        self._inflater = self._module.decompressobj(47)
        self._input = b""
        self._started = False
        self._ended = False

    def read(self, size: int) -> bytes:
        while not self._ended:
            inflater = self._inflater
            if inflater.eof:
                rest = inflater.unused_data or self._raw.read(IN_CHUNK)
                if len(rest) < 2 and rest:
                    rest += self._raw.read(IN_CHUNK)
                if not rest.startswith(_GZIP_MAGIC):
                    # The end, or trailing padding (zeros) that gzip(1) also ignores.
                    self._ended = True
                    break
                self._inflater = self._module.decompressobj(47)
                self._input = rest
                continue
            data = inflater.unconsumed_tail or self._input or self._raw.read(IN_CHUNK)
            self._input = b""
            if not data:
                raise Damaged("the compressed stream ends early")
            self._started = True
            try:
                out = inflater.decompress(data, size)
            except _INFLATE_ERRORS as e:
                raise Damaged(str(e)) from None
            if out:
                return bytes(out)
        return b""


class _BufferedStyle:
    """
    bzip2 / xz streams through a decompressor with ``needs_input`` (``bz2``, ``lzma``).
    """

    def __init__(self, raw: Source, make: Callable[[], Any], magic: bytes,
                 errors: tuple[type[Exception], ...]) -> None:
        self._raw = raw
        self._make = make
        self._magic = magic
        self._errors = errors
        self._decompressor = make()
        self._input = b""
        self._ended = False

    def read(self, size: int) -> bytes:
        while not self._ended:
            decompressor = self._decompressor
            if decompressor.eof:
                rest = self._next_stream(decompressor.unused_data)
                if not rest.startswith(self._magic):
                    self._ended = True
                    break
                self._decompressor = self._make()
                self._input = rest
                continue
            data = b""
            if decompressor.needs_input:
                data = self._input or self._raw.read(IN_CHUNK)
                self._input = b""
                if not data:
                    raise Damaged("the compressed stream ends early")
            try:
                out = decompressor.decompress(data, size)
            except self._errors as e:
                raise Damaged(str(e)) from None
            if out:
                return bytes(out)
        return b""


    def _next_stream(self, rest: bytes) -> bytes:
        # What follows a finished stream, past the zero padding xz allows between streams.
        while True:
            rest = rest.lstrip(b"\x00")
            if len(rest) >= len(self._magic):
                return rest
            more = self._raw.read(IN_CHUNK)
            if not more:
                return rest
            rest += more


class ReadAhead:
    """
    A `Source` decompressed ahead on a helper thread, so that decompression (which releases the
    GIL) overlaps with the writes of the extracting thread: on two cores that is most of the
    difference with ``tar xzf``, whose ``gzip -d`` runs in a process of its own.

    At most `_AHEAD` pieces of `_AHEAD_PIECE` bytes wait.  `close` stops the helper (it exits at its
    next piece); an error of the inner source is raised by the `read` that reaches it.
    """

    def __init__(self, inner: Source) -> None:
        self._inner = inner
        self._pieces: queue.Queue[bytes | BaseException] = queue.Queue(_AHEAD)
        self._stopped = threading.Event()
        self._current = b""
        self._offset = 0
        self._ended = False
        self._thread = threading.Thread(target=self._pump, name="archive-read-ahead",
                                        daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while not self._stopped.is_set():
            try:
                piece: bytes | BaseException = self._inner.read(_AHEAD_PIECE)
            except BaseException as e:
                piece = e
            while not self._stopped.is_set():
                try:
                    self._pieces.put(piece, timeout=0.5)
                    break
                except queue.Full:
                    continue
            if not isinstance(piece, bytes) or not piece:
                return

    def read(self, size: int) -> bytes:
        """
        At most ``size`` bytes.
        """
        if self._offset >= len(self._current):
            if self._ended:
                return b""
            piece = self._pieces.get()
            if isinstance(piece, BaseException):
                self._ended = True
                raise piece
            if not piece:
                self._ended = True
                return b""
            self._current, self._offset = piece, 0
        data = self._current[self._offset:self._offset + size]
        self._offset += len(data)
        return data

    def close(self) -> None:
        """
        Stop the helper thread and wait for it.
        """
        self._stopped.set()
        while self._thread.is_alive():
            try:
                self._pieces.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(0.05)


def gzip_source(raw: Source) -> Source:
    """
    The uncompressed bytes of a gzip stream (one or several members).
    """
    return _ZlibStyle(raw)


def bzip2_source(raw: Source) -> Source:
    """
    The uncompressed bytes of a bzip2 stream (one or several streams, as ``pbzip2`` writes).
    """
    return _BufferedStyle(raw, bz2.BZ2Decompressor, b"BZh", (OSError, ValueError, EOFError))


def xz_source(raw: Source) -> Source:
    """
    The uncompressed bytes of an xz stream (one or several streams, padding between them).
    """
    return _BufferedStyle(raw, lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ), b"\xfd7zXZ\x00",
                          (lzma.LZMAError, EOFError))


class _ZstdSource:
    """
    The uncompressed bytes of a Zstandard stream (every frame).

    ``zstandard`` offers no bounded decompression call and its stream reader ends quietly on a
    truncated frame, so the decompression object is fed `_ZSTD_PIECE` compressed bytes at a time
    (a block of at most 128 KiB needs at least 4 bytes, so one call expands to 16 MiB at most) and
    a stream that ends inside a frame is `Damaged`.
    """

    def __init__(self, raw: Source) -> None:
        import zstandard

        self._error = zstandard.ZstdError
        self._decompressor = zstandard.ZstdDecompressor()
        self._object = self._decompressor.decompressobj()
        self._raw = raw
        self._input = b""
        self._input_offset = 0
        self._output = b""
        self._output_offset = 0
        self._ended = False

    def _next_input(self) -> bytes:
        if self._input_offset >= len(self._input):
            self._input = self._raw.read(IN_CHUNK)
            self._input_offset = 0
        piece = self._input[self._input_offset:self._input_offset + _ZSTD_PIECE]
        self._input_offset += len(piece)
        return piece

    def read(self, size: int) -> bytes:
        while self._output_offset >= len(self._output):
            if self._ended:
                return b""
            if self._object.eof:
                rest = self._object.unused_data + self._input[self._input_offset:]
                self._input, self._input_offset = rest, 0
                if len(rest) < 4:
                    self._input += self._raw.read(IN_CHUNK)
                if not self._input.startswith(_ZSTD_MAGIC):
                    self._ended = True
                    return b""
                self._object = self._decompressor.decompressobj()
            piece = self._next_input()
            if not piece:
                raise Damaged("the compressed stream ends early")
            try:
                self._output = self._object.decompress(piece)
            except self._error as e:
                raise Damaged(str(e)) from None
            self._output_offset = 0
        data = self._output[self._output_offset:self._output_offset + size]
        self._output_offset += len(data)
        return data


def zstd_source(raw: Source) -> Source:
    """
    The uncompressed bytes of a Zstandard stream.
    """
    return _ZstdSource(raw)
