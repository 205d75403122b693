"""
Tests for ``POST /upload/file`` (downloads-uploads.md §6–§7) against the real
site in memory: the body is fed to the streaming parser as it arrives.
"""

from __future__ import annotations

import os

from twisted.internet.address import IPv4Address
from twisted.python.filepath import FilePath
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.web.formdata import (
    base_name,
    clean_directory,
    parse_disposition,
    valid_name,
)

from ..support import SERVER, USER, Harness, _Collector, mint

BOUNDARY = "----formboundaryXyZ"


def part(name: str, filename: str | None, data: bytes, *, disposition: str | None = None) -> bytes:
    """
    One multipart part.
    """
    if disposition is None:
        disposition = 'form-data; name="{}"'.format(name)
        if filename is not None:
            disposition += '; filename="{}"'.format(filename)
    head = "--{}\r\nContent-Disposition: {}\r\nContent-Type: application/octet-stream\r\n\r\n".format(
        BOUNDARY, disposition)
    return head.encode("utf-8") + data + b"\r\n"


def body(*parts: bytes, close: bool = True) -> bytes:
    """
    A multipart body from ``parts``.
    """
    return b"".join(parts) + (("--" + BOUNDARY + "--\r\n").encode() if close else b"")


def raw_upload(token: str, payload: bytes, *, directory: str | None = None,
               content_type: str | None = None, length: int | None = None) -> bytes:
    """
    The raw HTTP request of a browser upload.
    """
    query = "token=" + token + ("" if directory is None else "&directory=" + directory)
    ctype = content_type or "multipart/form-data; boundary=" + BOUNDARY
    head = ("POST /upload/file?{} HTTP/1.1\r\nHost: d\r\nConnection: close\r\nOrigin: http://panel.test\r\n"
            "Content-Type: {}\r\nContent-Length: {}\r\n\r\n").format(
        query, ctype, len(payload) if length is None else length)
    return head.encode() + payload


