"""
Tests for the Autobahn side of the console websocket and its HTTP
resources (websocket.md §1, §8.1, §10.1, §11; api.md §4.9): a real
``ApiSite`` serving the ``ws`` resource, joined to an Autobahn client with
``twisted.test.iosim``, and every timer on a ``Clock`` (txaio's loop
included).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import txaio
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from wings_twisted.auth.denials import Denials
from wings_twisted.config import config_from_dict
from wings_twisted.devpanel.tokens import mint_websocket
from wings_twisted.files import FileServices
from wings_twisted.web.errors import JsonResource
from wings_twisted.web.site import ApiBranch, ApiSite
from wings_twisted.websocket.protocol import (
    ConsoleFactory,
    ConsoleProtocol,
    _Backpressure,
    origin_allowed,
)

from ..support import exchange
from .test_ws_session import (
    OTHER_SERVER,
    OTHER_USER,
    SERVER,
    START,
    TOKEN,
    USER,
    FakeActivity,
    FakeServer,
)

PANEL = "http://panel.test"
WS_PATH = "/api/servers/" + SERVER + "/ws"


class Registry:
    """
    ``node.registry``: ``get`` and iteration.
    """

    def __init__(self, *servers: FakeServer) -> None:
        self._servers = {s.uuid: s for s in servers}

    def get(self, uuid: str) -> FakeServer | None:
        return self._servers.get(uuid)

    def __iter__(self) -> Any:
        return iter(list(self._servers.values()))


@implementer(IPushProducer)
class StrictTransport(iosim.FakeTransport):
    """
    An in-memory transport that, like ``tcp.Connection``, is a push producer
    (so the HTTP channel registers itself on it) and refuses a second
    producer.
    """

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if self.producer is not None:
            raise RuntimeError("a producer is already registered")
        super().registerProducer(producer, streaming)


class FakeNode:
    """
    What the websocket code reads of ``Node`` (weak-referenceable, like it).
    """

    def __init__(self, **attributes: Any) -> None:
        self.__dict__.update(attributes)


class Client(WebSocketClientProtocol):
    """
    Records what the daemon sends.
    """

    def __init__(self) -> None:
        super().__init__()
        self.received: list[dict[str, Any]] = []
        self.opened = False
        self.closed_with: tuple[Any, Any] | None = None

    def onOpen(self) -> None:
        self.opened = True

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.received.append(json.loads(payload))

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self.closed_with = (code, reason)

    def events(self) -> list[tuple[str, Any]]:
        out = [(m["event"], m.get("args")) for m in self.received]
        self.received.clear()
        return out


class Rig(SynchronousTestCase):
    """
    A node with one fake server, its site, and helpers to connect.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        old_loop = txaio.config.loop
        txaio.config.loop = self.clock
        self.addCleanup(setattr, txaio.config, "loop", old_loop)
        self.server = FakeServer()
        self.other = FakeServer(OTHER_SERVER)
        self.set_config()
        self.node = FakeNode(config=self.config, clock=self.clock,
                            activity=FakeActivity(), denials=Denials(START - 100),
                            registry=Registry(self.server, self.other),
                            boot_time=START - 100)
        root = JsonResource()
        self.factory = ConsoleFactory(self.node)
        root.putChild(b"api", ApiBranch(self.node, self.factory, FileServices(self.node)))
        self.site = ApiSite(root, self.node)

    def set_config(self, **changes: Any) -> None:
        raw: dict[str, Any] = {"token": TOKEN, "remote": PANEL}
        raw.update(changes)
        self.config = config_from_dict(raw)
        if hasattr(self, "node"):
            self.node.config = self.config

    def connect(self, origin: str | None = PANEL) -> tuple[Client, iosim.IOPump, Any]:
        """
        A websocket client joined to the site in memory, pumped until quiet.
        """
        factory = WebSocketClientFactory("ws://daemon.test" + WS_PATH, origin=origin,
                                         reactor=self.clock)
        factory.protocol = Client
        client = factory.buildProtocol(None)
        peer = IPv4Address("TCP", "198.51.100.4", 40000)
        server_proto = self.site.buildProtocol(peer)
        server_io = StrictTransport(server_proto, isServer=True, peerAddress=peer)
        client_io = iosim.FakeTransport(client, isServer=False)
        pump = iosim.connect(server_proto, server_io, client, client_io, greet=False,
                             clock=self.clock)
        pump.flush()
        return client, pump, server_io

    def token(self, permissions: list[str] | None = None, **knobs: Any) -> str:
        knobs.setdefault("now", self.clock.seconds())
        knobs.setdefault("user", USER)
        return mint_websocket(TOKEN, SERVER, permissions=permissions or ["*"], **knobs)

    def send(self, client: Client, pump: iosim.IOPump, event: str, *args: Any) -> None:
        client.sendMessage(json.dumps({"event": event, "args": list(args)}).encode())
        pump.flush()

    def raw_upgrade(self, origin: str | None = PANEL, *, upgrade: bool = True,
                    server: str = SERVER) -> Any:
        lines = ["GET " + WS_PATH.replace(SERVER, server) + " HTTP/1.1", "Host: daemon.test"]
        if upgrade:
            lines += ["Upgrade: websocket", "Connection: Upgrade",
                      "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]
        if origin is not None:
            lines.append("Origin: " + origin)
        return exchange(self.site, ("\r\n".join(lines) + "\r\n\r\n").encode())

    def request(self, method: str, path: str) -> Any:
        lines = [method + " " + path + " HTTP/1.1", "Host: daemon.test", "Content-Length: 0"]
        return exchange(self.site, ("\r\n".join(lines) + "\r\n\r\n").encode())


class HandshakeTests(Rig):
    """
    Checks before and during the upgrade (§1.2, §1.3).
    """

    def test_upgrade_headers(self) -> None:
        """
        A good upgrade is a 101 with the W1.12 security headers.
        """
        response = self.raw_upgrade()
        self.assertEqual(response.status, 101)
        self.assertEqual(response.header("Content-Security-Policy"), "default-src 'self'")
        self.assertEqual(response.header("X-Frame-Options"), "DENY")
        self.assertIsNone(response.header("Server"))

    def test_bad_origin(self) -> None:
        """
        A foreign or missing ``Origin`` is a 403 ``Forbidden``.
        """
        for origin in ("https://evil.example", None, "HTTP://PANEL.TEST"):
            response = self.raw_upgrade(origin)
            self.assertEqual(response.status, 403, origin)
            self.assertEqual(response.body, b"Forbidden")
            self.assertEqual(response.header("Sec-WebSocket-Version"), "13")
            self.assertTrue(response.header("Content-Type").startswith("text/plain"))

    def test_allowed_origins(self) -> None:
        """
        ``allowed_origins`` entries and ``*`` are honoured (live config).
        """
        self.set_config(allowed_origins=["https://extra.example/"])
        self.assertEqual(self.raw_upgrade("https://extra.example").status, 101)
        self.assertEqual(self.raw_upgrade("https://evil.example").status, 403)
        self.set_config(allowed_origins=["*"])
        self.assertEqual(self.raw_upgrade(None).status, 101)

    def test_origin_rule(self) -> None:
        """
        ``origin_allowed``: exact match, one trailing slash tolerated on the
        configured side, no patterns, empty never matches.
        """
        self.assertTrue(origin_allowed("https://p.example/", [], "https://p.example"))
        self.assertTrue(origin_allowed("https://p.example", [], "https://p.example"))
        self.assertFalse(origin_allowed("https://p.example", [], "https://p.example:443"))
        self.assertFalse(origin_allowed("", [], ""))
        self.assertFalse(origin_allowed("", ["https://*.example"], "https://a.example"))
        self.assertTrue(origin_allowed("", ["x", "*"], "anything"))
        self.assertFalse(origin_allowed("", [""], ""))

    def test_not_an_upgrade(self) -> None:
        """
        A plain GET is a 400.
        """
        self.assertEqual(self.raw_upgrade(upgrade=False).status, 400)

    def test_cap(self) -> None:
        """
        With 30 authenticated sockets the upgrade is refused with the JSON
        400; 0 means unlimited.
        """
        self.server.sockets.update(object() for _ in range(30))
        response = self.raw_upgrade()
        self.assertEqual(response.status, 400)
        self.assertEqual(response.json()["error"], "Too many open websocket connections.")
        self.set_config(websocket={"max_connections_per_server": 0})
        self.assertEqual(self.raw_upgrade().status, 101)

    def test_bearer_exemption(self) -> None:
        """
        Only ``GET .../<uuid>/ws`` goes without the node token: ``deny``,
        another method on ``ws``, or anything below it is a 401 first, for
        a known server and an unknown one alike; the upgrade of an unknown
        server is a 404.
        """
        for server in (SERVER, "00000000-0000-0000-0000-000000000000"):
            for method, path in (("POST", "/ws/deny"), ("POST", "/ws"), ("GET", "/ws/other"),
                                 ("GET", "")):
                response = self.request(method, "/api/servers/" + server + path)
                self.assertEqual(response.status, 401, (server, method, path))
        response = self.raw_upgrade(server="00000000-0000-0000-0000-000000000000")
        self.assertEqual(response.status, 404)


class SocketTests(Rig):
    """
    Frames over a real Autobahn connection.
    """

    def test_session(self) -> None:
        """
        Auth, first-auth events, a command, then ``deleted`` and the 1001
        close; the client IP reaches the session.
        """
        client, pump, server_io = self.connect()
        self.assertTrue(client.opened)
        self.assertEqual(client.events(), [])
        self.send(client, pump, "auth", self.token())
        self.assertEqual([e for e, _ in client.events()], ["auth success", "status", "stats"])
        protocol = server_io.protocol
        self.assertIsInstance(protocol, ConsoleProtocol)
        self.assertEqual(protocol.session.client_ip, "198.51.100.4")
        self.send(client, pump, "send logs", None)
        self.assertEqual(client.events(), [])
        self.server.events.publish("deleted", "null")
        self.server.close_sockets(1001, "server deleted")
        pump.flush()
        self.assertEqual(client.events(), [("deleted", ["null"])])
        self.assertEqual(client.closed_with, (1001, "server deleted"))
        self.assertEqual(self.server.sockets, set())

    def test_fan_out_frames_an_event_once(self) -> None:
        """
        An event sent to several sockets is framed once and reaches each of
        them whole and in order, after the first-auth frames; a payload
        that is not the last one framed is framed afresh.
        """
        factory = self.factory
        prepared: list[bytes] = []
        original = factory.prepareMessage

        def counting(payload: bytes, *args: Any, **kwargs: Any) -> Any:
            prepared.append(payload)
            return original(payload, *args, **kwargs)

        factory.prepareMessage = counting  # type: ignore[method-assign]
        sockets = [self.connect() for _ in range(3)]
        for client, pump, _ in sockets:
            self.send(client, pump, "auth", self.token())
            client.events()
        prepared.clear()
        self.server.events.publish("console output", "hello")
        self.server.events.publish("console output", "world")
        for client, pump, _ in sockets:
            pump.flush()
            self.assertEqual(client.events(), [("console output", ["hello"]),
                                               ("console output", ["world"])])
        self.assertEqual(prepared, [b'{"event":"console output","args":["hello"]}',
                                    b'{"event":"console output","args":["world"]}'])
        # Autobahn attributes the direct write relies on (sendData's conditions).
        protocol = sockets[0][2].protocol
        self.assertIsNone(protocol._perMessageCompress)
        self.assertEqual(len(protocol.send_queue), 0)

    def test_binary_frame(self) -> None:
        """
        A binary frame gets the ``message too large`` daemon error.
        """
        client, pump, _ = self.connect()
        client.sendMessage(b"\x00\x01", isBinary=True)
        pump.flush()
        events = client.events()
        self.assertEqual(events[0][0], "daemon error")
        self.assertTrue(events[0][1][0].endswith("]: message too large"))

    def test_suspended_at_upgrade(self) -> None:
        """
        With ``close_on_suspend`` a suspended server's socket is closed 4409.
        """
        self.server.suspended = True
        self.set_config(websocket={"close_on_suspend": True})
        client, _, _ = self.connect()
        self.assertEqual(client.closed_with, (4409, "server is suspended"))

    def test_auth_timeout(self) -> None:
        """
        No ``auth`` within 30 s: the connection is dropped.
        """
        client, pump, _ = self.connect()
        self.clock.advance(30)
        pump.flush()
        self.assertIsNotNone(client.closed_with)
        self.assertEqual(client.closed_with[0], 1006)

    def test_backpressure_producer(self) -> None:
        """
        The HTTP channel's producer registration on the transport is replaced
        by the session's: pausing it holds events, resuming writes them.
        """
        client, pump, server_io = self.connect()
        self.send(client, pump, "auth", self.token())
        client.events()
        producer = server_io.producer
        self.assertIsInstance(producer, _Backpressure)
        producer.pauseProducing()
        self.server.events.publish("console output", "held")
        pump.flush()
        self.assertEqual(client.events(), [])
        producer.resumeProducing()
        pump.flush()
        self.assertEqual(client.events(), [("console output", ["held"])])

    def test_close_codes_logged(self) -> None:
        """
        A client close with 1000 is quiet; an unusual code is a warning.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        for code, warned in ((1000, False), (4000, True)):
            client, pump, _ = self.connect()
            client.sendClose(code)
            pump.flush()
            warnings = [e for e in observer if e["log_level"] == LogLevel.warn
                        and "closed by the client" in e["log_format"]]
            self.assertEqual(bool(warnings), warned, code)


class RevocationTests(Rig):
    """
    ``ws/deny`` and ``deauthorize-user`` (api.md §4.9, websocket.md §8.1).
    """

    def post(self, path: str, body: bytes, *, bearer: str | None = TOKEN) -> Any:
        lines = ["POST " + path + " HTTP/1.1", "Host: daemon.test", "Connection: close",
                 "Content-Length: %d" % len(body)]
        if bearer is not None:
            lines.append("Authorization: Bearer " + bearer)
        return exchange(self.site, ("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    def test_deny(self) -> None:
        """
        Good bodies answer 204 and fill the global map; bad ones 400; the
        bearer is checked.
        """
        path = WS_PATH + "/deny"
        self.assertEqual(self.post(path, b'{"jtis":["a","b"]}').status, 204)
        self.assertEqual(self.post(path, b"{}").status, 204)
        self.assertEqual(len(self.node.denials), 2)
        for bad in (b"", b"nope", b"[]", b'{"jtis":"a"}', b'{"jtis":[1]}'):
            self.assertEqual(self.post(path, bad).status, 400, bad)
        self.assertEqual(self.post(path, b'{"jtis":[]}', bearer=None).status, 401)
        self.assertEqual(self.post(path, b'{"jtis":[]}', bearer="wrong").status, 403)
        self.assertEqual(self.raw_upgrade().status, 101)

    def test_deny_reaches_open_socket(self) -> None:
        """
        A denied jti turns an open socket's events into the denylist error.
        """
        client, pump, _ = self.connect()
        self.send(client, pump, "auth", self.token())
        client.events()
        jti = hashlib.md5((str(USER.id) + SERVER).encode()).hexdigest()
        self.assertEqual(self.post(WS_PATH + "/deny", json.dumps({"jtis": [jti]}).encode()).status,
                         204)
        self.server.events.publish("status", "running")
        pump.flush()
        self.assertEqual(client.events(),
                         [("jwt error", ["jwt: created too far in past (denylist)"])])

    def test_deauthorize(self) -> None:
        """
        The user's sockets on the listed server close with 4409, others stay;
        a reconnect with the old token is denied; unknown servers are skipped.
        """
        mine, pump, _ = self.connect()
        self.send(mine, pump, "auth", self.token())
        theirs, pump2, _ = self.connect()
        self.send(theirs, pump2, "auth", self.token(user=OTHER_USER))
        body = json.dumps({"user": USER.uuid, "servers": [SERVER, "nope"]}).encode()
        self.assertEqual(self.post("/api/deauthorize-user", body).status, 204)
        pump.flush()
        pump2.flush()
        self.assertEqual(mine.closed_with, (4409, "user deauthorized"))
        self.assertIsNone(theirs.closed_with)
        again, pump3, _ = self.connect()
        self.send(again, pump3, "auth", self.token(now=self.clock.seconds() - 1))
        events = again.events()
        self.assertEqual(events[0][0], "jwt error")
        self.assertTrue(events[0][1][0].endswith("jwt: created too far in past (denylist)"))

    def test_deauthorize_everywhere(self) -> None:
        """
        No ``servers``: a deny entry for every server; bad bodies are 400.
        """
        body = json.dumps({"user": USER.uuid}).encode()
        self.assertEqual(self.post("/api/deauthorize-user", body).status, 204)
        self.assertEqual(len(self.node.denials), 2)
        for bad in (b"{}", b'{"user":""}', b'{"user":"u","servers":"x"}', b"x"):
            self.assertEqual(self.post("/api/deauthorize-user", bad).status, 400, bad)
