"""
Making archives (``wings_twisted.archive.walk``, ``writer``, ``create``): what a selection holds,
how members are written from open descriptors, and the archive file of ``files/compress``.
"""

from __future__ import annotations

import io
import os
import tarfile
import threading

from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.archive import (Cancelled, TarWriter, archive_name, compress_selection,
                                   create_archive, volume_selection, write_tar_gz)
from wings_twisted.archive.walk import FD_DEPTH
from wings_twisted.fs import NotFound, QuotaExceeded
from wings_twisted.fs.ignore import IgnoreMatcher

from .archive_support import make_volume, write

NOW = 1_710_687_510.0  # 2024-03-17T14:58:30Z


def _members(blob: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as archive:
        infos = archive.getmembers()
        names = [info.name for info in infos]
        assert len(names) == len(set(names)), names
        return {info.name: info for info in infos}


def _content(blob: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as archive:
        f = archive.extractfile(name)
        assert f is not None
        return f.read()


class SelectionTests(SynchronousTestCase):
    """
    ``compress_selection`` and ``volume_selection``.
    """

    def test_items_are_cleaned_clamped_and_deduplicated(self) -> None:
        """
        Items are relative to the root, slashes trimmed, nested items folded into their parent,
        items outside the root dropped; naming the root itself selects all of it.
        """
        selection = compress_selection("/srv/", ["b/", "/a", "a/x", "../other", "b/../c"],
                                       lambda path: False)
        self.assertEqual((selection.root, selection.items), ("srv", ("a", "b", "c")))
        self.assertIsNone(compress_selection("srv", ["x", "."], lambda path: False).items)
        clamped = compress_selection("/", ["../../etc"], lambda path: False)
        self.assertEqual(clamped.items, ("etc",))

    def test_backup_selection(self) -> None:
        """
        The backup selection tests only files against the ignore rules.
        """
        selection = volume_selection(IgnoreMatcher(["logs/"]))
        assert selection.exclude is not None
        self.assertTrue(selection.exclude("logs/a.log", False))
        self.assertFalse(selection.exclude("logs", True))
        self.assertIsNone(volume_selection().exclude)
        self.assertFalse(selection.directories or selection.symlinks)


class WalkTests(SynchronousTestCase):
    """
    The members of an archive of a volume.
    """

    def setUp(self) -> None:
        self.outside = os.path.abspath(self.mktemp())
        os.makedirs(self.outside)
        with open(os.path.join(self.outside, "secret"), "w") as f:
            f.write("outside")
        self.volume = make_volume(self.mktemp(), denylist=["*.secret", "!keep.secret"])
        root = self.volume.root
        write(self.volume, "srv/world/level.dat", b"level")
        write(self.volume, "srv/world/region/r.0.0.mca", b"r" * 5000)
        os.makedirs(os.path.join(root, "srv/empty"))
        write(self.volume, "srv/conf/a.secret", b"denied")
        write(self.volume, "srv/conf/keep.secret", b"kept")
        os.symlink(self.outside, os.path.join(root, "srv/out"))
        os.symlink("world/level.dat", os.path.join(root, "srv/level-link"))
        os.mkfifo(os.path.join(root, "srv/fifo"))
        os.link(os.path.join(root, "srv/world/level.dat"), os.path.join(root, "srv/hard.dat"))

    def _compress(self, files: list[str], root: str = "srv") -> bytes:
        pieces: list[bytes] = []
        selection = compress_selection(root, files, self.volume.is_denied)
        write_tar_gz(self.volume, selection, pieces.append, level=1)
        return b"".join(pieces)

    def test_compress_members(self) -> None:
        """
        Directories are members, symlinks are stored with their text and never followed, FIFOs
        are skipped, hard links are full copies, denylisted files are left out (a negation
        keeps one), modes and times come from the files, owners are 0 with empty names.
        """
        blob = self._compress(["."])
        members = _members(blob)
        self.assertEqual(sorted(members), [
            "conf", "conf/keep.secret", "empty", "hard.dat", "level-link", "out", "world",
            "world/level.dat", "world/region", "world/region/r.0.0.mca"])
        self.assertTrue(members["empty"].isdir())
        self.assertEqual((members["out"].issym(), members["out"].linkname), (True, self.outside))
        self.assertEqual(members["level-link"].linkname, "world/level.dat")
        self.assertTrue(members["hard.dat"].isreg())
        self.assertEqual(_content(blob, "hard.dat"), b"level")
        info = members["world/region/r.0.0.mca"]
        st = os.stat(os.path.join(self.volume.root, "srv/world/region/r.0.0.mca"))
        self.assertEqual((info.size, info.mode, info.mtime, info.uid, info.gid, info.uname),
                         (5000, st.st_mode & 0o7777, int(st.st_mtime), 0, 0, ""))
        self.assertNotIn(b"outside", blob)

    def test_selected_items_only(self) -> None:
        """
        Only the named items and what lies beneath them, names relative to the root; a missing
        item is ignored; a symlink item is stored as a link.
        """
        members = _members(self._compress(["world/region", "missing", "out"]))
        self.assertEqual(sorted(members), ["out", "world/region", "world/region/r.0.0.mca"])

    def test_backup_members(self) -> None:
        """
        A backup holds regular files only, names relative to the volume root, minus the ignored.
        """
        pieces: list[bytes] = []
        write_tar_gz(self.volume, volume_selection(IgnoreMatcher(["*.mca"])), pieces.append,
                     level=0)
        members = _members(b"".join(pieces))
        self.assertEqual(sorted(members), ["srv/conf/a.secret", "srv/conf/keep.secret",
                                           "srv/hard.dat", "srv/world/level.dat"])

    def test_deep_trees(self) -> None:
        """
        A tree deeper than the descriptors a walk keeps is archived whole.
        """
        deep = "/".join("d%d" % i for i in range(FD_DEPTH + 10))
        write(self.volume, "srv/" + deep + "/bottom.txt", b"bottom")
        members = _members(self._compress(["d0"]))
        self.assertIn(deep + "/bottom.txt", members)
        self.assertEqual(len(members), FD_DEPTH + 11)

    def test_missing_root(self) -> None:
        """
        A root that does not exist, or leads out through a symlink, is ``NotFound``.
        """
        self.assertRaises(NotFound, self._compress, ["x"], "nope")
        self.assertRaises(NotFound, self._compress, ["secret"], "srv/out")


class TarWriterTests(SynchronousTestCase):
    """
    ``TarWriter`` copies exactly the size of the ``fstat`` taken when the file was opened.
    """

    def _file(self, data: bytes) -> int:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        fd = os.open(path, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        return fd

    def _archive(self, fd: int, st: os.stat_result) -> tarfile.TarFile:
        out = io.BytesIO()
        writer = TarWriter(out.write)
        writer.add_file("f", fd, st)
        writer.close()
        self.assertEqual(writer.content_bytes, st.st_size)
        return tarfile.open(fileobj=io.BytesIO(out.getvalue()), mode="r:")

    def test_grown_file_is_cut(self) -> None:
        """
        Bytes beyond the size of the ``fstat`` (the file grew) are not stored.
        """
        fd = self._file(b"0123456789")
        st = os.stat_result((0o100644, 0, 0, 1, 0, 0, 4, 0, 0, 0))
        archive = self._archive(fd, st)
        self.assertEqual(archive.extractfile("f").read(), b"0123")  # type: ignore[union-attr]

    def test_shrunk_file_is_padded(self) -> None:
        """
        A file shorter than its ``fstat`` (it shrank) is padded with zeros to that size.
        """
        fd = self._file(b"abc")
        st = os.stat_result((0o100644, 0, 0, 1, 0, 0, 3000, 0, 0, 0))
        archive = self._archive(fd, st)
        self.assertEqual(archive.extractfile("f").read(),  # type: ignore[union-attr]
                         b"abc" + bytes(2997))

    def test_cancel(self) -> None:
        """
        A set cancel event stops the writer at the next member.
        """
        cancel = threading.Event()
        writer = TarWriter(lambda data: None, cancel=cancel)
        cancel.set()
        self.assertRaises(Cancelled, writer.add_directory, "d", os.stat("."))


class CreateArchiveTests(SynchronousTestCase):
    """
    The archive file of ``files/compress``.
    """

    def setUp(self) -> None:
        self.volume = make_volume(self.mktemp())
        write(self.volume, "srv/a.txt", b"a" * 100000)
        write(self.volume, "srv/b.txt", os.urandom(200000))

    def test_name_and_result(self) -> None:
        """
        ``archive-<UTC time without colons>.tar.gz`` in the root, mode 0644, its size counted in
        the usage, no temporary file left; a second archive of the same second gets `` 1``.
        """
        used = self.volume.quota.refresh()
        path, st = create_archive(self.volume, "/srv/", ["a.txt", "b.txt"], level=1, now=NOW)
        self.assertEqual(path, "srv/archive-2024-03-17T145830Z.tar.gz")
        self.assertEqual(st.st_mode & 0o7777, 0o644)
        self.assertEqual(self.volume.quota.cached_usage(),
                         used + self.volume.quota.accounting.charge_size(st.st_size))
        with open(os.path.join(self.volume.root, path), "rb") as f:
            self.assertEqual(sorted(_members(f.read())), ["a.txt", "b.txt"])
        again, _ = create_archive(self.volume, "srv", ["."], level=1, now=NOW)
        self.assertEqual(again, "srv/archive-2024-03-17T145830Z 1.tar.gz")
        with open(os.path.join(self.volume.root, again), "rb") as f:
            self.assertEqual(sorted(_members(f.read())),
                             ["a.txt", "archive-2024-03-17T145830Z.tar.gz", "b.txt"])
        self.assertEqual(sorted(os.listdir(os.path.join(self.volume.root, "srv"))), [
            "a.txt", "archive-2024-03-17T145830Z 1.tar.gz", "archive-2024-03-17T145830Z.tar.gz",
            "b.txt"])

    def test_archive_name(self) -> None:
        """
        Taken names are skipped with `` 1``, `` 2``... before ``.tar.gz``.
        """
        taken = {"archive-2024-03-17T145830Z.tar.gz", "archive-2024-03-17T145830Z 1.tar.gz"}
        self.assertEqual(archive_name(NOW, taken.__contains__),
                         "archive-2024-03-17T145830Z 2.tar.gz")

    def test_does_not_fit(self) -> None:
        """
        An archive that outgrows the quota stops with ``QuotaExceeded`` and leaves nothing.
        """
        self.volume.set_disk_limit(self.volume.quota.refresh() + 1000)
        self.assertRaises(QuotaExceeded, create_archive, self.volume, "srv", ["b.txt"], level=1,
                          now=NOW)
        self.assertEqual(sorted(os.listdir(os.path.join(self.volume.root, "srv"))),
                         ["a.txt", "b.txt"])

    def test_cancelled(self) -> None:
        """
        A cancelled job raises ``Cancelled`` and leaves nothing.
        """
        cancel = threading.Event()
        cancel.set()
        self.assertRaises(Cancelled, create_archive, self.volume, "srv", ["a.txt"], level=1,
                          now=NOW, cancel=cancel)
        self.assertEqual(sorted(os.listdir(os.path.join(self.volume.root, "srv"))),
                         ["a.txt", "b.txt"])
