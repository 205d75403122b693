"""
One remote pull on the wire (api.md §6.2 "Execution"): resolve, check, connect
to the checked address, ``GET``, and stream the body into the volume.

1. **Resolve once, check every answer.**  The host name is resolved by the
   injected resolver (an IP literal is used as is).  Every address of the
   answer must pass ``netguard.AddressPolicy``: one refused address refuses
   the pull (``Refused``), so a name that also points inside cannot be used
   to reach it.
2. **Connect to the checked addresses only.**  The HTTP client gets
   ``PinnedEndpoints``, an endpoint factory that connects to those addresses
   (in the resolver's order, the next one when a connection fails) and never
   resolves anything: a name whose DNS answer changes between the check and
   the connection (DNS rebinding) cannot redirect it.  The request still
   names the host in ``Host``; for ``https`` the TLS client options are made
   for the host name (SNI, and certificate verification unless
   ``--ignore-certificate-errors``).
3. **One request, no redirects.**  ``GET`` with ``User-Agent: Pterodactyl
   Panel (https://pterodactyl.io)``.  A 3xx answer fails the pull (its
   ``Location`` is never fetched: GHSA-6rg3-8h8x-5xfv); so does any status
   other than 200 and a missing (or chunked) or zero ``Content-Length``.
4. **Into the volume through a temporary file.**  The target name
   (``pullspec.target_name``) is joined to the root; the quota must fit the
   ``Content-Length``; the bytes go through a ``streams.spool.Spool`` into
   ``Volume.begin_write`` (denylist, parents created, a hidden temporary file
   beside the destination), which pauses the connection while the disk lags
   behind.  Exactly ``Content-Length`` bytes are committed (mode 0644,
   chowned, renamed into place); a pull that fails or is cancelled removes
   its temporary file, so it never leaves a partial file (upstream leaves
   one; project decision).

Failures the URL causes are ``PullFailed`` (or ``Refused``, ``InvalidName``);
filesystem refusals are the ``fs`` errors.
"""

from __future__ import annotations

import ipaddress
from typing import Callable, Sequence, cast

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError, ConnectingCancelledError, DNSLookupError
from twisted.internet.interfaces import (IAddress, IHostnameResolver, IHostResolution,
                                         IProtocol, IProtocolFactory, IPushProducer, IReactorTCP,
                                         IReactorTime, IResolutionReceiver, IStreamClientEndpoint)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import URI, Agent, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgentEndpointFactory, IPolicyForHTTPS, IResponse
from zope.interface import implementer

from ..blocking import RunBlocking
from ..fs import AtomicWrite, QuotaExceeded, Volume, clean_path
from ..streams.spool import Spool
from .netguard import AddressPolicy, RefusedAddress
from .pullspec import BadDisposition, PullUrl, target_name

USER_AGENT = b"Pterodactyl Panel (https://pterodactyl.io)"
#: Seconds to wait for one TCP connection.
CONNECT_TIMEOUT = 30


class PullFailed(Exception):
    """
    The remote side made the pull fail (the URL's fault): 400.
    """


#: One answer for a name that does not resolve and one that resolves inside,
#: so that pulls cannot be used to learn which internal names exist.
UNREACHABLE = ("The host of the URL is unknown or is on an internal network; remote downloads "
               "may not reach it.")


class Refused(PullFailed):
    """
    The host resolves to an address the SSRF guard refuses (``refused`` says
    which, for the log only).
    """

    def __init__(self, refused: RefusedAddress) -> None:
        super().__init__(UNREACHABLE)
        self.refused = refused


@implementer(IResolutionReceiver)
class _Answer:
    """
    Collects one resolution's addresses.
    """

    def __init__(self) -> None:
        self.addresses: list[str] = []
        self.done: Deferred[list[str]] = Deferred()

    def resolutionBegan(self, resolution: IHostResolution) -> None:
        pass

    def addressResolved(self, address: IAddress) -> None:
        host = getattr(address, "host", None)
        if isinstance(host, str) and host not in self.addresses:
            self.addresses.append(host)

    def resolutionComplete(self) -> None:
        self.done.callback(self.addresses)


