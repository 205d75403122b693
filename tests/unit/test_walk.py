"""
Tests for the path-walking core of the sandbox (``wings_twisted.fs.walk``) and the error mapping
it relies on (``paths.translate_error``): the root's open failing, where symlink text with ``.``,
``//`` and ``..`` lands, the depth, name and path limits at their boundaries, directory creation
failing mid-way, the mode and owner of created directories, and descriptor leaks.
"""

from __future__ import annotations

import errno
import os
import resource
import stat
from typing import Sequence

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.fs import walk
from wings_twisted.fs.paths import (
    DIR_MODE,
    Escapes,
    MAX_DEPTH,
    MAX_LINK_HOPS,
    NAME_MAX,
    PATH_MAX,
    IsDirectory,
    NameTooLong,
    NotDirectory,
    NotFound,
    SpecialFile,
    release_created,
    split_path,
    translate_error,
)

from ..support import unix_socket_at


def open_fds() -> int:
    """
    How many descriptors this process has open.
    """
    return len(os.listdir("/proc/self/fd"))


class _FdLimit:
    """
    Lower the soft open-file limit so that only ``spare`` more descriptors can be opened.
    """

    def __init__(self, spare: int) -> None:
        self.spare = spare

    def __enter__(self) -> None:
        self.saved = resource.getrlimit(resource.RLIMIT_NOFILE)
        # The kernel hands out the lowest free numbers: the limit sits just above the
        # `spare` lowest free ones.
        used = {int(fd) for fd in os.listdir("/proc/self/fd")}
        free = [n for n in range(len(used) + self.spare + 1) if n not in used]
        resource.setrlimit(resource.RLIMIT_NOFILE, (free[self.spare], self.saved[1]))

    def __exit__(self, *exc: object) -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, self.saved)


