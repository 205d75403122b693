"""
The ``{uuid}`` segment of ``/api/servers/{uuid}/...`` (api.md §2.8): looked
up exactly and case-sensitively, only when traversal or rendering reaches
it, so that a ``BearerGuard`` mounted above runs first.  An unknown server
is the JSON 404 the panel relies on to treat deletions as done.
"""

from __future__ import annotations

from typing import Callable

from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from ..node import Node
from ..servers.server import Server
from .errors import ErrorResource, NotFound


class ServerLookup(Resource):
    """
    Stands for the resource ``make(server)`` of the server named by
    ``segment``, or for a 404 when there is none.
    """

    def __init__(self, node: Node, segment: bytes, make: Callable[[Server], IResource]) -> None:
        super().__init__()
        self._node = node
        self._segment = segment
        self._make = make

    def _target(self) -> IResource:
        try:
            uuid = self._segment.decode("ascii")
        except UnicodeDecodeError:
            return ErrorResource(NotFound())
        server = self._node.registry.get(uuid)
        if server is None:
            return ErrorResource(NotFound())
        return self._make(server)

    def getChildWithDefault(self, path: bytes, request: Request) -> IResource:
        """
        Traverse into the server's resource.
        """
        target = self._target()
        if getattr(target, "isLeaf", False):
            return target
        child: IResource = target.getChildWithDefault(path, request)
        return child

    def render(self, request: Request) -> int | bytes:
        """
        Render the server's resource.
        """
        result: int | bytes = self._target().render(request)
        return result
