"""
Logged-in SFTP connections (``sftp.md`` §4, §9.1, §9.4): the realm, the avatar of one connection
and its session channels.

* The realm binds a panel `Login` to its server — which must still be registered — and registers
  the connection with the server (``Server.file_sessions``), so that suspension, deletion and
  ``/api/deauthorize-user`` can end it; logging out unregisters it.
* Only ``session`` channels open; on them only ``subsystem sftp`` succeeds (its payload length is
  checked: upstream crashes the whole daemon on a short one); ``pty-req``, ``shell``, ``exec``,
  ``env`` and everything else fail.  The avatar answers no global request, so port forwarding
  fails too.  Several sessions per connection each get their own ``SftpFilesystem``, which reads
  ``system.sftp.read_only`` when it starts.
* Back-pressure: a session channel grants the client more window only while the work it holds
  (requests buffered, reads and writes under way, answers waiting for the client's window) is
  under `WINDOW`; a client that sends faster than the disk takes it is slowed by SSH itself.
* Answers written in one reactor turn leave as one channel write (up to `COALESCE` bytes), so
  the SSH packets are full: a 32 KiB ``DATA`` answer alone would go out as a 32 KiB packet and a
  13-byte one (OpenSSH's client takes 32 KiB packets), and 64 write statuses as 64 packets.
"""

from __future__ import annotations

import struct
from typing import Any, cast

from twisted.conch.avatar import ConchUser
from twisted.conch.interfaces import IConchUser
from twisted.conch.ssh import transport
from twisted.conch.ssh.channel import SSHChannel
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from zope.interface import implementer

from ..node import Node
from ..servers.server import Server
from .auth import Login
from .files import GATHER
from .filesystem import SftpFilesystem
from .protocol import SftpServerProtocol

__all__ = ["MAX_PACKET", "WINDOW", "SftpChannel", "SftpRealm", "SftpUser"]

log = Logger()

#: The window a session channel grants, and the most work it holds before it stops granting.
WINDOW = 4 * 1024 * 1024
#: The largest channel packet accepted (fewer, larger packets cost less per byte).
MAX_PACKET = 256 * 1024
#: Answers held for one reactor turn at most, in bytes.
COALESCE = 1024 * 1024


class SftpChannel(SSHChannel):
    """
    A ``session`` channel that can only become an SFTP server.
    """

    name = b"session"
    #: ``transport.SftpConnection`` leaves the window to us.
    manages_window = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("localWindow", WINDOW)
        kwargs.setdefault("localMaxPacket", MAX_PACKET)
        super().__init__(*args, **kwargs)
        self.sftp: SftpServerProtocol | None = None
        self._out: list[bytes] = []
        self._out_size = 0
        self._flush: IDelayedCall | None = None

    def write(self, data: bytes) -> None:
        """
        Hold ``data`` until the end of this reactor turn (or `COALESCE` bytes), then write all
        that was held at once.
        """
        self._out.append(data)
        self._out_size += len(data)
        if self._out_size >= COALESCE:
            self.flush()
        elif self._flush is None:
            self._flush = cast(SftpUser, self.avatar).clock.callLater(0, self.flush)

    def flush(self) -> None:
        """
        Write what is held.
        """
        if self._flush is not None and self._flush.active():
            self._flush.cancel()
        self._flush = None
        if self._out:
            data = b"".join(self._out)
            self._out = []
            self._out_size = 0
            super().write(data)

    def loseConnection(self) -> None:
        """
        Close after what is held has been written.
        """
        self.flush()
        super().loseConnection()

    def request_subsystem(self, data: bytes) -> int:
        """
        ``subsystem``: only ``sftp``, once per channel, with a well-formed payload.
        """
        if len(data) < 4:
            return 0
        (length,) = struct.unpack(">L", data[:4])
        name = data[4:4 + length]
        if len(name) != length or name != b"sftp" or self.sftp is not None:
            log.info("Refusing subsystem {name!r}", name=name[:64])
            return 0
        avatar = cast(SftpUser, self.avatar)
        self.sftp = SftpServerProtocol(avatar.filesystem(), self.progress)
        self.sftp.makeConnection(self)
        return 1

    def dataReceived(self, data: bytes) -> None:
        """
        Feed the SFTP server (data before the subsystem request is dropped).
        """
        if self.sftp is not None:
            self.sftp.dataReceived(data)
        self.progress()

    def progress(self) -> None:
        """
        Dispatch what waits, and grant more window while the work held is under `WINDOW`.
        """
        sftp = self.sftp
        backlog = len(self.buf) + self._out_size
        if sftp is not None:
            sftp.dispatch()
            backlog += sftp.load + sftp.buffered
        left = self.localWindowLeft
        if (backlog < WINDOW and left < self.localWindowSize // 2 and not self.localClosed
                and self.conn is not None):
            self.conn.adjustWindow(self, self.localWindowSize - left)

    def stopWriting(self) -> None:
        """
        The client's window is full: stop dispatching requests until it opens again.
        """
        if self.sftp is not None:
            self.sftp.output_blocked = True

    def startWriting(self) -> None:
        """
        The client's window opened: dispatch again.
        """
        if self.sftp is not None:
            self.sftp.output_blocked = False
        self.progress()

    def eofReceived(self) -> None:
        """
        The client sends nothing more: close once the answers are out.
        """
        self.loseConnection()

    def closed(self) -> None:
        """
        Both sides closed: close the SFTP server's handles.
        """
        if self._flush is not None and self._flush.active():
            self._flush.cancel()
        self._flush = None
        self._out = []
        if self.sftp is not None:
            self.sftp.connectionLost(None)


