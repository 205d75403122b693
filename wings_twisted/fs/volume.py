"""
One server volume: the operations on single entries that every file feature goes through.

Pure, synchronous code with no Twisted imports: callers run these methods in worker threads.

Every operation cleans and validates its path (`wings_twisted.fs.paths`), checks the egg denylist
where the operation asks for it (``api.md`` §2.12; always on the cleaned path, so ``a/../x.cfg``
cannot slip past), and resolves the parent directory with the descriptor walk of
`wings_twisted.fs.walk`.  The final component is then handled relative to that descriptor: never
followed for open, read, write or stat; delete, rename and `Volume.lstat` act on a link itself.

Whole-tree walks live in `wings_twisted.fs.tree`, the usage counter in `wings_twisted.fs.quota`,
whole-file writes in `wings_twisted.fs.atomic` and open file handles in `wings_twisted.fs.handles`;
`Volume` keeps their entry points (the quota's through `QuotaDelegate`), which is why this module
is long: it is the one cohesive front every file feature (HTTP routes, uploads, SFTP) goes through.
"""

from __future__ import annotations

import errno
import functools
import os
import stat as _stat
import time
from contextlib import contextmanager
from typing import Callable, ContextManager, Iterator, Sequence

from . import handles, tree, walk
from .atomic import AtomicWrite, begin_at
from .handles import FileHandle
from .ignore import IgnoreMatcher
from .paths import (
    DIR_FLAGS,
    DIR_MODE,
    FILE_MODE,
    AlreadyExists,
    Denied,
    InvalidMove,
    IsDirectory,
    NotFound,
    Owner,
    clean_path,
    give,
    lstat_at,
    release_created,
    split_path,
    translate_error,
)
from .quota import BLOCKS, Accounting, DiskQuota, QuotaDelegate

__all__ = ["Volume"]


