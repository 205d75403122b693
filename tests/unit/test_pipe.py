"""
``streams.pipe.ThreadPipeProducer``: blocking work on a real worker thread pushed to a consumer,
with the reactor thread played by the test (``call_from_thread`` queues calls that the test runs),
so there is no reactor and no sleeping: the test waits on the queue.
"""

from __future__ import annotations

import gzip
import io
import queue
import tarfile
import threading
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer
from zope.interface.verify import verifyObject

from wings_twisted import archive
from wings_twisted.streams.pipe import Stopped, ThreadPipeProducer

from .archive_support import make_volume, write

WAIT = 10.0


class ThreadReactor:
    """
    The reactor thread as the test: calls from the worker are queued and run by `run_until`.
    """

    def __init__(self) -> None:
        self.calls: queue.Queue[Callable[[], None]] = queue.Queue()

    def call_from_thread(self, fn: Callable[[], None]) -> None:
        self.calls.put(fn)

    def run_blocking(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()

        def work() -> None:
            try:
                result = fn(*args, **kwargs)
            except BaseException:
                failure = Failure()
                self.calls.put(lambda: d.errback(failure))
            else:
                self.calls.put(lambda: d.callback(result))

        threading.Thread(target=work, daemon=True).start()
        return d

    def run_until(self, done: Callable[[], bool]) -> None:
        while not done():
            self.calls.get(timeout=WAIT)()


@implementer(IConsumer)
class _Consumer:
    def __init__(self) -> None:
        self.data = io.BytesIO()
        self.producer: Any = None

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.data.write(data)


class ThreadPipeProducerTests(SynchronousTestCase):
    """
    Output, back-pressure and stopping.
    """

    def test_interfaces(self) -> None:
        """
        It is a push producer and a body producer of unknown length.
        """
        producer = ThreadPipeProducer(lambda write: None, run_blocking=ThreadReactor().run_blocking,
                                      call_from_thread=lambda f: None)
        verifyObject(IPushProducer, producer)
        verifyObject(IBodyProducer, producer)

    def test_archive_stream_to_a_consumer(self) -> None:
        """
        A tar.gz of a volume arrives whole and in order; the result fires after the last byte;
        the producer unregisters.
        """
        volume = make_volume(self.mktemp())
        for i in range(50):
            write(volume, "d/f%02d" % i, bytes([i]) * 50000)
        reactor = ThreadReactor()
        producer = ThreadPipeProducer(
            lambda out: archive.write_tar_gz(volume, archive.volume_selection(), out, level=1),
            run_blocking=reactor.run_blocking, call_from_thread=reactor.call_from_thread,
            high_water=64 * 1024)
        consumer = _Consumer()
        results: list[Any] = []
        producer.start(consumer).addCallback(results.append)
        reactor.run_until(lambda: bool(results))
        self.assertIsNone(consumer.producer)
        self.assertEqual(results[0].members, 50)
        self.assertEqual(producer.delivered, len(consumer.data.getvalue()))
        with tarfile.open(fileobj=io.BytesIO(consumer.data.getvalue()), mode="r:gz") as tar:
            self.assertEqual(len(tar.getnames()), 50)

    def test_pause_blocks_the_worker(self) -> None:
        """
        While paused, the worker writes nothing more; resuming lets it finish.
        """
        reactor = ThreadReactor()
        wrote: list[int] = []
        gate = threading.Event()

        def work(write: Callable[[bytes], None]) -> int:
            for i in range(10):
                write(b"x" * 100)
                wrote.append(i)
                if i == 2:
                    gate.set()
            return len(wrote)

        producer = ThreadPipeProducer(work, run_blocking=reactor.run_blocking,
                                      call_from_thread=reactor.call_from_thread)
        producer.pauseProducing()
        consumer = _Consumer()
        results: list[Any] = []
        producer.startProducing(consumer).addCallback(results.append)
        self.assertFalse(gate.wait(0.2))
        self.assertEqual(wrote, [])
        producer.resumeProducing()
        reactor.run_until(lambda: bool(results))
        self.assertEqual((results, consumer.data.getvalue()), ([10], b"x" * 1000))

    def test_stop_ends_the_worker(self) -> None:
        """
        ``stopProducing`` makes the worker's write raise ``Stopped`` (its clean-up runs); the
        ``startProducing`` Deferred never fires; ``finished`` does.
        """
        reactor = ThreadReactor()
        cleaned = threading.Event()
        started = threading.Event()

        def work(write: Callable[[bytes], None]) -> None:
            try:
                while True:
                    write(b"y" * 1000)
                    started.set()
            finally:
                cleaned.set()

        producer = ThreadPipeProducer(work, run_blocking=reactor.run_blocking,
                                      call_from_thread=reactor.call_from_thread,
                                      high_water=4000)
        outcome: list[Any] = []
        producer.startProducing(_Consumer()).addBoth(outcome.append)
        self.assertTrue(started.wait(WAIT))
        producer.stopProducing()
        finished: list[Any] = []
        producer.finished.addBoth(finished.append)
        reactor.run_until(lambda: bool(finished))
        self.assertTrue(cleaned.is_set())
        self.assertEqual((outcome, finished), ([], [None]))
        self.assertTrue(issubclass(Stopped, Exception))

    def test_work_failure(self) -> None:
        """
        A failing work fails both Deferreds with its error.
        """
        reactor = ThreadReactor()

        def work(write: Callable[[bytes], None]) -> None:
            write(gzip.compress(b"partial"))
            raise ValueError("broken")

        producer = ThreadPipeProducer(work, run_blocking=reactor.run_blocking,
                                      call_from_thread=reactor.call_from_thread)
        outcome: list[Any] = []
        producer.startProducing(_Consumer()).addErrback(outcome.append)
        reactor.run_until(lambda: bool(outcome))
        self.assertTrue(outcome[0].check(ValueError))
        self.failureResultOf(producer.finished, ValueError)
