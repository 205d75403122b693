"""
The server model: one game server on this node, as the panel configured it,
plus the registry of every server loaded here.

The panel's configuration document (panel.md §3.3) is kept as received
(``settings`` and ``process_configuration``) and read through a few typed
accessors; what the HTTP layer needs of it today is the suspension flag, the
egg denylist and the disk limit, which are pushed into the server's
sandboxed ``Volume`` whenever the configuration changes.

Later issues hang the environment (process/Docker), power state, console and
backups off this object; the states and flags of api.md §2.9 already live
here so that the write guard has one home.
"""

from __future__ import annotations

import re
from typing import Any, Iterator, Mapping

from .fs import Volume

UUID_V4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
CANONICAL_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

MIB = 1024 * 1024

RESTORING_MESSAGE = "Files cannot be changed while a backup is being restored to this server."
RECEIVING_MESSAGE = "Files cannot be changed while this server is being transferred to this node."


class ServerConfigError(ValueError):
    """
    A server entry from the panel that cannot be used.
    """


class WriteGuarded(Exception):
    """
    The write guard of api.md §2.9 refuses a modification (409).
    """


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool) or value is None:
        return default
    if isinstance(value, (int, float)):
        return int(value)
    try:
        return int(str(value))
    except ValueError:
        return default


class Server:
    """
    One server registered on this node.
    """

    def __init__(self, uuid: str, settings: Mapping[str, Any],
                 process_configuration: Mapping[str, Any], volume: Volume) -> None:
        self.uuid = uuid
        self.volume = volume
        self.settings: dict[str, Any] = {}
        self.process_configuration: dict[str, Any] = {}
        self.state = "offline"
        self.installing = False
        self.transferring = False
        self.restoring = False
        self.receiving_transfer = False
        self.update(settings, process_configuration)

    def update(self, settings: Mapping[str, Any], process_configuration: Mapping[str, Any]) -> None:
        """
        Replace the configuration with a fresh copy from the panel.
        """
        if not isinstance(settings, Mapping):
            raise ServerConfigError("settings must be an object")
        if not isinstance(process_configuration, Mapping):
            raise ServerConfigError("process_configuration must be an object")
        self.settings = dict(settings)
        self.process_configuration = dict(process_configuration)
        self.volume.set_denylist(self.denylist)
        self.volume.set_disk_limit(self.disk_limit_bytes)

    @property
    def suspended(self) -> bool:
        """
        The panel's suspension flag.
        """
        return bool(self.settings.get("suspended", False))

    @property
    def build(self) -> Mapping[str, Any]:
        """
        The ``build`` limits block.
        """
        build = self.settings.get("build")
        return build if isinstance(build, Mapping) else {}

    @property
    def denylist(self) -> list[str]:
        """
        The egg's ``file_denylist`` (api.md §2.12).
        """
        egg = self.settings.get("egg")
        items = egg.get("file_denylist") if isinstance(egg, Mapping) else None
        return [str(i) for i in items] if isinstance(items, list) else []

    @property
    def disk_limit_bytes(self) -> int:
        """
        ``build.disk_space`` in bytes; 0 = unlimited (api.md §2.13).
        """
        limit = _int(self.build.get("disk_space"), 0)
        return limit * MIB if limit > 0 else limit

    def check_writable(self) -> None:
        """
        Raise ``WriteGuarded`` while a restore or an incoming transfer owns the
        volume (api.md §2.9).
        """
        if self.restoring:
            raise WriteGuarded(RESTORING_MESSAGE)
        if self.receiving_transfer:
            raise WriteGuarded(RECEIVING_MESSAGE)

    def configuration(self) -> dict[str, Any]:
        """
        The ``configuration`` object of the details route (api.md §4.1).
        """
        s = self.settings
        return {
            "uuid": self.uuid,
            "meta": s.get("meta", {"name": "", "description": ""}),
            "suspended": self.suspended,
            "invocation": s.get("invocation", ""),
            "skip_egg_scripts": bool(s.get("skip_egg_scripts", False)),
            "environment": s.get("environment", {}),
            "labels": s.get("labels", {}),
            "allocations": s.get("allocations", {}),
            "build": s.get("build", {}),
            "crash_detection_enabled": bool(s.get("crash_detection_enabled", True)),
            "mounts": s.get("mounts", []),
            "egg": s.get("egg", {}),
            "container": s.get("container", {}),
        }

    def utilization(self) -> dict[str, Any]:
        """
        The utilization object of api.md §4.1.  Nothing runs yet (process
        environments come with a later issue), so every live figure is 0;
        ``disk_bytes`` is the cached volume usage.
        """
        memory = _int(self.build.get("memory_limit"), 0)
        return {
            "memory_bytes": 0,
            "memory_limit_bytes": memory * MIB if memory > 0 else 0,
            "cpu_absolute": 0,
            "network": {"rx_bytes": 0, "tx_bytes": 0},
            "uptime": 0,
            "state": self.state,
            "disk_bytes": self.volume.usage(),
        }

    def details(self) -> dict[str, Any]:
        """
        The body of ``GET /api/servers/{uuid}``.  Blocking (it may walk the
        volume to refresh the disk usage): call through ``run_blocking``.
        """
        return {
            "state": self.state,
            "is_suspended": self.suspended,
            "utilization": self.utilization(),
            "configuration": self.configuration(),
        }


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
