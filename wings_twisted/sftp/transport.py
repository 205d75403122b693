"""
The SSH side of the SFTP server (``sftp.md`` §1, §3.1, §4): the factory, the server transport with
this project's algorithm lists, the login grace time and the per-IP limit on connections that have
not authenticated yet, and the connection service that refuses every channel but ``session``.

Algorithms offered (``sftp.md`` §3.1, the intersection of upstream's lists with what Conch
implements; no CBC, no SHA-1, no compression):

============  ================================================================================
key exchange  ``mlkem768x25519-sha256`` (when Conch has it), ``curve25519-sha256``,
              ``curve25519-sha256@libssh.org``, ``ecdh-sha2-nistp256/384/521``
ciphers       ``aes128-ctr``, ``aes192-ctr``, ``aes256-ctr``
MACs          ``hmac-sha2-256``, ``hmac-sha2-512``
host key      ``ssh-ed25519`` (the one key of `hostkey`)
============  ================================================================================

Decisions (``sftp.md`` §1 leaves the figures to us): at most `UNAUTHENTICATED_PER_IP` (10)
connections per client address may be in the handshake or authentication at once, a further one is
closed at once; a connection not authenticated `LOGIN_GRACE` (120) seconds after it opened is
disconnected — longer than the panel call's 30-second retry budget, so a slow panel fails a login
instead of the grace time cutting it short.
"""

from __future__ import annotations

import os
import struct
from typing import Any, Callable

from twisted.conch.ssh import _kex, connection, transport
from twisted.conch.ssh.common import NS, getNS
from twisted.conch.ssh.factory import SSHFactory
from twisted.conch.ssh.keys import Key
from twisted.cred.portal import Portal
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.logger import Logger

from .. import __version__
from .auth import ConnectionFacts, PanelUserAuthServer

__all__ = ["LOGIN_GRACE", "UNAUTHENTICATED_PER_IP", "SftpFactory", "SftpTransport"]

log = Logger()

#: Seconds a connection may take to authenticate.
LOGIN_GRACE = 120.0
#: Connections per client address that may be unauthenticated at once.
UNAUTHENTICATED_PER_IP = 10

_KEX_PREFERENCE = [b"mlkem768x25519-sha256", b"curve25519-sha256", b"curve25519-sha256@libssh.org",
                   b"ecdh-sha2-nistp256", b"ecdh-sha2-nistp384", b"ecdh-sha2-nistp521"]


def _key_exchanges() -> list[bytes]:
    supported = set(_kex.getSupportedKeyExchanges())
    return [name for name in _KEX_PREFERENCE if name in supported]


class SftpConnection(connection.SSHConnection):
    """
    ``ssh-connection``: a channel of any other type than ``session`` (port forwarding, X11,
    agent) is refused with "unknown channel type" without a traceback in the log; global
    requests fail through the avatar, which answers none.
    """

    def ssh_CHANNEL_OPEN(self, packet: bytes) -> None:
        """
        Refuse any channel type but ``session`` quietly; open sessions as Conch does.
        """
        try:
            kind, rest = getNS(packet)
        except struct.error:
            kind, rest = b"", b""
        sender = rest[:4]
        ssh: Any = self.transport
        if len(sender) < 4:
            ssh.sendDisconnect(transport.DISCONNECT_PROTOCOL_ERROR, b"bad CHANNEL_OPEN")
            return
        if kind != b"session":
            ssh.sendPacket(
                connection.MSG_CHANNEL_OPEN_FAILURE,
                sender + struct.pack(">L", connection.OPEN_UNKNOWN_CHANNEL_TYPE)
                + NS(b"unknown channel type") + NS(b""))
            return
        super().ssh_CHANNEL_OPEN(packet)

    def ssh_CHANNEL_DATA(self, packet: bytes) -> None:
        """
        Channels that manage their own window (``manages_window``) get their data without the
        automatic window adjustment: they grant more window as they work through what they got
        (back-pressure on uploads).
        """
        local, length = struct.unpack(">2L", packet[:8])
        channel = self.channels.get(local)
        if channel is None or not getattr(channel, "manages_window", False):
            super().ssh_CHANNEL_DATA(packet)
            return
        if length > channel.localWindowLeft or length > channel.localMaxPacket:
            log.warn("An SFTP client sent more than its window; closing the channel")
            self.sendClose(channel)
            return
        channel.localWindowLeft -= length
        channel.dataReceived(packet[8:8 + length])


