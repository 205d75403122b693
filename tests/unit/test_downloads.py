"""
Tests for ``GET``/``HEAD /download/file`` and ``/download/backup``
(downloads-uploads.md §2–§5) against the real site in memory.
"""

from __future__ import annotations

import os

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.web.ranges import etag_for, http_date

from ..support import SERVER, Harness, mint

BACKUP = "4b1d7c3e-8a2f-4c6d-9e0b-1a2b3c4d5e6f"
DATA = bytes(range(256)) * 4  # 1000+ bytes: 1024


class FileDownloadTests(SynchronousTestCase):
    """
    ``/download/file``.
    """

    def setUp(self) -> None:
        self.h = Harness(FilePath(self.mktemp()), SERVER)
        self.server = self.h.add_server(SERVER)
        self.root = self.server.volume.root
        with open(os.path.join(self.root, "data.bin"), "wb") as f:
            f.write(DATA)

    def token(self, path: str = "/data.bin", **claims) -> str:
        claims.setdefault("server_uuid", SERVER)
        return mint(self.h.clock, file_path=path, **claims)

    def fetch(self, token: str, headers=None, *, method="GET", peer="127.0.0.1"):
        return self.h.get("/download/file?token=" + token, dict(headers or {}, Authorization=None),
                          method=method, peer=peer)

    def test_full_download(self) -> None:
        """
        200 with every header of §3.2 and the exact bytes.
        """
        response = self.fetch(self.token())
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, DATA)
        st = os.stat(os.path.join(self.root, "data.bin"))
        self.assertEqual(response.header("Content-Type"), "application/octet-stream")
        self.assertEqual(response.header("Content-Length"), str(len(DATA)))
        self.assertEqual(response.header("Accept-Ranges"), "bytes")
        self.assertEqual(response.header("Cache-Control"), "no-store")
        self.assertEqual(response.header("ETag"), etag_for(st))
        self.assertEqual(response.header("Last-Modified"), http_date(int(st.st_mtime)))
        self.assertEqual(response.header("Content-Disposition"), 'attachment; filename="data.bin"')
        self.assertIn("Content-Range", response.header("Access-Control-Expose-Headers"))
        self.assertIn("Range", response.header("Access-Control-Allow-Headers"))

    def test_single_use(self) -> None:
        """
        A plain GET cannot be replayed: the second answers 404.
        """
        token = self.token()
        self.assertEqual(self.fetch(token).status, 200)
        again = self.fetch(token)
        self.assertEqual(again.status, 404)
        self.assertEqual(again.json()["error"], "The requested resource was not found on this server.")

    def test_range_resume_same_client(self) -> None:
        """
        After a first GET, a Range GET from the same address is honoured
        (206), from another address refused (404).
        """
        token = self.token()
        self.assertEqual(self.fetch(token).status, 200)
        resumed = self.fetch(token, {"Range": "bytes=1000-"})
        self.assertEqual(resumed.status, 206)
        self.assertEqual(resumed.body, DATA[1000:])
        self.assertEqual(resumed.header("Content-Range"), "bytes 1000-1023/1024")
        self.assertEqual(self.fetch(token, {"Range": "bytes=0-1"}, peer="10.9.9.9").status, 404)

    def test_range_resume_switch_off(self) -> None:
        """
        ``api.downloads.allow_range_resume: false`` restores strict single use.
        """
        h = Harness(FilePath(self.mktemp()), SERVER, api={"downloads": {"allow_range_resume": False}})
        server = h.add_server(SERVER)
        with open(os.path.join(server.volume.root, "f"), "wb") as f:
            f.write(b"abc")
        token = mint(h.clock, server_uuid=SERVER, file_path="/f")
        path = "/download/file?token=" + token
        self.assertEqual(h.get(path, {"Authorization": None}).status, 200)
        self.assertEqual(h.get(path, {"Authorization": None, "Range": "bytes=1-"}).status, 404)

    def test_resume_after_expiry_refused(self) -> None:
        """
        The continuation ends with the token's ``exp``.
        """
        token = self.token()
        self.assertEqual(self.fetch(token).status, 200)
        self.h.clock.advance(901)
        self.assertEqual(self.fetch(token, {"Range": "bytes=0-1"}).status, 403)

    def test_head_never_consumes(self) -> None:
        """
        HEAD twice then GET all succeed; HEAD reports the full length and
        ignores Range.
        """
        token = self.token()
        for _ in range(2):
            head = self.fetch(token, {"Range": "bytes=0-9"}, method="HEAD")
            self.assertEqual(head.status, 200)
            self.assertEqual(head.header("Content-Length"), str(len(DATA)))
            self.assertEqual(head.header("Accept-Ranges"), "bytes")
            self.assertEqual(head.body, b"")
        self.assertEqual(self.fetch(token).status, 200)

    def test_ranges(self) -> None:
        """
        Single, open, suffix ranges; unsatisfiable → 416 with ``*/N``;
        malformed and multi-range → full 200.
        """
        cases = [
            ("bytes=0-9", 206, DATA[0:10], "bytes 0-9/1024"),
            ("bytes=1000-", 206, DATA[1000:], "bytes 1000-1023/1024"),
            ("bytes=-24", 206, DATA[-24:], "bytes 1000-1023/1024"),
            ("bytes=-5000", 206, DATA, "bytes 0-1023/1024"),
            ("bytes=1023-9999", 206, DATA[1023:], "bytes 1023-1023/1024"),
            ("bytes=1024-", 416, None, "bytes */1024"),
            ("bytes=5-3", 200, DATA, None),
            ("items=0-5", 200, DATA, None),
            ("bytes=0-9, 20-29", 200, DATA, None),
            ("bytes=0-9,5000-6000", 206, DATA[0:10], "bytes 0-9/1024"),
        ]
        for value, status, body, content_range in cases:
            response = self.fetch(self.token(), {"Range": value})
            self.assertEqual(response.status, status, value)
            self.assertEqual(response.header("Content-Range"), content_range, value)
            if body is not None:
                self.assertEqual(response.body, body, value)
                self.assertEqual(response.header("Content-Length"), str(len(body)))
            else:
                self.assertEqual(response.json()["error"], "The requested range is not satisfiable.")

    def test_if_range(self) -> None:
        """
        A matching strong ETag honours the range; a weak or stale one sends
        the whole file.
        """
        etag = etag_for(os.stat(os.path.join(self.root, "data.bin")))
        ok = self.fetch(self.token(), {"Range": "bytes=0-9", "If-Range": etag})
        self.assertEqual(ok.status, 206)
        weak = self.fetch(self.token(), {"Range": "bytes=0-9", "If-Range": "W/" + etag})
        self.assertEqual(weak.status, 200)
        stale = self.fetch(self.token(), {"Range": "bytes=0-9", "If-Range": '"stale"'})
        self.assertEqual((stale.status, stale.body), (200, DATA))

    def test_empty_file(self) -> None:
        """
        An empty file is 200 with length 0, and any Range is 416.
        """
        open(os.path.join(self.root, "empty"), "wb").close()
        response = self.fetch(self.token("/empty"))
        self.assertEqual((response.status, response.header("Content-Length"), response.body),
                         (200, "0", b""))
        self.assertEqual(self.fetch(self.token("/empty"), {"Range": "bytes=0-"}).status, 416)

    def test_not_found_symlink_directory_fifo(self) -> None:
        """
        Missing or escaping path and final symlink → 404 (generic text),
        directory → 404 (route text), FIFO → 400 without blocking.
        """
        os.symlink("data.bin", os.path.join(self.root, "link"))
        os.mkdir(os.path.join(self.root, "dir"))
        os.mkfifo(os.path.join(self.root, "fifo"))
        generic = "The requested resources was not found on the system."
        for path, status, message in [
            ("/missing", 404, generic), ("/../../etc/passwd", 404, generic),
            ("/link", 404, generic), ("/dir", 404, "The requested resource was not found on this server."),
            ("/fifo", 400, "Cannot open files of this type."),
        ]:
            response = self.fetch(self.token(path))
            self.assertEqual((response.status, response.json()["error"]), (status, message), path)

    def test_token_failures(self) -> None:
        """
        Bad tokens are 403 with the project's text; an unknown server 404.
        """
        invalid = "The provided token is invalid or has expired."
        cases = [
            ("", 403), ("garbage", 403),
            (self.token(key="wrong-key"), 403),
            (self.token(exp=None), 403),
            (self.token(exp=int(self.h.clock.seconds()) - 1), 403),
            (self.token(server_uuid=None), 403),
            (self.token(scope="file-upload"), 403),
            (mint(self.h.clock, server_uuid="0c5b4ae6-5a43-4b77-8f0d-6f3e1cd5d0a7",
                  file_path="/data.bin"), 404),
        ]
        for token, status in cases:
            response = self.fetch(token)
            self.assertEqual(response.status, status, token)
            if status == 403:
                self.assertEqual(response.json()["error"], invalid)

    def test_panel_claims_accepted(self) -> None:
        """
        ``aud``, ``iss`` and an ``iat`` in the future do not matter; a scope
        naming the route is fine; ``exp`` equal to now is still valid.
        """
        now = int(self.h.clock.seconds())
        for token in (self.token(iat=now + 5, nbf=now + 5),
                      self.token(scope="file-download"),
                      self.token(exp=now)):
            self.assertEqual(self.fetch(token).status, 200)

    def test_file_shrinks_mid_download(self) -> None:
        """
        A file truncated after it was opened produces an aborted connection
        with a short body, never a complete-looking 200.
        """
        volume = self.server.volume
        original = volume.open_read

        def open_then_truncate(path, **kwargs):
            opened = original(path, **kwargs)
            os.truncate(os.path.join(self.root, "data.bin"), 10)
            return opened
        volume.open_read = open_then_truncate
        response = self.fetch(self.token())
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header("Content-Length"), str(len(DATA)))
        self.assertFalse(response.complete)
        self.flushLoggedErrors()

    def test_denylist(self) -> None:
        """
        A denylisted file is 403 with the denylist text.
        """
        self.server.volume.set_denylist(["*.bin"])
        response = self.fetch(self.token())
        self.assertEqual(response.status, 403)
        self.assertEqual(response.json()["error"], "This file cannot be modified: present in egg denylist.")

    def test_unicode_name(self) -> None:
        """
        Non-ASCII names get an ASCII fallback and ``filename*``.
        """
        with open(os.path.join(self.root, "carte-été.zip"), "wb") as f:
            f.write(b"z")
        response = self.fetch(self.token("/carte-été.zip"))
        self.assertEqual(response.header("Content-Disposition"),
                         "attachment; filename=\"carte-_t_.zip\"; filename*=UTF-8''carte-%C3%A9t%C3%A9.zip")


