"""
Streaming a span of an open file to any consumer.

``FileSpanProducer`` is a push producer that registers itself on the
``IConsumer`` it is started with (an HTTP request, a transport, a tar or S3
body...).  It has two ways to move bytes:

* **sendfile**, when it is also given the plain TCP transport under the
  consumer: the kernel copies file pages straight to the socket with
  ``os.sendfile``; nothing passes through Python buffers.  Twisted has no
  sendfile support, so the producer waits until the transport's own buffer is
  empty (whatever the caller wrote first, such as response headers, went
  through it) and then writes to the socket itself.  It is woken by the
  transport once: setting ``producerPaused`` on the transport and calling
  ``startWriting()`` makes the next writable event call ``resumeProducing``
  on the transport's producer, which forwards to ours (an HTTP channel does).
  ``tests/test_twisted_internals.py`` pins that behaviour of
  ``twisted.internet.abstract.FileDescriptor``.  From then on the producer
  registers its own writer with the reactor, on a duplicate of the socket's
  descriptor, for as long as the span lasts: each writable event then costs
  one ``epoll_wait`` and the ``sendfile`` calls, where going through the
  transport cost two ``epoll_ctl`` (stop and start writing) and an empty
  ``send()`` in Twisted's ``doWrite`` per wake-up (node-scale issue: CPU per
  GiB of downloads against nginx's).
* **copy** (TLS, or no transport given): ``os.pread`` chunks of 256 KiB
  handed to the consumer's ``write``; a consumer over a transport pauses the
  producer when the buffer is full and resumes it when it drains, so at most
  one chunk plus that buffer is in memory per stream.

Either way exactly ``length`` bytes are sent; a file that grows is cut at the
announced length, a file that shrinks makes ``done`` fail with ``ShortFile``
so the caller can abort the connection instead of sending a short body
(downloads-uploads.md §3.5).  The producer owns the descriptor and closes it
at the end and in ``stopProducing`` (consumer gone, ``done`` fails with
``Stopped``).
"""

from __future__ import annotations

import os
from typing import TypeGuard

from typing import Any, Callable

from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (IConsumer, IPushProducer, IReactorFDSet, ISSLTransport,
                                         IWriteDescriptor)
from twisted.python.failure import Failure
from zope.interface import implementer

COPY_CHUNK = 256 * 1024
SENDFILE_CHUNK = 1024 * 1024
# Bytes moved per reactor turn before yielding to other connections.
TURN_BUDGET = 2 * 1024 * 1024


class ShortFile(Exception):
    """
    The file ended before the announced number of bytes was sent.
    """


class Stopped(Exception):
    """
    The consumer went away (client disconnected) before the span was sent.
    """


def sendfile_transport(transport: object) -> TypeGuard[tcp.Connection]:
    """
    Whether ``transport`` is a plain socket transport ``os.sendfile`` can
    write to directly.
    """
    return isinstance(transport, tcp.Connection) and not ISSLTransport.providedBy(transport)


@implementer(IWriteDescriptor)
class _SocketWriter:
    """
    A duplicate of a connection's socket descriptor, registered with the reactor for writing
    while a span is sent with ``sendfile`` (module docstring).
    """

    def __init__(self, fd: int, writable: Callable[[], None],
                 lost: Callable[[Failure], None]) -> None:
        self._fd = fd
        self._writable = writable
        self._lost = lost

    def fileno(self) -> int:
        return self._fd

    def doWrite(self) -> None:
        self._writable()

    def connectionLost(self, reason: Failure) -> None:
        self._lost(reason)

    def logPrefix(self) -> str:
        return "sendfile"

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


