"""
The Autobahn side of the console websocket: a thin protocol that checks the
``Origin`` (websocket.md §1.3), adds the W1.12 security headers to the
handshake, hands frames to a ``Session`` and turns the transport's
pause/resume into the session's back-pressure (§10.1).

Decisions:

* One ``ConsoleFactory`` per node, made by ``web.site.build_root``.  Per
  request, the resource wraps it in a ``Binding`` whose ``buildProtocol``
  attaches the server and the client IP to the new protocol.
* Origin: allowed when the header equals ``remote`` or an
  ``allowed_origins`` entry, raw or with one trailing ``/`` removed from the
  configured value, or when an entry is ``*`` (after the same stripping).
  A missing header compares as ``""``; an empty configured value never
  matches anything.  Denials answer ``403 Forbidden`` with a ``text/plain``
  body ``Forbidden`` and ``Sec-WebSocket-Version: 13``.
* Auto-ping every 30 s, with a 30 s pong timeout (§1.4 MAY): it keeps
  reverse proxies from idling the socket out and frees the slot of a client
  that vanished without a FIN.  No ``permessage-deflate`` (W1.11): it would
  cost one compression per client per console line.  Messages over 256 KiB
  fail the connection inside Autobahn (it must buffer them to measure them);
  32 KiB–256 KiB get the ``message too large`` reply from the session.
* Back-pressure: the HTTP channel that served the upgrade request is still
  registered as the transport's producer; it is unregistered and replaced by
  a push producer that pauses/resumes the session.
* Close codes outside 1000/3000–4999 (1001 ``server deleted``) go through
  ``sendCloseFrame``, which does not validate the code.
* Fan-out: an event goes to every socket of its server one after the other
  with the same payload object, so the factory frames it once
  (``prepareMessage``) and keeps that last frame; each socket then writes
  the framed bytes to its transport.  This skips ``sendData``, whose
  per-call debug formatting cost more than the write itself, whenever
  ``sendData`` would have written at once anyway (nothing queued by
  Autobahn, no compression); otherwise ``sendPreparedMessage`` does it.
"""

from __future__ import annotations

from typing import Any, Sequence

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import PreparedMessage
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web import http
from zope.interface import implementer

from ..node import Node
from ..servers.events import Batch
from ..servers.lifecycle import power
from ..servers.server import Server
from .session import Session

#: Handshake response headers (W1.12, §1.2).
SECURITY_HEADERS = {"Content-Security-Policy": "default-src 'self'", "X-Frame-Options": "DENY"}
#: Close codes from clients that are not worth a warning (§11.3).
NORMAL_CLOSE_CODES = frozenset({1000, 1001, 1005, 1006, 1012})
AUTO_PING_SECONDS = 30
MAX_PAYLOAD = 256 * 1024


def _strip(value: str) -> str:
    return value[:-1] if value.endswith("/") else value


def origin_allowed(remote: str, allowed: Sequence[str], origin: str) -> bool:
    """
    The origin rule of §1.3 with the project's trailing-slash tolerance.
    """
    if remote and origin in (remote, _strip(remote)):
        return True
    for entry in allowed:
        if not entry:
            continue
        if _strip(entry) == "*" or origin in (entry, _strip(entry)):
            return True
    return False


@implementer(IPushProducer)
class _Backpressure:
    """
    The transport's producer: its buffer filling up pauses the session.
    """

    def __init__(self, session: Session) -> None:
        self._session = session

    def pauseProducing(self) -> None:
        self._session.pause()

    def resumeProducing(self) -> None:
        self._session.resume()

    def stopProducing(self) -> None:
        pass


class _Channel:
    """
    The ``session.Channel`` over an Autobahn protocol.
    """

    def __init__(self, protocol: "ConsoleProtocol") -> None:
        self._protocol = protocol

    def send(self, frame: bytes) -> None:
        protocol = self._protocol
        if protocol.state != protocol.STATE_OPEN:
            return
        prepared = protocol.factory.prepared(frame)
        transport = protocol.transport
        if transport is not None and protocol._perMessageCompress is None \
                and not protocol.send_queue:
            transport.write(prepared.payloadHybi)
        else:
            protocol.sendPreparedMessage(prepared)

    def send_batch(self, batch: Batch) -> None:
        protocol = self._protocol
        if protocol.state != protocol.STATE_OPEN:
            return
        transport = protocol.transport
        if transport is not None and protocol._perMessageCompress is None \
                and not protocol.send_queue:
            # Framed once per batch, whatever the number of sockets.
            transport.write(batch.wire(self._encode))
        else:
            for event in batch.events:
                protocol.sendPreparedMessage(protocol.factory.prepared(event.frame))

    def _encode(self, payload: bytes) -> bytes:
        framed: bytes = self._protocol.factory.prepareMessage(payload).payloadHybi
        return framed

    def close(self, code: int, reason: str) -> None:
        protocol = self._protocol
        if protocol.state == protocol.STATE_OPEN:
            protocol.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8")[:123])

    def drop(self) -> None:
        self._protocol.dropConnection(abort=False)


