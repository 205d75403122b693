"""
``twistd wings``: command-line options and the composition root.

This is the only module that imports the global reactor, inside
``makeService``.  ``build_service`` takes every effect as an argument so
tests can build the daemon around a fake reactor or a real one on port 0.
The ``wings`` command (``cli``) runs the same service through
:func:`daemon_service`.

A configuration that cannot be used stops start-up with exactly one line on
standard error and exit status 1 (``wings: <file>: <key>: <problem>``):
loading and the boot checks of ``config.checks`` happen in
:func:`daemon_service` and raise ``SystemExit`` (raising ``UsageError`` from
``postOptions`` would make twistd print its whole help text first).

Logging (``logs``): once the configuration is read, ``wings.log`` in
``system.log_directory`` receives every event at the configured level,
SIGHUP reopens it (logrotate's ``postrotate``), and
``/etc/logrotate.d/wings`` is installed when ``system.enable_log_rotate``
says so.  The console is twistd's (``twistd -n wings``) or the ``wings``
command's.  ``twistd wings`` without ``-n`` is refused: the daemon runs in
the foreground under systemd (or any supervisor), as upstream does.
"""

from __future__ import annotations

import os
import sys
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
# The class HTTPConnectionPool._factory names (pinned in test_twisted_internals).
from twisted.web.client import _HTTP11ClientFactory

from . import __version__
from .activity import ActivityLog
from .blocking import RunBlocking, thread_pool_runner
from .config import Config, ConfigError, check_for_boot, load_config
from .config import ensure_directories as _ensure_directories
from .environment.docker import DockerClient, DockerError
from .environment.factories import DockerEnvironments, ProcessEnvironments, no_environment
from .logs import LogFile, start_file_logging
from .node import Node, Outgoing
from .panel import PanelClient
from .reactor import IReactor
from .servers.context import EnvironmentFactory
from .backups import BackupServices
from .service import ThreadPoolService, WingsService
from .sftp.service import SftpService
from .sysuser import SystemUserError, resolve_system_user
from .timezone import TimezoneError, resolve_timezone
from .web.site import build_site

log = Logger()

DEFAULT_CONFIG = "/etc/pterodactyl/config.yml"
# Twisted's default accept backlog (50) overflows when a browser and a
# download manager open many connections at once; the kernel caps this at
# net.core.somaxconn.
BACKLOG = 1024
#: Worker threads of the backup pool (backups, restores; system.backups.max_concurrent limits
#: the backups among them).
BACKUP_THREADS = 16


