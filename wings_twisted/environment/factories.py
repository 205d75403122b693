"""
The environment factories ``tap.py`` picks from by ``environment.driver``:
each turns one server's ``EnvironmentSettings`` into the ``IEnvironment``
that runs it.

``ProcessEnvironments`` makes process environments that share one cgroup
hierarchy, detected (in a worker thread) on the first start of any server
and logged once.  ``DockerEnvironments`` makes Docker environments that
share one engine client and node network; as a service it checks the
engine at boot (ensuring the node network, lifecycle.md §20.4) and lets go
of every container's streams at shutdown (containers outlive the daemon).
An engine that cannot be reached at boot is a warning, not a failure: the
daemon serves the Panel, and every start attempt says on the console why
it cannot run.  ``no_environment`` answers ``None``: the driver cannot run
servers here, and power actions say so.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from ..blocking import RunBlocking
from ..config import Config
from ..reactor import IReactor
from . import EnvironmentSettings, IEnvironment
from .cgroups import CgroupHost, base_name, detect_cgroups
from .docker import DockerClient, DockerError
from .process import ProcessEnvironment

if TYPE_CHECKING:
    from .docker.environment import DockerEnvironment

log = Logger()


class ProcessEnvironments:
    """
    The factory of ``environment.driver: process``.

    :param reactor: spawns the processes (``IReactorProcess``) and times them.
    :param config: the live configuration, read when an environment is made.
    """

    def __init__(self, *, reactor: IReactor, config: Callable[[], Config],
                 run_blocking: RunBlocking) -> None:
        self._reactor = reactor
        self._config = config
        self._run_blocking = run_blocking
        self._host: CgroupHost | None = None
        self._detected = False

    def __call__(self, settings: EnvironmentSettings) -> IEnvironment:
        """
        A process environment for one server.
        """
        return ProcessEnvironment(settings, reactor=self._reactor, config=self._config(),
                                  run_blocking=self._run_blocking, cgroups=self.cgroup_host)

    async def cgroup_host(self) -> CgroupHost | None:
        """
        The cgroup hierarchy every process environment puts servers in.
        """
        if not self._detected:
            host = await self._run_blocking(
                detect_cgroups, name=base_name(self._config().system.data))
            if not self._detected:
                self._host, self._detected = host, True
                if host is not None:
                    log.info("Process limits use {host}", host=host.describe())
        return self._host

    def release(self) -> Deferred[None]:
        """
        At shutdown, once every server stopped: remove the empty cgroup base
        (`CgroupHost.release`).
        """
        if self._host is None:
            return succeed(None)
        return self._run_blocking(self._host.release)


class DockerEnvironments(Service):
    """
    The factory of ``environment.driver: docker``, and the service around
    the engine connection (module docstring).
    """

    def __init__(self, *, client: DockerClient, config: Callable[[], Config],
                 run_blocking: RunBlocking) -> None:
        # Imported here: a node on the process driver never loads the container code.
        from .docker.engine import Engine
        self.engine = Engine(client, config)
        self._run_blocking = run_blocking
        self._made: weakref.WeakSet[DockerEnvironment] = weakref.WeakSet()
        self.checked: Deferred[bool] | None = None

    def __call__(self, settings: EnvironmentSettings) -> IEnvironment:
        """
        A Docker environment for one server.
        """
        from .docker.environment import DockerEnvironment
        environment = DockerEnvironment(settings, engine=self.engine,
                                        run_blocking=self._run_blocking)
        self._made.add(environment)
        return environment

    async def check(self) -> bool:
        """
        Reach the engine and ensure the node network; a warning when that
        fails.
        """
        try:
            await self.engine.network()
        except DockerError as e:
            log.warn("The Docker engine at {where} cannot be used: {error} -- servers cannot "
                     "start until it can (environment.driver is docker)",
                     where=self.engine.where, error=e.message)
            return False
        return True

    def startService(self) -> None:
        """
        Check the engine in the background.
        """
        super().startService()
        self.checked = Deferred.fromCoroutine(self.check())

    def stopService(self) -> Deferred[None]:
        """
        Let go of every container's streams, then close idle connections.
        """
        super().stopService()
        for environment in list(self._made):
            environment.detach()
        return self.engine.client.close()


def no_environment(settings: EnvironmentSettings) -> IEnvironment | None:
    """
    The factory of a driver this build cannot run servers with.
    """
    return None
