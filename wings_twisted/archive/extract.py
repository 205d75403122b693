"""
Safe extraction of archive entries into a volume, and the whole of ``files/decompress``
(``api.md`` §5.9).

`Extractor` writes `Entry` objects into a volume under a root directory, whatever the archive says:

* names are joined to the root as rooted paths, so surplus ``..`` clamp at the volume root and an
  absolute name is relative to the root (``../../x`` lands at ``/x``); an empty name, or one with a
  NUL byte, is skipped; a name longer than the filesystem allows is `NameTooLong`;
* symlink, hard-link, device, FIFO and socket entries are skipped, so an entry can never turn a
  directory into a link, and nothing is ever written through a link: every directory is opened
  with ``O_NOFOLLOW`` from one already held (an in-volume relative symlink on the way is resolved
  by the sandboxed walk of ``fs``; one leading out is `NotFound`);
* directory entries are created (0755, given to the volume's owner), as are missing parents;
* files go through a hidden temporary file beside the destination that is renamed over it when
  complete (``fs.atomic``): mode from the archive (set-user/group-ID bits dropped, project) or
  0644, owner, then mtime and atime; a later entry of the same name replaces an earlier one; a
  destination that is a directory is `IsDirectory`;
* the quota is checked on the bytes actually written, as they are written: a file that does not fit
  stops at the limit with `QuotaExceeded` and leaves nothing behind (declared sizes are not trusted);
* entries on the egg denylist are skipped silently (``files/decompress``; restores and transfers
  turn this off);
* ``ETXTBSY`` anywhere is `Busy`.

Per-entry cost matters for archives of many small files: directory descriptors are cached (at most
`DIR_CACHE` of them) so that an entry costs one ``openat`` per missing level instead of a walk from
the volume root.  A cached descriptor always names the directory that was opened, wherever it is
moved meanwhile.

Pure and blocking: no Twisted; runs in a worker thread.
"""

from __future__ import annotations

import errno
import os
import stat as _stat
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterable, TypeVar

from twisted.logger import Logger

from ..fs import NotDirectory, NotFound, QuotaExceeded, Volume, clean_path
from ..fs.atomic import AtomicWrite, begin_at
from ..fs.paths import DIR_FLAGS, DIR_MODE, FILE_MODE, give, lstat_at, split_path
from .entries import Entry, Kind
from .readers import open_archive
from .writer import Cancelled

__all__ = ["DECOMPRESS", "RESTORE", "Busy", "ExtractPolicy", "ExtractStats", "Extractor",
           "OpenFile", "check_fits", "decompress", "identify"]

log = Logger()
_T = TypeVar("_T")

#: Directory descriptors an extraction keeps open at most.
DIR_CACHE = 64
_PIECE = 1024 * 1024


class Busy(Exception):
    """
    A file could not be replaced because it is busy (``ETXTBSY``).
    """


@dataclass(frozen=True)
class ExtractPolicy:
    """
    What differs between the users of the extractor.

    :param denylist: skip entries on the egg denylist (``files/decompress``; not restores nor
        transfers, ``backups.md`` §8.4, ``transfers.md`` §4.4).
    :param mode_mask: applied to the mode stored in the archive.
    :param keep_existing_mode: an existing file keeps its mode and a new one gets the stored mode
        less the daemon's umask (restores and transfers, as upstream); otherwise the stored mode is
        set.
    """

    denylist: bool = True
    mode_mask: int = 0o1777
    keep_existing_mode: bool = False


#: ``files/decompress``.
DECOMPRESS = ExtractPolicy()
#: Backup restores and incoming transfers (the caller reports or fails on each entry).
RESTORE = ExtractPolicy(denylist=False, mode_mask=0o7777, keep_existing_mode=True)


@dataclass
class ExtractStats:
    """
    What an extraction did.
    """

    files: int = 0
    directories: int = 0
    skipped: int = 0
    bytes: int = 0
    skipped_names: list[str] = field(default_factory=list)


