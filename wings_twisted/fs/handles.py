"""
Open files of a volume used through a handle, and the by-path attribute changes SFTP needs.

A whole-file write through a temporary file (`wings_twisted.fs.atomic`) cannot serve SFTP: a client
opens a file for reading and/or writing, writes at offsets without truncating (resumed uploads),
reads at offsets, and changes attributes of an open file or of a path.  `Volume.open_file` resolves
the parent directory with the usual walk and then calls `open_at`, which opens the final component
relative to that descriptor:

* it is never followed (``O_NOFOLLOW``): a final symlink is `NotFound`, as everywhere else;
* it is classified with ``lstat`` first, so that a FIFO, socket or device node is not even opened
  (opening a device can have side effects), opened with ``O_NONBLOCK`` (a FIFO swapped in
  meanwhile cannot block) and confirmed with ``fstat``: directories are `IsDirectory`, anything
  else that is not a regular file `SpecialFile`;
* a missing file is created only when asked (``O_CREAT | O_EXCL``, so nothing that appeared
  meanwhile is ever taken for new); missing parent directories are *not* created; the new file
  gets the requested mode and the volume's owner through its descriptor, never by name.

Every write through a `FileHandle` passes the quota (``api.md`` §2.13, ``sftp.md`` §6.5): the
growth of the file, ``max(0, end of the write - current size)``, must fit before anything is
written, and the usage counter grows by what was actually added.  Overwriting in place costs
nothing; truncating credits the bytes freed.  Like every fits check, a write that adds nothing is
still refused while the volume is over its limit (or the limit is -1).

`setstat_at` changes mode, size and times of the entry itself through an ``O_PATH | O_NOFOLLOW``
descriptor: ``chmod`` and ``utimensat`` go through that descriptor's ``/proc/self/fd`` link (what
the C library does for ``fchmodat(AT_SYMLINK_NOFOLLOW)``), so a name swapped meanwhile is never
acted on, and a size change reopens that same inode for writing.
"""

from __future__ import annotations

import errno
import io
import os
import stat as _stat

from .paths import (
    AlreadyExists,
    NotFound,
    Owner,
    QuotaExceeded,
    check_regular,
    give,
    lstat_at,
    translate_error,
)
from .quota import DiskQuota

__all__ = ["FileHandle", "open_at", "read_link_at", "setstat_at", "symlink_at"]

#: Added to the access mode of every open: never through a final symlink, never blocking on a
#: FIFO, never acquiring a controlling terminal.
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
#: A descriptor that names an entry without opening it (no read or write access needed, no side
#: effects on a device), never through a final symlink.
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
#: Times the file may appear or vanish between the ``lstat`` and the open before we give up.
_OPEN_ATTEMPTS = 4


