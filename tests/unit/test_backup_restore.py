"""
Restores in memory (backups.md §8, §10, api.md §2.9): the order of operations, truncation, the
write guard while a restore runs, hostile archives, and the reports.
"""

from __future__ import annotations

import io
import os
import tarfile
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.backups.restore import Escape, check_name

from ..support import SERVER
from .backup_support import BACKUP, OTHER_BACKUP, BackupHarness, fill


def tar_gz(entries: list[tuple[str, bytes | None]]) -> bytes:
    """
    A tar.gz with regular files (content) and directories (``None``), written by ``tarfile``.
    """
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                info.size = len(content)
                info.mtime = 1_600_000_000
                info.mode = 0o640
                archive.addfile(info, io.BytesIO(content))
    return out.getvalue()


class _Stopping:
    """
    An environment that is running and stops when the test says so.
    """

    def __init__(self) -> None:
        self.state = "running"
        self.stop = Deferred[None]()
        self.calls: list[tuple[float, bool]] = []

    def wait_for_stop(self, timeout: float, kill: bool) -> Deferred[None]:
        self.calls.append((timeout, kill))
        return self.stop


class RestoreTests(SynchronousTestCase):
    """
    ``POST /api/servers/{uuid}/backup/{backup}/restore`` with the ``wings`` adapter.
    """

    def setUp(self) -> None:
        self.h = BackupHarness(FilePath(self.mktemp()))
        self.h.state.add_backup(BACKUP, server=SERVER)
        self.server = self.h.add_server()
        self.root = self.server.volume.root
        fill(self.root, {"old.txt": b"old", "keep/me.txt": b"me"})
        self.directory = self.h.config.system.backup_directory

    def put_archive(self, entries: list[tuple[str, bytes | None]], uuid: str = BACKUP) -> None:
        with open(os.path.join(self.directory, uuid + ".tar.gz"), "wb") as f:
            f.write(tar_gz(entries))

    def restore(self, truncate: bool = False, uuid: str = BACKUP, **extra: Any) -> Any:
        body = {"adapter": "wings", "truncate_directory": truncate, "download_url": ""}
        body.update(extra)
        response = self.h.post("/api/servers/{}/backup/{}/restore".format(SERVER, uuid), body)
        self.h.pump()
        return response

    def messages(self) -> list[str | None]:
        return [arg for name, arg in self.h.events if name == "daemon message"]

    def test_restore_without_truncation(self) -> None:
        """
        §8.4: the archive's files are written over the volume; other files stay; each entry is
        announced before it is written; the Panel gets ``{"successful": true}``; the closing
        message and ``backup restore completed`` ``""`` follow; the server is idle again.
        """
        self.put_archive([("world/level.dat", b"level"), ("old.txt", b"new")])
        self.assertEqual(self.restore().status, 202)
        with open(os.path.join(self.root, "old.txt"), "rb") as f:
            self.assertEqual(f.read(), b"new")
        self.assertTrue(os.path.exists(os.path.join(self.root, "keep/me.txt")))
        self.assertEqual(os.stat(os.path.join(self.root, "world/level.dat")).st_mtime,
                         1_600_000_000)
        self.assertEqual(self.messages(), ["(restoring): world/level.dat",
                                           "(restoring): old.txt",
                                           "Completed server restoration from local backup."])
        self.assertEqual(self.h.events[-1], ("backup restore completed", ""))
        [report] = self.h.state.requests("POST", "/backups/{}/restore".format(BACKUP))
        self.assertEqual(report.raw_body, b'{"successful": true}')
        self.assertEqual(self.server.occupancy.state, "idle")

    def test_restore_with_truncation(self) -> None:
        """
        §8.4 step 3: everything in the volume goes first; the volume stays, mode 0700; directory
        entries are created.
        """
        self.put_archive([("empty", None), ("a/b.txt", b"b")])
        self.assertEqual(self.restore(truncate=True).status, 202)
        self.assertEqual(sorted(os.listdir(self.root)), ["a", "empty"])
        self.assertEqual(os.stat(self.root).st_mode & 0o777, 0o700)

    def test_missing_backup_deletes_nothing(self) -> None:
        """
        backups.md §13.6: a restore of a missing local backup with ``truncate_directory: true``
        answers 404 and deletes nothing; the server is not left restoring.
        """
        response = self.restore(truncate=True)
        self.assertEqual((response.status, response.json()["error"]),
                         (404, "The requested backup was not found on this server."))
        self.assertEqual(sorted(os.listdir(self.root)), ["keep", "old.txt"])
        self.assertEqual(self.server.occupancy.state, "idle")
        self.assertEqual(self.h.state.requests("POST", "/backups/{}/restore".format(BACKUP)), [])

    def test_suspended_stays_suspended(self) -> None:
        """
        backups.md §13.8: after a restore of a suspended server, the server is still suspended.
        """
        self.server.settings["suspended"] = True
        self.put_archive([("x", b"x")])
        self.assertEqual(self.restore().status, 202)
        self.assertTrue(self.server.suspended)

    def test_bad_bodies(self) -> None:
        """
        §8.1: a missing or unknown adapter, a non-boolean ``truncate_directory`` → 400; ``s3``
        without ``download_url`` → 400 with upstream's text.
        """
        self.put_archive([("x", b"x")])
        for body in ({"adapter": "ftp"}, {"truncate_directory": True},
                     {"adapter": "wings", "truncate_directory": "yes"}):
            response = self.h.post("/api/servers/{}/backup/{}/restore".format(SERVER, BACKUP),
                                   body)
            self.assertEqual(response.status, 400, body)
        response = self.h.post("/api/servers/{}/backup/{}/restore".format(SERVER, BACKUP),
                               {"adapter": "s3", "download_url": ""})
        self.assertEqual(response.json()["error"], "The download_url field is required when "
                                                   "the backup adapter is set to S3.")

    def test_foreign_backup_is_not_found(self) -> None:
        """
        backups.md §3: a backup recorded for another server is a 404 for restore and delete.
        """
        self.put_archive([("x", b"x")], uuid=OTHER_BACKUP)
        self.h.services.index.record(OTHER_BACKUP, "aaaaaaaa-3b4d-4e5f-9a6b-7c8d9e0f1a2b",
                                     "wings", 0.0, "complete")
        self.assertEqual(self.restore(uuid=OTHER_BACKUP).status, 404)
        response = self.h.get("/api/servers/{}/backup/{}".format(SERVER, OTHER_BACKUP),
                              method="DELETE")
        self.assertEqual(response.status, 404)
        self.assertTrue(os.path.exists(os.path.join(self.directory, OTHER_BACKUP + ".tar.gz")))


