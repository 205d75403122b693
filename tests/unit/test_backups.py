"""
The parts of ``wings_twisted.backups`` on their own: the ignore table and ``.pteroignore``, the
report shapes, the write limiter, the part producer and the retries of part uploads, the slots of
``max_concurrent``, the restore download's checks and body queue, the ownership index, the
staging file.  Time is a ``Clock`` (or an injected clock and sleep): nothing sleeps.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import threading
from typing import Any

from treq.testing import RequestTraversalAgent
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, Cooperator
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Request

from wings_twisted.archive import Cancelled
from wings_twisted.backups import report, storage
from wings_twisted.backups.download import (
    BodyQueue,
    DownloadRefused,
    HostPolicy,
    check_content_type,
)
from wings_twisted.backups.index import BackupIndex
from wings_twisted.backups.limiter import TokenBucket, limited, make_bucket
from wings_twisted.backups.report import BackupResult, Part
from wings_twisted.backups.s3 import (
    PartProducer,
    S3Error,
    check_part_count,
    part_ranges,
    upload_part,
)
from wings_twisted.backups.slots import Slots
from wings_twisted.blocking import run_inline
from wings_twisted.fs import Volume

from ..support import SERVER
from .backup_support import BACKUP, OTHER_BACKUP, BackupHarness, fill, members


def volume(test: SynchronousTestCase, files: dict[str, bytes]) -> Volume:
    root = test.mktemp()
    os.makedirs(root)
    fill(root, files)
    return Volume(root, uid=os.getuid(), gid=os.getgid(), chown=False)


def archived(test: SynchronousTestCase, files: dict[str, bytes], ignore: str) -> list[str]:
    """
    The member names of the backup archive of ``files`` with the request's ``ignore``.
    """
    vol = volume(test, files)
    directory = test.mktemp()
    written = storage.write_archive(vol, storage.resolve_rules(vol, ignore), directory, BACKUP,
                                    level=1, bucket=None)
    with open(written.path, "rb") as f:
        return sorted(members(f.read()))


class IgnoreTableTests(SynchronousTestCase):
    """
    backups.md §13.2: the table of §4.4 through a real backup archive.
    """

    CASES = [
        ("*.log", ["latest.log", "logs/2024.log"], ["log.txt"]),
        ("logs/", ["logs/a", "x/logs/a"], ["logs"]),
        ("/logs", ["logs", "logs/a"], ["x/logs/a"]),
        ("world/*.mca", ["world/r.0.0.mca"], ["x/world/r.mca"]),
        ("cache/**", ["cache/a/b", "x/cache/a"], []),
        ("a/**/b", ["a/b", "a/x/y/b"], ["ab"]),
        ("file?.txt", ["file?.txt"], ["file1.txt"]),
        ("file(1).txt", ["file1.txt"], ["file(1).txt"]),
        ("*.log\n!keep.log", ["a.log"], ["keep.log", "x/keep.log"]),
    ]

    def test_table(self) -> None:
        """
        backups.md §13.2: each rule leaves out exactly the listed files, ``file(1).txt`` and
        ``file?.txt`` included (regular-expression operators and a literal ``?``).
        """
        for rule, ignored, kept in self.CASES:
            files = {name: b"x" for name in ignored + kept}
            # "logs" as a file and "logs/a" cannot both exist: split the case.
            if "logs" in files and "logs/a" in files:
                del files["logs/a"]
                self.assertEqual(archived(self, {"logs/a": b"x"}, rule),
                                 [] if "logs/a" in ignored else ["logs/a"], rule)
            self.assertEqual(archived(self, files, rule),
                             sorted(n for n in files if n in kept), rule)

    def test_carriage_returns_and_comments(self) -> None:
        """
        §4.4 steps 1–4: trailing CRs go, ``#`` lines are comments, blank lines are skipped.
        """
        self.assertEqual(archived(self, {"a.log": b"", "b.txt": b"", "#c": b""},
                                  "*.log\r\r\n# comment\n\n   \n"), ["#c", "b.txt"])


class PteroignoreTests(SynchronousTestCase):
    """
    backups.md §4.3 and §13.3: ``.pteroignore`` of the volume root.
    """

    def test_used_when_request_is_empty(self) -> None:
        """
        With an empty ``ignore`` the file's rules apply; a non-empty ``ignore`` replaces them
        (never merged).
        """
        files = {".pteroignore": b"*.log\n", "a.log": b"", "b.txt": b""}
        self.assertEqual(archived(self, files, ""), [".pteroignore", "b.txt"])
        self.assertEqual(archived(self, files, "*.txt"), [".pteroignore", "a.log"])

    def test_too_large_is_ignored(self) -> None:
        """
        backups.md §13.3: a file of more than 32 768 bytes is not used.
        """
        big = b"*.log\n" + b"#" * 32768
        self.assertEqual(archived(self, {".pteroignore": big, "a.log": b""}, ""),
                         [".pteroignore", "a.log"])
        exact = b"*.log\n" + b"#" * (32768 - 6)
        self.assertEqual(archived(self, {".pteroignore": exact, "a.log": b""}, ""),
                         [".pteroignore"])

    def test_symlink_is_ignored(self) -> None:
        """
        backups.md §13.3: a symlink named ``.pteroignore`` is never followed (not even to a
        file inside the volume), and is not archived.
        """
        vol = volume(self, {"rules": b"*.log\n", "a.log": b""})
        os.symlink("rules", os.path.join(vol.root, ".pteroignore"))
        self.assertIsNone(storage.resolve_rules(vol, ""))

    def test_directory_is_ignored(self) -> None:
        """
        A directory named ``.pteroignore`` is not a rule file.
        """
        vol = volume(self, {".pteroignore/x": b"*"})
        self.assertIsNone(storage.resolve_rules(vol, ""))


class ArchiveFileTests(SynchronousTestCase):
    """
    The archive file of a backup (backups.md §5).
    """

    def test_no_directory_link_or_hard_link_entries(self) -> None:
        """
        backups.md §13.1: only regular-file members; a hard link is stored twice in full; a
        symlink and an empty directory are left out.
        """
        vol = volume(self, {"a/b.txt": b"bee", "c.txt": b"sea"})
        os.link(os.path.join(vol.root, "c.txt"), os.path.join(vol.root, "a/hard.txt"))
        os.symlink("/etc/passwd", os.path.join(vol.root, "link"))
        os.mkdir(os.path.join(vol.root, "empty"))
        written = storage.write_archive(vol, None, self.mktemp(), BACKUP, level=1, bucket=None)
        with tarfile.open(written.path) as archive:
            infos = archive.getmembers()
        self.assertEqual(sorted(i.name for i in infos), ["a/b.txt", "a/hard.txt", "c.txt"])
        self.assertTrue(all(i.type == tarfile.REGTYPE for i in infos))
        self.assertTrue(all(i.uname == "" and i.gname == "" for i in infos))
        with open(written.path, "rb") as f:
            data = f.read()
        self.assertEqual(members(data)["a/hard.txt"], b"sea")
        self.assertEqual(written.checksum, hashlib.sha1(data).hexdigest())
        self.assertEqual(written.size, len(data))

    def test_failure_leaves_nothing(self) -> None:
        """
        backups.md §5.8: a cancelled (or failed) generation removes its staging file; no
        archive appears.
        """
        vol = volume(self, {"a": b"x" * 100})
        directory = self.mktemp()
        cancel = threading.Event()
        cancel.set()
        self.assertRaises(Cancelled, storage.write_archive, vol, None, directory, BACKUP,
                          level=1, bucket=None, cancel=cancel)
        self.assertEqual(os.listdir(directory), [])

        def boom() -> None:
            raise OSError(28, "No space left on device")

        self.assertRaises(OSError, storage.write_archive, vol, None, directory, BACKUP,
                          level=1, bucket=None, before_rename=boom)
        self.assertEqual(os.listdir(directory), [])

    def test_sweep_staging(self) -> None:
        """
        Staging files a crash left are removed at boot; archives are not.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        for name in ("." + BACKUP + ".tar.gz.partial", OTHER_BACKUP + ".tar.gz"):
            open(os.path.join(directory, name), "w").close()
        self.assertEqual(storage.sweep_staging(directory), ["." + BACKUP + ".tar.gz.partial"])
        self.assertEqual(os.listdir(directory), [OTHER_BACKUP + ".tar.gz"])

    def test_locate_layouts(self) -> None:
        """
        backups.md §3: the flat path first, then Pelican's per-server path; a directory or a
        symlink there does not count.
        """
        directory = self.mktemp()
        os.makedirs(os.path.join(directory, SERVER))
        pelican = os.path.join(directory, SERVER, BACKUP + ".tar.gz")
        open(pelican, "w").close()
        self.assertEqual(storage.locate(directory, SERVER, BACKUP), pelican)
        os.mkdir(os.path.join(directory, OTHER_BACKUP + ".tar.gz"))
        self.assertIsNone(storage.locate(directory, SERVER, OTHER_BACKUP))
        os.symlink(pelican, os.path.join(directory, BACKUP + ".tar.gz"))
        self.assertEqual(storage.locate(directory, SERVER, BACKUP), pelican)
        self.assertTrue(storage.remove_archive(directory, pelican))
        self.assertFalse(os.path.exists(os.path.join(directory, SERVER)))