class Extractor:
    """
    Entries written into ``volume`` beneath ``root`` (volume-relative).  Use as a context manager
    (or call `close`): it holds directory descriptors.

    :param cancel: when set, the next entry or piece raises `Cancelled`; the file being written is
        discarded.
    :param on_entry: called with each entry's stored name before it is handled (restores publish
        it).
    """

    def __init__(self, volume: Volume, root: str = "", *, policy: ExtractPolicy = DECOMPRESS,
                 cancel: threading.Event | None = None,
                 on_entry: Callable[[str], None] | None = None) -> None:
        self._volume = volume
        self._root = clean_path(root)
        self._policy = policy
        self._cancel = cancel
        self._on_entry = on_entry
        self._dirs: OrderedDict[str, int] = OrderedDict()
        self.stats = ExtractStats()

    def __enter__(self) -> Extractor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """
        Close the cached directory descriptors.
        """
        while self._dirs:
            os.close(self._dirs.popitem()[1])

    def _check(self) -> None:
        if self._cancel is not None and self._cancel.is_set():
            raise Cancelled()

    def destination(self, name: str) -> str | None:
        """
        The volume-relative path an entry named ``name`` goes to, or ``None`` to skip it (empty,
        the root itself, a NUL byte).
        """
        if "\x00" in name:
            return None
        path = clean_path("/" + self._root + "/" + name)
        if path == self._root or not path:
            return None
        return path

    def _skip(self, name: str, why: str) -> None:
        self.stats.skipped += 1
        if len(self.stats.skipped_names) < 100:
            self.stats.skipped_names.append(name)
        log.debug("Extraction skipped {name!r}: {why}", name=name, why=why)

    def add(self, entry: Entry) -> None:
        """
        Extract one entry (reading its content).
        """
        self._busy_is_busy(self._add, entry)

    def _add(self, entry: Entry) -> None:
        self._check()
        if self._on_entry is not None:
            self._on_entry(entry.name)
        if entry.kind is Kind.DIRECTORY:
            path = self.destination(entry.name)
            if path is None or (self._policy.denylist and self._volume.is_denied(path)):
                self._skip(entry.name, "denied or empty")
                return
            self._directory(path)
            self.stats.directories += 1
            return
        if entry.kind is not Kind.FILE:
            self._skip(entry.name, entry.kind.value)
            return
        output = self.begin_file(entry.name)
        if output is None:
            return
        with output:
            while True:
                self._check()
                data = entry.read(_PIECE)
                if not data:
                    break
                output.write(data)
            self.finish_file(output, entry.mode, entry.mtime)

    def begin_file(self, name: str) -> OpenFile | None:
        """
        Start writing the file entry ``name``: the temporary file beside its destination, or
        ``None`` when the entry is skipped.  Finish with `finish_file` (leaving the ``with`` block
        of the `OpenFile` first discards it).
        """
        path = self.destination(name)
        if path is None or (self._policy.denylist and self._volume.is_denied(path)):
            self._skip(name, "denied or empty")
            return None
        clean, parts = split_path(path)
        parent = self._busy_is_busy(self._directory, "/".join(parts[:-1]))
        kept = None
        if self._policy.keep_existing_mode:
            existing = lstat_at(parent, parts[-1])
            if existing is not None and _stat.S_ISREG(existing.st_mode):
                kept = _stat.S_IMODE(existing.st_mode)
        volume = self._volume
        output = self._busy_is_busy(begin_at, parent, parts[-1], clean, volume.quota,
                                    volume.owner, [])
        return OpenFile(output, kept)

    def finish_file(self, output: OpenFile, mode: int, mtime: float | None) -> None:
        """
        Rename a written file into place with its mode, owner and times.
        """
        final: int | None = (mode if mode >= 0 else FILE_MODE) & self._policy.mode_mask
        if self._policy.keep_existing_mode and final is not None:
            # Restores and transfers: an existing regular file keeps its own mode (commit's
            # default), a new one gets the stored bits less the umask of 022, as upstream's
            # open(2) would.
            final = None if output.existing_mode is not None else final & ~0o022
        self._busy_is_busy(output.commit, final, mtime)
        self.stats.files += 1
        self.stats.bytes += output.received

    @staticmethod
    def _busy_is_busy(fn: Callable[..., _T], *args: object) -> _T:
        try:
            return fn(*args)
        except OSError as e:
            if e.errno == errno.ETXTBSY:
                raise Busy() from None
            raise

    # -- directories ---------------------------------------------------------------------------

    def _directory(self, path: str) -> int:
        """
        The descriptor of directory ``path`` (volume-relative, cleaned), created with its missing
        parents (0755, owned); cached.
        """
        cached = self._dirs.get(path)
        if cached is not None:
            self._dirs.move_to_end(path)
            return cached
        parts = path.split("/") if path else []
        # The deepest ancestor already open.
        depth = len(parts)
        while depth > 0 and "/".join(parts[:depth]) not in self._dirs:
            depth -= 1
        current = "/".join(parts[:depth])
        fd = self._dirs.get(current)
        if fd is None:
            fd = self._open_by_walk(current)
        for index in range(depth, len(parts)):
            current = "/".join(parts[:index + 1])
            fd = self._step(fd, parts[index], current)
        return fd

    def _remember(self, path: str, fd: int) -> int:
        self._dirs[path] = fd
        while len(self._dirs) > DIR_CACHE:
            os.close(self._dirs.popitem(last=False)[1])
        return fd

    def _open_by_walk(self, path: str) -> int:
        """
        Resolve ``path`` with the volume's sandboxed walk (in-volume relative links followed,
        missing directories created) and cache a duplicate of its descriptor.
        """
        with self._volume.directory(path, create=True) as (fd, _):
            return self._remember(path, os.dup(fd))

    def _step(self, parent: int, name: str, path: str) -> int:
        """
        One level down from ``parent``: open ``name`` without following it, create it when
        missing, or fall back to the sandboxed walk when it is a symlink (or not a directory,
        which the walk reports).
        """
        for _ in range(3):
            try:
                return self._remember(path, os.open(name, DIR_FLAGS, dir_fd=parent))
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    return self._open_by_walk(path)
                if e.errno != errno.ENOENT:
                    raise
            try:
                os.mkdir(name, DIR_MODE, dir_fd=parent)
            except FileExistsError:
                continue
            fd = os.open(name, DIR_FLAGS, dir_fd=parent)
            try:
                os.fchmod(fd, DIR_MODE)
                give(fd, self._volume.owner)
            except BaseException:
                os.close(fd)
                raise
            return self._remember(path, fd)
        raise NotFound(path)

    def extract_all(self, entries: Iterable[Entry]) -> ExtractStats:
        """
        Extract every entry in order; stops at the first error (what was extracted stays).
        """
        for entry in entries:
            self.add(entry)
        return self.stats



