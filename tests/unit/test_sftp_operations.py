"""
The SFTP operations (``sftp.md`` §5–§7) through Conch's SFTP client joined in memory to our
server: permissions, read-only mode, the write guard, quota, activity records, resumed uploads,
attributes, symlinks, and a regression test per symlink advisory.
"""

from __future__ import annotations

import json
import os
import stat

from twisted.conch.ssh import filetransfer as fx
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from ..sftp_support import CLIENT_IP, SftpPair, filesystem
from ..support import SERVER, USER, Harness

W = fx.FXF_WRITE | fx.FXF_CREAT | fx.FXF_TRUNC


class SftpCase(SynchronousTestCase):
    """
    A harness with one server; ``self.sftp`` is a session with every permission.
    """

    def setUp(self) -> None:
        self.h = Harness(FilePath(self.mktemp()), SERVER)
        self.server = self.h.add_server()
        self.root = self.server.volume.root
        self.outside = os.path.dirname(self.root) + "/outside"
        os.mkdir(self.outside)
        with open(self.outside + "/secret", "wb") as f:
            f.write(b"secret")
        self.sftp = self.session()

    def session(self, *permissions: str, read_only: bool = False) -> SftpPair:
        return SftpPair(filesystem(self.h, self.server, permissions or ("*",),
                                   read_only=read_only))

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def write(self, name: str, data: bytes = b"data") -> None:
        os.makedirs(os.path.dirname(self.path(name)), exist_ok=True)
        with open(self.path(name), "wb") as f:
            f.write(data)

    def activity(self) -> list[tuple[str, object]]:
        rows = self.h.node.activity._db.execute(
            "SELECT event, metadata, ip, user FROM activity ORDER BY id").fetchall()
        for _, _, ip, user in rows:
            self.assertEqual((ip, user), (CLIENT_IP, USER))
        return [(event, json.loads(metadata)["files"]) for event, metadata, _, _ in rows]


