"""
The HTTP side of the console websocket and of token revocation:

* ``GET /api/servers/{uuid}/ws`` (no bearer token, websocket.md §1):
  the connection cap (400 ``Too many open websocket connections.``), then a
  400 for requests that are not websocket upgrades, then Autobahn's
  ``WebSocketResource`` (origin check, handshake).
* ``POST /api/servers/{uuid}/ws/deny`` (bearer, api.md §4.9): body
  ``{"jtis": ["<jti>", ...]}`` → 204; the entries go to the node's global JTI
  deny map.
* ``POST /api/deauthorize-user`` (bearer, websocket.md §8.1): body
  ``{"user": "<uuid>", "servers": ["<uuid>", ...]}`` → 204; a user deny entry
  per listed server that exists (every server when the list is empty or
  missing), and that user's sockets on those servers are closed.

The upgrade is mounted outside any ``BearerGuard`` (its token travels
inside the socket); ``deny`` and ``deauthorize-user`` are mounted behind one
(``web.site.build_root``), and the server is looked up only after that
guard, so a bad token is a 401/403 before an unknown server's 404 (api.md
§2.2).  The websocket itself (``websocket/``) knows nothing of HTTP routes.

Decisions:

* ``ws/deny``: a missing ``jtis`` counts as an empty list (Go decodes it
  so); a non-list or a non-string element is a 400.
* ``deauthorize-user``: ``user`` must be a non-empty string, ``servers`` a
  list of strings or absent/``null`` (else 400).  Sockets are closed with
  4409 ``user deauthorized`` (§11.2 leaves 4409 or 1000 open): the stock
  P1.12 frontend stops reconnecting on 4409, and a reconnect would only be
  refused by the deny entry anyway.  ``on_deauthorize(user, servers)`` lets
  the composition root also end that user's SFTP sessions (sftp.md §4).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from autobahn.twisted.resource import WebSocketResource
from twisted.web.resource import IResource
from twisted.web.server import Request

from ..websocket.protocol import ConsoleFactory
from .body import read_object
from ..node import Node
from ..servers.server import Server
from .errors import GENERIC_MESSAGE, BadRequest, ErrorResource, JsonResource, NotFound, error_body
from .request import ApiRequest
from .guard import BearerGuard
from .lookup import ServerLookup

TOO_MANY = "Too many open websocket connections."
NOT_UPGRADE = "Bad Request"
DEAUTHORIZED = (4409, "user deauthorized")


def _header_tokens(request: Request, name: bytes) -> set[bytes]:
    values = request.requestHeaders.getRawHeaders(name) or []
    return {token.strip().lower() for value in values for token in value.split(b",")}


class ConsoleBranch(JsonResource):
    """
    ``/api/servers/{uuid}/ws`` before the server is looked up: the upgrade
    itself (no bearer) and ``deny`` (bearer first, then the lookup).
    """

    def __init__(self, node: Node, segment: bytes, factory: ConsoleFactory) -> None:
        super().__init__()
        self._node = node
        self._segment = segment
        self._factory = factory

    def _token(self) -> str:
        return str(self._node.config.token)

    def getChild(self, path: bytes, request: Request) -> IResource:
        """
        ``deny`` behind the bearer guard; anything else a 404 behind it too.
        """
        node = self._node
        if path == b"deny":
            return BearerGuard(ServerLookup(node, self._segment,
                                            lambda server: WsDenyResource(node, server)),
                               self._token)
        return BearerGuard(ErrorResource(NotFound()), self._token)

    def render(self, request: Request) -> int | bytes:
        """
        The upgrade of the server named by the segment (404 if unknown).
        """
        node, factory = self._node, self._factory
        lookup = ServerLookup(node, self._segment,
                              lambda server: ConsoleResource(node, server, factory))
        if request.method != b"GET":
            # Only the upgrade is exempt from the node token.
            return BearerGuard(lookup, self._token).render(request)
        return lookup.render(request)


class ConsoleResource(JsonResource):
    """
    ``GET /api/servers/{uuid}/ws`` for a known server.
    """

    isLeaf = True

    def __init__(self, node: Node, server: Server, factory: ConsoleFactory) -> None:
        super().__init__()
        self._node = node
        self._server = server
        self._factory = factory

    def render_GET(self, request: ApiRequest) -> int | bytes:
        """
        Cap and upgrade checks, then hand the connection to Autobahn.
        """
        node, server = self._node, self._server
        cap = node.config.websocket.max_connections_per_server
        if cap > 0 and len(server.sockets) >= cap:
            return error_body(request, BadRequest(TOO_MANY))
        if (b"websocket" not in _header_tokens(request, b"Upgrade")
                or b"upgrade" not in _header_tokens(request, b"Connection")):
            return error_body(request, BadRequest(NOT_UPGRADE))
        result: int | bytes = WebSocketResource(
            self._factory.bind(server, request.client_ip())).render(request)
        return result


def _strings(value: Any) -> list[str]:
    """
    ``value`` as a list of strings (``None`` → ``[]``); 400 otherwise.
    """
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BadRequest(GENERIC_MESSAGE)
    return value


class WsDenyResource(JsonResource):
    """
    ``POST /api/servers/{uuid}/ws/deny``.
    """

    def __init__(self, node: Node, server: Server) -> None:
        super().__init__()
        self._node = node
        self._server = server

    def render_POST(self, request: ApiRequest) -> None:
        """
        Record the ``jtis``; 204.
        """
        node = self._node
        jtis = _strings(read_object(request).get("jtis"))
        node.denials.deny_jtis(jtis, node.clock.seconds())
        request.setResponseCode(204)


class DeauthorizeUserResource(JsonResource):
    """
    ``POST /api/deauthorize-user``.

    :param on_deauthorize: called with the user UUID and the affected
        servers after their sockets and SFTP connections were closed.
    """

    def __init__(self, node: Node, *,
                 on_deauthorize: Callable[[str, Sequence[Server]], None] | None = None) -> None:
        super().__init__()
        self._node = node
        self._on_deauthorize = on_deauthorize

    def render_POST(self, request: ApiRequest) -> None:
        """
        Deny, close, 204.
        """
        node = self._node
        body = read_object(request)
        user = body.get("user")
        if not isinstance(user, str) or not user:
            raise BadRequest(GENERIC_MESSAGE)
        listed = _strings(body.get("servers"))
        registry = node.registry
        if listed:
            servers = [s for s in (registry.get(uuid) for uuid in dict.fromkeys(listed))
                       if s is not None]
        else:
            servers = list(registry)
        node.denials.deauthorize(user, [s.uuid for s in servers], node.clock.seconds())
        for server in servers:
            server.close_sockets(*DEAUTHORIZED, user_uuid=user)
            server.end_file_sessions("user deauthorized", user_uuid=user)
        if self._on_deauthorize is not None:
            self._on_deauthorize(user, servers)
        request.setResponseCode(204)
