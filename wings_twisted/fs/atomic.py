"""
Whole-file writes through a hidden temporary file beside the destination, renamed into place.

`Volume.begin_write` resolves the destination and creates the temporary file; an `AtomicWrite`
then only works through the descriptors it was handed (the destination directory and the
temporary file), so nothing it does can be redirected by a path swapped meanwhile.  Readers see the
old file or the complete new one, never a partial write.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat as _stat
from typing import Sequence

from .paths import (
    FILE_MODE,
    AlreadyExists,
    IsDirectory,
    NotFound,
    Owner,
    QuotaExceeded,
    check_regular,
    give,
    lstat_at,
    release_created,
    translate_error,
)
from .quota import DiskQuota
from .tree import TEMP_PREFIX, TEMP_SUFFIX

__all__ = ["AtomicWrite", "begin_at"]

_IOV_MAX = 1024
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _create_temp(dir_fd: int, clean: str) -> tuple[str, int]:
    """
    Create a fresh hidden temporary file (mode 0600) in a directory for a write to ``clean``.

    :return: its base name and a write-only descriptor.
    """
    for _ in range(16):
        temp_name = "%s%s%s" % (TEMP_PREFIX, secrets.token_hex(8), TEMP_SUFFIX)
        try:
            return temp_name, os.open(temp_name, _TEMP_FLAGS, 0o600, dir_fd=dir_fd)
        except FileExistsError:
            continue
        except OSError as e:
            raise translate_error(e, clean) from None
    raise OSError(errno.EEXIST, "no free temporary name", clean)


class AtomicWrite:
    """
    A file being written through a hidden temporary file beside its destination.

    Use `write` for each chunk, then `commit` to rename it over the destination, or `abort` (or
    `close`, or leave the ``with`` block) to discard it together with the directories that
    `Volume.begin_write` created.  Not thread-safe: one writer at a time.
    """

    def __init__(
        self,
        quota: DiskQuota,
        owner: Owner,
        path: str,
        dir_fd: int,
        name: str,
        temp_name: str,
        temp_fd: int,
        created: list[tuple[int, str]],
        old_size: int,
        old_charge: int | None = None,
    ) -> None:
        """
        Take over the descriptors `Volume.begin_write` opened; they are closed by `commit` or
        `abort`.

        :param quota: the volume's counter, checked before each chunk and adjusted on commit.
        :param owner: given the file on commit.
        :param path: the cleaned destination path, for errors.
        :param dir_fd: the destination directory.
        :param name: the destination's name in it.
        :param created: the directories created for this write (see `release_created`).
        :param old_size: the size of the file replaced when the write began.
        :param old_charge: what that file is charged (`quota.charge`); from ``old_size`` if not
            given.
        """
        self.path = path
        self.received = 0
        self._quota = quota
        self._owner = owner
        self._dir_fd = dir_fd
        self._name = name
        self._temp_name = temp_name
        self._temp_fd = temp_fd
        self._created = created
        self._old_size = old_size
        self._accounting = quota.accounting
        self._old_charge = (self._accounting.charge_size(old_size) if old_size else 0) \
            if old_charge is None else old_charge
        # The growth written so far, held against the limit until commit (quota.Reservation).
        self._reservation = quota.reserve()
        self._state = "open"

    @property
    def temp_name(self) -> str:
        """
        The base name of the temporary file in the destination directory.
        """
        return self._temp_name

    def __enter__(self) -> AtomicWrite:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """
        Append ``data`` to the temporary file after reserving what the file would then cost.

        :raises QuotaExceeded: the charge of the bytes received including this chunk, less the
            charge of the file replaced, does not fit beside usage and the other writes in
            progress; nothing of the chunk is written.
        """
        if self._state != "open":
            raise ValueError("write on a finished AtomicWrite")
        view = memoryview(data).cast("B")
        after = self.received + len(view)
        self._reserve(after)
        while view:
            written = os.write(self._temp_fd, view)
            view = view[written:]
        self.received = after

    def write_many(self, chunks: Sequence[bytes | bytearray | memoryview]) -> None:
        """
        Append several chunks with as few ``writev`` calls as possible (one quota check for
        the batch).  Batching matters to callers in worker threads: each system call there is a
        GIL hand-off.

        :raises QuotaExceeded: the batch would not fit; nothing of it is written.
        """
        if self._state != "open":
            raise ValueError("write on a finished AtomicWrite")
        views = [memoryview(c).cast("B") for c in chunks]
        after = self.received + sum(len(v) for v in views)
        self._reserve(after)
        while views:
            written = os.writev(self._temp_fd, views[:_IOV_MAX])
            while views and written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            if written:
                views[0] = views[0][written:]
        self.received = after

    def _reserve(self, after: int) -> None:
        if not self._reservation.require(self._accounting.charge_size(after) - self._old_charge):
            raise QuotaExceeded(self.path)

    @property
    def reserved(self) -> int:
        """
        The bytes this write holds against the limit.
        """
        return self._reservation.held

    def commit(self, *, mode: int | None = None, mtime: float | None = None,
               replace: bool = True) -> None:
        """
        Rename the temporary file over the destination and account for it.

        The mode is ``mode`` when given, else that of the regular file replaced (``st_mode &
        0o7777``, read now) or 0644; the owner is the volume's ``uid:gid``.  On any failure the
        write is aborted.
        :param mtime: set as the file's access and modification time (extraction).
        :param replace: with ``False`` an existing destination is `AlreadyExists` and left alone
            (the file is linked into place, which cannot overwrite).
        :raises IsDirectory: the destination became a directory meanwhile.
        """
        if self._state != "open":
            raise ValueError("commit on a finished AtomicWrite")
        try:
            st = lstat_at(self._dir_fd, self._name)
            final_mode = FILE_MODE
            old_charge = 0
            if st is not None:
                if not replace:
                    raise AlreadyExists(self.path)
                if _stat.S_ISDIR(st.st_mode):
                    raise IsDirectory(self.path)
                if _stat.S_ISREG(st.st_mode):
                    final_mode = _stat.S_IMODE(st.st_mode)
                    old_charge = self._accounting.charge(st)
            if mode is not None:
                final_mode = mode & 0o7777
            new_charge = self._accounting.charge(os.fstat(self._temp_fd))
            # chown before chmod: changing the owner clears set-user/group-ID bits.
            give(self._temp_fd, self._owner)
            os.fchmod(self._temp_fd, final_mode)
            if mtime is not None:
                os.utime(self._temp_fd, (mtime, mtime))
            try:
                if replace:
                    os.rename(self._temp_name, self._name, src_dir_fd=self._dir_fd,
                              dst_dir_fd=self._dir_fd)
                else:
                    os.link(self._temp_name, self._name, src_dir_fd=self._dir_fd,
                            dst_dir_fd=self._dir_fd, follow_symlinks=False)
                    os.unlink(self._temp_name, dir_fd=self._dir_fd)
            except FileExistsError:
                raise AlreadyExists(self.path) from None
            except OSError as e:
                raise translate_error(e, self.path) from None
        except BaseException:
            self.abort()
            raise
        self._state = "committed"
        os.close(self._temp_fd)
        os.close(self._dir_fd)
        release_created(self._created, undo=False)
        self._reservation.commit(new_charge - old_charge)

    def abort(self) -> None:
        """
        Discard the write: remove the temporary file and the directories created for it (deepest
        first, only while empty).  Idempotent; does nothing after a commit.
        """
        if self._state != "open":
            return
        self._state = "aborted"
        self._reservation.release()
        try:
            os.close(self._temp_fd)
        finally:
            try:
                os.unlink(self._temp_name, dir_fd=self._dir_fd)
            except OSError:
                pass
            os.close(self._dir_fd)
            release_created(self._created, undo=True)

    def close(self) -> None:
        """
        Abort unless committed.
        """
        self.abort()


def begin_at(
    parent: int,
    name: str,
    clean: str,
    quota: DiskQuota,
    owner: Owner,
    created: list[tuple[int, str]],
) -> AtomicWrite:
    """
    Start writing ``name`` in the directory ``parent`` through a temporary file beside it (see
    `Volume.begin_write`).

    The write works on a duplicate of ``parent`` and takes over ``created``, the directories the
    walk created for it; when this raises, ``created`` is still the caller's.
    :raises NotFound: the destination is a symlink.
    :raises IsDirectory: the destination is a directory.
    :raises SpecialFile: the destination is a FIFO, socket or device.
    """
    st = lstat_at(parent, name)
    old_size = 0
    old_charge = 0
    if st is not None:
        if _stat.S_ISLNK(st.st_mode):
            raise NotFound(clean)
        check_regular(st, clean)
        old_size = st.st_size
        old_charge = quota.accounting.charge(st)
    dir_fd = os.dup(parent)
    try:
        temp_name, temp_fd = _create_temp(dir_fd, clean)
    except BaseException:
        os.close(dir_fd)
        raise
    return AtomicWrite(quota, owner, clean, dir_fd, name, temp_name, temp_fd, created, old_size,
                       old_charge)