class WalkTests(SynchronousTestCase):
    """
    ``walk.directory`` on a real tree.
    """

    def setUp(self) -> None:
        self.base = FilePath(self.mktemp())
        self.root = self.base.child("root")
        self.root.makedirs()
        self.fds = open_fds()

    def tearDown(self) -> None:
        self.assertEqual(open_fds(), self.fds, "descriptor leak")

    def listing(self, parts: Sequence[str], **kwargs: object) -> list[str]:
        """
        The names in the directory ``parts`` leads to.
        """
        with walk.directory(self.root.path, "/" + "/".join(parts), parts,
                            **kwargs) as fd:  # type: ignore[arg-type]
            return sorted(os.listdir(fd))

    def mark(self, *segments: str) -> FilePath:
        """
        Make the directory ``segments`` under the root with a file naming it.
        """
        directory = self.root.descendant(list(segments))
        directory.makedirs(ignoreExistingDirectory=True)
        directory.child("marker-" + "-".join(segments)).setContent(b"")
        return directory

    def test_root_itself(self) -> None:
        """
        No parts: the descriptor of the root itself.
        """
        self.mark("a")
        self.assertEqual(self.listing([]), ["a"])

    def test_root_open_error_propagates(self) -> None:
        """
        The root's open failing with an unexpected error (``EMFILE``) raises that error: the
        walk never goes on relative to the working directory.
        """
        with _FdLimit(0):
            with self.assertRaises(OSError) as caught:
                with walk.directory(self.root.path, "/a", ["a"]):
                    self.fail("walked without a root")
        self.assertEqual(caught.exception.errno, errno.EMFILE)
        self.assertNotIsInstance(caught.exception, NotFound)

    def test_root_open_other_error_never_walks_the_working_directory(self) -> None:
        """
        A root whose open fails with an error other than missing/not-a-directory
        (``ENAMETOOLONG``) raises it; the walk never resolves the parts against the working
        directory, even where they exist there.
        """
        probe = "walk-probe-" + os.path.basename(self.base.path)
        os.mkdir(probe)
        self.addCleanup(os.rmdir, probe)
        root = os.path.join(self.base.path, "r" * (NAME_MAX + 1))
        with self.assertRaises(OSError) as caught:
            with walk.directory(root, "/" + probe, [probe]):
                self.fail("walked from the working directory")
        self.assertEqual(caught.exception.errno, errno.ENAMETOOLONG)

    def test_root_missing_or_not_a_directory(self) -> None:
        """
        A missing root, a root that is a file and a root that is a symlink are `NotFound`.
        """
        file_root = self.base.child("file")
        file_root.setContent(b"")
        os.symlink(self.root.path, self.base.child("link").path)
        for root in (self.base.child("nope").path, file_root.path, self.base.child("link").path):
            with self.assertRaises(NotFound):
                with walk.directory(root, "/", []):
                    pass

    def test_link_with_dots_and_slashes_lands_inside(self) -> None:
        """
        Link text ``./b//c/.`` and ``b/./c//`` leads to ``b/c``, not elsewhere.
        """
        self.mark("b", "c")
        self.mark("b")
        os.symlink("./b//c/.", self.root.child("l1").path)
        os.symlink("b/./c//", self.root.child("l2").path)
        self.assertEqual(self.listing(["l1"]), ["marker-b-c"])
        self.assertEqual(self.listing(["l2"]), ["marker-b-c"])

    def test_link_with_dotdot_pops(self) -> None:
        """
        ``sub/up -> ../b`` leads to ``b``; ``sub/deep -> ../../`` from depth one would climb
        above the root and is `NotFound`; ``sub/here -> ..`` is the root.
        """
        self.mark("b")
        self.mark("sub")
        os.symlink("../b", self.root.child("sub").child("up").path)
        os.symlink("../..", self.root.child("sub").child("deep").path)
        os.symlink("..", self.root.child("sub").child("here").path)
        self.assertEqual(self.listing(["sub", "up"]), ["marker-b"])
        self.assertEqual(self.listing(["sub", "here"]), ["b", "sub"])
        self.assertRaises(NotFound, self.listing, ["sub", "deep"])

    def test_dot_then_dotdot_in_link_text(self) -> None:
        """
        ``sub/l -> ./../b``: the ``.`` stays put, so the ``..`` climbs to the root and the walk
        lands in ``b`` (not in ``sub/b``).
        """
        self.mark("b")
        self.mark("sub", "b")
        os.symlink("./../b", self.root.child("sub").child("l").path)
        self.assertEqual(self.listing(["sub", "l"]), ["marker-b"])

    def test_created_flag_not_carried_to_an_existing_directory(self) -> None:
        """
        Link text that creates ``d`` at the root, climbs back and enters an existing ``a/d``
        records only the new ``d``: the existing one keeps its mode and is never undone.
        """
        self.mark("a", "d")
        os.chmod(self.root.descendant(["a", "d"]).path, 0o700)
        os.symlink("d/../a/d", self.root.child("l").path)
        created: list[tuple[int, str]] = []
        self.assertEqual(self.listing(["l"], created=created), ["marker-a-d"])
        try:
            self.assertEqual([name for _, name in created], ["d"])
            self.assertEqual(stat.S_IMODE(os.stat(self.root.descendant(["a", "d"]).path).st_mode),
                             0o700)
        finally:
            release_created(created, undo=True)
        self.assertTrue(self.root.descendant(["a", "d"]).exists())
        self.assertFalse(self.root.child("d").exists())

    def test_link_then_more_parts(self) -> None:
        """
        The parts after a link continue from where the link landed.
        """
        self.mark("b", "c")
        os.symlink("b", self.root.child("l").path)
        self.assertEqual(self.listing(["l", "c"]), ["marker-b-c"])

    def test_absolute_and_empty_links(self) -> None:
        """
        Absolute link text (even naming the root itself) is `NotFound`.
        """
        os.symlink(self.root.path, self.root.child("abs").path)
        self.assertRaises(NotFound, self.listing, ["abs"])

    def test_link_hop_boundary(self) -> None:
        """
        A chain of exactly ``MAX_LINK_HOPS`` links resolves; one more is `NotFound`.
        """
        self.mark("target")
        os.symlink("target", self.root.child("l0").path)
        for i in range(1, MAX_LINK_HOPS + 1):
            os.symlink("l%d" % (i - 1), self.root.child("l%d" % i).path)
        self.assertEqual(self.listing(["l%d" % (MAX_LINK_HOPS - 1)]), ["marker-target"])
        self.assertRaises(NotFound, self.listing, ["l%d" % MAX_LINK_HOPS])

    def test_non_directory_component(self) -> None:
        """
        A regular file as a component is `NotDirectory`; a socket too; a missing one
        `NotFound`.
        """
        self.root.child("f").setContent(b"")
        unix_socket_at(self.root.child("sock").path).close()
        self.assertRaises(NotDirectory, self.listing, ["f"])
        self.assertRaises(NotDirectory, self.listing, ["sock"])
        self.assertRaises(NotFound, self.listing, ["missing"])

    def test_depth_boundary(self) -> None:
        """
        ``MAX_DEPTH`` directories deep is walked (and created); one more is `NameTooLong`.
        """
        created: list[tuple[int, str]] = []
        try:
            self.assertEqual(self.listing(["d"] * MAX_DEPTH, created=created), [])
        finally:
            release_created(created, undo=False)
        self.assertEqual(len(created), 0)
        self.assertRaises(NameTooLong, self.listing, ["d"] * (MAX_DEPTH + 1))
        self.assertEqual(self.listing(["d"] * (MAX_DEPTH - 1)), ["d"])

    def test_depth_through_links_and_dotdot(self) -> None:
        """
        ``..`` in link text pops the depth again: a link back up does not count twice.
        """
        self.mark("a")
        os.symlink("..", self.root.child("a").child("up").path)
        parts = ["a", "up"] * (MAX_LINK_HOPS - 1) + ["a"]
        self.assertEqual(self.listing(parts), ["marker-a", "up"])

    def test_name_length_boundary(self) -> None:
        """
        A 255-byte name is walked; 256 bytes (also as 128 two-byte characters) is
        `NameTooLong`, checked before any system call.
        """
        long_name = "n" * NAME_MAX
        self.root.child(long_name).makedirs()
        self.assertEqual(self.listing([long_name]), [])
        self.assertRaises(NameTooLong, self.listing, ["n" * (NAME_MAX + 1)])
        self.assertRaises(NameTooLong, self.listing, ["\u00e9" * 128])

    def test_path_length_boundary(self) -> None:
        """
        A cleaned path (no leading slash) of ``PATH_MAX - 1`` bytes splits; ``PATH_MAX`` bytes
        is `NameTooLong`.
        """
        def path_of(size: int) -> str:
            parts, remaining = [], size
            while remaining > 1:
                take = min(200, remaining - 1)
                parts.append("p" * take)
                remaining -= take + 1
            return "/" + "/".join(parts)

        self.assertEqual(len(split_path(path_of(PATH_MAX))[0]), PATH_MAX - 1)
        self.assertRaises(NameTooLong, split_path, path_of(PATH_MAX + 1))

    def test_created_mode_and_owner(self) -> None:
        """
        Created directories get mode 0755 whatever the umask, the owner given, and are
        recorded shallowest first with a descriptor of their parent.
        """
        owner = (os.getuid() + 4242, os.getgid() + 4242) if os.geteuid() == 0 else None
        created: list[tuple[int, str]] = []
        old = os.umask(0o077)
        try:
            self.listing(["x", "y"], created=created, owner=owner)
        finally:
            os.umask(old)
        try:
            self.assertEqual([name for _, name in created], ["x", "y"])
            for path in (self.root.child("x"), self.root.child("x").child("y")):
                st = os.stat(path.path)
                self.assertEqual(stat.S_IMODE(st.st_mode), DIR_MODE)
                if owner is not None:
                    self.assertEqual((st.st_uid, st.st_gid), owner)
        finally:
            release_created(created, undo=True)
        self.assertFalse(self.root.child("x").exists())

    def test_existing_directories_not_recorded(self) -> None:
        """
        Directories that already existed are neither recorded nor changed.
        """
        self.mark("keep")
        os.chmod(self.root.child("keep").path, 0o700)
        created: list[tuple[int, str]] = []
        self.listing(["keep", "new"], created=created)
        try:
            self.assertEqual([name for _, name in created], ["new"])
            self.assertEqual(stat.S_IMODE(os.stat(self.root.child("keep").path).st_mode), 0o700)
        finally:
            release_created(created, undo=True)
        self.assertTrue(self.root.child("keep").exists())

    def test_mkdir_failing_midway(self) -> None:
        """
        When the walk fails after creating some directories (descriptors run out), the error
        is raised, what was created is recorded for the caller to undo, and nothing leaks.
        """
        created: list[tuple[int, str]] = []
        with _FdLimit(4):
            with self.assertRaises(OSError) as caught:
                self.listing(["m1", "m2", "m3", "m4"], created=created)
        self.assertEqual(caught.exception.errno, errno.EMFILE)
        self.assertTrue(created)
        self.assertEqual([name for _, name in created], ["m1", "m2"][:len(created)])
        release_created(created, undo=True)
        self.assertFalse(self.root.child("m1").exists())

    def test_creation_raced_by_a_remover_is_bounded(self) -> None:
        """
        Something that removes each directory as soon as it is made cannot keep the walk busy
        forever: after ``2 * MAX_DEPTH`` attempts it gives up with `NotFound`.
        """
        calls = []

        def racing_mkdir(name: str, mode: int, *, dir_fd: int) -> None:
            calls.append(name)
            os.mkdir(name, mode, dir_fd=dir_fd)
            os.rmdir(name, dir_fd=dir_fd)

        created: list[tuple[int, str]] = []
        with self.assertRaises(NotFound):
            with walk.directory(self.root.path, "/x/y", ["x", "y"], created=created,
                                mkdir=racing_mkdir):
                self.fail("walked into a removed directory")
        self.assertEqual(calls, ["x"] * (2 * MAX_DEPTH))
        self.assertEqual(created, [])

    def test_mkdir_error_is_raised_at_once(self) -> None:
        """
        A ``mkdir`` that fails (a full or read-only disk) raises its error translated at once,
        without retrying.
        """
        calls = []

        def failing_mkdir(name: str, mode: int, *, dir_fd: int) -> None:
            calls.append(name)
            raise OSError(errno.ENAMETOOLONG, "refused")

        with self.assertRaises(NameTooLong):
            with walk.directory(self.root.path, "/x", ["x"], created=[], mkdir=failing_mkdir):
                pass
        self.assertEqual(calls, ["x"])

    def test_mkdir_existing_is_fine(self) -> None:
        """
        A directory made by someone else between the open and the mkdir is walked into (and
        not recorded as created).
        """
        def other_made_it(name: str, mode: int, *, dir_fd: int) -> None:
            os.mkdir(name, mode, dir_fd=dir_fd)
            raise FileExistsError(errno.EEXIST, "exists")

        created: list[tuple[int, str]] = []
        with walk.directory(self.root.path, "/x", ["x"], created=created,
                            mkdir=other_made_it) as fd:
            self.assertEqual(os.listdir(fd), [])
        self.assertEqual(created, [])

    def test_mkdir_into_a_file(self) -> None:
        """
        Creating below an existing file is `NotDirectory` and records nothing.
        """
        self.root.child("new").makedirs()
        self.root.child("new").child("file").setContent(b"")
        created: list[tuple[int, str]] = []
        self.assertRaises(NotDirectory, self.listing, ["new", "file", "x"], created=created)
        self.assertEqual(created, [])

    def test_no_leak_on_failures(self) -> None:
        """
        Failing walks of every kind leave no descriptor open (checked in ``tearDown``).
        """
        self.mark("a", "b")
        os.symlink("/", self.root.child("a").child("abs").path)
        self.root.child("a").child("f").setContent(b"")
        for parts in (["a", "abs"], ["a", "f", "x"], ["a", "b", "missing"],
                      ["a"] * (MAX_DEPTH + 1), ["a", "n" * 300]):
            self.assertRaises((NotFound, NotDirectory, NameTooLong), self.listing, parts)


