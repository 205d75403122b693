"""
The Panel's file routes (api.md §5, §8.2–§8.5) through the daemon's real
``Site`` in memory: status codes and texts, the exact JSON, the write guard,
the denylist, the quota, and a regression test per upstream advisory class
(create through a symlink CVE-2023-25152, delete through a symlink
CVE-2023-25168, read through a symlink CVE-2024-27102).
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from ..support import SERVER, TOKEN, Harness, Response

NOT_FOUND = "The requested resources was not found on the system."
DENIED = "This file cannot be modified: present in egg denylist."
NO_SPACE = "There is not enough disk space available to perform that action."
IS_DIRECTORY = "Cannot perform that action: file is a directory."
RESTORING = "Files cannot be changed while a backup is being restored to this server."


class FileRouteCase(SynchronousTestCase):
    """
    A harness with one server whose volume is ``self.root``, and a directory
    ``self.outside`` beside the volume that nothing may touch.
    """

    def setUp(self) -> None:
        base = FilePath(self.mktemp())
        self.h = Harness(base, SERVER)
        self.server = self.h.add_server()
        self.root = FilePath(self.server.volume.root)
        self.outside = base.child("outside")
        self.outside.makedirs()
        self.outside.child("secret").setContent(b"host secret")
        os.chmod(self.outside.child("secret").path, 0o600)

    def call(self, method: str, route: str, body: Any = None, *, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> Response:
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        return self.h.get("/api/servers/{}/files/{}".format(SERVER, route), headers,
                          method=method, body=data)

    def error(self, response: Response, status: int, text: str | None = None) -> None:
        self.assertEqual(response.status, status, response.body)
        if text is not None:
            self.assertEqual(response.json()["error"], text)

    def outside_untouched(self) -> None:
        self.assertEqual(self.outside.child("secret").getContent(), b"host secret")
        self.assertEqual(stat.S_IMODE(os.stat(self.outside.child("secret").path).st_mode), 0o600)
        self.assertEqual(sorted(os.listdir(self.outside.path)), ["secret"])


class ContentsTests(FileRouteCase):
    """
    ``GET files/contents`` (§5.1).
    """

    def test_bytes_length_and_type(self) -> None:
        """
        The exact bytes with an exact ``Content-Length``, the sniffed type in
        ``X-Mime-Type`` and ``Content-Type``.
        """
        self.root.child("server.properties").setContent(b"motd=hi\n")
        response = self.call("GET", "contents?file=/server.properties")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, b"motd=hi\n")
        self.assertEqual(response.header("Content-Length"), "8")
        self.assertEqual(response.header("X-Mime-Type"), "text/plain; charset=utf-8")
        self.assertEqual(response.header("Content-Type"), "text/plain; charset=utf-8")
        self.assertIsNone(response.header("Content-Disposition"))

    def test_download_switch(self) -> None:
        """
        A non-empty ``download`` makes an attachment; an empty one does not.
        """
        self.root.child("a b.txt").setContent(b"x")
        response = self.call("GET", "contents?file=a+b.txt&download=1")
        self.assertEqual(response.header("Content-Type"), "application/octet-stream")
        self.assertIn('filename="a b.txt"', response.header("Content-Disposition") or "")
        self.assertIsNone(self.call("GET", "contents?file=a+b.txt&download").header(
            "Content-Disposition"))

    def test_refusals(self) -> None:
        """
        Missing 404, directory (or an empty path) 400, FIFO 400, denylisted
        403.
        """
        self.root.child("dir").makedirs()
        os.mkfifo(self.root.child("fifo").path)
        self.root.child("secret.cfg").setContent(b"x")
        self.server.volume.set_denylist(["*.cfg"])
        self.error(self.call("GET", "contents?file=nope"), 404, NOT_FOUND)
        self.error(self.call("GET", "contents?file=dir"), 400, IS_DIRECTORY)
        self.error(self.call("GET", "contents?file="), 400, IS_DIRECTORY)
        self.error(self.call("GET", "contents?file=fifo"), 400, "Cannot open files of this type.")
        self.error(self.call("GET", "contents?file=sub/../secret.cfg"), 403, DENIED)

    def test_read_through_symlink(self) -> None:
        """
        CVE-2024-27102: neither a final symlink (to outside or inside) nor an
        intermediate one leading out reads anything.
        """
        self.root.child("inside").setContent(b"in")
        os.symlink(self.outside.child("secret").path, self.root.child("abs").path)
        os.symlink("../outside/secret", self.root.child("rel").path)
        os.symlink("inside", self.root.child("local").path)
        os.symlink(self.outside.path, self.root.child("dirlink").path)
        os.symlink("../outside", self.root.child("reldir").path)
        for path in ("abs", "rel", "local", "dirlink/secret", "reldir/secret",
                     "../outside/secret", "/../../outside/secret"):
            response = self.call("GET", "contents?file=" + path)
            self.error(response, 404, NOT_FOUND)
            self.assertNotIn(b"host secret", response.body)


class ListDirectoryTests(FileRouteCase):
    """
    ``GET files/list-directory`` (§5.2).
    """

    def test_order_and_fields(self) -> None:
        """
        Directories first, then the rest, each by name bytes; symlinks and
        denylisted entries listed (not followed, not filtered).
        """
        for name in ("b.txt", "A.txt", "a.cfg"):
            self.root.child(name).setContent(b"x")
        for name in ("zdir", "adir"):
            self.root.child(name).makedirs()
        os.symlink(self.outside.path, self.root.child("link").path)
        self.server.volume.set_denylist(["*.cfg"])
        listing = self.call("GET", "list-directory?directory=/").json()
        self.assertEqual([e["name"] for e in listing],
                         ["adir", "zdir", "A.txt", "a.cfg", "b.txt", "link"])
        link = listing[-1]
        self.assertEqual((link["symlink"], link["file"], link["mime"]),
                         (True, True, "application/octet-stream"))
        self.assertEqual(listing[0]["mime"], "inode/directory")

    def test_empty_and_missing(self) -> None:
        """
        An empty directory is ``[]``; a missing one, a file or one reached
        through an escaping symlink is 404.
        """
        self.root.child("empty").makedirs()
        self.root.child("file").setContent(b"x")
        os.symlink(self.outside.path, self.root.child("out").path)
        response = self.call("GET", "list-directory?directory=empty")
        self.assertEqual((response.status, response.body), (200, b"[]"))
        for directory in ("missing", "file", "out"):
            self.error(self.call("GET", "list-directory?directory=" + directory), 404)


class RenameTests(FileRouteCase):
    """
    ``PUT files/rename`` (§5.3).
    """

    def rename(self, root: str, *pairs: tuple[str, str]) -> Response:
        return self.call("PUT", "rename", {"root": root,
                                            "files": [{"from": f, "to": t} for f, t in pairs]})

    def test_moves_with_clamping(self) -> None:
        """
        ``join(root, to)`` clamps surplus ``..`` at the volume root and
        creates missing parents.
        """
        self.root.child("plugins").makedirs()
        self.root.child("plugins").child("old.jar").setContent(b"jar")
        response = self.rename("/plugins", ("old.jar", "../../../archive/old.jar"))
        self.assertEqual(response.status, 204)
        self.assertEqual(self.root.descendant(["archive", "old.jar"]).getContent(), b"jar")

    def test_refusals(self) -> None:
        """
        Empty list 422; an existing destination 400 (no overwrite); into
        itself 400; the root 404; denylist 403 on either side.
        """
        self.root.child("a").setContent(b"a")
        self.root.child("b").setContent(b"b")
        self.root.child("d").makedirs()
        self.server.volume.set_denylist(["*.cfg"])
        self.error(self.call("PUT", "rename", {"root": "/", "files": []}), 422,
                   "No files to move or rename were provided.")
        self.error(self.rename("/", ("a", "b")), 400,
                   "Cannot move or rename file, destination already exists.")
        self.assertEqual(self.root.child("b").getContent(), b"b")
        self.error(self.rename("/", ("d", "d/inner")), 400, "Cannot move a directory into itself.")
        self.error(self.rename("/", ("a", "/")), 404)
        self.error(self.rename("/", ("a", "x.cfg")), 403, DENIED)

    def test_missing_source_is_skipped(self) -> None:
        """
        A missing source is skipped; the next pair is still done.
        """
        self.root.child("real").setContent(b"r")
        response = self.rename("/", ("ghost", "x"), ("real", "moved"))
        self.assertEqual(response.status, 204)
        self.assertTrue(self.root.child("moved").exists())

    def test_through_symlink(self) -> None:
        """
        A move into or out of a directory reached through an escaping
        symlink is 404 and changes nothing outside.
        """
        os.symlink(self.outside.path, self.root.child("out").path)
        self.root.child("mine").setContent(b"m")
        self.error(self.rename("/", ("mine", "out/mine")), 404)
        self.error(self.rename("/", ("out/secret", "stolen")), 404)
        self.outside_untouched()
        self.assertFalse(self.root.child("stolen").exists())


class CopyTests(FileRouteCase):
    """
    ``POST files/copy`` (§5.4).
    """

    def test_names_and_mode(self) -> None:
        """
        ``<stem> copy<ext>``, then ``copy 1``…; ``.tar`` stays with the
        extension; the mode is kept.
        """
        world = self.root.child("world.tar.gz")
        world.setContent(b"tgz")
        os.chmod(world.path, 0o640)
        for _ in range(3):
            self.assertEqual(self.call("POST", "copy", {"location": "/world.tar.gz"}).status, 204)
        names = sorted(os.listdir(self.root.path))
        self.assertEqual(names, ["world copy 1.tar.gz", "world copy 2.tar.gz",
                                 "world copy.tar.gz", "world.tar.gz"])
        copy = self.root.child("world copy.tar.gz")
        self.assertEqual((copy.getContent(), stat.S_IMODE(os.stat(copy.path).st_mode)),
                         (b"tgz", 0o640))

    def test_directory(self) -> None:
        """
        A directory is copied recursively; symlinks are not recreated.
        """
        source = self.root.child("cfg")
        source.makedirs()
        source.child("a.yml").setContent(b"a")
        source.child("sub").makedirs()
        source.child("sub").child("b.yml").setContent(b"b")
        os.symlink(self.outside.path, source.child("out").path)
        self.assertEqual(self.call("POST", "copy", {"location": "cfg"}).status, 204)
        copy = self.root.child("cfg copy")
        self.assertEqual(copy.descendant(["sub", "b.yml"]).getContent(), b"b")
        self.assertFalse(os.path.lexists(copy.child("out").path))

    def test_refusals(self) -> None:
        """
        Missing or a final symlink 404; denylisted 403; over quota 400.
        """
        os.symlink(self.outside.child("secret").path, self.root.child("link").path)
        self.root.child("x.cfg").setContent(b"x")
        self.root.child("big").setContent(b"b" * 2 * 1024 * 1024)
        self.server.volume.set_denylist(["*.cfg"])
        self.error(self.call("POST", "copy", {"location": "nope"}), 404)
        self.error(self.call("POST", "copy", {"location": "link"}), 404)
        self.error(self.call("POST", "copy", {"location": "x.cfg"}), 403, DENIED)
        self.server.volume.set_disk_limit(3 * 1024 * 1024)
        self.server.volume.refresh_usage()
        self.error(self.call("POST", "copy", {"location": "big"}), 400, NO_SPACE)
        self.assertFalse(self.root.child("big copy").exists())
        self.outside_untouched()


class WriteTests(FileRouteCase):
    """
    ``POST files/write`` (§5.5).
    """

    def test_raw_body_replaces_atomically(self) -> None:
        """
        The raw body (labelled JSON by the Panel) becomes the file; parents
        are created; an existing file keeps its mode.
        """
        target = self.root.child("cfg").child("server.json")
        self.assertEqual(self.call("POST", "write?file=cfg/server.json", raw=b"{not json",
                                   headers={"Content-Type": "application/json"}).status, 204)
        self.assertEqual(target.getContent(), b"{not json")
        os.chmod(target.path, 0o600)
        self.assertEqual(self.call("POST", "write?file=cfg/server.json", raw=b"").status, 204)
        self.assertEqual(target.getContent(), b"")
        self.assertEqual(stat.S_IMODE(os.stat(target.path).st_mode), 0o600)
        self.assertEqual([n for n in os.listdir(target.parent().path) if n.startswith(".")], [])

    def test_refusals(self) -> None:
        """
        No ``Content-Length`` 400; a directory 400 with its text; denylist
        403; over quota 400 and the old content kept.
        """
        raw = ("POST /api/servers/{}/files/write?file=a HTTP/1.1\r\nHost: x\r\n"
               "Authorization: Bearer {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
               "\r\n3\r\nabc\r\n0\r\n\r\n").format(SERVER, TOKEN).encode()
        self.error(self.h.request(raw), 400, "Missing Content-Length")
        self.root.child("dir").makedirs()
        self.error(self.call("POST", "write?file=dir", raw=b"x"), 400,
                   "Cannot write file, name conflicts with an existing directory by the same name.")
        self.server.volume.set_denylist(["*.cfg"])
        self.error(self.call("POST", "write?file=a.cfg", raw=b"x"), 403, DENIED)
        self.root.child("keep").setContent(b"old")
        self.server.volume.set_disk_limit(1024 * 1024)
        self.error(self.call("POST", "write?file=keep", raw=b"n" * (2 * 1024 * 1024)), 400, NO_SPACE)
        self.assertEqual(self.root.child("keep").getContent(), b"old")

    def test_create_through_symlink(self) -> None:
        """
        CVE-2023-25152: writing to a final symlink, or below a directory
        symlink leading out, is 404 and leaves the outside untouched.
        """
        os.symlink(self.outside.child("secret").path, self.root.child("abs").path)
        os.symlink("../outside/secret", self.root.child("rel").path)
        os.symlink(self.outside.path, self.root.child("out").path)
        for path in ("abs", "rel", "out/secret", "out/new", "out/sub/new"):
            self.error(self.call("POST", "write?file=" + path, raw=b"pwned"), 404)
        self.outside_untouched()


class CreateDirectoryTests(FileRouteCase):
    """
    ``POST files/create-directory`` (§5.6).
    """

    def test_nested_and_existing(self) -> None:
        """
        ``name`` may hold slashes; an existing directory is fine.
        """
        body = {"name": "a/b/c", "path": "/plugins"}
        self.assertEqual(self.call("POST", "create-directory", body).status, 204)
        self.assertTrue(self.root.descendant(["plugins", "a", "b", "c"]).isdir())
        self.assertEqual(self.call("POST", "create-directory", body).status, 204)

    def test_not_a_directory(self) -> None:
        """
        A file on the way is the ENOTDIR 400.
        """
        self.root.child("file").setContent(b"x")
        self.error(self.call("POST", "create-directory", {"name": "file/sub", "path": "/"}), 400,
                   "Part of the path being created is not a directory (ENOTDIR).")

    def test_through_symlink(self) -> None:
        """
        CVE-2023-25152 for directories: nothing is created outside.
        """
        os.symlink(self.outside.path, self.root.child("out").path)
        self.error(self.call("POST", "create-directory", {"name": "x", "path": "/out"}), 404)
        self.outside_untouched()


class DeleteTests(FileRouteCase):
    """
    ``POST files/delete`` (§5.7).
    """

    def test_recursive_and_missing(self) -> None:
        """
        Directories go with their contents; a missing entry is not an error.
        """
        self.root.child("logs").makedirs()
        self.root.child("logs").child("a.log").setContent(b"a")
        response = self.call("POST", "delete", {"root": "/", "files": ["logs", "ghost"]})
        self.assertEqual(response.status, 204)
        self.assertFalse(self.root.child("logs").exists())

    def test_refusals(self) -> None:
        """
        Empty list 422; the root 404 (and nothing deleted).
        """
        self.root.child("keep").setContent(b"k")
        self.error(self.call("POST", "delete", {"root": "/", "files": []}), 422,
                   "No files were specified for deletion.")
        self.error(self.call("POST", "delete", {"root": "/", "files": ["../.."]}), 404)
        self.assertTrue(self.root.child("keep").exists())

    def test_delete_through_symlink(self) -> None:
        """
        CVE-2023-25168: a symlink is removed itself, never its target; a
        path through a symlink leading out is 404 and deletes nothing.
        """
        os.symlink(self.outside.child("secret").path, self.root.child("link").path)
        os.symlink(self.outside.path, self.root.child("out").path)
        self.assertEqual(self.call("POST", "delete", {"root": "/", "files": ["link"]}).status,
                         204)
        self.assertFalse(os.path.lexists(self.root.child("link").path))
        self.error(self.call("POST", "delete", {"root": "/", "files": ["out/secret"]}), 404)
        self.error(self.call("POST", "delete", {"root": "/out", "files": ["secret"]}), 404)
        self.outside_untouched()


class ChmodTests(FileRouteCase):
    """
    ``POST files/chmod`` (§5.10).
    """

    def test_modes(self) -> None:
        """
        Octal strings with special bits; missing entries skipped.
        """
        self.root.child("start.sh").setContent(b"#!/bin/sh\n")
        body = {"root": "/", "files": [{"file": "start.sh", "mode": "4755"},
                                       {"file": "ghost", "mode": "644"}]}
        self.assertEqual(self.call("POST", "chmod", body).status, 204)
        self.assertEqual(stat.S_IMODE(os.stat(self.root.child("start.sh").path).st_mode), 0o4755)

    def test_invalid(self) -> None:
        """
        Empty list 422; a number, a non-octal string or a mode above 7777 is
        400.
        """
        self.root.child("f").setContent(b"x")
        self.error(self.call("POST", "chmod", {"root": "/", "files": []}), 422,
                   "No files to chmod were provided.")
        for mode in (493, "9", "abc", "17777", ""):
            self.error(self.call("POST", "chmod", {"root": "/", "files": [
                {"file": "f", "mode": mode}]}), 400, "Invalid file mode.")

    def test_symlink_skipped(self) -> None:
        """
        A final symlink is skipped: its target (outside) keeps its mode.
        """
        os.symlink(self.outside.child("secret").path, self.root.child("link").path)
        body = {"root": "/", "files": [{"file": "link", "mode": "777"}]}
        self.assertEqual(self.call("POST", "chmod", body).status, 204)
        self.outside_untouched()


class TouchStatSearchTests(FileRouteCase):
    """
    The fork's ``touch``, ``stat``, ``search`` and ``disk-usage``.
    """

    def test_touch(self) -> None:
        """
        Creates parents and an empty file; keeps an existing file's content;
        a directory is 400 and a final symlink 404.
        """
        self.assertEqual(self.call("POST", "touch", {"file": "/logs/new.log"}).status, 204)
        self.assertEqual(self.root.descendant(["logs", "new.log"]).getContent(), b"")
        self.root.child("keep").setContent(b"data")
        os.utime(self.root.child("keep").path, (1, 1))
        self.assertEqual(self.call("POST", "touch", {"file": "keep"}).status, 204)
        self.assertEqual(self.root.child("keep").getContent(), b"data")
        self.assertGreater(os.stat(self.root.child("keep").path).st_mtime, 1000)
        self.error(self.call("POST", "touch", {"file": "logs"}), 400)
        os.symlink(self.outside.child("secret").path, self.root.child("link").path)
        self.error(self.call("POST", "touch", {"file": "link"}), 404)
        self.error(self.call("POST", "touch", {}), 400)
        self.outside_untouched()

    def test_stat(self) -> None:
        """
        One stat object; a final symlink described, not followed; the
        parameter is required.
        """
        os.symlink(self.outside.child("secret").path, self.root.child("link").path)
        obj = self.call("GET", "stat?file=link").json()
        self.assertEqual((obj["name"], obj["symlink"]), ("link", True))
        self.error(self.call("GET", "stat"), 400, "The file parameter is required.")
        self.error(self.call("GET", "stat?file=nope"), 404)

    def test_search(self) -> None:
        """
        Names, wildcards and extensions match case-insensitively; blacklisted
        directories are skipped; names are volume-relative; short patterns
        are 400.
        """
        tree = self.root.child("config")
        tree.makedirs()
        tree.child("Settings.JSON").setContent(b"{}")
        self.root.child("node_modules").makedirs()
        self.root.child("node_modules").child("x.json").setContent(b"{}")
        os.symlink(self.outside.path, self.root.child("out").path)
        names = [e["name"] for e in self.call("GET", "search?pattern=json").json()]
        self.assertEqual(names, ["config/Settings.JSON"])
        names = [e["name"] for e in self.call("GET", "search?pattern=set*").json()]
        self.assertEqual(names, ["config/Settings.JSON"])
        self.error(self.call("GET", "search?pattern=js"), 400,
                   "Pattern must be at least 3 characters long")
        self.error(self.call("GET", "search?pattern=secret&directory=out"), 404)

    def test_content_search(self) -> None:
        """
        ``content`` finds regular files holding the text, also across the
        read chunks; names narrow it when ``pattern`` is given too; links are
        never read; fewer than 3 characters is 400.
        """
        self.root.child("a.yml").setContent(b"motd: needle here\n")
        self.root.child("b.txt").setContent(b"x" * (1024 * 1024 - 3) + b"needle")
        self.root.child("c.yml").setContent(b"nothing")
        os.symlink(self.outside.child("secret").path, self.root.child("link").path)
        names = [e["name"] for e in self.call("GET", "search?content=needle").json()]
        self.assertEqual(names, ["a.yml", "b.txt"])
        names = [e["name"] for e in self.call("GET", "search?content=needle&pattern=yml").json()]
        self.assertEqual(names, ["a.yml"])
        self.assertEqual(self.call("GET", "search?content=host").json(), [])
        self.error(self.call("GET", "search?content=ne"), 400,
                   "Content must be at least 3 characters long")

    def test_disk_usage(self) -> None:
        """
        The usage as the quota charges it (a file costs at least 4 KiB) and
        the limit in bytes.
        """
        self.root.child("f").setContent(b"x" * 5000)
        self.server.volume.set_disk_limit(5 * 1024 * 1024)
        self.assertEqual(self.call("GET", "disk-usage").json(),
                         {"current_bytes": 8192, "limit_bytes": 5 * 1024 * 1024})


class WriteGuardTests(FileRouteCase):
    """
    api.md §2.9: while a backup is restored every modifying file route is
    409 with the restore text, before its body is read; reads still work.
    """

    def test_modifying_routes_refused(self) -> None:
        """
        Each modifying route, even with an unparsable body.
        """
        self.root.child("f").setContent(b"x")
        self.server.occupancy.begin_restore()
        for method, route in (("PUT", "rename"), ("POST", "copy"), ("POST", "write?file=f"),
                              ("POST", "create-directory"), ("POST", "delete"),
                              ("POST", "chmod"), ("POST", "touch"), ("POST", "replace-line"),
                              ("POST", "insert-lines"), ("POST", "delete-lines"),
                              ("POST", "upload/init"), ("POST", "upload/chunk"),
                              ("POST", "upload/finalize")):
            self.error(self.call(method, route, raw=b"{garbage"), 409, RESTORING)
        self.assertEqual(self.root.child("f").getContent(), b"x")

    def test_reads_allowed(self) -> None:
        """
        Reads and ``DELETE files/upload/{id}`` are not guarded.
        """
        self.root.child("f").setContent(b"x")
        self.server.occupancy.begin_receive()
        self.assertEqual(self.call("GET", "contents?file=f").status, 200)
        self.assertEqual(self.call("GET", "list-directory").status, 200)
        self.assertEqual(self.call("GET", "stat?file=f").status, 200)
        self.assertEqual(self.call("DELETE", "upload/unknown").status, 204)

    def test_unknown_route(self) -> None:
        """
        An unknown file route is a JSON 404 after the bearer check.
        """
        self.error(self.call("GET", "nothing"), 404)
        response = self.h.get("/api/servers/{}/files/nothing".format(SERVER),
                              {"Authorization": None})  # type: ignore[dict-item]
        self.assertEqual(response.status, 401)