class ReportTests(SynchronousTestCase):
    """
    backups.md §13.4 and §7.2: the byte shapes.
    """

    def test_panel_bodies(self) -> None:
        """
        backups.md §13.4: success (local: ``parts`` null; S3: the parts) and failure bodies are
        byte for byte the shapes of §7.1.
        """
        local = BackupResult("0a4d55a8d778e5022fab701977c5d840bbc486d0", 52428800)
        self.assertEqual(json.dumps(report.success_report(local)),
                         '{"checksum": "0a4d55a8d778e5022fab701977c5d840bbc486d0", '
                         '"checksum_type": "sha1", "size": 52428800, "successful": true, '
                         '"parts": null}')
        s3 = BackupResult("0a4d", 6442450944, (Part(1, '"9b2c"'), Part(2, '"6f59"')))
        self.assertEqual(json.dumps(report.success_report(s3)),
                         '{"checksum": "0a4d", "checksum_type": "sha1", "size": 6442450944, '
                         '"successful": true, "parts": [{"etag": "\\"9b2c\\"", "part_number": 1}, '
                         '{"etag": "\\"6f59\\"", "part_number": 2}]}')
        self.assertEqual(json.dumps(report.failure_report()),
                         '{"checksum": "", "checksum_type": "", "size": 0, "successful": false, '
                         '"parts": null}')

    def test_events(self) -> None:
        """
        §7.2: success gives the bare and the suffixed event with one argument; failure only the
        bare one, with ``checksum_type`` ``sha1``; the switch turns the suffixed one off.
        """
        result = BackupResult("ab", 3)
        argument = ('{"checksum":"ab","checksum_type":"sha1","file_size":3,'
                    '"is_successful":true,"uuid":"' + BACKUP + '"}')
        self.assertEqual(list(report.result_events(BACKUP, result)),
                         [("backup completed", argument),
                          ("backup completed:" + BACKUP, argument)])
        self.assertEqual(list(report.result_events(BACKUP, None)),
                         [("backup completed", '{"checksum":"","checksum_type":"sha1",'
                           '"file_size":0,"is_successful":false,"uuid":"' + BACKUP + '"}')])
        self.assertEqual(len(report.result_events(BACKUP, result, suffixed=False)), 1)
        self.assertEqual(report.restore_message("s3", True),
                         "Completed server restoration from S3 backup.")
        self.assertEqual(report.restore_message("wings", False),
                         "Server restoration from local backup failed.")


