"""
The HTTP connection of the API site: timeouts, oversized headers, and a per-IP cap on
connections that have not authenticated, so that a flood of idle or half-sent connections cannot
lock the Panel out of the node API.

Decisions [project] (the spec is silent; upstream relies on Go's defaults):

* **Header timeout** (``api.header_timeout``, 30 s): a request's line and headers must be
  complete this long after the connection opened or its first byte arrived; else the connection
  is aborted.  A slowloris trickling one header byte a minute is cut, a client on a slow link is
  not (30 s for at most 16 KiB).
* **Body idle timeout** (``api.idle_timeout``, 120 s): a connection from which nothing arrives for
  this long while the daemon waits for it (a stalled upload body) is closed.  It never runs while
  a response is being produced (a slow download is not cut: Twisted suspends the idle timer then)
  nor while the daemon itself paused the upload for back-pressure (`body_paused`), and every byte
  that arrives restarts it, so a slow but progressing upload is never cut.
* **Keep-alive timeout** (``api.keepalive_timeout``, 60 s): an idle kept-alive connection with
  no new request is closed.
* **Unauthenticated connections per IP** (``api.max_unauthenticated_per_ip``, 4096; 0 = no cap): a
  connection counts until one of its requests presents valid credentials (the node token, a
  valid signed URL, or a console upgrade, whose socket has its own auth timeout).  When an IP
  goes over the cap its *oldest* unauthenticated connection is aborted, rather than the new one
  refused: a Panel sharing an address with a flood (a NAT, a proxy, loopback) still gets in,
  since its request authenticates within milliseconds.  The default is a safety net against
  descriptor exhaustion, not the slowloris defence (the header timeout is): a held connection
  costs a few KiB, while a cap that bites makes a flood that reconnects at once churn through
  accepts and aborts, which costs the Panel more latency than holding it (``bench/RESULTS.md``,
  flood section: p99 19 ms with 2,000 held, 260 ms to 1.1 s with a cap of 64).
* **Oversized headers**: a request line or header line over 16 KiB, or a head over 16 KiB in
  total, is answered ``431 Request Header Fields Too Large`` (upstream Go: 431 too) and the
  connection closed, instead of being dropped silently.

The soft ``RLIMIT_NOFILE`` is raised to the hard limit at start (``tap.py``), so the daemon does
not run out of descriptors at ~1,000 connections.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from zope.interface import implementer

log = Logger()

#: Longest request line or header line, and longest head in total (bytes).
MAX_HEAD = 16384

_431 = (b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: 57\r\n\r\n"
        b'{"error": "The request headers are too large to accept."}')


class ConnectionGuard:
    """
    The unauthenticated connections of every client IP, oldest first, and the cap on them.
    """

    def __init__(self, cap: int) -> None:
        """
        :param cap: most unauthenticated connections per IP; 0 is no cap.
        """
        self.cap = cap
        self._pending: dict[str, OrderedDict[int, ApiChannel]] = {}
        self.evicted = 0

    def opened(self, channel: ApiChannel, ip: str) -> None:
        """
        A new connection from ``ip``; aborts the IP's oldest unauthenticated one past the cap.
        """
        pending = self._pending.setdefault(ip, OrderedDict())
        pending[id(channel)] = channel
        if self.cap > 0 and len(pending) > self.cap:
            _, oldest = pending.popitem(last=False)
            self.evicted += 1
            if self.evicted == 1 or self.evicted % 1000 == 0:
                log.warn("More than {cap} unauthenticated connections from {ip}: closing the "
                         "oldest ({count} so far)", cap=self.cap, ip=ip, count=self.evicted)
            oldest.abort()

    def authenticated(self, channel: ApiChannel, ip: str) -> None:
        """
        ``channel`` presented valid credentials: it no longer counts.
        """
        self.closed(channel, ip)

    def closed(self, channel: ApiChannel, ip: str) -> None:
        """
        ``channel`` is gone.
        """
        pending = self._pending.get(ip)
        if pending is not None:
            pending.pop(id(channel), None)
            if not pending:
                del self._pending[ip]

    def count(self, ip: str) -> int:
        """
        The unauthenticated connections of ``ip``.
        """
        return len(self._pending.get(ip, ()))


class ApiChannel(HTTPChannel):
    """
    ``HTTPChannel`` with the timeouts, the 431 and the per-IP accounting of the module docstring.
    The site sets ``guard``, ``header_timeout`` and ``keepalive_timeout`` (its ``timeout`` is
    the body idle timeout).
    """

    MAX_LENGTH = MAX_HEAD
    totalHeadersSize = MAX_HEAD
    guard: ConnectionGuard | None = None
    header_timeout: float = 30.0
    keepalive_timeout: float = 60.0
    #: True while the daemon paused reading the request body (back-pressure).
    body_paused = False

    _deadline: IDelayedCall | None = None
    _ip = ""
    _counted = False
    _phase = "headers"

    def connectionMade(self) -> None:
        super().connectionMade()
        peer = self.transport.getPeer() if self.transport is not None else None
        self._ip = str(getattr(peer, "host", "") or "")
        if self.guard is not None:
            self._counted = True
            self.guard.opened(self, self._ip)
        self._arm(self.header_timeout)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        if seconds > 0 and self.callLater is not None:
            self._deadline = self.callLater(seconds, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        log.debug("Closing a connection from {ip}: no complete request in time ({phase})",
                  ip=self._ip, phase=self._phase)
        self.abort()

    def abort(self) -> None:
        """
        Drop the connection at once (its descriptor is freed now, not after a close handshake).
        """
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    def authenticated(self) -> None:
        """
        A request of this connection presented valid credentials.
        """
        if self._counted and self.guard is not None:
            self._counted = False
            self.guard.authenticated(self, self._ip)

    def dataReceived(self, data: bytes) -> None:
        if self._phase == "idle" and data:
            self._phase = "headers"
            self._arm(self.header_timeout)
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if self._phase == "headers" and self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self._too_large()
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        A line longer than `MAX_HEAD` without its end: 431, not a silent drop.
        """
        self._too_large()

    def _too_large(self) -> None:
        if self.transport is not None and not getattr(self, "_answered_431", False):
            self._answered_431 = True
            self.transport.write(_431)
            self.transport.loseConnection()
        self.dataReceived = lambda data: None  # type: ignore[method-assign]

    def allHeadersReceived(self) -> None:
        self._disarm()
        self._phase = "request"
        super().allHeadersReceived()

    def requestDone(self, request: Any) -> None:
        super().requestDone(request)
        transport: Any = self.transport
        if transport is not None and not transport.disconnecting:
            self._phase = "idle"
            self._arm(self.keepalive_timeout)

    def timeoutConnection(self) -> None:
        """
        The body idle timeout, unless the daemon itself paused the body.
        """
        if self.body_paused:
            self.setTimeout(self.timeOut)  # the fired timer is gone: start a new one
            return
        super().timeoutConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._disarm()
        if self._counted and self.guard is not None:
            self._counted = False
            self.guard.closed(self, self._ip)
        super().connectionLost(reason)


@implementer(IPushProducer)
class BodyProducer:
    """
    The connection as the producer of a request body a consumer (the upload spool) may pause:
    while it is paused the channel's idle timeout does not run.
    """

    def __init__(self, transport: IPushProducer, channel: object) -> None:
        self._transport = transport
        self._channel = channel

    def _set(self, paused: bool) -> None:
        if isinstance(self._channel, ApiChannel):
            self._channel.body_paused = paused

    def pauseProducing(self) -> None:
        """
        Stop reading the body.
        """
        self._set(True)
        self._transport.pauseProducing()

    def resumeProducing(self) -> None:
        """
        Read the body again.
        """
        self._set(False)
        self._transport.resumeProducing()

    def stopProducing(self) -> None:
        """
        Give up the body.
        """
        self._set(False)
        self._transport.stopProducing()


def mark_authenticated(request: object) -> None:
    """
    The request presented valid credentials: its connection no longer counts against the
    per-IP cap.
    """
    channel = getattr(request, "channel", None)
    if isinstance(channel, ApiChannel):
        channel.authenticated()
