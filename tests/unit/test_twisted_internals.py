"""
Pins the Twisted behaviour this project relies on beyond the public API.

* ``ApiRequest.gotLength`` reads the pending method and URI from the
  channel's private ``_command``/``_path`` (``pending_request_line``).
* ``FileSpanProducer``'s sendfile path is woken by setting
  ``producerPaused`` on a ``tcp.Connection`` and calling ``startWriting``:
  ``FileDescriptor.doWrite`` must then call the registered streaming
  producer's ``resumeProducing`` once its buffer is empty.
* ``requestReceived`` only calls ``tell``/``seek`` on ``request.content``
  when form parsing is off, so a body sink needs nothing else.
* ``HTTPConnectionPool`` builds each connection's factory from its
  ``_factory`` class attribute, which ``tap.QuietConnectionPool`` replaces
  with a subclass that is not ``noisy`` (no "Starting factory" lines).

If a Twisted upgrade breaks one of these, these tests fail first.
"""

from __future__ import annotations

import socket

from twisted.internet import tcp
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import HTTPChannel, Request

from wings_twisted.web.request import pending_request_line


class _Recorder(Request):
    seen: list = []

    def gotLength(self, length):
        _Recorder.seen.append((length, pending_request_line(self)))
        super().gotLength(length)


class PendingRequestLineTests(SynchronousTestCase):
    """
    Tests for ``pending_request_line``.
    """

    def test_available_at_header_time(self) -> None:
        """
        When the headers are complete and the body is not, the method and the
        full URI (with query) are readable from the channel.
        """
        _Recorder.seen = []
        channel = HTTPChannel()
        channel.requestFactory = _Recorder
        channel.makeConnection(StringTransport())
        channel.dataReceived(b"POST /upload/file?token=x&directory=a+b HTTP/1.1\r\n"
                             b"Host: example\r\nContent-Length: 5\r\n\r\n")
        self.assertEqual(_Recorder.seen, [(5, (b"POST", b"/upload/file?token=x&directory=a+b"))])
        channel.connectionLost(None)

    def test_absent_without_channel_state(self) -> None:
        """
        Without the private attributes the helper answers ``None`` instead of
        raising, so a Twisted change degrades to "no body sink".
        """
        class Bare:
            channel = object()
        self.assertIsNone(pending_request_line(Bare()))


class _Producer:
    def __init__(self):
        self.resumed = 0

    def resumeProducing(self):
        self.resumed += 1

    def pauseProducing(self):
        pass

    def stopProducing(self):
        pass


class _Protocol:
    def makeConnection(self, transport):
        pass

    def dataReceived(self, data):
        pass

    def connectionLost(self, reason):
        pass


class FileDescriptorWakeupTests(SynchronousTestCase):
    """
    The wake-up mechanism of the sendfile download path.
    """

    def test_producer_paused_then_drained_resumes(self) -> None:
        """
        ``producerPaused = True`` plus ``startWriting()`` registers the
        transport as a writer, and the next ``doWrite`` with an empty buffer
        resumes the streaming producer and clears the flag.
        """
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        reactor = MemoryReactor()
        connection = tcp.Connection(a, _Protocol(), reactor=reactor)
        producer = _Producer()
        connection.registerProducer(producer, True)
        connection.producerPaused = True
        connection.startWriting()
        self.assertIn(connection, reactor.getWriters())
        connection.doWrite()
        self.assertEqual(producer.resumed, 1)
        self.assertFalse(connection.producerPaused)
        self.assertNotIn(connection, reactor.getWriters())

    def test_not_paused_does_not_resume(self) -> None:
        """
        Without the flag a drained buffer does not call the producer, which is
        why the producer must set it.
        """
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        connection = tcp.Connection(a, _Protocol(), reactor=MemoryReactor())
        producer = _Producer()
        connection.registerProducer(producer, True)
        connection.startWriting()
        connection.doWrite()
        self.assertEqual(producer.resumed, 0)


