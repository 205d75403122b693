"""
Tests for ``FileSpanProducer``: the copy path, and the sendfile path over a real socket pair
with a ``MemoryReactor`` standing in for the reactor's descriptor set (the integration tests run
it over real connections; its Twisted hook is pinned in ``test_twisted_internals``).
"""

from __future__ import annotations

import os
import socket

from twisted.internet import tcp
from twisted.internet.interfaces import IConsumer
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from wings_twisted.streams.producers import (
    COPY_CHUNK,
    FileSpanProducer,
    ShortFile,
    Stopped,
)


@implementer(IConsumer)
class _Consumer:
    """
    A consumer that collects what it is given and can pause its producer
    after a number of writes.
    """

    def __init__(self) -> None:
        self.producer = None
        self.registrations = 0
        self.written: list[bytes] = []
        self.pause_after: int | None = None

    def registerProducer(self, producer, streaming) -> None:
        assert streaming
        self.producer = producer
        self.registrations += 1

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.written.append(data)
        if self.pause_after is not None and len(self.written) >= self.pause_after:
            self.producer.pauseProducing()


class FileSpanProducerTests(SynchronousTestCase):
    """
    ``FileSpanProducer`` in copy mode.
    """

    def setUp(self) -> None:
        self.path = self.mktemp()
        self.data = os.urandom(3 * COPY_CHUNK + 123)
        with open(self.path, "wb") as f:
            f.write(self.data)

    def producer(self, offset: int, length: int, **kwargs) -> tuple[FileSpanProducer, int]:
        fd = os.open(self.path, os.O_RDONLY)
        return FileSpanProducer(fd, offset, length, **kwargs), fd

    def assertClosed(self, fd: int) -> None:
        self.assertRaises(OSError, os.fstat, fd)

    def test_exact_span(self) -> None:
        """
        Exactly the requested bytes are written, then the file is closed and
        the producer unregistered.
        """
        consumer = _Consumer()
        producer, fd = self.producer(100, 2 * COPY_CHUNK)
        done = producer.start(consumer)
        self.assertEqual(consumer.registrations, 1)
        self.assertEqual(b"".join(consumer.written), self.data[100:100 + 2 * COPY_CHUNK])
        self.assertIsNone(self.successResultOf(done))
        self.assertIsNone(consumer.producer)
        self.assertClosed(fd)

    def test_bounded_chunks(self) -> None:
        """
        The span is read in pieces of at most ``COPY_CHUNK`` bytes.
        """
        consumer = _Consumer()
        producer, fd = self.producer(0, len(self.data))
        self.successResultOf(producer.start(consumer))
        self.assertEqual([len(chunk) for chunk in consumer.written],
                         [COPY_CHUNK, COPY_CHUNK, COPY_CHUNK, 123])

    def test_pause_and_resume(self) -> None:
        """
        A pause from the consumer stops reading until ``resumeProducing``.
        """
        consumer = _Consumer()
        consumer.pause_after = 1
        producer, fd = self.producer(0, len(self.data))
        done = producer.start(consumer)
        self.assertNoResult(done)
        self.assertEqual(len(consumer.written), 1)
        consumer.pause_after = None
        producer.resumeProducing()
        self.assertEqual(b"".join(consumer.written), self.data)
        self.successResultOf(done)

    def test_stop_closes_file(self) -> None:
        """
        A consumer that goes away stops the reads and closes the descriptor.
        """
        consumer = _Consumer()
        consumer.pause_after = 1
        producer, fd = self.producer(0, len(self.data))
        done = producer.start(consumer)
        producer.stopProducing()
        self.failureResultOf(done, Stopped)
        self.assertClosed(fd)
        self.assertIsNone(consumer.producer)
        written = len(consumer.written)
        producer.resumeProducing()
        self.assertEqual(len(consumer.written), written)

    def test_file_shrinks(self) -> None:
        """
        Reaching end-of-file before the announced length fails with
        ``ShortFile`` (the caller aborts the connection).
        """
        consumer = _Consumer()
        producer, fd = self.producer(0, len(self.data) + 10)
        self.failureResultOf(producer.start(consumer), ShortFile)
        self.assertClosed(fd)
        self.assertIsNone(consumer.producer)

    def test_empty_span(self) -> None:
        """
        A zero-length span finishes at once without writing.
        """
        consumer = _Consumer()
        producer, fd = self.producer(0, 0)
        self.successResultOf(producer.start(consumer))
        self.assertEqual(consumer.written, [])
        self.assertClosed(fd)

    def test_to_a_transport(self) -> None:
        """
        Any ``IConsumer`` will do, a transport included; a transport that is
        not a plain TCP socket is written to in copy mode, not with sendfile.
        """
        transport = StringTransport()
        producer, fd = self.producer(7, 1000, transport=transport)
        self.successResultOf(producer.start(transport))
        self.assertEqual(transport.value(), self.data[7:1007])
        self.assertIsNone(transport.producer)
        self.assertClosed(fd)