class RestoreGuardTests(SynchronousTestCase):
    """
    backups.md §10 and the write guard of api.md §2.9 while a restore runs.
    """

    def setUp(self) -> None:
        self.h = BackupHarness(FilePath(self.mktemp()))
        self.h.state.auto_create_backups = True
        self.server = self.h.add_server()
        self.env = _Stopping()
        self.server.environment = self.env
        fill(self.server.volume.root, {"old.txt": b"old"})
        with open(os.path.join(self.h.config.system.backup_directory, BACKUP + ".tar.gz"),
                  "wb") as f:
            f.write(tar_gz([("new.txt", b"new")]))
        response = self.h.post("/api/servers/{}/backup/{}/restore".format(SERVER, BACKUP),
                               {"adapter": "wings", "truncate_directory": True})
        self.assertEqual(response.status, 202)

    def test_guard_while_restoring(self) -> None:
        """
        While the restore waits for the process to stop: nothing was deleted yet; file writes,
        a second restore and a backup answer 409 with their texts; power is refused; reads
        work.  Once it stops, the restore runs and the guard lifts.
        """
        self.assertEqual(self.env.calls, [(120.0, False)])
        self.assertTrue(os.path.exists(os.path.join(self.server.volume.root, "old.txt")))
        write = self.h.post("/api/servers/{}/files/write?file=/x".format(SERVER), b"data")
        self.assertEqual((write.status, write.json()["error"]),
                         (409, "Files cannot be changed while a backup is being restored to "
                               "this server."))
        again = self.h.post("/api/servers/{}/backup/{}/restore".format(SERVER, BACKUP),
                            {"adapter": "wings"})
        self.assertEqual((again.status, again.json()["error"]),
                         (409, "A backup restore is already in progress for this server."))
        backup = self.h.post("/api/servers/{}/backup".format(SERVER),
                             {"adapter": "wings", "uuid": OTHER_BACKUP, "ignore": ""})
        self.assertEqual((backup.status, backup.json()["error"]),
                         (409, "A backup cannot be created while the server is being "
                               "restored."))
        read = self.h.get("/api/servers/{}/files/contents?file=/old.txt".format(SERVER))
        self.assertEqual(read.status, 200)
        self.env.state = "offline"
        self.env.stop.callback(None)
        self.h.pump()
        self.assertEqual(os.listdir(self.server.volume.root), ["new.txt"])
        self.assertEqual(self.server.occupancy.state, "idle")
        write = self.h.post("/api/servers/{}/files/write?file=/x".format(SERVER), b"data")
        self.assertEqual(write.status, 204)

    def test_gone_process_counts_as_stopped(self) -> None:
        """
        §8.4 step 2: a stop that fails because the process (container) is gone, leaving the
        server offline, counts as stopped: the restore goes on.
        """
        from wings_twisted.environment import EnvironmentError as EnvError
        self.env.state = "offline"
        self.env.stop.errback(EnvError("container not found"))
        self.h.pump()
        self.assertEqual(os.listdir(self.server.volume.root), ["new.txt"])
        [report] = self.h.state.requests("POST", "/backups/{}/restore".format(BACKUP))
        self.assertEqual(report.raw_body, b'{"successful": true}')

    def test_stop_failure_fails_restore(self) -> None:
        """
        §8.4 step 2: a process that does not stop fails the restore; nothing is deleted; the
        Panel hears ``{"successful": false}``; the failure text is published.
        """
        from wings_twisted.environment import EnvironmentError as EnvError
        self.env.stop.errback(EnvError("timed out"))
        self.h.pump()
        self.assertEqual(os.listdir(self.server.volume.root), ["old.txt"])
        [report] = self.h.state.requests("POST", "/backups/{}/restore".format(BACKUP))
        self.assertEqual(report.raw_body, b'{"successful": false}')
        self.assertIn(("daemon message", "Server restoration from local backup failed."),
                      self.h.events)
        self.assertEqual(self.server.occupancy.state, "idle")


