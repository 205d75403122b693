"""
What goes into an archive, and the walk of a volume that feeds a `TarWriter`.

A `Selection` says which entries of a volume are archived and how:

* ``files/compress`` (``api.md`` §5.8, `compress_selection`): the named items of a directory and
  everything beneath them, member names relative to that directory, directories as directory
  members, symlinks as symlink members with their text, denylisted entries left out;
* backups and transfers (``backups.md`` §5.2, `volume_selection`): every regular file of the
  volume, names relative to its root, no directory or symlink members, minus the files the backup's
  ignore rules match.

The walk (`write_tree`) never follows a symlink: it starts from a descriptor of the sandboxed walk
(`Volume.directory`) and opens every directory below with ``openat(O_DIRECTORY | O_NOFOLLOW)`` and
every file with ``openat(O_NOFOLLOW | O_NONBLOCK)``, taking sizes and modes from the ``fstat`` of
what it opened.  Sockets, FIFOs and devices are skipped; so is an entry that vanished or changed
type meanwhile.  Entries of a directory are visited in byte-wise order, depth first.  It holds at
most `FD_DEPTH` directory descriptors: deeper directories are reopened by name, one ``openat``
with ``O_NOFOLLOW`` per level, from the deepest one still open.

Pure and blocking: no Twisted.
"""

from __future__ import annotations

import errno
import os
import stat as _stat
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from ..fs import NotDirectory, NotFound, Volume, clean_path
from ..fs.ignore import IgnoreMatcher
from .writer import TarWriter

__all__ = ["FD_DEPTH", "Selection", "compress_selection", "volume_selection", "write_tree"]

#: Directory descriptors a walk keeps open at most.
FD_DEPTH = 64
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY

#: ``(volume-relative path, is a directory)`` → leave it out.
Exclude = Callable[[str, bool], bool]


@dataclass(frozen=True)
class Selection:
    """
    Which entries of a volume an archive holds.

    :param root: the volume-relative directory member names are relative to.
    :param items: names relative to ``root`` to archive with everything beneath them; ``None``
        for the whole of ``root``.
    :param directories: store directories as directory members.
    :param symlinks: store symlinks as symlink members (else they are skipped).
    :param exclude: entries to leave out, given their volume-relative path; a directory left out
        is still walked (a later rule may keep something beneath it).
    """

    root: str = ""
    items: tuple[str, ...] | None = None
    directories: bool = False
    symlinks: bool = False
    exclude: Exclude | None = None


def compress_selection(root: str, files: Sequence[str],
                       denied: Callable[[str], bool]) -> Selection:
    """
    The selection of ``files/compress``: ``files`` beneath ``root`` (surplus ``..`` clamped at the
    volume root; an item that does not lie beneath ``root`` selects nothing, as upstream's walk
    never meets it; an item naming ``root`` itself selects all of it), directory and symlink
    members, and the egg denylist (``denied``) applied to every entry (project).
    """
    clean_root = clean_path(root)
    prefix = clean_root + "/" if clean_root else ""
    items: set[str] = set()
    everything = False
    for name in files:
        full = clean_path("/" + clean_root + "/" + name)
        if full == clean_root:
            everything = True
        elif full.startswith(prefix):
            items.add(full[len(prefix):])
    return Selection(root=clean_root, items=None if everything else _outermost(items),
                     directories=True, symlinks=True,
                     exclude=lambda path, is_directory: denied(path))


def volume_selection(ignore: IgnoreMatcher | None = None) -> Selection:
    """
    The selection of backups and transfers: every regular file of the volume, minus the files
    ``ignore`` matches (``backups.md`` §4.4; transfers pass none).
    """
    if ignore is None or not len(ignore):
        return Selection()
    matcher = ignore
    return Selection(exclude=lambda path, is_directory: not is_directory and matcher.matches(path))


def _outermost(items: set[str]) -> tuple[str, ...]:
    """
    The items sorted byte-wise, without those beneath another item.
    """
    kept: list[str] = []
    for item in sorted(items, key=os.fsencode):
        if kept and item.startswith(kept[-1] + "/"):
            continue
        kept.append(item)
    return tuple(kept)


def write_tree(volume: Volume, selection: Selection, writer: TarWriter, *,
               skip: tuple[int, int] | None = None) -> None:
    """
    Walk the selection and add its members to ``writer``.

    :param skip: ``(st_dev, st_ino)`` of a file never to archive (the archive being written).
    :raises NotFound: ``selection.root`` is missing or leads out of the volume.
    """
    walk = _Walk(volume, selection, writer, skip)
    with volume.directory(selection.root) as (root_fd, _):
        if selection.items is None:
            walk.directory(root_fd, "")
            return
        for item in selection.items:
            parent, _, name = item.rpartition("/")
            try:
                with volume.directory(selection.root + "/" + parent) as (parent_fd, _):
                    st = _lstat(parent_fd, name)
                    if st is not None:
                        walk.entry(parent_fd, name, item, st)
            except (NotFound, NotDirectory):
                continue


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _open(dir_fd: int, name: str, flags: int) -> int | None:
    """
    ``openat`` without following a final symlink; ``None`` when the entry vanished or is (now) a
    symlink or the wrong type.
    """
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
            return None
        raise


