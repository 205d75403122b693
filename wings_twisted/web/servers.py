"""
``/api/servers`` and ``/api/servers/{uuid}`` (api.md §3.3, §3.4, §4.1,
§4.2).  Server lookup is exact and case-sensitive; an unknown UUID is the
404 the panel relies on to treat deletions as done (§2.8).

The tree below ``/api/servers`` (``ServersBranch``): its own routes and
every per-server route sit behind the node's ``BearerGuard``, and the
server is looked up after that guard (``ServerLookup``); the console
upgrade ``{uuid}/ws`` is the one child mounted outside it
(``console.ConsoleBranch``).  Per-server routes are children of
``ServerResource``: the process routes of ``server_routes``, ``files``,
the backup routes of ``backups`` (``backup``, ``deleteAllBackups``) and
``transfer`` (``web.transfers``).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.resource import IResource
from twisted.web.server import Request

from ..panel import PanelError
from ..servers import install, lifecycle
from ..servers.build import build_server
from ..servers.details import details
from ..servers.server import UUID_V4, Server, ServerConfigError
from .body import read_object
from ..websocket.protocol import ConsoleFactory
from .console import ConsoleBranch
from ..node import Node
from .errors import ApiError, Conflict, ErrorResource, JsonResource, NotFound
from .request import ApiRequest
from ..backups import BackupServices
from ..files import FileServices
from .channel import mark_authenticated
from .backups import backup_routes
from .files import FilesResource
from .guard import BearerGuard
from .lookup import ServerLookup
from .server_routes import ROUTES
from .transfers import ServerTransferResource
from ..transfers.services import TransferServices

log = Logger()

INVALID_DATA = "The data provided in the request could not be validated."


class ServersBranch(JsonResource):
    """
    ``/api/servers``: its own routes behind the guard, then one
    ``ServerBranch`` per segment.
    """

    def __init__(self, node: Node, console: ConsoleFactory, services: FileServices,
                 backups: BackupServices | None = None,
                 transfers: TransferServices | None = None) -> None:
        super().__init__()
        self._node = node
        self._console = console
        self._services = services
        self._backups = backups if backups is not None else BackupServices(node)
        self._transfers = (transfers if transfers is not None
                            else TransferServices.for_reactor(node, node.clock))

    def _token(self) -> str:
        return str(self._node.config.token)

    def getChild(self, path: bytes, request: Request) -> IResource:
        """
        The branch of the server named by the segment (not looked up yet).
        """
        return ServerBranch(self._node, path, self._console, self._services, self._backups,
                            self._transfers)

    def render(self, request: Request) -> int | bytes:
        """
        ``GET``/``POST /api/servers`` behind the guard.
        """
        return BearerGuard(ServersResource(self._node), self._token).render(request)


class ServerBranch(JsonResource):
    """
    ``/api/servers/{uuid}`` before the lookup: ``ws`` outside the guard,
    everything else (the server's own routes included) behind it.
    """

    def __init__(self, node: Node, segment: bytes, console: ConsoleFactory,
                 services: FileServices, backups: BackupServices,
                 transfers: TransferServices) -> None:
        super().__init__()
        self._node = node
        self._segment = segment
        self._console = console
        self._services = services
        self._backups = backups
        self._transfers = transfers

    def _guarded(self) -> BearerGuard:
        node, services, backups, transfers = (self._node, self._services, self._backups,
                                              self._transfers)
        lookup = ServerLookup(node, self._segment, lambda server: ServerResource(
            node, server, services, backups, transfers))
        return BearerGuard(lookup, lambda: str(node.config.token))

    def getChild(self, path: bytes, request: Request) -> IResource:
        """
        ``ws`` (the console), else the server's routes behind the guard.
        """
        if path == b"ws":
            # The socket authenticates itself (websocket.auth_timeout): the upgrade
            # leaves the per-IP count of unauthenticated HTTP connections.
            mark_authenticated(request)
            return ConsoleBranch(self._node, self._segment, self._console)
        return self._guarded().getChildWithDefault(path, request)

    def render(self, request: Request) -> int | bytes:
        """
        ``GET``/``DELETE /api/servers/{uuid}`` behind the guard.
        """
        return self._guarded().render(request)


class ServersResource(JsonResource):
    """
    ``GET``/``POST /api/servers``.
    """

    isLeaf = True

    def __init__(self, node: Node) -> None:
        super().__init__()
        self._node = node

    async def render_GET(self, request: ApiRequest) -> list[dict[str, Any]]:
        """
        Every server's details (§3.3).
        """
        node = self._node
        return await node.run_blocking(lambda servers: [details(s) for s in servers],
                                       list(node.registry))

    async def render_POST(self, request: ApiRequest) -> None:
        """
        Register a server the panel just created (§3.4): 202.
        """
        node = self._node
        body = read_object(request)
        uuid = body.get("uuid")
        start = body.get("start_on_completion", False)
        if (not isinstance(uuid, str) or not UUID_V4.match(uuid)
                or not isinstance(start, (bool, type(None)))):
            raise ApiError(INVALID_DATA, status=422)
        if uuid in node.registry:
            raise Conflict("A server with that UUID already exists on this instance.")
        try:
            document = await node.panel.get_server(uuid)
            server = build_server(node, uuid, document)
        except (PanelError, ServerConfigError) as e:
            log.error("Creating server {uuid} failed: {error}", uuid=uuid, error=str(e))
            raise ApiError()
        if uuid in node.registry:
            raise Conflict("A server with that UUID already exists on this instance.")
        await node.run_blocking(server.volume.ensure_root)
        node.registry.add(server)
        server.track(install.install, server, start_after=bool(start))
        request.setResponseCode(202)


class ServerResource(JsonResource):
    """
    ``/api/servers/{uuid}`` of a known server.
    """

    def __init__(self, node: Node, server: Server, services: FileServices,
                 backups: BackupServices, transfers: TransferServices) -> None:
        super().__init__()
        self._node = node
        self._server = server
        self._services = services
        self._backups = backups
        self._transfers = transfers

    def getChild(self, path: bytes, request: Request) -> IResource:
        """
        The server's routes.
        """
        if path == b"files":
            return FilesResource(self._node, self._server, self._services)
        if path == b"transfer":
            return ServerTransferResource(self._transfers, self._server)
        backup_route = backup_routes(self._backups, self._server).get(path)
        if backup_route is not None:
            return backup_route
        route = ROUTES.get(path)
        if route is None:
            return ErrorResource(NotFound())
        return route(self._node, self._server)

    async def render_GET(self, request: ApiRequest) -> dict[str, Any]:
        """
        State, utilization and configuration (§4.1).
        """
        return await self._node.run_blocking(details, self._server)

    async def render_DELETE(self, request: ApiRequest) -> None:
        """
        Unregister the server and remove its volume in the background (§4.2).
        """
        node, server = self._node, self._server
        # After an outgoing transfer the panel still lists the backups (backups.md §9.3).
        after_transfer = server.occupancy.transferring
        await lifecycle.delete(server)
        node.registry.remove(server.uuid)
        d = node.run_blocking(server.volume.remove_root)
        d.addErrback(lambda f: log.failure("Removing the volume of {uuid} failed", f,
                                           uuid=server.uuid))
        if node.config.system.backups.remove_backups_on_server_delete and not after_transfer:
            removal = Deferred.fromCoroutine(self._backups.delete_all(server.uuid))
            removal.addErrback(lambda f: log.failure("Removing the backups of {uuid} failed",
                                                     f, uuid=server.uuid))
        request.setResponseCode(204)