class TranslateErrorTests(SynchronousTestCase):
    """
    ``translate_error``: the kernel's errors as the sandbox's.
    """

    def test_each_errno(self) -> None:
        """
        ENOENT and ELOOP are `NotFound`, ENOTDIR `NotDirectory`, EISDIR `IsDirectory`,
        ENAMETOOLONG `NameTooLong`, ENXIO (a socket opened as a file) `SpecialFile`; the path is
        kept; anything else is returned unchanged.
        """
        table = {errno.ENOENT: NotFound, errno.ELOOP: NotFound, errno.ENOTDIR: NotDirectory,
                 errno.EISDIR: IsDirectory, errno.ENAMETOOLONG: NameTooLong,
                 errno.ENXIO: SpecialFile}
        for code, kind in table.items():
            error = translate_error(OSError(code, os.strerror(code)), "/p")
            self.assertIsInstance(error, kind)
            self.assertEqual(getattr(error, "path"), "/p")
        other = OSError(errno.EACCES, "denied")
        self.assertIs(translate_error(other, "/p"), other)

    def test_real_errors(self) -> None:
        """
        The mapping on errors the kernel really gives: opening a socket (ENXIO), writing a
        directory (EISDIR), an over-long name (ENAMETOOLONG).
        """
        base = FilePath(self.mktemp())
        base.makedirs()
        unix_socket_at(base.child("s").path).close()
        cases: list[tuple[str, int, type]] = [
            (base.child("s").path, os.O_RDONLY, SpecialFile),
            (base.path, os.O_WRONLY, IsDirectory),
            (base.child("x" * 300).path, os.O_RDONLY, NameTooLong),
        ]
        for path, flags, kind in cases:
            try:
                os.close(os.open(path, flags))
            except OSError as e:
                self.assertIsInstance(translate_error(e, "/x"), kind)
            else:
                self.fail("opened " + path)


