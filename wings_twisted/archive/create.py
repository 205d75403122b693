"""
Making tar.gz archives of a volume: the stream shared by ``files/compress``, backups and transfers
(`write_tar_gz`), and the archive file of ``files/compress`` (`create_archive`, ``api.md`` §5.8
steps 3–5).

`create_archive` writes ``archive-<UTC time without colons>.tar.gz`` (``archive-2024-03-17T145830Z
.tar.gz``; `` 1``, `` 2``... before ``.tar.gz`` when taken) into the directory of the request
through a hidden temporary file beside it (``fs.atomic``): the quota is checked as the archive
grows, so an archive that does not fit stops there and leaves nothing behind (the 400 of step 5);
the finished file is linked into place without replacing anything, mode 0644, given to the
volume's owner, and its size added to the usage.  The temporary file itself is never archived.

Pure and blocking: no Twisted; runs in a worker thread.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from ..fs import AlreadyExists, NotDirectory, NotFound, Volume
from ..fs.atomic import begin_at
from ..fs.paths import lstat_at
from .codecs import GzipWriter
from .walk import Selection, compress_selection, write_tree
from .writer import TarWriter

__all__ = ["ArchiveStats", "archive_name", "create_archive", "write_tar_gz"]

#: Numbered names tried before giving up (``archive-... 1.tar.gz`` up to this).
MAX_NUMBERED = 1000


@dataclass(frozen=True)
class ArchiveStats:
    """
    What one archive stream held.

    :param members: tar members written.
    :param content_bytes: file-content bytes (the progress of ``backups.md`` §5.4).
    :param compressed_bytes: the gzip bytes handed to the output.
    """

    members: int
    content_bytes: int
    compressed_bytes: int


def write_tar_gz(volume: Volume, selection: Selection, out: Callable[[bytes], object], *,
                 level: int, cancel: threading.Event | None = None,
                 skip: tuple[int, int] | None = None,
                 on_writer: Callable[[TarWriter], None] | None = None) -> ArchiveStats:
    """
    Stream a tar.gz of ``selection`` to ``out`` (one gzip member; ``backups.md`` §5.1–§5.3).

    :param out: receives the compressed bytes in order, in pieces of about 1 MiB, on the calling
        thread; an exception from it stops the stream.
    :param level: the gzip level (`codecs.gzip_level`).
    :param cancel: set it to stop the stream with `Cancelled`.
    :param skip: ``(st_dev, st_ino)`` of a file never to include.
    :param on_writer: called with the `TarWriter` before the walk starts (a progress counter
        reads its ``content_bytes``).
    """
    gzip = GzipWriter(out, level)
    tar = TarWriter(gzip.write, cancel=cancel)
    if on_writer is not None:
        on_writer(tar)
    write_tree(volume, selection, tar, skip=skip)
    tar.close()
    gzip.close()
    return ArchiveStats(tar.members, tar.content_bytes, gzip.written)


def archive_name(now: float, taken: Callable[[str], bool]) -> str:
    """
    The first free name of ``archive-<UTC RFC 3339 time without ':'>.tar.gz``, then with `` 1``,
    `` 2``... before ``.tar.gz``.
    """
    stamp = time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime(int(now)))
    base = "archive-" + stamp
    candidates = [base] + ["{} {}".format(base, number) for number in range(1, MAX_NUMBERED + 1)]
    for candidate in candidates:
        name = candidate + ".tar.gz"
        if not taken(name):
            return name
    raise AlreadyExists(base + ".tar.gz")


def create_archive(volume: Volume, root: str, files: Sequence[str], *, level: int, now: float,
                   cancel: threading.Event | None = None) -> tuple[str, os.stat_result]:
    """
    Write the archive of ``files/compress`` into ``root`` (``api.md`` §5.8 steps 3–5).

    :return: the archive's volume-relative path and its ``lstat``.
    :raises NotFound: ``root`` is missing or leads out of the volume.
    :raises QuotaExceeded: the archive does not fit (nothing is left behind).
    :raises Cancelled: ``cancel`` was set (nothing is left behind).
    """
    selection = compress_selection(root, files, volume.is_denied)
    try:
        with volume.directory(selection.root) as (root_fd, clean_root):
            return _create_in(volume, root_fd, clean_root, selection, level, now, cancel)
    except NotDirectory:
        raise NotFound(selection.root) from None


def _create_in(volume: Volume, root_fd: int, clean_root: str, selection: Selection, level: int,
               now: float, cancel: threading.Event | None) -> tuple[str, os.stat_result]:
    name = archive_name(now, lambda candidate: lstat_at(root_fd, candidate) is not None)
    path = clean_root + "/" + name if clean_root else name
    with begin_at(root_fd, name, path, volume.quota, volume.owner, []) as output:
        temp = os.stat(output.temp_name, dir_fd=root_fd, follow_symlinks=False)
        write_tar_gz(volume, selection, output.write, level=level, cancel=cancel,
                     skip=(temp.st_dev, temp.st_ino))
        output.commit(mode=0o644, replace=False)
    st = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
    return path, st
