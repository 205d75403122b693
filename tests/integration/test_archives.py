"""
Archives through a real ``twistd -n wings`` with a real HTTP client (treq): the Panel's exact
bodies for ``files/compress`` (``{"root", "files"}``) and ``files/decompress`` (``{"root",
"file"}``), archives read and made by the real ``tar``, ``gzip`` and ``pigz``, a hostile archive
generated here, async tasks, and the API answering ``GET /api/system`` while a 1 GiB archive is
made and extracted.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest

from ..support import SERVER, TOKEN, hostile_tar_gz
from .test_daemon import DaemonTestCase

AUTH = {"Authorization": "Bearer " + TOKEN}
FILES = "/api/servers/{}/files/".format(SERVER)
MIB = 1024 * 1024


class ArchiveRouteTests(DaemonTestCase):
    """
    compress and decompress as the Panel calls them.
    """

    timeout = 300

    async def post(self, route: str, body: Any) -> tuple[Any, bytes]:
        return await self.call("POST", FILES + route, headers=AUTH,
                               data=json.dumps(body).encode())

    async def test_compress_is_read_by_real_tools(self) -> None:
        """
        The archive of ``{"root": "/", "files": [...]}`` is a tar.gz that ``gzip -t``, ``pigz -t``
        and ``tar`` read, with directory and symlink members and no denylisted file.
        """
        await self.start(SERVER)
        os.makedirs(os.path.join(self.volume, "world/region"))
        with open(os.path.join(self.volume, "world/region/r.0.0.mca"), "wb") as f:
            f.write(os.urandom(3 * MIB))
        with open(os.path.join(self.volume, "server.properties"), "w") as f:
            f.write("motd=A Minecraft Server\n")
        with open(os.path.join(self.volume, "world/db.secret"), "w") as f:
            f.write("denied")
        os.symlink("region", os.path.join(self.volume, "world/link"))
        response, body = await self.post("compress", {"root": "/",
                                                      "files": ["world", "server.properties"]})
        self.assertEqual(response.code, 200, body)
        stat = json.loads(body)
        self.assertEqual(stat["mime"], "application/tar+gzip")
        path = os.path.join(self.volume, stat["name"])
        self.assertEqual(os.path.getsize(path), stat["size"])
        tools = [["gzip", "-t", path]]
        if shutil.which("pigz"):
            tools.append(["pigz", "-t", path])
        for command in tools:
            self.assertEqual(subprocess.run(command, capture_output=True).returncode, 0, command)
        listing = subprocess.run(["tar", "tvzf", path], capture_output=True, text=True,
                                 check=True).stdout.splitlines()
        names = sorted(line.split()[5] for line in listing)
        self.assertEqual(names, ["server.properties", "world/", "world/link", "world/region/",
                                 "world/region/r.0.0.mca"])
        self.assertTrue(any(line.startswith("l") and "world/link -> region" in line
                            for line in listing))
        target = os.path.join(self.base, "untar")
        os.makedirs(target)
        subprocess.run(["tar", "xzf", path, "-C", target], check=True)
        with open(os.path.join(target, "world/region/r.0.0.mca"), "rb") as a, \
                open(os.path.join(self.volume, "world/region/r.0.0.mca"), "rb") as b:
            self.assertEqual(a.read(), b.read())

    async def test_decompress_real_and_hostile_archives(self) -> None:
        """
        A tar.gz made by the real ``tar`` extracts to the same files; a hostile one made here
        (escaping names, links, a device) is clamped and skipped, leaving the outside alone.
        """
        await self.start(SERVER)
        source = os.path.join(self.base, "src")
        os.makedirs(os.path.join(source, "plugins/conf"))
        for i in range(50):
            with open(os.path.join(source, "plugins/conf/c%d.yml" % i), "w") as f:
                f.write("value: %d\n" % i * 100)
        os.makedirs(os.path.join(self.volume, "up"))
        subprocess.run(["tar", "czf", os.path.join(self.volume, "up/plugins.tar.gz"), "-C",
                        source, "plugins"], check=True)
        response, body = await self.post("decompress", {"root": "/up", "file": "plugins.tar.gz"})
        self.assertEqual(response.code, 204, body)
        for i in range(50):
            with open(os.path.join(self.volume, "up/plugins/conf/c%d.yml" % i)) as f:
                self.assertEqual(f.read(), "value: %d\n" % i * 100)

        outside = os.path.join(self.base, "outside")
        os.makedirs(outside)
        os.symlink(outside, os.path.join(self.volume, "out"))
        with open(os.path.join(self.volume, "up/hostile.tgz"), "wb") as f:
            f.write(hostile_tar_gz())
        response, body = await self.post("decompress", {"root": "/up", "file": "hostile.tgz"})
        self.assertEqual(response.code, 204, body)
        self.assertTrue(os.path.isfile(os.path.join(self.volume, "escape.txt")))
        self.assertTrue(os.path.isfile(os.path.join(self.volume, "up/abs.txt")))
        for name in ("up/evil", "up/hard", "up/tty"):
            self.assertFalse(os.path.lexists(os.path.join(self.volume, name)))
        self.assertEqual(os.listdir(outside), [])

        with open(os.path.join(self.volume, "up/through.tgz"), "wb") as f:
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
                info = tarfile.TarInfo("../out/evil.txt")
                info.size = 4
                archive.addfile(info, io.BytesIO(b"evil"))
            f.write(buffer.getvalue())
        response, body = await self.post("decompress", {"root": "/up", "file": "through.tgz"})
        self.assertEqual(response.code, 404, body)
        self.assertEqual(os.listdir(outside), [])

    async def test_async_task(self) -> None:
        """
        ``foreground: false`` answers 202 and the task completes; ``archive-tasks`` lists it.
        """
        await self.start(SERVER)
        with open(os.path.join(self.volume, "a.txt"), "w") as f:
            f.write("a" * 10000)
        response, body = await self.post("compress", {"root": "/", "files": ["a.txt"],
                                                      "foreground": False})
        self.assertEqual(response.code, 202, body)
        identifier = json.loads(body)["identifier"]
        for _ in range(200):
            response, body = await self.call("GET", FILES + "archive-status/" + identifier,
                                             headers=AUTH)
            task = json.loads(body)
            if task["status"] in ("completed", "failed"):
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(task["status"], "completed", task)
        self.assertTrue(os.path.isfile(os.path.join(self.volume, task["result_file"])))
        response, body = await self.call("GET", FILES + "archive-tasks", headers=AUTH)
        self.assertEqual([t["identifier"] for t in json.loads(body)], [identifier])


class ResponsivenessTests(DaemonTestCase):
    """
    The API keeps answering while a 1 GiB archive is made and extracted.
    """

    timeout = 900

    async def _system_while(self, work: Deferred[Any]) -> list[float]:
        """
        ``GET /api/system`` in a loop until ``work`` fires; the latencies of the answers that
        came back while it had not.
        """
        latencies: list[float] = []
        done: list[bool] = []

        def finished(result: Any) -> Any:
            done.append(True)
            return result

        work.addBoth(finished)
        while not done:
            started = time.monotonic()
            response, body = await self.call("GET", "/api/system", headers=AUTH)
            if done:
                break
            self.assertEqual(response.code, 200)
            self.assertIn(b"version", body)
            latencies.append(time.monotonic() - started)
            await deferLater(reactor, 0.1, lambda: None)
        return latencies

    async def test_api_answers_during_one_gib(self) -> None:
        """
        While a 1 GiB compress and then its decompress run, ``GET /api/system`` keeps answering
        within two seconds (a blocked reactor would stall for the whole job).
        """
        if shutil.disk_usage(os.path.dirname(os.path.abspath(__file__))).free < 4 << 30:
            raise SkipTest("needs 4 GiB of free disk")
        # Cleanups run last-registered first: this one runs after the scratch directory is
        # removed, so that the next tests do not start under 3 GiB of writeback and discards.
        self.addCleanup(os.sync)
        await self.start(SERVER)
        os.makedirs(os.path.join(self.volume, "data"))
        with open(os.path.join(self.volume, "data/random.bin"), "wb") as f:
            for _ in range(512):
                f.write(os.urandom(MIB))
        text = b"".join(b"key.%d = value %d\n" % (i, i * 7) for i in range(40000))
        for i in range(512 * MIB // len(text) + 1):
            with open(os.path.join(self.volume, "data/t%03d.properties" % i), "wb") as f:
                f.write(text)
        compress = ensureDeferred(self.call("POST", FILES + "compress", headers=AUTH,
                                            data=json.dumps({"root": "/", "files": ["data"]}).encode()))
        latencies = await self._system_while(compress)
        response, body = await compress
        self.assertEqual(response.code, 200, body)
        self.assertGreaterEqual(len(latencies), 3, "the archive was made too fast to tell")
        self.assertLess(max(latencies), 2.0, latencies)
        name = json.loads(body)["name"]
        decompress = ensureDeferred(self.call(
            "POST", FILES + "decompress", headers=AUTH,
            data=json.dumps({"root": "/copy", "file": "../" + name}).encode()))
        latencies = await self._system_while(decompress)
        response, body = await decompress
        self.assertEqual(response.code, 204, body)
        self.assertGreaterEqual(len(latencies), 3, "the archive was extracted too fast to tell")
        self.assertLess(max(latencies), 2.0, latencies)
        self.assertEqual(os.path.getsize(os.path.join(self.volume, "copy/data/random.bin")),
                         512 * MIB)
