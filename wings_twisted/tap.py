"""
``twistd wings``: command-line options and the composition root.

This is the only module that imports the global reactor, inside
``makeService``.  ``build_service`` takes every effect as an argument so
tests can build the daemon around a fake reactor or a real one on port 0.

A configuration that cannot be used stops start-up with exactly one line on
standard error and exit status 1: loading happens in ``makeService`` and
raises ``SystemExit`` (raising ``UsageError`` from ``postOptions`` would make
twistd print its whole help text first).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, cast

from treq.client import HTTPClient
from twisted.application import strports
from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.endpoints import quoteStringArgument
from twisted.internet.task import Cooperator
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.threadpool import ThreadPool
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from .activity import ActivityLog
from .blocking import thread_pool_runner
from .config import Config, ConfigError, load_config
from .blocking import RunBlocking
from .environment.docker import DockerClient, DockerError
from .environment.factories import DockerEnvironments, ProcessEnvironments, no_environment
from .node import Node
from .panel import PanelClient
from .reactor import IReactor
from .servers.context import EnvironmentFactory
from .service import ThreadPoolService, WingsService
from .sysuser import SystemUserError, resolve_system_user
from .timezone import TimezoneError, resolve_timezone
from .web.site import build_site

log = Logger()

DEFAULT_CONFIG = "/etc/pterodactyl/config.yml"
# Twisted's default accept backlog (50) overflows when a browser and a
# download manager open many connections at once; the kernel caps this at
# net.core.somaxconn.
BACKLOG = 1024


def tune_malloc() -> None:
    """
    Keep glibc from returning heap memory to the kernel after every upload
    burst: streamed bodies allocate and free megabytes of 64 KiB buffers,
    and trimming then faulting the pages back costs more CPU than the
    copy itself (bench/RESULTS.md).  The memory stays bounded by the upload
    queue; nothing here raises it.  A no-op off glibc.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
    except OSError:
        return
    if mallopt is not None:
        mallopt(-1, 256 * 1024 * 1024)  # M_TRIM_THRESHOLD
        mallopt(-2, 16 * 1024 * 1024)   # M_TOP_PAD
        mallopt(-3, 1024 * 1024)        # M_MMAP_THRESHOLD: 128 KiB reads from the heap


class Options(usage.Options):
    """
    ``twistd wings`` options (config.md §8).
    """

    optParameters = [
        ["config", "c", DEFAULT_CONFIG, "Path to the Wings configuration file."],
        ["listen", None, None,
         "Override the API listener with a strports description (e.g. tcp:0)."],
    ]
    optFlags = [
        ["debug", None, "Debug logging, including one line per HTTP request (not written back "
                        "to the configuration)."],
        ["ignore-certificate-errors", None, "Do not verify TLS certificates of outgoing requests."],
    ]


class _InsecurePolicy(BrowserLikePolicyForHTTPS):
    """
    ``--ignore-certificate-errors``: no verification on outgoing HTTPS.
    """

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        from twisted.internet.ssl import CertificateOptions
        return CertificateOptions(verify=False)


def listen_description(config: Config) -> str:
    """
    The strports description of the API listener (api.md §2.1).
    """
    api = config.api
    interface = quoteStringArgument(api.host)
    if api.ssl.enabled:
        cert = quoteStringArgument(api.ssl.cert)
        key = quoteStringArgument(api.ssl.key)
        return ("ssl:port={}:interface={}:backlog={}:privateKey={}:certKey={}:"
                "extraCertChain={}").format(api.port, interface, BACKLOG, key, cert, cert)
    return "tcp:port={}:interface={}:backlog={}".format(api.port, interface, BACKLOG)


def environment_factory(driver: str, *, reactor: IReactor, config: Callable[[], Config],
                        run_blocking: RunBlocking,
                        docker: DockerClient | None = None) -> EnvironmentFactory:
    """
    The environment factory of ``environment.driver``: process environments
    sharing one cgroup hierarchy, Docker environments sharing the engine
    client ``docker``, or none (the Docker driver without a client).
    """
    if driver == "process":
        return ProcessEnvironments(reactor=reactor, config=config, run_blocking=run_blocking)
    if driver == "docker" and docker is not None:
        return DockerEnvironments(client=docker, config=config, run_blocking=run_blocking)
    return no_environment


def ensure_directories(config: Config) -> None:
    """
    Create the daemon's state and data directories (0700, config.md §4.1).
    """
    system = config.system
    for path in (system.root_directory, system.log_directory, system.data,
                 system.backup_directory, system.archive_directory, system.tmp_directory):
        os.makedirs(path, mode=0o700, exist_ok=True)


