"""
Line-level reading and editing of a volume file (``api.md`` §8.6–§8.10, fork):
the ``lines``, ``metadata``, ``replace-line``, ``insert-lines`` and
``delete-lines`` routes.

Line model (project): lines are separated by ``\\n``; a ``\\r`` right before
the ``\\n`` belongs to the terminator (CRLF); a lone ``\\r`` is content; the
last line counts without a terminator; a trailing terminator does not start
an extra empty line; an empty file has 0 lines.  Content is decoded as
UTF-8 with replacement and cut at ``max_line_size`` bytes on a character
boundary when read.

Files are streamed, never loaded whole.  Reading keeps a sparse index of
line offsets (one every ``CHECKPOINT`` lines) per file identity and version
(device, inode, size, mtime), so a later read of a large log starts near its
first wanted line; ``caching=False`` turns that off.  Edits rewrite the file
through the volume's atomic write (temporary file beside it, renamed over
it: mode kept, owner the volume's), streaming from the original; the quota
is checked as the new content is written.

Every function is blocking and pure (no Twisted); the file is opened through
the sandboxed walk, never through a final symlink; denylisted paths are
refused.
"""

from __future__ import annotations

import codecs
import os
import threading
from dataclasses import dataclass
from typing import Iterator, Sequence

from .atomic import AtomicWrite
from .info import rfc3339
from .paths import clean_path
from .volume import Volume

READ_CHUNK = 256 * 1024
#: Lines between two cached offsets.
CHECKPOINT = 4096
_CACHE_SIZE = 256


class BadLines(ValueError):
    """
    Line numbers or contents the request may not use (400); ``str()`` says why.
    """


@dataclass(frozen=True)
class _Index:
    total: int
    #: offsets[k] is the byte offset of line k * CHECKPOINT + 1.
    offsets: tuple[int, ...]


_indexes: dict[tuple[int, int, int, int], _Index] = {}
_lock = threading.Lock()


def _raw_lines(fd: int, start_offset: int = 0) -> Iterator[tuple[int, bytes, bytes]]:
    """
    ``(offset, content, terminator)`` of every line from ``start_offset``.
    """
    offset = start_offset
    pending = b""
    while True:
        data = os.pread(fd, READ_CHUNK, offset + len(pending))
        if not data:
            break
        pending += data
        start = 0
        while True:
            newline = pending.find(b"\n", start)
            if newline < 0:
                break
            line = pending[start:newline]
            if line.endswith(b"\r"):
                yield offset + start, line[:-1], b"\r\n"
            else:
                yield offset + start, line, b"\n"
            start = newline + 1
        offset += start
        pending = pending[start:]
    if pending:
        yield offset, pending, b""


def _index(fd: int, st: os.stat_result, caching: bool) -> _Index:
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if caching:
        with _lock:
            found = _indexes.get(key)
        if found is not None:
            return found
    offsets = []
    total = 0
    for offset, _, _ in _raw_lines(fd):
        if total % CHECKPOINT == 0:
            offsets.append(offset)
        total += 1
    index = _Index(total, tuple(offsets))
    if caching:
        with _lock:
            if len(_indexes) >= _CACHE_SIZE:
                _indexes.clear()
            _indexes[key] = index
    return index


def _cut(content: bytes, limit: int) -> str:
    if len(content) > limit:
        content = content[:limit]
        # Back off to a character boundary.
        while content and (content[-1] & 0xC0) == 0x80:
            content = content[:-1]
        if content and content[-1] >= 0xC0:
            content = content[:-1]
    return content.decode("utf-8", "replace")


def read_lines(volume: Volume, path: str, start: int, end: int, *, max_line_size: int,
               caching: bool = True) -> tuple[int, list[tuple[int, str]]]:
    """
    ``(total lines, [(number, content), ...])`` for lines ``start``…``end``
    (1-based, inclusive) that exist.
    """
    fd, st = volume.open_read(path)
    try:
        index = _index(fd, st, caching)
        found: list[tuple[int, str]] = []
        if start > index.total:
            return index.total, found
        checkpoint = (start - 1) // CHECKPOINT
        number = checkpoint * CHECKPOINT + 1
        for _, content, _ in _raw_lines(fd, index.offsets[checkpoint]):
            if number > end:
                break
            if number >= start:
                found.append((number, _cut(content, max_line_size)))
            number += 1
        return index.total, found
    finally:
        os.close(fd)


def _encoding(fd: int, size: int) -> str:
    head = os.pread(fd, 4, 0)
    if head.startswith(b"\xef\xbb\xbf"):
        return "utf-8-bom"
    if head.startswith(b"\xff\xfe"):
        return "utf-16le"
    if head.startswith(b"\xfe\xff"):
        return "utf-16be"
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    try:
        while offset < size:
            data = os.pread(fd, READ_CHUNK, offset)
            if not data:
                break
            decoder.decode(data)
            offset += len(data)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return "unknown"
    return "utf-8"


