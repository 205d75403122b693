"""
The SSH side of the SFTP server (``sftp.transport``, ``sftp.session``): the algorithms offered,
the login grace time and per-IP limit on a ``Clock``, refused channel types, the realm's session
registration and the ends of sessions; and a whole SSH login between Conch's client and our
server joined in memory.
"""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.ssh import connection, transport, userauth
from twisted.conch.ssh.common import NS
from twisted.conch.ssh.keys import Key
from twisted.cred.portal import Portal
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import StringTransport
from twisted.python.filepath import FilePath
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.servers.lifecycle import delete
from wings_twisted.sftp.auth import Login, PanelChecker
from wings_twisted.sftp.session import SftpRealm, SftpUser
from wings_twisted.sftp.transport import (LOGIN_GRACE, UNAUTHENTICATED_PER_IP, SftpConnection,
                                          SftpFactory, SftpTransport)

from ..support import SERVER, USER, Harness


class Factory(SynchronousTestCase):
    """
    A harness, its server, and the SFTP factory on the harness clock.
    """

    def setUp(self) -> None:
        self.h = Harness(FilePath(self.mktemp()), SERVER)
        self.server = self.h.add_server()
        self.host_key = Key(ed25519.Ed25519PrivateKey.generate())
        node = self.h.node
        checker = PanelChecker(node.panel, key_only=lambda: False,
                               registered=lambda uuid: uuid in node.registry)
        self.factory = SftpFactory(self.host_key, Portal(SftpRealm(node), [checker]),
                                   self.h.clock)

    def connect(self, host: str = "198.51.100.7") -> tuple[SftpTransport, StringTransport]:
        protocol = self.factory.buildProtocol(IPv4Address("TCP", host, 40000))
        tcp = StringTransport(peerAddress=IPv4Address("TCP", host, 40000))
        protocol.makeConnection(tcp)
        return protocol, tcp


class TransportTests(Factory):
    """
    Algorithms, grace time and the per-IP limit.
    """

    def test_algorithms(self) -> None:
        """
        Only the project's lists: CTR ciphers, SHA-2 MACs, no compression, the Ed25519 key.
        """
        protocol, _ = self.connect()
        self.assertEqual(protocol.supportedCiphers, [b"aes128-ctr", b"aes192-ctr", b"aes256-ctr"])
        self.assertEqual(protocol.supportedMACs, [b"hmac-sha2-256", b"hmac-sha2-512"])
        self.assertEqual(protocol.supportedCompressions, [b"none"])
        self.assertEqual(protocol.supportedPublicKeys, [b"ssh-ed25519"])
        self.assertIn(b"curve25519-sha256", protocol.supportedKeyExchanges)
        self.assertFalse([k for k in protocol.supportedKeyExchanges if b"sha1" in k])

    def test_login_grace_time(self) -> None:
        """
        A connection that has not authenticated after the grace time is disconnected.
        """
        _, tcp = self.connect()
        self.h.clock.advance(LOGIN_GRACE - 1)
        self.assertFalse(tcp.disconnecting)
        self.h.clock.advance(1)
        self.assertTrue(tcp.disconnecting)

    def test_unauthenticated_per_ip(self) -> None:
        """
        The 11th unauthenticated connection from one address is closed at once; another
        address is not affected; a closed connection frees its place.
        """
        first = [self.connect() for _ in range(UNAUTHENTICATED_PER_IP)]
        self.assertFalse(any(tcp.disconnecting for _, tcp in first))
        _, extra = self.connect()
        self.assertTrue(extra.disconnecting)
        _, other = self.connect("198.51.100.8")
        self.assertFalse(other.disconnecting)
        first[0][0].connectionLost(None)
        _, again = self.connect()
        self.assertFalse(again.disconnecting)

    def test_other_channel_types_refused(self) -> None:
        """
        ``direct-tcpip`` (``ssh -L``) is refused with "unknown channel type".
        """
        protocol, tcp = self.connect()
        sent: list[tuple[int, bytes]] = []
        conn = SftpConnection()
        conn.transport = protocol
        protocol.sendPacket = lambda kind, data: sent.append((kind, data))  # type: ignore
        conn.ssh_CHANNEL_OPEN(NS(b"direct-tcpip") + struct.pack(">3L", 5, 65536, 32768))
        (kind, data), = sent
        self.assertEqual(kind, connection.MSG_CHANNEL_OPEN_FAILURE)
        self.assertEqual(struct.unpack(">2L", data[:8]), (5, connection.OPEN_UNKNOWN_CHANNEL_TYPE))
        self.assertIn(b"unknown channel type", data)