class HostileArchiveTests(SynchronousTestCase):
    """
    Archives that try to leave the volume (backups.md §8.4 step 5).
    """

    def test_names(self) -> None:
        """
        Leading ``/`` and inner ``..`` are cleaned; a name that climbs out fails.
        """
        self.assertEqual(check_name("/a/./b/../c"), "a/c")
        for bad in ("../x", "a/../../x", "/.."):
            self.assertRaises(Escape, check_name, bad)

    def test_escaping_entry_fails_restore(self) -> None:
        """
        An entry ``../escape`` fails the job before it writes anything outside; a symlink
        entry is skipped and never followed by a later entry.
        """
        h = BackupHarness(FilePath(self.mktemp()))
        h.state.auto_create_backups = True
        server = h.add_server()
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w:gz") as archive:
            link = tarfile.TarInfo("link")
            link.type = tarfile.SYMTYPE
            link.linkname = "/etc"
            archive.addfile(link)
            for name in ("link/passwd", "../escape"):
                info = tarfile.TarInfo(name)
                info.size = 1
                archive.addfile(info, io.BytesIO(b"x"))
        with open(os.path.join(h.config.system.backup_directory, BACKUP + ".tar.gz"), "wb") as f:
            f.write(out.getvalue())
        response = h.post("/api/servers/{}/backup/{}/restore".format(SERVER, BACKUP),
                          {"adapter": "wings"})
        self.assertEqual(response.status, 202)
        h.pump()
        parent = os.path.dirname(server.volume.root)
        self.assertFalse(os.path.exists(os.path.join(parent, "escape")))
        self.assertFalse(os.path.islink(os.path.join(server.volume.root, "link")))
        self.assertEqual(open(os.path.join(server.volume.root, "link", "passwd")).read(), "x")
        [report] = h.state.requests("POST", "/backups/{}/restore".format(BACKUP))
        self.assertEqual(report.raw_body, b'{"successful": false}')


