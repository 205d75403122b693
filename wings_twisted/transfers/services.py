"""
The node's transfers: the outgoing and incoming transfers under way (one per server UUID each)
and what they are built with.  The web routes call this; nothing here speaks HTTP to clients.

``TransferServices.for_reactor`` is the daemon's: pushes go through an agent over
``node.outgoing`` (fresh connection, 30-second connect timeout, the node's TLS policy) and
archives are generated and extracted on worker threads that report back through
``reactor.callFromThread``.  Without a thread-aware reactor (unit tests on a ``Clock``), the
archive work runs through ``node.run_blocking`` and incoming archives are extracted when their part
ends (``extraction.InlineExtraction``).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from twisted.internet.interfaces import IPushProducer, IReactorFromThreads
from twisted.python.failure import Failure
from twisted.web.iweb import IAgent

from ..archive import gzip_level
from ..fs import Volume
from ..node import Node
from ..servers.server import Server
from .client import push_agent
from .extraction import (
    ArchiveSink,
    ExtractionFactory,
    InlineExtraction,
    ThreadedExtraction,
)
from .outgoing import OutgoingTransfer, PushSettings
from .receive import IncomingTransfer
from .source import TransferError, begin, read_request
from .token import TransferGrant, authorize

__all__ = ["TransferServices"]

CallFromThread = Callable[[Callable[[], None]], object]

NOT_TRANSFERRING = "Server is not currently being transferred."
NOT_CANCELLABLE = "The transfer is completing and can no longer be cancelled."


def _synchronous(fn: Callable[[], None]) -> None:
    fn()


class TransferServices:
    """
    Transfers of one node.

    :param agent: makes the push requests (``None``: pushes fail, no outgoing connections).
    :param call_from_thread: ``reactor.callFromThread``, or a synchronous call when archive work
        runs inline (tests).
    :param extraction: makes the archive sink of an incoming transfer.
    """

    def __init__(self, node: Node, *, agent: IAgent | None,
                 call_from_thread: CallFromThread = _synchronous,
                 extraction: ExtractionFactory | None = None) -> None:
        self.node = node
        self.agent = agent
        self.call_from_thread = call_from_thread
        self._extraction = extraction or self._inline
        self.outgoing: dict[str, OutgoingTransfer] = {}
        self.incoming: dict[str, IncomingTransfer] = {}

    @classmethod
    def for_reactor(cls, node: Node, reactor: object) -> TransferServices:
        """
        The daemon's transfers on ``reactor`` (see the module docstring).
        """
        outgoing = getattr(node, "outgoing", None)
        agent = None
        if outgoing is not None:
            agent = push_agent(node.clock, outgoing.connector, outgoing.tls)
        if not IReactorFromThreads.providedBy(reactor):
            return cls(node, agent=agent)
        call = getattr(reactor, "callFromThread")

        def threaded(volume: Volume, producer: IPushProducer,
                     on_failure: Callable[[Failure], None]) -> ArchiveSink:
            return ThreadedExtraction(
                volume, producer, on_failure, run_blocking=node.run_blocking,
                call_from_thread=call, limit_mib=node.config.system.transfers.download_limit)

        return cls(node, agent=agent, call_from_thread=call, extraction=threaded)

    def _inline(self, volume: Volume, producer: IPushProducer,
                on_failure: Callable[[Failure], None]) -> ArchiveSink:
        return InlineExtraction(volume, producer, on_failure, run_blocking=self.node.run_blocking)

    # -- the source (§3) -----------------------------------------------------------------------

    def push_settings(self) -> PushSettings:
        """
        What a push needs, from the live configuration.
        """
        node = self.node
        system = node.config.system
        return PushSettings(
            clock=node.clock, run_blocking=node.run_blocking,
            call_from_thread=self.call_from_thread, agent=self.agent, panel=node.panel,
            level=gzip_level(system.backups.compression_level),
            checksum_archive=system.transfers.send_checksum_archive)

    async def send(self, server: Server, body: Mapping[str, Any]) -> OutgoingTransfer:
        """
        ``POST /api/servers/{uuid}/transfer`` up to the 202 (§3.1); the push runs as the server's
        tracked work.

        :raises TransferError: 400, 409 or 500.
        """
        url, token = read_request(body)
        transfer = await begin(server, self.outgoing, url, token, self.push_settings())
        server.track(transfer.run)
        return transfer

    def cancel_outgoing(self, server: Server) -> None:
        """
        ``DELETE /api/servers/{uuid}/transfer`` (§3.6).

        :raises TransferError: 409 when no transfer of this server is under way.
        """
        transfer = self.outgoing.get(server.uuid)
        if transfer is None or not server.occupancy.transferring:
            raise TransferError(409, NOT_TRANSFERRING)
        transfer.cancel()

    # -- the destination (§4) ------------------------------------------------------------------

    def authorize(self, header: bytes | None) -> TransferGrant:
        """
        The transfer token of ``POST /api/transfers`` (``token.authorize``).
        """
        node = self.node
        return authorize(header, node.config.token, now=node.clock.seconds(),
                         require_scope=node.config.tokens.require_scope)

    def receive(self, grant: TransferGrant, content_type: bytes | None) -> IncomingTransfer:
        """
        A new incoming transfer for the token's server (register it next).

        :raises TransferError: 409 when one is already under way for that server.
        """
        uuid = grant.uuid
        if uuid in self.incoming:
            raise TransferError(409, "A transfer for this server is already in progress.")

        def forget() -> None:
            if self.incoming.get(uuid) is transfer:
                del self.incoming[uuid]

        transfer = IncomingTransfer(self.node, uuid, content_type, extraction=self._extraction,
                                    forget=forget)
        self.incoming[uuid] = transfer
        return transfer

    def cancel_incoming(self, uuid: str) -> None:
        """
        ``DELETE /api/transfers/{uuid}`` (§4.8).

        :raises TransferError: 409 when none is under way, or it is completing.
        """
        transfer = self.incoming.get(uuid)
        if transfer is None:
            raise TransferError(409, NOT_TRANSFERRING)
        if not transfer.cancel():
            raise TransferError(409, NOT_CANCELLABLE)