class FileHandle:
    """
    An open regular file of a volume: positional reads and writes that pass the quota, and the
    attribute changes of an open file.

    Made by `Volume.open_file`.  One handle is meant to be used by one thread at a time; the
    volume's usage counter it updates is shared and locked.  Close it (or leave the ``with``
    block); every other method then raises `ValueError`.
    """

    def __init__(
        self, fd: int, path: str, quota: DiskQuota, *, readable: bool, writable: bool, append: bool
    ) -> None:
        """
        Take over ``fd``, an open regular file; `close` closes it.

        :param path: the cleaned volume path, for errors.
        :param quota: the volume's usage counter, checked and adjusted by writes.
        :param append: the descriptor has ``O_APPEND``: every write goes to the end of the file.
        """
        self.path = path
        #: Whether the open that made this handle created the file (``open_at`` sets it).
        self.created = False
        self._fd = fd
        self._quota = quota
        self._readable = readable
        self._writable = writable
        self._append = append

    def __enter__(self) -> FileHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open_fd(self) -> int:
        if self._fd < 0:
            raise ValueError("operation on a closed FileHandle")
        return self._fd

    def _writable_fd(self) -> int:
        fd = self._open_fd()
        if not self._writable:
            raise io.UnsupportedOperation("FileHandle not opened for writing")
        return fd

    def pread(self, offset: int, length: int) -> bytes:
        """
        Read up to ``length`` bytes at ``offset``; fewer only at the end of the file (``b""``
        at or past it).
        """
        fd = self._open_fd()
        if not self._readable:
            raise io.UnsupportedOperation("FileHandle not opened for reading")
        if offset < 0 or length < 0:
            raise ValueError("negative offset or length")
        chunks: list[bytes] = []
        while length > 0:
            chunk = os.pread(fd, length, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return b"".join(chunks)

    def pwrite(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        """
        Write all of ``data`` at ``offset`` (at the end of the file for a handle opened with
        ``append``), without truncating anything after it.

        :return: the number of bytes written, ``len(data)``.
        :raises QuotaExceeded: the growth of the file does not fit; nothing is written.
        """
        fd = self._writable_fd()
        if offset < 0:
            raise ValueError("negative offset")
        view = memoryview(data).cast("B")
        before = os.fstat(fd)
        size = before.st_size
        if self._append:
            offset = size
        # An empty write extends nothing, whatever its offset.
        end = offset + len(view) if view else size
        rule = self._quota.accounting
        if not self._quota.fits(max(0, rule.charge_size(max(end, size)) - rule.charge_size(size))):
            raise QuotaExceeded(self.path)
        position = offset
        try:
            while view:
                # With O_APPEND Linux appends whatever the offset: position still tracks the end.
                written = os.pwrite(fd, view, position)
                view = view[written:]
                position += written
        finally:
            # Account what was added even when a write fails half-way (ENOSPC, EIO).
            if position > offset:
                self._quota.add(rule.charge(os.fstat(fd)) - rule.charge(before))
        return position - offset

    def fstat(self) -> os.stat_result:
        """
        The status of the open file.
        """
        return os.fstat(self._open_fd())

    def truncate(self, size: int) -> None:
        """
        Cut or extend the file to ``size`` bytes (an extension reads as zeros).

        :raises QuotaExceeded: the growth does not fit; the file is unchanged.
        """
        fd = self._writable_fd()
        if size < 0:
            raise ValueError("negative size")
        before = os.fstat(fd)
        current = before.st_size
        rule = self._quota.accounting
        if not self._quota.fits(max(0, rule.charge_size(size) - rule.charge_size(current))):
            raise QuotaExceeded(self.path)
        os.ftruncate(fd, size)
        self._quota.add(rule.charge(os.fstat(fd)) - rule.charge(before))

    def chmod(self, mode: int) -> None:
        """
        Set the permission bits (``mode & 0o7777``) of the open file.
        """
        os.fchmod(self._open_fd(), mode & 0o7777)

    def utime(self, atime: float, mtime: float) -> None:
        """
        Set the access and modification times of the open file, in seconds since the epoch.
        """
        os.utime(self._open_fd(), (atime, mtime))

    def sync(self) -> None:
        """
        Flush the file's data and metadata to the disk (``fsync``).
        """
        os.fsync(self._open_fd())

    def detach(self) -> int:
        """
        Hand the descriptor over to the caller, who closes it; the handle is then closed.
        """
        fd = self._open_fd()
        self._fd = -1
        return fd

    def close(self) -> None:
        """
        Close the descriptor; idempotent.
        """
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


def _access(
    read: bool, write: bool, create: bool, exclusive: bool, truncate: bool, append: bool
) -> int:
    """
    The access mode for the open flags, refusing combinations that make no sense.
    """
    if not (read or write):
        raise ValueError("open for neither reading nor writing")
    if (create or truncate or append) and not write:
        raise ValueError("create, truncate and append need write")
    if exclusive and not create:
        raise ValueError("exclusive needs create")
    access = os.O_RDWR if read and write else os.O_WRONLY if write else os.O_RDONLY
    return access | (os.O_APPEND if append else 0)


def open_at(
    parent: int,
    name: str,
    clean: str,
    quota: DiskQuota,
    owner: Owner,
    *,
    read: bool,
    write: bool,
    create: bool,
    exclusive: bool,
    truncate: bool,
    append: bool,
    mode: int,
) -> FileHandle:
    """
    Open (or create) the regular file ``name`` of the directory ``parent`` as the module
    docstring describes; see `Volume.open_file` for the flags and errors.
    """
    flags = _access(read, write, create, exclusive, truncate, append) | _OPEN_FLAGS
    fd, created = _open_regular(parent, name, clean, flags, create, exclusive)
    st: os.stat_result | None = None
    try:
        st = os.fstat(fd)
        check_regular(st, clean)
        if created:
            # chown before chmod: changing the owner clears set-user/group-ID bits.
            give(fd, owner)
            os.fchmod(fd, mode & 0o7777)
        handle = FileHandle(fd, clean, quota, readable=read, writable=write, append=append)
        handle.created = created
        if created:
            quota.add(quota.accounting.charge(os.fstat(fd)))
        if truncate and st.st_size:
            handle.truncate(0)
    except BaseException:
        os.close(fd)
        if created:
            _unlink_if_same(parent, name, st)
        raise
    return handle


def _open_regular(
    parent: int, name: str, clean: str, flags: int, create: bool, exclusive: bool
) -> tuple[int, bool]:
    """
    Classify ``name`` with ``lstat`` and open it if it is a regular file, or create it.

    :return: the descriptor and whether this call created the file.
    """
    for _ in range(_OPEN_ATTEMPTS):
        st = lstat_at(parent, name)
        if st is None:
            if not create:
                raise NotFound(clean)
            try:
                # Private until chowned and chmodded through the descriptor.
                return os.open(name, flags | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=parent), True
            except FileExistsError:
                if exclusive:
                    raise AlreadyExists(clean) from None
                continue
            except OSError as e:
                raise translate_error(e, clean) from None
        if exclusive:
            raise AlreadyExists(clean)
        if _stat.S_ISLNK(st.st_mode):
            raise NotFound(clean)
        check_regular(st, clean)
        try:
            return os.open(name, flags, dir_fd=parent), False
        except FileNotFoundError:
            if not create:
                raise NotFound(clean) from None
            continue
        except OSError as e:
            raise translate_error(e, clean) from None
    # Something keeps creating and removing the name.
    raise NotFound(clean)


def _unlink_if_same(parent: int, name: str, st: os.stat_result | None) -> None:
    """
    Remove the file a failed open created, unless the name now stands for something else.
    """
    current = lstat_at(parent, name)
    if st is None or current is None:
        return
    if (current.st_dev, current.st_ino) == (st.st_dev, st.st_ino):
        try:
            os.unlink(name, dir_fd=parent)
        except OSError:
            pass


def _proc(fd: int) -> str:
    """
    The ``/proc`` link of a descriptor: using it reaches the inode the descriptor holds.
    """
    return "/proc/self/fd/%d" % (fd,)


def setstat_at(
    parent: int,
    name: str,
    clean: str,
    quota: DiskQuota,
    *,
    mode: int | None,
    size: int | None,
    atime_mtime: tuple[float, float] | None,
) -> None:
    """
    Change the attributes given of the entry ``name`` of ``parent`` itself, as the module
    docstring describes; see `Volume.setstat`.
    """
    try:
        fd = os.open(name, _PATH_FLAGS, dir_fd=parent)
    except OSError as e:
        raise translate_error(e, clean) from None
    try:
        st = os.fstat(fd)
        if _stat.S_ISLNK(st.st_mode):
            raise NotFound(clean)
        if size is not None:
            check_regular(st, clean)
            try:
                # Not O_NOFOLLOW: the /proc link is the one symlink that must be followed here.
                writable = os.open(_proc(fd), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as e:
                raise translate_error(e, clean) from None
            handle = FileHandle(
                writable, clean, quota, readable=False, writable=True, append=False
            )
            with handle:
                check_regular(handle.fstat(), clean)
                handle.truncate(size)
        # Mode after size, times last: truncating would move the modification time again.
        if mode is not None:
            os.chmod(_proc(fd), mode & 0o7777)
        if atime_mtime is not None:
            os.utime(_proc(fd), atime_mtime)
    finally:
        os.close(fd)


def read_link_at(parent: int, name: str, clean: str) -> str:
    """
    The text of the symlink ``name`` of ``parent``, exactly as stored.

    :raises NotFound: missing, or not a symlink.
    """
    try:
        return os.readlink(name, dir_fd=parent)
    except OSError as e:
        if e.errno == errno.EINVAL:
            raise NotFound(clean) from None
        raise translate_error(e, clean) from None


def symlink_at(parent: int, name: str, clean: str, target: str, owner: Owner) -> None:
    """
    Create the symlink ``name`` of ``parent`` with the text ``target`` stored exactly as given
    (it may point anywhere: the walk never follows absolute or escaping links), given to
    ``owner`` without following it.

    :raises AlreadyExists: the name exists (whatever it is).
    :raises NotFound: ``target`` holds a NUL byte or cannot be encoded.
    """
    try:
        os.symlink(target, name, dir_fd=parent)
    except FileExistsError:
        raise AlreadyExists(clean) from None
    except (ValueError, UnicodeEncodeError):
        raise NotFound(clean) from None
    except OSError as e:
        raise translate_error(e, clean) from None
    if owner is not None:
        try:
            os.chown(name, owner[0], owner[1], dir_fd=parent, follow_symlinks=False)
        except OSError:
            # As upstream: a failed chown does not fail the operation.
            pass