@implementer(IConchUser)
class SftpUser(ConchUser):
    """
    The avatar of one logged-in connection (the connection ``Server.file_sessions`` tracks).

    :param connection: the SSH transport, closed by `end`.
    """

    def __init__(self, login: Login, server: Server, connection: Any, node: Node) -> None:
        super().__init__()
        self.login = login
        self.server = server
        self._connection = connection
        self._node = node
        self.clock = node.clock
        self.channelLookup = {b"session": SftpChannel}

    @property
    def user_uuid(self) -> str:
        """
        The panel user logged in.
        """
        return self.login.user

    def filesystem(self) -> SftpFilesystem:
        """
        The operations of a new SFTP session, with the read-only setting of now.
        """
        node = self._node
        return SftpFilesystem(self.server, self.login, run_blocking=node.run_blocking,
                              activity=node.activity,
                              read_only=node.config.system.sftp.read_only, gather=GATHER)

    def end(self, reason: str) -> None:
        """
        Disconnect (suspension, deletion, deauthorisation, shutdown).
        """
        log.info("Ending the SFTP connection of {user} to {server}: {reason}",
                 user=self.login.user, server=self.server.uuid, reason=reason)
        self._connection.sendDisconnect(transport.DISCONNECT_BY_APPLICATION,
                                        reason.encode("utf-8"))

    def logout(self) -> None:
        """
        The connection closed.
        """
        self.server.file_sessions.discard(self)


@implementer(IRealm)
class SftpRealm:
    """
    Turns a panel `Login` into an `SftpUser` bound to its server.
    """

    def __init__(self, node: Node) -> None:
        self._node = node

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> tuple[Any, Any, Any]:
        """
        The avatar of ``avatarId`` (a `Login`) for the connection ``mind``.
        """
        if IConchUser not in interfaces or not isinstance(avatarId, Login):
            raise NotImplementedError("only SSH logins")
        server = self._node.registry.get(avatarId.server)
        if server is None or server.occupancy.state == "deleted":
            raise UnauthorizedLogin("server not on this node")
        user = SftpUser(avatarId, server, mind, self._node)
        server.file_sessions.add(user)
        log.info("SFTP login of {user} to {server} from {ip}", user=avatarId.user,
                 server=server.uuid, ip=avatarId.ip)
        return IConchUser, user, user.logout
