"""
The archive routes through the daemon's real site in memory (``api.md`` §5.8, §5.9, §8.15,
§8.16): the Panel's exact bodies, every status and error text, the write guard, async mode with
its task objects, websocket events and retention.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.files.archives import RETENTION

from ..support import SERVER, Harness, Response
from .archive_support import Member, tar_bytes, write, zip_bytes

FILES = "/api/servers/{}/files/".format(SERVER)
OTHER = "0b4f6c1d-2e3f-4a5b-8c7d-9e0f1a2b3c4d"


class _Routes(SynchronousTestCase):
    def setUp(self) -> None:
        self.harness = Harness(self.mktemp_path(), SERVER, OTHER)
        self.server = self.harness.add_server()
        self.harness.add_server(OTHER)
        self.volume = self.server.volume
        self.events: list[tuple[str, Any]] = []
        self.server.events.subscribe(
            lambda event: self.events.append((event.name, json.loads(event.arg or "null"))))
        write(self.volume, "world/level.dat", b"level")
        write(self.volume, "server.properties", b"motd=hi\n")

    def mktemp_path(self) -> Any:
        from twisted.python.filepath import FilePath
        return FilePath(self.mktemp())

    def post(self, route: str, body: Any, server: str = SERVER) -> Response:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.harness.get("/api/servers/{}/files/{}".format(server, route), method="POST",
                                body=raw)

    def get(self, route: str, server: str = SERVER) -> Response:
        return self.harness.get("/api/servers/{}/files/{}".format(server, route))

    def members(self, name: str) -> list[str]:
        with open(os.path.join(self.volume.root, name), "rb") as f:
            with tarfile.open(fileobj=io.BytesIO(f.read()), mode="r:gz") as archive:
                return sorted(archive.getnames())


class CompressRouteTests(_Routes):
    """
    ``POST files/compress``.
    """

    def test_panel_body(self) -> None:
        """
        The Panel's ``{"root", "files"}`` gives 200 with every stat field, the UTC name and the
        forced MIME type; the archive holds the items with names relative to the root.
        """
        response = self.post("compress", {"root": "/", "files": ["world", "server.properties"]})
        self.assertEqual(response.status, 200)
        body = response.json()
        self.assertEqual(list(body), ["name", "created", "modified", "mode", "mode_bits", "size",
                                      "directory", "file", "symlink", "mime"])
        self.assertEqual(body["name"], "archive-2027-01-15T080000Z.tar.gz")
        self.assertEqual((body["mime"], body["mode"], body["mode_bits"], body["file"]),
                         ("application/tar+gzip", "-rw-r--r--", "644", True))
        self.assertEqual(body["size"], os.path.getsize(os.path.join(self.volume.root,
                                                                    body["name"])))
        self.assertEqual(self.members(body["name"]), ["server.properties", "world",
                                                      "world/level.dat"])
        again = self.post("compress", {"root": "/", "files": ["world"]}).json()
        self.assertEqual(again["name"], "archive-2027-01-15T080000Z 1.tar.gz")
        self.assertEqual(self.events, [])

    def test_errors(self) -> None:
        """
        No files: 422; over quota: 409; an archive that does not fit: 400 and nothing left;
        a missing root: 404; bad bodies: 400.
        """
        response = self.post("compress", {"root": "/", "files": []})
        self.assertEqual((response.status, response.json()["error"]),
                         (422, "No files were passed through to be compressed."))
        self.assertEqual(self.post("compress", {"root": "/nope", "files": ["a"]}).status, 404)
        for bad in (b"", b"[]", b'{"files": "world"}', b'{"files": [1]}',
                    b'{"files": ["a"], "foreground": "no"}'):
            self.assertEqual(self.post("compress", bad).status, 400, bad)
        write(self.volume, "noise.bin", os.urandom(300000))
        usage = self.volume.quota.refresh()
        self.volume.set_disk_limit(usage + 1000)
        response = self.post("compress", {"root": "/", "files": ["noise.bin"]})
        self.assertEqual((response.status, response.json()["error"]),
                         (400, "There is not enough disk space available to perform that "
                               "action."))
        self.assertEqual(sorted(os.listdir(self.volume.root)),
                         ["noise.bin", "server.properties", "world"])
        self.volume.set_disk_limit(usage - 1)
        self.volume.quota.refresh()
        response = self.post("compress", {"root": "/", "files": ["world"]})
        self.assertEqual((response.status, response.json()["error"]),
                         (409, "This server does not have enough available disk space to "
                               "generate a compressed archive."))

    def test_write_guard(self) -> None:
        """
        While a restore owns the volume, compress and decompress are 409 before anything else.
        """
        self.server.occupancy.begin_restore()
        for route in ("compress", "decompress"):
            response = self.post(route, b"")
            self.assertEqual((response.status, response.json()["error"]),
                             (409, "Files cannot be changed while a backup is being restored "
                                   "to this server."))
        self.assertEqual(self.get("archive-tasks").status, 200)


class DecompressRouteTests(_Routes):
    """
    ``POST files/decompress``.
    """

    def test_panel_body(self) -> None:
        """
        The Panel's ``{"root", "file"}`` extracts into the root and answers 204.
        """
        write(self.volume, "up/plugins.zip", zip_bytes([Member("plugins/a.jar", b"jar"),
                                                        Member("../../escape.txt", b"x")]))
        response = self.post("decompress", {"root": "/up", "file": "plugins.zip"})
        self.assertEqual((response.status, response.body), (204, b""))
        with open(os.path.join(self.volume.root, "up/plugins/a.jar"), "rb") as f:
            self.assertEqual(f.read(), b"jar")
        self.assertTrue(os.path.exists(os.path.join(self.volume.root, "escape.txt")))

    def test_errors(self) -> None:
        """
        Each failure has its status and text.
        """
        write(self.volume, "notes.txt", b"text")
        write(self.volume, "a.rar", b"Rar!\x1a\x07\x00" + bytes(64))
        broken = tar_bytes([Member("a", b"x" * 5000)], "w:gz")
        write(self.volume, "broken.tgz", broken[:len(broken) // 2])
        os.makedirs(os.path.join(self.volume.root, "folder.zip"))
        cases = [
            ({"root": "/", "file": "notes.txt"}, 400,
             "The archive provided is in a format Wings does not understand."),
            ({"root": "/", "file": "a.rar"}, 400,
             "RAR archives cannot be extracted on this node; use zip, 7z or tar.gz instead."),
            ({"root": "/", "file": "broken.tgz"}, 400,
             "The archive is damaged or incomplete and cannot be extracted."),
            ({"root": "/", "file": "missing.zip"}, 404,
             "The requested resources was not found on the system."),
            ({"root": "/", "file": "folder.zip"}, 400,
             "Cannot perform that action: file is a directory."),
            ({"root": "/"}, 400, "The file parameter is required."),
        ]
        for body, status, text in cases:
            response = self.post("decompress", body)
            self.assertEqual((response.status, response.json()["error"]), (status, text), body)

    def test_quota(self) -> None:
        """
        Declared sizes that do not fit: 400 and nothing extracted.
        """
        write(self.volume, "big.tgz", tar_bytes([Member("a.bin", bytes(2 << 20))], "w:gz"))
        self.volume.set_disk_limit(self.volume.quota.refresh() + (1 << 20))
        response = self.post("decompress", {"root": "/", "file": "big.tgz"})
        self.assertEqual(response.status, 400)
        self.assertFalse(os.path.exists(os.path.join(self.volume.root, "a.bin")))


class ArchiveTaskTests(_Routes):
    """
    ``foreground: false``, ``archive-tasks`` and ``archive-status``.
    """

    def test_compress_task(self) -> None:
        """
        202 with an identifier; the task completes with its result file; the websocket sees
        ``archive started`` then ``archive completed`` with the result; the task is listed until
        five minutes after it finished.
        """
        response = self.post("compress", {"root": "/", "files": ["world"], "foreground": False})
        self.assertEqual(response.status, 202)
        identifier = response.json()["identifier"]
        task = self.get("archive-status/" + identifier).json()
        name = "archive-2027-01-15T080000Z.tar.gz"
        self.assertEqual(task, {
            "identifier": identifier, "server_id": SERVER, "type": "compress",
            "status": "completed", "root_path": "/", "files": ["world"], "result_file": name,
            "started_at": "2027-01-15T08:00:00Z", "finished_at": "2027-01-15T08:00:00Z"})
        size = os.path.getsize(os.path.join(self.volume.root, name))
        self.assertEqual(self.events, [
            ("archive started", {"identifier": identifier, "type": "compress", "root_path": "/"}),
            ("archive completed", {"identifier": identifier, "type": "compress",
                                   "result": {"name": name, "size": size,
                                              "mime": "application/tar+gzip"}})])
        self.assertEqual([t["identifier"] for t in self.get("archive-tasks").json()], [identifier])
        self.assertEqual(self.get("archive-tasks", OTHER).json(), [])
        self.assertEqual(self.get("archive-status/" + identifier, OTHER).status, 404)
        self.harness.clock.advance(RETENTION - 1)
        self.assertEqual(len(self.get("archive-tasks").json()), 1)
        self.harness.clock.advance(1)
        self.assertEqual(self.get("archive-tasks").json(), [])
        response = self.get("archive-status/" + identifier)
        self.assertEqual((response.status, response.json()["error"]),
                         (404, "The requested archive task was not found."))

    def test_failed_decompress_task(self) -> None:
        """
        A decompress task whose archive is damaged fails with the error text; one whose archive
        is missing or unknown is refused before any task exists.
        """
        broken = tar_bytes([Member("a", b"x" * 5000)], "w:gz")
        write(self.volume, "broken.tgz", broken[:len(broken) // 2])
        response = self.post("decompress", {"root": "/", "file": "broken.tgz",
                                            "foreground": False})
        self.assertEqual(response.status, 202)
        identifier = response.json()["identifier"]
        task = self.get("archive-status/" + identifier).json()
        self.assertEqual((task["type"], task["status"], task["file"], task["error"]),
                         ("decompress", "failed", "broken.tgz",
                          "The archive is damaged or incomplete and cannot be extracted."))
        self.assertNotIn("files", task)
        self.assertEqual(self.events[-1], ("archive failed", {
            "identifier": identifier, "type": "decompress",
            "error": "The archive is damaged or incomplete and cannot be extracted."}))
        for file, status in (("missing.zip", 404), ("server.properties", 400)):
            response = self.post("decompress", {"root": "/", "file": file, "foreground": False})
            self.assertEqual(response.status, status)
        self.assertEqual(len(self.get("archive-tasks").json()), 1)

    def test_status_route_shape(self) -> None:
        """
        ``archive-status`` needs exactly one identifier segment.
        """
        self.assertEqual(self.get("archive-status").status, 404)
        self.assertEqual(self.get("archive-status/a/b").status, 404)


class ArchiveErrorTests(SynchronousTestCase):
    """
    ``web.archives.archive_error``: the answer of each failure of an archive job.
    """

    def test_mapping(self) -> None:
        """
        Each domain failure has its status and text; an unknown one is a 500 (``None``), whose
        task text is the generic message.
        """
        from wings_twisted.archive import Busy, Cancelled, Damaged, UnknownFormat, Unsupported
        from wings_twisted.fs import QuotaExceeded
        from wings_twisted.web.archives import archive_error, describe
        cases = [
            (UnknownFormat("x"), 400,
             "The archive provided is in a format Wings does not understand."),
            (Unsupported("No RAR here."), 400, "No RAR here."),
            (Damaged("crc"), 400, "The archive is damaged or incomplete and cannot be extracted."),
            (Busy(), 400, "One or more files this archive is attempting to overwrite are "
                          "currently in use by another process. Please try again."),
            (Cancelled(), 400, "The archive operation was cancelled."),
            (QuotaExceeded("a"), 400,
             "There is not enough disk space available to perform that action."),
        ]
        for error, status, text in cases:
            translated = archive_error(error)
            assert translated is not None
            self.assertEqual((translated.status, translated.message, describe(error)),
                             (status, text, text))
        self.assertIsNone(archive_error(RuntimeError("boom")))
        self.assertEqual(describe(RuntimeError("boom")),
                         "An unexpected error was encountered while processing this request")
