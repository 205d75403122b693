"""
The sandboxed view of one server volume that every file feature goes through.

Pure, synchronous code with no Twisted imports: callers run these methods in worker threads.

Resolution (``api.md`` §2.11) never turns a client path into a host path string.  A path is first
cleaned lexically (`clean_path`: a leading ``/`` is the volume root, ``//`` and ``.`` collapse,
``..`` is clamped at the root, backslashes are ordinary characters).  The walk then opens the
volume root once and every further component with ``openat(O_DIRECTORY | O_NOFOLLOW)`` relative to
the descriptor of its parent, keeping the stack of open directory descriptors:

* an intermediate symlink is accepted only when its text is relative: its components are spliced
  into the rest of the walk, a ``..`` pops the descriptor stack and one that would pop the root
  fails, and at most `MAX_LINK_HOPS` links are followed per walk;
* the final component is never followed for open, read, write or stat; delete, rename and
  `Volume.lstat` act on a link itself;
* because every step is an ``openat`` with ``O_NOFOLLOW`` from a descriptor already held, swapping a
  directory for a symlink concurrently can only make the walk fail, never leave the root.

Failures are reported with the `FsError` subclasses below; unexpected operating-system errors
(permissions, ``EMFILE``, I/O errors) propagate as `OSError` and are 500s for the HTTP layer.

The quota counter (``api.md`` §2.13) is the only shared mutable state; it is guarded by a lock.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat as _stat
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

from .ignore import IgnoreMatcher

__all__ = [
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

#: Longest file name component, in bytes (Linux ``NAME_MAX``).
NAME_MAX = 255
#: Longest cleaned path, in bytes, including a terminating NUL (Linux ``PATH_MAX``).
PATH_MAX = 4096
#: Symlinks followed in one walk, as the kernel's own limit.
MAX_LINK_HOPS = 40
#: Directory descriptors one walk may hold; deeper walks fail with `NameTooLong`.
MAX_DEPTH = 512
#: Directory descriptors a tree walk (usage, recursive delete) holds at most.
_TREE_FD_DEPTH = 64

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_IOV_MAX = 1024
_DIR_MODE = 0o755
_FILE_MODE = 0o644


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


def _split(path: str) -> tuple[str, list[str]]:
    """
    Clean a path and validate its components before anything touches the disk.
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


def _translate(error: OSError, path: str) -> Exception:
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
    return error


def _lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """
    ``fstatat(AT_SYMLINK_NOFOLLOW)`` of one entry, ``None`` when it does not exist.
    """
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _close_all(fds: Sequence[int]) -> None:
    for fd in reversed(fds):
        try:
            os.close(fd)
        except OSError:
            pass


