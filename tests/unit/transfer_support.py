"""
Two daemons in memory for the transfer unit tests: a source node and a destination node (each a
``tests.support.Harness`` with its own clock, volume root and development-panel state), the
source's push agent joined to the destination's real ``Site`` over ``twisted.test.iosim``.  No
sockets, no threads, no global reactor: ``run_blocking`` is synchronous, incoming archives are
extracted when their part ends, and the test pumps the connections with ``flush``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from typing import Any, Callable

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.python.filepath import FilePath
from twisted.test import iosim
from twisted.web.client import URI, Agent
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from wings_twisted.devpanel.state import NodeCredentials
from wings_twisted.devpanel.tokens import mint_transfer
from wings_twisted.transfers.framing import Framing, body
from wings_twisted.transfers.services import TransferServices
from wings_twisted.web.site import build_site

from ..support import (
    SERVER,
    TOKEN,
    TOKEN_ID,
    Harness,
    Response,
    _Collector,
    parse_response,
)

DESTINATION = "http://127.0.0.1:8080/api/transfers"


@implementer(IStreamClientEndpoint)
class _Endpoint:
    def __init__(self, network: MemoryNetwork) -> None:
        self._network = network

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        network = self._network
        client = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 8080))
        server = network.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        server_transport = iosim.FakeTransport(server, isServer=True,
                                               peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        client_transport = iosim.FakeTransport(client, isServer=False)
        if network.cut_after is not None:
            server_transport = _Cutting(server, network.cut_after, server_transport,
                                        network.hold)
            network.held.append(server_transport)
        pump = iosim.connect(server, server_transport, client, client_transport, greet=False)
        network.pumps.append(pump)
        network.connections += 1
        assert client is not None
        return succeed(client)


class _Cutting(iosim.FakeTransport):  # type: ignore[misc]
    """
    A server transport that receives only ``limit`` bytes; the source then hangs up
    (``hold=False``) or what follows waits until ``release`` (``hold=True``).
    """

    def __init__(self, protocol: Any, limit: int, like: iosim.FakeTransport,
                 hold: bool) -> None:
        super().__init__(protocol, isServer=True, peerAddress=like.peerAddress)
        self._limit = limit
        self._hold = hold
        self._seen = 0
        self.held: list[bytes] = []

    def bufferReceived(self, data: bytes) -> None:
        if self._limit < 0:
            super().bufferReceived(data)
            return
        room = self._limit - self._seen
        if room > 0:
            self._seen += min(room, len(data))
            super().bufferReceived(data[:room])
        if self._seen >= self._limit:
            if self._hold:
                self.held.append(data[max(room, 0):])
            else:
                self.disconnecting = True

    def release(self) -> None:
        self._limit = -1
        held, self.held = self.held, []
        for data in held:
            super().bufferReceived(data)


@implementer(IAgentEndpointFactory)
class MemoryNetwork:
    """
    The source's way to the destination: every connection goes to ``site`` in memory.

    :ivar cut_after: when set, connections are cut (or, with ``hold``, held) once that many
        bytes reached the destination.
    """

    def __init__(self, site: Any) -> None:
        self.site = site
        self.pumps: list[iosim.IOPump] = []
        self.connections = 0
        self.cut_after: int | None = None
        self.hold = False
        self.held: list[_Cutting] = []

    def release(self) -> None:
        """
        Deliver what the held connections kept.
        """
        for transport in self.held:
            transport.release()

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        return _Endpoint(self)

    def flush(self, *clocks: Any) -> None:
        """
        Move bytes until every connection is quiet (advancing ``clocks`` by 0 in between).
        """
        for _ in range(200):
            moved = False
            for pump in list(self.pumps):
                moved = pump.flush(advanceClock=False) or moved
            for clock in clocks:
                clock.advance(0)
            if not moved:
                return


class Pair:
    """
    A source and a destination node in memory, the server ``SERVER`` on the source.
    """

    def __init__(self, base: FilePath, **destination_config: Any) -> None:
        self.source = Harness(base.child("source"))
        self.destination = Harness(base.child("destination"), **destination_config)
        self.destination_transfers = TransferServices(self.destination.node, agent=None)
        self.destination.site = build_site(self.destination.node,
                                           transfers=self.destination_transfers)
        self.network = MemoryNetwork(self.destination.site)
        agent = Agent.usingEndpointFactory(self.source.clock, self.network)
        self.source_transfers = TransferServices(self.source.node, agent=agent)
        self.source.site = build_site(self.source.node, transfers=self.source_transfers)
        # One panel for both nodes (as in reality): the destination reports to the source's.
        self.panel = self.source.state
        self.destination.state = self.panel
        self.destination.node.panel = self.source.node.panel
        self.server = self.source.add_server(SERVER)
        self.panel.servers[SERVER].transfer = True

    def token(self, **knobs: Any) -> str:
        """
        A transfer token the panel would mint: signed with the destination's daemon token.
        """
        node = NodeCredentials(TOKEN_ID, TOKEN, daemon_url="http://127.0.0.1:8080",
                               url="http://panel.test")
        knobs.setdefault("now", self.destination.clock.seconds())
        return mint_transfer(node, SERVER, **knobs)

    def start(self, **body: Any) -> Response:
        """
        The panel's ``POST /api/servers/{uuid}/transfer`` on the source.
        """
        import json
        payload = {"server_id": SERVER, "url": DESTINATION, "token": "Bearer " + self.token(),
                   "server": {"uuid": SERVER, "start_on_completion": False}}
        payload.update(body)
        return self.source.get("/api/servers/{}/transfer".format(SERVER), method="POST",
                               body=json.dumps(payload).encode())

    def flush(self) -> None:
        """
        Pump the push to its end (and the panel's delayed answers).
        """
        for _ in range(3):
            self.network.flush(self.source.clock, self.destination.clock)
            self.source.panel_http.flush()
        self.network.flush(self.source.clock, self.destination.clock)

    def advance(self, seconds: float, step: float = 0.5) -> None:
        """
        Let ``seconds`` pass on both clocks (retries, delays), pumping in between.
        """
        while seconds > 0:
            self.source.clock.advance(min(step, seconds))
            self.destination.clock.advance(min(step, seconds))
            seconds -= step
            self.flush()

    def reports(self) -> list[tuple[str, int | None]]:
        """
        The transfer reports the panel received: (``success``/``failure``, status answered).
        """
        return [(r.path.rpartition("/")[2], r.status) for r in self.panel.received
                if r.route is not None and "/transfer/" in r.route]


class Connection:
    """
    A client connection to a site kept open (a body that arrives in steps, or never ends).
    """

    def __init__(self, site: Any) -> None:
        self.server = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        self.client = _Collector()
        self.transport = iosim.FakeTransport(self.client, isServer=False)
        server_transport = iosim.FakeTransport(
            self.server, isServer=True, peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.pump = iosim.connect(self.server, server_transport, self.client, self.transport,
                                  greet=False)

    def send(self, data: bytes) -> None:
        self.transport.write(data)
        self.pump.flush()

    def close(self) -> None:
        self.transport.loseConnection()
        self.pump.flush()

    @property
    def response(self) -> Response:
        return parse_response(self.client.data)

    @property
    def lost(self) -> bool:
        return bool(self.client.lost)


def request_head(token: str | None, content_type: bytes, *, chunked_body: bool = True) -> bytes:
    """
    The head of a ``POST /api/transfers``.
    """
    lines = ["POST /api/transfers HTTP/1.1", "Host: 127.0.0.1:8080",
             "Content-Type: " + content_type.decode("latin-1")]
    if token is not None:
        lines.append("Authorization: Bearer " + token)
    if chunked_body:
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes) -> bytes:
    """
    One chunk of a chunked body.
    """
    return b"%x\r\n" % len(data) + data + b"\r\n"


def write_files(root: str, files: dict[str, tuple[bytes, int]]) -> None:
    """
    Create ``{relative path: (content, mode)}`` under ``root``.
    """
    for name, (content, mode) in files.items():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content)
        os.chmod(path, mode)


def tree(root: str) -> dict[str, tuple[bytes, int]]:
    """
    ``{relative path: (content, mode bits)}`` of every regular file under ``root``.
    """
    found = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = (f.read(), os.stat(path).st_mode & 0o7777)
    return found


def tar_gz(files: dict[str, bytes], *, padding: int = 0) -> bytes:
    """
    A tar.gz of ``files`` as Python's ``tarfile`` writes it; ``padding`` zero bytes appended
    after the gzip trailer (a sender that pads, transfers.md §11.3).
    """
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            info.mtime = 1_700_000_000
            archive.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0) + b"\x00" * padding


def upstream_body(archive: bytes, *, boundary: bytes | None = None,
                  checksum: str | None = None) -> tuple[bytes, bytes]:
    """
    The body upstream Wings sends (transfers.md §3.4, §11.2): 60-hex boundary, ``archive`` then
    ``checksum`` only.  Returns (content type, body).
    """
    framing = Framing(boundary, checksum_archive=False)
    digest = checksum if checksum is not None else hashlib.sha256(archive).hexdigest()
    return framing.content_type, body(framing, archive, digest)


def chunked(data: bytes, size: int = 65536) -> bytes:
    """
    ``data`` in HTTP/1.1 chunked encoding.
    """
    pieces = [b"%x\r\n" % len(data[i:i + size]) + data[i:i + size] + b"\r\n"
              for i in range(0, len(data), size)]
    return b"".join(pieces) + b"0\r\n\r\n"


def post_transfer(harness: Harness, content_type: bytes, payload: bytes, *,
                  authorization: str | None, chunk: bool = True,
                  pieces: int = 0, extra: Callable[[list[str]], None] | None = None) -> Response:
    """
    ``POST /api/transfers`` with raw bytes on the destination.
    """
    lines = ["POST /api/transfers HTTP/1.1", "Host: 127.0.0.1:8080",
             "Content-Type: " + content_type.decode("latin-1")]
    if authorization is not None:
        lines.append("Authorization: " + authorization)
    if chunk:
        lines.append("Transfer-Encoding: chunked")
        data = chunked(payload)
    else:
        lines.append("Content-Length: %d" % len(payload))
        data = payload
    if extra is not None:
        extra(lines)
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data
    return harness.request(raw, chunks=pieces)


__all__ = ["DESTINATION", "Connection", "MemoryNetwork", "Pair", "chunk", "chunked",
           "parse_response", "post_transfer", "request_head", "tar_gz", "tree", "upstream_body",
           "write_files"]
