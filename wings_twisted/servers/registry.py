"""
The servers loaded on this node, looked up by exact, case-sensitive UUID
(api.md §2.8).
"""

from __future__ import annotations

from typing import Iterator

from .server import Server


class ServerRegistry:
    """
    The servers loaded on this node, looked up by exact, case-sensitive UUID
    (api.md §2.8).
    """

    def __init__(self) -> None:
        self._servers: dict[str, Server] = {}

    def get(self, uuid: str) -> Server | None:
        """
        The server with this UUID, if registered.
        """
        return self._servers.get(uuid)

    def add(self, server: Server) -> None:
        """
        Register ``server``; a UUID may only be registered once.
        """
        if server.uuid in self._servers:
            raise KeyError(server.uuid)
        self._servers[server.uuid] = server

    def remove(self, uuid: str) -> Server | None:
        """
        Unregister and return the server, if it was registered.
        """
        return self._servers.pop(uuid, None)

    def __contains__(self, uuid: object) -> bool:
        return uuid in self._servers

    def __iter__(self) -> Iterator[Server]:
        return iter(list(self._servers.values()))

    def __len__(self) -> int:
        return len(self._servers)