class Volume:
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
    ) -> None:
        """
        :param root: host path of the volume directory (made absolute).
        :param disk_limit_bytes: 0 is unlimited; -1 refuses every write.
        :param disk_check_interval: seconds between usage walks; 0 never walks.
        :param clock: monotonic seconds, used only to age the usage walk.
        :param chown: give created files and directories to ``uid:gid``.
        """
        self.root = os.path.abspath(root)
        self._uid = uid
        self._gid = gid
        self._chown = chown
        self._matcher = IgnoreMatcher(denylist)
        self._limit = disk_limit_bytes
        self._interval = disk_check_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._walk_lock = threading.Lock()
        self._usage = 0
        self._last_walk: float | None = None

    # -- volume directory ------------------------------------------------------------------------

    def ensure_root(self) -> None:
        """
        Create the volume directory (mode 0700; missing parents 0755) and give it to ``uid:gid``.

        A volume path that exists as a symlink is refused with `OSError` (``ELOOP``).
        """
        os.makedirs(os.path.dirname(self.root), _DIR_MODE, exist_ok=True)
        try:
            os.mkdir(self.root, 0o700)
        except FileExistsError:
            pass
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            if self._chown:
                os.fchown(fd, self._uid, self._gid)
        finally:
            os.close(fd)

    def remove_root(self) -> None:
        """
        Remove the whole volume without following any link; a missing volume is fine.
        """
        parent, base = os.path.split(self.root)
        try:
            parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            st = _lstat_at(parent_fd, base)
            if st is None:
                return
            if _stat.S_ISDIR(st.st_mode):
                self._remove_tree(parent_fd, base)
            else:
                os.unlink(base, dir_fd=parent_fd)
        finally:
            os.close(parent_fd)
        with self._lock:
            self._usage = 0
            self._last_walk = None

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

    def _open_root(self, clean: str) -> int:
        try:
            return os.open(self.root, _DIR_FLAGS)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                raise NotFound(clean) from None
            raise

    def _descend(
        self,
        stack: list[int],
        parts: Sequence[str],
        clean: str,
        created: list[tuple[int, str]] | None,
    ) -> None:
        """
        Walk ``parts`` as directories from ``stack[-1]``, pushing one descriptor per level.

        :param created: when given, missing directories are created (0755, chowned) and recorded
            as ``(duplicate of the parent descriptor, name)``, shallowest first.
        """
        pending = list(reversed(parts))
        hops = 0
        mkdir_attempts = 0
        just_created: str | None = None
        while pending:
            name = pending.pop()
            created_now = just_created == name
            just_created = None
            if name == "" or name == ".":
                continue
            if name == "..":
                # Only link text can bring a ".." here: clean_path removed the client's.
                if len(stack) == 1:
                    raise NotFound(clean)
                os.close(stack.pop())
                continue
            if len(os.fsencode(name)) > NAME_MAX:
                raise NameTooLong(clean)
            if len(stack) > MAX_DEPTH:
                raise NameTooLong(clean)
            top = stack[-1]
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=top)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    try:
                        target = os.readlink(name, dir_fd=top)
                    except OSError:
                        # Not a symlink (or no longer one).
                        raise _translate(e, clean) from None
                    hops += 1
                    if hops > MAX_LINK_HOPS or target == "" or target.startswith("/"):
                        raise NotFound(clean) from None
                    pending.extend(reversed(target.split("/")))
                    continue
                if e.errno == errno.ENOENT and created is not None:
                    # Bounded, in case something keeps removing what we create.
                    mkdir_attempts += 1
                    if mkdir_attempts > 2 * MAX_DEPTH:
                        raise NotFound(clean) from None
                    try:
                        os.mkdir(name, _DIR_MODE, dir_fd=top)
                    except FileExistsError:
                        pass
                    except OSError as mkdir_error:
                        raise _translate(mkdir_error, clean) from None
                    else:
                        just_created = name
                    pending.append(name)
                    continue
                raise _translate(e, clean) from None
            stack.append(fd)
            if created_now and created is not None:
                # Set the mode and owner through the descriptor: the name could have been
                # swapped since mkdir, the descriptor cannot.
                os.fchmod(fd, _DIR_MODE)
                if self._chown:
                    os.fchown(fd, self._uid, self._gid)
                created.append((os.dup(top), name))

    @contextmanager
    def _directory(
        self,
        clean: str,
        parts: Sequence[str],
        created: list[tuple[int, str]] | None = None,
    ) -> Iterator[int]:
        """
        The descriptor of the directory ``parts`` leads to, valid inside the ``with`` block.
        """
        stack = [self._open_root(clean)]
        try:
            self._descend(stack, parts, clean, created)
            yield stack[-1]
        finally:
            _close_all(stack)

    @staticmethod
    def _release(created: list[tuple[int, str]], *, undo: bool) -> None:
        """
        Close the descriptors recorded for created directories; with ``undo``, first remove the
        directories again, deepest first, each only if it is still empty.
        """
        for parent_fd, name in reversed(created):
            if undo:
                try:
                    os.rmdir(name, dir_fd=parent_fd)
                except OSError:
                    pass
            os.close(parent_fd)
        created.clear()

    # -- reading ---------------------------------------------------------------------------------

    def open_read(self, path: str, *, check_denylist: bool = True) -> tuple[int, os.stat_result]:
        """
        Open a regular file for reading without following its final component.

        :return: the descriptor (the caller closes it) and its ``fstat``; all size and time
            information must come from that ``fstat``.
        :raises NotFound: missing, escaping, or a final symlink.
        :raises IsDirectory: a directory (including the root).
        :raises SpecialFile: a FIFO, socket or device, which is not opened.
        :raises Denied: on the egg denylist (checked first).
        """
        clean, parts = _split(path)
        if check_denylist:
            self.check_denied(clean)
        if not parts:
            raise IsDirectory(clean)
        name = parts[-1]
        with self._directory(clean, parts[:-1]) as parent:
            # Classify first, so that a device node or FIFO is not even opened (opening a device
            # can have side effects); the fstat below is the authoritative check.
            st = _lstat_at(parent, name)
            if st is None or _stat.S_ISLNK(st.st_mode):
                raise NotFound(clean)
            self._check_regular(st, clean)
            try:
                fd = os.open(name, _READ_FLAGS, dir_fd=parent)
            except OSError as e:
                raise _translate(e, clean) from None
        try:
            st = os.fstat(fd)
            self._check_regular(st, clean)
        except BaseException:
            os.close(fd)
            raise
        return fd, st

    @staticmethod
    def _check_regular(st: os.stat_result, clean: str) -> None:
        if _stat.S_ISDIR(st.st_mode):
            raise IsDirectory(clean)
        if not _stat.S_ISREG(st.st_mode):
            raise SpecialFile(clean)

    def lstat(self, path: str) -> os.stat_result:
        """
        The status of the entry itself (a symlink is described, not followed).
        """
        clean, parts = _split(path)
        if not parts:
            with self._directory(clean, parts) as root:
                return os.fstat(root)
        with self._directory(clean, parts[:-1]) as parent:
            st = _lstat_at(parent, parts[-1])
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
        clean, parts = _split(path)
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
        clean, parts = _split(path)
        created: list[tuple[int, str]] = []
        try:
            with self._directory(clean, parts, created):
                pass
        except BaseException:
            self._release(created, undo=True)
            raise
        self._release(created, undo=False)

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
        clean, parts = _split(directory + "/" + name)
        if check_denylist:
            self.check_denied(clean)
        if not parts:
            raise IsDirectory(clean)
        final = parts[-1]
        created: list[tuple[int, str]] = []
        dir_fd = -1
        try:
            with self._directory(clean, parts[:-1], created) as parent:
                st = _lstat_at(parent, final)
                old_size = 0
                if st is not None:
                    if _stat.S_ISLNK(st.st_mode):
                        raise NotFound(clean)
                    self._check_regular(st, clean)
                    old_size = st.st_size
                dir_fd = os.dup(parent)
            temp_name, temp_fd = self._create_temp(dir_fd, clean)
        except BaseException:
            if dir_fd >= 0:
                os.close(dir_fd)
            self._release(created, undo=True)
            raise
        return AtomicWrite(self, clean, dir_fd, final, temp_name, temp_fd, created, old_size)

    @staticmethod
    def _create_temp(dir_fd: int, clean: str) -> tuple[str, int]:
        for _ in range(16):
            temp_name = ".upload-%s.part" % (secrets.token_hex(8),)
            try:
                return temp_name, os.open(temp_name, _TEMP_FLAGS, 0o600, dir_fd=dir_fd)
            except FileExistsError:
                continue
            except OSError as e:
                raise _translate(e, clean) from None
        raise OSError(errno.EEXIST, "no free temporary name", clean)

    def remove(self, path: str) -> int:
        """
        Remove a file, a symlink (never its target) or a directory tree, and subtract the regular
        file bytes removed from the usage.

        :return: the regular-file bytes removed.
        :raises NotFound: missing, escaping, or the volume root.
        """
        clean, parts = _split(path)
        if not parts:
            raise NotFound(clean)
        name = parts[-1]
        with self._directory(clean, parts[:-1]) as parent:
            st = _lstat_at(parent, name)
            if st is None:
                raise NotFound(clean)
            if _stat.S_ISDIR(st.st_mode):
                freed = self._remove_tree(parent, name)
            else:
                freed = st.st_size if _stat.S_ISREG(st.st_mode) else 0
                try:
                    os.unlink(name, dir_fd=parent)
                except IsADirectoryError:
                    freed = self._remove_tree(parent, name)
                except FileNotFoundError:
                    raise NotFound(clean) from None
        self.add_usage(-freed)
        return freed

    def rename(self, src: str, dst: str, *, check_denylist: bool = True) -> None:
        """
        Move an entry (a symlink itself, a directory with its contents) without overwriting.

        Missing parents of ``dst`` are created (0755, chowned).  Identical paths do nothing.
        :raises Denied: either path is on the egg denylist.
        :raises NotFound: ``src`` is missing, either path is the root or escapes.
        :raises AlreadyExists: ``dst`` exists.
        :raises InvalidMove: a directory would move into itself.
        """
        src_clean, src_parts = _split(src)
        dst_clean, dst_parts = _split(dst)
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
            if _lstat_at(src_parent, src_name) is None:
                raise NotFound(src_clean)
            if dst_clean.startswith(src_clean + "/"):
                raise InvalidMove(dst_clean)
            created: list[tuple[int, str]] = []
            try:
                with self._directory(dst_clean, dst_parts[:-1], created) as dst_parent:
                    if _lstat_at(dst_parent, dst_name) is not None:
                        raise AlreadyExists(dst_clean)
                    try:
                        os.rename(src_name, dst_name, src_dir_fd=src_parent, dst_dir_fd=dst_parent)
                    except OSError as e:
                        if e.errno == errno.EINVAL:
                            raise InvalidMove(dst_clean) from None
                        if e.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
                            raise AlreadyExists(dst_clean) from None
                        if e.errno == errno.ENOENT:
                            raise NotFound(src_clean) from None
                        raise _translate(e, dst_clean) from None
            except BaseException:
                self._release(created, undo=True)
                raise
            self._release(created, undo=False)

    # -- tree walks ------------------------------------------------------------------------------

    @staticmethod
    def _scan(fd: int) -> tuple[int, list[str]]:
        """
        The regular-file bytes directly in a directory and the names of its subdirectories.
        """
        size = 0
        subdirectories: list[str] = []
        with os.scandir(fd) as iterator:
            for entry in iterator:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if _stat.S_ISREG(st.st_mode):
                    size += st.st_size
                elif _stat.S_ISDIR(st.st_mode):
                    subdirectories.append(entry.name)
        return size, subdirectories

    def _measure(self) -> int:
        """
        Walk the volume and add up the sizes of its regular files (every name counts).

        Holds at most `_TREE_FD_DEPTH` directory descriptors: deeper directories are remembered by
        name and walked again from the root afterwards.
        """
        try:
            root_fd = os.open(self.root, _DIR_FLAGS)
        except OSError:
            return 0
        total = 0
        deferred: list[list[str]] = [[]]
        try:
            while deferred:
                names = deferred.pop()
                start = self._reopen(root_fd, names)
                if start is not None:
                    total += self._measure_from(start, names, deferred)
        finally:
            os.close(root_fd)
        return total

    @staticmethod
    def _reopen(root_fd: int, names: Sequence[str]) -> int | None:
        """
        Open a directory by its real names from the root, following no link; ``None`` if gone.
        """
        fd = os.dup(root_fd)
        for name in names:
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError:
                os.close(fd)
                return None
            os.close(fd)
            fd = child
        return fd

    def _measure_from(self, start: int, names: list[str], deferred: list[list[str]]) -> int:
        total = 0
        frames: list[tuple[int, list[str], list[str]]] = []
        try:
            try:
                size, subdirectories = self._scan(start)
            except OSError:
                os.close(start)
                return 0
            total += size
            frames.append((start, subdirectories, names))
            while frames:
                fd, subdirectories, path = frames[-1]
                if not subdirectories:
                    os.close(fd)
                    frames.pop()
                    continue
                name = subdirectories.pop()
                if len(frames) >= _TREE_FD_DEPTH:
                    deferred.append(path + [name])
                    continue
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue
                try:
                    size, grandchildren = self._scan(child)
                except OSError:
                    os.close(child)
                    continue
                total += size
                frames.append((child, grandchildren, path + [name]))
        finally:
            _close_all([fd for fd, _, _ in frames])
        return total

    def _remove_tree(self, parent_fd: int, name: str) -> int:
        """
        Remove directory ``name`` of ``parent_fd`` and everything in it, following no link.

        Holds at most `_TREE_FD_DEPTH` descriptors: a subdirectory found deeper is first renamed
        into the top of the tree being removed and handled from there.
        :return: the regular-file bytes removed.
        """
        freed = 0
        retries = 0
        # (descriptor, subdirectories still to remove, own name)
        frames: list[tuple[int, list[str], str]] = []
        try:
            top = self._open_for_removal(parent_fd, name)
            if top is None:
                return 0
            size, subdirectories = self._empty_files(top)
            freed += size
            frames.append((top, subdirectories, name))
            while frames:
                fd, subdirectories, own = frames[-1]
                if subdirectories:
                    child = subdirectories.pop()
                    if len(frames) >= _TREE_FD_DEPTH:
                        moved = ".wings-rm-%s" % (secrets.token_hex(8),)
                        try:
                            os.rename(child, moved, src_dir_fd=fd, dst_dir_fd=frames[0][0])
                        except FileNotFoundError:
                            continue
                        frames[0][1].append(moved)
                        continue
                    child_fd = self._open_for_removal(fd, child)
                    if child_fd is None:
                        continue
                    try:
                        size, grandchildren = self._empty_files(child_fd)
                    except BaseException:
                        os.close(child_fd)
                        raise
                    freed += size
                    frames.append((child_fd, grandchildren, child))
                    continue
                frames.pop()
                os.close(fd)
                parent = frames[-1][0] if frames else parent_fd
                try:
                    os.rmdir(own, dir_fd=parent)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    # Something was created in it meanwhile: empty it again, a few times at most.
                    if e.errno != errno.ENOTEMPTY or retries >= 3:
                        raise
                    retries += 1
                    again = self._open_for_removal(parent, own)
                    if again is not None:
                        size, subdirectories = self._empty_files(again)
                        freed += size
                        frames.append((again, subdirectories, own))
        finally:
            _close_all([fd for fd, _, _ in frames])
        return freed

    @staticmethod
    def _open_for_removal(parent_fd: int, name: str) -> int | None:
        """
        Open a subdirectory to empty it; one that became a non-directory is unlinked instead.
        """
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
        try:
            os.unlink(name, dir_fd=parent_fd)
        except FileNotFoundError:
            pass
        return None

    @staticmethod
    def _empty_files(fd: int) -> tuple[int, list[str]]:
        """
        Unlink every non-directory in a directory; return the regular bytes and the subdirectories.
        """
        freed = 0
        subdirectories: list[str] = []
        with os.scandir(fd) as iterator:
            entries = list(iterator)
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if _stat.S_ISDIR(st.st_mode):
                subdirectories.append(entry.name)
                continue
            try:
                os.unlink(entry.name, dir_fd=fd)
            except FileNotFoundError:
                continue
            except IsADirectoryError:
                subdirectories.append(entry.name)
                continue
            if _stat.S_ISREG(st.st_mode):
                freed += st.st_size
        return freed, subdirectories

    # -- quota -----------------------------------------------------------------------------------

    def set_disk_limit(self, limit_bytes: int) -> None:
        """
        Replace the disk limit in bytes (0 unlimited, -1 refuses every write).
        """
        with self._lock:
            self._limit = limit_bytes

    def _stale(self) -> bool:
        if self._interval <= 0:
            return False
        return self._last_walk is None or self._clock() - self._last_walk >= self._interval

    def usage(self) -> int:
        """
        The cached bytes of regular files, walked again when older than the check interval.

        With an interval of 0 the volume is never walked: the figure is only the tracked counter.
        """
        with self._lock:
            stale = self._stale()
        if stale:
            with self._walk_lock:
                with self._lock:
                    stale = self._stale()
                if stale:
                    self._walk()
        with self._lock:
            return self._usage

    def cached_usage(self) -> int:
        """
        The last known usage, without walking (safe on the reactor thread).
        """
        with self._lock:
            return self._usage

    def usage_is_stale(self) -> bool:
        """
        Whether `usage` would walk the volume now.
        """
        with self._lock:
            return self._stale()

    def chown_all(self) -> None:
        """
        Give the volume and everything in it to ``uid:gid`` (``check_permissions_on_boot``),
        never following a link: each entry is changed through its parent's descriptor.
        """
        if not self._chown:
            return
        for _, directories, files, dir_fd in os.fwalk(self.root, follow_symlinks=False):
            for name in directories + files:
                try:
                    os.chown(name, self._uid, self._gid, dir_fd=dir_fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            os.fchown(fd, self._uid, self._gid)
        finally:
            os.close(fd)

    def refresh_usage(self) -> int:
        """
        Walk the volume now and return the new usage.
        """
        with self._walk_lock:
            return self._walk()

    def _walk(self) -> int:
        total = self._measure()
        with self._lock:
            self._usage = total
            self._last_walk = self._clock()
        return total

    def add_usage(self, delta: int) -> None:
        """
        Adjust the counter after one of the daemon's own writes or deletions (never below 0).
        """
        with self._lock:
            self._usage = max(0, self._usage + delta)

    def fits(self, delta: int) -> bool:
        """
        Whether a write changing usage by ``delta`` bytes is allowed: limit 0, or usage + delta <=
        limit (also for a negative delta).
        """
        limit = self._limit
        if limit == 0:
            return True
        return self.usage() + delta <= limit

    def has_space(self) -> bool:
        """
        Whether an operation of unknown size may start: limit 0, walks disabled, or usage <= limit.
        """
        limit = self._limit
        if limit == 0 or self._interval <= 0:
            return True
        return self.usage() <= limit


class AtomicWrite:
    """
    A file being written through a hidden temporary file beside its destination.

    Use `write` for each chunk, then `commit` to rename it over the destination, or `abort` (or
    `close`, or leave the ``with`` block) to discard it together with the directories that
    `Volume.begin_write` created.  Not thread-safe: one writer at a time.
    """

    def __init__(
        self,
        volume: Volume,
        path: str,
        dir_fd: int,
        name: str,
        temp_name: str,
        temp_fd: int,
        created: list[tuple[int, str]],
        old_size: int,
    ) -> None:
        self.path = path
        self.received = 0
        self._volume = volume
        self._dir_fd = dir_fd
        self._name = name
        self._temp_name = temp_name
        self._temp_fd = temp_fd
        self._created = created
        self._old_size = old_size
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
        Append ``data`` to the temporary file after checking that the file would fit the quota.

        :raises QuotaExceeded: fits(bytes received including this chunk - size of the file
            replaced) failed; nothing of the chunk is written.
        """
        if self._state != "open":
            raise ValueError("write on a finished AtomicWrite")
        view = memoryview(data).cast("B")
        after = self.received + len(view)
        if not self._volume.fits(after - self._old_size):
            raise QuotaExceeded(self.path)
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
        if not self._volume.fits(after - self._old_size):
            raise QuotaExceeded(self.path)
        while views:
            written = os.writev(self._temp_fd, views[:_IOV_MAX])
            while views and written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            if written:
                views[0] = views[0][written:]
        self.received = after

    def commit(self) -> None:
        """
        Rename the temporary file over the destination and account for it.

        The mode is that of the regular file replaced (``st_mode & 0o7777``, read now) or 0644; the
        owner is the volume's ``uid:gid``.  On any failure the write is aborted.
        :raises IsDirectory: the destination became a directory meanwhile.
        """
        if self._state != "open":
            raise ValueError("commit on a finished AtomicWrite")
        volume = self._volume
        try:
            st = _lstat_at(self._dir_fd, self._name)
            mode = _FILE_MODE
            old_size = 0
            if st is not None:
                if _stat.S_ISDIR(st.st_mode):
                    raise IsDirectory(self.path)
                if _stat.S_ISREG(st.st_mode):
                    mode = _stat.S_IMODE(st.st_mode)
                    old_size = st.st_size
            # chown before chmod: changing the owner clears set-user/group-ID bits.
            if volume._chown:
                os.fchown(self._temp_fd, volume._uid, volume._gid)
            os.fchmod(self._temp_fd, mode)
            try:
                os.rename(
                    self._temp_name, self._name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd
                )
            except OSError as e:
                raise _translate(e, self.path) from None
        except BaseException:
            self.abort()
            raise
        self._state = "committed"
        os.close(self._temp_fd)
        os.close(self._dir_fd)
        Volume._release(self._created, undo=False)
        volume.add_usage(self.received - old_size)

    def abort(self) -> None:
        """
        Discard the write: remove the temporary file and the directories created for it (deepest
        first, only while empty).  Idempotent; does nothing after a commit.
        """
        if self._state != "open":
            return
        self._state = "aborted"
        try:
            os.close(self._temp_fd)
        finally:
            try:
                os.unlink(self._temp_name, dir_fd=self._dir_fd)
            except OSError:
                pass
            os.close(self._dir_fd)
            Volume._release(self._created, undo=True)

    def close(self) -> None:
        """
        Abort unless committed.
        """
        self.abort()
