"""
The Panel's file manager against a real ``twistd -n wings`` over real HTTP,
with the request shapes of the Panel's ``DaemonFileRepository``: list, read
(with the exact ``Content-Length`` the editor checks), save, create a
folder, move, copy, chmod, delete; the fork's extras; and the symlink
advisories over the wire.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any

from ..support import SERVER, TOKEN
from .test_daemon import DaemonTestCase

AUTH = {"Authorization": "Bearer " + TOKEN, "Accept": "application/json",
        "Content-Type": "application/json"}
FILES = "/api/servers/{}/files/".format(SERVER)


class FileManagerTests(DaemonTestCase):
    """
    One server, driven the way the Panel drives it.
    """

    async def files(self, method: str, route: str, body: Any = None,
                    raw: bytes | None = None) -> tuple[int, bytes, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        response, content = await self.call(method, FILES + route, headers=AUTH, data=data)
        return response.code, content, response

    async def test_panel_flow(self) -> None:
        """
        Save a new file, read it back, list it, create a folder, move the file
        into it (with the Move dialog's clamped ``..``), copy it, chmod it,
        delete the copy.
        """
        await self.start(SERVER)
        code, _, _ = await self.files("POST", "write?file=%2Fserver.properties",
                                      raw=b"motd=A Minecraft Server\n")
        self.assertEqual(code, 204)
        code, body, response = await self.files("GET", "contents?file=%2Fserver.properties")
        self.assertEqual((code, body), (200, b"motd=A Minecraft Server\n"))
        self.assertEqual(response.length, 24)  # Agent keeps Content-Length here
        self.assertEqual(response.headers.getRawHeaders(b"X-Mime-Type"),
                         [b"text/plain; charset=utf-8"])
        code, body, _ = await self.files("GET", "list-directory?directory=%2F")
        listing = json.loads(body)
        self.assertEqual([(e["name"], e["mode_bits"], e["file"]) for e in listing],
                         [("server.properties", "644", True)])
        self.assertEqual(await self.files("POST", "create-directory",
                                          {"name": "config", "path": "/"}), (204, b"", _ANY))
        code, _, _ = await self.files("PUT", "rename", {"root": "/", "files": [
            {"from": "server.properties", "to": "../config/server.properties"}]})
        self.assertEqual(code, 204)
        moved = os.path.join(self.volume, "config", "server.properties")
        self.assertTrue(os.path.isfile(moved))
        code, _, _ = await self.files("POST", "copy", {"location": "/config/server.properties"})
        self.assertEqual(code, 204)
        code, _, _ = await self.files("POST", "chmod", {"root": "/config", "files": [
            {"file": "server.properties", "mode": "600"}]})
        self.assertEqual(code, 204)
        self.assertEqual(stat.S_IMODE(os.stat(moved).st_mode), 0o600)
        code, _, _ = await self.files("POST", "delete", {"root": "/config",
                                                         "files": ["server copy.properties"]})
        self.assertEqual(code, 204)
        self.assertEqual(os.listdir(os.path.join(self.volume, "config")), ["server.properties"])

    async def test_errors_over_the_wire(self) -> None:
        """
        The envelopes the Panel shows: 404 for a missing file, 400 for a
        directory, 403 for the egg denylist, 422 for empty lists, with the
        request id.
        """
        await self.start(SERVER)
        os.makedirs(os.path.join(self.volume, "dir"))
        for method, route, body, status in (
                ("GET", "contents?file=nope", None, 404),
                ("GET", "contents?file=dir", None, 400),
                ("POST", "write?file=key.secret", None, 403),
                ("POST", "delete", {"root": "/", "files": []}, 422),
                ("PUT", "rename", {"root": "/", "files": []}, 422)):
            code, content, response = await self.files(method, route, body,
                                                        raw=b"x" if body is None and
                                                        method == "POST" else None)
            self.assertEqual(code, status, content)
            envelope = json.loads(content)
            self.assertEqual(envelope["request_id"],
                             response.headers.getRawHeaders(b"X-Request-Id")[0].decode())

    async def test_symlink_advisories(self) -> None:
        """
        Read, write, create and delete through symlinks that lead out of the
        volume are refused and leave the host untouched.
        """
        await self.start(SERVER)
        outside = os.path.join(self.base, "host-secret")
        with open(outside, "wb") as f:
            f.write(b"host")
        os.symlink(outside, os.path.join(self.volume, "link"))
        os.symlink(self.base, os.path.join(self.volume, "up"))
        for method, route, body, raw in (
                ("GET", "contents?file=link", None, None),
                ("GET", "contents?file=up%2Fhost-secret", None, None),
                ("POST", "write?file=link", None, b"pwned"),
                ("POST", "write?file=up%2Fnew", None, b"pwned"),
                ("POST", "create-directory", {"name": "x", "path": "/up"}, None),
                ("POST", "delete", {"root": "/up", "files": ["host-secret"]}, None),
                ("POST", "copy", {"location": "up/host-secret"}, None)):
            code, content, _ = await self.files(method, route, body, raw)
            self.assertEqual(code, 404, (route, content))
        with open(outside, "rb") as f:
            self.assertEqual(f.read(), b"host")
        self.assertFalse(os.path.exists(os.path.join(self.base, "new")))
        self.assertFalse(os.path.exists(os.path.join(self.base, "x")))

    async def test_fork_extras(self) -> None:
        """
        Search, stat, touch, disk usage, the line routes and a chunked upload
        through the real daemon.
        """
        await self.start(SERVER)
        code, _, _ = await self.files("POST", "touch", {"file": "/logs/latest.log"})
        self.assertEqual(code, 204)
        code, _, _ = await self.files("POST", "insert-lines", {
            "file": "/logs/latest.log", "line_number": 1, "lines": ["first", "second"]})
        self.assertEqual(code, 204)
        code, body, _ = await self.files("GET", "lines?file=%2Flogs%2Flatest.log&start=2&end=2")
        self.assertEqual(json.loads(body)["lines"], [{"number": 2, "content": "second"}])
        code, body, _ = await self.files("GET", "search?pattern=latest")
        self.assertEqual([e["name"] for e in json.loads(body)], ["logs/latest.log"])
        code, body, _ = await self.files("GET", "stat?file=logs")
        self.assertEqual(json.loads(body)["mime"], "inode/directory")
        code, body, _ = await self.files("GET", "disk-usage")
        # The quota charges each entry at least 4 KiB: the logs directory and its file.
        self.assertEqual(json.loads(body)["current_bytes"], 8192)
        code, body, _ = await self.files("POST", "upload/init", {
            "path": "/mods/a.bin", "file_size": 5, "chunk_size": 5})
        upload_id = json.loads(body)["upload_id"]
        response, content = await self.call(
            "POST", FILES + "upload/chunk", data=b"hello",
            headers=dict(AUTH, **{"X-Upload-Id": upload_id, "X-Chunk-Index": "0",
                                  "X-Total-Chunks": "1",
                                  "Content-Type": "application/octet-stream"}))
        self.assertEqual(response.code, 200, content)
        code, body, _ = await self.files("POST", "upload/finalize", {"upload_id": upload_id})
        self.assertEqual(json.loads(body)["file_path"], "/mods/a.bin")
        with open(os.path.join(self.volume, "mods", "a.bin"), "rb") as f:
            self.assertEqual(f.read(), b"hello")


class _Anything:
    def __eq__(self, other: object) -> bool:
        return True


_ANY = _Anything()
