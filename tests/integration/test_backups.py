"""
Backups through a real ``twistd -n wings``, the development panel as the Panel, the real ``tar``
and ``curl``, and a real S3 store (SeaweedFS, which checks SigV4 signatures, URL expiry and the
5 MiB minimum part size): local and S3 backups of a tree with ignore rules, the report bodies, a
ranged and resumed download, restores with and without truncation, deletions, an S3 part answered
503 once, and an expired presigned URL.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from typing import Any

import yaml
from twisted.internet import reactor
from twisted.web.server import Site

from wings_twisted.devpanel.objectstore import ObjectStore, ObjectStoreSettings

from ..support import REPO, SERVER, TOKEN
from ..unit.backup_support import fill
from .s3store import S3Proxy, start_s3
from .test_daemon import DaemonTestCase

AUTH = {"Authorization": "Bearer " + TOKEN}
BACKUP = "0c5b4ae6-5a43-4b77-8f0d-6f3e1cd5d0a7"
SECOND = "9b2cf535-f277-41c9-a434-3645a3985328"
MIB = 1024 * 1024
PART = 5 * MIB

#: The tree every test backs up (random data: incompressible, so S3 archives have 3 parts).
TREE = {
    "server.properties": b"motd=A Minecraft Server\n",
    "world/level.dat": b"level" * 1000,
    "world/region/r.0.0.mca": os.urandom(6 * MIB),
    "world/region/r.0.1.mca": os.urandom(5 * MIB),
    "logs/latest.log": b"a log line\n" * 100,
    "cache/x/y.bin": os.urandom(1000),
    "keep.log": b"kept",
    "plugins/a.jar": os.urandom(2000),
}
IGNORE = "*.log\n!keep.log\ncache/**"
KEPT = sorted(n for n in TREE if n not in ("logs/latest.log", "cache/x/y.bin"))


def read_tree(root: str) -> dict[str, bytes]:
    found = {}
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = f.read()
    return found


class _BackupCase(DaemonTestCase):
    """
    A daemon whose restores may reach loopback (the store runs there).
    """

    # A backup or restore of the test tree, S3 included, within a loaded machine's time.
    wait_timeout = 90.0

    timeout = 240
    backups_config: dict[str, Any] = {}

    def write_config(self, **api: Any) -> str:
        path = super().write_config(**api)
        with open(path) as f:
            config = yaml.safe_load(f)
        config["system"]["backups"] = dict({"restore_host_allowlist": ["127.0.0.1"]},
                                           **self.backups_config)
        with open(path, "w") as f:
            yaml.safe_dump(config, f)
        return path

    async def post(self, path: str, body: Any) -> tuple[Any, bytes]:
        return await self.call("POST", "/api/servers/{}/{}".format(SERVER, path), headers=AUTH,
                               data=json.dumps(body).encode())


    async def backup(self, adapter: str, uuid: str = BACKUP, ignore: str = IGNORE) -> dict[str, Any]:
        """
        Start a backup, wait for its report, return it.
        """
        self.state.add_backup(uuid, server=SERVER)
        before = len(self.state.backup_reports)
        response, body = await self.post("backup", {"adapter": adapter, "uuid": uuid,
                                                    "ignore": ignore})
        self.assertEqual(response.code, 202, body)
        await self.wait_for(lambda: len(self.state.backup_reports) > before)
        report: dict[str, Any] = self.state.backup_reports[-1]
        return report

    async def restore(self, adapter: str, truncate: bool, url: str = "",
                      uuid: str = BACKUP) -> tuple[Any, bytes]:
        before = len(self.state.restore_reports)
        response, body = await self.post("backup/{}/restore".format(uuid), {
            "adapter": adapter, "truncate_directory": truncate, "download_url": url})
        if response.code == 202:
            await self.wait_for(lambda: len(self.state.restore_reports) > before)
        return response, body

    def raw_report(self, uuid: str = BACKUP) -> bytes:
        return self.state.requests("POST", "/backups/" + uuid)[-1].raw_body


class LocalBackupTests(_BackupCase):
    """
    The ``wings`` adapter.
    """

    async def test_backup_download_restore_delete(self) -> None:
        """
        backups.md §13.1 and §13.4: a local backup of a tree with ignore rules is a tar.gz of
        regular files only that ``tar -xzf`` restores; its report is the byte shape of §7.1 with
        the file's SHA-1 and size; it downloads with Range and a resumed ``curl -C -``; restores
        with and without truncation; deleted with 204 then 404.
        """
        await self.start(SERVER)
        fill(self.volume, TREE)
        os.symlink("server.properties", os.path.join(self.volume, "link"))
        report = await self.backup("wings")
        path = os.path.join(self.base, "backup_directory", BACKUP + ".tar.gz")
        with open(path, "rb") as f:
            data = f.read()
        self.assertEqual(self.raw_report(), json.dumps({
            "checksum": hashlib.sha1(data).hexdigest(), "checksum_type": "sha1",
            "size": len(data), "successful": True, "parts": None}).encode())
        self.assertTrue(report["successful"])
        listing = subprocess.run(["tar", "tvzf", path], capture_output=True, text=True,
                                 check=True).stdout.splitlines()
        self.assertTrue(all(line.startswith("-") for line in listing), listing)
        self.assertEqual(sorted(line.split()[5] for line in listing), KEPT)
        target = os.path.join(self.base, "untar")
        os.makedirs(target)
        subprocess.run(["tar", "xzf", path, "-C", target], check=True)
        self.assertEqual(read_tree(target), {n: TREE[n] for n in KEPT})

        # A ranged, resumed download (downloads-uploads.md §4).
        url = "{}/download/backup?token={}".format(self.url, self.token(
            backup_uuid=BACKUP, user_uuid=None, user_id=None))
        out = os.path.join(self.base, "download.tar.gz")
        first = await self.curl_async("-o", out, "-r", "0-99999", url)
        self.assertEqual(first.returncode, 0, first.stderr)
        self.assertEqual(os.path.getsize(out), 100000)
        rest = await self.curl_async("-o", out, "-C", "-", "-w", "%{http_code}", url)
        self.assertEqual(rest.stdout, b"206", rest.stderr)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), data)

        # Restore over a changed volume, without then with truncation (§8).
        with open(os.path.join(self.volume, "server.properties"), "wb") as f:
            f.write(b"changed")
        fill(self.volume, {"new.txt": b"new"})
        response, body = await self.restore("wings", truncate=False)
        self.assertEqual(response.code, 202, body)
        self.assertEqual(self.state.restore_reports[-1]["successful"], True)
        restored = read_tree(self.volume)
        self.assertEqual(restored["server.properties"], TREE["server.properties"])
        self.assertEqual(restored["new.txt"], b"new")
        self.assertIn("logs/latest.log", restored)
        response, body = await self.restore("wings", truncate=True)
        self.assertEqual(response.code, 202, body)
        self.assertEqual(read_tree(self.volume), {n: TREE[n] for n in KEPT})
        self.assertFalse(os.path.lexists(os.path.join(self.volume, "link")))

        # Delete one, then again (404), then delete-all.
        delete = "/api/servers/{}/backup/{}".format(SERVER, BACKUP)
        response, _ = await self.call("DELETE", delete, headers=AUTH)
        self.assertEqual(response.code, 204)
        response, body = await self.call("DELETE", delete, headers=AUTH)
        self.assertEqual((response.code, json.loads(body)["error"]),
                         (404, "The requested backup was not found on this server."))
        await self.backup("wings", uuid=BACKUP, ignore="world/**")
        await self.backup("wings", uuid=SECOND, ignore="world/**")
        self.assertEqual(len(os.listdir(os.path.join(self.base, "backup_directory"))), 2)
        response, _ = await self.call("DELETE", "/api/servers/{}/backup/delete-all".format(SERVER),
                                      headers=AUTH)
        self.assertEqual(response.code, 204)
        self.assertEqual(os.listdir(os.path.join(self.base, "backup_directory")), [])

    async def test_missing_backup_restore(self) -> None:
        """
        backups.md §13.6: restoring a missing local backup with ``truncate_directory: true``
        answers 404 and deletes nothing.
        """
        await self.start(SERVER)
        fill(self.volume, {"a.txt": b"a"})
        response, body = await self.restore("wings", truncate=True)
        self.assertEqual(response.code, 404, body)
        self.assertEqual(read_tree(self.volume), {"a.txt": b"a"})


class S3BackupTests(_BackupCase):
    """
    The ``s3`` adapter against SeaweedFS, through the development panel's presigned URLs.
    """

    async def start_with_store(self, proxy: bool = False, **s3: Any) -> None:
        self.s3 = await start_s3(reactor, self.addCleanup)
        await self.start(SERVER)
        settings = self.s3.settings(**s3)
        self.proxy = None
        if proxy:
            self.proxy = S3Proxy(self.s3.endpoint, reactor)
            port = reactor.listenTCP(0, Site(self.proxy), interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            settings["public_endpoint"] = "http://127.0.0.1:{}".format(port.getHost().port)
        self.state.object_store = ObjectStore(ObjectStoreSettings.from_dict(settings))
        self.state.backup_disk = "s3"
        self.state.part_size = PART
        self.store = self.s3.store()

    async def test_backup_and_restore(self) -> None:
        """
        backups.md §6–§8: the archive goes up in ``ceil(size / 5 MiB)`` parts; the report lists
        each part's ETag and number; the panel completes the upload; the object is the archive
        (same SHA-1); no staging file stays; a restore from the presigned GET URL rebuilds the
        tree (with truncation), and one without truncation keeps other files.
        """
        await self.start_with_store()
        fill(self.volume, TREE)
        report = await self.backup("s3")
        self.assertTrue(report["successful"], report)
        key = "{}/{}.tar.gz".format(SERVER, BACKUP)
        data = self.store.read(key)
        self.assertEqual(hashlib.sha1(data).hexdigest(), report["checksum"])
        self.assertEqual(len(data), report["size"])
        self.assertEqual([p["part_number"] for p in report["parts"]],
                         list(range(1, -(-len(data) // PART) + 1)))
        self.assertGreaterEqual(len(report["parts"]), 3)
        self.assertTrue(all(p["etag"].startswith('"') and p["etag"].endswith('"')
                            for p in report["parts"]))
        self.assertEqual(os.listdir(os.path.join(self.base, "backup_directory")), [])

        fill(self.volume, {"extra.txt": b"extra", "server.properties": b"changed"})
        response, body = await self.restore("s3", True, self.state.backup_download_url(BACKUP))
        self.assertEqual(response.code, 202, body)
        self.assertTrue(self.state.restore_reports[-1]["successful"])
        self.assertEqual(read_tree(self.volume), {n: TREE[n] for n in KEPT})
        fill(self.volume, {"extra.txt": b"extra"})
        response, body = await self.restore("s3", False, self.state.backup_download_url(BACKUP))
        self.assertEqual(response.code, 202, body)
        self.assertEqual(read_tree(self.volume)["extra.txt"], b"extra")

    async def test_restore_checks(self) -> None:
        """
        backups.md §13.7 and §8.3: an object served as ``application/gzip; charset=binary`` is
        restored; one served as ``text/plain`` and a missing one answer 400 with the spec's
        texts before anything changes.
        """
        await self.start_with_store()
        self.state.add_backup(BACKUP, server=SERVER)
        fill(self.volume, {"a.txt": b"a"})
        source = os.path.join(self.base, "src")
        fill(source, {"restored.txt": b"restored"})
        archive = subprocess.run(["tar", "czf", "-", "-C", source, "restored.txt"],
                                 capture_output=True, check=True).stdout
        api = self.state.object_store._api  # type: ignore[union-attr]
        for key, kind in (("typed.tar.gz", "application/gzip; charset=binary"),
                          ("text.tar.gz", "text/plain")):
            api.put_object(Bucket="backups", Key=key, Body=archive, ContentType=kind)
        store = self.state.object_store
        assert store is not None
        response, body = await self.restore("s3", False, store.download_url("text.tar.gz"))
        self.assertEqual((response.code, json.loads(body)["error"]), (400, (
            'The provided backup link is not a supported content type. "text/plain" is not '
            'application/x-gzip.')))
        response, body = await self.restore("s3", False, store.download_url("missing.tar.gz"))
        self.assertEqual(response.code, 400)
        self.assertIn("invalid response status: 404", json.loads(body)["error"])
        self.assertEqual(read_tree(self.volume), {"a.txt": b"a"})
        response, body = await self.restore("s3", True, store.download_url("typed.tar.gz"))
        self.assertEqual(response.code, 202, body)
        self.assertEqual(read_tree(self.volume), {"restored.txt": b"restored"})

    async def test_part_503_then_200(self) -> None:
        """
        backups.md §13.5: a part that gets one 503 and then 200 is sent twice with identical
        bodies, and the backup succeeds.
        """
        await self.start_with_store(proxy=True)
        assert self.proxy is not None
        self.proxy.script = [503]
        fill(self.volume, TREE)
        report = await self.backup("s3")
        self.assertTrue(report["successful"], report)
        first, second = self.proxy.puts[0], self.proxy.puts[1]
        self.assertIn("partNumber=1", first[0])
        self.assertEqual(first, second)
        self.assertEqual(len(first[1]), PART)
        data = self.store.read("{}/{}.tar.gz".format(SERVER, BACKUP))
        self.assertEqual(hashlib.sha1(data).hexdigest(), report["checksum"])

    async def test_expired_url_fails_the_backup(self) -> None:
        """
        An expired presigned URL (the store answers 403) fails the backup: the panel gets the
        failure body of §7.1 and aborts the upload; nothing stays on the node.
        """
        await self.start_with_store(proxy=True, presign_lifespan=1)
        assert self.proxy is not None
        self.proxy.script = [2.5]
        fill(self.volume, TREE)
        report = await self.backup("s3")
        self.assertFalse(report["successful"])
        self.assertEqual(self.raw_report(), b'{"checksum": "", "checksum_type": "", "size": 0, '
                                            b'"successful": false, "parts": null}')
        self.assertEqual(len(self.proxy.puts), 1)
        self.assertEqual(self.store.uploads(), [])
        self.assertEqual(self.store.keys(), [])
        self.assertEqual(os.listdir(os.path.join(self.base, "backup_directory")), [])


class DevPanelBackupCommandTests(_BackupCase):
    """
    ``python -m wings_twisted.devpanel backup ...`` against the running development panel and a
    real daemon: what a newcomer types to try backups.
    """

    async def command(self, *args: str) -> Any:
        from twisted.internet.threads import deferToThread
        fixture = os.path.join(self.base, "devpanel.yml")
        with open(fixture, "w") as f:
            yaml.safe_dump({"node": {"token_id": self.state.node.token_id,
                                     "token": self.state.node.token,
                                     "daemon_url": self.url, "url": self.panel.url}}, f)
        result = await deferToThread(
            subprocess.run, [sys.executable, "-m", "wings_twisted.devpanel", "backup", *args,
                             "--config", fixture, "--server", SERVER],
            capture_output=True, text=True, timeout=60, cwd=REPO)
        self.assertEqual(result.returncode, 0, result.stderr)
        return json.loads(result.stdout) if result.stdout.strip().startswith("{") else None

    async def test_create_download_restore_delete(self) -> None:
        """
        ``backup create`` makes a local backup through the daemon (ignored lines passed on),
        ``list`` shows it completed, ``download`` prints a working signed URL, ``restore
        --truncate`` puts the files back, ``delete`` removes the archive.
        """
        await self.start(SERVER)
        self.state.node.daemon_url = self.url
        self.state.backup_disk = "wings"
        fill(self.volume, {"a.txt": b"a", "skip.tmp": b"t"})
        created = await self.command("create", "--ignore", "*.tmp")
        uuid = created["attributes"]["uuid"]
        await self.wait_for(lambda: self.state.backups[uuid].completed)
        listed = await self.command("list")
        [row] = listed["data"]
        self.assertTrue(row["attributes"]["is_successful"])
        self.assertEqual(row["attributes"]["ignored_files"], ["*.tmp"])
        link = (await self.command("download", "--backup", uuid))["attributes"]["url"]
        self.assertTrue(link.startswith(self.url + "/download/backup?token="), link)
        fetched = await self.curl_async("-f", link)
        self.assertEqual(fetched.returncode, 0, fetched.stderr)
        self.assertEqual(hashlib.sha1(fetched.stdout).hexdigest(),
                         self.state.backups[uuid].checksum.split(":")[1])
        fill(self.volume, {"b.txt": b"b"})
        before = len(self.state.restore_reports)
        await self.command("restore", "--backup", uuid, "--truncate")
        await self.wait_for(lambda: len(self.state.restore_reports) > before)
        self.assertEqual(read_tree(self.volume), {"a.txt": b"a"})
        await self.command("delete", "--backup", uuid)
        self.assertEqual(os.listdir(os.path.join(self.base, "backup_directory")), [])
