"""
Duplicating an entry inside a volume (``api.md`` §5.4): ``files/copy``.

The copy goes beside the source under the first free name of ``<stem>
copy<ext>``, ``<stem> copy 1<ext>`` … ``<stem> copy 50<ext>`` (the extension
is the last ``.xxx`` suffix, with ``.tar`` joined to it: ``world.tar.gz`` →
``world copy.tar.gz``), else ``<stem>copy.<UTC timestamp><ext>`` as upstream
does.

* A regular file is copied with its permission bits through a temporary file
  beside the copy that is renamed into place (never over an existing entry:
  the file is linked into place, which cannot replace anything), after
  the quota fits-check for its size; the owner is the volume's.
* A directory (fork) is copied recursively: regular files and directories
  only (symlinks and special files are not recreated), denylisted entries
  skipped, the quota checked once for the total size of what will be copied.
* The source is never followed through a final symlink (404) and must be
  inside the volume.

Blocking and pure (no Twisted); every descriptor is opened relative to one
obtained by the sandboxed walk, with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import os
import stat as _stat
import time
from typing import Iterator

from .atomic import begin_at
from .paths import (DIR_FLAGS, DIR_MODE, NotFound, QuotaExceeded, give, lstat_at, split_path)
from .volume import Volume

_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
COPY_CHUNK = 1024 * 1024
MAX_NUMBERED = 50


def split_name(name: str) -> tuple[str, str]:
    """
    ``(stem, extension)`` of a base name, ``.tar`` kept with the extension.
    """
    stem, dot, extension = name.rpartition(".")
    if not dot:
        return name, ""
    extension = "." + extension
    if stem.endswith(".tar"):
        stem, extension = stem[:-4], ".tar" + extension
    return stem, extension


def copy_names(name: str, now: float) -> Iterator[str]:
    """
    The candidate names of a copy of ``name``, in the order they are tried.
    """
    stem, extension = split_name(name)
    yield "{} copy{}".format(stem, extension)
    for number in range(1, MAX_NUMBERED + 1):
        yield "{} copy {}{}".format(stem, number, extension)
    yield "{}copy.{}{}".format(stem, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                                extension)


def _free_name(parent: int, name: str) -> str:
    for candidate in copy_names(name, time.time()):
        if lstat_at(parent, candidate) is None:
            return candidate
    raise FileExistsError(name)


def copy_entry(volume: Volume, location: str, *, check_denylist: bool = True) -> str:
    """
    Copy the file or directory at ``location`` beside itself; return the new
    name.

    :raises NotFound: missing, escaping, the root, or a final symlink.
    :raises Denied: ``location`` is on the denylist.
    :raises QuotaExceeded: the copy would not fit.
    """
    clean, parts = split_path(location)
    if check_denylist:
        volume.check_denied(clean)
    if not parts:
        raise NotFound(clean)
    name = parts[-1]
    with volume.directory("/".join(parts[:-1])) as (parent, parent_clean):
        st = lstat_at(parent, name)
        if st is None or not (_stat.S_ISREG(st.st_mode) or _stat.S_ISDIR(st.st_mode)):
            raise NotFound(clean)
        target = _free_name(parent, name)
        if _stat.S_ISREG(st.st_mode):
            _copy_file(volume, parent, name, parent, target, clean)
        else:
            _copy_tree(volume, parent, name, target, clean)
        return target


def _copy_file(volume: Volume, src_dir: int, name: str, dst_dir: int, target: str,
               clean: str) -> int:
    """
    Copy one regular file; return its size.
    """
    fd = os.open(name, _READ, dir_fd=src_dir)
    try:
        st = os.fstat(fd)
        if not _stat.S_ISREG(st.st_mode):
            raise NotFound(clean)
        if not volume.fits(st.st_size):
            raise QuotaExceeded(clean)
        writer = begin_at(dst_dir, target, clean, volume.quota, volume.owner, [])
        with writer:
            remaining = st.st_size
            offset = 0
            while remaining:
                data = os.pread(fd, min(COPY_CHUNK, remaining), offset)
                if not data:
                    break
                writer.write(data)
                offset += len(data)
                remaining -= len(data)
            writer.commit(mode=_stat.S_IMODE(st.st_mode), replace=False)
        return st.st_size
    finally:
        os.close(fd)


def _plan(volume: Volume, fd: int, prefix: str) -> int:
    """
    The bytes of the regular files a tree copy would write (denylisted
    entries left out).
    """
    total = 0
    for entry, path, st in _entries(volume, fd, prefix):
        if _stat.S_ISREG(st.st_mode):
            total += st.st_size
        elif _stat.S_ISDIR(st.st_mode):
            child = os.open(entry.name, DIR_FLAGS, dir_fd=fd)
            try:
                total += _plan(volume, child, path)
            finally:
                os.close(child)
    return total


def _copy_tree(volume: Volume, parent: int, name: str, target: str, clean: str) -> None:
    source = os.open(name, DIR_FLAGS, dir_fd=parent)
    try:
        if not volume.fits(_plan(volume, source, clean)):
            raise QuotaExceeded(clean)
        os.mkdir(target, DIR_MODE, dir_fd=parent)
        made = os.open(target, DIR_FLAGS, dir_fd=parent)
        try:
            os.fchmod(made, _stat.S_IMODE(os.fstat(source).st_mode))
            give(made, volume.owner)
            _copy_contents(volume, source, made, clean)
        finally:
            os.close(made)
    finally:
        os.close(source)


def _entries(volume: Volume, fd: int, prefix: str) -> Iterator[tuple[os.DirEntry[str], str, os.stat_result]]:
    """
    ``(entry, path, lstat)`` of the directory ``fd`` (volume path ``prefix``) in byte order of
    their names, without denylisted entries and entries gone since the listing.
    """
    with os.scandir(fd) as iterator:
        entries = sorted(iterator, key=lambda e: os.fsencode(e.name))
    for entry in entries:
        path = prefix + "/" + entry.name
        if volume.is_denied(path):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        yield entry, path, st


def _copy_contents(volume: Volume, source: int, destination: int, prefix: str) -> None:
    for entry, path, st in _entries(volume, source, prefix):
        if _stat.S_ISREG(st.st_mode):
            _copy_file(volume, source, entry.name, destination, entry.name, path)
        elif _stat.S_ISDIR(st.st_mode):
            os.mkdir(entry.name, DIR_MODE, dir_fd=destination)
            child_dst = os.open(entry.name, DIR_FLAGS, dir_fd=destination)
            try:
                child_src = os.open(entry.name, DIR_FLAGS, dir_fd=source)
                try:
                    os.fchmod(child_dst, _stat.S_IMODE(st.st_mode))
                    give(child_dst, volume.owner)
                    _copy_contents(volume, child_src, child_dst, path)
                finally:
                    os.close(child_src)
            finally:
                os.close(child_dst)