class EntryTests(SynchronousTestCase):
    """
    ``walk.entry``, the walk of ``STAT`` that follows a final symlink while its text is relative
    and stays beneath the root: where each kind of link text lands, the hop limit at its
    boundary, and what escapes.
    """

    def setUp(self) -> None:
        self.root = FilePath(self.mktemp())
        self.root.child("d").makedirs()
        self.root.descendant(["d", "f"]).setContent(b"abc")
        self.root.child("top").setContent(b"x")
        self.fds = open_fds()

    def tearDown(self) -> None:
        self.assertEqual(open_fds(), self.fds)

    def lands(self, path: str) -> tuple[tuple[int, int], str | None]:
        """
        ``((device, inode) of the directory, name)`` that ``path`` leads to.
        """
        clean, parts = split_path(path)
        with walk.entry(self.root.path, clean, parts) as (directory, name):
            st = os.fstat(directory)
            return (st.st_dev, st.st_ino), name

    def ident(self, *segments: str) -> tuple[int, int]:
        st = os.stat(self.root.descendant(list(segments)).path if segments else self.root.path)
        return st.st_dev, st.st_ino

    def link(self, name: str, text: str) -> None:
        os.symlink(text, self.root.child(name).path)

    def test_plain_entries(self) -> None:
        """
        No link: the parent and the name, missing or not; the root is the root and no name.
        """
        self.assertEqual(self.lands("/d/f"), (self.ident("d"), "f"))
        self.assertEqual(self.lands("/top"), (self.ident(), "top"))
        self.assertEqual(self.lands("/d/missing"), (self.ident("d"), "missing"))
        self.assertEqual(self.lands("/"), (self.ident(), None))

    def test_final_links_followed(self) -> None:
        """
        A relative final link lands where its text leads: a file in a subdirectory, a path with
        ``..`` inside it, a directory (text ending in ``/``, ``.`` or ``..`` gives no name), and
        a link reached through an intermediate link.
        """
        self.link("lf", "d/f")
        self.link("lup", "d/../top")
        self.link("ldir", "d/")
        self.link("ldot", ".")
        os.symlink("..", self.root.descendant(["d", "parent"]).path)
        self.link("via", "d")
        self.assertEqual(self.lands("/lf"), (self.ident("d"), "f"))
        self.assertEqual(self.lands("/lup"), (self.ident(), "top"))
        self.assertEqual(self.lands("/ldir"), (self.ident("d"), None))
        self.assertEqual(self.lands("/ldot"), (self.ident(), None))
        self.assertEqual(self.lands("/d/parent"), (self.ident(), None))
        self.assertEqual(self.lands("/via/f"), (self.ident("d"), "f"))
        # A link's text is itself walked again when it names another link.
        self.link("again", "lf")
        self.assertEqual(self.lands("/again"), (self.ident("d"), "f"))

    def test_escapes(self) -> None:
        """
        Absolute text, text that climbs above the root, and a loop are `Escapes`.
        """
        self.link("abs", self.root.child("top").path)
        self.link("up", "../outside")
        self.link("dotdot", "..")
        self.link("loop", "loop")
        for name in ("abs", "up", "dotdot", "loop"):
            self.assertRaises(Escapes, self.lands, "/" + name)

    def test_hop_limit(self) -> None:
        """
        A chain of exactly `MAX_LINK_HOPS` links is followed; one more link escapes.
        """
        self.link("l0", "top")
        for i in range(1, MAX_LINK_HOPS + 1):
            self.link("l{}".format(i), "l{}".format(i - 1))
        self.assertEqual(self.lands("/l{}".format(MAX_LINK_HOPS - 1)), (self.ident(), "top"))
        self.assertRaises(Escapes, self.lands, "/l{}".format(MAX_LINK_HOPS))
