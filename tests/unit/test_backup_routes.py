"""
The backup routes end to end in memory (api.md §9.2, backups.md §4, §7, §8, §9): the real site,
the development panel as the Panel, jobs run inline, the S3 double behind an in-memory agent.
"""

from __future__ import annotations

import hashlib
import json
import os

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.backups.storage import archive_path

from ..support import SERVER
from .backup_support import BACKUP, OTHER_BACKUP, BackupHarness, fill, members

TREE = {
    "server.properties": b"motd=hello\n",
    "world/level.dat": b"level" * 100,
    "world/region/r.0.0.mca": os.urandom(5000),
    "logs/latest.log": b"log line\n",
    "cache/a/b": b"cached",
    "keep.log": b"kept",
}


class BackupRouteTests(SynchronousTestCase):
    """
    ``POST /api/servers/{uuid}/backup`` and its neighbours.
    """

    def setUp(self) -> None:
        self.h = BackupHarness(FilePath(self.mktemp()))
        self.h.state.auto_create_backups = True
        self.server = self.h.add_server()
        fill(self.server.volume.root, TREE)

    def backup(self, adapter: str = "wings", uuid: str = BACKUP, ignore: str = "") -> int:
        response = self.h.post("/api/servers/{}/backup".format(SERVER),
                               {"adapter": adapter, "uuid": uuid, "ignore": ignore})
        self.h.pump()
        return response.status

    def test_local_backup(self) -> None:
        """
        backups.md §4–§5, §7: 202; the archive holds every regular file minus the ignored ones,
        mode 0600 at ``<backup_directory>/<uuid>.tar.gz``; the Panel gets the SHA-1 and size
        of the file with ``parts: null``; the websocket gets ``backup completed`` then
        ``backup completed:<uuid>``.
        """
        self.assertEqual(self.backup(ignore="*.log\n!keep.log\ncache/"), 202)
        path = archive_path(self.h.config.system.backup_directory, BACKUP)
        with open(path, "rb") as f:
            data = f.read()
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        found = members(data)
        self.assertEqual(sorted(found), ["keep.log", "server.properties", "world/level.dat",
                                         "world/region/r.0.0.mca"])
        self.assertEqual(found["world/region/r.0.0.mca"], TREE["world/region/r.0.0.mca"])
        [sent] = self.h.state.requests("POST", "/backups/" + BACKUP)
        expected = {"checksum": hashlib.sha1(data).hexdigest(), "checksum_type": "sha1",
                    "size": len(data), "successful": True, "parts": None}
        self.assertEqual(sent.raw_body, json.dumps(expected).encode())
        completed = [e for e in self.h.events if e[0].startswith("backup completed")]
        argument = json.dumps({"checksum": expected["checksum"], "checksum_type": "sha1",
                               "file_size": len(data), "is_successful": True, "uuid": BACKUP},
                              separators=(",", ":"), sort_keys=True)
        self.assertEqual(completed, [("backup completed", argument),
                                     ("backup completed:" + BACKUP, argument)])

    def test_bad_requests(self) -> None:
        """
        An unknown adapter and a non-canonical UUID answer 400 with their texts.
        """
        response = self.h.post("/api/servers/{}/backup".format(SERVER),
                               {"adapter": "ftp", "uuid": BACKUP, "ignore": ""})
        self.assertEqual((response.status, response.json()["error"]),
                         (400, "router/backups: provided adapter is not valid: ftp"))
        for bad in ("../../etc/passwd", BACKUP.upper(), "", 5, None):
            response = self.h.post("/api/servers/{}/backup".format(SERVER),
                                   {"adapter": "wings", "uuid": bad, "ignore": ""})
            self.assertEqual((response.status, response.json()["error"]),
                             (400, "The backup identifier must be a valid UUID."), bad)
        response = self.h.get("/api/servers/{}/backup/..%2F..%2Fx".format(SERVER),
                              method="DELETE")
        self.assertEqual(response.status, 400)
        self.assertEqual(self.h.state.requests("POST", "/backups/" + BACKUP), [])

    def test_delete(self) -> None:
        """
        backups.md §9.1: 204, then 404 (which the Panel treats as success).
        """
        self.backup()
        path = "/api/servers/{}/backup/{}".format(SERVER, BACKUP)
        self.assertEqual(self.h.get(path, method="DELETE").status, 204)
        self.assertFalse(os.path.exists(archive_path(self.h.config.system.backup_directory,
                                                     BACKUP)))
        response = self.h.get(path, method="DELETE")
        self.assertEqual((response.status, response.json()["error"]),
                         (404, "The requested backup was not found on this server."))

    def test_delete_all(self) -> None:
        """
        backups.md §9.2: both spellings remove every local backup recorded for the server;
        ``delete-all`` is not taken for a backup UUID.
        """
        self.backup(uuid=BACKUP)
        self.backup(uuid=OTHER_BACKUP)
        directory = self.h.config.system.backup_directory
        response = self.h.get("/api/servers/{}/backup/delete-all".format(SERVER),
                              method="DELETE")
        self.assertEqual(response.status, 204)
        self.assertEqual(os.listdir(directory), [])
        self.backup(uuid=BACKUP)
        response = self.h.get("/api/servers/{}/deleteAllBackups".format(SERVER),
                              method="DELETE")
        self.assertEqual(response.status, 204)
        self.assertEqual(os.listdir(directory), [])



