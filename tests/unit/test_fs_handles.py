"""
Tests for L{wings_twisted.fs.handles}: L{Volume.open_file} and L{FileHandle}, L{Volume.setstat}
and L{Volume.readlink}, the operations SFTP and chunked uploads build on.

The property suite at the end checks that random sequences of writes and truncations keep the
usage counter equal to the real sizes, and that random hostile paths through the new operations
never reach the sentinels outside the volume (with the sandbox of L{tests.test_fs}).
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import threading
from typing import Any, Callable

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.fs.quota import BYTES
from wings_twisted.fs import (
    AlreadyExists,
    Denied,
    FileHandle,
    FsError,
    IsDirectory,
    NotFound,
    QuotaExceeded,
    SpecialFile,
    Volume,
)

from ..support import unix_socket_at
from .test_fs import (
    check_outside_untouched,
    _PROFILE,
    _SUFFIXES,
    _layout,
    _layout_paths,
    _paths,
    _renameat2_exchange,
    _Sandbox,
)

#: A uid:gid that is not the test's own when it runs as root, so that the chown shows.
_OWNER = (4321, 8765) if os.getuid() == 0 else (os.getuid(), os.getgid())


class _FakeClock:
    """
    A monotonic clock that only moves when told to.
    """

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _make_volume(
    test: SynchronousTestCase, **kwargs: object
) -> tuple[Volume, FilePath, FilePath]:
    """
    A volume ``outside/root`` in a fresh temporary directory, beside a sentinel file and directory
    in ``outside``; returns the volume, its root and ``outside``.
    """
    outside = FilePath(test.mktemp())
    outside.child("sdir").makedirs()
    outside.child("secret.txt").setContent(b"secret")
    outside.child("sdir").child("inner.txt").setContent(b"inner")
    root = outside.child("root")
    volume = Volume(root.path, uid=_OWNER[0], gid=_OWNER[1], **kwargs, accounting=BYTES)  # type: ignore[arg-type]
    volume.ensure_root()
    return volume, root, outside


def _open_fds() -> int:
    """
    The number of descriptors this process holds.
    """
    return len(os.listdir("/proc/self/fd"))


def _without_blocking(test: SynchronousTestCase, function: Callable[[], object]) -> object:
    """
    Run ``function`` in a daemon thread and fail the test if it has not returned after 10 s (a FIFO
    opened without ``O_NONBLOCK`` would block forever); re-raise what it raised.
    """
    values: list[object] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            values.append(function())
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():
        test.fail("the operation blocked")
    if errors:
        raise errors[0]
    return values[0]


class OpenFileTests(SynchronousTestCase):
    """
    L{Volume.open_file} opens regular files of the volume with the flags asked for.
    """

    def setUp(self) -> None:
        self.volume, self.root, self.outside = _make_volume(self)

    def open(self, path: str, **flags: Any) -> FileHandle:
        handle = self.volume.open_file(path, **flags)
        self.addCleanup(handle.close)
        return handle

    def test_read_at_offsets(self) -> None:
        """
        A read handle reads at any offset; a read past the end is short, at the end empty.
        """
        self.root.child("a").setContent(b"0123456789")
        handle = self.open("/a")
        self.assertEqual(handle.path, "a")
        self.assertEqual(handle.pread(3, 4), b"3456")
        self.assertEqual(handle.pread(0, 2), b"01")
        self.assertEqual(handle.pread(8, 100), b"89")
        self.assertEqual(handle.pread(10, 5), b"")
        self.assertEqual(handle.pread(50, 5), b"")

    def test_resumed_write_keeps_head(self) -> None:
        """
        Writing at an offset of an existing file without C{truncate} keeps what comes before and
        after the bytes written (a resumed upload).
        """
        self.root.child("up.bin").setContent(b"HEAD----TAIL")
        handle = self.open("up.bin", read=False, write=True)
        self.assertEqual(handle.pwrite(4, b"body"), 4)
        handle.close()
        self.assertEqual(self.root.child("up.bin").getContent(), b"HEADbodyTAIL")
        handle = self.open("up.bin", read=False, write=True)
        handle.pwrite(12, b"+more")
        handle.close()
        self.assertEqual(self.root.child("up.bin").getContent(), b"HEADbodyTAIL+more")

    def test_read_write(self) -> None:
        """
        A handle opened for reading and writing reads back what it wrote.
        """
        self.root.child("rw").setContent(b"abcdef")
        handle = self.open("rw", read=True, write=True)
        handle.pwrite(2, b"XY")
        self.assertEqual(handle.pread(0, 10), b"abXYef")

    def test_wrong_direction(self) -> None:
        """
        A read-only handle refuses writes and a write-only handle refuses reads, with
        L{io.UnsupportedOperation}; nothing is written.
        """
        self.root.child("f").setContent(b"data")
        reader = self.open("f")
        self.assertRaises(io.UnsupportedOperation, reader.pwrite, 0, b"x")
        self.assertRaises(io.UnsupportedOperation, reader.truncate, 0)
        writer = self.open("f", read=False, write=True)
        self.assertRaises(io.UnsupportedOperation, writer.pread, 0, 1)
        self.assertEqual(self.root.child("f").getContent(), b"data")

    def test_flag_combinations(self) -> None:
        """
        Opening for nothing, C{create}/C{truncate}/C{append} without C{write} and C{exclusive}
        without C{create} are programming errors (L{ValueError}).
        """
        self.root.child("f").setContent(b"data")
        for flags in [
            dict(read=False),
            dict(create=True),
            dict(truncate=True),
            dict(append=True),
            dict(write=True, exclusive=True),
        ]:
            self.assertRaises(ValueError, self.volume.open_file, "f", **flags)
        self.assertEqual(self.root.child("f").getContent(), b"data")

    def test_missing(self) -> None:
        """
        A missing file is L{NotFound} without C{create}.
        """
        self.assertRaises(NotFound, self.volume.open_file, "missing")
        self.assertRaises(NotFound, self.volume.open_file, "missing", write=True)
        self.assertFalse(self.root.child("missing").exists())

    def test_create(self) -> None:
        """
        C{create} makes a missing file with exactly the mode asked for (the umask does not apply)
        and the volume's owner, and opens an existing one without truncating it.
        """
        handle = self.open("new.txt", write=True, create=True, mode=0o666)
        handle.pwrite(0, b"fresh")
        st = os.lstat(self.root.child("new.txt").path)
        self.assertTrue(stat.S_ISREG(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o666)
        self.assertEqual((st.st_uid, st.st_gid), _OWNER)
        handle = self.open("new.txt", write=True, create=True, mode=0o600)
        self.assertEqual(handle.fstat().st_size, 5)
        self.assertEqual(stat.S_IMODE(handle.fstat().st_mode), 0o666)

    def test_create_mode_bits(self) -> None:
        """
        The mode of a created file is C{mode & 0o7777}; the set-group-ID bit survives the chown.
        """
        self.open("g", write=True, create=True, mode=0o172640)
        self.assertEqual(stat.S_IMODE(os.lstat(self.root.child("g").path).st_mode), 0o2640)

    def test_parents_not_created(self) -> None:
        """
        C{create} does not create missing parent directories: L{NotFound}, nothing left behind.
        """
        self.assertRaises(
            NotFound, self.volume.open_file, "a/b/new", write=True, create=True
        )
        self.assertEqual(self.root.listdir(), [])

    def test_exclusive(self) -> None:
        """
        C{exclusive} creates a new file and refuses an existing entry of any type, a dangling
        symlink included, with L{AlreadyExists}.
        """
        self.open("x", write=True, create=True, exclusive=True)
        self.assertTrue(self.root.child("x").exists())
        self.root.child("d").makedirs()
        os.symlink("nowhere", self.root.child("dangling").path)
        for name in ("x", "d", "dangling"):
            self.assertRaises(
                AlreadyExists, self.volume.open_file, name, write=True, create=True,
                exclusive=True,
            )
        self.assertFalse(self.root.child("nowhere").exists())

    def test_truncate(self) -> None:
        """
        C{truncate} empties an existing file and credits the bytes freed to the usage counter.
        """
        volume, root, _ = _make_volume(self, disk_limit_bytes=1000, disk_check_interval=0)
        handle = volume.open_file("t", write=True, create=True)
        handle.pwrite(0, b"x" * 40)
        handle.close()
        self.assertEqual(volume.usage(), 40)
        handle = volume.open_file("t", write=True, truncate=True)
        self.addCleanup(handle.close)
        self.assertEqual(handle.fstat().st_size, 0)
        self.assertEqual(volume.usage(), 0)

    def test_append(self) -> None:
        """
        An C{append} handle writes at the end whatever the offset given.
        """
        self.root.child("log").setContent(b"one\n")
        handle = self.open("log", write=True, append=True)
        handle.pwrite(0, b"two\n")
        handle.pwrite(1, b"three\n")
        self.assertEqual(self.root.child("log").getContent(), b"one\ntwo\nthree\n")

    def test_directory(self) -> None:
        """
        A directory, and the root itself, are L{IsDirectory}, also with C{create}.
        """
        self.root.child("sub").makedirs()
        for path in ("sub", "", "/", "sub/.."):
            self.assertRaises(IsDirectory, self.volume.open_file, path)
        self.assertRaises(IsDirectory, self.volume.open_file, "sub", write=True, create=True)

    def test_final_symlink(self) -> None:
        """
        A final symlink is L{NotFound} for every kind of open, and C{create} through a dangling
        one creates nothing.
        """
        self.root.child("real").setContent(b"real")
        os.symlink("real", self.root.child("link").path)
        os.symlink("target", self.root.child("dangling").path)
        os.symlink(self.outside.child("secret.txt").path, self.root.child("abs").path)
        for name in ("link", "dangling", "abs"):
            self.assertRaises(NotFound, self.volume.open_file, name)
            self.assertRaises(NotFound, self.volume.open_file, name, write=True, create=True)
            self.assertRaises(NotFound, self.volume.open_file, name, write=True, truncate=True)
        self.assertFalse(self.root.child("target").exists())
        self.assertEqual(self.root.child("real").getContent(), b"real")
        self.assertEqual(self.outside.child("secret.txt").getContent(), b"secret")

    def test_intermediate_symlink_inside(self) -> None:
        """
        A relative intermediate symlink that stays inside the volume is walked through.
        """
        self.root.child("d").makedirs()
        os.symlink("d", self.root.child("alias").path)
        handle = self.open("alias/f", write=True, create=True)
        handle.pwrite(0, b"via link")
        self.assertEqual(self.root.child("d").child("f").getContent(), b"via link")

    def test_intermediate_symlink_outside(self) -> None:
        """
        An intermediate symlink that leads out of the volume, relative or absolute, is
        L{NotFound}: nothing outside is read, created or truncated.
        """
        os.symlink("../sdir", self.root.child("rel").path)
        os.symlink(self.outside.child("sdir").path, self.root.child("abs").path)
        for link in ("rel", "abs"):
            self.assertRaises(NotFound, self.volume.open_file, link + "/inner.txt")
            self.assertRaises(
                NotFound, self.volume.open_file, link + "/inner.txt", write=True, truncate=True
            )
            self.assertRaises(
                NotFound, self.volume.open_file, link + "/new", write=True, create=True
            )
        self.assertEqual(self.outside.child("sdir").listdir(), ["inner.txt"])
        self.assertEqual(self.outside.child("sdir").child("inner.txt").getContent(), b"inner")

    def test_fifo(self) -> None:
        """
        A FIFO is L{SpecialFile} for reading and writing, and opening it never blocks (nobody is
        at the other end).
        """
        os.mkfifo(self.root.child("fifo").path)
        for flags in (dict(), dict(read=False, write=True), dict(write=True, create=True)):
            self.assertRaises(
                SpecialFile,
                _without_blocking,
                self,
                lambda: self.volume.open_file("fifo", **flags),
            )

    def test_socket(self) -> None:
        """
        A UNIX socket is L{SpecialFile}.
        """
        sock = unix_socket_at(self.root.child("sock").path)
        self.addCleanup(sock.close)
        self.assertRaises(SpecialFile, self.volume.open_file, "sock")
        self.assertRaises(SpecialFile, self.volume.open_file, "sock", write=True)

    def test_denylist(self) -> None:
        """
        A denied path is L{Denied}, before it is looked up and before anything is created,
        unless the check is disabled.
        """
        self.volume.set_denylist(["*.cfg"])
        self.assertRaises(Denied, self.volume.open_file, "a.cfg", write=True, create=True)
        self.assertRaises(Denied, self.volume.open_file, "x/../a.cfg")
        self.assertFalse(self.root.child("a.cfg").exists())
        self.open("a.cfg", write=True, create=True, check_denylist=False)
        self.assertTrue(self.root.child("a.cfg").exists())

    def test_handle_attributes(self) -> None:
        """
        A handle changes its file's mode (C{& 0o7777}) and times, syncs, and describes it.
        """
        handle = self.open("f", write=True, create=True)
        handle.pwrite(0, b"abc")
        handle.chmod(0o104751)
        handle.utime(1_000_000.0, 2_000_000.0)
        handle.sync()
        st = os.lstat(self.root.child("f").path)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o4751)
        self.assertEqual((st.st_atime, st.st_mtime), (1_000_000.0, 2_000_000.0))
        self.assertEqual(handle.fstat().st_ino, st.st_ino)
        self.assertEqual(handle.fstat().st_size, 3)

    def test_close(self) -> None:
        """
        C{close} is idempotent, the C{with} block closes, and a closed handle raises
        L{ValueError}.
        """
        self.root.child("f").setContent(b"x")
        with self.volume.open_file("f", write=True) as handle:
            pass
        handle.close()
        self.assertRaises(ValueError, handle.pread, 0, 1)
        self.assertRaises(ValueError, handle.pwrite, 0, b"x")
        self.assertRaises(ValueError, handle.fstat)
        self.assertRaises(ValueError, handle.truncate, 0)
        self.assertRaises(ValueError, handle.chmod, 0o644)

    def test_negative_arguments(self) -> None:
        """
        Negative offsets, lengths and sizes are L{ValueError}.
        """
        handle = self.open("f", read=True, write=True, create=True)
        self.assertRaises(ValueError, handle.pread, -1, 1)
        self.assertRaises(ValueError, handle.pread, 0, -1)
        self.assertRaises(ValueError, handle.pwrite, -1, b"x")
        self.assertRaises(ValueError, handle.truncate, -1)


class HandleQuotaTests(SynchronousTestCase):
    """
    Writes and truncations through a handle pass the quota and keep the usage counter.
    """

    def setUp(self) -> None:
        self.clock = _FakeClock()
        self.volume, self.root, _ = _make_volume(
            self, disk_limit_bytes=100, disk_check_interval=3600.0, clock=self.clock
        )
        self.root.child("f").setContent(b"a" * 90)
        self.assertEqual(self.volume.refresh_usage(), 90)

    def open(self) -> FileHandle:
        handle = self.volume.open_file("f", read=True, write=True)
        self.addCleanup(handle.close)
        return handle

    def test_refused_mid_file(self) -> None:
        """
        A write whose growth does not fit is L{QuotaExceeded}: nothing of it is written and the
        usage is unchanged; exactly reaching the limit is allowed.
        """
        handle = self.open()
        self.assertRaises(QuotaExceeded, handle.pwrite, 80, b"b" * 21)
        self.assertEqual(self.root.child("f").getContent(), b"a" * 90)
        self.assertEqual(self.volume.cached_usage(), 90)
        handle.pwrite(80, b"b" * 20)
        self.assertEqual(self.root.child("f").getContent(), b"a" * 80 + b"b" * 20)
        self.assertEqual(self.volume.cached_usage(), 100)

    def test_growth_only(self) -> None:
        """
        Overwriting in place costs nothing; a write past the end costs only what it adds, holes
        included.
        """
        handle = self.open()
        handle.pwrite(0, b"c" * 90)
        self.assertEqual(self.volume.cached_usage(), 90)
        handle.pwrite(85, b"d" * 10)
        self.assertEqual(self.volume.cached_usage(), 95)
        handle.pwrite(99, b"e")
        self.assertEqual(self.volume.cached_usage(), 100)
        self.assertEqual(handle.fstat().st_size, 100)

    def test_empty_write(self) -> None:
        """
        An empty write, even far past the end, neither extends the file nor costs anything.
        """
        handle = self.open()
        self.assertEqual(handle.pwrite(500, b""), 0)
        self.assertEqual(handle.fstat().st_size, 90)
        self.assertEqual(self.volume.cached_usage(), 90)

    def test_truncate(self) -> None:
        """
        Extending checks the growth, shrinking credits what is freed.
        """
        handle = self.open()
        self.assertRaises(QuotaExceeded, handle.truncate, 101)
        self.assertEqual(handle.fstat().st_size, 90)
        handle.truncate(100)
        self.assertEqual(self.volume.cached_usage(), 100)
        handle.truncate(30)
        self.assertEqual(self.volume.cached_usage(), 30)
        self.assertEqual(self.root.child("f").getContent(), b"a" * 30)

    def test_append(self) -> None:
        """
        An append write grows the file by all of its bytes, whatever the offset given.
        """
        handle = self.volume.open_file("f", write=True, append=True)
        self.addCleanup(handle.close)
        self.assertRaises(QuotaExceeded, handle.pwrite, 0, b"x" * 11)
        handle.pwrite(0, b"x" * 10)
        self.assertEqual(self.volume.cached_usage(), 100)

    def test_over_limit(self) -> None:
        """
        Like every fits check, a write that adds nothing is refused while the volume is over its
        limit, and a limit of -1 refuses every write.
        """
        handle = self.open()
        self.volume.add_usage(20)
        self.assertRaises(QuotaExceeded, handle.pwrite, 0, b"z")
        self.volume.add_usage(-20)
        handle.pwrite(0, b"z")
        self.volume.set_disk_limit(-1)
        self.assertRaises(QuotaExceeded, handle.pwrite, 0, b"z")
        self.assertRaises(QuotaExceeded, handle.truncate, 90)

    def test_setstat_size(self) -> None:
        """
        A size set by path goes through the quota like L{FileHandle.truncate}.
        """
        self.assertRaises(QuotaExceeded, self.volume.setstat, "f", size=200)
        self.assertEqual(os.path.getsize(self.root.child("f").path), 90)
        self.volume.setstat("f", size=10)
        self.assertEqual(self.volume.cached_usage(), 10)
        self.volume.setstat("f", size=100)
        self.assertEqual(self.volume.cached_usage(), 100)
        self.assertEqual(self.root.child("f").getContent(), b"a" * 10 + b"\0" * 90)


class SetstatTests(SynchronousTestCase):
    """
    L{Volume.setstat} changes the entry itself, never through a final symlink.
    """

    def setUp(self) -> None:
        self.volume, self.root, self.outside = _make_volume(self)
        self.root.child("f").setContent(b"0123456789")
        self.root.child("d").makedirs()

    def test_mode(self) -> None:
        """
        The mode of a file and of a directory is set to C{mode & 0o7777}.
        """
        self.volume.setstat("f", mode=0o100600)
        self.volume.setstat("d", mode=0o1750)
        self.assertEqual(stat.S_IMODE(os.lstat(self.root.child("f").path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.lstat(self.root.child("d").path).st_mode), 0o1750)

    def test_size_and_times(self) -> None:
        """
        The size is applied before the times, so the times asked for are the ones kept; a
        request without a mode leaves the mode alone.
        """
        os.chmod(self.root.child("f").path, 0o640)
        self.volume.setstat("f", size=4, atime_mtime=(5_000_000.0, 6_000_000.0))
        st = os.lstat(self.root.child("f").path)
        self.assertEqual(self.root.child("f").getContent(), b"0123")
        self.assertEqual((st.st_atime, st.st_mtime), (5_000_000.0, 6_000_000.0))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o640)

    def test_directory_times(self) -> None:
        """
        The times of a directory are set through its descriptor.
        """
        self.volume.setstat("d", atime_mtime=(7.0, 8.0))
        st = os.lstat(self.root.child("d").path)
        self.assertEqual((st.st_atime, st.st_mtime), (7.0, 8.0))

    def test_size_of_non_file(self) -> None:
        """
        A size for a directory is L{IsDirectory}, for a FIFO L{SpecialFile}; the FIFO's mode can
        be changed without opening it (no blocking).
        """
        os.mkfifo(self.root.child("fifo").path)
        self.assertRaises(IsDirectory, self.volume.setstat, "d", size=0)
        self.assertRaises(
            SpecialFile, _without_blocking, self, lambda: self.volume.setstat("fifo", size=0)
        )
        _without_blocking(self, lambda: self.volume.setstat("fifo", mode=0o600))
        self.assertEqual(stat.S_IMODE(os.lstat(self.root.child("fifo").path).st_mode), 0o600)

    def test_final_symlink(self) -> None:
        """
        A final symlink is L{NotFound} and neither it nor its target (inside or outside) changes.
        """
        os.chmod(self.root.child("f").path, 0o644)
        os.symlink("f", self.root.child("link").path)
        secret = self.outside.child("secret.txt")
        os.chmod(secret.path, 0o640)
        os.symlink(secret.path, self.root.child("abs").path)
        os.symlink("../secret.txt", self.root.child("rel").path)
        before = {p: os.lstat(p) for p in (self.root.child("f").path, secret.path)}
        for name in ("link", "abs", "rel"):
            self.assertRaises(
                NotFound, self.volume.setstat, name, mode=0o777, size=0, atime_mtime=(1.0, 1.0)
            )
            self.assertRaises(NotFound, self.volume.setstat, name, mode=0o777)
        for path, recorded in before.items():
            after = os.lstat(path)
            self.assertEqual((after.st_mode, after.st_size, after.st_mtime_ns),
                             (recorded.st_mode, recorded.st_size, recorded.st_mtime_ns))

    def test_escaping_and_root(self) -> None:
        """
        A path through a symlink out of the volume, a missing entry and the root are
        L{NotFound}.
        """
        os.symlink("../sdir", self.root.child("out").path)
        inner = self.outside.child("sdir").child("inner.txt")
        before = os.lstat(inner.path)
        self.assertRaises(NotFound, self.volume.setstat, "out/inner.txt", mode=0o777, size=0)
        self.assertRaises(NotFound, self.volume.setstat, "missing", mode=0o600)
        self.assertRaises(NotFound, self.volume.setstat, "/", mode=0o777)
        self.assertEqual(os.lstat(inner.path).st_mode, before.st_mode)
        self.assertEqual(inner.getContent(), b"inner")
        self.assertEqual(stat.S_IMODE(os.lstat(self.root.path).st_mode), 0o700)


class ReadlinkTests(SynchronousTestCase):
    """
    L{Volume.readlink} returns the text of a final-component symlink as stored.
    """

    def setUp(self) -> None:
        self.volume, self.root, _ = _make_volume(self)

    def test_text(self) -> None:
        """
        Relative, absolute, escaping and dangling link texts come back verbatim, also through a
        relative intermediate link.
        """
        self.root.child("d").makedirs()
        texts = {"rel": "d/x", "abs": "/etc/passwd", "up": "../../outside", "dangling": "nope"}
        for name, text in texts.items():
            os.symlink(text, self.root.child("d").child(name).path)
        os.symlink("d", self.root.child("alias").path)
        for name, text in texts.items():
            self.assertEqual(self.volume.readlink("d/" + name), text)
            self.assertEqual(self.volume.readlink("/alias/" + name), text)

    def test_not_a_link(self) -> None:
        """
        A file, a directory, a missing entry, the root and a path through an escaping link are
        L{NotFound}.
        """
        self.root.child("f").setContent(b"x")
        self.root.child("d").makedirs()
        os.symlink("..", self.root.child("up").path)
        for path in ("f", "d", "missing", "", "/", "up/root"):
            self.assertRaises(NotFound, self.volume.readlink, path)


class SwapTests(SynchronousTestCase):
    """
    A directory swapped for a symlink between or during opens cannot lead out of the volume.
    """

    def test_between_two_opens(self) -> None:
        """
        After a directory that was opened through is replaced by a symlink to the outside, the
        next open, create and setstat through it fail and change nothing outside.
        """
        volume, root, outside = _make_volume(self)
        root.child("d").makedirs()
        root.child("d").child("inner.txt").setContent(b"inside")
        with volume.open_file("d/inner.txt") as handle:
            self.assertEqual(handle.pread(0, 10), b"inside")
        os.rename(root.child("d").path, root.child("moved").path)
        for target in (outside.child("sdir").path, "../sdir"):
            os.symlink(target, root.child("d").path)
            self.assertRaises(NotFound, volume.open_file, "d/inner.txt", write=True)
            self.assertRaises(NotFound, volume.open_file, "d/new", write=True, create=True)
            self.assertRaises(NotFound, volume.setstat, "d/inner.txt", mode=0o777, size=0)
            self.assertRaises(NotFound, volume.readlink, "d/inner.txt")
            os.unlink(root.child("d").path)
        self.assertEqual(outside.child("sdir").listdir(), ["inner.txt"])
        self.assertEqual(outside.child("sdir").child("inner.txt").getContent(), b"inner")

    def test_concurrent(self) -> None:
        """
        While another thread keeps swapping a directory with a symlink to the outside, opens,
        creates, writes and setstats through it never touch the outside directory.
        """
        volume, root, outside = _make_volume(self)
        target = outside.child("sdir")
        before = os.lstat(target.child("inner.txt").path)
        real = root.child("d")
        real.makedirs()
        real.child("inner.txt").setContent(b"inside")
        swap = root.child("swap")
        os.symlink("../sdir", swap.path)
        exchange = _renameat2_exchange()
        stop = threading.Event()

        def swapper() -> None:
            while not stop.is_set():
                try:
                    if exchange is not None:
                        exchange(real.path, swap.path)
                    else:
                        os.rename(real.path, root.child("tmp").path)
                        os.rename(swap.path, real.path)
                        os.rename(root.child("tmp").path, swap.path)
                except OSError:
                    pass

        thread = threading.Thread(target=swapper)
        thread.start()
        opened = 0
        try:
            for i in range(300):
                try:
                    with volume.open_file("d/inner.txt", read=True, write=True) as handle:
                        self.assertNotEqual(handle.fstat().st_ino, before.st_ino)
                        handle.pwrite(0, b"INSIDE")
                    opened += 1
                except FsError:
                    pass
                try:
                    with volume.open_file("d/n%d" % (i,), write=True, create=True) as handle:
                        handle.pwrite(0, b"x")
                except FsError:
                    pass
                try:
                    volume.setstat("d/inner.txt", mode=0o600, atime_mtime=(1.0, 1.0))
                except FsError:
                    pass
        finally:
            stop.set()
            thread.join()
        self.assertEqual(target.listdir(), ["inner.txt"])
        after = os.lstat(target.child("inner.txt").path)
        self.assertEqual((after.st_mode, after.st_mtime_ns, after.st_size),
                         (before.st_mode, before.st_mtime_ns, before.st_size))
        self.assertEqual(target.child("inner.txt").getContent(), b"inner")
        self.assertGreater(opened, 0)


class DescriptorLeakTests(SynchronousTestCase):
    """
    No operation of the handle API leaves a descriptor open behind it.
    """

    def test_batch(self) -> None:
        """
        A batch of failing and succeeding opens, writes, setstats and readlinks, with every handle
        closed, leaves the process with the descriptors it had.
        """
        volume, root, _ = _make_volume(self, disk_limit_bytes=50, disk_check_interval=0)
        root.child("d").makedirs()
        root.child("f").setContent(b"data")
        os.mkfifo(root.child("fifo").path)
        os.symlink("f", root.child("link").path)
        os.symlink("../sdir", root.child("out").path)
        volume.set_denylist(["*.cfg"])
        failing: list[Callable[[], object]] = [
            lambda: volume.open_file("missing"),
            lambda: volume.open_file("d"),
            lambda: volume.open_file(""),
            lambda: volume.open_file("fifo"),
            lambda: volume.open_file("fifo", write=True),
            lambda: volume.open_file("link"),
            lambda: volume.open_file("out/inner.txt"),
            lambda: volume.open_file("f", write=True, create=True, exclusive=True),
            lambda: volume.open_file("a.cfg", write=True, create=True),
            lambda: volume.open_file("nodir/x", write=True, create=True),
            lambda: volume.open_file("f", create=True),
            lambda: volume.setstat("link", mode=0o600),
            lambda: volume.setstat("d", size=0),
            lambda: volume.setstat("fifo", size=0),
            lambda: volume.setstat("f", size=1000),
            lambda: volume.setstat("missing", mode=0o600),
            lambda: volume.readlink("f"),
            lambda: volume.readlink("out/x"),
        ]

        def succeeding() -> None:
            with volume.open_file("f", read=True, write=True) as handle:
                handle.pwrite(2, b"TA")
                handle.pread(0, 4)
                self.assertRaises(QuotaExceeded, handle.pwrite, 0, b"x" * 60)
                self.assertRaises(QuotaExceeded, handle.truncate, 60)
            with volume.open_file("new", write=True, create=True, truncate=True) as handle:
                handle.pwrite(0, b"n")
            volume.open_file("new", write=True, truncate=True).close()
            fd, _ = volume.open_read("f")
            os.close(fd)
            volume.setstat("f", mode=0o600, size=3, atime_mtime=(1.0, 2.0))
            volume.setstat("d", mode=0o755)
            volume.readlink("link")

        succeeding()
        before = _open_fds()
        for _ in range(3):
            for operation in failing:
                self.assertRaises((FsError, ValueError), operation)
            succeeding()
        self.assertEqual(_open_fds(), before)


# ---------------------------------------------------------------------------------------------
# Property suite.

_FILES = ["a", "b", "sub/c"]
_steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("pwrite"), st.sampled_from(_FILES), st.integers(0, 300), st.integers(0, 200)
        ),
        st.tuples(st.just("truncate"), st.sampled_from(_FILES), st.integers(0, 400), st.just(0)),
        st.tuples(st.just("setstat"), st.sampled_from(_FILES), st.integers(0, 400), st.just(0)),
        st.tuples(st.just("reopen"), st.sampled_from(_FILES), st.just(0), st.just(0)),
        st.tuples(st.just("open_truncate"), st.sampled_from(_FILES), st.just(0), st.just(0)),
        st.tuples(st.just("append"), st.sampled_from(_FILES), st.just(0), st.integers(0, 100)),
        st.tuples(st.just("remove"), st.sampled_from(_FILES), st.just(0), st.just(0)),
    ),
    min_size=1,
    max_size=25,
)


def _real_usage(root: str) -> int:
    """
    The sizes of the regular files under ``root``, counted with plain calls.
    """
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(directory, name))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


_HANDLE_OPERATIONS = [
    "open_read", "open_write", "open_create", "open_exclusive", "open_truncate", "open_append",
    "setstat_mode", "setstat_size", "setstat_times", "readlink",
]


@st.composite
def _scenarios(
    draw: Callable[..., object]
) -> tuple[list[tuple[str, list[str], str]], list[tuple[str, str]]]:
    """
    A hostile layout and handle operations on paths that are often the layout's own names with
    hostile tails.
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
    operations: list[tuple[str, str]] = draw(  # type: ignore[assignment]
        st.lists(st.tuples(st.sampled_from(_HANDLE_OPERATIONS), paths), min_size=1, max_size=8)
    )
    return layout, operations


