"""
``/api/servers`` and ``/api/servers/{uuid}`` (api.md §3.3, §3.4, §4.1,
§4.2).  Server lookup is exact and case-sensitive; an unknown UUID is the
404 the panel relies on to treat deletions as done (§2.8).

Per-server routes are children of ``ServerResource``: the process routes
of ``server_routes``; files, backups and transfers come with later issues.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.web.resource import Resource

from ..panel import PanelError
from ..servers import install, lifecycle
from ..servers.build import build_server
from ..servers.server import UUID_V4, Server, ServerConfigError
from .body import read_object
from .errors import ApiError, Conflict, ErrorResource, JsonResource, NotFound, render_async
from ..websocket.protocol import ConsoleFactory
from ..websocket.resource import ws_child
from .server_routes import ROUTES

log = Logger()

INVALID_DATA = "The data provided in the request could not be validated."


class ServersResource(JsonResource):
    """
    ``GET``/``POST /api/servers`` and the lookup of ``/api/servers/{uuid}``.
    """

    def __init__(self, node: Any, console: ConsoleFactory) -> None:
        super().__init__()
        self._node = node
        self._console = console

    def getChild(self, path: bytes, request: Any) -> Resource:
        """
        The server named by the segment, or a JSON 404.
        """
        try:
            uuid = path.decode("ascii")
        except UnicodeDecodeError:
            return ErrorResource(NotFound())
        server = self._node.registry.get(uuid)
        if server is None:
            return ErrorResource(NotFound())
        return ServerResource(self._node, server, self._console)

    def render_GET(self, request: Any) -> Any:
        """
        Every server's details (§3.3).
        """
        node = self._node
        return render_async(request, lambda: node.run_blocking(
            lambda servers: [s.details() for s in servers], list(node.registry)))

    def render_POST(self, request: Any) -> Any:
        """
        Register a server the panel just created (§3.4): 202.
        """
        return render_async(request, lambda: self._create(request))

    async def _create(self, request: Any) -> None:
        node = self._node
        body = read_object(request)
        uuid = body.get("uuid")
        start = body.get("start_on_completion", False)
        if not isinstance(uuid, str) or not UUID_V4.match(uuid) or not isinstance(start, (bool, type(None))):
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
        return None


class ServerResource(JsonResource):
    """
    ``/api/servers/{uuid}``.
    """

    def __init__(self, node: Any, server: Server, console: ConsoleFactory) -> None:
        super().__init__()
        self._node = node
        self._server = server
        self._console = console

    def getChild(self, path: bytes, request: Any) -> Resource:
        """
        The server's routes.
        """
        if path == b"ws":
            return ws_child(self._node, self._server, self._console)
        route = ROUTES.get(path)
        if route is None:
            return ErrorResource(NotFound())
        return route(self._node, self._server)

    def render_GET(self, request: Any) -> Any:
        """
        State, utilization and configuration (§4.1).
        """
        return render_async(request, lambda: self._node.run_blocking(self._server.details))

    def render_DELETE(self, request: Any) -> Any:
        """
        Unregister the server and remove its volume in the background (§4.2).
        """
        return render_async(request, lambda: self._delete(request))

    async def _delete(self, request: Any) -> None:
        node, server = self._node, self._server
        await lifecycle.delete(server)
        node.registry.remove(server.uuid)
        d = node.run_blocking(server.volume.remove_root)
        d.addErrback(lambda f: log.failure("Removing the volume of {uuid} failed", f,
                                           uuid=server.uuid))
        request.setResponseCode(204)
        return None
