"""
The fork's chunked uploads (api.md §8.11–§8.14) through the daemon's real
``Site`` in memory: sessions, chunk checks, assembly with its checksum, the
limits, another server's sessions, expiry and abort.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from twisted.internet.defer import Deferred

from ..support import SERVER, TOKEN, Response
from .test_file_routes import DENIED, FileRouteCase

OTHER = "3c2b8f1e-9d4a-4f6b-a1c2-7e5d9b0a4c18"


class ChunkedUploadTests(FileRouteCase):
    """
    ``files/upload/{init,chunk,finalize,<id>}``.
    """

    def init(self, **body: Any) -> Response:
        return self.call("POST", "upload/init", body)

    def chunk(self, upload_id: str, index: int, data: bytes, total: int, *,
              server: str = SERVER) -> Response:
        raw = ("POST /api/servers/{}/files/upload/chunk HTTP/1.1\r\nHost: x\r\n"
               "Authorization: Bearer {}\r\nConnection: close\r\nX-Upload-Id: {}\r\n"
               "X-Chunk-Index: {}\r\nX-Total-Chunks: {}\r\n"
               "Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n").format(
            server, TOKEN, upload_id, index, total, len(data)).encode() + data
        return self.h.request(raw)

    def test_whole_upload(self) -> None:
        """
        Chunks in any order (one re-sent) assemble into the file with its
        SHA-256; progress is a percentage; the session is gone afterwards;
        the upload is recorded as activity.
        """
        started = self.init(path="/mods/pack.zip", file_size=10, chunk_size=4).json()
        upload_id = started["upload_id"]
        self.assertEqual((started["total_chunks"], started["chunk_size"]), (3, 4))
        self.assertEqual(self.chunk(upload_id, 2, b"89", 3).json()["progress"], 20.0)
        self.chunk(upload_id, 0, b"XXXX", 3)
        self.chunk(upload_id, 0, b"0123", 3)
        answer = self.chunk(upload_id, 1, b"4567", 3).json()
        self.assertEqual(answer, {"chunk_index": 1, "status": "received", "bytes_received": 10,
                                  "total_bytes": 10, "progress": 100.0})
        done = self.call("POST", "upload/finalize", {"upload_id": upload_id})
        self.assertEqual(done.json(), {
            "status": "completed", "file_path": "/mods/pack.zip", "file_size": 10,
            "checksum": "sha256:" + hashlib.sha256(b"0123456789").hexdigest()})
        self.assertEqual(self.root.descendant(["mods", "pack.zip"]).getContent(), b"0123456789")
        self.error(self.call("POST", "upload/finalize", {"upload_id": upload_id}), 404)
        self.assertEqual(os.listdir(os.path.join(self.h.config.system.tmp_directory, "uploads")),
                         [])

    def test_chunk_checks(self) -> None:
        """
        A chunk of the wrong size, index or total, and missing headers, are
        400; an unknown session 404; another server's 403; finalize before
        every chunk arrived 400.
        """
        upload_id = self.init(path="f", file_size=10, chunk_size=4).json()["upload_id"]
        self.error(self.chunk(upload_id, 0, b"123", 3), 400)
        self.error(self.chunk(upload_id, 2, b"1234", 3), 400)
        self.error(self.chunk(upload_id, 3, b"12", 3), 400)
        self.error(self.chunk(upload_id, 0, b"1234", 4), 400)
        self.error(self.chunk("nope", 0, b"1234", 3), 404)
        self.error(self.call("POST", "upload/chunk", raw=b"1234"), 400)
        self.error(self.call("POST", "upload/finalize", {"upload_id": upload_id}), 400,
                   "Not all chunks have been received.")
        self.h.add_server(OTHER)
        self.error(self.chunk(upload_id, 0, b"1234", 3, server=OTHER), 403)
        response = self.h.get("/api/servers/{}/files/upload/{}".format(OTHER, upload_id),
                              method="DELETE")
        self.error(response, 403)

    def test_init_checks(self) -> None:
        """
        Sizes out of range, a directory, a denylisted path and a file that
        would not fit are refused; the sixth session of a server is 409.
        """
        self.root.child("dir").makedirs()
        self.server.volume.set_denylist(["*.cfg"])
        for body in ({"path": "f", "file_size": 0, "chunk_size": 1},
                     {"path": "f", "file_size": 10241 * 1024 * 1024, "chunk_size": 1},
                     {"path": "f", "file_size": 1, "chunk_size": 101 * 1024 * 1024},
                     {"path": "", "file_size": 1, "chunk_size": 1},
                     {"path": "dir", "file_size": 1, "chunk_size": 1}):
            self.error(self.init(**body), 400)
        self.error(self.init(path="a.cfg", file_size=1, chunk_size=1), 403, DENIED)
        self.server.volume.set_disk_limit(1024 * 1024)
        self.error(self.init(path="big", file_size=2 * 1024 * 1024, chunk_size=1024), 400)
        for n in range(5):
            self.assertEqual(self.init(path="f{}".format(n), file_size=1,
                                       chunk_size=1).status, 200)
        self.error(self.init(path="f6", file_size=1, chunk_size=1), 409,
                   "Maximum concurrent uploads reached for this server.")

    def test_abort_and_expiry(self) -> None:
        """
        DELETE removes the session and its chunks (unknown ids are fine);
        a session not finalized within the expiry is removed the same way.
        """
        upload_id = self.init(path="f", file_size=8, chunk_size=4).json()["upload_id"]
        self.chunk(upload_id, 0, b"1234", 2)
        directory = os.path.join(self.h.config.system.tmp_directory, "uploads", upload_id)
        self.assertTrue(os.path.isdir(directory))
        self.assertEqual(self.call("DELETE", "upload/" + upload_id).status, 204)
        self.assertFalse(os.path.exists(directory))
        self.assertEqual(self.call("DELETE", "upload/" + upload_id).status, 204)
        expiring = self.init(path="g", file_size=4, chunk_size=4).json()["upload_id"]
        self.h.clock.advance(24 * 3600 - 1)
        self.assertEqual(self.chunk(expiring, 0, b"1234", 1).status, 200)
        self.h.clock.advance(1)
        self.error(self.chunk(expiring, 0, b"1234", 1), 404)
        self.assertFalse(os.path.exists(os.path.join(
            self.h.config.system.tmp_directory, "uploads", expiring)))

    def test_activity(self) -> None:
        """
        A finalized upload is recorded as ``server:file.uploaded`` without a
        user and reaches the panel with the next flush.
        """
        upload_id = self.init(path="/a/b.bin", file_size=1, chunk_size=1).json()["upload_id"]
        self.chunk(upload_id, 0, b"x", 1)
        self.call("POST", "upload/finalize", {"upload_id": upload_id})
        self.successResultOf(Deferred.fromCoroutine(self.h.node.activity.flush()))
        sent = [a for a in self.h.state.activity if a["event"] == "server:file.uploaded"]
        self.assertEqual([(a["user"], a["metadata"]) for a in sent],
                         [(None, {"file": "b.bin", "directory": "/a"})])