class UploadTests(SynchronousTestCase):
    """
    ``POST /upload/file``.
    """

    def setUp(self) -> None:
        self.h = Harness(FilePath(self.mktemp()), SERVER, api={"upload_limit": 1})
        self.server = self.h.add_server(SERVER)
        self.root = self.server.volume.root

    def token(self, **claims) -> str:
        claims.setdefault("server_uuid", SERVER)
        return mint(self.h.clock, **claims)

    def upload(self, payload: bytes, *, chunks: int = 0, **kwargs):
        return self.h.request(raw_upload(self.token(), payload, **kwargs), chunks=chunks)

    def tree(self) -> list[str]:
        """
        Every path in the volume.
        """
        found = []
        for top, dirs, files in os.walk(self.root):
            for name in dirs + files:
                found.append(os.path.relpath(os.path.join(top, name), self.root))
        return sorted(found)

    def test_one_file(self) -> None:
        """
        200 with an empty body; the file is in place with mode 0644 and the
        upload is recorded as activity.
        """
        response = self.upload(body(part("files", "hello.txt", b"hello world")))
        self.assertEqual((response.status, response.body), (200, b""))
        self.assertIsNone(response.header("Content-Type"))
        self.assertEqual(response.header("Access-Control-Allow-Origin"), "http://panel.test")
        path = os.path.join(self.root, "hello.txt")
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"hello world")
        self.assertEqual(os.stat(path).st_mode & 0o7777, 0o644)
        self.assertEqual(self.tree(), ["hello.txt"])
        records = self.h.node.activity.pending()
        self.assertEqual(len(records), 1)
        self.assertEqual(records[0]["event"], "server:file.uploaded")
        self.assertEqual(records[0]["user"], USER)
        self.assertEqual(records[0]["metadata"], {"file": "hello.txt", "directory": "."})
        self.assertEqual(records[0]["ip"], "127.0.0.1")

    def test_streamed_in_small_pieces(self) -> None:
        """
        A body delivered a few bytes at a time (boundaries split across
        chunks) gives the same files.
        """
        data = os.urandom(5000)
        response = self.upload(body(part("files", "a.bin", data), part("files", "b.bin", data[::-1])),
                               chunks=7)
        self.assertEqual(response.status, 200)
        with open(os.path.join(self.root, "a.bin"), "rb") as f:
            self.assertEqual(f.read(), data)
        with open(os.path.join(self.root, "b.bin"), "rb") as f:
            self.assertEqual(f.read(), data[::-1])

    def test_directory_parameter(self) -> None:
        """
        ``directory`` is form-decoded (``+`` is a space) and created, 0755.
        """
        response = self.upload(body(part("files", "x.txt", b"x")), directory="my+maps/%C3%A9t%C3%A9")
        self.assertEqual(response.status, 200)
        self.assertTrue(os.path.isfile(os.path.join(self.root, "my maps", "été", "x.txt")))
        self.assertEqual(os.stat(os.path.join(self.root, "my maps")).st_mode & 0o777, 0o755)
        self.assertEqual(self.h.node.activity.pending()[0]["metadata"]["directory"], "my maps/été")

    def test_replacing_keeps_mode(self) -> None:
        """
        Replacing a 0600 file keeps 0600 and the new content.
        """
        path = os.path.join(self.root, "secret.cfg")
        with open(path, "wb") as f:
            f.write(b"old")
        os.chmod(path, 0o600)
        self.assertEqual(self.upload(body(part("files", "secret.cfg", b"new"))).status, 200)
        self.assertEqual(os.stat(path).st_mode & 0o7777, 0o600)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"new")

    def test_too_large(self) -> None:
        """
        A part over ``api.upload_limit`` MiB writes nothing, leaves an existing
        file intact and answers upstream's message.
        """
        path = os.path.join(self.root, "big.bin")
        with open(path, "wb") as f:
            f.write(b"original")
        response = self.upload(body(part("files", "big.bin", b"x" * (1024 * 1024 + 1))), chunks=65536)
        self.assertEqual(response.status, 400)
        self.assertEqual(response.json()["error"],
                         "File big.bin is larger than the maximum file upload size of 1 MB.")
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"original")
        self.assertEqual(self.tree(), ["big.bin"])

    def test_exactly_the_limit(self) -> None:
        """
        A part of exactly the limit is accepted.
        """
        response = self.upload(body(part("files", "edge.bin", b"y" * (1024 * 1024))), chunks=65536)
        self.assertEqual(response.status, 200)

    def test_second_part_fails_first_stays(self) -> None:
        """
        In a multi-file request, files completed before a failing part stay;
        the failing one leaves no trace, not even its directory.
        """
        response = self.upload(body(part("files", "first.txt", b"1"),
                                     part("files", "second.bin", b"x" * (1024 * 1024 + 10))),
                               directory="new/dir", chunks=65536)
        self.assertEqual(response.status, 400)
        self.assertEqual(self.tree(), ["new", "new/dir", "new/dir/first.txt"])

    def test_file_count_capped(self) -> None:
        """
        More file parts than ``api.upload_max_files`` in one request: 400,
        the parts before the cap stay, none after it is written.
        """
        h = Harness(FilePath(self.mktemp()), SERVER, api={"upload_max_files": 2})
        h.add_server(SERVER)
        payload = body(*[part("files", "f%d.txt" % i, b"x") for i in range(5)])
        response = h.request(raw_upload(mint(h.clock, server_uuid=SERVER), payload))
        self.assertEqual(response.status, 400)
        self.assertIn("at most 2", response.json()["error"])
        root = h.node.registry.get(SERVER).volume.root
        self.assertEqual(sorted(os.listdir(root)), ["f0.txt", "f1.txt"])

    def test_failed_part_removes_created_directories(self) -> None:
        """
        A failing single-file upload into new directories leaves the volume
        exactly as before.
        """
        response = self.upload(body(part("files", "big", b"x" * (1024 * 1024 + 10))),
                               directory="a/b/c", chunks=65536)
        self.assertEqual(response.status, 400)
        self.assertEqual(self.tree(), [])

    def test_quota(self) -> None:
        """
        An upload that does not fit the disk limit is refused, nothing kept.
        """
        self.server.volume.set_disk_limit(100)
        response = self.upload(body(part("files", "q.bin", b"z" * 200)))
        self.assertEqual(response.status, 400)
        self.assertEqual(response.json()["error"],
                         "There is not enough disk space available to perform that action.")
        self.assertEqual(self.tree(), [])

    def test_file_names(self) -> None:
        """
        Names are reduced to their base name; empty, ``.`` and ``..`` are
        refused; ``filename*`` wins; backslashes are ordinary characters.
        """
        self.assertEqual(self.upload(body(part("files", "../../etc/evil.txt", b"e"))).status, 200)
        self.assertEqual(self.tree(), ["evil.txt"])
        for bad in ("", ".", "..", "dir/..", "x" * 256):
            response = self.upload(body(part("files", bad, b"n")))
            self.assertEqual(response.status, 400, bad)
            self.assertEqual(response.json()["error"], "Invalid file name.", bad)
        extended = "form-data; name=\"files\"; filename=\"fallback.txt\"; filename*=UTF-8''caf%C3%A9.txt"
        self.assertEqual(self.upload(body(part("files", None, b"c", disposition=extended))).status, 200)
        self.assertIn("café.txt", self.tree())
        self.assertEqual(self.upload(body(part("files", "a\\\\b.txt", b"w"))).status, 200)
        self.assertIn("a\\b.txt", self.tree())

    def test_raw_utf8_filename(self) -> None:
        """
        Raw UTF-8 bytes in a quoted filename (what browsers send) are kept.
        """
        response = self.upload(body(part("files", "été.txt", b"u")))
        self.assertEqual(response.status, 200)
        self.assertIn("été.txt", self.tree())

    def test_other_parts_ignored(self) -> None:
        """
        Parts not named ``files``, and ``files`` parts without a filename,
        are not files; with nothing else the answer is "no files".
        """
        response = self.upload(body(part("file", "x.txt", b"1"), part("files", None, b"text")))
        self.assertEqual(response.status, 400)
        self.assertEqual(response.json()["error"], "No files were found on the request body.")
        self.assertEqual(self.tree(), [])

    def test_not_multipart(self) -> None:
        """
        Another content type, a missing boundary or a truncated body is the
        form-data 400, and a truncated part leaves nothing behind.
        """
        message = "Failed to get multipart form data from request."
        for ctype in ("application/json", "multipart/form-data"):
            response = self.upload(b"{}", content_type=ctype)
            self.assertEqual((response.status, response.json()["error"]), (400, message), ctype)
        truncated = self.upload(body(part("files", "t.txt", b"data"), close=False)[:-10])
        self.assertEqual((truncated.status, truncated.json()["error"]), (400, message))
        self.assertEqual(self.tree(), [])

    def test_destination_problems(self) -> None:
        """
        A directory at the destination, a file in the way of the directory,
        and a denylisted name are refused with their messages.
        """
        os.mkdir(os.path.join(self.root, "taken"))
        with open(os.path.join(self.root, "plain"), "wb") as f:
            f.write(b"p")
        self.server.volume.set_denylist(["*.jar"])
        cases = [
            ({}, "taken", 400, "Cannot perform that action: file is a directory."),
            ({"directory": "plain/sub"}, "x", 400,
             "Cannot perform that action: a path component is not a directory."),
            ({}, "server.jar", 403, "This file cannot be modified: present in egg denylist."),
        ]
        for kwargs, name, status, message in cases:
            response = self.upload(body(part("files", name, b"d")), **kwargs)
            self.assertEqual((response.status, response.json()["error"]), (status, message), name)
        self.assertEqual(self.tree(), ["plain", "taken"])

    def test_token_checks(self) -> None:
        """
        Bad token 403, reused token 404 (no Range exception for uploads),
        unknown server 404.
        """
        payload = body(part("files", "t.txt", b"t"))
        bad = self.h.request(raw_upload("nope", payload))
        self.assertEqual((bad.status, bad.json()["error"]),
                         (403, "The provided token is invalid or has expired."))
        self.assertEqual(bad.header("Access-Control-Allow-Origin"), "http://panel.test")
        token = self.token()
        self.assertEqual(self.h.request(raw_upload(token, payload)).status, 200)
        self.assertEqual(self.h.request(raw_upload(token, payload)).status, 404)
        other = mint(self.h.clock, server_uuid="0c5b4ae6-5a43-4b77-8f0d-6f3e1cd5d0a7")
        self.assertEqual(self.h.request(raw_upload(other, payload)).status, 404)

    def test_other_token_kinds_refused(self) -> None:
        """
        A websocket token or a download token of the same server (a subuser
        who may only open the console, or read one file) is 403 on the upload
        route and writes nothing, even without a ``scope`` claim.
        """
        payload = body(part("files", "evil.txt", b"x"))
        for claims in ({"permissions": ["control.console"]}, {"file_path": "/one.txt"},
                       {"backup_uuid": "5e2f1b0a-9c8d-4e7f-a6b5-c4d3e2f1a0b9"}):
            response = self.h.request(raw_upload(self.token(**claims), payload))
            self.assertEqual((response.status, response.json()["error"]),
                             (403, "The provided token is invalid or has expired."), claims)
        self.assertEqual(self.tree(), [])

    def test_upload_id_cannot_be_resumed_by_a_download(self) -> None:
        """
        A ``unique_id`` first used by an upload is burnt for downloads too,
        Range continuation included (the store is shared, §2.3).
        """
        payload = body(part("files", "u.txt", b"u"))
        self.assertEqual(self.h.request(raw_upload(self.token(unique_id="shared-id"), payload)).status, 200)
        download = mint(self.h.clock, server_uuid=SERVER, file_path="/u.txt", unique_id="shared-id")
        response = self.h.get("/download/file?token=" + download, {"Authorization": None, "Range": "bytes=0-"})
        self.assertEqual(response.status, 404)

    def test_write_guard(self) -> None:
        """
        While restoring or receiving a transfer, uploads are 409 and write
        nothing.
        """
        self.server.occupancy.begin_restore()
        response = self.upload(body(part("files", "g.txt", b"g")))
        self.assertEqual((response.status, response.json()["error"]),
                         (409, "Files cannot be changed while a backup is being restored to this server."))
        self.server.occupancy.finished()
        self.server.occupancy.begin_receive()
        response = self.upload(body(part("files", "g.txt", b"g")))
        self.assertEqual(response.status, 409)
        self.assertEqual(self.tree(), [])

    def test_disconnect_mid_upload(self) -> None:
        """
        A client that goes away mid-part leaves the volume exactly as before:
        no temporary file, no created directory, an existing file intact.
        """
        path = os.path.join(self.root, "keep.txt")
        with open(path, "wb") as f:
            f.write(b"before")
        payload = body(part("files", "keep.txt", b"x" * 50000))
        raw = raw_upload(self.token(), payload, directory="")[:-20000]
        raw2 = raw_upload(self.token(), payload, directory="deep/er")[:-20000]
        for request in (raw, raw2):
            server = self.h.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
            client = _Collector()
            pump = iosim.connect(server, iosim.FakeTransport(server, True), client,
                                 iosim.FakeTransport(client, False), greet=False)
            client.transport.write(request)
            pump.flush()
            client.transport.loseConnection()
            pump.flush()
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"before")
        self.assertEqual(self.tree(), ["keep.txt"])

    def test_internal_error_is_an_envelope(self) -> None:
        """
        A failure inside the header-time checks is a logged 500 envelope with
        CORS headers, not a dropped connection.
        """
        def broken(uuid):
            raise RuntimeError("registry exploded")
        self.h.node.registry.get = broken
        response = self.upload(body(part("files", "x.txt", b"x")))
        self.assertEqual(response.status, 500)
        self.assertEqual(response.json()["error"],
                         "An unexpected error was encountered while processing this request")
        self.assertEqual(response.header("Access-Control-Allow-Origin"), "http://panel.test")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.tree(), [])

    def test_preflight(self) -> None:
        """
        ``OPTIONS /upload/file`` needs no token.
        """
        response = self.h.request(b"OPTIONS /upload/file HTTP/1.1\r\nHost: d\r\n"
                                  b"Origin: http://panel.test\r\nConnection: close\r\n\r\n")
        self.assertEqual(response.status, 204)
        self.assertEqual(response.header("Access-Control-Allow-Origin"), "http://panel.test")