class _Sink:
    def __init__(self):
        self.calls = []

    def write(self, data):
        self.calls.append(("write", data))

    def seek(self, offset, whence=0):
        self.calls.append(("seek", offset))
        return 0

    def tell(self):
        self.calls.append(("tell",))
        return 3

    def read(self, size=-1):
        self.calls.append(("read",))
        return b""

    def close(self):
        self.calls.append(("close",))


class _SinkRequest(Request):
    sink = None

    def __init__(self, *args, **kwargs):
        kwargs["parsePOSTFormSubmission"] = False
        super().__init__(*args, **kwargs)

    def gotLength(self, length):
        self.content = _SinkRequest.sink = _Sink()

    def process(self):
        self.setResponseCode(200)
        self.finish()


class RequestReceivedTests(SynchronousTestCase):
    """
    What ``requestReceived`` asks of a replaced ``content``.
    """

    def test_only_tell_and_seek(self) -> None:
        """
        A multipart POST with form parsing off feeds the body to ``write`` and
        then only calls ``tell`` and ``seek`` before processing.
        """
        channel = HTTPChannel()
        channel.requestFactory = _SinkRequest
        channel.makeConnection(StringTransport())
        channel.dataReceived(b"POST /upload/file HTTP/1.1\r\nHost: x\r\n"
                             b"Content-Type: multipart/form-data; boundary=b\r\n"
                             b"Content-Length: 3\r\n\r\nabc")
        calls = _SinkRequest.sink.calls
        self.assertEqual(calls[0], ("write", b"abc"))
        self.assertNotIn(("read",), calls)
        self.assertIn(("tell",), calls)
        channel.connectionLost(None)


class SendfileEligibilityTests(SynchronousTestCase):
    """
    ``sendfile_transport`` picks the zero-copy path only for plain sockets.
    """

    def test_plain_socket_only(self) -> None:
        """
        A ``tcp.Connection`` qualifies; a TLS wrapper and a test transport
        do not.
        """
        from twisted.internet.ssl import CertificateOptions
        from twisted.protocols.tls import TLSMemoryBIOFactory

        from wings_twisted.streams.producers import sendfile_transport
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        self.assertTrue(sendfile_transport(tcp.Connection(a, _Protocol(), reactor=MemoryReactor())))
        self.assertFalse(sendfile_transport(StringTransport()))
        factory = TLSMemoryBIOFactory(CertificateOptions(), False, None)
        tls = factory.protocol(factory, _Protocol())
        self.assertFalse(sendfile_transport(tls))


class ReadSizeTests(SynchronousTestCase):
    """
    Streamed request bodies are read in ``STREAM_READ_SIZE`` pieces by
    raising the connection's ``bufferSize``.
    """

    def test_do_read_honours_buffer_size(self) -> None:
        """
        ``tcp.Connection.doRead`` hands the protocol up to ``bufferSize``
        bytes in one call.
        """
        from wings_twisted.web.request import STREAM_READ_SIZE

        class Recorder(_Protocol):
            sizes: list = []

            def dataReceived(self, data):
                Recorder.sizes.append(len(data))

        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        b.setblocking(False)
        b.send(b"x" * STREAM_READ_SIZE)
        connection = tcp.Connection(a, Recorder(), reactor=MemoryReactor())
        connection.bufferSize = STREAM_READ_SIZE
        connection.doRead()
        self.assertGreater(Recorder.sizes[0], 2 ** 16)


class QuietPoolTests(SynchronousTestCase):
    """
    ``tap.QuietConnectionPool``.
    """

    def test_connections_are_not_announced(self) -> None:
        """
        The pool's ``_factory`` is what it connects with, and ours is quiet.
        """
        from twisted.internet.endpoints import TCP4ClientEndpoint
        from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory

        from wings_twisted.tap import QuietConnectionPool

        self.assertIs(HTTPConnectionPool._factory, _HTTP11ClientFactory)
        reactor = MemoryReactor()
        pool = QuietConnectionPool(reactor)
        pool.getConnection(("key",), TCP4ClientEndpoint(reactor, "127.0.0.1", 80))
        factory = reactor.tcpClients[0][2]
        factory = getattr(factory, "_wrappedFactory", factory)
        self.assertIsInstance(factory, _HTTP11ClientFactory)
        self.assertFalse(factory.noisy)
