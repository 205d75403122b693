"""
7-Zip archives through ``py7zr`` (``api.md`` §5.9, a SHOULD format).

``py7zr`` decompresses and *pushes* each file's content into a writer it asks a factory for; the
factory here hands out the extractor's own `OpenFile` writers, so contents go through the same
checks as every other format (quota on the bytes written, temporary file renamed into place,
mode, owner, mtime).  Only regular files are handed to ``py7zr``; directory entries are created by
the extractor, links and special files skipped.  ``py7zr`` refuses to write a member whose name it
considers a traversal (``../x``, an absolute name): such members are skipped here instead of
clamped (project: the other formats clamp).  Duplicate names are extracted once.

Pure and blocking: no Twisted.
"""

from __future__ import annotations

import stat as _stat
from typing import TYPE_CHECKING, Any, Iterator

from twisted.logger import Logger

from .codecs import Damaged
from .entries import Entry, Kind, Unsupported, nothing

if TYPE_CHECKING:
    from .extract import Extractor, OpenFile

__all__ = ["SevenZipArchive"]

log = Logger()


class SevenZipArchive:
    """
    A 7-Zip archive open on a descriptor (the caller closes the descriptor).
    """

    indexed = True

    def __init__(self, fd: int) -> None:
        import py7zr

        self._py7zr = py7zr
        self._file = open(fd, "rb", closefd=False)
        try:
            self._archive = py7zr.SevenZipFile(self._file, mode="r")
        except py7zr.PasswordRequired:
            self._file.close()
            raise Unsupported("Encrypted archives cannot be extracted.") from None
        except (py7zr.Bad7zFile, EOFError, ValueError, OSError, KeyError) as e:
            self._file.close()
            raise Damaged(str(e)) from None
        if self._archive.needs_password():
            self.close()
            raise Unsupported("Encrypted archives cannot be extracted.")

    def close(self) -> None:
        """
        Release the reader.
        """
        self._archive.close()
        self._file.close()

    def _kind(self, member: Any) -> tuple[Kind, int]:
        mode = member.posix_mode
        if member.is_directory:
            return Kind.DIRECTORY, -1
        if member.is_symlink or member.is_junction:
            return Kind.SYMLINK, -1
        if member.is_socket:
            return Kind.OTHER, -1
        if mode is not None and _stat.S_IFMT(mode) not in (0, _stat.S_IFREG):
            return Kind.OTHER, -1
        return Kind.FILE, _stat.S_IMODE(mode) if mode else -1

    def _mtime(self, member: Any) -> float | None:
        stamp = member.lastwritetime
        return None if stamp is None else float(stamp.totimestamp())

    def sizes(self) -> Iterator[int]:
        for member in self._archive.files:
            if self._kind(member)[0] is Kind.FILE:
                yield int(member.uncompressed or 0)

    def entries(self) -> Iterator[Entry]:
        """
        The members without content (``py7zr`` only pushes content: see `extract_into`).
        """
        for member in self._archive.files:
            kind, mode = self._kind(member)
            yield Entry(member.filename, kind, int(member.uncompressed or 0), mode,
                        self._mtime(member), nothing)

    def extract_into(self, extractor: Extractor) -> None:
        """
        Extract every member through ``extractor``.
        """
        from py7zr.helpers import get_sanitized_output_path
        from py7zr.io import Py7zIO, WriterFactory

        targets: dict[str, tuple[str, int, float | None]] = {}
        for member in self._archive.files:
            kind, mode = self._kind(member)
            if kind is not Kind.FILE:
                extractor.add(Entry(member.filename, kind, 0, mode, self._mtime(member),
                                    nothing))
                continue
            try:
                key = get_sanitized_output_path(member.filename, None).as_posix()
            except (self._py7zr.Bad7zFile, ValueError):
                extractor.stats.skipped += 1
                log.info("7-Zip member {name!r} skipped: its name leads out", name=member.filename)
                continue
            if key not in targets:
                targets[key] = (member.filename, mode, self._mtime(member))
        if not targets:
            return
        opened: list[OpenFile] = []

        class Writer(Py7zIO):
            def __init__(self, output: OpenFile | None, mode: int, mtime: float | None) -> None:
                self._output = output
                self._mode = mode
                self._mtime = mtime
                self._size = 0

            def write(self, data: bytes | bytearray) -> int:
                if self._output is not None:
                    self._output.write(bytes(data))
                self._size += len(data)
                return len(data)

            def read(self, size: int | None = None) -> bytes:
                return b""

            def seek(self, offset: int, whence: int = 0) -> int:
                return 0

            def seekable(self) -> bool:
                return False

            def flush(self) -> None:
                pass

            def size(self) -> int:
                return self._size

            def close(self) -> None:
                if self._output is not None:
                    extractor.finish_file(self._output, self._mode, self._mtime)
                    self._output = None

        class Factory(WriterFactory):
            def create(self, filename: str) -> Py7zIO:
                target = targets.get(filename)
                if target is None:
                    # A later member of the same name ("name_0" to py7zr): extracted once.
                    return Writer(None, -1, None)
                name, mode, mtime = target
                output = extractor.begin_file(name)
                if output is not None:
                    opened.append(output)
                return Writer(output, mode, mtime)

        wanted = sorted({original for original, _, _ in targets.values()})
        try:
            self._archive.reset()
            self._archive.extract(targets=wanted, factory=Factory())
        except (self._py7zr.Bad7zFile, self._py7zr.exceptions.CrcError, EOFError) as e:
            raise Damaged(str(e)) from None
        except self._py7zr.exceptions.UnsupportedCompressionMethodError as e:
            raise Unsupported(str(e)) from None
        finally:
            for output in opened:
                output.abort()