class _Walk:
    """
    One walk: the selection's rules applied to each entry met.
    """

    def __init__(self, volume: Volume, selection: Selection, writer: TarWriter,
                 skip: tuple[int, int] | None) -> None:
        self._selection = selection
        self._writer = writer
        self._skip = skip
        self._prefix = selection.root + "/" if selection.root else ""

    def _excluded(self, member: str, is_directory: bool) -> bool:
        exclude = self._selection.exclude
        return exclude is not None and exclude(self._prefix + member, is_directory)

    def entry(self, parent_fd: int, name: str, member: str, st: os.stat_result) -> None:
        """
        Archive one entry of ``parent_fd`` (a directory with everything beneath it).
        """
        mode = st.st_mode
        if _stat.S_ISDIR(mode):
            fd = _open(parent_fd, name, _DIR_FLAGS)
            if fd is not None:
                try:
                    self._directory_member(fd, member)
                    self.directory(fd, member)
                finally:
                    os.close(fd)
        elif _stat.S_ISREG(mode):
            self._file(parent_fd, name, member)
        elif _stat.S_ISLNK(mode) and self._selection.symlinks:
            if not self._excluded(member, False):
                try:
                    target = os.readlink(name, dir_fd=parent_fd)
                except (FileNotFoundError, OSError):
                    return
                self._writer.add_symlink(member, target, st)

    def _directory_member(self, fd: int, member: str) -> None:
        if self._selection.directories and not self._excluded(member, True):
            self._writer.add_directory(member, os.fstat(fd))

    def _file(self, parent_fd: int, name: str, member: str) -> None:
        if self._excluded(member, False):
            return
        fd = _open(parent_fd, name, _FILE_FLAGS)
        if fd is None:
            return
        try:
            st = os.fstat(fd)
            if not _stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) == self._skip:
                return
            self._writer.add_file(member, fd, st)
        finally:
            os.close(fd)

    def directory(self, fd: int, member: str) -> None:
        """
        Archive everything beneath the open directory ``fd`` (member path ``member``), depth first
        in byte-wise order, with at most `FD_DEPTH` descriptors open.
        """
        # Frames: (descriptor or None when too deep, member path, names still to visit).
        frames: list[tuple[int | None, str, Iterator[str]]] = [(fd, member, _names(fd))]
        try:
            while frames:
                frame_fd, path, names = frames[-1]
                name = next(names, None)
                if name is None:
                    frames.pop()
                    if frame_fd is not None and frame_fd != fd:
                        os.close(frame_fd)
                    continue
                child = path + "/" + name if path else name
                try:
                    parent_fd, owned = self._reopen(frames)
                except OSError as e:
                    if e.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                        continue  # moved or replaced meanwhile
                    raise
                try:
                    st = _lstat(parent_fd, name)
                    if st is None:
                        continue
                    if not _stat.S_ISDIR(st.st_mode):
                        self.entry(parent_fd, name, child, st)
                        continue
                    child_fd = _open(parent_fd, name, _DIR_FLAGS)
                finally:
                    if owned:
                        os.close(parent_fd)
                if child_fd is None:
                    continue
                try:
                    self._directory_member(child_fd, child)
                    listing = _names(child_fd)
                except BaseException:
                    os.close(child_fd)
                    raise
                if len(frames) >= FD_DEPTH:
                    os.close(child_fd)
                    frames.append((None, child, listing))
                else:
                    frames.append((child_fd, child, listing))
        finally:
            for frame_fd, _, _ in frames:
                if frame_fd is not None and frame_fd != fd:
                    os.close(frame_fd)

    @staticmethod
    def _reopen(frames: list[tuple[int | None, str, Iterator[str]]]) -> tuple[int, bool]:
        """
        The descriptor of the deepest frame's directory, reopened by name from the deepest one
        still open when it is too deep; whether the caller must close it.
        """
        depth = len(frames) - 1
        own = frames[depth][0]
        if own is not None:
            return own, False
        base = depth
        while frames[base][0] is None:
            base -= 1
        base_fd = frames[base][0]
        assert base_fd is not None
        current = os.dup(base_fd)
        for index in range(base + 1, depth + 1):
            name = frames[index][1].rpartition("/")[2]
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=current)
            finally:
                os.close(current)
            current = child
        return current, True


def _names(fd: int) -> Iterator[str]:
    """
    The names in a directory, byte-wise sorted (read at once, then the descriptor may be reused).
    """
    with os.scandir(fd) as iterator:
        names = [entry.name for entry in iterator]
    names.sort(key=os.fsencode)
    return iter(names)