class OpenFile:
    """
    A file entry being written (`Extractor.begin_file`): its temporary file, and the mode of the
    regular file it will replace (``None`` when there is none, or when the policy does not keep
    it).
    """

    def __init__(self, output: AtomicWrite, existing_mode: int | None) -> None:
        self._output = output
        self.existing_mode = existing_mode

    def __enter__(self) -> OpenFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._output.close()

    @property
    def received(self) -> int:
        """
        Bytes written so far.
        """
        return self._output.received

    def write(self, data: bytes) -> None:
        """
        Append ``data`` after the quota check (`QuotaExceeded` leaves nothing behind).
        """
        self._output.write(data)

    def commit(self, mode: int | None, mtime: float | None) -> None:
        """
        Rename into place (see `AtomicWrite.commit`).
        """
        self._output.commit(mode=mode, mtime=mtime)

    def abort(self) -> None:
        """
        Discard the file.
        """
        self._output.abort()


def check_fits(volume: Volume, sizes: Iterable[int]) -> None:
    """
    The quota pre-walk of ``api.md`` §5.9 step 3: fits(running total of what the declared sizes
    will cost, ``quota.accounting``) for every entry; skipped on an unlimited volume.

    :raises QuotaExceeded: at the first entry that does not fit.
    """
    if volume.quota.limit == 0:
        return
    cost = volume.quota.accounting.charge_size
    total = 0
    for size in sizes:
        total += cost(max(size, 0))
        if not volume.fits(total):
            raise QuotaExceeded("")


def _open_archive_file(volume: Volume, root: str, file: str) -> tuple[int, str]:
    path = clean_path("/" + clean_path(root) + "/" + file)
    try:
        fd, _ = volume.open_read(path)
    except NotDirectory:
        raise NotFound(path) from None
    return fd, path


def identify(volume: Volume, root: str, file: str) -> None:
    """
    The synchronous checks of an asynchronous ``files/decompress``: the archive ``root/file``
    exists, is a regular file off the denylist, and its format is read here.

    :raises NotFound, IsDirectory, Denied, UnknownFormat, Unsupported, Damaged: as `decompress`.
    """
    fd, path = _open_archive_file(volume, root, file)
    try:
        open_archive(fd, path.rpartition("/")[2]).close()
    finally:
        os.close(fd)


def decompress(volume: Volume, root: str, file: str, *,
               cancel: threading.Event | None = None) -> ExtractStats:
    """
    ``files/decompress`` (``api.md`` §5.9 steps 1–5): extract the archive ``root/file`` into
    ``root``.

    :raises NotFound: the archive is missing, escapes or is a symlink.
    :raises IsDirectory: the archive is a directory.
    :raises Denied: the archive is on the egg denylist (project: reading it would bypass §2.12).
    :raises UnknownFormat, Unsupported, Damaged: the archive cannot be read.
    :raises QuotaExceeded: the declared sizes (before anything is written) or the bytes written
        do not fit.
    :raises Busy: a file to replace is busy.
    """
    fd, path = _open_archive_file(volume, root, file)
    try:
        archive = open_archive(fd, path.rpartition("/")[2])
        try:
            check_fits(volume, archive.sizes())
            with Extractor(volume, root, policy=DECOMPRESS, cancel=cancel) as extractor:
                if hasattr(archive, "extract_into"):
                    archive.extract_into(extractor)
                else:
                    extractor.extract_all(archive.entries())
                return extractor.stats
        finally:
            archive.close()
    finally:
        os.close(fd)

