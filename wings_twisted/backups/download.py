"""
Opening the S3 object of a restore, and handing its body to the extraction thread with
back-pressure (backups.md §8.3, §12).

`open_download` (before the 202 of a restore):

* the URL must be ``http``/``https`` with a host (``files.pullspec.parse_url``);
* every address the host resolves to must pass the SSRF guard of ``files.netguard`` (no private,
  loopback, link-local, shared or benchmarking address...) unless the host name, the address or
  a containing network is listed in ``system.backups.restore_host_allowlist`` (`HostPolicy`); the
  connection goes to the checked addresses only (``fetch.PinnedEndpoints``), so a DNS answer that
  changes between the check and the connection cannot redirect it;
* redirects (301, 302, 303, 307, 308 with a ``Location``) are followed up to 10 times, each
  target checked again the same way;
* connecting and waiting for the response headers are bounded to 30 s each;
* the status must be 200, and the ``Content-Type``'s media type (parameters ignored,
  case-insensitive) ``application/x-gzip`` or ``application/gzip``.

Failures are `DownloadRefused` with the texts of §8.3 (the route answers 400 with them).

`BodyQueue` is the body's ``IProtocol`` (``response.deliverBody``): it queues the chunks for the
extraction thread, pauses the connection while more than `HIGH_WATER` bytes wait and resumes it
below `LOW_WATER`; its ``read`` (thread side) blocks until bytes arrive.  No byte for
`IDLE_TIMEOUT` seconds while the transport is not paused by us drops the connection and fails the
restore (§8.4, project).  The archive is never held whole in memory.
"""

from __future__ import annotations

import queue
import threading
from email.message import Message
from typing import Any, cast
from urllib.parse import urljoin