class LimiterTests(SynchronousTestCase):
    """
    The token bucket of backups.md §5.6, on an injected clock.
    """

    def setUp(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def test_rate(self) -> None:
        """
        At 1 MiB/s with a one-second capacity, 4 MiB written in 64 KiB pieces takes 3 seconds
        after the first (full) second's worth.
        """
        bucket = make_bucket(1, clock=self.clock, sleep=self.sleep)
        assert bucket is not None
        written = []
        write = limited(written.append, bucket)
        for _ in range(64):
            write(b"x" * 65536)
        self.assertAlmostEqual(self.now, 3.0, places=6)
        self.assertEqual(len(written), 64)

    def test_large_write(self) -> None:
        """
        One write larger than the capacity is paid in capacity-sized steps.
        """
        bucket = TokenBucket(100, clock=self.clock, sleep=self.sleep)
        bucket.take(350)
        self.assertAlmostEqual(self.now, 2.5, places=6)

    def test_unlimited(self) -> None:
        """
        A limit below 1 is no limiter at all.
        """
        self.assertIsNone(make_bucket(0))
        self.assertIsNone(make_bucket(-5))
        write = list.append
        self.assertIs(limited(write, None), write)  # type: ignore[arg-type]


class _Consumer:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass


class PartProducerTests(SynchronousTestCase):
    """
    The body of one part (backups.md §6.2).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        # One iteration per turn, whatever the real time.
        self.cooperator = Cooperator(scheduler=lambda work: self.clock.callLater(0, work),
                                     terminationPredicateFactory=lambda: lambda: True)
        self.path = self.mktemp()
        with open(self.path, "wb") as f:
            f.write(bytes(range(256)) * 40)

    def run_producer(self, producer: PartProducer) -> tuple[_Consumer, list[Any]]:
        consumer = _Consumer()
        result: list[Any] = []
        producer.startProducing(consumer).addBoth(result.append)
        for _ in range(100):
            self.clock.advance(0)
        return consumer, result

    def test_exact_range_in_chunks(self) -> None:
        """
        ``length`` is the part's length; the bytes are the file's range, read in chunks.
        """
        producer = PartProducer(self.path, 1000, 3000, self.cooperator, read_size=512)
        self.assertEqual(producer.length, 3000)
        consumer, result = self.run_producer(producer)
        self.assertEqual(result, [None])
        with open(self.path, "rb") as f:
            f.seek(1000)
            self.assertEqual(consumer.data, f.read(3000))

    def test_short_file_fails(self) -> None:
        """
        A file shorter than the range fails the body.
        """
        consumer, result = self.run_producer(PartProducer(self.path, 10000, 500,
                                                          self.cooperator))
        self.assertEqual(len(consumer.data), 240)
        self.assertTrue(result[0].check(S3Error))

    def test_stop_closes(self) -> None:
        """
        ``stopProducing`` stops reading and closes the file; the Deferred never fires.
        """
        opened: list[Any] = []
        steps: list[Any] = []

        def opener(path: str) -> Any:
            opened.append(open(path, "rb"))
            return opened[-1]

        # A cooperator stepped by hand: one chunk per step.
        stepped = Cooperator(scheduler=steps.append,
                             terminationPredicateFactory=lambda: lambda: True)
        producer = PartProducer(self.path, 0, 10000, stepped, read_size=100, opener=opener)
        consumer = _Consumer()
        result: list[Any] = []
        producer.startProducing(consumer).addBoth(result.append)
        steps.pop(0)()
        producer.stopProducing()
        while steps:
            steps.pop(0)()
        self.assertTrue(opened[0].closed)
        self.assertEqual(len(consumer.data), 100)
        self.assertEqual(result, [])

    def test_ranges(self) -> None:
        """
        §6.1: part *i* covers ``[(i−1)·part_size, min(i·part_size, size))``; the Panel's list
        must have ``ceil(size / part_size)`` URLs.
        """
        self.assertEqual(part_ranges(10, 4), [(0, 4), (4, 4), (8, 2)])
        self.assertEqual(part_ranges(8, 4), [(0, 4), (4, 4)])
        check_part_count(["a", "b", "c"], 10, 4)
        self.assertRaises(S3Error, check_part_count, ["a", "b"], 10, 4)
        self.assertRaises(S3Error, part_ranges, 0, 4)


class _Store(Resource):
    """
    An S3 endpoint scripted per request: a list of statuses; records each body.
    """

    isLeaf = True

    def __init__(self, statuses: list[int]) -> None:
        super().__init__()
        self.statuses = statuses
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []

    def render_PUT(self, request: Request) -> bytes:
        assert request.content is not None
        body = request.content.read()
        self.bodies.append(body)
        self.headers.append({k.decode().lower(): v[0].decode()
                             for k, v in request.requestHeaders.getAllRawHeaders()})
        status = self.statuses.pop(0)
        request.setResponseCode(status)
        if status == 200:
            request.setHeader(b"ETag", b'"' + hashlib.md5(body).hexdigest().encode() + b'"')
        return b"<Error/>" if status != 200 else b""


class PartRetryTests(SynchronousTestCase):
    """
    Part uploads and their retries (backups.md §6.2).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.cooperator = Cooperator(scheduler=lambda work: self.clock.callLater(0, work))
        self.path = self.mktemp()
        with open(self.path, "wb") as f:
            f.write(os.urandom(200_000))

    def upload(self, statuses: list[int], advance: float = 1.0) -> tuple[_Store, list[Any]]:
        store = _Store(statuses)
        agent = RequestTraversalAgent(store)
        result: list[Any] = []
        d = Deferred.fromCoroutine(upload_part(
            agent, self.clock, self.cooperator, "http://s3.test/b/k?partNumber=1&X-Amz-Signature"
            "=a%2Fb", self.path, 50_000, 100_000, jitter=lambda: 0.5))
        d.addBoth(result.append)
        for _ in range(400):
            self.clock.advance(0)
            agent.flush()
            if result:
                break
            if not self.clock.getDelayedCalls() or all(
                    c.getTime() > self.clock.seconds() for c in self.clock.getDelayedCalls()):
                self.clock.advance(advance)
        return store, result

    def test_503_then_200_sends_the_whole_part_twice(self) -> None:
        """
        backups.md §13.5: a part that gets one 503 and then 200 is uploaded twice with
        identical bodies (the retry starts from the part's first byte); the ETag is kept
        verbatim.
        """
        store, result = self.upload([503, 200])
        with open(self.path, "rb") as f:
            f.seek(50_000)
            part = f.read(100_000)
        self.assertEqual(store.bodies, [part, part])
        self.assertEqual(result, ['"' + hashlib.md5(part).hexdigest() + '"'])
        self.assertEqual(store.headers[0]["content-type"], "application/x-gzip")
        self.assertEqual(store.headers[0]["content-length"], "100000")
        self.assertNotIn("expect", store.headers[0])

    def test_4xx_is_final(self) -> None:
        """
        A 403 (an expired presigned URL) fails at once, without a retry.
        """
        store, result = self.upload([403])
        self.assertEqual(len(store.bodies), 1)
        self.assertTrue(result[0].check(S3Error))

    def test_budget(self) -> None:
        """
        5xx answers are retried with growing waits until a minute has passed, then the part
        fails.
        """
        store, result = self.upload([500] * 50, advance=0.25)
        self.assertTrue(result[0].check(S3Error))
        self.assertLessEqual(self.clock.seconds(), 60.0)
        self.assertGreater(len(store.bodies), 3)
        self.assertLess(len(store.bodies), 10)


class SlotTests(SynchronousTestCase):
    """
    ``system.backups.max_concurrent`` (backups.md §10).
    """

    def test_queue(self) -> None:
        """
        With a limit of 2, the third waits until one is released; 0 means unlimited; a changed
        limit applies at the next release.
        """
        limit = [2]
        slots = Slots(lambda: limit[0])
        got: list[int] = []
        for n in range(4):
            slots.acquire().addCallback(lambda _, n=n: got.append(n))
        self.assertEqual((got, slots.running, slots.waiting), ([0, 1], 2, 2))
        slots.release()
        self.assertEqual(got, [0, 1, 2])
        limit[0] = 0
        slots.release()
        self.assertEqual(got, [0, 1, 2, 3])

    def test_cancel_leaves_queue(self) -> None:
        """
        A cancelled wait leaves the queue.
        """
        slots = Slots(lambda: 1)
        slots.acquire()
        waiting = slots.acquire()
        waiting.addErrback(lambda f: None)
        waiting.cancel()
        self.assertEqual(slots.waiting, 0)


class ConcurrencyTests(SynchronousTestCase):
    """
    Backups against each other and the server's state (backups.md §10).
    """

    def setUp(self, **backups: Any) -> None:
        self.h = BackupHarness(FilePath(self.mktemp()),
                               system={"backups": dict({"max_concurrent": 1}, **backups)})
        self.h.state.auto_create_backups = True
        self.server = self.h.add_server()
        fill(self.server.volume.root, {"a": b"a"})
        self.jobs: list[tuple[Deferred[Any], Any, tuple[Any, ...]]] = []

        def held(fn: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            self.jobs.append((d, fn, args))
            return d

        self.h.services.run_job = held

    def run_jobs(self) -> None:
        while self.jobs:
            d, fn, args = self.jobs.pop(0)
            try:
                result = fn(*args)
            except Exception as e:
                d.errback(e)
            else:
                d.callback(result)
            self.h.pump()

    def post(self, uuid: str) -> int:
        return self.h.post("/api/servers/{}/backup".format(SERVER),
                           {"adapter": "wings", "uuid": uuid, "ignore": ""}).status

    def test_queued_backups_answer_202(self) -> None:
        """
        With ``max_concurrent: 1`` a second backup answers 202 and waits for the slot; the same
        UUID again while it generates is 409; both complete in turn.
        """
        self.assertEqual(self.post(BACKUP), 202)
        self.assertEqual(self.post(OTHER_BACKUP), 202)
        self.assertEqual(self.post(BACKUP), 409)
        self.assertEqual((self.h.services.slots.running, self.h.services.slots.waiting), (1, 1))
        self.assertEqual(len(self.jobs), 1)
        self.run_jobs()
        reports = [r["successful"] for r in self.h.state.backup_reports]
        self.assertEqual(reports, [True, True])
        self.assertEqual(self.h.services.slots.running, 0)
        self.assertEqual(self.post(BACKUP), 202)

    def test_generating_backup_not_downloadable(self) -> None:
        """
        downloads-uploads.md §4 step 7: a backup being generated is not served.
        """
        self.post(BACKUP)
        self.assertFalse(self.h.services.servable(SERVER, BACKUP))
        self.run_jobs()
        self.assertTrue(self.h.services.servable(SERVER, BACKUP))
        self.assertFalse(self.h.services.servable("aaaaaaaa-3b4d-4e5f-9a6b-7c8d9e0f1a2b",
                                                  BACKUP))

    def test_delete_cancels_generation(self) -> None:
        """
        backups.md §9.1: deleting a backup being generated cancels it: the writer stops at its
        next piece and leaves nothing, the failure is reported, then the deletion completes.
        """
        self.post(BACKUP)
        deleted = Deferred.fromCoroutine(self.h.services.delete(self.server, BACKUP))
        self.assertNoResult(deleted)
        self.run_jobs()
        self.successResultOf(deleted)
        self.assertEqual([r["successful"] for r in self.h.state.backup_reports], [False])
        self.assertEqual(os.listdir(self.h.config.system.backup_directory), [])
        self.assertNotIn(BACKUP, self.h.services.generating)
        self.assertIsNone(self.h.services.index.get(BACKUP))

    def test_server_deletion_cancels_and_removes(self) -> None:
        """
        backups.md §4.2 and §9.3: deleting the server cancels its backup (reported as failed);
        with ``remove_backups_on_server_delete`` its recorded archives go too.
        """
        self.setUp(remove_backups_on_server_delete=True)
        self.post(BACKUP)
        self.run_jobs()
        self.post(OTHER_BACKUP)
        self.assertEqual(len(os.listdir(self.h.config.system.backup_directory)), 1)
        self.assertEqual(self.h.get("/api/servers/" + SERVER, method="DELETE").status, 204)
        self.run_jobs()
        self.assertEqual([r["successful"] for r in self.h.state.backup_reports], [True, False])
        self.assertEqual(os.listdir(self.h.config.system.backup_directory), [])

    def test_server_deletion_keeps_backups_by_default(self) -> None:
        """
        backups.md §9.3: by default (upstream) a deleted server's archives stay.
        """
        self.post(BACKUP)
        self.run_jobs()
        self.assertEqual(self.h.get("/api/servers/" + SERVER, method="DELETE").status, 204)
        self.assertEqual(os.listdir(self.h.config.system.backup_directory),
                         [BACKUP + ".tar.gz"])


class WebsocketGateTests(SynchronousTestCase):
    """
    backups.md §13.9 through a real websocket session.
    """

    def test_backup_read_gate(self) -> None:
        """
        backups.md §13.9: a socket holding ``backup.read`` gets ``backup completed`` and, on
        success only, ``backup completed:<uuid>``; a socket without it gets neither.
        """
        from .test_ws_session import SessionCase

        case = SessionCase()
        case.setUp()
        try:
            allowed = case.channel
            case.auth(["backup.read", "websocket.connect"])
            from .test_ws_session import FakeChannel
            denied = FakeChannel()
            other = case.open_session(denied)
            case.send(__import__("tests.unit.test_ws_session", fromlist=["frame"]).frame(
                "auth", case.token(["websocket.connect"])), session=other)
            case.take(allowed)
            case.take(denied)
            for name, argument in report.result_events(BACKUP, BackupResult("ab", 1)):
                case.server.events.publish(name, argument)
            for name, argument in report.result_events(OTHER_BACKUP, None):
                case.server.events.publish(name, argument)
            self.assertEqual([e for e, _ in case.take(allowed)],
                             ["backup completed", "backup completed:" + BACKUP,
                              "backup completed"])
            self.assertEqual(case.take(denied), [])
        finally:
            case.tearDown() if hasattr(case, "tearDown") else None


class DownloadCheckTests(SynchronousTestCase):
    """
    The restore download's checks (backups.md §8.3).
    """

    class _Response:
        def __init__(self, content_type: str | None) -> None:
            from twisted.web.http_headers import Headers
            self.headers = Headers()
            if content_type is not None:
                self.headers.addRawHeader(b"content-type", content_type.encode())

    def test_content_types(self) -> None:
        """
        backups.md §13.7: ``application/gzip; charset=binary`` is accepted (parameters ignored,
        case-insensitive); upstream's substring tricks (``gzip``, ``application``) and others are
        refused with the spec's text.
        """
        for good in ("application/gzip; charset=binary", "application/x-gzip",
                     "Application/GZIP"):
            check_content_type(self._Response(good))  # type: ignore[arg-type]
        for bad in ("gzip", "application", "text/plain", "", None, "application/octet-stream"):
            with self.assertRaises(DownloadRefused) as caught:
                check_content_type(self._Response(bad))  # type: ignore[arg-type]
            self.assertEqual(str(caught.exception),
                             'The provided backup link is not a supported content type. "{}" is '
                             'not application/x-gzip.'.format(bad or ""))

    def test_host_policy(self) -> None:
        """
        ``restore_host_allowlist`` takes host names, addresses and networks; loopback is
        refused unless listed.
        """
        from wings_twisted.files.netguard import RefusedAddress
        policy = HostPolicy(["s3.internal", "10.1.0.0/16"])
        self.assertTrue(policy.exempt("S3.Internal."))
        policy.addresses.check("10.1.2.3", 9000)
        self.assertRaises(RefusedAddress, policy.addresses.check, "127.0.0.1", 9000)
        HostPolicy(["127.0.0.1"]).addresses.check("127.0.0.1", 9000)


class _Transport:
    def __init__(self) -> None:
        self.paused = 0
        self.resumed = 0
        self.stopped = False

    def pauseProducing(self) -> None:
        self.paused += 1

    def resumeProducing(self) -> None:
        self.resumed += 1

    def stopProducing(self) -> None:
        self.stopped = True


class BodyQueueTests(SynchronousTestCase):
    """
    The S3 body handed to the extraction thread with back-pressure (backups.md §12).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.calls: list[Any] = []
        reactor = self.clock
        reactor.callFromThread = lambda fn, *a: fn(*a)  # type: ignore[attr-defined]
        self.body = BodyQueue(reactor, high_water=100, low_water=40, idle_timeout=300)
        self.transport = _Transport()
        self.body.makeConnection(self.transport)  # type: ignore[arg-type]

    def test_pause_and_resume(self) -> None:
        """
        The transport is paused above the high-water mark and resumed once the reader drained
        below the low-water mark; the bytes arrive in order, then the end.
        """
        from twisted.python.failure import Failure
        from twisted.web.client import ResponseDone
        for _ in range(6):
            self.body.dataReceived(b"x" * 20)
        self.assertEqual(self.transport.paused, 1)
        out = b""
        while self.transport.resumed == 0:
            out += self.body.read(20)
        self.assertEqual(len(out), 80)
        self.body.connectionLost(Failure(ResponseDone()))
        while True:
            data = self.body.read(1000)
            if not data:
                break
            out += data
        self.assertEqual(out, b"x" * 120)

    def test_idle_timeout(self) -> None:
        """
        No byte for five minutes (while not paused by the reader) drops the connection and
        fails the read.
        """
        self.body.dataReceived(b"abc")
        self.clock.advance(299)
        self.body.dataReceived(b"d")
        self.clock.advance(299)
        self.assertFalse(self.transport.stopped)
        self.clock.advance(2)
        self.assertTrue(self.transport.stopped)
        self.assertEqual(self.body.read(10), b"abc")
        self.assertEqual(self.body.read(10), b"d")
        self.assertRaises(TimeoutError, self.body.read, 10)

    def test_abandon(self) -> None:
        """
        A reader blocked on an empty queue gives up once abandoned.
        """
        self.body.abandon()
        self.assertRaises(ConnectionAbortedError, self.body.read, 10)


class IndexTests(SynchronousTestCase):
    """
    The ownership index (backups.md §3).
    """

    def test_persisted(self) -> None:
        """
        Entries survive a restart; ``generating`` ones (a run that died mid-backup) do not.
        """
        path = os.path.join(self.mktemp(), "wings.db")
        index = BackupIndex(path, run_inline)
        index.record(BACKUP, SERVER, "wings", 1.0)
        index.mark(BACKUP, "complete")
        index.record(OTHER_BACKUP, SERVER, "s3", 2.0)
        again = BackupIndex(path, run_inline)
        self.successResultOf(Deferred.fromCoroutine(again.load()))
        entry = again.get(BACKUP)
        assert entry is not None
        self.assertEqual((entry.server, entry.adapter, entry.state), (SERVER, "wings", "complete"))
        self.assertIsNone(again.get(OTHER_BACKUP))
        self.assertTrue(again.foreign(BACKUP, "aaaaaaaa-3b4d-4e5f-9a6b-7c8d9e0f1a2b"))
        self.assertFalse(again.foreign(OTHER_BACKUP, "anything"))
        again.remove(BACKUP)
        third = BackupIndex(path, run_inline)
        self.successResultOf(Deferred.fromCoroutine(third.load()))
        self.assertIsNone(third.get(BACKUP))


class _DownloadCase(SynchronousTestCase):
    """
    ``open_download`` over a memory reactor and a scripted resolver.
    """

    def open(self, url: str, allow: list[str] | None = None,
             answers: dict[str, list[str]] | None = None) -> Any:
        from twisted.internet.address import IPv4Address
        from twisted.test.proto_helpers import MemoryReactorClock

        from wings_twisted.backups.download import open_download

        class Resolver:
            def resolveHostName(self, receiver: Any, name: str, port: int = 0,
                                *args: Any, **kwargs: Any) -> None:
                receiver.resolutionBegan(None)
                for address in (answers or {}).get(name, []):
                    receiver.addressResolved(IPv4Address("TCP", address, port))
                receiver.resolutionComplete()

        reactor = MemoryReactorClock()
        d = Deferred.fromCoroutine(open_download(url, HostPolicy(allow or []), reactor, reactor,
                                                 Resolver(), None))  # type: ignore[arg-type]
        return reactor, d

    def refused(self, d: Deferred[Any]) -> str:
        return str(self.failureResultOf(d, DownloadRefused).value)


class DownloadGuardTests(_DownloadCase):
    """
    The restore download's address filter (backups.md §8.3), before any connection.
    """

    def test_blocked_addresses(self) -> None:
        """
        Loopback, private and link-local targets are refused with the spec's text, by address
        or through a name, and nothing is connected.
        """
        for url, answers in (("http://127.0.0.1:9000/b/k", None),
                             ("https://169.254.169.254/latest", None),
                             ("http://s3.example/b/k", {"s3.example": ["93.184.216.34",
                                                                       "10.0.0.5"]})):
            reactor, d = self.open(url, answers=answers)
            self.assertEqual(self.refused(d), "The provided backup link resolves to a blocked "
                                              "address.")
            self.assertEqual(reactor.tcpClients, [])

    def test_allowlist_and_bad_links(self) -> None:
        """
        A listed address is connected to; a URL that is not http(s) with a host is refused.
        """
        reactor, d = self.open("http://127.0.0.1:9000/b/k", allow=["127.0.0.1"])
        self.assertEqual([c[:2] for c in reactor.tcpClients], [("127.0.0.1", 9000)])
        d.cancel()
        self.failureResultOf(d)
        for bad in ("ftp://127.0.0.1/x", "http:///x", "file:///etc/passwd"):
            _, d = self.open(bad)
            self.assertIn("backup link", self.refused(d))


class DownloadRedirectTests(_DownloadCase):
    """
    Redirects of the restore download (backups.md §8.3): each target is checked like the first
    URL before anything connects to it, and at most 10 are followed.
    """

    def answer(self, reactor: Any, index: int, response: bytes) -> None:
        """
        Connect the ``index``-th TCP attempt and feed it ``response``.
        """
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        host, port, factory = reactor.tcpClients[index][:3]
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(response)

    def test_redirect_to_a_blocked_address(self) -> None:
        """
        A redirect from an allowed host to a private address is refused; the private address is
        never connected to.
        """
        reactor, d = self.open("http://127.0.0.1:9000/b/k", allow=["127.0.0.1"])
        self.answer(reactor, 0, b"HTTP/1.1 302 Found\r\nLocation: http://10.0.0.5/b/k\r\n"
                                b"Content-Length: 0\r\n\r\n")
        self.assertEqual(self.refused(d), "The provided backup link resolves to a blocked address.")
        self.assertEqual([c[:2] for c in reactor.tcpClients], [("127.0.0.1", 9000)])

    def test_relative_redirect_followed(self) -> None:
        """
        A relative ``Location`` is resolved against the current URL and connected to after the
        check; its ``200`` with a gzip type is the download.
        """
        reactor, d = self.open("http://127.0.0.1:9000/b/k?sig=1", allow=["127.0.0.1"])
        self.answer(reactor, 0, b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /other/k\r\n"
                                b"Content-Length: 0\r\n\r\n")
        self.assertEqual(len(reactor.tcpClients), 2)
        self.answer(reactor, 1, b"HTTP/1.1 200 OK\r\nContent-Type: application/gzip\r\n"
                                b"Content-Length: 3\r\n\r\n")
        response = self.successResultOf(d)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.request.absoluteURI, b"http://127.0.0.1:9000/other/k")

    def test_too_many_redirects(self) -> None:
        """
        The eleventh redirect in a row fails the restore.
        """
        reactor, d = self.open("http://127.0.0.1:9000/0", allow=["127.0.0.1"])
        for hop in range(11):
            self.answer(reactor, hop, "HTTP/1.1 302 Found\r\nLocation: /{}\r\n"
                                      "Content-Length: 0\r\n\r\n".format(hop + 1).encode())
        self.assertEqual(len(reactor.tcpClients), 11)
        self.assertIn("too many redirects", self.refused(d))