def build_service(config: Config, reactor: IReactor, *, config_path: str | None = None,
                  listen: str | None = None, http: HTTPClient | None = None,
                  insecure: bool = False, fatal: Callable[[str], None] | None = None,
                  environ: Mapping[str, str] | None = None, debug: bool = False) -> IService:
    """
    Assemble the daemon around ``reactor``.

    :param environ: the environment the Docker connection is read from
        (config.md §5; default ``os.environ``).  An unsupported
        ``DOCKER_HOST`` raises ``DockerError``.
    """
    ensure_directories(config)
    pool = ThreadPool(minthreads=2, maxthreads=16, name="wings-blocking")
    run_blocking = thread_pool_runner(reactor, pool)
    if http is None:
        policy = _InsecurePolicy() if insecure else BrowserLikePolicyForHTTPS()
        connections = HTTPConnectionPool(reactor, persistent=True)
        http = HTTPClient(Agent(reactor, contextFactory=policy, pool=connections))
    panel = PanelClient(http, reactor, remote=config.remote, token_id=config.token_id,
                        token=config.token, timeout=config.remote_query.timeout,
                        custom_headers=config.remote_query.custom_headers)
    activity = ActivityLog(os.path.join(config.system.root_directory, "wings.db"),
                           clock=reactor.seconds, run_blocking=run_blocking,
                           send=panel.send_activity, batch=config.system.activity_send_count)
    docker = None
    if config.environment.driver == "docker":
        docker = DockerClient.from_environment(
            reactor, os.environ if environ is None else environ)
    # One cooperator for every body producer (archives, S3 parts, transfer pushes).
    cooperator = Cooperator(scheduler=lambda work: reactor.callLater(0, work))
    node: Node | None = None

    def live_config() -> Config:
        return node.config if node is not None else config

    make_environment = environment_factory(config.environment.driver, reactor=reactor,
                                           config=live_config, run_blocking=run_blocking,
                                           docker=docker)

    node = Node(config, clock=reactor, run_blocking=run_blocking, panel=panel,
                activity=activity, config_path=config_path, docker=docker,
                cooperator=cooperator,
                make_environment=make_environment)

    if fatal is None:
        def fatal(message: str) -> None:
            # twistd has no exit status of its own: leave with 1 once the
            # reactor has shut down, as upstream exits when boot fails.
            reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
            reactor.stop()

    service = WingsService(node, fatal=fatal)
    ThreadPoolService(pool).setServiceParent(service)
    if isinstance(make_environment, DockerEnvironments):
        # Checks the engine at boot; at shutdown lets go of the containers
        # (they keep running) and closes the client.
        make_environment.setServiceParent(service)
    elif docker is not None:
        _Closing(docker.close).setServiceParent(service)
    _Closing(lambda: _stopped(cooperator)).setServiceParent(service)
    site = build_site(node, access_log=debug or config.debug, reactor=reactor)
    listener = _Listener(strports.service(listen or listen_description(config), site,
                                          reactor=reactor))
    listener.setServiceParent(service)
    return service


class _Listener(Service):
    """
    The API listener; a port that cannot be bound ends start-up with one
    line instead of a traceback.
    """

    def __init__(self, inner: IService) -> None:
        self.inner = inner
        self.setName("api")

    def privilegedStartService(self) -> None:
        """
        Bind now (before privileges are dropped), failing loudly and briefly.
        """
        super().privilegedStartService()
        try:
            self.inner.privilegedStartService()
        except CannotListenError as e:
            raise SystemExit("wings: cannot listen on {}:{}: {}".format(
                e.interface or "*", e.port, e.socketError))

    def startService(self) -> None:
        """
        Start serving.
        """
        super().startService()
        self.inner.startService()

    def stopService(self) -> Deferred[None] | None:
        """
        Stop listening.
        """
        super().stopService()
        stopped: Deferred[None] | None = self.inner.stopService()
        return stopped


def _stopped(cooperator: Cooperator) -> Deferred[None]:
    """
    Stop ``cooperator`` (its running tasks fail with ``SchedulerStopped``).
    """
    cooperator.stop()
    return succeed(None)


class _Closing(Service):
    """
    Runs ``close`` (e.g. the Docker client's idle connections) at shutdown.
    """

    def __init__(self, close: Callable[[], Deferred[None]]) -> None:
        self._close = close

    def stopService(self) -> Deferred[None]:
        """
        Close; shutdown waits for it.
        """
        super().stopService()
        return self._close()


def makeService(options: Options) -> IService:
    """
    The twistd entry point.
    """
    from twisted.internet import reactor as global_reactor

    # The global reactor provides every interface IReactor names.
    reactor = cast(IReactor, global_reactor)
    tune_malloc()
    path = os.path.abspath(options["config"])
    try:
        config = resolve_timezone(resolve_system_user(load_config(path)))
    except (ConfigError, SystemUserError, TimezoneError) as e:
        raise SystemExit("wings: {}".format(e))
    try:
        return build_service(config, reactor, config_path=path, listen=options["listen"],
                             insecure=bool(options["ignore-certificate-errors"]),
                             debug=bool(options["debug"]))
    except (OSError, DockerError) as e:
        raise SystemExit("wings: {}".format(e))
