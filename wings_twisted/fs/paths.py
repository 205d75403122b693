"""
Client paths, limits and errors of the volume sandbox, and the small descriptor helpers the other
modules of the package share.

A client path is first cleaned lexically (`clean_path`, ``api.md`` §2.11): a leading ``/`` is the
volume root, ``//`` and ``.`` collapse, ``..`` is clamped at the root, backslashes are ordinary
characters.  `split_path` then refuses, before anything touches the disk, a NUL byte or a name that
cannot be encoded (`NotFound`) and a component longer than `NAME_MAX` or a path longer than
`PATH_MAX` (`NameTooLong`).

Failures are reported with the `FsError` subclasses below, each carrying the cleaned path;
`translate_error` maps the operating-system errors that have a meaning for a client onto them.
Unexpected operating-system errors (permissions, ``EMFILE``, I/O errors) propagate as `OSError` and
are 500s for the HTTP layer.

The names without a leading underscore that are not re-exported by ``wings_twisted.fs`` (flags,
modes, `split_path`, `translate_error`, the descriptor helpers) are shared inside the package only.
"""

from __future__ import annotations

import errno
import os
import stat as _stat
from typing import Sequence, TypeAlias

__all__ = [
    "DIR_FLAGS",
    "DIR_MODE",
    "FILE_MODE",
    "MAX_DEPTH",
    "MAX_LINK_HOPS",
    "NAME_MAX",
    "PATH_MAX",
    "AlreadyExists",
    "Denied",
    "FsError",
    "InvalidMove",
    "IsDirectory",
    "NameTooLong",
    "NotDirectory",
    "NotFound",
    "Owner",
    "QuotaExceeded",
    "SpecialFile",
    "check_regular",
    "clean_path",
    "close_all",
    "give",
    "lstat_at",
    "release_created",
    "split_path",
    "translate_error",
]

#: Longest file name component, in bytes (Linux ``NAME_MAX``).
NAME_MAX = 255
#: Longest cleaned path, in bytes, including a terminating NUL (Linux ``PATH_MAX``).
PATH_MAX = 4096
#: Symlinks followed in one walk, as the kernel's own limit.
MAX_LINK_HOPS = 40
#: Directory descriptors one walk may hold; deeper walks fail with `NameTooLong`.
MAX_DEPTH = 512

#: Open a directory of the walk: never through a symlink.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Mode of created directories (``api.md`` §2.15).
DIR_MODE = 0o755
#: Mode of created files unless stated otherwise (``api.md`` §2.15).
FILE_MODE = 0o644

#: The ``uid:gid`` that created entries are given to, or ``None`` to leave them as they are.
Owner: TypeAlias = "tuple[int, int] | None"


class FsError(Exception):
    """
    Base of the sandbox errors; ``path`` is the volume-relative cleaned path concerned.
    """

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path

    def __str__(self) -> str:
        return "%s: %r" % (type(self).__name__, self.path)


class NotFound(FsError):
    """
    Missing, escapes the root, final-component symlink, NUL byte, link loop.
    """


class Escapes(NotFound):
    """
    A symlink on the way leads out of the volume (an absolute target, a ``..`` above the root, or
    more than `MAX_LINK_HOPS` links): as missing to every caller that does not ask, but a route
    that ignores missing entries (delete) still refuses it.
    """


class IsDirectory(FsError):
    """
    The operation needs a file but found a directory.
    """


class NotDirectory(FsError):
    """
    A component that must be a directory is an existing non-directory (``ENOTDIR``).
    """


class SpecialFile(FsError):
    """
    A FIFO, socket or device node, which is never opened.
    """


class NameTooLong(FsError):
    """
    A component longer than `NAME_MAX` bytes, a path longer than `PATH_MAX`, or a walk deeper than
    `MAX_DEPTH` directories.
    """


class Denied(FsError):
    """
    The path is on the egg denylist (``api.md`` §2.12).
    """


class QuotaExceeded(FsError):
    """
    The write does not fit in the disk limit (``api.md`` §2.13).
    """


class NoSpace(FsError):
    """
    The node's own disk (or the filesystem's quota) is full: ``ENOSPC`` or ``EDQUOT`` from the
    kernel, whatever the server's limit.
    """


class AlreadyExists(FsError):
    """
    The destination of a rename already exists (any type, including a dangling symlink).
    """


class InvalidMove(FsError):
    """
    A directory would be moved into itself (``EINVAL`` from ``rename``).
    """


def clean_path(path: str) -> str:
    """
    Lexically clean a client path into a volume-relative path without leading '/', '' for the root,
    '..' clamped.
    """
    parts: list[str] = []
    for part in path.split("/"):
        if part == "" or part == ".":
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/".join(parts)


def split_path(path: str) -> tuple[str, list[str]]:
    """
    Clean a path and validate its components before anything touches the disk.

    :return: the cleaned path and its components (none for the root).
    """
    clean = clean_path(path)
    if "\x00" in path:
        raise NotFound(clean)
    try:
        encoded = os.fsencode(clean)
    except UnicodeEncodeError:
        # A lone surrogate that surrogateescape cannot encode: no such name can exist.
        raise NotFound(clean) from None
    if len(encoded) >= PATH_MAX:
        raise NameTooLong(clean)
    parts = clean.split("/") if clean else []
    for part in parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise NameTooLong(clean)
    return clean, parts


def translate_error(error: OSError, path: str) -> Exception:
    """
    The sandbox error for an operating-system error, or the error itself when none fits.
    """
    code = error.errno
    if code in (errno.ENOENT, errno.ELOOP):
        return NotFound(path)
    if code == errno.ENOTDIR:
        return NotDirectory(path)
    if code == errno.EISDIR:
        return IsDirectory(path)
    if code == errno.ENAMETOOLONG:
        return NameTooLong(path)
    if code == errno.ENXIO:
        return SpecialFile(path)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return NoSpace(path)
    return error


def check_regular(st: os.stat_result, clean: str) -> None:
    """
    Raise `IsDirectory` for a directory and `SpecialFile` for anything else that is not a regular
    file (a symlink must have been handled before).
    """
    if _stat.S_ISDIR(st.st_mode):
        raise IsDirectory(clean)
    if not _stat.S_ISREG(st.st_mode):
        raise SpecialFile(clean)


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """
    ``fstatat(AT_SYMLINK_NOFOLLOW)`` of one entry, ``None`` when it does not exist.
    """
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def close_all(fds: Sequence[int]) -> None:
    """
    Close descriptors, last first, ignoring errors (used on the way out of a walk).
    """
    for fd in reversed(fds):
        try:
            os.close(fd)
        except OSError:
            pass


def give(fd: int, owner: Owner) -> None:
    """
    Give the entry behind a descriptor to ``owner`` (nothing when ``None``).

    Always through the descriptor, never by name: the name could have been swapped meanwhile.
    """
    if owner is not None:
        os.fchown(fd, owner[0], owner[1])


def release_created(created: list[tuple[int, str]], *, undo: bool) -> None:
    """
    Close the descriptors recorded for created directories; with ``undo``, first remove the
    directories again, deepest first, each only if it is still empty.

    :param created: ``(descriptor of the parent, name)`` pairs, shallowest first, as recorded by
        the walk that created them; emptied.
    """
    for parent_fd, name in reversed(created):
        if undo:
            try:
                os.rmdir(name, dir_fd=parent_fd)
            except OSError:
                pass
        os.close(parent_fd)
    created.clear()