from twisted.internet.interfaces import (
    IDelayedCall,
    IHostnameResolver,
    IPushProducer,
    IReactorFromThreads,
    IReactorTCP,
    IReactorTime,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS, IResponse

from ..config.networks import parse_allowed_network
from ..files.fetch import PinnedEndpoints, PullFailed, Refused, checked_addresses
from ..files.netguard import AddressPolicy
from ..files.pullspec import InvalidUrl, PullUrl, parse_url

__all__ = ["BLOCKED", "BodyQueue", "DownloadRefused", "HostPolicy", "open_download"]

log = Logger()

BLOCKED = "The provided backup link resolves to a blocked address."
BAD_STATUS = "The provided backup link returned an invalid response status: {}"
BAD_TYPE = ('The provided backup link is not a supported content type. "{}" is not '
            'application/x-gzip.')
BAD_LINK = "The provided backup link is not a valid http or https URL."
UNREACHABLE = "The provided backup link could not be reached: {}"
GZIP_TYPES = ("application/x-gzip", "application/gzip")
REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 10
CONNECT_TIMEOUT = 30
HEADERS_TIMEOUT = 30.0
IDLE_TIMEOUT = 300.0
HIGH_WATER = 4 * 1024 * 1024
LOW_WATER = 1024 * 1024


class DownloadRefused(Exception):
    """
    The restore's download cannot be used; the message is the 400 text.
    """


class HostPolicy:
    """
    The SSRF guard of restores: ``files.netguard`` plus ``restore_host_allowlist`` (host names,
    addresses, networks; an address or network entry may name a port).
    """

    def __init__(self, entries: tuple[str, ...] | list[str]) -> None:
        hosts: set[str] = set()
        networks = []
        for entry in entries:
            try:
                networks.append(parse_allowed_network(entry))
            except ValueError:
                hosts.add(entry.strip().lower().rstrip("."))
        self._hosts = frozenset(hosts)
        self.addresses = AddressPolicy(networks)

    def exempt(self, host: str) -> bool:
        """
        Whether the host name itself is listed.
        """
        return host.lower().rstrip(".") in self._hosts


def media_type(value: str) -> str:
    """
    The media type of a ``Content-Type`` value, lower-case, without parameters.
    """
    message = Message()
    message["content-type"] = value
    return message.get_content_type().lower() if value.strip() else ""


def check_content_type(response: IResponse) -> None:
    """
    §8.3: the parsed media type must be one of `GZIP_TYPES`.
    """
    values = response.headers.getRawHeaders(b"content-type") or []
    value = values[0].decode("latin-1") if values else ""
    # email.Message falls back to text/plain for a value it cannot parse; such a value never
    # names a gzip type, so the fallback is refused like it.
    if not value or media_type(value) not in GZIP_TYPES or "/" not in value:
        raise DownloadRefused(BAD_TYPE.format(value))


def _discard(response: IResponse) -> None:
    protocol = Protocol()
    response.deliverBody(protocol)
    if protocol.transport is not None:
        cast(IPushProducer, protocol.transport).stopProducing()


async def _connect(url: PullUrl, policy: HostPolicy, clock: IReactorTime, connector: IReactorTCP,
                   resolver: IHostnameResolver, tls: IPolicyForHTTPS) -> IResponse:
    addresses_policy: AddressPolicy = _Anything() if policy.exempt(url.host) else policy.addresses
    try:
        addresses = await checked_addresses(resolver, url, addresses_policy)
    except Refused:
        raise DownloadRefused(BLOCKED) from None
    except PullFailed as e:
        raise DownloadRefused(UNREACHABLE.format(e)) from None
    agent = Agent.usingEndpointFactory(
        clock, PinnedEndpoints(connector, url, addresses, tls, timeout=CONNECT_TIMEOUT))
    request = agent.request(b"GET", url.uri, Headers({b"User-Agent": [b"Pterodactyl Wings"]}))
    request.addTimeout(HEADERS_TIMEOUT, clock)
    try:
        response: IResponse = await request
    except Exception as e:
        reasons: list[Failure] = getattr(e, "reasons", None) or []
        detail = "; ".join(r.getErrorMessage() for r in reasons) or str(e) or type(e).__name__
        raise DownloadRefused(UNREACHABLE.format(detail)) from None
    return response


class _Anything(AddressPolicy):
    """
    No address check (the host name is on the allowlist).
    """

    def check(self, text: str, port: int) -> None:
        return None


async def open_download(text: str, policy: HostPolicy, clock: IReactorTime,
                        connector: IReactorTCP, resolver: IHostnameResolver,
                        tls: IPolicyForHTTPS) -> IResponse:
    """
    The checked response of ``GET <text>`` with its body unread (module docstring).

    :raises DownloadRefused: with the 400 text.
    """
    current = text
    for _ in range(MAX_REDIRECTS + 1):
        try:
            url = parse_url(current)
        except InvalidUrl:
            raise DownloadRefused(BAD_LINK) from None
        if not url.host:
            raise DownloadRefused(BAD_LINK)
        response = await _connect(url, policy, clock, connector, resolver, tls)
        location = response.headers.getRawHeaders(b"location")
        if response.code in REDIRECTS and location:
            _discard(response)
            current = urljoin(current, location[0].decode("latin-1"))
            continue
        if response.code != 200:
            _discard(response)
            raise DownloadRefused(BAD_STATUS.format("{} {}".format(
                response.code, response.phrase.decode("latin-1", "replace")).strip()))
        try:
            check_content_type(response)
        except DownloadRefused:
            _discard(response)
            raise
        return response
    raise DownloadRefused(UNREACHABLE.format("too many redirects"))


_EOF = object()


class BodyQueue(Protocol):
    """
    A response body handed to a reading thread (module docstring).

    :param reactor: schedules the transport's resumption from the reading thread, and the idle
        timer.
    """

    def __init__(self, reactor: Any, *, high_water: int = HIGH_WATER, low_water: int = LOW_WATER,
                 idle_timeout: float = IDLE_TIMEOUT,
                 cancel: threading.Event | None = None) -> None:
        self._reactor = reactor
        self._high = high_water
        self._low = low_water
        self._idle_timeout = idle_timeout
        self._chunks: queue.Queue[object] = queue.Queue()
        self._queued = 0
        self._lock = threading.Lock()
        self._paused = False
        self._idle: IDelayedCall | None = None
        self._ended = False
        self._current = b""
        self._offset = 0
        self._stopped = cancel if cancel is not None else threading.Event()
        #: Bytes received from the network.
        self.received = 0

    # -- reactor side --------------------------------------------------------------------------

    def connectionMade(self) -> None:
        self._arm()

    def _arm(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = cast(IReactorTime, self._reactor).callLater(self._idle_timeout, self._timeout)

    def _disarm(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None

    def _timeout(self) -> None:
        self._idle = None
        log.warn("The backup download sent nothing for {seconds:.0f} s; dropping it",
                 seconds=self._idle_timeout)
        self._finish(TimeoutError("no data received for {:.0f} seconds".format(
            self._idle_timeout)))
        self.stop()

    def dataReceived(self, data: bytes) -> None:
        if self._ended:
            return
        self.received += len(data)
        with self._lock:
            self._queued += len(data)
            pause = self._queued > self._high and not self._paused
            if pause:
                self._paused = True
        self._chunks.put(data)
        if pause:
            self._disarm()
            cast(IPushProducer, self.transport).pauseProducing()
        else:
            self._arm()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._disarm()
        if reason.check(ResponseDone):
            self._finish(None)
        else:
            self._finish(reason.value if isinstance(reason.value, BaseException)
                         else Exception(str(reason.value)))

    def _finish(self, error: BaseException | None) -> None:
        if self._ended:
            return
        self._ended = True
        self._chunks.put(_EOF if error is None else error)

    def _resume(self) -> None:
        with self._lock:
            if not self._paused or self._queued > self._low:
                return
            self._paused = False
        if not self._ended and self.transport is not None:
            self._arm()
            cast(IPushProducer, self.transport).resumeProducing()

    def stop(self) -> None:
        """
        Drop the connection (reactor thread).
        """
        self._disarm()
        if self.transport is not None:
            cast(IPushProducer, self.transport).stopProducing()

    # -- reading thread ------------------------------------------------------------------------

    def read(self, size: int) -> bytes:
        """
        At most ``size`` bytes; ``b""`` at the end; raises the connection's error.  Blocks
        until something arrives (or `abandon` is called).
        """
        if self._offset >= len(self._current):
            item: object = None
            while item is None:
                if self._stopped.is_set():
                    raise ConnectionAbortedError("the restore was abandoned")
                try:
                    item = self._chunks.get(timeout=0.5)
                except queue.Empty:
                    item = None
            if item is _EOF:
                self._chunks.put(_EOF)
                return b""
            if isinstance(item, BaseException):
                self._chunks.put(item)
                raise item
            assert isinstance(item, bytes)
            self._current, self._offset = item, 0
            with self._lock:
                self._queued -= len(item)
                resume = self._paused and self._queued <= self._low
            if resume:
                cast(IReactorFromThreads, self._reactor).callFromThread(self._resume)
        data = self._current[self._offset:self._offset + size]
        self._offset += len(data)
        return data

    def abandon(self) -> None:
        """
        Make a blocked `read` give up (any thread).
        """
        self._stopped.set()


def deliver(response: IResponse, reactor: Any,
            cancel: threading.Event | None = None) -> BodyQueue:
    """
    Hand ``response``'s body to a new `BodyQueue` (a blocked read gives up once ``cancel`` is
    set).
    """
    body = BodyQueue(reactor, cancel=cancel)
    response.deliverBody(body)
    return body