def _run(
    sandbox: _Sandbox, operation: str, path: str, leaked: Callable[[os.stat_result], None]
) -> None:
    """
    Run one handle operation with a hostile path; only L{FsError} may escape.
    """
    volume = sandbox.volume
    path = sandbox.expand(path)
    flags = {
        "open_read": dict(),
        "open_write": dict(read=True, write=True),
        "open_create": dict(write=True, create=True),
        "open_exclusive": dict(write=True, create=True, exclusive=True),
        "open_truncate": dict(write=True, truncate=True),
        "open_append": dict(write=True, append=True, create=True),
    }
    try:
        if operation in flags:
            with volume.open_file(path, check_denylist=False, **flags[operation]) as handle:
                leaked(handle.fstat())
                if operation != "open_read":
                    handle.pwrite(3, b"written")
                    handle.truncate(5)
                    handle.chmod(0o750)
                    handle.utime(1.0, 2.0)
                if operation in ("open_read", "open_write"):
                    handle.pread(0, 10)
        elif operation == "setstat_mode":
            volume.setstat(path, mode=0o750)
        elif operation == "setstat_size":
            volume.setstat(path, size=2)
        elif operation == "setstat_times":
            volume.setstat(path, atime_mtime=(3.0, 4.0))
        else:
            volume.readlink(path)
    except FsError:
        pass


