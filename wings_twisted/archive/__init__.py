"""
Archives: the one tar.gz writer shared by ``files/compress``, backups and transfers, and the safe
extractor shared by ``files/decompress``, backup restores and incoming transfers.

Pure, blocking code (no Twisted): callers run it in worker threads.  Every volume access goes
through ``fs`` descriptors, so nothing outside a volume is ever read into an archive or written by
an extraction, whatever the archive or the symlinks of the volume say.

* `walk`: `Selection` (what an archive holds: `compress_selection`, `volume_selection`) and the
  no-follow walk that feeds a `TarWriter`;
* `writer`: `TarWriter` (members from open descriptors; ``backups.md`` §5.2–§5.3);
* `tarfmt`: ustar/PAX header encoding and decoding;
* `codecs`: `GzipWriter` (ISA-L at level 1), `gzip_level`, and bounded decompressing sources;
* `create`: `write_tar_gz` (the stream, for any sink) and `create_archive` (``files/compress``);
* `entries`: `Entry`, `Kind`, `Archive` and the refusals `UnknownFormat`, `Unsupported`;
* `readers`: format identification (`open_archive`) and `Entry` iteration (zip, tar and its
  compressed forms, single compressed files; `sevenzip` for 7-Zip);
* `extract`: `Extractor` (policies `DECOMPRESS` and `RESTORE`) and `decompress`
  (``files/decompress``).

The Twisted side (a push producer running `write_tar_gz` on a worker thread for an HTTP body or an
upload) is ``streams.pipe``.
"""

from __future__ import annotations

from .codecs import Damaged, GzipWriter, gzip_level
from .create import ArchiveStats, archive_name, create_archive, write_tar_gz
from .extract import DECOMPRESS, RESTORE, Busy, ExtractPolicy, ExtractStats, Extractor, decompress
from .entries import Entry, Kind, UnknownFormat, Unsupported
from .readers import open_archive, tar_entries
from .walk import Selection, compress_selection, volume_selection
from .writer import Cancelled, TarWriter

__all__ = [
    "DECOMPRESS",
    "RESTORE",
    "ArchiveStats",
    "Busy",
    "Cancelled",
    "Damaged",
    "Entry",
    "ExtractPolicy",
    "ExtractStats",
    "Extractor",
    "GzipWriter",
    "Kind",
    "Selection",
    "TarWriter",
    "UnknownFormat",
    "Unsupported",
    "archive_name",
    "compress_selection",
    "create_archive",
    "decompress",
    "gzip_level",
    "open_archive",
    "tar_entries",
    "volume_selection",
    "write_tar_gz",
]
