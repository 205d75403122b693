"""
Tests for ``wings_twisted.streams.spool``: the disk spool on its own, with a
fake producer, a worker whose jobs finish when the test says so, and real
atomic writes into a volume under ``mktemp``.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from wings_twisted.fs.quota import BYTES
from wings_twisted.fs import QuotaExceeded, Volume
from wings_twisted.streams.spool import Spool

HIGH, LOW, JOB_MIN, JOB_MAX = 3000, 1000, 1000, 2000


@implementer(IPushProducer)
class _Producer:
    """
    Records the pauses and resumes it is asked for.
    """

    def __init__(self) -> None:
        self.events: list[str] = []
        self.paused = False

    def pauseProducing(self) -> None:
        self.events.append("pause")
        self.paused = True

    def resumeProducing(self) -> None:
        self.events.append("resume")
        self.paused = False

    def stopProducing(self) -> None:
        self.events.append("stop")


class _Worker:
    """
    A ``run_blocking`` whose jobs wait until the test finishes them, one at a
    time, in the order they were handed over.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []
        self.most_at_once = 0

    def __call__(self, fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append((fn, args, d))
        self.most_at_once = max(self.most_at_once, len(self.pending))
        return d

    def finish(self) -> None:
        """
        Run the oldest waiting job now and report its outcome.
        """
        fn, args, d = self.pending.pop(0)
        try:
            result = fn(*args)
        except Exception:
            fail().chainDeferred(d)
        else:
            succeed(result).chainDeferred(d)

    def finish_all(self) -> None:
        """
        Finish jobs until none is waiting (each may start the next).
        """
        while self.pending:
            self.finish()


class _Sink:
    """
    A ``FileSink`` that records what happens to it in a shared log.
    """

    def __init__(self, name: str, log: list[Any], *, fail_on: tuple[str, ...] = ()) -> None:
        self.name = name
        self.log = log
        self.fail_on = fail_on

    def _record(self, *entry: Any) -> None:
        self.log.append((self.name,) + entry)
        if entry[0] in self.fail_on:
            raise OSError("{} of {} failed".format(entry[0], self.name))

    def write_many(self, chunks: list[bytes]) -> None:
        self._record("write", b"".join(chunks), len(chunks))

    def commit(self) -> None:
        self._record("commit")

    def abort(self) -> None:
        self._record("abort")


class _Base(SynchronousTestCase):
    """
    A spool with small watermarks over a controllable worker, and a volume.
    """

    def setUp(self) -> None:
        self.worker = _Worker()
        self.spool = Spool(self.worker, high_water=HIGH, low_water=LOW, job_min=JOB_MIN,
                           job_max=JOB_MAX)
        self.producer = _Producer()
        root = FilePath(self.mktemp())
        root.makedirs()
        self.volume = Volume(root.path, uid=os.getuid(), gid=os.getgid(), chown=False,
                             disk_check_interval=0, accounting=BYTES
        )
        self.log: list[Any] = []

    def opener(self, name: str, **kwargs: Any) -> Callable[[], _Sink]:
        """
        An opening callable that records its call and returns a ``_Sink``.
        """
        def open_file() -> _Sink:
            self.log.append((name, "begin"))
            return _Sink(name, self.log, **kwargs)
        return open_file

    def tree(self) -> list[str]:
        """
        Every path in the volume.
        """
        found = []
        for top, dirs, files in os.walk(self.volume.root):
            for name in dirs + files:
                found.append(os.path.relpath(os.path.join(top, name), self.volume.root))
        return sorted(found)

    def read(self, path: str) -> bytes:
        with open(os.path.join(self.volume.root, path), "rb") as f:
            return f.read()


class SpoolBackPressureTests(_Base):
    """
    The spool pauses its registered producer by how much waits for the disk.
    """

    def test_is_a_consumer(self) -> None:
        """
        The spool provides ``IConsumer``.
        """
        from twisted.internet.interfaces import IConsumer
        self.assertTrue(verifyObject(IConsumer, self.spool))

    def test_pause_above_high_resume_below_low(self) -> None:
        """
        The producer is paused once more than the high-water mark waits, and
        resumed only when less than the low-water mark does.
        """
        self.spool.registerProducer(self.producer, True)
        self.spool.begin(self.opener("a"))
        self.worker.finish()  # the open
        for _ in range(3):
            self.spool.write(b"x" * 1000)
        self.assertEqual(self.producer.events, [])
        self.spool.write(b"x" * 500)
        self.assertEqual(self.producer.events, ["pause"])
        self.assertEqual(self.spool.buffered, 3500)
        self.worker.finish()  # the first 1000 (the job started at once)
        self.assertEqual(self.spool.buffered, 2500)
        self.assertEqual(self.producer.events, ["pause"])
        self.worker.finish()  # the next 2000; 500 wait for a fuller batch
        self.assertEqual(self.spool.buffered, 500)
        self.assertEqual(self.producer.events, ["pause", "resume"])

    def test_register_when_full(self) -> None:
        """
        A producer registered while the spool is over the high-water mark is
        paused at once.
        """
        self.spool.begin(self.opener("a"))
        self.spool.write(b"x" * 4000)
        self.spool.registerProducer(self.producer, True)
        self.assertEqual(self.producer.events, ["pause"])

    def test_unregister_resumes(self) -> None:
        """
        Unregistering a producer the spool paused resumes it; later pressure
        touches it no more.
        """
        self.spool.registerProducer(self.producer, True)
        self.spool.begin(self.opener("a"))
        self.spool.write(b"x" * 4000)
        self.spool.unregisterProducer()
        self.assertEqual(self.producer.events, ["pause", "resume"])
        self.spool.write(b"x" * 4000)
        self.worker.finish_all()
        self.assertEqual(self.producer.events, ["pause", "resume"])

    def test_push_producers_only(self) -> None:
        """
        A pull producer or a second producer is refused.
        """
        self.assertRaises(ValueError, self.spool.registerProducer, self.producer, False)
        self.spool.registerProducer(self.producer, True)
        self.assertRaises(RuntimeError, self.spool.registerProducer, _Producer(), True)

    def test_several_files_stay_bounded(self) -> None:
        """
        A producer that writes whenever it is not paused sends several files
        in sequence through a slow disk: what waits never exceeds the
        high-water mark by more than one chunk, and every file arrives whole.
        """
        self.spool.registerProducer(self.producer, True)
        files = {"f{}.bin".format(i): os.urandom(2500 + 700 * i) for i in range(4)}
        chunk = 300
        most = 0
        for name, data in files.items():
            self.spool.begin(lambda name=name: self.volume.begin_write("up", name))
            for start in range(0, len(data), chunk):
                while self.producer.paused:
                    self.worker.finish()
                self.spool.write(data[start:start + chunk])
                most = max(most, self.spool.buffered)
            self.spool.commit()
        done = self.spool.flush()
        self.worker.finish_all()
        self.successResultOf(done)
        self.assertLessEqual(most, HIGH + chunk)
        self.assertIn("pause", self.producer.events)
        self.assertEqual(self.producer.events.count("pause"), self.producer.events.count("resume"))
        self.assertEqual(self.worker.most_at_once, 1)
        for name, data in files.items():
            self.assertEqual(self.read("up/" + name), data)
        self.assertEqual(self.tree(), ["up"] + ["up/" + name for name in sorted(files)])


class SpoolJobTests(_Base):
    """
    How the spool turns calls into disk jobs.
    """

    def test_jobs_in_order(self) -> None:
        """
        Jobs run one at a time in the order they were asked for, across files.
        """
        self.spool.begin(self.opener("a"))
        self.spool.write(b"a" * 10)
        self.spool.commit()
        self.spool.begin(self.opener("b"))
        self.assertEqual(len(self.worker.pending), 1)
        for _ in range(4):
            self.worker.finish()  # a: begin, write, commit; b: begin
        self.spool.write(b"b" * 10)
        self.spool.abort()
        self.spool.begin(self.opener("c"))
        self.spool.write(b"c" * 10)
        self.spool.commit()
        self.worker.finish_all()
        self.assertEqual(self.worker.most_at_once, 1)
        self.assertEqual(self.log, [("a", "begin"), ("a", "write", b"a" * 10, 1), ("a", "commit"),
                                    ("b", "begin"), ("b", "abort"),
                                    ("c", "begin"), ("c", "write", b"c" * 10, 1), ("c", "commit")])

    def test_batching(self) -> None:
        """
        Consecutive chunks are written in batches of ``job_min`` to about
        ``job_max`` bytes; the last, smaller batch goes once the file ends.
        """
        self.spool.begin(self.opener("a"))
        self.worker.finish()
        for _ in range(9):
            self.spool.write(b"x" * 100)
        self.assertEqual(self.worker.pending, [])  # below job_min: wait for more
        for _ in range(46):
            self.spool.write(b"x" * 100)
        self.worker.finish_all()
        self.spool.commit()
        self.worker.finish_all()
        writes = [(entry[2], entry[3]) for entry in self.log if entry[1] == "write"]
        # The first job took the 10 chunks there were; then batches of 20.
        self.assertEqual([len(data) for data, _ in writes], [1000, 2000, 2000, 500])
        self.assertEqual([count for _, count in writes], [10, 20, 20, 5])
        self.assertEqual(self.log[-1], ("a", "commit"))

    def test_chunks_are_not_copied(self) -> None:
        """
        The sink receives the very objects given to ``write``.
        """
        seen: list[list[bytes]] = []

        class Keeper(_Sink):
            def write_many(self, chunks: list[bytes]) -> None:
                seen.append(chunks)

        chunks = [os.urandom(600), os.urandom(600)]
        self.spool.begin(lambda: Keeper("k", self.log))
        for chunk in chunks:
            self.spool.write(chunk)
        self.worker.finish_all()
        self.assertEqual(len(seen), 1)
        self.assertTrue(all(a is b for a, b in zip(seen[0], chunks)))

    def test_flush(self) -> None:
        """
        ``flush`` writes a batch below ``job_min`` at once and fires when
        every queued job has run; on an idle spool it fires at once.
        """
        self.successResultOf(self.spool.flush())
        self.spool.begin(self.opener("a"))
        self.spool.write(b"small")
        done = self.spool.flush()
        self.assertNoResult(done)
        self.worker.finish()  # begin
        self.assertNoResult(done)
        self.worker.finish()  # the small batch
        self.successResultOf(done)
        self.assertEqual(self.log[-1], ("a", "write", b"small", 1))
        self.assertEqual(self.spool.buffered, 0)

    def test_then_after_commit(self) -> None:
        """
        ``check`` runs before the sink's commit on the worker; ``then`` after
        it succeeded.
        """
        self.spool.begin(self.opener("a"))
        self.spool.commit(check=lambda: self.log.append(("check",)),
                          then=lambda: self.log.append(("then",)))
        self.worker.finish_all()
        self.assertEqual(self.log, [("a", "begin"), ("check",), ("a", "commit"), ("then",)])

    def test_real_file(self) -> None:
        """
        With ``Volume.begin_write`` the bytes end up in the destination,
        nothing else is left, and usage is accounted.
        """
        data = os.urandom(5000)
        self.spool.begin(lambda: self.volume.begin_write("a/b", "f.bin"))
        for start in range(0, len(data), 700):
            self.spool.write(data[start:start + 700])
        self.spool.commit()
        done = self.spool.flush()
        self.worker.finish_all()
        self.successResultOf(done)
        self.assertEqual(self.read("a/b/f.bin"), data)
        self.assertEqual(self.tree(), ["a", "a/b", "a/b/f.bin"])

    def test_misuse(self) -> None:
        """
        Writing or committing outside a file, or beginning a file before the
        previous one ended, is a programming error.
        """
        self.assertRaises(RuntimeError, self.spool.write, b"x")
        self.assertRaises(RuntimeError, self.spool.commit)
        self.spool.begin(self.opener("a"))
        self.assertRaises(RuntimeError, self.spool.begin, self.opener("b"))


class SpoolFailureTests(_Base):
    """
    The first failing job stops the spool.
    """

    def test_failure_aborts_and_is_reported(self) -> None:
        """
        A failing write aborts its file, drops what was queued after it
        (another file's open included), resumes the producer, and is the
        failure every ``flush`` reports; later calls are ignored.
        """
        self.spool.registerProducer(self.producer, True)
        self.spool.begin(self.opener("a", fail_on=("write",)))
        self.spool.write(b"x" * 2500)
        self.spool.write(b"y" * 1000)
        self.assertEqual(self.producer.events, ["pause"])
        self.spool.commit(then=lambda: self.log.append(("then",)))
        self.spool.begin(self.opener("b"))
        self.spool.write(b"z" * 10)
        done = self.spool.flush()
        self.worker.finish_all()
        self.failureResultOf(done, OSError)
        self.assertEqual(self.log, [("a", "begin"), ("a", "write", b"x" * 2500, 1), ("a", "abort")])
        self.assertEqual(self.producer.events, ["pause", "resume"])
        self.assertEqual(self.spool.buffered, 0)
        self.assertIsInstance(self.spool.failure.value, OSError)
        self.spool.begin(self.opener("c"))
        self.spool.write(b"ignored" * 1000)
        self.spool.commit()
        self.spool.abort()
        self.assertEqual(self.worker.pending, [])
        self.assertEqual(self.producer.events, ["pause", "resume"])
        self.failureResultOf(self.spool.flush(), OSError)

    def test_reported_once(self) -> None:
        """
        When the clean-up after a failure fails too, the first failure stays
        the spool's; the second is only logged.
        """
        self.spool.begin(self.opener("a", fail_on=("write", "abort")))
        self.spool.write(b"x" * 1500)
        done = self.spool.flush()
        self.worker.finish_all()
        self.assertEqual([entry[1] for entry in self.log], ["begin", "write", "abort"])
        self.assertEqual(str(self.failureResultOf(done, OSError).value), "write of a failed")
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_quota_leaves_no_trace(self) -> None:
        """
        A quota failure mid-file removes the temporary file and the
        directories made for it; an earlier file of the stream stays.
        """
        self.volume.set_disk_limit(3000)
        self.spool.begin(lambda: self.volume.begin_write("", "first.bin"))
        self.spool.write(b"1" * 100)
        self.spool.commit()
        self.spool.begin(lambda: self.volume.begin_write("new/dir", "big.bin"))
        for _ in range(10):
            self.spool.write(b"2" * 500)
        self.spool.commit()
        done = self.spool.flush()
        self.worker.finish_all()
        self.failureResultOf(done, QuotaExceeded)
        self.assertEqual(self.tree(), ["first.bin"])

    def test_failed_check_aborts(self) -> None:
        """
        A commit check that fails (the write guard) aborts the file, which
        is never committed.
        """
        def guard() -> None:
            raise PermissionError("not now")
        self.spool.begin(lambda: self.volume.begin_write("d", "g.txt"))
        self.spool.write(b"g")
        self.spool.commit(check=guard, then=lambda: self.log.append(("then",)))
        done = self.spool.flush()
        self.worker.finish_all()
        self.failureResultOf(done, PermissionError)
        self.assertEqual(self.tree(), [])
        self.assertEqual(self.log, [])

    def test_failed_open(self) -> None:
        """
        A file that cannot be opened fails the spool; its queued bytes are
        dropped and nothing is aborted.
        """
        def refuse() -> _Sink:
            raise PermissionError("denied")
        self.spool.begin(refuse)
        self.spool.write(b"x" * 1500)
        done = self.spool.flush()
        self.worker.finish_all()
        self.failureResultOf(done, PermissionError)
        self.assertEqual(self.log, [])
        self.assertEqual(self.spool.buffered, 0)


class SpoolAbortTests(_Base):
    """
    Giving up a file, or the whole stream.
    """

    def test_abort_removes_temp_file(self) -> None:
        """
        Aborting mid-file removes the temporary file and the directories
        made for it and leaves an existing destination intact; it is not a
        failure, and the next file is written normally.
        """
        os.makedirs(os.path.join(self.volume.root, "keep"))
        with open(os.path.join(self.volume.root, "keep", "f.txt"), "wb") as f:
            f.write(b"before")
        self.spool.begin(lambda: self.volume.begin_write("keep", "f.txt"))
        self.spool.write(b"x" * 2500)
        self.worker.finish()  # begin
        self.worker.finish()  # a batch
        self.assertEqual(len(self.tree()), 3)  # the temporary file is there
        self.spool.write(b"x" * 400)
        self.spool.abort()
        self.spool.begin(lambda: self.volume.begin_write("x/y", "other.txt"))
        self.spool.write(b"x" * 400)
        self.spool.abort()
        self.spool.begin(lambda: self.volume.begin_write("", "next.txt"))
        self.spool.write(b"next")
        self.spool.commit()
        done = self.spool.flush()
        self.worker.finish_all()
        self.successResultOf(done)
        self.assertIsNone(self.spool.failure)
        self.assertEqual(self.tree(), ["keep", "keep/f.txt", "next.txt"])
        self.assertEqual(self.read("keep/f.txt"), b"before")

    def test_abort_before_open(self) -> None:
        """
        Aborting a file whose open has not run drops the open itself.
        """
        self.spool.begin(self.opener("a"))
        self.spool.write(b"x" * 10)
        self.spool.commit()
        self.spool.begin(self.opener("b"))
        self.spool.write(b"x" * 10)
        self.spool.abort()
        self.worker.finish_all()
        self.assertEqual([entry for entry in self.log if entry[0] == "b"], [])

    def test_close_mid_file(self) -> None:
        """
        Closing (connection lost) while a file is being written aborts it
        once the running job is done, lets the earlier file's commit finish,
        resumes and forgets the producer, and ignores what comes after.
        """
        self.spool.registerProducer(self.producer, True)
        self.spool.begin(lambda: self.volume.begin_write("", "done.txt"))
        self.spool.write(b"d" * 10)
        self.spool.commit()
        self.spool.begin(lambda: self.volume.begin_write("half", "f.txt"))
        self.spool.write(b"x" * 2500)
        self.spool.write(b"x" * 1000)
        self.assertEqual(self.producer.events, ["pause"])
        for _ in range(4):
            self.worker.finish()  # begin, write, commit, begin
        self.spool.close()
        self.assertEqual(self.producer.events, ["pause", "resume"])
        self.spool.write(b"late")
        self.spool.commit()
        done = self.spool.flush()
        self.worker.finish_all()
        self.successResultOf(done)
        self.assertEqual(self.tree(), ["done.txt"])
        self.assertEqual(self.spool.buffered, 0)
        self.assertEqual(self.producer.events, ["pause", "resume"])

    def test_close_during_running_write(self) -> None:
        """
        Closing while a batch of the file is on the worker waits for it, then
        removes the temporary file.
        """
        self.spool.begin(lambda: self.volume.begin_write("", "f.txt"))
        self.spool.write(b"x" * 2500)
        self.worker.finish()  # begin; the batch is now running
        self.assertEqual(len(self.worker.pending), 1)
        self.spool.close()
        self.worker.finish_all()
        self.assertEqual(self.tree(), [])
        self.successResultOf(self.spool.flush())


class SpoolInlineTests(_Base):
    """
    ``inline_writes``: write batches run on the calling thread, in order with the other jobs
    (which stay on the worker), until one is slow.
    """

    def setUp(self) -> None:
        super().setUp()
        self.now = 0.0
        self.spool = Spool(self.worker, high_water=HIGH, low_water=LOW, job_min=JOB_MIN,
                           job_max=JOB_MAX, inline_writes=True, monotonic=lambda: self.now)

    def test_writes_inline_after_the_open(self) -> None:
        """
        Nothing is written before the file is open on the worker; then every batch is written
        during ``write`` itself, and the commit goes to the worker after them.
        """
        self.spool.registerProducer(self.producer, True)
        self.spool.begin(self.opener("a"))
        self.spool.write(b"x" * 1500)
        self.assertEqual(self.log, [])
        self.worker.finish()   # begin, then the batch waiting behind it, at once
        self.assertEqual(self.log, [("a", "begin"), ("a", "write", b"x" * 1500, 1)])
        self.spool.write(b"y" * 1200)
        self.assertEqual(self.log[-1], ("a", "write", b"y" * 1200, 1))
        self.assertEqual(self.worker.pending, [])
        self.spool.write(b"z" * 10)
        self.spool.commit()
        self.worker.finish_all()
        self.assertEqual(self.log[-2:], [("a", "write", b"z" * 10, 1), ("a", "commit")])
        self.assertEqual(self.spool.buffered, 0)
        self.assertEqual(self.producer.events, [])

    def test_slow_write_goes_back_to_the_worker(self) -> None:
        """
        A write that takes longer than ``INLINE_SLOW`` is the last inline one.
        """
        from wings_twisted.streams.spool import INLINE_SLOW
        test = self

        class Slow(_Sink):
            def write_many(self, chunks: list[bytes]) -> None:
                test.now += INLINE_SLOW * 2
                super().write_many(chunks)

        self.spool.begin(lambda: Slow("a", self.log))
        self.worker.finish()
        self.spool.write(b"x" * 1500)
        self.assertEqual(len([e for e in self.log if e[1] == "write"]), 1)
        self.spool.write(b"y" * 1500)
        self.assertEqual(len([e for e in self.log if e[1] == "write"]), 1)
        self.assertEqual(len(self.worker.pending), 1)
        self.worker.finish()
        self.assertEqual(self.log[-1], ("a", "write", b"y" * 1500, 1))

    def test_inline_failure_aborts(self) -> None:
        """
        A failing inline write is the spool's failure: the file is aborted on the worker, the
        producer resumed, ``flush`` fails.
        """
        self.spool.registerProducer(self.producer, True)
        self.spool.begin(lambda: self.volume.begin_write("", "f.txt"))
        self.worker.finish()
        self.volume.set_disk_limit(1000)
        self.spool.write(b"x" * 5000)
        self.assertIsInstance(self.spool.failure.value, QuotaExceeded)
        self.worker.finish_all()
        self.assertEqual(self.tree(), [])
        self.assertEqual(self.producer.events, ["pause", "resume"])
        self.failureResultOf(self.spool.flush(), QuotaExceeded)
