"""
Streaming a span of an open file as a response body.

``FileBodyProducer`` is a push producer registered on the request.  It has
two ways to move bytes:

* **sendfile** (plain TCP and UNIX sockets): the kernel copies file pages
  straight to the socket with ``os.sendfile``; nothing passes through Python
  buffers.  Twisted has no sendfile support, so the producer waits until the
  transport's own buffer is empty (the response headers went through it) and
  then writes to the socket itself.  It is woken by the transport: setting
  ``producerPaused`` on the transport and calling ``startWriting()`` makes the
  next writable event call ``resumeProducing`` on the channel, which forwards
  to the request's producer.  ``tests/test_producers.py`` pins that behaviour
  of ``twisted.internet.abstract.FileDescriptor``.
* **copy** (TLS and anything else): ``os.pread`` chunks of 256 KiB written
  through the request; Twisted pauses the producer when the transport buffer
  is full and resumes it when it drains, so at most one chunk plus the
  transport buffer is in memory per download.

Either way exactly ``length`` bytes are sent; a file that grows is cut at the
announced length, a file that shrinks makes ``done`` fail with ``ShortFile``
so the caller can abort the connection instead of sending a short body
(downloads-uploads.md §3.5).  ``stopProducing`` (client gone) closes the
descriptor.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer, ISSLTransport
from twisted.logger import Logger
from zope.interface import implementer

log = Logger()

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
    The consumer went away (client disconnected) before the body was sent.
    """


def sendfile_transport(transport: Any) -> bool:
    """
    Whether ``transport`` is a plain socket transport ``os.sendfile`` can
    write to directly.
    """
    return isinstance(transport, tcp.Connection) and not ISSLTransport.providedBy(transport)


@implementer(IPushProducer)
class FileBodyProducer:
    """
    Send ``length`` bytes of ``fd`` starting at ``offset`` as the body of
    ``request``.  The producer owns ``fd`` and closes it when it is done or
    stopped.
    """

    def __init__(self, request: Any, fd: int, offset: int, length: int, *,
                 use_sendfile: bool | None = None) -> None:
        self._request = request
        self._fd: int | None = fd
        self._position = offset
        self._remaining = length
        self._paused = False
        self._transport = request.channel.transport
        if use_sendfile is None:
            use_sendfile = sendfile_transport(self._transport)
        self._sendfile = use_sendfile
        self.done: Deferred[None] = Deferred()

    def start(self) -> Deferred[None]:
        """
        Send the headers and begin streaming; ``done`` fires when the last
        byte was handed to the kernel (or fails: ``ShortFile``, ``Stopped``).
        """
        request = self._request
        request.registerProducer(self, True)
        request.write(b"")  # the status line and headers
        if self._remaining == 0:
            self._finish()
        elif self._sendfile:
            self._wait_for_socket()
        else:
            self.resumeProducing()
        return self.done

    # IPushProducer

    def pauseProducing(self) -> None:
        """
        The transport's buffer is full: stop until it drains.
        """
        self._paused = True

    def resumeProducing(self) -> None:
        """
        The transport can take more.
        """
        self._paused = False
        if self._fd is None:
            return
        try:
            if self._sendfile:
                self._pump_sendfile()
            else:
                self._pump_copy()
        except Exception as e:
            self._fail(e)

    def stopProducing(self) -> None:
        """
        The client went away: stop reading and close the file.
        """
        if self._fd is not None:
            self._fail(Stopped())

    # internals

    def _pump_copy(self) -> None:
        # A real transport pauses us from inside write() once its buffer is
        # over its limit, so this loop sends about one chunk per turn.
        fd = self._fd
        assert fd is not None
        while not self._paused and self._remaining:
            data = os.pread(fd, min(COPY_CHUNK, self._remaining), self._position)
            if not data:
                raise ShortFile()
            self._position += len(data)
            self._remaining -= len(data)
            self._request.write(data)
            if self._fd is None:  # stopped from inside write()
                return
        if not self._remaining:
            self._finish()

    def _pump_sendfile(self) -> None:
        sock = self._transport.getHandle().fileno()
        fd = self._fd
        assert fd is not None
        sent = 0
        while self._remaining and sent < TURN_BUDGET:
            try:
                n = os.sendfile(sock, fd, self._position,
                                min(self._remaining, SENDFILE_CHUNK))
            except BlockingIOError:
                break
            if n == 0:
                raise ShortFile()
            self._position += n
            self._remaining -= n
            sent += n
        if not self._remaining:
            self._finish()
        elif not self._paused:
            self._wait_for_socket()

    def _wait_for_socket(self) -> None:
        """
        Ask the transport to call ``resumeProducing`` once the socket is
        writable and its own buffer is empty.
        """
        self._transport.producerPaused = True
        self._transport.startWriting()

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def _finish(self) -> None:
        self._close()
        self._request.unregisterProducer()
        if not self.done.called:
            self.done.callback(None)

    def _fail(self, error: Exception) -> None:
        self._close()
        if self._request.producer is self:
            self._request.unregisterProducer()
        if not self.done.called:
            self.done.errback(error)