@implementer(IPushProducer)
class FileSpanProducer:
    """
    Send ``length`` bytes of ``fd`` starting at ``offset`` to a consumer.  The
    producer owns ``fd`` and closes it when it is done or stopped.

    :param transport: the connection under the consumer, if any; when it is a
        plain TCP socket the bytes bypass the consumer and go to the socket
        with ``os.sendfile``.
    """

    def __init__(self, fd: int, offset: int, length: int, *,
                 transport: object | None = None) -> None:
        self._fd: int | None = fd
        self._position = offset
        self._remaining = length
        self._paused = False
        self._consumer: IConsumer | None = None
        self._socket = transport if sendfile_transport(transport) else None
        self._writer: _SocketWriter | None = None
        self._reactor: IReactorFDSet | None = None
        self.done: Deferred[None] = Deferred()

    def start(self, consumer: IConsumer) -> Deferred[None]:
        """
        Register on ``consumer`` and begin streaming; ``done`` fires when the
        last byte was handed to the consumer or the kernel (or fails:
        ``ShortFile``, ``Stopped``), after the producer unregistered.
        """
        self._consumer = consumer
        consumer.registerProducer(self, True)
        if self._remaining == 0:
            self._finish()
        elif self._socket is not None:
            self._wait_for_socket()
        else:
            self.resumeProducing()
        return self.done

    # IPushProducer

    def pauseProducing(self) -> None:
        """
        The consumer's buffer is full: stop until it drains.
        """
        self._paused = True
        if self._writer is not None and self._reactor is not None:
            self._reactor.removeWriter(self._writer)

    def resumeProducing(self) -> None:
        """
        The consumer can take more.
        """
        self._paused = False
        if self._fd is None:
            return
        try:
            if self._socket is not None:
                if self._writer is None:
                    self._own_writer(self._socket)
                elif self._reactor is not None:
                    self._reactor.addWriter(self._writer)
                self._pump_sendfile()
            else:
                self._pump_copy()
        except Exception as e:
            self._fail(e)

    def stopProducing(self) -> None:
        """
        The consumer went away: stop reading and close the file.
        """
        if self._fd is not None:
            self._fail(Stopped())

    # internals

    def _pump_copy(self) -> None:
        # A consumer over a transport pauses us from inside write() once the
        # buffer is over its limit, so this loop sends about one chunk per turn.
        fd = self._fd
        consumer = self._consumer
        assert fd is not None and consumer is not None
        while not self._paused and self._remaining:
            data = os.pread(fd, min(COPY_CHUNK, self._remaining), self._position)
            if not data:
                raise ShortFile()
            self._position += len(data)
            self._remaining -= len(data)
            consumer.write(data)
            if self._fd is None:  # stopped from inside write()
                return
        if not self._remaining:
            self._finish()

    def _own_writer(self, transport: tcp.Connection) -> None:
        """
        The transport's buffer is empty: register our own writer on a duplicate of its socket.
        """
        reactor: Any = transport.reactor
        self._reactor = reactor
        self._writer = _SocketWriter(os.dup(transport.getHandle().fileno()),
                                     self._writable, self._writer_lost)
        reactor.addWriter(self._writer)

    def _writable(self) -> None:
        # Called by the reactor: failures end the span here, never reach it.
        if self._fd is None:
            return
        try:
            self._pump_sendfile()
        except Exception as e:
            self._fail(e)

    def _writer_lost(self, reason: Failure) -> None:
        self._fail(Stopped())

    def _pump_sendfile(self) -> None:
        writer, fd = self._writer, self._fd
        assert writer is not None and fd is not None
        sock = writer.fileno()
        sent = 0
        while self._remaining and sent < TURN_BUDGET and not self._paused:
            asked = min(self._remaining, SENDFILE_CHUNK)
            try:
                n = os.sendfile(sock, fd, self._position, asked)
            except BlockingIOError:
                break   # the writer stays registered: the next writable event goes on
            if n == 0:
                raise ShortFile()
            self._position += n
            self._remaining -= n
            sent += n
            if n < asked:
                break   # the socket buffer is full: a further call would only fail
        if not self._remaining:
            self._finish()

    def _wait_for_socket(self) -> None:
        """
        Ask the transport to call ``resumeProducing`` once the socket is
        writable and its own buffer is empty.
        """
        transport = self._socket
        assert transport is not None
        transport.producerPaused = True
        transport.startWriting()

    def _close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            if self._reactor is not None:
                self._reactor.removeWriter(writer)
            writer.close()
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def _unregister(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.unregisterProducer()

    def _finish(self) -> None:
        self._close()
        self._unregister()
        if not self.done.called:
            self.done.callback(None)

    def _fail(self, error: Exception) -> None:
        self._close()
        self._unregister()
        if not self.done.called:
            self.done.errback(error)