class DiscardLimitTests(SynchronousTestCase):
    """
    A refused upload does not make the node drain an endless body.
    """

    def test_answers_early_past_the_limit(self) -> None:
        """
        After 64 MiB of body following a failure, the error is sent at once
        and the connection closed.
        """
        from wings_twisted.web import uploads
        self.patch(uploads, "DISCARD_LIMIT", 1000)
        h = Harness(FilePath(self.mktemp()), SERVER)
        h.add_server(SERVER)
        raw = raw_upload("bad-token", b"x" * 5000, length=10_000_000)
        response = h.request(raw)
        self.assertEqual(response.status, 403)
        self.assertEqual(response.header("Connection"), "close")
        self.assertEqual(response.json()["error"], "The provided token is invalid or has expired.")


class HelperTests(SynchronousTestCase):
    """
    The pure form helpers of uploads (``web.formdata``).
    """

    def test_parse_disposition(self) -> None:
        """
        Quoted values lose escapes but keep percent sequences.
        """
        self.assertEqual(parse_disposition('form-data; name="files"; filename="a\\"b%22.txt"'),
                         {"name": "files", "filename": 'a"b%22.txt'})
        self.assertEqual(parse_disposition("form-data; name=files; filename=plain.txt"),
                         {"name": "files", "filename": "plain.txt"})

    def test_names(self) -> None:
        """
        §6.2 steps 2–3.
        """
        self.assertEqual(base_name("a/b/c.txt"), "c.txt")
        self.assertEqual(base_name("dir/"), "dir")
        self.assertFalse(valid_name(".."))
        self.assertFalse(valid_name("a\x00b"))
        self.assertTrue(valid_name("é" * 127))
        self.assertFalse(valid_name("é" * 128))

    def test_clean_directory(self) -> None:
        """
        Go's path.Clean semantics for the activity metadata.
        """
        for raw, cleaned in [("", "."), ("/", "/"), ("//a//b/", "/a/b"), ("a/./b/..", "a"),
                             ("/../x", "/x"), ("../x", "../x")]:
            self.assertEqual(clean_directory(raw), cleaned, raw)