class ReadWriteTests(SftpCase):
    """
    Opening, reading and writing files.
    """

    def test_put_and_get(self) -> None:
        """
        A new file is created 0644 with its parents, read back whole, and recorded as
        ``server:sftp.create``; overwriting it records ``server:sftp.write``.
        """
        self.sftp.put("/a/b/new.txt", b"hello")
        self.assertEqual(self.sftp.get("/a/b/new.txt"), b"hello")
        self.assertEqual(stat.S_IMODE(os.stat(self.path("a/b/new.txt")).st_mode), 0o644)
        self.sftp.put("/a/b/new.txt", b"bye")
        self.assertEqual(self.sftp.get("a/b/new.txt"), b"bye")
        self.assertEqual(self.activity(), [("server:sftp.create", ["/a/b/new.txt"]),
                                           ("server:sftp.write", ["/a/b/new.txt"])])

    def test_resume_keeps_prefix(self) -> None:
        """
        WinSCP-style resume: open without ``TRUNC`` and write at an offset keeps the prefix.
        """
        self.write("big.bin", b"0123456789")
        self.sftp.put("/big.bin", b"ABCDEF", flags=fx.FXF_WRITE, offset=6)
        with open(self.path("big.bin"), "rb") as f:
            self.assertEqual(f.read(), b"012345ABCDEF")

    def test_append_and_exclusive(self) -> None:
        """
        ``APPEND`` appends; ``EXCL`` with an existing file fails; without ``CREAT`` a missing
        file is ``NO_SUCH_FILE``.
        """
        self.write("log.txt", b"one\n")
        self.sftp.put("/log.txt", b"two\n", flags=fx.FXF_WRITE | fx.FXF_APPEND)
        self.assertEqual(self.sftp.get("/log.txt"), b"one\ntwo\n")
        self.assertEqual(self.sftp.code(self.sftp.client.openFile(
            b"/log.txt", fx.FXF_WRITE | fx.FXF_CREAT | fx.FXF_EXCL, {})), fx.FX_FAILURE)
        self.assertEqual(self.sftp.code(self.sftp.client.openFile(
            b"/missing.txt", fx.FXF_WRITE, {})), fx.FX_NO_SUCH_FILE)

    def test_read_errors(self) -> None:
        """
        A missing file is ``NO_SUCH_FILE``, a directory or a FIFO ``FAILURE`` (never opened),
        a denylisted file ``PERMISSION_DENIED``.
        """
        os.mkfifo(self.path("pipe"))
        os.mkdir(self.path("dir"))
        self.server.volume.set_denylist(["*.secret"])
        self.write("x.secret")
        client = self.sftp.client
        self.assertEqual(self.sftp.code(client.openFile(b"/nope", fx.FXF_READ, {})),
                         fx.FX_NO_SUCH_FILE)
        self.assertEqual(self.sftp.code(client.openFile(b"/dir", fx.FXF_READ, {})),
                         fx.FX_FAILURE)
        self.assertEqual(self.sftp.code(client.openFile(b"/pipe", fx.FXF_READ, {})),
                         fx.FX_FAILURE)
        self.assertEqual(self.sftp.code(client.openFile(b"/x.secret", fx.FXF_READ, {})),
                         fx.FX_PERMISSION_DENIED)

    def test_quota(self) -> None:
        """
        A write that does not fit is ``QUOTA_EXCEEDED`` (15); a volume already over its limit
        refuses the open itself.
        """
        # Usage is charged in 4 KiB blocks: room for one more block.
        self.server.volume.set_disk_limit(self.server.volume.refresh_usage() + 4096)
        handle = self.sftp.ok(self.sftp.client.openFile(b"/q.bin", W, {}))
        self.sftp.ok(handle.writeChunk(0, b"12345"))
        self.assertEqual(self.sftp.code(handle.writeChunk(5, b"x" * 5000)), 15)
        self.sftp.ok(handle.close())
        self.server.volume.add_usage(100)
        self.assertEqual(self.sftp.code(self.sftp.client.openFile(b"/r.bin", W, {})), 15)


class PermissionTests(SftpCase):
    """
    The permission rule of §6.1, read-only mode and the write guard.
    """

    def test_subuser_without_delete(self) -> None:
        """
        Without ``file.delete``, ``REMOVE`` is ``PERMISSION_DENIED`` and the file stays.
        """
        self.write("keep.txt")
        sftp = self.session("file.read", "file.read-content", "file.create", "file.update")
        self.assertEqual(sftp.code(sftp.client.removeFile(b"/keep.txt")),
                         fx.FX_PERMISSION_DENIED)
        self.assertTrue(os.path.exists(self.path("keep.txt")))

    def test_create_needs_create(self) -> None:
        """
        Without ``file.create`` a new file is refused and nothing is left behind, while an
        existing file may be written with ``file.update``.
        """
        self.write("old.txt")
        sftp = self.session("file.read", "file.update")
        self.assertEqual(sftp.code(sftp.client.openFile(b"/dir/new.txt", W, {})),
                         fx.FX_PERMISSION_DENIED)
        self.assertFalse(os.path.exists(self.path("dir")))
        sftp.put("/old.txt", b"new")
        self.assertEqual(sftp.code(sftp.client.openFile(b"/old.txt", fx.FXF_READ, {})),
                         fx.FX_PERMISSION_DENIED)

    def test_read_only(self) -> None:
        """
        In read-only mode writes answer ``OP_UNSUPPORTED``, before the permission check; reads
        work.
        """
        self.write("r.txt", b"content")
        sftp = self.session("file.read-content", read_only=True)
        for d in (sftp.client.openFile(b"/w.txt", W, {}), sftp.client.removeFile(b"/r.txt"),
                  sftp.client.makeDirectory(b"/d", {}), sftp.client.renameFile(b"/r.txt", b"/s"),
                  sftp.client.setAttrs(b"/r.txt", {"permissions": 0o600}),
                  sftp.client.makeLink(b"t", b"/l")):
            self.assertEqual(sftp.code(d), fx.FX_OP_UNSUPPORTED)
        self.assertEqual(sftp.get("/r.txt"), b"content")

    def test_suspended(self) -> None:
        """
        A suspended server refuses everything with ``PERMISSION_DENIED``, reads included;
        ``REALPATH`` still answers.
        """
        self.write("r.txt")
        self.server.settings["suspended"] = True
        client = self.sftp.client
        self.assertEqual(self.sftp.code(client.openFile(b"/r.txt", fx.FXF_READ, {})),
                         fx.FX_PERMISSION_DENIED)
        self.assertEqual(self.sftp.code(client.getAttrs(b"/r.txt")), fx.FX_PERMISSION_DENIED)
        self.assertEqual(self.sftp.ok(client.realPath(b"a/../b")), "/b")

    def test_write_guard(self) -> None:
        """
        While a restore owns the volume every modification is ``PERMISSION_DENIED`` with the
        guard's text, also a write on a handle opened before; reads work.
        """
        self.write("r.txt", b"abc")
        handle = self.sftp.ok(self.sftp.client.openFile(b"/w.txt", W, {}))
        self.server.occupancy.begin_restore()
        result = self.sftp.wait(handle.writeChunk(0, b"x"))
        self.assertEqual(result.value.code, fx.FX_PERMISSION_DENIED)
        self.assertIn("restored", result.value.message)
        self.assertEqual(self.sftp.code(self.sftp.client.makeDirectory(b"/d", {})),
                         fx.FX_PERMISSION_DENIED)
        self.assertEqual(self.sftp.get("/r.txt"), b"abc")


