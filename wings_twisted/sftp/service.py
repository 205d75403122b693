"""
The SFTP server as a service of the daemon (``sftp.md`` §1, §2; ``lifecycle.md`` §1.2 step 15).

`SftpService.start` runs once the servers are loaded and their states restored: it loads (or
generates) the host key in a worker thread, builds the portal of the panel checker and the realm,
and listens on ``system.sftp.bind_address`` / ``bind_port`` — passed separately, so an IPv6
literal such as ``::`` works.  A key that cannot be loaded or a port that cannot be bound is fatal,
as upstream.  At start-up the public key is logged in ``authorized_keys`` form with the address.
Stopping the service stops listening and disconnects every SFTP client.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, cast

from twisted.application.service import Service
from twisted.conch.ssh.transport import DISCONNECT_BY_APPLICATION
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorTCP
from twisted.logger import Logger

from ..node import Node
from .auth import PanelChecker
from .hostkey import HostKeyError, load_or_create
from .session import SftpRealm
from .transport import SftpFactory, SftpTransport

__all__ = ["SftpService"]

log = Logger()


class SftpService(Service):
    """
    Listens for SFTP clients once `start` is called (after boot).

    :param fatal: ends the daemon with a message (a failed start is fatal).
    """

    def __init__(self, node: Node, reactor: IReactorTCP, *, fatal: Callable[[str], None]) -> None:
        self.setName("sftp")
        self._node = node
        self._reactor = reactor
        self._fatal = fatal
        self.port: IListeningPort | None = None
        self._connections: weakref.WeakSet[SftpTransport] = weakref.WeakSet()

    def factory(self, key: Any) -> SftpFactory:
        """
        The SSH factory for host key ``key``, on the node's clock and panel.
        """
        node = self._node
        checker = PanelChecker(node.panel,
                               key_only=lambda: node.config.system.sftp.key_only,
                               registered=lambda uuid: uuid in node.registry)
        return SftpFactory(key, Portal(SftpRealm(node), [checker]), node.clock,
                           on_connection=self._connections.add)

    async def start(self) -> None:
        """
        Load the host key and listen; fatal on failure.
        """
        node = self._node
        sftp = node.config.system.sftp
        try:
            key, created = await node.run_blocking(load_or_create, node.config.system.data)
        except HostKeyError as e:
            self._fail("cannot load the SFTP host key: {}".format(e))
            return
        if created:
            log.info("Generated a new SFTP host key")
        try:
            self.port = self._reactor.listenTCP(sftp.bind_port, cast(Any, self.factory(key)),
                                                interface=sftp.bind_address)
        except CannotListenError as e:
            self._fail("cannot listen for SFTP on {}:{}: {}".format(
                sftp.bind_address, sftp.bind_port, e.socketError))
            return
        address = self.port.getHost()
        log.info("SFTP server listening on {host}:{port} ({key})",
                 host=getattr(address, "host", sftp.bind_address),
                 port=getattr(address, "port", sftp.bind_port),
                 key=key.public().toString("openssh").decode("ascii"))

    def _fail(self, message: str) -> None:
        log.error("wings: {message}", message=message)
        self._fatal(message)

    def stopService(self) -> Deferred[None] | None:
        """
        Stop listening and disconnect every client.
        """
        super().stopService()
        for connection in list(self._connections):
            if connection.transport is not None and bool(getattr(connection.transport,
                                                                  "connected", False)):
                connection.sendDisconnect(DISCONNECT_BY_APPLICATION, b"daemon shutting down")
        if self.port is None:
            return None
        port, self.port = self.port, None
        stopped: Deferred[None] | None = port.stopListening()
        return stopped
