"""
``streams.feed.ThreadFeed`` and the threaded extraction of incoming transfers built on it: bytes
written on the "reactor thread" (the test) read by a real worker thread, with back-pressure on the
producer; the calls the worker makes to the reactor are queued and run by the test, so nothing
sleeps.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from wings_twisted.streams.feed import FeedAborted, ThreadFeed
from wings_twisted.transfers.extraction import RateLimit, ThreadedExtraction

from .archive_support import make_volume
from .test_pipe import ThreadReactor as Reactor
from .transfer_support import tar_gz



@implementer(IPushProducer)
class Producer:
    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0
        self.stopped = False

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.stopped = True


class ThreadFeedTests(SynchronousTestCase):
    """
    The feed between the reactor and a reading worker.
    """

    def test_bytes_in_order_and_end(self) -> None:
        """
        The worker reads every byte in order, in pieces of at most the size asked, then
        ``b""`` once the feed is closed.
        """
        reactor = Reactor()
        feed = ThreadFeed(reactor.call_from_thread)
        got: list[bytes] = []
        done = reactor.run_blocking(lambda: _read_all(feed, 5, got))
        for piece in (b"hello ", b"transfer", b"!"):
            feed.write(piece)
        feed.close()
        result: list[Any] = []
        done.addCallback(result.append)
        reactor.run_until(lambda: bool(result))
        self.assertEqual(b"".join(got), b"hello transfer!")
        self.assertTrue(all(len(piece) <= 5 for piece in got))
        self.assertEqual((feed.written, feed.consumed, feed.buffered), (15, 15, 0))

    def test_back_pressure(self) -> None:
        """
        Past the high-water mark the producer is paused (``write`` never blocks); the worker
        resumes it through ``call_from_thread`` once less than the low-water mark waits.
        """
        reactor = Reactor()
        feed = ThreadFeed(reactor.call_from_thread, high_water=100, low_water=40)
        producer = Producer()
        feed.registerProducer(producer, True)
        for _ in range(11):
            feed.write(b"x" * 10)
        self.assertTrue(producer.paused)
        self.assertEqual(feed.buffered, 110)
        gate = threading.Event()

        def read_some() -> int:
            total = 0
            while total < 80:
                total += len(feed.read(10))
            gate.set()
            return total

        done = reactor.run_blocking(read_some)
        result: list[Any] = []
        done.addCallback(result.append)
        reactor.run_until(lambda: bool(result) and not producer.paused)
        self.assertEqual(result, [80])
        self.assertEqual(producer.pauses, 1)
        feed.close()

    def test_abort(self) -> None:
        """
        ``abort`` drops what waits and makes a blocked ``read`` raise; later writes are dropped
        and the producer is let go.
        """
        reactor = Reactor()
        feed = ThreadFeed(reactor.call_from_thread, high_water=10, low_water=5)
        producer = Producer()
        feed.registerProducer(producer, True)
        feed.write(b"y" * 20)
        self.assertTrue(producer.paused)
        failed: list[Failure] = []

        def read_forever() -> None:
            while True:
                feed.read(100)

        reactor.run_blocking(read_forever).addErrback(failed.append)
        feed.abort()
        feed.release()
        reactor.run_until(lambda: bool(failed))
        failed[0].trap(FeedAborted)
        self.assertFalse(producer.paused)
        feed.write(b"z")
        self.assertEqual(feed.buffered, 0)
        with self.assertRaises(FeedAborted):
            feed.read(1)

    def test_drain(self) -> None:
        """
        ``drain`` reads to the end and says how much it dropped.
        """
        reactor = Reactor()
        feed = ThreadFeed(reactor.call_from_thread)
        feed.write(b"a" * 1000)
        feed.close()
        self.assertEqual(feed.drain(), 1000)


def _read_all(feed: ThreadFeed, size: int, into: list[bytes]) -> None:
    while True:
        data = feed.read(size)
        if not data:
            return
        into.append(data)


class ThreadedExtractionTests(SynchronousTestCase):
    """
    The archive part extracted on a worker thread while it arrives.
    """

    def test_extracts_and_drains(self) -> None:
        """
        A tar.gz fed in small pieces, followed by padding the tar reader does not read, is
        extracted; the padding is drained so the feed never stalls the connection.
        """
        reactor = Reactor()
        volume = make_volume(self.mktemp())
        content = os.urandom(200_000)
        data = tar_gz({"dir/file.bin": content, "b.txt": b"text"}, padding=5000)
        failures: list[Failure] = []
        extraction = ThreadedExtraction(volume, Producer(), failures.append,
                                        run_blocking=reactor.run_blocking,
                                        call_from_thread=reactor.call_from_thread)
        for start in range(0, len(data), 4096):
            extraction.write(data[start:start + 4096])
        stats: list[Any] = []
        extraction.finish().addCallback(stats.append)
        reactor.run_until(lambda: bool(stats))
        self.assertEqual(stats[0].files, 2)
        with open(os.path.join(volume.root, "dir/file.bin"), "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).digest(), hashlib.sha256(content).digest())
        self.assertEqual(failures, [])

    def test_damaged_archive_fails_early(self) -> None:
        """
        Garbage fails the extraction before the part ends: ``on_failure`` is called on the
        reactor thread and the producer is let go.
        """
        reactor = Reactor()
        volume = make_volume(self.mktemp())
        failures: list[Failure] = []
        producer = Producer()
        extraction = ThreadedExtraction(volume, producer, failures.append,
                                        run_blocking=reactor.run_blocking,
                                        call_from_thread=reactor.call_from_thread)
        extraction.write(b"this is not gzip" * 100)
        reactor.run_until(lambda: bool(failures))
        self.assertFalse(producer.paused)
        stopped: list[Any] = []
        extraction.abort().addCallback(stopped.append)
        reactor.run_until(lambda: bool(stopped))

    def test_abort_stops_the_worker(self) -> None:
        """
        ``abort`` while the worker waits for bytes: it stops, and nothing more is written.
        """
        reactor = Reactor()
        volume = make_volume(self.mktemp())
        failures: list[Failure] = []
        extraction = ThreadedExtraction(volume, Producer(), failures.append,
                                        run_blocking=reactor.run_blocking,
                                        call_from_thread=reactor.call_from_thread)
        data = tar_gz({"a": b"1" * 100_000})
        extraction.write(data[:len(data) // 2])
        stopped: list[Any] = []
        extraction.abort().addCallback(stopped.append)
        reactor.run_until(lambda: bool(stopped))
        self.assertEqual(failures, [])


class RateLimitTests(SynchronousTestCase):
    """
    ``system.transfers.download_limit``: a token bucket on the worker's reads.
    """

    def test_sleeps_for_what_it_owes(self) -> None:
        """
        One second's worth passes at once; beyond that each read sleeps until paid for; time
        that passes refills the bucket (at most one second's worth).
        """
        now = [0.0]
        slept: list[float] = []

        def sleep(seconds: float) -> None:
            slept.append(seconds)
            now[0] += seconds

        limit = RateLimit(lambda size: b"x" * size, 100.0, clock=lambda: now[0], sleep=sleep)
        limit.read(100)
        self.assertEqual(slept, [])
        limit.read(50)
        self.assertEqual(slept, [0.5])
        now[0] += 10
        limit.read(100)
        self.assertEqual(slept, [0.5])
