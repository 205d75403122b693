"""
What the readers of ``archive.readers`` and ``archive.sevenzip`` hand the extractor: `Entry`
objects of a `Kind`, through an `Archive`, and the two ways reading can be refused.

Pure: no Twisted, no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

__all__ = ["Archive", "Entry", "Kind", "UnknownFormat", "Unsupported", "nothing"]


class UnknownFormat(Exception):
    """
    Not an archive format this daemon reads.
    """


class Unsupported(Exception):
    """
    A known format that cannot be extracted here (RAR, encrypted entries...); the message says
    which.
    """


class Kind(enum.Enum):
    """
    What an entry is.
    """

    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    OTHER = "other"


@dataclass
class Entry:
    """
    One member of an archive.

    :param name: as stored (may be absolute, hold ``..``, repeat an earlier name...).
    :param size: the declared content size, ``-1`` when unknown.
    :param mode: the permission bits stored, ``-1`` when none are.
    :param mtime: seconds since the epoch, ``None`` when none is stored.
    :param read: the content in pieces of at most the size asked for; ``b""`` at the end.
    """

    name: str
    kind: Kind
    size: int
    mode: int
    mtime: float | None
    read: Callable[[int], bytes]


def nothing(size: int) -> bytes:
    """
    The content of an entry that has none.
    """
    return b""


class Archive(Protocol):
    """
    An opened archive.
    """

    #: Whether ``entries`` is cheap to walk twice (sizes come from a directory).
    indexed: bool

    def entries(self) -> Iterator[Entry]:
        """
        The entries, in archive order (a new pass from the start each call).
        """

    def sizes(self) -> Iterator[int]:
        """
        The declared sizes of the regular-file entries (the quota pre-walk).
        """

    def close(self) -> None:
        """
        Release what the reader holds (the caller closes the descriptor).
        """
