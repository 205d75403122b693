"""
Backup archives on disk (backups.md §3, §4.3, §5, §8.4 step 3): where they live, how one is
written, and the volume-side helpers of a restore.

* **Layout.** New archives go to ``<backup_directory>/<uuid>.tar.gz`` (upstream's flat layout,
  mode 0600); lookups try that path, then Pelican's ``<backup_directory>/<server>/<uuid>.tar.gz``
  (`locate`).  Backup UUIDs are checked as canonical lower-case UUIDs before any path is built
  (`check_uuid`).
* **Writing** (`write_archive`): the tar.gz of ``archive.write_tar_gz`` goes through the write
  limiter (§5.6) into a staging file ``<backup_directory>/.<uuid>.tar.gz.partial`` (0600), hashed
  with SHA-1 as it is written (§5.7; the bytes are those of the file), and is renamed to its
  final name when complete.  A failure or a cancellation removes the staging file, so no partial
  archive is ever left (§5.8).  The boot sweep (`sweep_staging`) removes staging files a crash
  left behind; a reader never meets one, because the final name appears only when complete.
* **Ignore rules** (`resolve_rules`, §4.3): the request's ``ignore`` string when it is not empty,
  else ``.pteroignore`` of the volume root, only when it is a regular file (opened without
  following a final symlink) of at most 32 768 bytes; the two are never merged; lines are split
  on ``\\n`` only.
* **Truncation** (`truncate_volume`, §8.4 step 3): every entry of the volume is removed, never
  following a link; the volume directory stays, mode 0700, owned by the server's user, and the
  usage counter restarts at 0.

Pure and blocking: no Twisted; runs in a worker thread.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat as _stat
import threading
from dataclasses import dataclass
from typing import Callable

from twisted.logger import Logger

from ..archive import ArchiveStats, volume_selection, write_tar_gz
from ..fs import Volume
from ..fs.ignore import IgnoreMatcher
from ..fs.tree import remove_at
from .limiter import TokenBucket, limited

__all__ = ["IGNORE_FILE", "MAX_IGNORE_BYTES", "STAGING_SUFFIX", "Written", "archive_path",
           "check_uuid", "locate", "remove_archive", "remove_server_directory", "resolve_rules", "staging_path",
           "sweep_staging", "truncate_volume", "write_archive"]

log = Logger()

#: A canonical lower-case UUID (backups.md §3).
CANONICAL = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
IGNORE_FILE = ".pteroignore"
MAX_IGNORE_BYTES = 32768
STAGING_SUFFIX = ".tar.gz.partial"
ARCHIVE_MODE = 0o600
_CHUNK = 1024 * 1024


def check_uuid(value: object) -> bool:
    """
    Whether ``value`` is a canonical lower-case UUID string.
    """
    return isinstance(value, str) and CANONICAL.match(value) is not None


def archive_path(directory: str, backup_uuid: str) -> str:
    """
    Where a new archive goes (the flat layout).
    """
    return os.path.join(directory, backup_uuid + ".tar.gz")


def staging_path(directory: str, backup_uuid: str) -> str:
    """
    The staging file of an archive being written.
    """
    return os.path.join(directory, "." + backup_uuid + STAGING_SUFFIX)


def locate(directory: str, server_uuid: str, backup_uuid: str) -> str | None:
    """
    The path of an existing archive (flat layout first, then Pelican's), or ``None``.  A
    directory or a symlink at a candidate path does not count.
    """
    for path in (archive_path(directory, backup_uuid),
                 os.path.join(directory, server_uuid, backup_uuid + ".tar.gz")):
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if _stat.S_ISREG(st.st_mode):
            return path
    return None


def remove_archive(directory: str, path: str) -> bool:
    """
    Remove an archive (gone already is fine); in the Pelican layout, remove its server
    directory once empty.  Whether a file was removed.
    """
    try:
        os.unlink(path)
        removed = True
    except FileNotFoundError:
        removed = False
    parent = os.path.dirname(path)
    if os.path.abspath(parent) != os.path.abspath(directory):
        try:
            os.rmdir(parent)
        except OSError:
            pass
    return removed


def remove_server_directory(directory: str, server_uuid: str) -> int:
    """
    Remove Pelican's ``<directory>/<server>/`` with the archives in it (§9.2); the number of
    archives removed.  Anything but a real directory there is left alone.
    """
    path = os.path.join(directory, server_uuid)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    if not _stat.S_ISDIR(st.st_mode):
        return 0
    removed = 0
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for name in os.listdir(fd):
            if name.endswith(".tar.gz") and remove_at(fd, name) is not None:
                removed += 1
    finally:
        os.close(fd)
    try:
        os.rmdir(path)
    except OSError:
        pass
    return removed


def sweep_staging(directory: str) -> list[str]:
    """
    Remove the staging files a crash left in ``directory`` (boot only); the names removed.
    """
    removed: list[str] = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for name in names:
        if name.startswith(".") and name.endswith(STAGING_SUFFIX):
            try:
                os.unlink(os.path.join(directory, name))
                removed.append(name)
            except OSError:
                pass
    return removed


def resolve_rules(volume: Volume, ignore: str) -> IgnoreMatcher | None:
    """
    The ignore rules of a backup (§4.3); ``None`` when none apply.
    """
    if ignore:
        return IgnoreMatcher(ignore.split("\n"))
    try:
        text = _read_ignore_file(volume)
    except OSError as e:
        log.warn("Reading {name} of {root} failed, backing up without rules: {error}",
                 name=IGNORE_FILE, root=volume.root, error=e.strerror or str(e))
        return None
    if text is None:
        return None
    return IgnoreMatcher(text.split("\n"))


def _read_ignore_file(volume: Volume) -> str | None:
    with volume.directory("") as (root_fd, _):
        try:
            fd = os.open(IGNORE_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
                         | os.O_NOCTTY, dir_fd=root_fd)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ELOOP, errno.ENXIO):
                return None  # missing, or a symlink (never followed)
            raise
    try:
        st = os.fstat(fd)
        if not _stat.S_ISREG(st.st_mode) or st.st_size > MAX_IGNORE_BYTES:
            return None
        data = os.read(fd, MAX_IGNORE_BYTES + 1)
        if len(data) > MAX_IGNORE_BYTES:
            return None
    finally:
        os.close(fd)
    return data.decode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class Written:
    """
    A finished archive: its path, SHA-1 (lower-case hex), size, and what the stream held.
    """

    path: str
    checksum: str
    size: int
    stats: ArchiveStats


def write_archive(volume: Volume, ignore: IgnoreMatcher | None, directory: str,
                  backup_uuid: str, *, level: int, bucket: TokenBucket | None,
                  cancel: threading.Event | None = None, rename: bool = True,
                  before_rename: Callable[[], None] | None = None) -> Written:
    """
    Write the archive of ``volume`` (§5) to ``<directory>/<uuid>.tar.gz`` through a staging file.

    :param rename: rename the finished staging file to its final name (local backups); an S3
        backup uploads from the staging file and removes it (``Written.path`` is then the
        staging file).
    :param before_rename: called once the staging file is complete (tests interpose here).
    :raises Cancelled: ``cancel`` was set (nothing is left behind).
    :raises OSError: the walk or a write failed (nothing is left behind).
    """
    os.makedirs(directory, 0o700, exist_ok=True)
    staging = staging_path(directory, backup_uuid)
    final = archive_path(directory, backup_uuid)
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
                 ARCHIVE_MODE)
    digest = hashlib.sha1()
    size = 0
    try:
        def write(data: bytes) -> None:
            nonlocal size
            digest.update(data)
            view = memoryview(data)
            while view:
                done = os.write(fd, view)
                view = view[done:]
            size += len(data)

        stats = write_tar_gz(volume, volume_selection(ignore), limited(write, bucket),
                             level=level, cancel=cancel)
        if size == 0:
            raise OSError(errno.EIO, "the archive is empty")
        if before_rename is not None:
            before_rename()
        if rename:
            os.rename(staging, final)
        else:
            final = staging
    except BaseException:
        os.close(fd)
        fd = -1
        try:
            os.unlink(staging)
        except FileNotFoundError:
            pass
        raise
    finally:
        if fd >= 0:
            os.close(fd)
    return Written(final, digest.hexdigest(), size, stats)


def truncate_volume(volume: Volume) -> int:
    """
    Remove everything inside the volume (§8.4 step 3); the volume directory is kept (or made)
    with mode 0700 and the server's owner, and the usage counter restarts at 0.  The number of
    top-level entries removed.
    """
    volume.ensure_root()
    removed = 0
    with volume.directory("") as (root_fd, _):
        names = os.listdir(root_fd)
        for name in names:
            if remove_at(root_fd, name, volume.quota.accounting) is not None:
                removed += 1
        os.fchmod(root_fd, 0o700)
    volume.quota.reset()
    return removed
