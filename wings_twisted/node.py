"""
The node: the daemon's shared state, handed to every resource and service.

``Node.config`` is swapped as a whole by ``POST /api/update``; everything
that must see a rotation at once (bearer token, JWT key, CORS origins, upload
limit) reads ``node.config`` on each use instead of keeping a copy.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from .activity import ActivityLog
from .auth import TokenStore
from .blocking import RunBlocking
from .config import Config
from .docker import DockerClient
from .environment import IEnvironment
from .environment.cgroups import CgroupHost, detect_cgroups
from .environment.process import ProcessEnvironment
from .fs import Volume
from .panel import PanelClient
from .server import Server, ServerConfigError, ServerRegistry
from .auth.denials import Denials

log = Logger()


def resolve_user(config: Config) -> tuple[int, int]:
    """
    The uid/gid that owns volume files: ``system.user.uid/gid``, which
    ``sysuser.resolve_system_user`` settles at boot; the daemon's own ids
    when a configuration built elsewhere (tests) leaves them unset.
    """
    user = config.system.user
    uid, gid = user.uid, user.gid
    if isinstance(uid, int) and uid >= 0 and isinstance(gid, int) and gid >= 0:
        return uid, gid
    return os.getuid(), os.getgid()


class Node:
    """
    Everything the daemon's parts share.
    """

    def __init__(self, config: Config, *, clock: IReactorTime, run_blocking: RunBlocking,
                 panel: PanelClient, activity: ActivityLog, config_path: str | None = None,
                 docker: DockerClient | None = None, reactor: Any = None) -> None:
        self.config = config
        self.config_path = config_path
        self.clock = clock
        # Spawns processes (IReactorProcess); the clock itself in tests.
        self.reactor = reactor if reactor is not None else clock
        self.shutting_down = False
        self.run_blocking = run_blocking
        self.panel = panel
        self.activity = activity
        # The container engine; None with the process driver (or in tests).
        self.docker = docker
        self.registry = ServerRegistry()
        self.tokens = TokenStore(clock.seconds)
        self.uid, self.gid = resolve_user(config)
        self.boot_time = clock.seconds()
        # Websocket token deny lists (websocket.md §8.1), shared by every socket.
        self.denials = Denials(self.boot_time)
        self._cgroup_host: CgroupHost | None = None
        self._cgroups_detected = False

    def volume_for(self, uuid: str) -> Volume:
        """
        The sandboxed volume of server ``uuid`` under ``system.data``.
        """
        system = self.config.system
        return Volume(os.path.join(system.data, uuid), uid=self.uid, gid=self.gid,
                      disk_check_interval=system.disk_check_interval,
                      clock=self.clock.seconds, chown=os.geteuid() == 0)

    def server_from_panel(self, uuid: str, document: Mapping[str, Any]) -> Server:
        """
        Build (not register) a server from the panel's configuration document
        ``{"settings": ..., "process_configuration": ...}``.
        """
        settings = document.get("settings")
        process = document.get("process_configuration")
        if not isinstance(settings, Mapping) or not isinstance(process, Mapping):
            raise ServerConfigError("the panel's answer lacks settings or process_configuration")
        return Server(uuid, settings, process, self.volume_for(uuid), node=self)

    def make_environment(self, server: Server) -> IEnvironment | None:
        """
        The environment of ``environment.driver`` for ``server``; ``None``
        for the Docker driver, which this build does not have yet.
        """
        if self.config.environment.driver != "process":
            return None
        return ProcessEnvironment(server.environment_settings(), reactor=self.reactor,
                                  config=self.config, run_blocking=self.run_blocking,
                                  cgroups=self.cgroup_host)

    async def cgroup_host(self) -> CgroupHost | None:
        """
        The cgroup hierarchy process environments put servers in, detected
        on the first start of any server and shared by all of them.
        """
        if not self._cgroups_detected:
            host = await self.run_blocking(detect_cgroups)
            if not self._cgroups_detected:
                self._cgroup_host, self._cgroups_detected = host, True
                if host is not None:
                    log.info("Process limits use {host}", host=host.describe())
        return self._cgroup_host