class TreeTests(SftpCase):
    """
    Listings, renames, removals, directories, attributes and links.
    """

    def test_listing(self) -> None:
        """
        A listing gives ``lstat`` attributes with the full mode and an ``ls -l`` long name.
        """
        self.write("a.txt", b"12345")
        os.symlink("a.txt", self.path("link"))
        directory = self.sftp.ok(self.sftp.client.openDirectory(b"/"))
        entries = {name: (name, longname, attrs)
                   for name, longname, attrs in self.sftp.ok(directory.read())}
        self.assertEqual(self.sftp.code(directory.read()), fx.FX_EOF)
        self.sftp.ok(directory.close())
        self.assertEqual(set(entries), {b"a.txt", b"link"})
        self.assertEqual(entries[b"a.txt"][2]["size"], 5)
        self.assertTrue(stat.S_ISLNK(entries[b"link"][2]["permissions"]))
        self.assertTrue(entries[b"a.txt"][1].startswith(b"-rw"))

    def test_rename_replaces_and_records(self) -> None:
        """
        ``RENAME`` replaces an existing target and records ``{"from", "to"}`` in a ``files``
        list; ``posix-rename@openssh.com`` answers a status.
        """
        self.write("a.txt", b"a")
        self.write("b.txt", b"b")
        self.sftp.ok(self.sftp.client.renameFile(b"/a.txt", b"/b.txt"))
        self.assertEqual(self.sftp.get("/b.txt"), b"a")
        self.sftp.ok(self.sftp.client.extendedRequest(
            b"posix-rename@openssh.com", fx.NS(b"/b.txt") + fx.NS(b"/c.txt")))
        self.assertEqual(self.sftp.get("/c.txt"), b"a")
        self.assertEqual(self.activity(), [
            ("server:sftp.rename", [{"from": "/a.txt", "to": "/b.txt"}]),
            ("server:sftp.rename", [{"from": "/b.txt", "to": "/c.txt"}])])
        self.assertEqual(self.sftp.code(self.sftp.client.renameFile(b"/nope", b"/x")),
                         fx.FX_NO_SUCH_FILE)

    def test_remove_mkdir_rmdir(self) -> None:
        """
        ``MKDIR`` creates parents (0755); ``RMDIR`` and ``REMOVE`` are recursive; the root
        cannot be removed (``FAILURE``).
        """
        self.sftp.ok(self.sftp.client.makeDirectory(b"/x/y", {"permissions": 0o700}))
        self.assertEqual(stat.S_IMODE(os.stat(self.path("x/y")).st_mode), 0o755)
        self.write("x/y/z.txt")
        self.sftp.ok(self.sftp.client.removeDirectory(b"/x"))
        self.assertFalse(os.path.exists(self.path("x")))
        self.assertEqual(self.sftp.code(self.sftp.client.removeFile(b"/")), fx.FX_FAILURE)
        self.assertEqual(self.sftp.code(self.sftp.client.removeFile(b"/gone")),
                         fx.FX_NO_SUCH_FILE)
        self.assertEqual([e for e, _ in self.activity()],
                         ["server:sftp.create-directory", "server:sftp.delete"])

    def test_setstat_times_keep_mode(self) -> None:
        """
        ``SETSTAT`` with only times changes them and keeps a 0600 mode; a mode maps as
        upstream (0 → 0644); a size truncates.
        """
        self.write("f.txt", b"0123456789")
        os.chmod(self.path("f.txt"), 0o600)
        self.sftp.ok(self.sftp.client.setAttrs(b"/f.txt", {"atime": 1000, "mtime": 2000}))
        st = os.stat(self.path("f.txt"))
        self.assertEqual((stat.S_IMODE(st.st_mode), st.st_mtime), (0o600, 2000))
        self.sftp.ok(self.sftp.client.setAttrs(b"/f.txt", {"permissions": 0o100000}))
        self.assertEqual(stat.S_IMODE(os.stat(self.path("f.txt")).st_mode), 0o644)
        self.sftp.ok(self.sftp.client.setAttrs(b"/f.txt", {"size": 3}))
        self.assertEqual(os.path.getsize(self.path("f.txt")), 3)

    def test_symlink_argument_order(self) -> None:
        """
        OpenSSH's order (target, link): the link is created pointing to the target text.
        """
        self.sftp.ok(self.sftp.client.makeLink(b"target", b"/link"))
        self.assertEqual(os.readlink(self.path("link")), "target")
        self.assertEqual(self.sftp.ok(self.sftp.client.readLink(b"/link")), "target")

    def test_stat_follows_inside_only(self) -> None:
        """
        ``STAT`` follows a relative link inside the volume, not an absolute or escaping one;
        ``LSTAT`` describes the link; a FIFO is answered at once.
        """
        self.write("d/f.txt", b"abc")
        os.symlink("d", self.path("rel"))
        os.symlink(self.root + "/d", self.path("abs"))
        os.symlink("../outside", self.path("up"))
        os.mkfifo(self.path("fifo"))
        client = self.sftp.client
        self.assertTrue(stat.S_ISDIR(self.sftp.ok(client.getAttrs(b"/rel", 1))["permissions"]))
        self.assertEqual(self.sftp.ok(client.getAttrs(b"/rel/f.txt", 1))["size"], 3)
        self.assertEqual(self.sftp.code(client.getAttrs(b"/abs", 1)), fx.FX_NO_SUCH_FILE)
        self.assertEqual(self.sftp.code(client.getAttrs(b"/up", 1)), fx.FX_NO_SUCH_FILE)
        self.assertTrue(stat.S_ISLNK(self.sftp.ok(client.getAttrs(b"/abs", 0))["permissions"]))
        self.assertTrue(stat.S_ISFIFO(self.sftp.ok(client.getAttrs(b"/fifo", 1))["permissions"]))

    def test_realpath(self) -> None:
        """
        ``REALPATH`` cleans lexically and clamps ``..`` at the root.
        """
        for given, expected in ((b".", "/"), (b"", "/"), (b"../../..", "/"),
                                (b"a//b/./c/..", "/a/b")):
            self.assertEqual(self.sftp.ok(self.sftp.client.realPath(given)), expected)