def metadata(volume: Volume, path: str) -> dict[str, object]:
    """
    The ``metadata`` answer (§8.7) but for ``file``.
    """
    fd, st = volume.open_read(path)
    try:
        total = 0
        endings = set()
        for _, content, terminator in _raw_lines(fd):
            total += 1
            if terminator == b"\r\n":
                endings.add("CRLF")
            elif terminator == b"\n":
                endings.add("LF")
            if b"\r" in content:
                endings.add("CR")
        if not endings:
            ending = "none"
        elif len(endings) > 1:
            ending = "mixed"
        else:
            ending = endings.pop()
        return {"size": st.st_size, "total_lines": total, "encoding": _encoding(fd, st.st_size),
                "line_ending": ending, "created": rfc3339(st.st_ctime),
                "modified": rfc3339(st.st_mtime)}
    finally:
        os.close(fd)


def _rewrite(volume: Volume, path: str, edit: "_Edit") -> None:
    clean = clean_path(path)
    fd, _ = volume.open_read(clean)
    try:
        directory, _, name = clean.rpartition("/")
        with volume.begin_write(directory, name, check_denylist=False) as writer:
            edit.apply(_raw_lines(fd), writer)
            writer.commit()
    finally:
        os.close(fd)


class _Edit:
    """
    One edit applied while copying the file line by line.
    """

    def apply(self, lines: Iterator[tuple[int, bytes, bytes]], writer: AtomicWrite) -> None:
        raise NotImplementedError


def _check_text(values: Sequence[str], max_line_size: int) -> list[bytes]:
    encoded = []
    for value in values:
        if "\n" in value or "\r" in value:
            raise BadLines("Lines may not contain line breaks.")
        data = value.encode("utf-8", "surrogateescape")
        if len(data) > max_line_size:
            raise BadLines("A line is longer than {} bytes.".format(max_line_size))
        encoded.append(data)
    return encoded


def _count(volume: Volume, path: str) -> tuple[int, bytes]:
    """
    The number of lines and the file's dominant terminator.
    """
    fd, _ = volume.open_read(path)
    try:
        total = crlf = 0
        for _, _, terminator in _raw_lines(fd):
            total += 1
            crlf += terminator == b"\r\n"
        return total, (b"\r\n" if crlf * 2 > total else b"\n")
    finally:
        os.close(fd)


class _Replace(_Edit):
    def __init__(self, number: int, content: bytes) -> None:
        self.number, self.content = number, content

    def apply(self, lines: Iterator[tuple[int, bytes, bytes]], writer: AtomicWrite) -> None:
        for number, (_, content, terminator) in enumerate(lines, 1):
            writer.write((self.content if number == self.number else content) + terminator)


class _Insert(_Edit):
    def __init__(self, number: int, new: list[bytes], terminator: bytes) -> None:
        self.number, self.new, self.terminator = number, new, terminator

    def _inserted(self) -> bytes:
        return b"".join(line + self.terminator for line in self.new)

    def apply(self, lines: Iterator[tuple[int, bytes, bytes]], writer: AtomicWrite) -> None:
        number = 0
        for number, (_, content, terminator) in enumerate(lines, 1):
            if number == self.number:
                writer.write(self._inserted())
            writer.write(content + (terminator or (self.terminator if number + 1 == self.number
                                                   else b"")))
        if self.number == number + 1:
            writer.write(self._inserted())


class _Delete(_Edit):
    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end

    def apply(self, lines: Iterator[tuple[int, bytes, bytes]], writer: AtomicWrite) -> None:
        for number, (_, content, terminator) in enumerate(lines, 1):
            if not self.start <= number <= self.end:
                writer.write(content + terminator)


def replace_line(volume: Volume, path: str, number: int, content: str, *,
                 max_line_size: int) -> None:
    """
    Replace line ``number`` (its terminator kept).
    """
    [data] = _check_text([content], max_line_size)
    total, _ = _count(volume, path)
    if not 1 <= number <= total:
        raise BadLines("Line {} does not exist (the file has {} lines).".format(number, total))
    _rewrite(volume, path, _Replace(number, data))


def insert_lines(volume: Volume, path: str, number: int, lines: Sequence[str], *,
                 max_line_size: int) -> None:
    """
    Insert ``lines`` before line ``number`` (``total + 1`` appends).
    """
    if not lines:
        raise BadLines("No lines to insert were provided.")
    encoded = _check_text(lines, max_line_size)
    total, terminator = _count(volume, path)
    if not 1 <= number <= total + 1:
        raise BadLines("Lines can be inserted before lines 1 to {}.".format(total + 1))
    _rewrite(volume, path, _Insert(number, encoded, terminator))


def delete_lines(volume: Volume, path: str, start: int, end: int) -> None:
    """
    Remove lines ``start``…``end`` with their terminators.
    """
    total, _ = _count(volume, path)
    if not 1 <= start <= end <= total:
        raise BadLines("Lines {} to {} do not exist (the file has {} lines).".format(
            start, end, total))
    _rewrite(volume, path, _Delete(start, end))
