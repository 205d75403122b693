"""
The node: the daemon's shared dependencies, handed to every resource and
service.  A typed bag, built by the composition root (``tap.build_service``)
and by tests; it makes nothing itself.

``Node.config`` is swapped as a whole by ``POST /api/update``; everything
that must see a rotation at once (bearer token, JWT key, CORS origins, upload
limit) reads ``node.config`` on each use instead of keeping a copy.

The node provides ``servers.context.ServerContext``, which is all the server
layer sees of it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from twisted.internet.interfaces import IHostnameResolver, IReactorTCP, IReactorTime
from twisted.internet.task import Cooperator
from twisted.web.iweb import IPolicyForHTTPS

from .activity import ActivityLog
from .auth.denials import Denials
from .auth.store import TokenStore
from .blocking import RunBlocking
from .config import Config
from .environment.docker import DockerClient
from .environment.factories import no_environment
from .panel import PanelClient
from .servers.context import EnvironmentFactory
from .servers.registry import ServerRegistry


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


@dataclass(frozen=True)
class Outgoing:
    """
    How the daemon reaches hosts its users name (remote pulls, api.md §6.2).

    :ivar connector: opens TCP connections (the reactor).
    :ivar resolver: answers host names (the reactor's ``nameResolver``); the
        SSRF guard checks its answers and connects to those addresses only.
    :ivar tls: client TLS options for a host name (certificate verification
        and SNI; ``--ignore-certificate-errors`` turns verification off).
    """

    connector: IReactorTCP
    resolver: IHostnameResolver
    tls: IPolicyForHTTPS


class Node:
    """
    Everything the daemon's parts share.

    :param clock: time and timers (the reactor, or a ``Clock`` in tests).
    :param cooperator: schedules body producers (archives, S3 parts, transfer
        pushes); one driven by ``clock`` when not given.
    :param make_environment: the environment factory of ``environment.driver``
        (``tap.environment_factory``); none by default.
    :param docker: the container engine client (``None`` with the process
        driver, or in tests).
    :param outgoing: connections to hosts users name (``None`` in tests that
        make none: remote pulls then fail).
    """

    def __init__(self, config: Config, *, clock: IReactorTime, run_blocking: RunBlocking,
                 panel: PanelClient, activity: ActivityLog, config_path: str | None = None,
                 docker: DockerClient | None = None,
                 cooperator: Cooperator | None = None,
                 make_environment: EnvironmentFactory = no_environment,
                 outgoing: Outgoing | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.clock = clock
        self.cooperator = cooperator if cooperator is not None else Cooperator(
            scheduler=lambda work: clock.callLater(0, work))
        self.shutting_down = False
        self.run_blocking = run_blocking
        self.panel = panel
        self.activity = activity
        self.docker = docker
        self.make_environment = make_environment
        self.outgoing = outgoing
        self.registry = ServerRegistry()
        self.tokens = TokenStore(clock.seconds)
        self.uid, self.gid = resolve_user(config)
        self.boot_time = clock.seconds()
        # Websocket token deny lists (websocket.md §8.1), shared by every socket.
        self.denials = Denials(self.boot_time)