class SessionEndTests(Factory):
    """
    The realm registers a connection with its server; suspension, deletion and
    deauthorisation end it.
    """

    def login(self, user: str = USER) -> tuple[SftpUser, list[bytes]]:
        reasons: list[bytes] = []

        class Connection:
            def sendDisconnect(self, code: int, reason: bytes) -> None:
                reasons.append(reason)

        realm = SftpRealm(self.h.node)
        from twisted.conch.interfaces import IConchUser
        _, avatar, logout = realm.requestAvatar(
            Login(user, SERVER, frozenset({"*"}), "198.51.100.7"), Connection(), IConchUser)
        self.addCleanup(logout)
        return avatar, reasons

    def test_registered_until_logout(self) -> None:
        """
        A login is in ``Server.file_sessions`` until it logs out.
        """
        avatar, _ = self.login()
        self.assertEqual(self.server.file_sessions, {avatar})
        avatar.logout()
        self.assertEqual(self.server.file_sessions, set())

    def test_deauthorize_ends_that_user(self) -> None:
        """
        ``POST /api/deauthorize-user`` ends the sessions of that user only.
        """
        _, mine = self.login()
        _, theirs = self.login("00000000-0000-4000-8000-000000000009")
        response = self.h.get("/api/deauthorize-user", method="POST",
                              body=b'{"user": "%s"}' % USER.encode())
        self.assertEqual(response.status, 204)
        self.assertEqual((mine, theirs), ([b"user deauthorized"], []))

    def test_suspension_and_deletion(self) -> None:
        """
        A sync that reveals suspension ends every session, as deletion does.
        """
        _, first = self.login()
        self.h.state.servers[SERVER].settings["suspended"] = True
        response = self.h.get("/api/servers/{}/sync".format(SERVER), method="POST")
        self.assertEqual(response.status, 204)
        self.assertEqual(first, [b"server suspended"])
        _, second = self.login()
        self.successResultOf(Deferred.fromCoroutine(delete(self.server)))
        self.assertEqual(second, [b"server deleted"])


class LoginTests(Factory):
    """
    A whole SSH login, Conch's client against our server, in memory on the clock.
    """

    def test_password_login_then_sftp(self) -> None:
        """
        The client negotiates within our lists, logs in with a password the panel accepts and
        opens the ``sftp`` subsystem.
        """
        opened: list[bytes] = []

        class Session(connection.SSHConnection):
            def serviceStarted(self) -> None:
                from twisted.conch.ssh.channel import SSHChannel

                class Channel(SSHChannel):
                    name = b"session"

                    def channelOpen(self, data: bytes) -> None:
                        d = self.conn.sendRequest(self, b"subsystem", NS(b"sftp"), wantReply=1)
                        d.addCallback(lambda _: opened.append(b"sftp"))

                self.openChannel(Channel(conn=self))

        class Auth(userauth.SSHUserAuthClient):
            def getPassword(self, prompt: object = None) -> object:
                return succeed(b"x")

            def getPublicKey(self) -> None:
                return None

        class Client(transport.SSHClientTransport):
            def verifyHostKey(self, key: bytes, fingerprint: bytes) -> object:
                return succeed(True)

            def connectionSecure(self) -> None:
                self.requestService(Auth(("tester." + SERVER[:8]).encode(), Session()))

        server = self.factory.buildProtocol(IPv4Address("TCP", "198.51.100.7", 40000))
        client = Client()
        pump = iosim.connect(
            server, iosim.FakeTransport(server, True,
                                        peerAddress=IPv4Address("TCP", "198.51.100.7", 40000)),
            client, iosim.FakeTransport(client, False), greet=False)
        for _ in range(50):
            pump.flush()
            self.h.panel_http.flush()
            self.h.clock.advance(0.1)
        self.assertEqual(opened, [b"sftp"])
        self.assertEqual(len(self.server.file_sessions), 1)
        self.assertIn(client.currentEncryptions.outCipType, SftpTransport.supportedCiphers)