async def checked_addresses(resolver: IHostnameResolver, url: PullUrl,
                            policy: AddressPolicy) -> list[str]:
    """
    The addresses of the URL's host, resolved once, every one checked.

    :raises Refused: one of them is refused.
    :raises PullFailed: the name has no address.
    """
    if url.is_literal:
        addresses = [url.host]
    else:
        answer = _Answer()
        resolver.resolveHostName(answer, url.host, url.port)
        addresses = await answer.done
    if not addresses:
        raise PullFailed(UNREACHABLE)
    for address in addresses:
        try:
            policy.check(address, url.port)
        except RefusedAddress as e:
            raise Refused(e) from None
    return addresses


@implementer(IStreamClientEndpoint)
class _FirstThatConnects:
    """
    Tries endpoints in order until one connects.
    """

    def __init__(self, endpoints: Sequence[IStreamClientEndpoint]) -> None:
        self._endpoints = endpoints

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        The first endpoint's connection, else the next one's...
        """
        return Deferred.fromCoroutine(self._connect(factory))

    async def _connect(self, factory: IProtocolFactory) -> IProtocol:
        last: Exception = ConnectError("no address to connect to")
        for endpoint in self._endpoints:
            try:
                protocol: IProtocol = await endpoint.connect(factory)
                return protocol
            except ConnectError as e:
                last = e
        raise last


@implementer(IAgentEndpointFactory)
class PinnedEndpoints:
    """
    The HTTP client's endpoints for one pull: TCP to the checked addresses,
    TLS for the URL's host name on ``https``.  A URI naming another host or
    port is refused (nothing but the one request is made).
    """

    def __init__(self, connector: IReactorTCP, url: PullUrl, addresses: Sequence[str],
                 tls: IPolicyForHTTPS, *, timeout: int = CONNECT_TIMEOUT) -> None:
        self._connector = connector
        self._url = url
        self._addresses = tuple(addresses)
        self._tls = tls
        self._timeout = timeout

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        """
        The pinned endpoint for ``uri``.
        """
        url = self._url
        host = uri.host.decode("ascii").strip("[]")
        if host != url.host or uri.port != url.port or uri.scheme.decode() != url.scheme:
            raise ConnectError("refusing to connect to {}:{}".format(host, uri.port))
        endpoints: list[IStreamClientEndpoint] = []
        for address in self._addresses:
            kind = TCP6ClientEndpoint if ipaddress.ip_address(
                address.partition("%")[0]).version == 6 else TCP4ClientEndpoint
            endpoints.append(kind(self._connector, address, url.port, timeout=self._timeout))
        endpoint: IStreamClientEndpoint = _FirstThatConnects(endpoints)
        if url.scheme == "https":
            creator = self._tls.creatorForNetloc(url.host.encode("ascii"), url.port)
            endpoint = wrapClientTLS(creator, endpoint)
        return endpoint


class _BodyToSpool(Protocol):
    """
    Hands a response body to a spool (which pauses the connection while the
    disk lags) and fires ``done`` once exactly ``length`` bytes came.
    Cancelling ``done`` drops the connection.

    ``deliverBody`` replays bytes that arrived before it and then resumes the
    transport, so the connection is dropped only once ``delivered`` says
    ``deliverBody`` returned.
    """

    def __init__(self, spool: Spool, length: int, progress: Callable[[int], None]) -> None:
        self._spool = spool
        self._length = length
        self._progress = progress
        self._delivered = False
        self.received = 0
        self.done: Deferred[None] = Deferred(lambda _: self._drop())

    def _drop(self) -> None:
        if self._delivered:
            _drop(self.transport)

    def delivered(self) -> None:
        """
        ``deliverBody`` returned: a pull that already failed drops now.
        """
        self._delivered = True
        if self.done.called:
            self._drop()

    def connectionMade(self) -> None:
        self._spool.registerProducer(cast(IPushProducer, self.transport), True)

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self.received += len(data)
        self._spool.write(data)
        self._progress(self.received)
        failure = self._spool.failure
        if failure is not None:
            self._spool.unregisterProducer()
            self.done.errback(failure)
            self._drop()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._spool.unregisterProducer()
        if self.done.called:
            return
        if reason.check(ResponseDone) and self.received == self._length:
            self.done.callback(None)
        else:
            self.done.errback(PullFailed("The download ended after {} of {} bytes.".format(
                self.received, self._length)))


def _discard(response: IResponse) -> None:
    """
    Drop the connection of a response whose body is not wanted.
    """
    protocol = Protocol()
    response.deliverBody(protocol)
    _drop(protocol.transport)


def _drop(transport: object) -> None:
    """
    Drop the connection behind a response body's transport (a push
    producer: stopping it closes the connection).
    """
    if transport is not None:
        cast(IPushProducer, transport).stopProducing()


def _open_target(volume: Volume, root: str, name: str, length: int) -> AtomicWrite:
    """
    The blocking start of the write: the quota must fit ``length``, then the
    temporary file beside the destination.
    """
    if not volume.fits(length):
        raise QuotaExceeded(clean_path(root + "/" + name))
    return volume.begin_write(root, name)


class Fetcher:
    """
    Runs remote pulls with the node's clock, worker threads and outgoing
    connections.
    """

    def __init__(self, clock: IReactorTime, run_blocking: RunBlocking, connector: IReactorTCP,
                 resolver: IHostnameResolver, tls: IPolicyForHTTPS) -> None:
        self._clock = clock
        self._run_blocking = run_blocking
        self._connector = connector
        self._resolver = resolver
        self._tls = tls

    async def fetch(self, url: PullUrl, policy: AddressPolicy, volume: Volume, root: str, *,
                    file_name: str = "", use_header: bool = False,
                    progress: Callable[[int, int], None] = lambda received, total: None) -> str:
        """
        Download ``url`` into ``root`` of ``volume``; the written file's
        volume-relative path.

        :param progress: called with (bytes received, ``Content-Length``).
        """
        addresses = await checked_addresses(self._resolver, url, policy)
        agent = Agent.usingEndpointFactory(
            self._clock, PinnedEndpoints(self._connector, url, addresses, self._tls))
        headers = Headers({b"User-Agent": [USER_AGENT]})
        if url.authorization is not None:
            headers.addRawHeader(b"Authorization", url.authorization)
        try:
            response: IResponse = await agent.request(b"GET", url.uri, headers)
        except (CancelledError, ConnectingCancelledError):
            raise CancelledError() from None
        except (ConnectError, DNSLookupError):
            raise PullFailed("Could not connect to the host of the URL.") from None
        except Exception as e:
            # ResponseNeverReceived, ResponseFailed: TLS failures and
            # connections closed before an answer.
            reasons: list[Failure] = getattr(e, "reasons", None) or []
            if any(r.check(CancelledError) for r in reasons):
                raise CancelledError() from None
            raise PullFailed("The request to the URL failed: {}".format(
                "; ".join(r.getErrorMessage() for r in reasons) or e.__class__.__name__)) from None
        name, length = self._check_response(response, url, file_name, use_header)
        return await self._write_body(response, volume, root, name, length, progress)

    @staticmethod
    def _check_response(response: IResponse, url: PullUrl, file_name: str,
                        use_header: bool) -> tuple[str, int]:
        """
        Status, length and target name, or the reason the pull fails (the
        body of a refused answer is not read).
        """
        code, phrase = response.code, response.phrase[:100].decode("latin-1", "replace")
        try:
            if 300 <= code < 400:
                raise PullFailed("The URL answered with a redirect ({} {}); redirects are not "
                                 "followed.".format(code, phrase))
            if code != 200:
                raise PullFailed("The URL answered {} {} instead of 200 OK.".format(code, phrase))
            length = response.length
            if length is UNKNOWN_LENGTH or not isinstance(length, int) or length < 1:
                raise PullFailed("The URL's answer has no Content-Length of at least 1 byte.")
            disposition = None
            if use_header:
                values = response.headers.getRawHeaders(b"Content-Disposition")
                if values:
                    # Header bytes as UTF-8 (undecodable bytes kept as they are).
                    disposition = values[0].decode("utf-8", "surrogateescape")
            try:
                name = target_name(url, file_name, disposition)
            except BadDisposition as e:
                raise PullFailed("The URL's Content-Disposition header is invalid: {}.".format(
                    e)) from None
        except BaseException:
            _discard(response)
            raise
        return name, length

    async def _write_body(self, response: IResponse, volume: Volume, root: str, name: str,
                          length: int, progress: Callable[[int, int], None]) -> str:
        spool = Spool(self._run_blocking)
        spool.begin(lambda: _open_target(volume, root, name, length))
        body = _BodyToSpool(spool, length, lambda received: progress(received, length))
        response.deliverBody(body)
        body.delivered()
        try:
            await body.done
        except BaseException:
            spool.close()  # aborts the file: its temporary file is removed
            raise
        spool.commit()
        spool.close()
        await spool.flush()
        return clean_path(root + "/" + name)
