"""
``WingsService``: the daemon as one Twisted service.

It owns the HTTP listener, the worker thread pool, the periodic jobs
(single-use token purge every 5 minutes, activity flush) and the boot
sequence of panel.md §3.1–§3.2: load every server from the panel (fatal when
the panel cannot be reached, as upstream), create missing volume
directories, register the servers, then ``POST /servers/reset`` in the
background.
"""

from __future__ import annotations

from typing import Callable

from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from .node import Node
from .server import CANONICAL_UUID, ServerConfigError

log = Logger()

TOKEN_PURGE_INTERVAL = 300.0


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

    def __init__(self, node: Node, *, fatal: Callable[[str], None]) -> None:
        super().__init__()
        self.node = node
        self._fatal = fatal
        self.booted: Deferred[None] | None = None
        purge = TimerService(TOKEN_PURGE_INTERVAL, node.tokens.purge)
        purge.clock = node.clock
        purge.setServiceParent(self)
        interval = node.config.system.activity_send_interval
        flush = TimerService(max(interval, 1), self._flush_activity)
        flush.clock = node.clock
        flush.setServiceParent(self)

    def _flush_activity(self) -> Deferred[int]:
        d = Deferred.fromCoroutine(self.node.activity.flush())
        d.addErrback(lambda f: log.failure("Activity flush failed", f))
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
        entries = await node.panel.get_servers(node.config.remote_query.boot_servers_per_page)
        for entry in entries:
            uuid = entry.get("uuid")
            if not isinstance(uuid, str) or not CANONICAL_UUID.match(uuid):
                log.warn("Skipping a server entry with an invalid uuid: {uuid!r}", uuid=uuid)
                continue
            if uuid in node.registry:
                continue
            try:
                server = node.server_from_panel(uuid, entry)
                await node.run_blocking(server.volume.ensure_root)
            except (ServerConfigError, OSError) as e:
                log.error("Skipping server {uuid}: {error}", uuid=uuid, error=str(e))
                continue
            node.registry.add(server)
        log.info("Loaded {count} servers from the panel", count=len(node.registry))
        reset = Deferred.fromCoroutine(node.panel.reset_servers())
        reset.addErrback(lambda f: log.failure("Resetting server states on the panel failed", f))

    def _boot_failed(self, failure: Failure) -> None:
        log.failure("failed to load server configurations", failure)
        self._fatal("failed to load server configurations: {}".format(failure.getErrorMessage()))