def raise_open_files(getrlimit: Callable[[int], tuple[int, int]] | None = None,
                     setrlimit: Callable[[int, tuple[int, int]], None] | None = None) -> int:
    """
    Raise the soft ``RLIMIT_NOFILE`` to the hard limit (logged), so that a flood of
    connections does not exhaust the descriptors the daemon needs for the Panel, its files and
    its children (the default soft limit is often 1,024).  Returns the soft limit now in force.
    """
    import resource

    get = getrlimit or resource.getrlimit
    put = setrlimit or resource.setrlimit
    soft, hard = get(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        # Linux refuses an infinite NOFILE; its real ceiling is nr_open.
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            put(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError) as e:
            log.warn("Could not raise the open-file limit from {soft} to {hard}: {error}",
                     soft=soft, hard=hard, error=str(e))
            return soft
        log.info("Raised the open-file limit from {soft} to {hard}", soft=soft, hard=hard)
        return hard
    return soft


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

    def opt_version(self) -> None:
        """
        Print the daemon's version and exit.
        """
        print("wings-twisted {}".format(__version__))
        sys.exit(0)


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

    :raises ConfigError: naming the key of a directory that cannot be made.
    """
    _ensure_directories(config)


class _QuietClientFactory(_HTTP11ClientFactory):
    """
    The pool's per-connection factory without "Starting factory" lines.
    """

    noisy = False


class QuietConnectionPool(HTTPConnectionPool):
    """
    An ``HTTPConnectionPool`` whose connections are not announced in the
    log (one pair of lines per Panel call otherwise).
    """

    _factory = _QuietClientFactory


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
    policy = _InsecurePolicy() if insecure else BrowserLikePolicyForHTTPS()
    if http is None:
        connections = QuietConnectionPool(reactor, persistent=True)
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
                make_environment=make_environment,
                outgoing=Outgoing(reactor, reactor.nameResolver, policy))

    if fatal is None:
        def fatal(message: str) -> None:
            # twistd has no exit status of its own: leave with 1 once the
            # reactor has shut down, as upstream exits when boot fails.
            reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
            reactor.stop()

    # Backups and restores run on a pool of their own (backups.md §12): long archive jobs never
    # starve the default pool; max_concurrent is enforced by BackupServices' slots.
    backup_pool = ThreadPool(minthreads=0, maxthreads=BACKUP_THREADS, name="wings-backups")
    backups = BackupServices(node, run_job=thread_pool_runner(reactor, backup_pool),
                             agent=Agent(reactor, contextFactory=policy,
                                         pool=QuietConnectionPool(reactor, persistent=True)),
                             call_from_thread=getattr(reactor, "callFromThread", None))
    sftp = SftpService(node, reactor, fatal=fatal)
    service = WingsService(node, fatal=fatal, before_boot=[backups.start], after_boot=[sftp.start])
    ThreadPoolService(pool).setServiceParent(service)
    ThreadPoolService(backup_pool).setServiceParent(service)
    sftp.setServiceParent(service)
    if isinstance(make_environment, DockerEnvironments):
        # Checks the engine at boot; at shutdown lets go of the containers
        # (they keep running) and closes the client.
        make_environment.setServiceParent(service)
    elif docker is not None:
        _Closing(docker.close).setServiceParent(service)
    if isinstance(make_environment, ProcessEnvironments):
        # Once the servers stopped: the daemon's empty cgroup base goes.
        _Closing(make_environment.release).setServiceParent(service)
    _Closing(lambda: _stopped(cooperator)).setServiceParent(service)
    site = build_site(node, access_log=debug or config.debug, reactor=reactor, backups=backups)
    description = listen or listen_description(config)
    try:
        inner = strports.service(description, site, reactor=reactor)
    except ValueError as e:
        raise ConfigError("invalid listener {!r}: {}".format(description, e)) from None
    _Listener(inner).setServiceParent(service)
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


def load(path: str) -> Config:
    """
    Read, check and settle the configuration at ``path`` for a boot: the
    boot checks, the system user, the timezone, the directories.

    :raises SystemExit: one line, ``wings: <problem>``.
    """
    if not os.path.lexists(path):
        raise SystemExit("wings: {}: no configuration file: run the Panel's Auto-Deploy "
                         "command (wings configure ...) or copy the node's configuration "
                         "there".format(path))
    try:
        config = load_config(path)
        check_for_boot(config, source=path)
        config = resolve_timezone(resolve_system_user(config))
        _ensure_directories(config, source=path)
    except (ConfigError, SystemUserError, TimezoneError) as e:
        raise SystemExit("wings: {}".format(e))
    return config


def start_logging(config: Config, debug: bool, reactor: IReactor) -> LogFile:
    """
    ``wings.log`` and its rotation (``logs.start_file_logging``).

    :raises SystemExit: the log file cannot be opened.
    """
    directory = config.system.log_directory
    try:
        return start_file_logging(directory, debug=debug, reactor=reactor,
                                  rotate=config.system.enable_log_rotate)
    except OSError as e:
        raise SystemExit("wings: system.log_directory: cannot open {}: {}".format(
            os.path.join(directory, "wings.log"), e.strerror or e))


def daemon_service(options: Options, reactor: IReactor) -> tuple[IService, bool]:
    """
    The daemon for parsed ``options``, with its logging started; also
    whether it logs at debug level (``--debug`` or the ``debug`` key).

    :raises SystemExit: one line, for anything that stops start-up.
    """
    tune_malloc()
    path = os.path.abspath(options["config"])
    config = load(path)
    debug = bool(options["debug"]) or config.debug
    start_logging(config, debug, reactor)
    raise_open_files()
    try:
        service = build_service(config, reactor, config_path=path, listen=options["listen"],
                                insecure=bool(options["ignore-certificate-errors"]),
                                debug=debug)
    except (OSError, DockerError, ConfigError) as e:
        raise SystemExit("wings: {}".format(e))
    return service, debug


def makeService(options: Options) -> IService:
    """
    The twistd entry point (``twistd -n wings``).
    """
    parent = getattr(options, "parent", None)
    if parent is not None and not parent.get("nodaemon"):
        raise SystemExit("wings: runs in the foreground: use `wings` or `twistd -n wings` "
                         "(systemd keeps it running)")
    from twisted.internet import reactor as global_reactor

    # The global reactor provides every interface IReactor names.
    service, _ = daemon_service(options, cast(IReactor, global_reactor))
    return service
