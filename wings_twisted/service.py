"""
``WingsService``: the daemon as one Twisted service.

It owns the HTTP listener, the worker thread pool, the periodic jobs
(single-use token purge every 5 minutes, the two activity flushes) and the boot
sequence of panel.md §3.1–§3.2 and lifecycle.md §1.2–§1.5: load every
server from the panel (fatal when the panel cannot be reached, as
upstream), create missing volume directories, register the servers,
restore the states recorded in ``states.json`` (servers that were running
are started again, four at a time), start what waits for boot (the SFTP
listener), then ``POST /servers/reset`` in the background.

At shutdown ``states.json`` is written first, then every running process
that cannot outlive the daemon (``IEnvironment.outlives_daemon``: the
process environment's) is stopped the way its egg says (ten seconds, then
killed), and the file records it as running so the next boot starts it
again.  Containers keep running; the next boot adopts them.
"""

from __future__ import annotations

import os
from typing import Any, Awaitable, Callable, Sequence

from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from .environment import EnvironmentError as EnvError
from .node import Node
from .panel import PanelError
from .servers.build import build_server
from .servers.lifecycle import SyncError, power, sync
from .servers.power import PowerError
from .servers.server import CANONICAL_UUID, Server, ServerConfigError
from .servers.store import RESTORE_CONCURRENCY, STATES_INTERVAL, read_states, restore_action, \
    states_of, write_states

log = Logger()

TOKEN_PURGE_INTERVAL = 300.0
#: Grace given to each running process at shutdown before it is killed.
SHUTDOWN_STOP_BUDGET = 10.0


class ThreadPoolService(Service):
    """
    Starts and stops the worker pool with the application.
    """

    def __init__(self, pool: ThreadPool) -> None:
        self.pool = pool

    def startService(self) -> None:
        """
        Start the worker threads.
        """
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        """
        Let running jobs finish and stop the threads.
        """
        super().stopService()
        self.pool.stop()