class RestoreQuotaTests(SynchronousTestCase):
    """
    A restore against the server's disk limit (backups.md §8.4 step 5).
    """

    def test_over_quota_fails_without_partial_file(self) -> None:
        """
        An entry that does not fit fails the restore when it reaches the limit: the files
        before it stay, nothing of it is left, the Panel hears ``{"successful": false}``.
        """
        h = BackupHarness(FilePath(self.mktemp()))
        h.state.add_server(SERVER, disk_space=1)
        h.state.add_backup(BACKUP, server=SERVER)
        server = h.add_server()
        with open(os.path.join(h.config.system.backup_directory, BACKUP + ".tar.gz"), "wb") as f:
            f.write(tar_gz([("small.txt", b"s"), ("big.bin", os.urandom(3 * 1024 * 1024))]))
        response = h.post("/api/servers/{}/backup/{}/restore".format(SERVER, BACKUP),
                          {"adapter": "wings"})
        self.assertEqual(response.status, 202)
        h.pump()
        self.assertEqual(sorted(os.listdir(server.volume.root)), ["small.txt"])
        [report] = h.state.requests("POST", "/backups/{}/restore".format(BACKUP))
        self.assertEqual(report.raw_body, b'{"successful": false}')


class ForkEventTests(SynchronousTestCase):
    """
    backups.md §7.2: the fork's ``backup started``, ``backup restore started`` and ``backup
    deleted`` events, sent only with ``websocket.emit_fork_backup_events``.
    """

    def flow(self, emit: bool) -> list[tuple[str, str | None]]:
        """
        Create, restore and delete one local backup; the backup events the server published
        other than ``backup completed``.
        """
        h = BackupHarness(FilePath(self.mktemp()), websocket={"emit_fork_backup_events": emit})
        h.state.add_backup(BACKUP, server=SERVER)
        server = h.add_server()
        fill(server.volume.root, {"a.txt": b"a"})
        base = "/api/servers/{}/backup".format(SERVER)
        self.assertEqual(h.post(base, {"adapter": "wings", "uuid": BACKUP, "ignore": ""}).status,
                         202)
        h.pump()
        self.assertIn("backup completed", [name for name, _ in h.events])
        self.assertEqual(h.post("{}/{}/restore".format(base, BACKUP),
                                {"adapter": "wings", "truncate_directory": False,
                                 "download_url": ""}).status, 202)
        h.pump()
        self.assertEqual(h.get("{}/{}".format(base, BACKUP), method="DELETE").status, 204)
        h.pump()
        return [(name, arg) for name, arg in h.events
                if name.startswith("backup ") and "completed" not in name]

    def test_sent_with_the_switch(self) -> None:
        """
        With the switch each step is announced with ``{"uuid":"<backup>"}``.
        """
        argument = '{"uuid":"' + BACKUP + '"}'
        self.assertEqual(self.flow(True), [("backup started", argument),
                                           ("backup restore started", argument),
                                           ("backup deleted", argument)])

    def test_silent_by_default(self) -> None:
        """
        Without it (the default: the stock panel does not listen) none is sent.
        """
        self.assertEqual(self.flow(False), [])
