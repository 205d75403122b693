"""
Extraction (``wings_twisted.archive.readers`` and ``extract``): every format of ``api.md`` §5.9,
and every hostile archive the tests can build — path escapes, links, duplicates, special files,
bombs, lies about sizes — against a volume that holds symlinks leading out of it.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import lzma
import os
import threading

import py7zr
import zstandard
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.archive import (RESTORE, Busy, Cancelled, Damaged, Extractor, UnknownFormat,
                                   Unsupported, decompress)
from wings_twisted.archive.readers import Entry, Kind, single_file_name
from wings_twisted.archive.tarfmt import REGTYPE, encode_header
from wings_twisted.fs import Denied, IsDirectory, NotDirectory, NotFound, QuotaExceeded

from .archive_support import Member, make_volume, tar_bytes, tree, write, zip_bytes

SAMPLE = [Member("world/level.dat", b"level", mode=0o600), Member("world/empty/", kind="dir"),
          Member("run.sh", b"#!/bin/sh\n", mode=0o4755, mtime=1_500_000_000)]


class _Base(SynchronousTestCase):
    def setUp(self) -> None:
        base = os.path.abspath(self.mktemp())
        self.outside = os.path.join(base, "outside")
        os.makedirs(self.outside)
        write_host(os.path.join(self.outside, "keep.txt"), b"outside")
        self.volume = make_volume(base, denylist=["*.secret"])
        os.symlink(self.outside, os.path.join(self.volume.root, "out"))
        os.symlink("/", os.path.join(self.volume.root, "abs"))
        self.before_outside = tree(self.outside)

    def tearDown(self) -> None:
        self.assertEqual(tree(self.outside), self.before_outside)

    def extract(self, name: str, data: bytes, root: str = "/") -> None:
        write(self.volume, (root.strip("/") + "/" + name).lstrip("/"), data)
        decompress(self.volume, root, name)

    def contents(self) -> dict[str, object]:
        found = tree(self.volume.root)
        return {k: v for k, v in found.items() if k not in ("out", "abs")}


def write_host(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


class FormatTests(_Base):
    """
    Every MUST and SHOULD format extracts the same files.
    """

    def _check(self, name: str) -> None:
        found = self.contents()
        self.assertEqual(found["world/level.dat"], ("file", b"level"))
        self.assertEqual(found["world/empty"], ("dir", ""))
        self.assertEqual(found["run.sh"], ("file", b"#!/bin/sh\n"))
        del found[name]
        self.assertEqual(sorted(found), ["run.sh", "world", "world/empty", "world/level.dat"])

    def test_tar_family(self) -> None:
        """
        tar, tar.gz/tgz, tar.bz2, tar.xz and tar.zst.
        """
        plain = tar_bytes(SAMPLE)
        cases = {"a.tar": plain, "a.tgz": tar_bytes(SAMPLE, "w:gz"),
                 "a.tar.bz2": tar_bytes(SAMPLE, "w:bz2"), "a.tar.xz": tar_bytes(SAMPLE, "w:xz"),
                 "a.tar.zst": zstandard.ZstdCompressor().compress(plain),
                 # content decides, not the name
                 "a.zip.gz": gzip.compress(plain)}
        for name, data in cases.items():
            self.extract(name, data)
            self._check(name)
            os.unlink(os.path.join(self.volume.root, name))

    def test_zip_and_jar(self) -> None:
        """
        zip and jar files, directories included.
        """
        for name in ("a.zip", "a.jar"):
            self.extract(name, zip_bytes(SAMPLE))
            self._check(name)
            os.unlink(os.path.join(self.volume.root, name))

    def test_seven_zip(self) -> None:
        """
        7-Zip, through py7zr.
        """
        path = os.path.join(self.volume.root, "a.7z")
        with py7zr.SevenZipFile(path, "w") as archive:
            archive.writestr(b"level", "world/level.dat")
            archive.writestr(b"#!/bin/sh\n", "run.sh")
            archive.writestr(b"", "empty.txt")
        decompress(self.volume, "/", "a.7z")
        found = self.contents()
        self.assertEqual((found["world/level.dat"], found["run.sh"], found["empty.txt"]),
                         (("file", b"level"), ("file", b"#!/bin/sh\n"), ("file", b"")))

    def test_single_files(self) -> None:
        """
        A compressed file that is not a tar becomes one file named without the suffix.
        """
        data = b"log line\n" * 1000
        cases = {"latest.log.gz": gzip.compress(data), "latest.log.bz2": bz2.compress(data),
                 "latest.log.xz": lzma.compress(data),
                 "latest.log.zst": zstandard.ZstdCompressor().compress(data)}
        for name, blob in cases.items():
            self.extract(name, blob)
            self.assertEqual(self.contents()["latest.log"], ("file", data))
        self.assertEqual(single_file_name("x.tgz", (".tgz",)), "x.tar")
        self.assertEqual(single_file_name("noext", (".gz",)), "noext.out")

    def test_modes_times_and_owner(self) -> None:
        """
        Files get the stored mode without set-user/group-ID bits and the stored mtime (atime
        too); directories are 0755; everything belongs to the volume's owner.
        """
        self.extract("a.tar", tar_bytes(SAMPLE))
        st = os.stat(os.path.join(self.volume.root, "run.sh"))
        self.assertEqual((st.st_mode & 0o7777, st.st_mtime, st.st_atime),
                         (0o755, 1_500_000_000, 1_500_000_000))
        self.assertEqual(os.stat(os.path.join(self.volume.root, "world/level.dat")).st_mode & 0o777,
                         0o600)
        st = os.stat(os.path.join(self.volume.root, "world/empty"))
        self.assertEqual((st.st_mode & 0o7777, st.st_uid), (0o755, os.getuid()))

    def test_unknown_rar_damaged_encrypted(self) -> None:
        """
        Unknown content, RAR, a damaged tar.gz and a broken zip directory are refused.
        """
        self.assertRaises(UnknownFormat, self.extract, "a.txt", b"just text")
        self.assertRaises(Unsupported, self.extract, "a.rar", b"Rar!\x1a\x07\x01\x00" + bytes(100))
        damaged = tar_bytes(SAMPLE, "w:gz")
        self.assertRaises(Damaged, self.extract, "b.tgz", damaged[:len(damaged) // 2])
        self.assertRaises(Damaged, self.extract, "c.zip", b"PK\x03\x04" + bytes(100))

    def test_archive_path_rules(self) -> None:
        """
        The archive itself: missing, escaping, a directory, denylisted.
        """
        self.assertRaises(NotFound, decompress, self.volume, "/", "missing.zip")
        self.assertRaises(NotFound, decompress, self.volume, "/out", "keep.txt")
        os.makedirs(os.path.join(self.volume.root, "dir.zip"))
        self.assertRaises(IsDirectory, decompress, self.volume, "/", "dir.zip")
        write(self.volume, "x.secret", tar_bytes(SAMPLE))
        self.assertRaises(Denied, decompress, self.volume, "/", "x.secret")


class HostileTests(_Base):
    """
    Archives built to escape, confuse or exhaust.
    """

    def test_escaping_names_are_clamped(self) -> None:
        """
        ``..`` beyond the root clamps at the volume root; absolute names are relative to the
        root; the volume's outward symlinks are never written through.
        """
        members = [Member("../../../up.txt", b"up"), Member("/etc/abs.txt", b"abs"),
                   Member("sub/../../../../deep.txt", b"deep")]
        for name, data in (("a.tar", tar_bytes(members)), ("a.zip", zip_bytes(members))):
            self.extract(name, data, root="/r")
            found = self.contents()
            self.assertEqual((found["up.txt"], found["deep.txt"], found["r/etc/abs.txt"]),
                             (("file", b"up"), ("file", b"deep"), ("file", b"abs")))

    def test_links_and_special_entries_are_skipped(self) -> None:
        """
        Symlink, hard-link, FIFO and device entries create nothing; a later entry through a
        skipped link name is an ordinary directory.
        """
        members = [Member("out2", b"/", kind="symlink"), Member("out2/x.txt", b"x"),
                   Member("hard", b"/etc/passwd", kind="hardlink"), Member("fifo", kind="fifo"),
                   Member("tty", kind="chardev")]
        self.extract("a.tar", tar_bytes(members))
        found = self.contents()
        self.assertEqual(found["out2"], ("dir", ""))
        self.assertEqual(found["out2/x.txt"], ("file", b"x"))
        for name in ("hard", "fifo", "tty"):
            self.assertNotIn(name, found)
        self.extract("b.zip", zip_bytes([Member("zlink", b"/etc", kind="symlink")]))
        self.assertNotIn("zlink", self.contents())

    def test_entries_through_outward_symlinks_are_refused(self) -> None:
        """
        An entry whose path crosses a symlink leading out of the volume stops the extraction
        with ``NotFound``; nothing is written outside.
        """
        for name in ("out/evil.txt", "abs/tmp/evil.txt"):
            self.assertRaises(NotFound, self.extract, "a.tar", tar_bytes([Member(name, b"evil")]))

    def test_duplicates_and_conflicts(self) -> None:
        """
        A later entry of the same name replaces the earlier; a file entry over a directory is
        ``IsDirectory``; an entry beneath a file is ``NotDirectory``.
        """
        self.extract("a.tar", tar_bytes([Member("d.txt", b"one"), Member("d.txt", b"two")]))
        self.assertEqual(self.contents()["d.txt"], ("file", b"two"))
        self.assertRaises(IsDirectory, self.extract, "b.tar",
                          tar_bytes([Member("dir/", kind="dir"), Member("dir", b"file")]))
        self.assertRaises(NotDirectory, self.extract, "c.tar",
                          tar_bytes([Member("f", b"file"), Member("f/g", b"below")]))

    def test_denylisted_entries_are_skipped(self) -> None:
        """
        Entries matching the egg denylist are skipped silently.
        """
        self.extract("a.tar", tar_bytes([Member("conf/db.secret", b"s"), Member("ok.txt", b"ok")]))
        found = self.contents()
        self.assertNotIn("conf/db.secret", found)
        self.assertEqual(found["ok.txt"], ("file", b"ok"))

    def test_gzip_bomb_stops_at_the_quota(self) -> None:
        """
        A single gzip file that expands past the quota stops there, leaving no file behind.
        """
        compressor = gzip.compress(bytes(64 << 20), 9)
        self.volume.set_disk_limit(self.volume.quota.refresh() + len(compressor) + (1 << 20))
        self.assertRaises(QuotaExceeded, self.extract, "bomb.gz", compressor)
        self.assertEqual(sorted(self.contents()), ["bomb.gz"])

    def test_zip_with_lying_sizes_stops_at_the_quota(self) -> None:
        """
        A zip entry that declares 10 bytes but holds 32 MiB passes the pre-walk and is stopped by
        the bytes written.
        """
        data = bytearray(zip_bytes([Member("big.bin", bytes(32 << 20))]))
        position = data.rfind(b"PK\x01\x02")
        data[position + 24:position + 28] = (10).to_bytes(4, "little")
        self.volume.set_disk_limit(self.volume.quota.refresh() + len(data) + (1 << 20))
        with self.assertRaises((QuotaExceeded, Damaged)):
            self.extract("lie.zip", bytes(data))
        self.assertEqual(sorted(self.contents()), ["lie.zip"])

    def test_declared_sizes_are_checked_before_writing(self) -> None:
        """
        On a limited volume, an archive whose declared sizes do not fit writes nothing at all.
        """
        members = [Member("a.bin", bytes(4 << 20)), Member("b.bin", bytes(4 << 20))]
        blob = tar_bytes(members, "w:gz")
        self.volume.set_disk_limit(self.volume.quota.refresh() + len(blob) + (6 << 20))
        self.assertRaises(QuotaExceeded, self.extract, "two.tgz", blob)
        self.assertEqual(sorted(self.contents()), ["two.tgz"])

    def test_absurd_declared_size(self) -> None:
        """
        A tar entry declaring far more than the archive holds is damaged, with nothing left.
        """
        blob = encode_header("huge", kind=REGTYPE, mode=0o644, size=1 << 40) + b"tiny" * 1000
        self.assertRaises(Damaged, self.extract, "huge.tar", blob)
        self.assertEqual(sorted(self.contents()), ["huge.tar"])


class ExtractorTests(_Base):
    """
    The extractor's other policies and failures.
    """

    def _entry(self, name: str, data: bytes, mode: int = 0o644) -> Entry:
        chunks = [data]
        return Entry(name, Kind.FILE, len(data), mode, 1_600_000_000.0,
                     lambda size: chunks.pop() if chunks else b"")

    def test_restore_policy(self) -> None:
        """
        Restores apply no denylist, keep an existing file's mode and give a new one the stored
        bits less the umask.
        """
        path = write(self.volume, "keep.sh", b"old")
        os.chmod(path, 0o700)
        with Extractor(self.volume, policy=RESTORE) as extractor:
            extractor.add(self._entry("keep.sh", b"new", 0o644))
            extractor.add(self._entry("new.sh", b"new", 0o777))
            extractor.add(self._entry("x.secret", b"s"))
        self.assertEqual(os.stat(path).st_mode & 0o7777, 0o700)
        self.assertEqual(os.stat(os.path.join(self.volume.root, "new.sh")).st_mode & 0o7777, 0o755)
        self.assertIn("x.secret", self.contents())

    def test_busy_file(self) -> None:
        """
        ``ETXTBSY`` while extracting is ``Busy``, and the temporary file is gone.
        """
        def busy(size: int) -> bytes:
            raise OSError(errno.ETXTBSY, "Text file busy")

        with Extractor(self.volume) as extractor:
            self.assertRaises(Busy, extractor.add, Entry("run.sh", Kind.FILE, 10, 0o755, None, busy))
        self.assertEqual(sorted(self.contents()), [])

    def test_cancelled(self) -> None:
        """
        A set cancel event stops before the next entry.
        """
        cancel = threading.Event()
        cancel.set()
        with Extractor(self.volume, cancel=cancel) as extractor:
            self.assertRaises(Cancelled, extractor.add, self._entry("a", b"a"))
        self.assertEqual(sorted(self.contents()), [])

    def test_many_files_reuse_directories(self) -> None:
        """
        Thousands of entries in a few directories keep at most the cached descriptors open.
        """
        before = len(os.listdir("/proc/self/fd"))
        with Extractor(self.volume) as extractor:
            for i in range(2000):
                extractor.add(self._entry("d%d/e%d/f%d.txt" % (i % 100, i % 7, i), b"x"))
            self.assertLessEqual(len(os.listdir("/proc/self/fd")) - before, 65)
        self.assertEqual(extractor.stats.files, 2000)
        self.assertEqual(len(os.listdir("/proc/self/fd")), before)
