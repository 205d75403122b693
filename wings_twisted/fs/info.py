"""
What a client is told about a file: the stat object of ``api.md`` §2.14 and
the MIME type sniffed from a file's first bytes.

The stat object, fields in upstream's order::

    {"name": "server.properties", "created": "2024-03-17T14:58:30Z",
     "modified": "2024-03-17T14:58:30Z", "mode": "-rw-r--r--", "mode_bits": "644",
     "size": 1290, "directory": false, "file": true, "symlink": false,
     "mime": "text/plain; charset=utf-8"}

* ``created`` is the inode change time (``st_ctime``), ``modified`` the
  mtime, both RFC 3339 in UTC with whole seconds (project: upstream uses the
  daemon's zone);
* ``mode`` is Go's rendering of a file mode (``go_mode``), which is not
  ``stat.filemode``'s: type and flag letters ``dLDpSugct`` in that order, or
  one ``-`` when none applies, then ``rwxrwxrwx``;
* ``mode_bits`` the permission bits in octal without a leading zero;
* ``file`` is ``not directory``; ``symlink`` the real value (project: upstream
  always says false).

MIME sniffing (``sniff``) reads at most ``SNIFF_BYTES`` and gives the exact
strings the Panel's file manager keys on (its editor opens only text; its
"Unarchive" button appears only for archive types): magic numbers first, then
JSON (only when the whole file fits in the window and parses — a longer JSON
document is reported as text, which the editor opens just the same), then
UTF-8 text, else ``application/octet-stream``.  ``libmagic`` is not used: it
names jars ``application/java-archive`` (which the Panel would offer to edit)
and empty files ``inode/x-empty``.

Pure module: no Twisted.  ``sniff_at`` opens a file relative to a directory
descriptor without following links and without blocking on FIFOs.
"""

from __future__ import annotations

import functools
import json
import os
import stat as _stat
import time
from typing import Any

SNIFF_BYTES = 3072
DIRECTORY = "inode/directory"
OCTET_STREAM = "application/octet-stream"
TEXT = "text/plain; charset=utf-8"
TAR_GZIP = "application/tar+gzip"

_SNIFF_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY

#: (offset, magic, mime), checked in order.
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x1f\x8b", "application/gzip"),
    (0, b"BZh", "application/x-bzip2"),
    (0, b"\xfd7zXZ\x00", "application/x-xz"),
    (0, b"\x28\xb5\x2f\xfd", "application/zstd"),
    (0, b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (0, b"Rar!\x1a\x07", "application/x-rar-compressed"),
    (257, b"ustar", "application/x-tar"),
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
)

#: Control characters that do not make a file binary.
_TEXT_CONTROLS = frozenset(b"\t\n\r\f\b\x1b\x0b")
_BINARY_BYTES = frozenset(range(32)) - _TEXT_CONTROLS


def sniff(head: bytes, size: int) -> str:
    """
    The MIME type of a regular file whose first bytes are ``head`` (at most
    ``SNIFF_BYTES``) and whose size is ``size``.
    """
    if not head:
        return TEXT
    for offset, magic, mime in _MAGIC:
        if head.startswith(magic, offset):
            return mime
    if head.startswith(b"PK\x03\x04"):
        return "application/jar" if b"META-INF/" in head else "application/zip"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"\x7fELF"):
        # e_type: 3 shared object (or a PIE executable), 2 executable.
        return "application/x-sharedlib" if head[16:17] == b"\x03" else "application/x-executable"
    text = _decode_text(head, truncated=size > len(head))
    if text is None:
        return OCTET_STREAM
    stripped = text.lstrip()
    if stripped[:1] in ("{", "[") and size <= len(head):
        try:
            json.loads(text)
        except ValueError:
            pass
        else:
            return "application/json"
    if stripped.startswith("<") and "<svg" in stripped[:SNIFF_BYTES]:
        return "image/svg+xml"
    return TEXT


