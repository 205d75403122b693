"""
Tests for ``FileBodyProducer`` (the copy path; the sendfile path runs in the
integration tests over real sockets, and its Twisted hook is pinned in
``test_twisted_internals``).
"""

from __future__ import annotations

import os

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.streams.producers import COPY_CHUNK, FileBodyProducer, ShortFile, Stopped


class _Request:
    """
    The slice of ``twisted.web.server.Request`` the producer uses.
    """

    def __init__(self) -> None:
        self.transport = StringTransport()
        self.channel = self
        self.producer = None
        self.written: list[bytes] = []
        self.pause_after: int | None = None

    def registerProducer(self, producer, streaming) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.written.append(data)
        if self.pause_after is not None and len(self.written) >= self.pause_after:
            self.producer.pauseProducing()


class FileBodyProducerTests(SynchronousTestCase):
    """
    ``FileBodyProducer`` in copy mode.
    """

    def setUp(self) -> None:
        self.path = self.mktemp()
        self.data = os.urandom(3 * COPY_CHUNK + 123)
        with open(self.path, "wb") as f:
            f.write(self.data)

    def producer(self, offset: int, length: int, request: _Request) -> tuple[FileBodyProducer, int]:
        fd = os.open(self.path, os.O_RDONLY)
        return FileBodyProducer(request, fd, offset, length, use_sendfile=False), fd

    def assertClosed(self, fd: int) -> None:
        self.assertRaises(OSError, os.fstat, fd)

    def test_exact_span(self) -> None:
        """
        Exactly the requested bytes are written, then the file is closed and
        the producer unregistered.
        """
        request = _Request()
        producer, fd = self.producer(100, 2 * COPY_CHUNK, request)
        done = producer.start()
        self.assertEqual(b"".join(request.written), self.data[100:100 + 2 * COPY_CHUNK])
        self.assertIsNone(self.successResultOf(done))
        self.assertIsNone(request.producer)
        self.assertClosed(fd)

    def test_pause_and_resume(self) -> None:
        """
        A pause from the consumer stops reading until ``resumeProducing``.
        """
        request = _Request()
        request.pause_after = 2  # headers write + one chunk
        producer, fd = self.producer(0, len(self.data), request)
        done = producer.start()
        self.assertNoResult(done)
        self.assertEqual(len(request.written), 2)
        request.pause_after = None
        producer.resumeProducing()
        self.assertEqual(b"".join(request.written), self.data)
        self.successResultOf(done)

    def test_stop_closes_file(self) -> None:
        """
        A client that goes away stops the reads and closes the descriptor.
        """
        request = _Request()
        request.pause_after = 2
        producer, fd = self.producer(0, len(self.data), request)
        done = producer.start()
        producer.stopProducing()
        self.failureResultOf(done, Stopped)
        self.assertClosed(fd)
        written = len(request.written)
        producer.resumeProducing()
        self.assertEqual(len(request.written), written)

    def test_file_shrinks(self) -> None:
        """
        Reaching end-of-file before the announced length fails with
        ``ShortFile`` (the caller aborts the connection).
        """
        request = _Request()
        producer, fd = self.producer(0, len(self.data) + 10, request)
        self.failureResultOf(producer.start(), ShortFile)
        self.assertClosed(fd)

    def test_empty_span(self) -> None:
        """
        A zero-length body finishes at once.
        """
        request = _Request()
        producer, fd = self.producer(0, 0, request)
        self.successResultOf(producer.start())
        self.assertEqual(request.written, [b""])
        self.assertClosed(fd)