class AdvisoryTests(SftpCase):
    """
    One regression test per upstream advisory class: nothing outside the volume is read,
    written, renamed or removed, whatever links, ``..`` or absolute paths say.
    """

    def setUp(self) -> None:
        super().setUp()
        os.symlink(self.outside, self.path("out"))
        os.symlink(self.outside + "/secret", self.path("secret-link"))

    def assertUntouched(self) -> None:
        with open(self.outside + "/secret", "rb") as f:
            self.assertEqual(f.read(), b"secret")
        self.assertEqual(sorted(os.listdir(self.outside)), ["secret"])

    def test_write_through_link(self) -> None:
        """
        Writing through a final or intermediate link out of the volume is refused.
        """
        client = self.sftp.client
        for path in (b"/secret-link", b"/out/secret", b"/out/new"):
            self.assertEqual(self.sftp.code(client.openFile(path, W, {})), fx.FX_NO_SUCH_FILE)
        self.assertUntouched()

    def test_read_through_link(self) -> None:
        """
        Reading, listing or stat-ing through a link out of the volume is refused.
        """
        client = self.sftp.client
        self.assertEqual(self.sftp.code(client.openFile(b"/secret-link", fx.FXF_READ, {})),
                         fx.FX_NO_SUCH_FILE)
        self.assertEqual(self.sftp.code(client.openFile(b"/out/secret", fx.FXF_READ, {})),
                         fx.FX_NO_SUCH_FILE)
        self.assertEqual(self.sftp.code(client.openDirectory(b"/out")), fx.FX_NO_SUCH_FILE)

    def test_rename_and_delete_through_link(self) -> None:
        """
        Renaming or removing through a link out of the volume is refused; removing the link
        removes the link only.
        """
        self.write("mine.txt")
        client = self.sftp.client
        self.assertEqual(self.sftp.code(client.renameFile(b"/out/secret", b"/stolen")),
                         fx.FX_NO_SUCH_FILE)
        self.assertEqual(self.sftp.code(client.renameFile(b"/mine.txt", b"/out/planted")),
                         fx.FX_NO_SUCH_FILE)
        self.assertEqual(self.sftp.code(client.removeFile(b"/out/secret")), fx.FX_NO_SUCH_FILE)
        self.sftp.ok(client.removeFile(b"/out"))
        self.assertFalse(os.path.lexists(self.path("out")))
        self.assertUntouched()

    def test_dotdot_and_absolute_paths(self) -> None:
        """
        ``..`` is clamped at the root and an absolute host path is a path inside the volume.
        """
        self.sftp.put("/../../outside/secret", b"mine")
        self.sftp.put(self.outside + "/secret", b"mine")
        self.assertUntouched()
        self.assertTrue(os.path.isfile(self.path("outside/secret")))

    def test_link_swapped_in_during_transfer(self) -> None:
        """
        A directory swapped for a link out of the volume between two requests: the next open
        through it fails and the open handle keeps writing to the file it opened.
        """
        self.write("d/f.txt", b"")
        handle = self.sftp.ok(self.sftp.client.openFile(b"/d/f.txt", fx.FXF_WRITE, {}))
        os.rename(self.path("d"), self.path("d.old"))
        os.symlink(self.outside, self.path("d"))
        self.sftp.ok(handle.writeChunk(0, b"still mine"))
        self.sftp.ok(handle.close())
        self.assertEqual(self.sftp.code(self.sftp.client.openFile(b"/d/secret", W, {})),
                         fx.FX_NO_SUCH_FILE)
        with open(self.path("d.old/f.txt"), "rb") as f:
            self.assertEqual(f.read(), b"still mine")
        self.assertUntouched()
