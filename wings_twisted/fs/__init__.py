"""
The sandboxed view of a server volume that every file feature goes through.

Pure, synchronous code with no Twisted imports: callers run it in worker threads.  Whatever the
client path and whatever is swapped into the volume concurrently, nothing outside the volume is
ever opened, listed, changed or removed.

* `paths`: lexical cleaning, limits, the `FsError` family;
* `walk`: the descriptor walk that resolves a path (``api.md`` §2.11);
* `volume`: `Volume`, the operations on single entries;
* `tree`: bounded walks over whole trees (usage, recursive removal, chown);
* `quota`: the usage counter and the disk limit (``api.md`` §2.13);
* `atomic`: whole-file writes through a temporary file;
* `handles`: open files used through a handle, and by-path attribute changes (SFTP);
* `ignore` and `goregex`: the egg denylist and backup ignore rules (``api.md`` §2.12).

The public names are re-exported here so that callers import them from ``wings_twisted.fs``.
"""

from __future__ import annotations

from .atomic import AtomicWrite
from .handles import FileHandle
from .paths import (
    MAX_DEPTH,
    MAX_LINK_HOPS,
    NAME_MAX,
    PATH_MAX,
    AlreadyExists,
    Denied,
    Escapes,
    FsError,
    InvalidMove,
    IsDirectory,
    NameTooLong,
    NoSpace,
    NotDirectory,
    NotFound,
    QuotaExceeded,
    SpecialFile,
    clean_path,
)
from .quota import INODE_CHARGE, Reservation, charge, charge_size
from .volume import Volume

__all__ = [
    "MAX_DEPTH",
    "MAX_LINK_HOPS",
    "NAME_MAX",
    "PATH_MAX",
    "AlreadyExists",
    "AtomicWrite",
    "FileHandle",
    "Denied",
    "Escapes",
    "FsError",
    "InvalidMove",
    "IsDirectory",
    "NameTooLong",
    "NoSpace",
    "NotDirectory",
    "NotFound",
    "QuotaExceeded",
    "SpecialFile",
    "Volume",
    "clean_path",
    "INODE_CHARGE",
    "Reservation",
    "charge",
    "charge_size",
]
