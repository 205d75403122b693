"""
Tests for the API site's connections (``wings_twisted.web.channel``): header, body-idle and
keep-alive timeouts, the 431 for oversized headers, and the per-IP cap on unauthenticated
connections, on the harness's clock through ``iosim``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.python.filepath import FilePath
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.web.channel import ApiChannel

from ..support import SERVER, TOKEN, Harness, _Collector, parse_response


class Connection:
    """
    One client connection to the harness's site, in memory.
    """

    def __init__(self, h: Harness, peer: str = "127.0.0.1", port: int = 40000) -> None:
        address = IPv4Address("TCP", peer, port)
        self.server: ApiChannel = h.site.buildProtocol(address)
        self.client = _Collector()
        self.server_io = iosim.FakeTransport(self.server, isServer=True, peerAddress=address)
        self.client_io = iosim.FakeTransport(self.client, isServer=False)
        self.pump = iosim.connect(self.server, self.server_io, self.client, self.client_io,
                                  greet=False)

    def send(self, data: bytes) -> None:
        self.client_io.write(data)
        self.pump.flush()

    @property
    def closed(self) -> bool:
        self.pump.flush()
        return bool(self.server_io.disconnecting)

    def response(self) -> Any:
        return parse_response(self.client.data)


def system(keep_alive: bool = True, token: str = TOKEN) -> bytes:
    """
    ``GET /api/system`` with the node token.
    """
    return ("GET /api/system HTTP/1.1\r\nHost: d\r\nAuthorization: Bearer {}\r\n{}\r\n".format(
        token, "" if keep_alive else "Connection: close\r\n")).encode()


class TimeoutTests(SynchronousTestCase):
    """
    Header, body-idle and keep-alive timeouts.
    """

    def setUp(self) -> None:
        self.h = Harness(FilePath(self.mktemp()), SERVER)
        self.clock = self.h.clock

    def tearDown(self) -> None:
        # Leave no channel timer behind on the clock.
        self.clock.advance(10_000)

    def test_header_timeout(self) -> None:
        """
        Headers still incomplete 30 s after the connection opened: the connection is aborted,
        even though a byte keeps arriving every 10 s (before: Twisted's 12-hour idle timeout
        kept such a connection open).
        """
        c = Connection(self.h)
        c.send(b"GET /api/system HTTP/1.1\r\n")
        for _ in range(2):
            self.clock.advance(10)
            c.send(b"X")
        self.clock.advance(9.9)
        self.assertFalse(c.closed)
        self.clock.advance(0.2)
        self.assertTrue(c.closed)

    def test_headers_in_time_answered(self) -> None:
        """
        A request whose headers trickle in within 30 s is answered.
        """
        c = Connection(self.h)
        raw = system(keep_alive=False)
        for i in range(0, len(raw), 20):
            c.send(raw[i:i + 20])
            self.clock.advance(1)
        self.assertEqual(c.response().status, 200)

    def test_keepalive_timeout(self) -> None:
        """
        A kept-alive connection waits 60 s for its next request, then is closed; a next request
        in time is answered and restarts the header deadline.
        """
        c = Connection(self.h)
        c.send(system())
        self.assertEqual(c.response().status, 200)
        self.clock.advance(59)
        self.assertFalse(c.closed)
        c.client.data = b""
        c.send(system())
        self.assertEqual(c.response().status, 200)
        self.clock.advance(59.9)
        self.assertFalse(c.closed)
        self.clock.advance(0.2)
        self.assertTrue(c.closed)

    def test_body_idle_timeout(self) -> None:
        """
        A body that stops arriving for 120 s is cut; every byte restarts the wait, so a slow
        but progressing body is never cut; a body the daemon paused is not cut either.
        """
        c = Connection(self.h)
        c.send(b"POST /api/update HTTP/1.1\r\nHost: d\r\nAuthorization: Bearer " + TOKEN.encode()
               + b"\r\nContent-Length: 1000\r\n\r\n{")
        for _ in range(5):
            self.clock.advance(100)
            c.send(b" ")
        self.assertFalse(c.closed)
        c.server.body_paused = True
        self.clock.advance(1000)
        self.assertFalse(c.closed)
        c.server.body_paused = False
        self.clock.advance(121)
        self.assertTrue(c.closed)

    def test_configured(self) -> None:
        """
        The three timeouts come from ``api.*_timeout``.
        """
        h = Harness(FilePath(self.mktemp()), SERVER,
                    api={"header_timeout": 5, "idle_timeout": 7, "keepalive_timeout": 3})
        c = Connection(h)
        self.assertEqual((c.server.header_timeout, c.server.keepalive_timeout, c.server.timeOut),
                         (5, 3, 7))
        h.clock.advance(5.1)
        self.assertTrue(c.closed)


class HeaderSizeTests(SynchronousTestCase):
    """
    Oversized request heads are answered 431.
    """

    def setUp(self) -> None:
        self.h = Harness(FilePath(self.mktemp()), SERVER)

    def tearDown(self) -> None:
        self.h.clock.advance(10_000)

    def test_long_authorization_header(self) -> None:
        """
        A 70,000-byte ``Authorization`` header is answered 431 with a JSON error, then the
        connection is closed (before: dropped without an answer).
        """
        c = Connection(self.h)
        c.send(b"GET /api/system HTTP/1.1\r\nHost: d\r\nAuthorization: Bearer " + b"a" * 70000
               + b"\r\n\r\n")
        response = c.response()
        self.assertEqual(response.status, 431)
        self.assertIn("too large", response.json()["error"])
        self.assertTrue(c.closed)

    def test_many_headers(self) -> None:
        """
        Many short headers adding up past 16 KiB are 431 as well.
        """
        c = Connection(self.h)
        c.send(b"GET /api/system HTTP/1.1\r\n" + b"X-A: " + b"b" * 90 + b"\r\n" * 1
               + b"".join(b"X-%d: %s\r\n" % (i, b"c" * 90) for i in range(200)) + b"\r\n")
        self.assertEqual(c.response().status, 431)

    def test_just_below_the_limit(self) -> None:
        """
        A head just under 16 KiB is served normally.
        """
        c = Connection(self.h)
        head = system(keep_alive=False)[:-2]
        padding = 16384 - len(head) - 400
        c.send(head + b"X-Pad: " + b"p" * padding + b"\r\n\r\n")
        self.assertEqual(c.response().status, 200)


class UnauthenticatedCapTests(SynchronousTestCase):
    """
    At most ``api.max_unauthenticated_per_ip`` connections per IP wait without credentials.
    """

    def setUp(self) -> None:
        self.h = Harness(FilePath(self.mktemp()), SERVER, api={"max_unauthenticated_per_ip": 3})

    def tearDown(self) -> None:
        self.h.clock.advance(10_000)

    def test_oldest_evicted(self) -> None:
        """
        A fourth half-sent connection from one IP aborts the oldest; other IPs are untouched.
        """
        flood = [Connection(self.h, "10.9.9.9", 1000 + i) for i in range(4)]
        for c in flood:
            c.send(b"GET /api/system HTTP/1.1\r\n")
        other = Connection(self.h, "10.8.8.8")
        self.assertEqual([c.closed for c in flood], [True, False, False, False])
        self.assertFalse(other.closed)
        self.assertEqual(self.h.site.guard.count("10.9.9.9"), 3)

    def test_panel_answered_during_a_flood(self) -> None:
        """
        Under a flood of 200 idle connections from the Panel's own address, the Panel's
        request still gets in and is answered; its connection then no longer counts.
        """
        flood = [Connection(self.h, "127.0.0.1", 2000 + i) for i in range(200)]
        panel = Connection(self.h, "127.0.0.1", 9999)
        panel.send(system())
        self.assertEqual(panel.response().status, 200)
        self.assertFalse(panel.closed)
        more = [Connection(self.h, "127.0.0.1", 3000 + i) for i in range(10)]
        self.assertFalse(panel.closed)
        self.assertEqual(sum(not c.closed for c in flood + more), 3)

    def test_bad_credentials_still_count(self) -> None:
        """
        A request with a wrong token leaves its connection counted.
        """
        c = Connection(self.h, "10.7.7.7")
        c.send(system(token="wrong"))
        self.assertEqual(c.response().status, 403)
        self.assertEqual(self.h.site.guard.count("10.7.7.7"), 1)
        c.client_io.loseConnection()
        c.pump.flush()
        self.assertEqual(self.h.site.guard.count("10.7.7.7"), 0)

    def test_signed_url_authenticates(self) -> None:
        """
        A valid signed URL takes its connection out of the count, like the node token.
        """
        from ..support import mint
        self.h.add_server(SERVER)
        c = Connection(self.h, "10.6.6.6")
        token = mint(self.h.clock, server_uuid=SERVER, file_path="/missing.txt")
        c.send("GET /download/file?token={} HTTP/1.1\r\nHost: d\r\n\r\n".format(token).encode())
        self.assertEqual(c.response().status, 404)
        self.assertEqual(self.h.site.guard.count("10.6.6.6"), 0)