class WingsService(MultiService):
    """
    The whole daemon.
    """

    def __init__(self, node: Node, *, fatal: Callable[[str], None],
                 before_boot: Sequence[Callable[[], Awaitable[None]]] = (),
                 after_boot: Sequence[Callable[[], Awaitable[None]]] = ()) -> None:
        """
        :param before_boot: run in order before any server is loaded (the
            backup index, which decides which server owns which backup, is
            read before a server's routes can answer).
        :param after_boot: started in order once the servers are loaded and
            their states restored, before the panel's reset (the SFTP
            listener); each reports its own failures.
        """
        super().__init__()
        self.node = node
        self._fatal = fatal
        self._before_boot = list(before_boot)
        self._after_boot = list(after_boot)
        self.booted: Deferred[None] | None = None
        purge = TimerService(TOKEN_PURGE_INTERVAL, node.tokens.purge)
        purge.clock = node.clock
        purge.setServiceParent(self)
        interval = node.config.system.activity_send_interval
        flush = TimerService(max(interval, 1), self._flush_activity)
        flush.clock = node.clock
        flush.setServiceParent(self)
        sftp_flush = TimerService(max(interval, 1), self._flush_sftp_activity)
        sftp_flush.clock = node.clock
        sftp_flush.setServiceParent(self)
        self._states_timer = TimerService(STATES_INTERVAL, self._save_states)
        self._states_timer.clock = node.clock
        self._restored = False

    @property
    def states_path(self) -> str:
        """
        ``<root_directory>/states.json``.
        """
        return os.path.join(self.node.config.system.root_directory, "states.json")

    def _save_states(self) -> Deferred[None]:
        d = self.node.run_blocking(write_states, self.states_path, states_of(self.node.registry))
        d.addErrback(lambda f: log.failure("Writing states.json failed", f))
        return d

    def _flush_activity(self) -> Deferred[int]:
        d = Deferred.fromCoroutine(self.node.activity.flush())
        d.addErrback(lambda f: log.failure("Activity flush failed", f))
        return d

    def _flush_sftp_activity(self) -> Deferred[int]:
        d = Deferred.fromCoroutine(self.node.activity.flush_sftp())
        d.addErrback(lambda f: log.failure("SFTP activity flush failed", f))
        return d

    def startService(self) -> None:
        """
        Start the children (listener first), then boot in the background.
        """
        super().startService()
        self.booted = Deferred.fromCoroutine(self.boot())
        self.booted.addErrback(self._boot_failed)

    async def boot(self) -> None:
        """
        Load and register every server of this node (panel.md §3.1).
        """
        node = self.node
        for prepare in self._before_boot:
            await prepare()
        entries = await node.panel.get_servers(node.config.remote_query.boot_servers_per_page)
        for entry in entries:
            uuid = entry.get("uuid")
            if not isinstance(uuid, str) or not CANONICAL_UUID.match(uuid):
                log.warn("Skipping a server entry with an invalid uuid: {uuid!r}", uuid=uuid)
                continue
            if uuid in node.registry:
                continue
            try:
                server = build_server(node, uuid, entry)
                await node.run_blocking(server.volume.ensure_root)
            except (ServerConfigError, OSError) as e:
                log.error("Skipping server {uuid}: {error}", uuid=uuid, error=str(e))
                continue
            await self._remove_leftovers(server)
            node.registry.add(server)
        log.info("Loaded {count} servers from the panel", count=len(node.registry))
        await self.restore_states()
        for start in self._after_boot:
            await start()
        reset = Deferred.fromCoroutine(node.panel.reset_servers())
        reset.addErrback(lambda f: log.failure("Resetting server states on the panel failed", f))

    async def _remove_leftovers(self, server: Server) -> None:
        """
        Temporary files of uploads cut short by a crash (nothing writes to the volume yet: the
        server is not registered).
        """
        try:
            removed = await self.node.run_blocking(server.volume.remove_leftovers)
        except Exception:
            log.failure("Removing leftovers in the volume of {uuid} failed", uuid=server.uuid)
            return
        if removed:
            log.info("Removed {count} temporary file(s) left in the volume of {uuid}",
                     count=removed, uuid=server.uuid)

    async def restore_states(self) -> None:
        """
        lifecycle.md §1.4 for every registered server, four at a time; then
        start rewriting ``states.json`` every 60 seconds.
        """
        node = self.node
        recorded = await node.run_blocking(read_states, self.states_path)
        semaphore = DeferredSemaphore(RESTORE_CONCURRENCY)
        restores = [semaphore.run(self._restore, server, recorded.get(server.uuid))
                    for server in node.registry]
        await DeferredList(restores, consumeErrors=True)
        self._restored = True
        if self.running and not self._states_timer.running:
            self._states_timer.setServiceParent(self)

    async def _restore(self, server: Server, recorded: str | None) -> None:
        try:
            running = await server.is_running()
        except EnvError as e:
            log.warn("Checking whether {uuid} runs failed: {error}", uuid=server.uuid,
                     error=str(e))
            running = False
        except Exception:
            log.failure("Checking whether {uuid} runs failed", uuid=server.uuid)
            running = False
        action = restore_action(running, recorded)
        try:
            if action == "start":
                log.info("Starting {uuid}: it was {state} before", uuid=server.uuid,
                         state=recorded)
                await power(server, "start")
            elif action == "adopt" and server.environment is not None:
                # start() of a running process adopts it: state running,
                # output and stats re-attached (IEnvironment.start).
                await server.environment.start()
                await sync(server)
        except (PowerError, SyncError, EnvError) as e:
            log.error("Restoring the state of {uuid} failed: {error}", uuid=server.uuid,
                      error=str(e))
        except Exception:
            log.failure("Restoring the state of {uuid} failed", uuid=server.uuid)

    def stopService(self) -> Deferred[Any]:
        """
        Record the states, stop every process, then the children.
        """
        node = self.node
        node.shutting_down = True
        if self._restored:
            try:
                write_states(self.states_path, states_of(node.registry))
            except OSError as e:
                log.error("Writing states.json failed: {error}", error=str(e))
        stops = [Deferred.fromCoroutine(_stop_at_shutdown(server)) for server in node.registry
                 if server.environment is not None and server.state != "offline"
                 and not server.environment.outlives_daemon]
        d: Deferred[Any] = DeferredList(stops, consumeErrors=True)
        d.addCallback(lambda _: super(WingsService, self).stopService())
        return d

    def _boot_failed(self, failure: Failure) -> None:
        """
        End the daemon: a Panel that refused or could not be reached is one
        line naming the URL and the answer (no traceback); anything else is
        a bug and logged with its traceback.
        """
        error = failure.value
        if isinstance(error, PanelError):
            url = error.url or self.node.panel.base + "/api/remote/servers"
            log.critical("failed to load server configurations from {url}: {error}",
                         url=url, error=str(error))
            message = "failed to load server configurations from {}: {}".format(url, error)
        else:
            message = "failed to load server configurations: {}".format(
                failure.getErrorMessage())
            log.failure("failed to load server configurations", failure)
        self._fatal(message)


async def _stop_at_shutdown(server: Server) -> None:
    env = server.environment
    if env is None:
        return
    try:
        await env.wait_for_stop(SHUTDOWN_STOP_BUDGET, True)
    except Exception:
        log.failure("Stopping {uuid} at shutdown failed", uuid=server.uuid)