class Volume(QuotaDelegate):
    """
    One server volume: path resolution, the blocking file operations built on it, the egg denylist
    and the disk-usage counter.
    """

    def __init__(
        self,
        root: str,
        *,
        uid: int,
        gid: int,
        denylist: Sequence[str] = (),
        disk_limit_bytes: int = 0,
        disk_check_interval: float = 150.0,
        clock: Callable[[], float] = time.monotonic,
        chown: bool = True,
        accounting: Accounting = BLOCKS,
    ) -> None:
        """
        :param root: host path of the volume directory (made absolute).
        :param disk_limit_bytes: 0 is unlimited; -1 refuses every write.
        :param disk_check_interval: seconds between usage walks; 0 never walks.
        :param clock: monotonic seconds, used only to age the usage walk.
        :param chown: give created files and directories to ``uid:gid``.
        :param accounting: what entries cost against the limit (`quota.BLOCKS`, this project's
            default, or upstream's `quota.BYTES`).
        """
        self.root = os.path.abspath(root)
        self._owner: Owner = (uid, gid) if chown else None
        self._matcher = IgnoreMatcher(denylist)
        self._accounting = accounting
        self._quota = DiskQuota(
            functools.partial(tree.measure, self.root, accounting),
            limit_bytes=disk_limit_bytes,
            check_interval=disk_check_interval,
            clock=clock,
            accounting=accounting,
        )

    # -- volume directory ------------------------------------------------------------------------

    def ensure_root(self) -> None:
        """
        Create the volume directory (mode 0700; missing parents 0755) and give it to ``uid:gid``.

        A volume path that exists as a symlink is refused with `OSError` (``ELOOP``).
        """
        os.makedirs(os.path.dirname(self.root), DIR_MODE, exist_ok=True)
        try:
            os.mkdir(self.root, 0o700)
        except FileExistsError:
            pass
        fd = os.open(self.root, DIR_FLAGS)
        try:
            give(fd, self._owner)
        finally:
            os.close(fd)

    def remove_leftovers(self) -> int:
        """
        Remove the temporary files and half-removed trees a crash left (`tree.remove_leftovers`;
        at boot only).  Returns how many entries went.
        """
        return tree.remove_leftovers(self.root)

    def remove_root(self) -> None:
        """
        Remove the whole volume without following any link; a missing volume is fine.
        """
        if tree.remove_entry(self.root):
            self._quota.reset()

    # -- denylist --------------------------------------------------------------------------------

    def set_denylist(self, patterns: Sequence[str]) -> None:
        """
        Replace the egg denylist; each element is one rule line.
        """
        self._matcher = IgnoreMatcher(patterns)

    def is_denied(self, path: str) -> bool:
        """
        Whether the cleaned path is on the egg denylist.
        """
        return self._matcher.matches(clean_path(path))

    def check_denied(self, path: str) -> None:
        """
        Raise `Denied` when the cleaned path is on the egg denylist.
        """
        clean = clean_path(path)
        if self._matcher.matches(clean):
            raise Denied(clean)

    # -- resolution ------------------------------------------------------------------------------

    @property
    def owner(self) -> Owner:
        """
        ``(uid, gid)`` that created entries are given, or ``None`` (no chown).
        """
        return self._owner

    @property
    def quota(self) -> DiskQuota:
        """
        The disk-usage counter and limit of this volume.
        """
        return self._quota

    @contextmanager
    def directory(self, path: str, *, create: bool = False) -> Iterator[tuple[int, str]]:
        """
        The descriptor of directory ``path`` and its cleaned path, valid inside the ``with``
        block: the primitive the other modules of the package build whole operations on.

        :param create: make missing directories (0755, chowned) and keep them.
        """
        clean, parts = split_path(path)
        created: list[tuple[int, str]] | None = [] if create else None
        try:
            with self._directory(clean, parts, created) as fd:
                yield fd, clean
        finally:
            if created is not None:
                release_created(created, undo=False)

    def _directory(
        self,
        clean: str,
        parts: Sequence[str],
        created: list[tuple[int, str]] | None = None,
    ) -> ContextManager[int]:
        """
        The directory ``parts`` leads to, as `walk.directory` resolves it in this volume.
        """
        return walk.directory(self.root, clean, parts, owner=self._owner, created=created)

    # -- reading ---------------------------------------------------------------------------------

    def open_read(self, path: str, *, check_denylist: bool = True) -> tuple[int, os.stat_result]:
        """
        Open a regular file for reading without following its final component (`open_file`).

        :return: the descriptor (the caller closes it) and its ``fstat``; all size and time
            information must come from that ``fstat``.
        :raises NotFound: missing, escaping, or a final symlink.
        :raises IsDirectory: a directory (including the root).
        :raises SpecialFile: a FIFO, socket or device, which is not opened.
        :raises Denied: on the egg denylist (checked first).
        """
        with self.open_file(path, check_denylist=check_denylist) as handle:
            st = handle.fstat()
            return handle.detach(), st

    def lstat(self, path: str) -> os.stat_result:
        """
        The status of the entry itself (a symlink is described, not followed).
        """
        clean, parts = split_path(path)
        if not parts:
            with self._directory(clean, parts) as root:
                return os.fstat(root)
        with self._directory(clean, parts[:-1]) as parent:
            st = lstat_at(parent, parts[-1])
        if st is None:
            raise NotFound(clean)
        return st

    def follow_stat(self, path: str) -> os.stat_result:
        """
        The status of the entry, a final symlink followed when its text is relative and stays
        inside the volume (`walk.entry`); escaping or absolute link text is `NotFound`.
        """
        clean, parts = split_path(path)
        with walk.entry(self.root, clean, parts) as (directory, name):
            st = os.fstat(directory) if name is None else lstat_at(directory, name)
        if st is None:
            raise NotFound(clean)
        return st

    def stat(self, path: str) -> os.stat_result:
        """
        Like `lstat`, but a final symlink is `NotFound` (it is never followed).
        """
        st = self.lstat(path)
        if _stat.S_ISLNK(st.st_mode):
            raise NotFound(clean_path(path))
        return st

    def listdir(self, path: str) -> list[tuple[str, os.stat_result]]:
        """
        The entries of a directory with their ``lstat``, sorted by name bytes, without ``.``/``..``.

        Every component, the last included, is walked like an intermediate one, so a relative
        symlink to a directory inside the volume is listed; entries that vanish while listing are
        left out.
        """
        clean, parts = split_path(path)
        entries: list[tuple[str, os.stat_result]] = []
        with self._directory(clean, parts) as directory:
            with os.scandir(directory) as iterator:
                for entry in iterator:
                    try:
                        entries.append((entry.name, entry.stat(follow_symlinks=False)))
                    except FileNotFoundError:
                        continue
        entries.sort(key=lambda item: os.fsencode(item[0]))
        return entries

    # -- writing ---------------------------------------------------------------------------------

    def mkdir(self, path: str) -> None:
        """
        Create a directory and its missing parents (0755, chowned).

        An existing directory, or a relative symlink to one inside the volume, is success.
        :raises NotDirectory: a component, or the target, exists and is not a directory.
        """
        clean, parts = split_path(path)
        created: list[tuple[int, str]] = []
        try:
            with self._directory(clean, parts, created):
                pass
        except BaseException:
            release_created(created, undo=True)
            raise
        release_created(created, undo=False)

    def begin_write(self, directory: str, name: str, *, check_denylist: bool = True) -> AtomicWrite:
        """
        Start writing ``directory/name`` through a temporary file beside it.

        Missing directories are created (0755, chowned) and removed again if the write is aborted.
        :raises Denied: the destination is on the egg denylist (checked first).
        :raises NotDirectory: a component of the directory is an existing non-directory.
        :raises IsDirectory: the destination is a directory (or the root).
        :raises NotFound: the destination is a symlink, or the directory escapes the root.
        :raises SpecialFile: the destination is a FIFO, socket or device.
        """
        clean, parts = split_path(directory + "/" + name)
        if check_denylist:
            self.check_denied(clean)
        if not parts:
            raise IsDirectory(clean)
        created: list[tuple[int, str]] = []
        try:
            with self._directory(clean, parts[:-1], created) as parent:
                return begin_at(parent, parts[-1], clean, self._quota, self._owner, created)
        except BaseException:
            release_created(created, undo=True)
            raise

    def remove(self, path: str) -> int:
        """
        Remove a file, a symlink (never its target) or a directory tree, and subtract the regular
        file bytes removed from the usage.

        :return: the usage charged to what was removed (`quota.charge`).
        :raises NotFound: missing, escaping, or the volume root.
        """
        clean, parts = split_path(path)
        if not parts:
            raise NotFound(clean)
        with self._directory(clean, parts[:-1]) as parent:
            freed = tree.remove_at(parent, parts[-1], self._accounting)
        if freed is None:
            raise NotFound(clean)
        self.add_usage(-freed)
        return freed

    def rename(self, src: str, dst: str, *, check_denylist: bool = True,
               replace: bool = False) -> None:
        """
        Move an entry (a symlink itself, a directory with its contents) without overwriting, or
        with ``replace`` as ``rename(2)`` does (an existing file, link or empty directory is
        replaced; the usage drops by a replaced file's size).

        Missing parents of ``dst`` are created (0755, chowned).  Identical paths do nothing.
        :raises Denied: either path is on the egg denylist.
        :raises NotFound: ``src`` is missing, either path is the root or escapes.
        :raises AlreadyExists: ``dst`` exists.
        :raises InvalidMove: a directory would move into itself.
        """
        src_clean, src_parts = split_path(src)
        dst_clean, dst_parts = split_path(dst)
        if check_denylist:
            self.check_denied(src_clean)
            self.check_denied(dst_clean)
        if src_clean == dst_clean:
            return
        if not src_parts:
            raise NotFound(src_clean)
        if not dst_parts:
            raise NotFound(dst_clean)
        src_name, dst_name = src_parts[-1], dst_parts[-1]
        with self._directory(src_clean, src_parts[:-1]) as src_parent:
            if lstat_at(src_parent, src_name) is None:
                raise NotFound(src_clean)
            if dst_clean.startswith(src_clean + "/"):
                raise InvalidMove(dst_clean)
            created: list[tuple[int, str]] = []
            try:
                with self._directory(dst_clean, dst_parts[:-1], created) as dst_parent:
                    existing = lstat_at(dst_parent, dst_name)
                    if existing is not None and not replace:
                        raise AlreadyExists(dst_clean)
                    moving = lstat_at(src_parent, src_name)
                    try:
                        os.rename(src_name, dst_name, src_dir_fd=src_parent, dst_dir_fd=dst_parent)
                    except OSError as e:
                        if e.errno == errno.EINVAL:
                            raise InvalidMove(dst_clean) from None
                        if e.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
                            raise AlreadyExists(dst_clean) from None
                        if e.errno == errno.ENOENT:
                            raise NotFound(src_clean) from None
                        raise translate_error(e, dst_clean) from None
                    if (existing is not None and _stat.S_ISREG(existing.st_mode) and moving
                            and (moving.st_dev, moving.st_ino) != (existing.st_dev,
                                                                   existing.st_ino)):
                        self.add_usage(-existing.st_size)
            except BaseException:
                release_created(created, undo=True)
                raise
            release_created(created, undo=False)

    # -- handles and attributes (SFTP) -----------------------------------------------------------

    def open_file(
        self,
        path: str,
        *,
        read: bool = True,
        write: bool = False,
        create: bool = False,
        exclusive: bool = False,
        truncate: bool = False,
        append: bool = False,
        mode: int = FILE_MODE,
        check_denylist: bool = True,
        make_parents: bool = False,
    ) -> FileHandle:
        """
        Open a regular file for positional reads and/or writes (`wings_twisted.fs.handles`).

        ``create``, ``truncate`` and ``append`` need ``write``, ``exclusive`` needs ``create``
        (`ValueError` otherwise).  Missing parent directories are created (0755, chowned) only with
        ``make_parents`` (and removed again if the open fails).  A created file gets
        ``mode & 0o7777`` and the volume's owner; ``truncate`` credits the bytes freed.
        :raises Denied: on the egg denylist (checked first).
        :raises NotFound: missing without ``create``, escaping, a missing parent, a final symlink.
        :raises AlreadyExists: ``exclusive`` and the entry exists (whatever it is).
        :raises IsDirectory: a directory (including the root).
        :raises SpecialFile: a FIFO, socket or device, which is not opened.
        :raises QuotaExceeded: ``truncate`` while the volume is over its limit.
        """
        clean, parts = split_path(path)
        if check_denylist:
            self.check_denied(clean)
        if not parts:
            raise IsDirectory(clean)
        created: list[tuple[int, str]] | None = [] if make_parents else None
        try:
            with self._directory(clean, parts[:-1], created) as parent:
                handle = handles.open_at(
                    parent, parts[-1], clean, self._quota, self._owner, read=read, write=write,
                    create=create, exclusive=exclusive, truncate=truncate, append=append,
                    mode=mode,
                )
        except BaseException:
            release_created(created or [], undo=True)
            raise
        release_created(created or [], undo=False)
        return handle

    def setstat(
        self,
        path: str,
        *,
        mode: int | None = None,
        size: int | None = None,
        atime_mtime: tuple[float, float] | None = None,
    ) -> None:
        """
        Change the attributes given of the entry itself, never through a final symlink: the size
        (through the quota, like `FileHandle.truncate`), then ``mode & 0o7777``, then the times.

        :raises NotFound: missing, escaping, a final symlink, or the volume root.
        :raises IsDirectory: a size for a directory.
        :raises SpecialFile: a size for a FIFO, socket or device.
        :raises QuotaExceeded: the size would grow the file beyond the limit.
        """
        clean, parts = split_path(path)
        if not parts:
            raise NotFound(clean)
        with self._directory(clean, parts[:-1]) as parent:
            handles.setstat_at(
                parent, parts[-1], clean, self._quota, mode=mode, size=size,
                atime_mtime=atime_mtime,
            )

    def symlink(self, path: str, target: str, *, check_denylist: bool = True) -> None:
        """
        Create the symlink ``path`` whose text is ``target``, stored verbatim (`handles.symlink_at`).

        :raises Denied: the link path is on the egg denylist.
        :raises AlreadyExists: ``path`` exists, or is the root.
        """
        clean, parts = split_path(path)
        if check_denylist:
            self.check_denied(clean)
        if not parts:
            raise AlreadyExists(clean)
        with self._directory(clean, parts[:-1]) as parent:
            handles.symlink_at(parent, parts[-1], clean, target, self._owner)

    def readlink(self, path: str) -> str:
        """
        The text of the symlink that is the final component of ``path``, exactly as stored.

        :raises NotFound: missing, escaping, not a symlink, or the volume root.
        """
        clean, parts = split_path(path)
        if not parts:
            raise NotFound(clean)
        with self._directory(clean, parts[:-1]) as parent:
            return handles.read_link_at(parent, parts[-1], clean)

    def chown_all(self) -> None:
        """
        Give the volume and everything in it to ``uid:gid`` (``check_permissions_on_boot``),
        never following a link: each entry is changed through its parent's descriptor.
        """
        if self._owner is not None:
            tree.chown_tree(self.root, *self._owner)