class SftpTransport(transport.SSHServerTransport):
    """
    The server transport: this project's algorithm lists, the login grace time, the per-IP
    limit on unauthenticated connections, and the facts of the connection that logins carry.
    """

    supportedKeyExchanges = _key_exchanges()
    supportedCiphers = [b"aes128-ctr", b"aes192-ctr", b"aes256-ctr"]
    supportedMACs = [b"hmac-sha2-256", b"hmac-sha2-512"]
    supportedCompressions = [b"none"]
    ourVersionString = ("SSH-2.0-WingsTwisted_" + __version__).encode("ascii")

    factory: SftpFactory
    _grace: IDelayedCall | None = None
    _counted: str | None = None
    _facts: ConnectionFacts | None = None

    @property
    def clock(self) -> IReactorTime:
        """
        Time for this connection's timers (the factory's clock).
        """
        return self.factory.clock

    def connectionMade(self) -> None:
        """
        Count the connection against its address, or close it when the address has too many
        unauthenticated ones; then start the handshake and the grace timer.
        """
        host = self._peer_host()
        if not self.factory.admit(host):
            log.warn("Refusing an SFTP connection from {ip}: too many unauthenticated "
                     "connections from this address", ip=host)
            self._tcp().loseConnection()
            return
        self._counted = host
        self._grace = self.clock.callLater(LOGIN_GRACE, self._grace_expired)
        super().connectionMade()

    def _tcp(self) -> Any:
        return self.transport

    def _peer_host(self) -> str:
        peer = self._tcp().getPeer()
        return str(getattr(peer, "host", "") or "")

    def _grace_expired(self) -> None:
        self._grace = None
        log.info("SFTP client {ip} did not authenticate in time", ip=self._peer_host())
        self.sendDisconnect(transport.DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE,
                            b"login grace time exceeded")

    def _authenticated(self) -> None:
        if self._grace is not None and self._grace.active():
            self._grace.cancel()
        self._grace = None
        if self._counted is not None:
            self.factory.release(self._counted)
            self._counted = None

    def setService(self, service: Any) -> None:
        """
        Conch starts ``ssh-connection`` only after a successful login: the connection then no
        longer counts as unauthenticated.
        """
        if service.name == b"ssh-connection":
            self._authenticated()
        super().setService(service)

    def connectionLost(self, reason: Any = None) -> None:
        """
        Release the count and the timer; Conch stops the service and logs the avatar out.
        """
        self._authenticated()
        super().connectionLost(reason)

    _padding = b""

    def sendPacket(self, messageType: int, payload: bytes) -> None:
        """
        Conch's ``sendPacket`` with the random padding taken from a buffer filled 64 KiB at a
        time: one ``getrandom`` per packet costs more than encrypting a 32 KiB packet here
        (``bench/RESULTS.md``).  Anything unusual (key exchange, compression) is Conch's.
        """
        if (self._keyExchangeState != self._KEY_EXCHANGE_NONE or self.outgoingCompression
                or self.currentEncryptions is None):
            super().sendPacket(messageType, payload)
            return
        ciphers = self.currentEncryptions
        block = ciphers.encBlockSize
        total = 6 + len(payload)
        padding = block - (total % block)
        if padding < 4:
            padding += block
        if len(self._padding) < padding:
            self._padding = os.urandom(65536)
        pad, self._padding = self._padding[:padding], self._padding[padding:]
        packet = b"".join((struct.pack("!LBB", total + padding - 4, padding, messageType),
                           payload, pad))
        self.transport.write(ciphers.encrypt(packet)  # type: ignore[union-attr]
                             + ciphers.makeMAC(self.outgoingPacketSequence, packet))
        self.outgoingPacketSequence += 1

    def receiveError(self, reasonCode: int, description: bytes) -> None:
        """
        The client disconnected; an ordinary goodbye is not an error.
        """
        log.debug("SFTP client disconnected ({code}): {reason!r}", code=reasonCode,
                  reason=description)

    def facts(self) -> ConnectionFacts:
        """
        What logins on this connection carry (one object per connection: it also remembers the
        panel's answers about public keys).
        """
        if self._facts is None:
            peer = self._tcp().getPeer()
            self._facts = ConnectionFacts(
                host=str(getattr(peer, "host", "")), port=int(getattr(peer, "port", 0) or 0),
                session_id=b"", client_version=b"")
        self._facts.session_id = self.sessionID or b""
        self._facts.client_version = self.otherVersionString or b""
        return self._facts


class SftpFactory(SSHFactory):
    """
    Builds `SftpTransport` connections for the one host key and the portal of the panel checker.

    :param clock: timers of every connection (grace time, password delay).
    """

    protocol = SftpTransport

    def __init__(self, host_key: Key, portal: Portal, clock: IReactorTime, *,
                 on_connection: Callable[[SftpTransport], None] | None = None) -> None:
        self.publicKeys = {b"ssh-ed25519": host_key.public()}
        self.privateKeys = {b"ssh-ed25519": host_key}
        self.primes = None
        self.portal = portal
        self.clock = clock
        self.services = {b"ssh-userauth": PanelUserAuthServer,
                         b"ssh-connection": SftpConnection}
        self._unauthenticated: dict[str, int] = {}
        self._on_connection = on_connection

    def buildProtocol(self, addr: IAddress | None) -> SftpTransport:
        """
        A transport for one client connection, offering the one host key's algorithm.
        """
        built = SftpTransport()
        built.factory = self
        built.supportedPublicKeys = [b"ssh-ed25519"]
        if self._on_connection is not None:
            self._on_connection(built)
        return built

    def admit(self, host: str) -> bool:
        """
        Count one more unauthenticated connection from ``host``, unless it has the most allowed.
        """
        count = self._unauthenticated.get(host, 0)
        if count >= UNAUTHENTICATED_PER_IP:
            return False
        self._unauthenticated[host] = count + 1
        return True

    def release(self, host: str) -> None:
        """
        One connection from ``host`` authenticated or closed.
        """
        count = self._unauthenticated.get(host, 0) - 1
        if count > 0:
            self._unauthenticated[host] = count
        else:
            self._unauthenticated.pop(host, None)
