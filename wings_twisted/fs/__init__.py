"""
The sandboxed view of a server volume that every file feature goes through.

The public names are re-exported here so that callers import them from ``wings_twisted.fs``.
"""

from __future__ import annotations

from .volume import (
    MAX_DEPTH,
    MAX_LINK_HOPS,
    NAME_MAX,
    PATH_MAX,
    AlreadyExists,
    AtomicWrite,
    Denied,
    FsError,
    InvalidMove,
    IsDirectory,
    NameTooLong,
    NotDirectory,
    NotFound,
    QuotaExceeded,
    SpecialFile,
    Volume,
    clean_path,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_LINK_HOPS",
    "NAME_MAX",
    "PATH_MAX",
    "AlreadyExists",
    "AtomicWrite",
    "Denied",
    "FsError",
    "InvalidMove",
    "IsDirectory",
    "NameTooLong",
    "NotDirectory",
    "NotFound",
    "QuotaExceeded",
    "SpecialFile",
    "Volume",
    "clean_path",
]
