"""
The node's backups: creating (backups.md §4, §6, §7), deleting (§9) and the state they share
(the ownership index, the generations running, the slots of ``max_concurrent``, the dedicated
worker pool).  Restores are in ``restore.py``, driven from here.

A backup (`BackupServices.create`) answers at once and runs as background work of its server
(``Server.track``: deleting the server cancels it):

1. the index records it (``generating``) and a slot of ``max_concurrent`` is awaited;
2. on the backup pool's thread: the ignore rules (``storage.resolve_rules``) and the archive
   (``storage.write_archive``: staging file, limiter, SHA-1, rename);
3. ``s3``: the archive stays in its staging file, the Panel's part URLs are fetched, the parts
   uploaded (``s3.upload_parts``), and the staging file removed whatever happens;
4. the report to the Panel (``report``), then the websocket events: success only after the
   Panel accepted the success report; when that report fails the local archive is removed and
   nothing is published (§7.1); a failure is reported and published in every case, including a
   cancellation (project: upstream's cancelled context loses that report);
5. the index is marked ``complete``, or its entry removed; the slot is released.

A cancelled generation sets its ``threading.Event``; the writer thread stops at its next piece
and removes its staging file, and the job waits for that thread before it cleans up, so a file
renamed into place at the last moment is removed too.

Thread rules: blocking work runs through ``run_job`` (a ``ThreadPool`` of its own, so long
archives never starve the default pool); everything else, websocket publications included, runs
on the reactor thread.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Cooperator
from twisted.logger import Logger
from twisted.web.iweb import IAgent

from ..archive import Cancelled, gzip_level
from ..blocking import RunBlocking
from ..fs import FsError
from ..node import Node
from ..panel import PanelError
from ..servers.server import Server
from . import report, storage
from .errors import (
    ALREADY_GENERATING,
    BACKUP_WHILE_RESTORING,
    BackupConflict,
    BackupNotFound,
)
from .index import BackupIndex
from .limiter import make_bucket
from .report import BackupResult
from .s3 import S3Error, upload_parts
from .slots import Slots

__all__ = ["ADAPTERS", "BackupServices", "Generation", "run_cancellable"]

log = Logger()

ADAPTERS = ("wings", "s3")
#: Failures that are the world's, not the daemon's: logged without a traceback.
EXPECTED = (S3Error, PanelError, OSError, FsError, Cancelled)
#: How long a DELETE waits for a cancelled generation to stop before answering.
CANCEL_WAIT = 10.0


@dataclass
class Generation:
    """
    A backup being generated.
    """

    uuid: str
    server: str
    adapter: str
    #: The request's ``ignore`` string (§4.3).
    ignore: str = ""
    cancel: threading.Event = field(default_factory=threading.Event)
    task: Deferred[Any] | None = None
    #: Fires (with ``None``) once the job has finished, whatever happened.
    ended: Deferred[None] = field(default_factory=Deferred)


async def run_cancellable(run_job: RunBlocking, event: threading.Event,
                          fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """
    ``fn`` through ``run_job``; cancelling sets ``event`` (the thread stops at its next piece)
    and waits for the thread itself before raising ``CancelledError``, so that nothing the
    thread still uses is released under it.
    """
    job = run_job(fn, *args, **kwargs)
    done: Deferred[Any] = Deferred(lambda _: event.set())
    job.addBoth(lambda result: done.callback(result) if not done.called else result)
    try:
        return await done
    except CancelledError:
        finished: Deferred[None] = Deferred()
        job.addBoth(lambda _: finished.callback(None))
        await finished
        raise


class BackupServices:
    """
    Backups of one node.

    :param run_job: runs blocking backup and restore work (the backup pool; the node's
        ``run_blocking`` by default).
    :param agent: the HTTP client for S3 parts and restore downloads' redirects (built from the
        node's outgoing connections when not given).
    :param call_from_thread: runs a callable on the reactor thread (restore progress lines);
        a direct call by default, right when jobs run inline in tests.
    """

    def __init__(self, node: Node, *, run_job: RunBlocking | None = None,
                 agent: IAgent | None = None,
                 call_from_thread: Callable[..., object] | None = None,
                 index: BackupIndex | None = None) -> None:
        # Nothing of the node is read here: resources are built before (and in tests without)
        # the parts these use.
        self.node = node
        self._run_job = run_job
        self._agent = agent
        self.call_from_thread = call_from_thread if call_from_thread is not None else (
            lambda fn, *args: fn(*args))
        self._index = index
        self.generating: dict[str, Generation] = {}
        self.slots = Slots(lambda: self.node.config.system.backups.max_concurrent)
        #: server uuid -> the restore job running for it (restore.py).
        self.restores: dict[str, Deferred[Any]] = {}

    @property
    def run_job(self) -> RunBlocking:
        """
        Runs blocking backup and restore work (the backup pool, else ``node.run_blocking``).
        """
        return self._run_job if self._run_job is not None else self.node.run_blocking

    @run_job.setter
    def run_job(self, run_job: RunBlocking) -> None:
        self._run_job = run_job

    @property
    def index(self) -> BackupIndex:
        """
        The ownership index (in ``<root_directory>/wings.db`` unless one was given).
        """
        if self._index is None:
            self._index = BackupIndex(
                os.path.join(self.node.config.system.root_directory, "wings.db"),
                self.node.run_blocking)
        return self._index

    # -- start-up ------------------------------------------------------------------------------

    async def start(self) -> None:
        """
        Load the index and remove staging files a crash left (boot).
        """
        directory = self.directory
        removed = await self.run_job(storage.sweep_staging, directory)
        for name in removed:
            log.info("Removed the unfinished backup {name} left by a previous run", name=name)
        await self.index.load()

    @property
    def directory(self) -> str:
        """
        ``system.backup_directory``.
        """
        return self.node.config.system.backup_directory

    @property
    def agent(self) -> IAgent:
        """
        The HTTP client for S3 (verifies certificates unless ``--ignore-certificate-errors``).
        """
        if self._agent is None:
            from twisted.web.client import Agent
            outgoing = self.node.outgoing
            if outgoing is None:
                raise RuntimeError("this node makes no outgoing connections")
            self._agent = Agent(outgoing.connector, contextFactory=outgoing.tls)
        return self._agent

    @property
    def cooperator(self) -> Cooperator:
        """
        The node's cooperator (S3 part bodies).
        """
        return self.node.cooperator

    # -- lookups ---------------------------------------------------------------------------------

    def find(self, server: Server, backup_uuid: str) -> str:
        """
        The path of a local archive this server may use (§3): not recorded for another server,
        not being generated.

        :raises BackupNotFound: otherwise.
        """
        if self.index.foreign(backup_uuid, server.uuid) or backup_uuid in self.generating:
            raise BackupNotFound()
        path = storage.locate(self.directory, server.uuid, backup_uuid)
        if path is None:
            raise BackupNotFound()
        return path

    def servable(self, server_uuid: str, backup_uuid: str) -> bool:
        """
        Whether ``/download/backup`` may serve this backup for this server (downloads-uploads.md
        §4 steps 3 and 7).
        """
        return (not self.index.foreign(backup_uuid, server_uuid)
                and backup_uuid not in self.generating)

    # -- creating --------------------------------------------------------------------------------

    def create(self, server: Server, adapter: str, backup_uuid: str, ignore: str) -> Generation:
        """
        Start a backup (§4.1): checks, then the background job.

        :raises BackupConflict: the same UUID is generating, or the server is restoring.
        """
        if backup_uuid in self.generating:
            raise BackupConflict(ALREADY_GENERATING)
        if server.occupancy.state == "restoring":
            raise BackupConflict(BACKUP_WHILE_RESTORING)
        generation = Generation(backup_uuid, server.uuid, adapter, ignore)
        self.generating[backup_uuid] = generation
        self.index.record(backup_uuid, server.uuid, adapter, self.node.clock.seconds())
        generation.task = server.track(self._backup, server, generation)
        self.publish_fork(server, report.STARTED, backup_uuid)
        return generation

    async def _thread(self, generation: Generation, fn: Callable[..., Any], *args: Any) -> Any:
        return await run_cancellable(self.run_job, generation.cancel, fn, *args)

    async def _backup(self, server: Server, generation: Generation) -> None:
        result: BackupResult | None = None
        held = False
        try:
            await self.slots.acquire()
            held = True
            result = await self._generate(server, generation)
        except CancelledError:
            log.info("Backup {backup} of {server} was cancelled", backup=generation.uuid,
                     server=server.uuid)
        except EXPECTED as e:
            log.error("Backup {backup} of {server} failed: {error}", backup=generation.uuid,
                      server=server.uuid, error=str(e) or type(e).__name__)
        except Exception as e:
            log.failure("Backup {backup} of {server} failed: {error}", backup=generation.uuid,
                        server=server.uuid, error=str(e))
        finally:
            if held:
                self.slots.release()
        try:
            await self._conclude(server, generation, result)
        finally:
            self.generating.pop(generation.uuid, None)
            generation.ended.callback(None)

    async def _generate(self, server: Server, generation: Generation) -> BackupResult:
        config = self.node.config.system.backups
        level = gzip_level(config.compression_level)
        s3 = generation.adapter == "s3"

        def write() -> storage.Written:
            rules = storage.resolve_rules(server.volume, generation.ignore)
            bucket = make_bucket(config.write_limit)
            return storage.write_archive(server.volume, rules, self.directory, generation.uuid,
                                         level=level, bucket=bucket, cancel=generation.cancel,
                                         rename=not s3)

        written: storage.Written = await self._thread(generation, write)
        if not s3:
            return BackupResult(written.checksum, written.size, None)
        try:
            urls, part_size = await self.node.panel.backup_part_urls(generation.uuid,
                                                                     written.size)
            parts = await upload_parts(self.agent, self.node.clock, self.cooperator, urls,
                                       written.path, written.size, part_size)
        finally:
            await self._remove_file(written.path)
        return BackupResult(written.checksum, written.size, parts)

    async def _remove_file(self, path: str) -> None:
        try:
            await self.run_job(storage.remove_archive, self.directory, path)
        except OSError as e:
            log.warn("Removing {path} failed: {error}", path=path, error=str(e))

    async def _conclude(self, server: Server, generation: Generation,
                        result: BackupResult | None) -> None:
        """
        Report, publish, update the index (§4.2 steps 6–8, §7).
        """
        panel = self.node.panel
        if result is not None:
            try:
                await panel.report_backup(generation.uuid, report.success_report(result))
            except (PanelError, CancelledError) as e:
                log.error("Reporting backup {backup} to the panel failed, removing it: {error}",
                          backup=generation.uuid, error=str(e))
                path = storage.archive_path(self.directory, generation.uuid)
                await self._remove_file(path)
                self.index.remove(generation.uuid)
                return
            self.index.mark(generation.uuid, "complete")
        else:
            self.index.remove(generation.uuid)
            # A failed or cancelled generation leaves nothing (§5.8).
            await self._remove_file(storage.archive_path(self.directory, generation.uuid))
            try:
                await panel.report_backup(generation.uuid, report.failure_report())
            except (PanelError, CancelledError) as e:
                log.error("Reporting the failure of backup {backup} failed: {error}",
                          backup=generation.uuid, error=str(e))
        self.publish(server, generation.uuid, result)

    def publish(self, server: Server, backup_uuid: str, result: BackupResult | None) -> None:
        """
        The websocket events of §7.2 (nothing once the server is deleted).
        """
        if server.occupancy.deleted:
            return
        suffixed = self.node.config.websocket.emit_suffixed_backup_events
        for name, argument in report.result_events(backup_uuid, result, suffixed=suffixed):
            server.events.publish(name, argument)

    def publish_fork(self, server: Server, event: str, backup_uuid: str) -> None:
        """
        One of the fork's extra events (§7.2), when ``websocket.emit_fork_backup_events`` is on.
        """
        if self.node.config.websocket.emit_fork_backup_events and not server.occupancy.deleted:
            server.events.publish(event, report.fork_argument(backup_uuid))

    # -- deleting --------------------------------------------------------------------------------

    async def cancel_generation(self, generation: Generation) -> None:
        """
        Cancel a generation and wait (at most `CANCEL_WAIT` seconds) for its job to end.
        """
        generation.cancel.set()
        if generation.task is not None:
            generation.task.cancel()
        waiting = Deferred[None]()
        generation.ended.addBoth(lambda _: None if waiting.called else waiting.callback(None))
        timer = self.node.clock.callLater(
            CANCEL_WAIT, lambda: None if waiting.called else waiting.callback(None))
        await waiting
        if timer.active():
            timer.cancel()

    async def delete(self, server: Server, backup_uuid: str) -> None:
        """
        ``DELETE .../backup/{uuid}`` (§9.1).

        :raises BackupNotFound: no such archive (or recorded for another server).
        """
        if self.index.foreign(backup_uuid, server.uuid):
            raise BackupNotFound()
        generation = self.generating.get(backup_uuid)
        if generation is not None:
            await self.cancel_generation(generation)
            await self._remove_file(storage.archive_path(self.directory, backup_uuid))
        else:
            path = storage.locate(self.directory, server.uuid, backup_uuid)
            if path is None:
                raise BackupNotFound()
            await self.run_job(storage.remove_archive, self.directory, path)
            self.index.remove(backup_uuid)
        self.publish_fork(server, report.DELETED, backup_uuid)

    async def delete_all(self, server_uuid: str) -> int:
        """
        Every local archive recorded for the server, and Pelican's directory of the server
        (§9.2); generations of the server are cancelled first.  The number of archives removed.
        """
        for generation in [g for g in self.generating.values() if g.server == server_uuid]:
            await self.cancel_generation(generation)
        removed = 0
        for entry in self.index.of_server(server_uuid):
            if entry.adapter != "wings":
                continue
            path = storage.locate(self.directory, server_uuid, entry.uuid)
            if path is not None and await self.run_job(storage.remove_archive, self.directory,
                                                        path):
                removed += 1
            self.index.remove(entry.uuid)
        removed += await self.run_job(storage.remove_server_directory, self.directory,
                                      server_uuid)
        return removed