class BackupDownloadTests(SynchronousTestCase):
    """
    ``/download/backup``.
    """

    def setUp(self) -> None:
        self.h = Harness(FilePath(self.mktemp()), SERVER)
        self.h.add_server(SERVER)
        self.directory = self.h.config.system.backup_directory

    def fetch(self, backup: str, headers=None):
        token = mint(self.h.clock, server_uuid=SERVER, backup_uuid=backup)
        return self.h.get("/download/backup?token=" + token, dict(headers or {}, Authorization=None))

    def test_flat_layout(self) -> None:
        """
        ``<backup_directory>/<uuid>.tar.gz`` is served as an attachment named
        after the backup.
        """
        with open(os.path.join(self.directory, BACKUP + ".tar.gz"), "wb") as f:
            f.write(b"archive-bytes")
        response = self.fetch(BACKUP)
        self.assertEqual((response.status, response.body), (200, b"archive-bytes"))
        self.assertEqual(response.header("Content-Disposition"),
                         'attachment; filename="{}.tar.gz"'.format(BACKUP))
        self.assertEqual(self.fetch(BACKUP, {"Range": "bytes=-5"}).body, b"bytes")

    def test_pelican_layout(self) -> None:
        """
        The per-server layout is the fallback.
        """
        os.makedirs(os.path.join(self.directory, SERVER))
        with open(os.path.join(self.directory, SERVER, BACKUP + ".tar.gz"), "wb") as f:
            f.write(b"pelican")
        self.assertEqual(self.fetch(BACKUP).body, b"pelican")

    def test_missing_invalid_directory(self) -> None:
        """
        Missing, non-canonical UUID, or a directory → 404 with the backup text.
        """
        os.makedirs(os.path.join(self.directory, "5b1d7c3e-8a2f-4c6d-9e0b-1a2b3c4d5e6f.tar.gz"))
        for backup in (BACKUP, "../../etc/passwd", BACKUP.upper(),
                       "5b1d7c3e-8a2f-4c6d-9e0b-1a2b3c4d5e6f"):
            response = self.fetch(backup)
            self.assertEqual(response.status, 404, backup)
            self.assertEqual(response.json()["error"], "The requested backup was not found on this server.")
