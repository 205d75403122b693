"""
The environment factories ``tap.py`` picks from by ``environment.driver``:
each turns one server's ``EnvironmentSettings`` into the ``IEnvironment``
that runs it.

``ProcessEnvironments`` makes process environments that share one cgroup
hierarchy, detected (in a worker thread) on the first start of any server
and logged once.  ``no_environment`` answers ``None``: the driver cannot
run servers in this build (Docker, until its environment lands), and power
actions say so.
"""

from __future__ import annotations

from typing import Callable

from twisted.logger import Logger

from ..blocking import RunBlocking
from ..config import Config
from ..reactor import IReactor
from . import EnvironmentSettings, IEnvironment
from .cgroups import CgroupHost, detect_cgroups
from .process import ProcessEnvironment

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
            host = await self._run_blocking(detect_cgroups)
            if not self._detected:
                self._host, self._detected = host, True
                if host is not None:
                    log.info("Process limits use {host}", host=host.describe())
        return self._host


def no_environment(settings: EnvironmentSettings) -> IEnvironment | None:
    """
    The factory of a driver this build cannot run servers with.
    """
    return None