class ConsoleProtocol(WebSocketServerProtocol):
    """
    One console websocket: origin check, then a ``Session`` does the rest.
    """

    _log = Logger()
    node: Any = None
    game_server: Any = None  # not ``server``: Autobahn's factories use that name
    client_ip = ""
    session: Session | None = None

    def onConnect(self, request: ConnectionRequest) -> tuple[None, dict[str, str]]:
        """
        Refuse a foreign ``Origin``; otherwise accept with no subprotocol.
        """
        config = self.node.config
        origin = request.headers.get("origin", "")
        if not origin_allowed(config.remote, list(config.allowed_origins), origin):
            self._log.info("Websocket for server {server} refused: origin {origin!r}",
                           server=self.game_server.uuid, origin=origin)
            raise ConnectionDeny(403, "Forbidden")
        return None, dict(SECURITY_HEADERS)

    def onOpen(self) -> None:
        """
        Start the session and take over the transport's producer slot.
        """
        node = self.node
        server = self.game_server
        session = self.session = Session(
            server, _Channel(self), clock=node.clock, config=lambda: node.config,
            denials=node.denials, activity=node.activity, client_ip=self.client_ip,
            power=lambda action: Deferred.fromCoroutine(power(server, action)))
        transport: Any = self.transport
        try:
            transport.unregisterProducer()
            transport.registerProducer(_Backpressure(session), True)
        except Exception:
            self._log.failure("Websocket {id}: no back-pressure on this transport", id=session.id)
        session.open()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """
        Hand the frame to the session.
        """
        if self.session is not None:
            self.session.receive(payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        """
        End the session; unusual client close codes are logged as warnings.
        """
        session = self.session
        if session is None:
            return
        by_us = session.closed or bool(getattr(self, "closedByMe", False))
        session.lost()
        if by_us or code is None or code in NORMAL_CLOSE_CODES:
            self._log.debug("Websocket {id} closed ({code})", id=session.id, code=code)
        else:
            self._log.warn("Websocket {id} for server {server} closed by the client with code "
                           "{code}: {reason}", id=session.id, server=self.game_server.uuid,
                           code=code, reason=reason)

    def failHandshake(self, reason: str, code: int = 400,
                      responseHeaders: Any = None) -> None:
        """
        Refuse the upgrade with a plain-text body (Autobahn sends none).
        """
        self.wasNotCleanReason = reason
        phrase = http.RESPONSES.get(code, b"Error").decode("latin-1")
        body = (phrase if code == 403 else reason).encode("utf-8")
        headers = list(responseHeaders or [])
        headers += [("Content-Type", "text/plain; charset=utf-8"),
                    ("Content-Length", str(len(body)))]
        if code == 403:
            headers.append(("Sec-WebSocket-Version", "13"))
        self._log.info("Websocket handshake refused ({code}): {reason}", code=code, reason=reason)
        self.sendHttpErrorResponse(code, phrase, headers)
        self.sendData(body)
        self.dropConnection(abort=False)


class ConsoleFactory(WebSocketServerFactory):
    """
    The node's websocket factory; protocol options are set once here.
    """

    protocol = ConsoleProtocol

    def __init__(self, node: Node) -> None:
        super().__init__(server=None, reactor=node.clock)
        self.node = node
        self._last_prepared: tuple[bytes, PreparedMessage] | None = None
        self.setProtocolOptions(
            webStatus=False,
            autoPingInterval=AUTO_PING_SECONDS,
            autoPingTimeout=AUTO_PING_SECONDS,
            maxFramePayloadSize=MAX_PAYLOAD,
            maxMessagePayloadSize=MAX_PAYLOAD,
        )

    def prepared(self, payload: bytes) -> PreparedMessage:
        """
        ``payload`` framed as a text message, framed again only when the
        payload is not the object framed last.
        """
        last = self._last_prepared
        if last is None or last[0] is not payload:
            last = self._last_prepared = (payload, self.prepareMessage(payload))
        return last[1]

    def bind(self, server: Server, client_ip: str) -> "Binding":
        """
        A factory-like object for one upgrade request of ``server``.
        """
        return Binding(self, server, client_ip)


class Binding:
    """
    What ``WebSocketResource`` calls ``buildProtocol`` on: the node's
    factory plus the server and client IP of one request.
    """

    def __init__(self, factory: ConsoleFactory, server: Server, client_ip: str) -> None:
        self._factory = factory
        self._server = server
        self._client_ip = client_ip

    def buildProtocol(self, addr: Any) -> ConsoleProtocol:
        """
        A ``ConsoleProtocol`` bound to the request's server and client.
        """
        protocol = self._factory.buildProtocol(addr)
        assert isinstance(protocol, ConsoleProtocol)
        protocol.node = self._factory.node
        protocol.game_server = self._server
        protocol.client_ip = self._client_ip
        return protocol