class S3BackupTests(SynchronousTestCase):
    """
    S3 backups through the Panel's part URLs (backups.md §6), against the S3 double.
    """

    def setUp(self) -> None:
        self.h = BackupHarness(FilePath(self.mktemp()))
        self.h.state.auto_create_backups = True
        self.h.state.part_size = 4096
        self.h.state.add_backup(BACKUP, server=SERVER)
        self.server = self.h.add_server()
        fill(self.server.volume.root, TREE)

    def test_parts_uploaded_and_reported(self) -> None:
        """
        §6.1: the staging file goes up in ``ceil(size / part_size)`` parts in order; the report
        carries every part's ETag verbatim and number; no file stays in the backup directory.
        """
        response = self.h.post("/api/servers/{}/backup".format(SERVER),
                               {"adapter": "s3", "uuid": BACKUP, "ignore": ""})
        self.assertEqual(response.status, 202)
        self.h.pump()
        [get] = self.h.state.requests("GET", "/backups/" + BACKUP)
        size = int(get.query["size"][0])
        puts = self.h.state.requests("PUT")
        self.assertEqual(len(puts), -(-size // 4096))
        self.assertTrue(all(p.headers["content-type"] == "application/x-gzip" for p in puts))
        [report] = self.h.state.backup_reports
        self.assertTrue(report["successful"])
        self.assertEqual([p["part_number"] for p in report["parts"]],
                         list(range(1, len(puts) + 1)))
        self.assertTrue(all(p["etag"].startswith('"') for p in report["parts"]))
        key = self.h.state.backup_object_key(BACKUP)
        data = self.h.state.s3.objects[key]
        self.assertEqual(len(data), size)
        self.assertEqual(hashlib.sha1(data).hexdigest(), report["checksum"])
        self.assertEqual(sorted(members(data)), sorted(TREE))
        self.assertEqual(os.listdir(self.h.config.system.backup_directory), [])

    def test_part_count_mismatch(self) -> None:
        """
        §6.1 step 4: a part list of the wrong length fails the backup (reported as failed,
        nothing uploaded, nothing left on disk, no suffixed event).
        """
        from wings_twisted.devpanel import Respond
        self.h.state.faults.add("GET", "/backups/{uuid}",
                                Respond(200, {"parts": ["http://panel.test/s3/x"],
                                              "part_size": 10}))
        self.h.post("/api/servers/{}/backup".format(SERVER),
                    {"adapter": "s3", "uuid": BACKUP, "ignore": ""})
        self.h.pump()
        self.assertEqual(self.h.state.requests("PUT"), [])
        [report] = self.h.state.requests("POST", "/backups/" + BACKUP)
        self.assertEqual(report.raw_body, b'{"checksum": "", "checksum_type": "", "size": 0, '
                                          b'"successful": false, "parts": null}')
        self.assertEqual(os.listdir(self.h.config.system.backup_directory), [])
        names = [e[0] for e in self.h.events if e[0].startswith("backup completed")]
        self.assertEqual(names, ["backup completed"])
