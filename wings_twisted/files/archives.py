"""
Archive jobs of the file routes (``api.md`` §5.8, §5.9) and the fork's archive tasks (§8.15,
§8.16): ``ArchiveTasks`` runs `create_archive` / `decompress` of ``archive`` on worker threads,
for a request (foreground) or as a task the caller polls (``foreground: false``).

* At most `MAX_RUNNING` archive jobs run at once on the node (project): each holds a thread of the
  shared pool for as long as it runs, and a few must stay free for every other route.  Jobs beyond
  that wait, their tasks in ``pending``.
* A foreground job is cancelled when its caller goes away (the render adapter cancels the
  Deferred): the worker stops at the next member or piece and removes what it was writing.
* A task is listed in creation order; a finished one (``completed`` / ``failed``) is forgotten
  `RETENTION` seconds after it finished.

Task object (§8.15), as ``GET files/archive-tasks`` and ``archive-status`` render it::

    {"identifier": "<uuid>", "server_id": "<server uuid>", "type": "compress",
     "status": "completed", "root_path": "/", "files": ["world"],
     "result_file": "archive-2024-03-17T145830Z.tar.gz",
     "started_at": "2024-03-17T14:58:30Z", "finished_at": "2024-03-17T14:58:41Z"}

(``file`` instead of ``files`` for ``decompress``; ``error`` when failed.)

Websocket events on the server's bus, each argument a JSON string (``websocket.md``, fork
additions): ``archive started`` ``{"identifier", "type", "root_path"}``; ``archive completed``
``{"identifier", "type"}`` plus, for compress, ``"result": {"name", "size", "mime"}``;
``archive failed`` ``{"identifier", "type", "error"}``.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..archive import ExtractStats, create_archive, decompress, gzip_level
from ..fs import clean_path
from ..fs.info import TAR_GZIP, rfc3339, stat_object
from ..node import Node
from ..servers.server import Server

__all__ = ["MAX_RUNNING", "RETENTION", "ArchiveTask", "ArchiveTasks"]

log = Logger()

#: Seconds a finished task stays listed (§8.15).
RETENTION = 300.0
#: Archive jobs running at once on the node (project).
MAX_RUNNING = 4


@dataclass
class ArchiveTask:
    """
    One ``compress`` or ``decompress`` task of a server.
    """

    identifier: str
    server_id: str
    type: str
    root_path: str
    started_at: float
    files: list[str] | None = None
    file: str | None = None
    status: str = "pending"
    result_file: str | None = None
    error: str | None = None
    finished_at: float | None = None
    result: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """
        The task object of §8.15.
        """
        body: dict[str, Any] = {
            "identifier": self.identifier,
            "server_id": self.server_id,
            "type": self.type,
            "status": self.status,
            "root_path": self.root_path,
        }
        if self.files is not None:
            body["files"] = list(self.files)
        if self.file is not None:
            body["file"] = self.file
        if self.result_file is not None:
            body["result_file"] = self.result_file
        if self.error is not None:
            body["error"] = self.error
        body["started_at"] = rfc3339(self.started_at)
        if self.finished_at is not None:
            body["finished_at"] = rfc3339(self.finished_at)
        return body


def _cancellable(node: Node, fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
    """
    ``fn(*args, cancel=event)`` on a worker thread; cancelling the result sets the event, so the
    job stops at its next check and cleans up behind itself.
    """
    cancel = threading.Event()
    outer: Deferred[Any] = Deferred(lambda _: cancel.set())
    inner: Deferred[Any] = node.run_blocking(fn, *args, cancel=cancel)

    def forward(result: Any) -> None:
        if not outer.called:
            outer.callback(result)
        elif isinstance(result, Failure):
            log.info("An archive job ended after it was cancelled: {error}",
                     error=result.getErrorMessage())

    inner.addBoth(forward)
    return outer


class ArchiveTasks:
    """
    The node's archive jobs and tasks.
    """

    def __init__(self, node: Node) -> None:
        self._node = node
        self._tasks: dict[str, ArchiveTask] = {}
        self._running = DeferredSemaphore(MAX_RUNNING)

    # -- the jobs ------------------------------------------------------------------------------

    async def compress(self, server: Server, root: str, files: Sequence[str]) -> dict[str, Any]:
        """
        Write the archive of ``files`` into ``root`` (§5.8 steps 3–5) once a job slot is free;
        the stat object of the archive, ``mime`` forced to ``application/tar+gzip``.
        """
        async with self._running:
            return await self._compress(server, root, files)

    async def decompress(self, server: Server, root: str, file: str) -> ExtractStats:
        """
        Extract ``root/file`` into ``root`` (§5.9 steps 1–5) once a job slot is free.
        """
        async with self._running:
            return await self._decompress(server, root, file)

    async def _compress(self, server: Server, root: str, files: Sequence[str]) -> dict[str, Any]:
        level = gzip_level(self._node.config.system.backups.compression_level)
        now = self._node.clock.seconds()
        path, st = await _cancellable(self._node, _compress_job, server, root, list(files),
                                      level, now)
        return stat_object(path.rpartition("/")[2], st, TAR_GZIP)

    async def _decompress(self, server: Server, root: str, file: str) -> ExtractStats:
        stats: ExtractStats = await _cancellable(self._node, _decompress_job, server, root, file)
        return stats

    # -- tasks ---------------------------------------------------------------------------------

    def tasks(self, server: str) -> list[ArchiveTask]:
        """
        The tasks of ``server``, in creation order.
        """
        return [task for task in self._tasks.values() if task.server_id == server]

    def get(self, server: str, identifier: str) -> ArchiveTask | None:
        """
        The task ``identifier`` if it belongs to ``server``.
        """
        task = self._tasks.get(identifier)
        return task if task is not None and task.server_id == server else None

    def start_compress(self, server: Server, root: str, files: Sequence[str],
                       describe: Callable[[BaseException], str]) -> ArchiveTask:
        """
        Run `compress` as a task (async mode of §5.8); ``describe`` gives the ``error`` text of a
        failure.
        """
        task = self._new(server, "compress", root, files=list(files))

        async def job() -> None:
            result = await self._compress(server, root, files)
            task.result_file = result["name"]
            task.result = {"name": result["name"], "size": result["size"], "mime": result["mime"]}

        self._run(server, task, job, describe)
        return task

    def start_decompress(self, server: Server, root: str, file: str,
                         describe: Callable[[BaseException], str]) -> ArchiveTask:
        """
        Run `decompress` as a task (async mode of §5.9).
        """
        task = self._new(server, "decompress", root, file=file)

        async def job() -> None:
            await self._decompress(server, root, file)

        self._run(server, task, job, describe)
        return task

    def _new(self, server: Server, kind: str, root: str, **extra: Any) -> ArchiveTask:
        task = ArchiveTask(str(uuid.uuid4()), server.uuid, kind, "/" + clean_path(root),
                           self._node.clock.seconds(), **extra)
        self._tasks[task.identifier] = task
        return task

    def _run(self, server: Server, task: ArchiveTask, job: Callable[[], Any],
             describe: Callable[[BaseException], str]) -> None:
        async def run() -> None:
            try:
                async with self._running:
                    task.status = "processing"
                    _publish(server, "archive started", {"identifier": task.identifier,
                                                         "type": task.type,
                                                         "root_path": task.root_path})
                    await job()
            except CancelledError:
                self._finish(server, task, "The server was deleted.")
                raise
            except Exception as e:
                self._finish(server, task, describe(e))
            else:
                self._finish(server, task, None)

        server.track(run)

    def _finish(self, server: Server, task: ArchiveTask, error: str | None) -> None:
        task.finished_at = self._node.clock.seconds()
        body: dict[str, Any] = {"identifier": task.identifier, "type": task.type}
        if error is None:
            task.status = "completed"
            if task.type == "compress":
                body["result"] = task.result
            _publish(server, "archive completed", body)
        else:
            task.status = "failed"
            task.error = error
            body["error"] = error
            _publish(server, "archive failed", body)
        self._node.clock.callLater(RETENTION, self._tasks.pop, task.identifier, None)


def _publish(server: Server, name: str, body: dict[str, Any]) -> None:
    server.events.publish(name, json.dumps(body, separators=(",", ":")))


def _compress_job(server: Server, root: str, files: list[str], level: int, now: float, *,
                  cancel: threading.Event) -> tuple[str, os.stat_result]:
    return create_archive(server.volume, root, files, level=level, now=now, cancel=cancel)


def _decompress_job(server: Server, root: str, file: str, *,
                    cancel: threading.Event) -> ExtractStats:
    return decompress(server.volume, root, file, cancel=cancel)
