"""
Tests for L{wings_twisted.fs}: the volume sandbox, atomic writes and the quota counter.

The property suite at the end builds random hostile layouts inside a volume that sits next to
sentinel files, runs every public operation on random hostile paths, and checks that nothing
outside the volume was created, changed, removed or handed out.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import shutil
import stat
import threading
from typing import Callable, Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.fs.quota import BYTES
from wings_twisted.fs import (
    MAX_LINK_HOPS,
    AlreadyExists,
    Denied,
    FsError,
    InvalidMove,
    IsDirectory,
    NameTooLong,
    NotDirectory,
    NotFound,
    QuotaExceeded,
    SpecialFile,
    Volume,
    clean_path,
)
from wings_twisted.fs.copying import copy_entry
from wings_twisted.fs.lines import BadLines, read_lines, replace_line
from wings_twisted.fs.listing import list_directory, search, stat_entry

from ..support import unix_socket_at

settings.register_profile(
    "wings-fs",
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "wings-fs-thorough",
    parent=settings.get_profile("wings-fs"),
    max_examples=3000,
)
#: Select with WINGS_FS_PROFILE=wings-fs-thorough for a longer run.
_PROFILE = settings.get_profile(os.environ.get("WINGS_FS_PROFILE", "wings-fs"))


class _FakeClock:
    """
    A settable monotonic clock.
    """

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _make_volume(test: SynchronousTestCase, **kwargs: object) -> tuple[Volume, FilePath]:
    """
    A volume in a fresh temporary directory, owned by the current user.
    """
    root = FilePath(test.mktemp())
    volume = Volume(root.path, uid=os.getuid(), gid=os.getgid(), **kwargs, accounting=BYTES)  # type: ignore[arg-type]
    volume.ensure_root()
    return volume, root


class CleanPathTests(SynchronousTestCase):
    """
    L{clean_path} normalises lexically and clamps at the root.
    """

    def test_table(self) -> None:
        """
        Slashes collapse, dots go, C{..} resolves and never climbs above the root, backslashes
        are ordinary characters.
        """
        table = {
            "": "",
            "/": "",
            "//": "",
            ".": "",
            "./": "",
            "a": "a",
            "/a/": "a",
            "a//b": "a/b",
            "a/./b": "a/b",
            "a/b/..": "a",
            "a/../b": "b",
            "..": "",
            "../..": "",
            "../../x": "x",
            "/../a/../../b/c/..": "b",
            "a\\..\\b": "a\\..\\b",
            "...": "...",
            "a/.../b": "a/.../b",
            "a/..b": "a/..b",
        }
        for raw, expected in table.items():
            self.assertEqual(clean_path(raw), expected, repr(raw))


class ResolutionTests(SynchronousTestCase):
    """
    Path resolution follows only relative intermediate links that stay beneath the root.
    """

    def setUp(self) -> None:
        self.base = FilePath(self.mktemp())
        self.outside = self.base.child("outside")
        self.outside.makedirs()
        self.outside.child("secret.txt").setContent(b"secret")
        self.root = self.outside.child("root")
        self.volume = Volume(self.root.path, uid=os.getuid(), gid=os.getgid(), accounting=BYTES)
        self.volume.ensure_root()
        self.root.child("d").makedirs()
        self.root.child("d").child("f.txt").setContent(b"inside")

    def read(self, path: str) -> bytes:
        fd, _ = self.volume.open_read(path)
        try:
            return os.read(fd, 100)
        finally:
            os.close(fd)

    def test_plain(self) -> None:
        """
        A regular file is read through a clean or messy path.
        """
        self.assertEqual(self.read("d/f.txt"), b"inside")
        self.assertEqual(self.read("//d/./x/../f.txt"), b"inside")

    def test_dotdot_clamped(self) -> None:
        """
        Surplus C{..} components are clamped at the root instead of escaping.
        """
        self.assertEqual(self.read("../../../d/f.txt"), b"inside")
        self.assertRaises(NotFound, self.volume.open_read, "../secret.txt")

    def test_nul(self) -> None:
        """
        A NUL byte anywhere in the path is not found, even in a component C{..} removes.
        """
        self.assertRaises(NotFound, self.volume.open_read, "d/f.txt\x00")
        self.assertRaises(NotFound, self.volume.open_read, "x\x00/../d/f.txt")
        self.assertRaises(NotFound, self.volume.mkdir, "a\x00b")
        self.assertFalse(self.root.child("a").exists())

    def test_unencodable(self) -> None:
        """
        A lone surrogate that cannot be encoded is not found rather than crashing.
        """
        self.assertRaises(NotFound, self.volume.open_read, "\ud800")

    def test_relative_link_inside(self) -> None:
        """
        An intermediate relative link that stays inside, through C{..}, is followed.
        """
        self.root.child("e").makedirs()
        os.symlink("../d", self.root.child("e").child("up").path)
        os.symlink("d", self.root.child("rel").path)
        self.assertEqual(self.read("rel/f.txt"), b"inside")
        self.assertEqual(self.read("e/up/f.txt"), b"inside")

    def test_link_to_link(self) -> None:
        """
        Chains of relative links resolve against each link's own directory.
        """
        os.symlink("rel", self.root.child("rel2").path)
        os.symlink("d", self.root.child("rel").path)
        self.assertEqual(self.read("rel2/f.txt"), b"inside")

    def test_absolute_link_refused(self) -> None:
        """
        Absolute link text is refused, even when it names a place inside the volume.
        """
        os.symlink(self.outside.path, self.root.child("abs").path)
        os.symlink(self.root.child("d").path, self.root.child("abs_in").path)
        # Read as relative to the volume, "/d" would lead to d/f.txt: it must not.
        os.symlink("/d", self.root.child("slash_d").path)
        self.assertRaises(NotFound, self.volume.open_read, "abs/secret.txt")
        self.assertRaises(NotFound, self.volume.open_read, "abs_in/f.txt")
        self.assertRaises(NotFound, self.volume.open_read, "slash_d/f.txt")

    def test_escaping_link_refused(self) -> None:
        """
        A relative link whose C{..} would pop above the root is refused.
        """
        os.symlink("..", self.root.child("up").path)
        os.symlink("d/../..", self.root.child("sneaky").path)
        os.symlink("../root/d", self.root.child("reenter").path)
        self.assertRaises(NotFound, self.volume.open_read, "up/secret.txt")
        self.assertRaises(NotFound, self.volume.open_read, "sneaky/secret.txt")
        # Leaving and re-entering the root is refused too: the walk never leaves it.
        self.assertRaises(NotFound, self.volume.open_read, "reenter/f.txt")

    def test_final_link_refused(self) -> None:
        """
        The final component is never followed for reading, writing or stat.
        """
        os.symlink("d/f.txt", self.root.child("link").path)
        self.assertRaises(NotFound, self.volume.open_read, "link")
        self.assertRaises(NotFound, self.volume.begin_write, "", "link")
        self.assertRaises(NotFound, self.volume.stat, "link")
        self.assertTrue(stat.S_ISLNK(self.volume.lstat("link").st_mode))
        self.assertEqual(self.root.child("d").child("f.txt").getContent(), b"inside")

    def test_link_loops(self) -> None:
        """
        Link loops and self-links fail as not found.
        """
        os.symlink("l2", self.root.child("l1").path)
        os.symlink("l1", self.root.child("l2").path)
        os.symlink("self/x", self.root.child("self").path)
        self.assertRaises(NotFound, self.volume.open_read, "l1/x")
        self.assertRaises(NotFound, self.volume.open_read, "self/x")
        self.assertRaises(NotFound, self.volume.mkdir, "l1/x")

    def test_link_hop_limit(self) -> None:
        """
        A chain of C{MAX_LINK_HOPS} links resolves; one more does not.
        """
        previous = "d"
        for i in range(MAX_LINK_HOPS + 1):
            os.symlink(previous, self.root.child("h%d" % (i,)).path)
            previous = "h%d" % (i,)
        self.assertEqual(self.read("h%d/f.txt" % (MAX_LINK_HOPS - 1,)), b"inside")
        self.assertRaises(NotFound, self.volume.open_read, "h%d/f.txt" % (MAX_LINK_HOPS,))

    def test_not_directory(self) -> None:
        """
        A regular file used as an intermediate component is L{NotDirectory}.
        """
        self.assertRaises(NotDirectory, self.volume.open_read, "d/f.txt/x")
        self.assertRaises(NotDirectory, self.volume.begin_write, "d/f.txt", "x")
        self.assertRaises(NotDirectory, self.volume.mkdir, "d/f.txt/sub")
        self.assertRaises(NotDirectory, self.volume.listdir, "d/f.txt")

    def test_missing(self) -> None:
        """
        A missing final or intermediate component is L{NotFound}.
        """
        self.assertRaises(NotFound, self.volume.open_read, "nope")
        self.assertRaises(NotFound, self.volume.open_read, "nope/x")
        self.assertRaises(NotFound, self.volume.listdir, "nope")

    def test_name_too_long(self) -> None:
        """
        A component over 255 bytes, or a path of 4096 bytes, is L{NameTooLong}; 255 is fine.
        """
        self.assertRaises(NameTooLong, self.volume.open_read, "x" * 256)
        self.assertRaises(NameTooLong, self.volume.open_read, "\u00e9" * 128)
        self.assertRaises(NameTooLong, self.volume.mkdir, "/".join(["abcdefgh"] * 512))
        self.assertRaises(NotFound, self.volume.open_read, "x" * 255)

    def test_missing_root(self) -> None:
        """
        Operations on a volume whose directory does not exist fail with L{NotFound}.
        """
        volume = Volume(self.base.child("nope").path, uid=os.getuid(), gid=os.getgid(), accounting=BYTES)
        self.assertRaises(NotFound, volume.open_read, "x")
        self.assertRaises(NotFound, volume.listdir, "")


class OpenReadTests(SynchronousTestCase):
    """
    L{Volume.open_read} hands out descriptors of regular files only.
    """

    def setUp(self) -> None:
        self.volume, self.root = _make_volume(self)

    def test_regular(self) -> None:
        """
        The descriptor reads the file and the stat describes it.
        """
        self.root.child("a.txt").setContent(b"hello")
        fd, st = self.volume.open_read("/a.txt")
        try:
            self.assertEqual(os.read(fd, 10), b"hello")
            self.assertEqual(st.st_size, 5)
            self.assertTrue(stat.S_ISREG(st.st_mode))
        finally:
            os.close(fd)

    def test_directory(self) -> None:
        """
        A directory, and the root itself, are L{IsDirectory}.
        """
        self.root.child("sub").makedirs()
        self.assertRaises(IsDirectory, self.volume.open_read, "sub")
        self.assertRaises(IsDirectory, self.volume.open_read, "")
        self.assertRaises(IsDirectory, self.volume.open_read, "/")

    def test_fifo(self) -> None:
        """
        A FIFO is L{SpecialFile}, without blocking (nobody writes to it).
        """
        os.mkfifo(self.root.child("fifo").path)
        self.assertRaises(SpecialFile, self.volume.open_read, "fifo")

    def test_socket(self) -> None:
        """
        A UNIX socket is L{SpecialFile}.
        """
        sock = unix_socket_at(self.root.child("sock").path)
        self.addCleanup(sock.close)
        self.assertRaises(SpecialFile, self.volume.open_read, "sock")

    def test_denylist(self) -> None:
        """
        A denied path is L{Denied}, checked on the cleaned path, unless the check is disabled.
        """
        self.root.child("secret.cfg").setContent(b"x")
        self.volume.set_denylist(["*.cfg"])
        self.assertRaises(Denied, self.volume.open_read, "secret.cfg")
        self.assertRaises(Denied, self.volume.open_read, "a/../secret.cfg")
        fd, _ = self.volume.open_read("secret.cfg", check_denylist=False)
        os.close(fd)

    def test_denylist_before_existence(self) -> None:
        """
        The denylist answers before the path is looked up.
        """
        self.volume.set_denylist(["/private/"])
        self.assertRaises(Denied, self.volume.open_read, "private/missing")


class DenylistTests(SynchronousTestCase):
    """
    The volume's egg denylist.
    """

    def test_is_denied(self) -> None:
        """
        Rules apply to the cleaned path; a later negation un-denies.
        """
        volume = Volume(self.mktemp(), uid=0, gid=0, denylist=["config/", "!config/ok.yml"], accounting=BYTES)
        self.assertTrue(volume.is_denied("/config/server.yml"))
        self.assertTrue(volume.is_denied("x/../config/a"))
        self.assertFalse(volume.is_denied("config/ok.yml"))
        self.assertFalse(volume.is_denied("config"))
        error = self.assertRaises(Denied, volume.check_denied, "//config/a")
        self.assertEqual(error.path, "config/a")
        volume.set_denylist([])
        self.assertFalse(volume.is_denied("config/a"))


class BeginWriteTests(SynchronousTestCase):
    """
    L{Volume.begin_write} and L{AtomicWrite}.
    """

    def setUp(self) -> None:
        self.volume, self.root = _make_volume(self)

    def entries(self, path: FilePath | None = None) -> list[str]:
        return sorted(os.listdir((path or self.root).path))

    def test_new_file(self) -> None:
        """
        A new file gets the content, mode 0644 and the volume's owner; the usage grows.
        """
        writer = self.volume.begin_write("/", "a.txt")
        self.assertEqual(writer.path, "a.txt")
        writer.write(b"hello ")
        writer.write(bytearray(b"world"))
        self.assertEqual(writer.received, 11)
        self.assertFalse(self.root.child("a.txt").exists())
        writer.commit()
        self.assertEqual(self.root.child("a.txt").getContent(), b"hello world")
        st = os.stat(self.root.child("a.txt").path)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o644)
        self.assertEqual((st.st_uid, st.st_gid), (os.getuid(), os.getgid()))
        self.assertEqual(self.entries(), ["a.txt"])
        self.assertEqual(self.volume.usage(), 11)

    def test_write_many(self) -> None:
        """
        ``write_many`` appends every chunk in order, more chunks than one
        ``writev`` takes included, and refuses a batch over the quota whole.
        """
        writer = self.volume.begin_write("/", "many.bin")
        chunks = [bytes([i % 251]) * (i % 7 + 1) for i in range(3000)]
        writer.write_many(chunks)
        writer.write_many([memoryview(b"tail"), bytearray(b"!")])
        expected = b"".join(chunks) + b"tail!"
        self.assertEqual(writer.received, len(expected))
        writer.commit()
        self.assertEqual(self.root.child("many.bin").getContent(), expected)
        self.volume.set_disk_limit(len(expected) + 10)
        writer = self.volume.begin_write("/", "over.bin")
        writer.write_many([b"x" * 5])
        self.assertRaises(QuotaExceeded, writer.write_many, [b"y" * 3, b"z" * 3])
        self.assertEqual(writer.received, 5)
        writer.abort()

    def test_replace_keeps_mode(self) -> None:
        """
        Replacing an existing 0600 file keeps 0600 and accounts only for the size difference.
        """
        target = self.root.child("conf")
        target.setContent(b"0123456789")
        os.chmod(target.path, 0o600)
        self.volume.refresh_usage()
        writer = self.volume.begin_write("", "conf")
        writer.write(b"abc")
        writer.commit()
        self.assertEqual(target.getContent(), b"abc")
        self.assertEqual(stat.S_IMODE(os.stat(target.path).st_mode), 0o600)
        self.assertEqual(self.volume.usage(), 3)

    def test_destination_untouched_until_commit(self) -> None:
        """
        The destination keeps its content while the write is in progress and after an abort.
        """
        target = self.root.child("keep")
        target.setContent(b"old")
        writer = self.volume.begin_write("", "keep")
        writer.write(b"new content")
        self.assertEqual(target.getContent(), b"old")
        writer.abort()
        self.assertEqual(target.getContent(), b"old")
        self.assertEqual(self.entries(), ["keep"])

    def test_creates_directories(self) -> None:
        """
        Missing directories are created with mode 0755 and chowned.
        """
        writer = self.volume.begin_write("a/b/c", "f")
        writer.write(b"x")
        writer.commit()
        for path in [self.root.child("a"), self.root.descendant(["a", "b", "c"])]:
            st = os.stat(path.path)
            self.assertEqual(stat.S_IMODE(st.st_mode), 0o755)
            self.assertEqual(st.st_uid, os.getuid())
        self.assertEqual(self.root.descendant(["a", "b", "c", "f"]).getContent(), b"x")

    def test_abort_cleans_up(self) -> None:
        """
        Abort removes the temporary file and only the directories it created, deepest first.
        """
        self.root.child("a").makedirs()
        writer = self.volume.begin_write("a/b/c", "f")
        writer.write(b"data")
        self.assertEqual(
            os.listdir(self.root.descendant(["a", "b", "c"]).path), [writer.temp_name]
        )
        self.assertTrue(writer.temp_name.startswith(".upload-"))
        self.assertTrue(writer.temp_name.endswith(".part"))
        writer.abort()
        writer.abort()
        writer.close()
        self.assertEqual(self.entries(), ["a"])
        self.assertEqual(self.entries(self.root.child("a")), [])

    def test_abort_keeps_nonempty_directories(self) -> None:
        """
        A created directory that received other entries meanwhile is left in place.
        """
        writer = self.volume.begin_write("a/b", "f")
        self.root.child("a").child("other").setContent(b"")
        writer.abort()
        self.assertEqual(self.entries(self.root.child("a")), ["other"])

    def test_context_manager(self) -> None:
        """
        Leaving the C{with} block without committing aborts; after a commit it is a no-op.
        """
        with self.volume.begin_write("d", "f") as writer:
            writer.write(b"x")
        self.assertEqual(self.entries(), [])
        with self.volume.begin_write("d", "f") as writer:
            writer.write(b"x")
            writer.commit()
        self.assertEqual(self.root.descendant(["d", "f"]).getContent(), b"x")

    def test_destination_directory(self) -> None:
        """
        A directory at the destination (or the root) is L{IsDirectory}; nothing is left behind.
        """
        self.root.child("d").makedirs()
        self.assertRaises(IsDirectory, self.volume.begin_write, "", "d")
        self.assertRaises(IsDirectory, self.volume.begin_write, "", "")
        self.assertRaises(IsDirectory, self.volume.begin_write, "new/..", ".")
        self.assertEqual(self.entries(), ["d"])
        self.assertEqual(self.entries(self.root.child("d")), [])

    def test_destination_special(self) -> None:
        """
        A FIFO at the destination is L{SpecialFile}.
        """
        os.mkfifo(self.root.child("fifo").path)
        self.assertRaises(SpecialFile, self.volume.begin_write, "", "fifo")

    def test_final_symlink(self) -> None:
        """
        A symlink at the destination is L{NotFound} and its target is not written.
        """
        self.root.child("target").setContent(b"t")
        os.symlink("target", self.root.child("link").path)
        self.assertRaises(NotFound, self.volume.begin_write, "", "link")
        self.assertRaises(NotFound, self.volume.begin_write, "sub/..", "./link")
        self.assertEqual(self.root.child("target").getContent(), b"t")
        self.assertEqual(self.entries(), ["link", "target"])

    def test_not_directory_undoes(self) -> None:
        """
        C{ENOTDIR} is L{NotDirectory} and no directory is left behind.
        """
        self.root.child("file").setContent(b"")
        self.assertRaises(NotDirectory, self.volume.begin_write, "file/sub", "x")
        self.assertEqual(self.entries(), ["file"])

    def test_escape_undoes(self) -> None:
        """
        A directory path that escapes through a link created on the way is refused and the
        directories created before the failure are removed again.
        """
        os.symlink("..", self.root.child("up").path)
        self.assertRaises(NotFound, self.volume.begin_write, "new/../up/x", "f")
        self.root.child("l").makedirs()
        os.symlink("m/n/../../../..", self.root.child("l").child("esc").path)
        self.assertRaises(NotFound, self.volume.begin_write, "l/esc/x", "f")
        self.assertEqual(self.entries(), ["l", "up"])
        self.assertEqual(self.entries(self.root.child("l")), ["esc"])

    def test_denied_first(self) -> None:
        """
        The denylist is checked on the destination before any directory is created.
        """
        self.volume.set_denylist(["*.jar"])
        self.assertRaises(Denied, self.volume.begin_write, "plugins", "x.jar")
        self.assertEqual(self.entries(), [])
        writer = self.volume.begin_write("plugins", "x.jar", check_denylist=False)
        writer.abort()

    def test_commit_onto_new_directory(self) -> None:
        """
        If the destination became a directory meanwhile, commit is L{IsDirectory} and aborts.
        """
        writer = self.volume.begin_write("", "x")
        writer.write(b"data")
        self.root.child("x").makedirs()
        self.assertRaises(IsDirectory, writer.commit)
        self.assertEqual(self.entries(), ["x"])
        self.assertRaises(ValueError, writer.write, b"more")

    def test_quota(self) -> None:
        """
        A chunk that would not fit is refused before being written; replacing a file is charged
        only for the growth.
        """
        self.volume.set_disk_limit(10)
        self.root.child("old").setContent(b"12345678")
        self.volume.refresh_usage()
        writer = self.volume.begin_write("", "old")
        writer.write(b"1234567890")  # 8 + (10 - 8) = 10: fits exactly
        self.assertRaises(QuotaExceeded, writer.write, b"1")
        self.assertEqual(writer.received, 10)
        writer.commit()
        self.assertEqual(self.volume.usage(), 10)
        writer = self.volume.begin_write("", "new")
        self.assertRaises(QuotaExceeded, writer.write, b"x")
        writer.abort()
        self.assertEqual(self.entries(), ["old"])

    def test_no_chown(self) -> None:
        """
        With C{chown=False} files keep the daemon's owner.
        """
        volume = Volume(self.root.path, uid=os.getuid() + 1, gid=os.getgid() + 1, chown=False, accounting=BYTES)
        writer = volume.begin_write("sub", "f")
        writer.commit()
        self.assertEqual(os.stat(self.root.descendant(["sub", "f"]).path).st_uid, os.getuid())


class HelperTests(SynchronousTestCase):
    """
    The small read and write helpers: lstat, stat, listdir, mkdir, remove, rename.
    """

    def setUp(self) -> None:
        self.volume, self.root = _make_volume(self)
        self.root.child("d").makedirs()
        self.root.child("d").child("f").setContent(b"abc")
        os.symlink("d", self.root.child("rel").path)

    def test_lstat_and_stat(self) -> None:
        """
        C{lstat} describes links; C{stat} refuses them; the root can be described.
        """
        self.assertTrue(stat.S_ISLNK(self.volume.lstat("rel").st_mode))
        self.assertRaises(NotFound, self.volume.stat, "rel")
        self.assertEqual(self.volume.stat("rel/f").st_size, 3)
        self.assertTrue(stat.S_ISDIR(self.volume.stat("").st_mode))
        self.assertRaises(NotFound, self.volume.lstat, "missing")

    def test_listdir(self) -> None:
        """
        Entries come sorted with their own lstat; a relative link to a directory is listed.
        """
        names = [(name, stat.S_IFMT(st.st_mode)) for name, st in self.volume.listdir("/")]
        self.assertEqual(names, [("d", stat.S_IFDIR), ("rel", stat.S_IFLNK)])
        self.assertEqual([name for name, _ in self.volume.listdir("rel")], ["f"])
        self.assertEqual(self.volume.listdir("d/.."), self.volume.listdir(""))

    def test_mkdir(self) -> None:
        """
        C{mkdir} creates parents, accepts existing directories and links to them, and refuses
        files.
        """
        self.volume.mkdir("a/b/c")
        self.assertTrue(self.root.descendant(["a", "b", "c"]).isdir())
        self.assertEqual(stat.S_IMODE(os.stat(self.root.child("a").path).st_mode), 0o755)
        self.volume.mkdir("a/b")
        self.volume.mkdir("rel")
        self.volume.mkdir("")
        self.assertRaises(NotDirectory, self.volume.mkdir, "d/f")
        self.assertRaises(NotDirectory, self.volume.mkdir, "d/f/g")

    def test_remove(self) -> None:
        """
        C{remove} deletes files, links (not their targets) and trees, and refuses the root.
        """
        self.volume.refresh_usage()
        self.assertEqual(self.volume.remove("rel"), 0)
        self.assertEqual(self.root.child("d").child("f").getContent(), b"abc")
        self.root.descendant(["d", "e", "g"]).makedirs()
        self.root.descendant(["d", "e", "g", "h"]).setContent(b"12")
        # Absolute links in these tests point into the test's own directory, never at "/":
        # a regression must not be able to damage the machine running the tests.
        os.symlink(
            os.path.abspath(self.root.dirname()), self.root.descendant(["d", "e", "abs"]).path
        )
        self.assertEqual(self.volume.remove("d"), 5)
        self.assertEqual(os.listdir(self.root.path), [])
        self.assertEqual(self.volume.usage(), 0)
        self.assertRaises(NotFound, self.volume.remove, "")
        self.assertRaises(NotFound, self.volume.remove, "../..")
        self.assertRaises(NotFound, self.volume.remove, "missing")

    def test_remove_deep_tree(self) -> None:
        """
        Trees deeper than the descriptor budget are removed and measured completely.
        """
        path = self.root.child("deep")
        for i in range(150):
            path = path.child("n")
        path.makedirs()
        path.child("leaf").setContent(b"1234")
        self.root.child("deep").child("top").setContent(b"1")
        self.assertEqual(self.volume.refresh_usage(), 3 + 5)
        self.assertEqual(self.volume.remove("deep"), 5)
        self.assertEqual(sorted(os.listdir(self.root.path)), ["d", "rel"])

    def test_rename(self) -> None:
        """
        C{rename} moves entries, creates destination parents and never overwrites.
        """
        self.volume.rename("d/f", "x/y/g")
        self.assertEqual(self.root.descendant(["x", "y", "g"]).getContent(), b"abc")
        self.volume.rename("rel", "x/rel2")
        self.assertTrue(os.path.islink(self.root.descendant(["x", "rel2"]).path))
        self.assertRaises(AlreadyExists, self.volume.rename, "x/y/g", "x/rel2")
        self.assertRaises(NotFound, self.volume.rename, "missing", "z")
        self.assertRaises(NotFound, self.volume.rename, "", "z")
        self.assertRaises(NotFound, self.volume.rename, "d", "/")
        self.assertRaises(InvalidMove, self.volume.rename, "x", "x/y/inner")
        self.volume.rename("d", "./d")
        self.assertFalse(self.root.child("z").exists())

    def test_rename_into_itself_through_link(self) -> None:
        """
        Moving a directory into itself through a link is L{InvalidMove}, and the directories
        created for the destination are removed again.
        """
        os.symlink("..", self.root.descendant(["d", "up"]).path)
        self.assertRaises(InvalidMove, self.volume.rename, "d", "rel/up/rel/new/d2")
        self.assertEqual(sorted(os.listdir(self.root.child("d").path)), ["f", "up"])

    def test_rename_denylist(self) -> None:
        """
        Both paths of a rename are checked against the denylist.
        """
        self.volume.set_denylist(["*.jar"])
        self.assertRaises(Denied, self.volume.rename, "d/f", "f.jar")
        self.assertRaises(Denied, self.volume.rename, "a.jar", "b")
        self.volume.rename("d/f", "f.jar", check_denylist=False)


class VolumeDirectoryTests(SynchronousTestCase):
    """
    Creating and removing the volume directory itself.
    """

    def test_ensure_root(self) -> None:
        """
        The volume and its parents are created; the volume is 0700 and chowned; repeat is fine.
        """
        base = FilePath(self.mktemp())
        volume = Volume(base.descendant(["volumes", "uuid"]).path, uid=os.getuid(), gid=os.getgid(), accounting=BYTES)
        volume.ensure_root()
        volume.ensure_root()
        self.assertEqual(stat.S_IMODE(os.stat(volume.root).st_mode), 0o700)
        self.assertTrue(os.path.isabs(volume.root))

    def test_remove_root(self) -> None:
        """
        The whole volume goes, links inside are not followed, and a missing volume is fine.
        """
        base = FilePath(self.mktemp())
        outside = base.child("outside")
        outside.makedirs()
        outside.child("keep").setContent(b"k")
        volume = Volume(base.child("root").path, uid=os.getuid(), gid=os.getgid(), accounting=BYTES)
        volume.ensure_root()
        FilePath(volume.root).child("a").makedirs()
        os.symlink(outside.path, os.path.join(volume.root, "a", "abs"))
        os.symlink("../../outside", os.path.join(volume.root, "rel"))
        volume.remove_root()
        self.assertEqual(sorted(os.listdir(base.path)), ["outside"])
        self.assertEqual(outside.child("keep").getContent(), b"k")
        volume.remove_root()


class QuotaTests(SynchronousTestCase):
    """
    The cached usage and the fits / has-space checks of api.md section 2.13.
    """

    def setUp(self) -> None:
        self.clock = _FakeClock()
        self.volume, self.root = _make_volume(
            self, disk_limit_bytes=100, disk_check_interval=10.0, clock=self.clock
        )
        self.walks = 0
        quota = self.volume._quota
        measure = quota._measure

        def counting() -> int:
            self.walks += 1
            return measure()

        quota._measure = counting

    def test_walk_cached(self) -> None:
        """
        The volume is walked on first use and again only once the interval has passed.
        """
        self.root.child("a").setContent(b"x" * 40)
        self.assertEqual(self.volume.usage(), 40)
        self.root.child("b").setContent(b"x" * 30)
        self.clock.now += 9.9
        self.assertEqual(self.volume.usage(), 40)
        self.assertEqual(self.walks, 1)
        self.clock.now += 0.1
        self.assertEqual(self.volume.usage(), 70)
        self.assertEqual(self.walks, 2)
        self.assertEqual(self.volume.refresh_usage(), 70)
        self.assertEqual(self.walks, 3)

    def test_counts_regular_files_only(self) -> None:
        """
        Symlinks, directories and FIFOs count 0; every hard-link name counts.
        """
        self.root.child("a").setContent(b"x" * 10)
        os.link(self.root.child("a").path, self.root.child("hard").path)
        os.symlink("a" * 50, self.root.child("link").path)
        os.mkfifo(self.root.child("fifo").path)
        self.root.child("sub").makedirs()
        self.assertEqual(self.volume.refresh_usage(), 20)

    def test_fits_and_has_space(self) -> None:
        """
        fits compares usage + delta with the limit (negative deltas too); has-space allows being
        exactly at the limit.
        """
        self.root.child("a").setContent(b"x" * 100)
        self.assertTrue(self.volume.fits(0))
        self.assertFalse(self.volume.fits(1))
        self.assertTrue(self.volume.has_space())
        self.volume.add_usage(20)
        self.assertFalse(self.volume.has_space())
        self.assertFalse(self.volume.fits(-10))
        self.assertTrue(self.volume.fits(-20))
        self.volume.set_disk_limit(0)
        self.assertTrue(self.volume.fits(10**12))
        self.assertTrue(self.volume.has_space())
        self.volume.set_disk_limit(-1)
        self.assertFalse(self.volume.fits(0))

    def test_unlimited_does_not_walk(self) -> None:
        """
        With no limit the checks never walk the volume.
        """
        self.volume.set_disk_limit(0)
        self.volume.fits(1)
        self.volume.has_space()
        self.assertEqual(self.walks, 0)

    def test_interval_zero(self) -> None:
        """
        With an interval of 0 the volume is never walked: usage is the tracked counter and
        has-space always passes.
        """
        volume = Volume(
            self.root.path, uid=os.getuid(), gid=os.getgid(), disk_limit_bytes=10,
            disk_check_interval=0, clock=self.clock, accounting=BYTES
        )
        self.root.child("big").setContent(b"x" * 1000)
        self.assertEqual(volume.usage(), 0)
        self.assertTrue(volume.has_space())
        volume.add_usage(8)
        self.assertTrue(volume.fits(2))
        self.assertFalse(volume.fits(3))
        volume.add_usage(-100)
        self.assertEqual(volume.usage(), 0)

    def test_link_not_followed(self) -> None:
        """
        The walk does not follow directory symlinks (inside or outside the volume).
        """
        self.root.child("d").makedirs()
        self.root.child("d").child("f").setContent(b"x" * 7)
        os.symlink("d", self.root.child("rel").path)
        os.symlink(os.path.abspath(self.root.dirname()), self.root.child("abs").path)
        self.assertEqual(self.volume.refresh_usage(), 7)


# ---------------------------------------------------------------------------------------------
# Property suite.

_NAMES = ["a", "b", "c", "l1", "l2", "f", "sdir", "secret.txt", "root", "outside"]
_LINK_TARGETS = [
    "..", "../..", "../../..", ".", "a", "a/b", "../a", "./a", "l1", "l2", "l1/l2",
    "a/../..", "b/../../sdir", "../secret.txt", "../sdir", "../root/a", "../../outside/sdir",
    "f", "f/x", "a/b/c/../../..", "{outside}", "{secret}", "{root}/a", "{sdir}", "{base}",
]
_PATH_COMPONENTS = _NAMES + [
    "..", ".", "", "x\\y", "\\..", "..\\..", "a\x00b", "n" * 256, "...", " ", "\u00e9",
]
_HOSTILE_PATHS = [
    "{outside}", "{secret}", "{root}/a", "{sdir}/inner.txt", "/", "//", "", ".",
    "../" * 6 + "secret.txt", "..", "/../sdir/inner.txt", "l1/l2/x", "a/" * 300,
]

_paths = st.one_of(
    st.builds(
        lambda lead, parts: ("/" if lead else "") + "/".join(parts),
        st.booleans(),
        st.lists(st.sampled_from(_PATH_COMPONENTS), max_size=6),
    ),
    st.sampled_from(_HOSTILE_PATHS),
    st.text(max_size=12),
)
_relpaths = st.lists(st.sampled_from(_NAMES), min_size=1, max_size=3)
_layout = st.lists(
    st.tuples(
        st.sampled_from(["dir", "file", "link", "link", "fifo"]),
        _relpaths,
        st.sampled_from(_LINK_TARGETS),
    ),
    max_size=14,
)
_OPERATIONS = [
    "open_read", "write_commit", "write_abort", "write_quota", "mkdir", "remove", "rename",
    "listdir", "stat", "lstat", "copy", "chmod", "list_directory", "stat_entry", "search",
    "replace_line", "read_lines", "touch",
]
_SUFFIXES = ["", "x", "secret.txt", "inner.txt", "sdir/inner.txt", "..", "../..", "root/a", "l1/x"]


def _layout_paths(layout: list[tuple[str, list[str], str]]) -> list[str]:
    """
    Every path the layout names, parents included.
    """
    return sorted(
        {"/".join(parts[:i]) for _, parts, _ in layout for i in range(1, len(parts) + 1)}
    )


@st.composite
def _scenarios(
    draw: Callable[..., object]
) -> tuple[list[tuple[str, list[str], str]], list[tuple[str, str, str]]]:
    """
    A layout and operations whose paths are often the layout's own names (with hostile tails),
    so that links are actually walked through and opened.
    """
    layout: list[tuple[str, list[str], str]] = draw(_layout)  # type: ignore[assignment]
    names = _layout_paths(layout)
    paths = _paths
    if names:
        paths = st.one_of(
            _paths,
            st.builds(
                lambda name, suffix: name + "/" + suffix if suffix else name,
                st.sampled_from(names),
                st.sampled_from(_SUFFIXES),
            ),
        )
    operations: list[tuple[str, str, str]] = draw(  # type: ignore[assignment]
        st.lists(st.tuples(st.sampled_from(_OPERATIONS), paths, paths), min_size=1, max_size=8)
    )
    return layout, operations


class _Sandbox:
    """
    ``base/outside/root`` (the volume) with sentinels in ``outside`` and ``base``.
    """

    def __init__(self, base: str) -> None:
        self.base = os.path.abspath(base)
        self.outside = os.path.join(self.base, "outside")
        self.root = os.path.join(self.outside, "root")
        os.makedirs(self.root)
        os.makedirs(os.path.join(self.outside, "sdir", "sub"))
        os.makedirs(os.path.join(self.outside, "empty"))
        with open(os.path.join(self.outside, "secret.txt"), "wb") as f:
            f.write(b"secret")
        with open(os.path.join(self.outside, "sdir", "inner.txt"), "wb") as f:
            f.write(b"inner")
        with open(os.path.join(self.base, "above.txt"), "wb") as f:
            f.write(b"above")
        os.chmod(os.path.join(self.outside, "secret.txt"), 0o640)
        os.mkfifo(os.path.join(self.outside, "fifo"))
        os.symlink("secret.txt", os.path.join(self.outside, "link"))
        self.volume = Volume(
            self.root, uid=os.getuid(), gid=os.getgid(), disk_limit_bytes=1 << 20, accounting=BYTES
        )

    def expand(self, text: str) -> str:
        return (
            text.replace("{outside}", self.outside)
            .replace("{secret}", os.path.join(self.outside, "secret.txt"))
            .replace("{sdir}", os.path.join(self.outside, "sdir"))
            .replace("{root}", self.root)
            .replace("{base}", self.base)
        )

    def build(self, layout: list[tuple[str, list[str], str]]) -> None:
        """
        Create the entries with plain calls that never go through a symlink.
        """
        for kind, parts, target in layout:
            parent = self._parent(parts[:-1])
            if parent is None:
                continue
            path = os.path.join(parent, parts[-1])
            if os.path.lexists(path):
                continue
            if kind == "dir":
                os.mkdir(path)
            elif kind == "file":
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                os.write(fd, b"inside")
                os.close(fd)
            elif kind == "link":
                os.symlink(self.expand(target), path)
            else:
                os.mkfifo(path)

    def _parent(self, parts: list[str]) -> str | None:
        path = self.root
        for part in parts:
            path = os.path.join(path, part)
            if not os.path.lexists(path):
                os.mkdir(path)
            elif os.path.islink(path) or not os.path.isdir(path):
                return None
        return path

    def snapshot(self) -> dict[str, tuple[object, ...]]:
        """
        Everything under ``base`` except the volume's contents: type, mode, owner, size,
        times, inode, link text and content hash.
        """
        result: dict[str, tuple[object, ...]] = {}
        for directory, dirnames, filenames in os.walk(self.base, followlinks=False):
            if directory == self.root:
                dirnames[:] = []
                continue
            for name in [*dirnames, *filenames]:
                path = os.path.join(directory, name)
                st = os.lstat(path)
                extra: object = None
                if stat.S_ISLNK(st.st_mode):
                    extra = os.readlink(path)
                elif stat.S_ISREG(st.st_mode):
                    with open(path, "rb") as f:
                        extra = hashlib.sha256(f.read()).hexdigest()
                if path == self.root:
                    # The volume itself: only what describes it, not its changing times.
                    result[path] = (st.st_mode, st.st_uid, st.st_gid, st.st_ino)
                    continue
                result[path] = (
                    st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns,
                    st.st_ctime_ns, st.st_ino, st.st_nlink, extra,
                )
        st = os.lstat(self.base)
        result[self.base] = (st.st_mode, st.st_mtime_ns, st.st_ctime_ns)
        return result

    def outside_inodes(self) -> set[tuple[int, int]]:
        """
        The inodes of every entry outside the volume (the volume directory excluded).
        """
        inodes = set()
        for directory, dirnames, filenames in os.walk(self.base, followlinks=False):
            if directory == self.root:
                dirnames[:] = []
                continue
            for name in [directory, *(os.path.join(directory, n) for n in dirnames + filenames)]:
                if name == self.root:
                    continue
                st = os.lstat(name)
                inodes.add((st.st_dev, st.st_ino))
        return inodes


def _run(
    sandbox: _Sandbox,
    operation: str,
    first: str,
    second: str,
    leaked: Callable[[os.stat_result], None],
) -> None:
    """
    Run one operation with hostile arguments; only L{FsError} may escape.
    """
    volume = sandbox.volume
    first = sandbox.expand(first)
    second = sandbox.expand(second)
    try:
        if operation == "open_read":
            fd, st = volume.open_read(first, check_denylist=False)
            try:
                leaked(os.fstat(fd))
                leaked(st)
            finally:
                os.close(fd)
        elif operation in ("write_commit", "write_abort", "write_quota"):
            writer = volume.begin_write(first, second, check_denylist=False)
            try:
                if operation == "write_quota":
                    writer.write(b"x" * ((1 << 20) + 1))
                writer.write(b"written")
                if operation != "write_abort":
                    writer.commit()
            finally:
                writer.close()
        elif operation == "mkdir":
            volume.mkdir(first)
        elif operation == "remove":
            volume.remove(first)
        elif operation == "rename":
            volume.rename(first, second, check_denylist=False)
        elif operation == "listdir":
            for _, st in volume.listdir(first):
                leaked(st)
        elif operation == "stat":
            leaked(volume.stat(first))
        elif operation == "copy":
            copy_entry(volume, first, check_denylist=False)
        elif operation == "chmod":
            volume.setstat(first, mode=0o777)
        elif operation == "list_directory":
            list_directory(volume, first)
        elif operation == "stat_entry":
            stat_entry(volume, first)
        elif operation == "search":
            search(volume, first, "sec", blacklist=(), max_depth=8)
        elif operation == "replace_line":
            replace_line(volume, first, 1, "replaced", max_line_size=100)
        elif operation == "read_lines":
            read_lines(volume, first, 1, 10, max_line_size=100)
        elif operation == "touch":
            with volume.open_file(first, read=False, write=True, create=True,
                                  check_denylist=False) as handle:
                handle.utime(0, 0)
        else:
            leaked(volume.lstat(first))
    except (FsError, BadLines):
        pass


def check_outside_untouched(
    test: SynchronousTestCase,
    layout: list[tuple[str, list[str], str]],
    operations: Sequence[tuple[str, ...]],
    run: Callable[..., None],
) -> None:
    """
    Build ``layout`` in a fresh `_Sandbox`, call ``run(sandbox, *operation, leaked)`` for each
    operation, then check that nothing outside the volume changed, that no outside entry was
    handed out (``leaked`` fails the test on one) and that the volume's usage can be counted.
    """
    directory = test.mktemp()
    sandbox = _Sandbox(directory)
    try:
        sandbox.build(layout)
        before = sandbox.snapshot()
        outside = sandbox.outside_inodes()

        def leaked(st: os.stat_result) -> None:
            test.assertNotIn((st.st_dev, st.st_ino), outside, "handed out an outside entry")

        for operation in operations:
            run(sandbox, *operation, leaked)
        test.assertEqual(sandbox.snapshot(), before)
        sandbox.volume.refresh_usage()
    finally:
        shutil.rmtree(os.path.dirname(directory))


class SandboxPropertyTests(SynchronousTestCase):
    """
    Whatever the layout inside the volume and whatever the paths, no operation reaches outside.
    """

    def check(
        self,
        layout: list[tuple[str, list[str], str]],
        operations: list[tuple[str, str, str]],
    ) -> None:
        """
        Build the layout, run the operations, and compare everything outside with before.
        """
        check_outside_untouched(self, layout, operations, _run)

    @_PROFILE
    @given(_scenarios())
    def test_nothing_outside_changes(
        self,
        scenario: tuple[list[tuple[str, list[str], str]], list[tuple[str, str, str]]],
    ) -> None:
        """
        Random layouts and random hostile paths: nothing outside the volume is created,
        modified, removed or handed out, and only L{FsError} subclasses escape.
        """
        self.check(*scenario)

    @settings(_PROFILE, max_examples=40)
    @given(_layout)
    def test_every_operation_on_every_entry(self, layout: list[tuple[str, list[str], str]]) -> None:
        """
        Every operation applied to every name of the layout (and beneath it) stays inside.
        """
        operations = []
        for path in _layout_paths(layout):
            for operation in _OPERATIONS:
                operations.append((operation, path + "/x", "n"))
                operations.append((operation, path, "moved/" + path))
        self.check(layout, operations)

    def test_each_link_target(self) -> None:
        """
        Exhaustively: a link with each hostile target, at the top and one level down, walked
        through and used as the final component by every operation, never reaches outside.
        """
        for target in _LINK_TARGETS:
            for parts in (["l"], ["a", "l"]):
                link = "/".join(parts)
                operations = [
                    (operation, link + "/" + suffix if suffix else link, second)
                    for suffix in _SUFFIXES
                    for operation in _OPERATIONS
                    for second in ("n", "moved")
                ]
                # Operations on the link last: removing or moving it first would hide it.
                operations.sort(key=lambda op: op[1] == link and op[0] in ("remove", "rename"))
                self.check([("link", parts, target)], operations)


def _renameat2_exchange() -> Callable[[str, str], None] | None:
    """
    An atomic exchange of two paths (``renameat2(RENAME_EXCHANGE)``), if libc has it.
    """
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except AttributeError:
        return None
    function.argtypes = [
        ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint
    ]
    at_fdcwd, rename_exchange = -100, 2

    def exchange(a: str, b: str) -> None:
        if function(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    return exchange


class SwapRaceTests(SynchronousTestCase):
    """
    A directory swapped for a symlink while operations walk through it never leaks.
    """

    def race(self, link_text: Callable[[str], str]) -> None:
        base = FilePath(self.mktemp())
        target = base.child("outside").child("target")
        target.makedirs()
        target.child("secret").setContent(b"outside")
        secret_inode = os.stat(target.child("secret").path).st_ino
        root = base.child("outside").child("root")
        volume = Volume(root.path, uid=os.getuid(), gid=os.getgid(), accounting=BYTES)
        volume.ensure_root()
        real = root.child("d")
        real.makedirs()
        real.child("secret").setContent(b"inside")
        swap = root.child("swap")
        os.symlink(link_text(target.path), swap.path)

        exchange = _renameat2_exchange()
        stop = threading.Event()
        swaps = [0]

        def swapper() -> None:
            while not stop.is_set():
                try:
                    if exchange is not None:
                        exchange(real.path, swap.path)
                    else:
                        # Without renameat2 the swap is two renames: still a race.
                        os.rename(real.path, root.child("tmp").path)
                        os.rename(swap.path, real.path)
                        os.rename(root.child("tmp").path, swap.path)
                        os.rename(real.path, root.child("tmp").path)
                        os.rename(swap.path, real.path)
                        os.rename(root.child("tmp").path, swap.path)
                except OSError as e:
                    if e.errno != errno.ENOENT:
                        raise
                swaps[0] += 1

        thread = threading.Thread(target=swapper)
        thread.start()
        written = 0
        try:
            for i in range(300):
                try:
                    with volume.begin_write("d", "f%d" % (i,)) as writer:
                        writer.write(b"x")
                        writer.commit()
                    written += 1
                except FsError:
                    pass
                try:
                    fd, st = volume.open_read("d/secret")
                    os.close(fd)
                    self.assertNotEqual(st.st_ino, secret_inode)
                except FsError:
                    pass
                try:
                    volume.mkdir("d/sub%d" % (i,))
                except FsError:
                    pass
        finally:
            stop.set()
            thread.join()
        self.assertEqual(os.listdir(target.path), ["secret"])
        self.assertEqual(target.child("secret").getContent(), b"outside")
        self.assertGreater(swaps[0], 0)
        self.assertGreater(written, 0)

    def test_absolute_link(self) -> None:
        """
        Swapping in an absolute link to a directory outside never lets a write land there.
        """
        self.race(lambda target: target)

    def test_relative_escape(self) -> None:
        """
        Swapping in a relative link that escapes never lets a write land outside.
        """
        self.race(lambda target: "../target")