def _decode_text(head: bytes, *, truncated: bool) -> str | None:
    """
    ``head`` as UTF-8 text, or ``None`` if it is binary.  A multi-byte
    character cut by the window's end is forgiven when the file goes on.
    """
    if _BINARY_BYTES.intersection(head):
        return None
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as e:
        if truncated and e.start >= len(head) - 3 and e.reason == "unexpected end of data":
            return head[:e.start].decode("utf-8", "replace")
        return None


def sniff_at(dir_fd: int, name: str, st: os.stat_result) -> str:
    """
    The MIME type of entry ``name`` of a directory whose ``lstat`` is
    ``st``: ``inode/directory`` for directories, ``application/octet-stream``
    for anything that is not a regular file (never opened) or that cannot be
    opened and read now (project: upstream fails the whole listing).
    """
    if _stat.S_ISDIR(st.st_mode):
        return DIRECTORY
    if not _stat.S_ISREG(st.st_mode):
        return OCTET_STREAM
    try:
        fd = os.open(name, _SNIFF_FLAGS, dir_fd=dir_fd)
    except OSError:
        return OCTET_STREAM
    try:
        opened = os.fstat(fd)
        if not _stat.S_ISREG(opened.st_mode):
            return OCTET_STREAM
        head = os.read(fd, SNIFF_BYTES) if opened.st_size else b""
    except OSError:
        return OCTET_STREAM
    finally:
        os.close(fd)
    return sniff(head, opened.st_size)


def sniff_fd(fd: int, st: os.stat_result) -> str:
    """
    The MIME type of an open regular file (read with ``pread``, so the
    descriptor's offset is untouched).
    """
    head = os.pread(fd, SNIFF_BYTES, 0) if st.st_size else b""
    return sniff(head, st.st_size)


_TYPE_LETTERS = "dLDpSugct"


@functools.lru_cache(maxsize=1024)
def go_mode(mode: int) -> str:
    """
    Go's ``FileMode.String()`` for an ``st_mode`` (api.md §2.14); cached,
    since a listing holds few distinct modes.
    """
    letters = []
    if _stat.S_ISDIR(mode):
        letters.append("d")
    if _stat.S_ISLNK(mode):
        letters.append("L")
    if _stat.S_ISBLK(mode) or _stat.S_ISCHR(mode):
        letters.append("D")
    if _stat.S_ISFIFO(mode):
        letters.append("p")
    if _stat.S_ISSOCK(mode):
        letters.append("S")
    if mode & _stat.S_ISUID:
        letters.append("u")
    if mode & _stat.S_ISGID:
        letters.append("g")
    if _stat.S_ISCHR(mode):
        letters.append("c")
    if mode & _stat.S_ISVTX:
        letters.append("t")
    permissions = "".join(flag if mode & (1 << (8 - i)) else "-"
                          for i, flag in enumerate("rwxrwxrwx"))
    return ("".join(letters) or "-") + permissions


def rfc3339(seconds: float) -> str:
    """
    A time as RFC 3339 in UTC with whole seconds (``2024-03-17T14:58:30Z``).
    """
    return _rfc3339(int(seconds))


@functools.lru_cache(maxsize=4096)
def _rfc3339(seconds: int) -> str:
    # Files written together share their times: a listing formats few distinct ones.
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def stat_object(name: str, st: os.stat_result, mime: str) -> dict[str, Any]:
    """
    The stat object of an entry named ``name`` whose ``lstat`` is ``st``.
    """
    mode = st.st_mode
    go, bits, directory, link = _mode_fields(mode)
    return {
        "name": name,
        "created": _rfc3339(int(st.st_ctime)),
        "modified": _rfc3339(int(st.st_mtime)),
        "mode": go,
        "mode_bits": bits,
        "size": st.st_size,
        "directory": directory,
        "file": not directory,
        "symlink": link,
        "mime": mime,
    }


@functools.lru_cache(maxsize=1024)
def _mode_fields(mode: int) -> tuple[str, str, bool, bool]:
    return go_mode(mode), format(mode & 0o777, "o"), _stat.S_ISDIR(mode), _stat.S_ISLNK(mode)
