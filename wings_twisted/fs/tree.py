"""
The bounded walks over a whole directory tree: usage measurement, recursive removal (of an entry
of a volume or of the volume itself), and giving a volume to its owner.

Each walk descends with ``openat(O_DIRECTORY | O_NOFOLLOW)`` from descriptors it already holds, so
no symlink is ever followed and an entry swapped for a symlink meanwhile is skipped or unlinked,
never walked through.  Each walk holds at most `_TREE_FD_DEPTH` directory descriptors, however deep
the tree: a measurement remembers deeper directories by name and walks them again from the root
afterwards, a removal moves deeper directories up to the top of the tree being removed.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat as _stat
from typing import Sequence

from .paths import DIR_FLAGS, close_all, lstat_at
from .quota import BLOCKS, Accounting

__all__ = ["chown_tree", "is_temp_name", "measure", "remove_at", "remove_entry", "remove_leftovers",
           "remove_tree"]

#: The names of the temporary files `atomic.AtomicWrite` writes beside their destination.
TEMP_PREFIX = ".upload-"
TEMP_SUFFIX = ".part"


def is_temp_name(name: str) -> bool:
    """
    Whether ``name`` is one of the daemon's temporary files (a write in progress, or a leftover
    of a crash): the usage walk skips them, since a write in progress holds a reservation.
    """
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)

#: Directory descriptors a tree walk (usage, recursive delete) holds at most.
_TREE_FD_DEPTH = 64


def _scan(fd: int, rule: Accounting) -> tuple[int, list[str]]:
    """
    The charge (`quota.charge`) of the entries directly in a directory and the names of its
    subdirectories.
    """
    size = 0
    subdirectories: list[str] = []
    with os.scandir(fd) as iterator:
        for entry in iterator:
            if is_temp_name(entry.name):
                continue  # held by the writer's reservation (quota.Reservation)
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            size += rule.charge(st)
            if _stat.S_ISDIR(st.st_mode):
                subdirectories.append(entry.name)
    return size, subdirectories


def measure(root: str, rule: Accounting = BLOCKS) -> int:
    """
    Walk the volume at ``root`` and add up the charge of every entry beneath it (`quota.charge`:
    blocks, with a minimum per inode; every name counts) except the daemon's temporary files
    (`is_temp_name`); 0 when the volume cannot be opened.

    Holds at most `_TREE_FD_DEPTH` directory descriptors: deeper directories are remembered by
    name and walked again from the root afterwards.
    """
    try:
        root_fd = os.open(root, DIR_FLAGS)
    except OSError:
        return 0
    total = 0
    deferred: list[list[str]] = [[]]
    try:
        while deferred:
            names = deferred.pop()
            start = _reopen(root_fd, names)
            if start is not None:
                total += _measure_from(start, names, deferred, rule)
    finally:
        os.close(root_fd)
    return total


def _reopen(root_fd: int, names: Sequence[str]) -> int | None:
    """
    Open a directory by its real names from the root, following no link; ``None`` if gone.
    """
    fd = os.dup(root_fd)
    for name in names:
        try:
            child = os.open(name, DIR_FLAGS, dir_fd=fd)
        except OSError:
            os.close(fd)
            return None
        os.close(fd)
        fd = child
    return fd


def _measure_from(start: int, names: list[str], deferred: list[list[str]],
                  rule: Accounting) -> int:
    """
    The charged usage of the entries beneath ``start`` (reached by ``names`` from the root, and closed
    here), down to `_TREE_FD_DEPTH` levels; deeper directories are appended to ``deferred``.
    """
    total = 0
    frames: list[tuple[int, list[str], list[str]]] = []
    try:
        try:
            size, subdirectories = _scan(start, rule)
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
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
            except OSError:
                continue
            try:
                size, grandchildren = _scan(child, rule)
            except OSError:
                os.close(child)
                continue
            total += size
            frames.append((child, grandchildren, path + [name]))
    finally:
        close_all([fd for fd, _, _ in frames])
    return total


def remove_tree(parent_fd: int, name: str, rule: Accounting = BLOCKS) -> int:
    """
    Remove directory ``name`` of ``parent_fd`` and everything in it, following no link.

    Holds at most `_TREE_FD_DEPTH` descriptors: a subdirectory found deeper is first renamed
    into the top of the tree being removed and handled from there.
    :return: the usage charged to what was removed (`quota.charge`).
    """
    freed = 0
    retries = 0
    # (descriptor, subdirectories still to remove, own name)
    frames: list[tuple[int, list[str], str]] = []
    try:
        top = _open_for_removal(parent_fd, name)
        if top is None:
            return 0
        size, subdirectories = _empty_files(top, rule)
        freed += size
        frames.append((top, subdirectories, name))
        while frames:
            fd, subdirectories, own = frames[-1]
            if subdirectories:
                child = subdirectories.pop()
                if len(frames) >= _TREE_FD_DEPTH:
                    moved = REMOVAL_PREFIX + secrets.token_hex(8)
                    try:
                        os.rename(child, moved, src_dir_fd=fd, dst_dir_fd=frames[0][0])
                    except FileNotFoundError:
                        continue
                    frames[0][1].append(moved)
                    continue
                child_fd = _open_for_removal(fd, child)
                if child_fd is None:
                    continue
                try:
                    size, grandchildren = _empty_files(child_fd, rule)
                except BaseException:
                    os.close(child_fd)
                    raise
                freed += size
                frames.append((child_fd, grandchildren, child))
                continue
            frames.pop()
            own_charge = rule.charge(os.fstat(fd))
            os.close(fd)
            parent = frames[-1][0] if frames else parent_fd
            try:
                os.rmdir(own, dir_fd=parent)
                freed += own_charge
            except FileNotFoundError:
                pass
            except OSError as e:
                # Something was created in it meanwhile: empty it again, a few times at most.
                if e.errno != errno.ENOTEMPTY or retries >= 3:
                    raise
                retries += 1
                again = _open_for_removal(parent, own)
                if again is not None:
                    size, subdirectories = _empty_files(again, rule)
                    freed += size
                    frames.append((again, subdirectories, own))
    finally:
        close_all([fd for fd, _, _ in frames])
    return freed


def remove_at(parent_fd: int, name: str, rule: Accounting = BLOCKS) -> int | None:
    """
    Remove the entry ``name`` of ``parent_fd``: a file, a symlink (never its target), or a
    directory with everything in it.

    :return: the usage charged to what was removed, ``None`` when there is no such entry.
    """
    st = lstat_at(parent_fd, name)
    if st is None:
        return None
    if _stat.S_ISDIR(st.st_mode):
        return remove_tree(parent_fd, name, rule)
    try:
        os.unlink(name, dir_fd=parent_fd)
    except IsADirectoryError:
        return remove_tree(parent_fd, name, rule)
    except FileNotFoundError:
        return None
    return rule.charge(st)


def remove_entry(path: str) -> bool:
    """
    Remove the entry at host path ``path`` like `remove_at`, its last component not followed.

    :return: whether there was something to remove.
    """
    parent, base = os.path.split(path)
    try:
        parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        return remove_at(parent_fd, base) is not None
    finally:
        os.close(parent_fd)


def _open_for_removal(parent_fd: int, name: str) -> int | None:
    """
    Open a subdirectory to empty it; one that became a non-directory is unlinked instead.
    """
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent_fd)
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


def _empty_files(fd: int, rule: Accounting) -> tuple[int, list[str]]:
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
        freed += rule.charge(st)
    return freed, subdirectories


#: The directories `remove_tree` moves deep subdirectories to while it works.
REMOVAL_PREFIX = ".wings-rm-"


def remove_leftovers(root: str) -> int:
    """
    Remove what a crash of the daemon can leave in a volume: temporary files of writes in
    progress (`is_temp_name`, regular files only) and half-removed trees (`REMOVAL_PREFIX`
    directories), at any depth, following no link.  Returns how many entries were removed.
    Only safe while nothing writes to the volume (at boot, before the server is registered).
    """
    removed = 0
    for _, directories, files, dir_fd in os.fwalk(root, follow_symlinks=False):
        for name in files:
            if not is_temp_name(name):
                continue
            st = lstat_at(dir_fd, name)
            if st is not None and _stat.S_ISREG(st.st_mode):
                try:
                    os.unlink(name, dir_fd=dir_fd)
                    removed += 1
                except FileNotFoundError:
                    pass
        for name in [d for d in directories if d.startswith(REMOVAL_PREFIX)]:
            directories.remove(name)  # not walked into: removed whole
            try:
                remove_tree(dir_fd, name)
                removed += 1
            except OSError:
                pass
    return removed


def chown_tree(root: str, uid: int, gid: int) -> None:
    """
    Give the directory ``root`` and everything in it to ``uid:gid``, never following a link:
    each entry is changed through its parent's descriptor, the root through its own.
    """
    for _, directories, files, dir_fd in os.fwalk(root, follow_symlinks=False):
        for name in directories + files:
            try:
                os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
    fd = os.open(root, DIR_FLAGS)
    try:
        os.fchown(fd, uid, gid)
    finally:
        os.close(fd)