class _Protocol:
    def makeConnection(self, transport) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason) -> None:
        pass


class SendfileTests(SynchronousTestCase):
    """
    ``FileSpanProducer`` over a plain TCP transport: woken once by the transport, then by its
    own writer on a duplicate of the socket.
    """

    def setUp(self) -> None:
        self.path = self.mktemp()
        self.data = os.urandom(5 * 1024 * 1024 + 17)
        with open(self.path, "wb") as f:
            f.write(self.data)
        self.ours, self.peer = socket.socketpair()
        self.addCleanup(self.ours.close)
        self.addCleanup(self.peer.close)
        self.ours.setblocking(False)
        self.reactor = MemoryReactor()
        self.transport = tcp.Connection(self.ours, _Protocol(), reactor=self.reactor)
        self.fds_before = set(os.listdir("/proc/self/fd"))

    def drain(self) -> bytes:
        received = []
        self.peer.setblocking(False)
        while True:
            try:
                chunk = self.peer.recv(1 << 20)
            except BlockingIOError:
                return b"".join(received)
            if not chunk:
                return b"".join(received)
            received.append(chunk)

    def writers(self) -> list:
        return [w for w in self.reactor.getWriters() if w is not self.transport]

    def test_own_writer_until_done(self) -> None:
        """
        The first wake-up comes through the transport; the producer then registers one writer
        of its own (never the transport again) and sends on each writable event until the span
        is done, when the writer is removed and its duplicate descriptor closed.
        """
        fd = os.open(self.path, os.O_RDONLY)
        producer = FileSpanProducer(fd, 3, len(self.data) - 3, transport=self.transport)
        done = producer.start(self.transport)
        self.assertIn(self.transport, self.reactor.getWriters())
        self.transport.doWrite()    # the transport's buffer is empty: it resumes us
        self.assertNotIn(self.transport, self.reactor.getWriters())
        [writer] = self.writers()
        received = [self.drain()]
        while not done.called:
            writer.doWrite()
            received.append(self.drain())
            self.assertNotIn(self.transport, self.reactor.getWriters())
        self.successResultOf(done)
        self.assertEqual(b"".join(received), self.data[3:])
        self.assertEqual(self.writers(), [])
        self.assertEqual(set(os.listdir("/proc/self/fd")), self.fds_before)

    def test_full_socket_ends_the_turn(self) -> None:
        """
        A ``sendfile`` that moves less than asked means the socket buffer is full: the wake-up
        ends there, without a further call that could only fail with ``EAGAIN``.
        """
        fd = os.open(self.path, os.O_RDONLY)
        producer = FileSpanProducer(fd, 0, len(self.data), transport=self.transport)
        done = producer.start(self.transport)
        calls: list[str] = []
        real = os.sendfile

        def counting(out_fd: int, in_fd: int, offset: int, count: int) -> int:
            try:
                n = real(out_fd, in_fd, offset, count)
            except BlockingIOError:
                calls.append("EAGAIN")
                raise
            calls.append("full" if n == count else "short")
            return n

        self.patch(os, "sendfile", counting)
        self.transport.doWrite()
        [writer] = self.writers()
        self.drain()
        while not done.called:
            writer.doWrite()
            self.drain()
        self.successResultOf(done)
        # The socket pair's buffer is smaller than a chunk: each wake-up is one short call.
        self.assertIn("short", calls)
        self.assertNotIn("EAGAIN", calls)

    def test_pause_resume_and_lost(self) -> None:
        """
        A pause takes the writer out of the reactor and a resume puts it back; the reactor
        reporting the writer's descriptor lost ends the span with ``Stopped`` and closes both
        descriptors.
        """
        fd = os.open(self.path, os.O_RDONLY)
        producer = FileSpanProducer(fd, 0, len(self.data), transport=self.transport)
        done = producer.start(self.transport)
        self.transport.doWrite()
        [writer] = self.writers()
        producer.pauseProducing()
        self.assertEqual(self.writers(), [])
        self.drain()
        producer.resumeProducing()
        self.assertEqual(self.writers(), [writer])
        self.reactor.removeWriter(writer)
        writer.connectionLost(Failure(ConnectionError("gone")))
        self.failureResultOf(done, Stopped)
        self.assertEqual(self.writers(), [])
        self.assertEqual(set(os.listdir("/proc/self/fd")), self.fds_before)