class HandlePropertyTests(SynchronousTestCase):
    """
    Random operations keep the usage counter exact and never reach outside the volume.
    """

    @settings(_PROFILE, max_examples=100)
    @given(_steps)
    def test_usage_matches_sizes(self, steps: list[tuple[str, str, int, int]]) -> None:
        """
        Whatever sequence of writes, truncations, appends, size changes, truncating opens and
        removals, the usage counter equals the real total size, and never exceeds the limit.
        """
        root = FilePath(self.mktemp())
        volume = Volume(
            root.path, uid=_OWNER[0], gid=_OWNER[1], disk_limit_bytes=600, disk_check_interval=0, accounting=BYTES
        )
        volume.ensure_root()
        volume.mkdir("sub")
        handles: dict[str, FileHandle] = {}
        try:
            for kind, name, number, length in steps:
                try:
                    if kind == "reopen" or (kind in ("pwrite", "truncate") and name not in handles):
                        if name in handles:
                            handles.pop(name).close()
                        handles[name] = volume.open_file(name, read=True, write=True, create=True)
                    if kind == "pwrite":
                        handles[name].pwrite(number, b"w" * length)
                    elif kind == "truncate":
                        handles[name].truncate(number)
                    elif kind == "setstat":
                        volume.setstat(name, size=number)
                    elif kind == "open_truncate":
                        volume.open_file(name, write=True, create=True, truncate=True).close()
                    elif kind == "append":
                        with volume.open_file(name, write=True, create=True, append=True) as h:
                            h.pwrite(0, b"p" * length)
                    elif kind == "remove":
                        if name in handles:
                            handles.pop(name).close()
                        volume.remove(name)
                except (QuotaExceeded, NotFound):
                    pass
                self.assertEqual(volume.cached_usage(), _real_usage(root.path), (kind, name))
                self.assertLessEqual(volume.cached_usage(), 600)
        finally:
            for handle in handles.values():
                handle.close()
            shutil.rmtree(root.path)

    def check(
        self, layout: list[tuple[str, list[str], str]], operations: list[tuple[str, str]]
    ) -> None:
        """
        Build the layout, run the operations, and compare everything outside with before.
        """
        check_outside_untouched(self, layout, operations, _run)

    @_PROFILE
    @given(_scenarios())
    def test_nothing_outside_changes(
        self, scenario: tuple[list[tuple[str, list[str], str]], list[tuple[str, str]]]
    ) -> None:
        """
        Random layouts and random hostile paths through open_file, the handle's operations,
        setstat and readlink: nothing outside the volume is created, modified or handed out, and
        only L{FsError} subclasses escape.
        """
        self.check(*scenario)

    @settings(_PROFILE, max_examples=40)
    @given(_layout)
    def test_every_operation_on_every_entry(self, layout: list[tuple[str, list[str], str]]) -> None:
        """
        Every handle operation applied to every name of the layout (and beneath it) stays inside.
        """
        operations = [
            (operation, path + tail)
            for path in _layout_paths(layout)
            for tail in ("", "/x", "/..")
            for operation in _HANDLE_OPERATIONS
        ]
        self.check(layout, operations)
