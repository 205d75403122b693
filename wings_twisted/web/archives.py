"""
The archive routes (``api.md`` §5.8, §5.9, §8.15, §8.16):

* ``POST files/compress`` ``{"root": "/", "files": ["world", "server.properties"]}`` (the Panel's
  body; the fork adds ``"foreground": false``): 200 with the stat object of the new archive
  (``mime`` ``application/tar+gzip``); 422 without files, 409 when the volume is already over its
  quota, 400 when the archive would not fit (nothing is left behind);
* ``POST files/decompress`` ``{"root": "/", "file": "plugins.zip"}``: 204 once extracted; 400 for a
  format not read here, a RAR archive, a damaged or encrypted archive, a file that does not fit, a
  busy file; 404 for a missing archive or an entry leading out of the volume through a symlink;
* with ``"foreground": false`` both answer 202 ``{"identifier": "<uuid>"}`` after the synchronous
  checks (for decompress: the archive exists and its format is known) and run as a task;
* ``GET files/archive-tasks`` (the server's tasks) and ``GET files/archive-status/{identifier}``
  (one task; 404 ``The requested archive task was not found.``).

``compress`` and ``decompress`` are behind the write guard.  The jobs themselves are in
``files.archives`` (threads, task bookkeeping, websocket events) and ``archive`` (the formats).
"""

from __future__ import annotations

from typing import Any

from twisted.web.resource import IResource
from twisted.web.server import Request

from ..archive import Busy, Cancelled, Damaged, UnknownFormat, Unsupported
from ..archive.extract import identify
from ..files import FileServices
from ..node import Node
from ..servers.server import Server
from .body import read_object
from .errors import GENERIC_MESSAGE, ApiError, BadRequest, Conflict, ErrorResource, NotFound, \
    to_api_error
from .filebase import FILE_REQUIRED, FileRoute, bool_field, list_field, text_field, text_items
from .request import ApiRequest

NO_FILES = "No files were passed through to be compressed."
NO_SPACE = "This server does not have enough available disk space to generate a compressed archive."
UNKNOWN_FORMAT = "The archive provided is in a format Wings does not understand."
BUSY = ("One or more files this archive is attempting to overwrite are currently in use by another "
        "process. Please try again.")
DAMAGED = "The archive is damaged or incomplete and cannot be extracted."
CANCELLED = "The archive operation was cancelled."
TASK_NOT_FOUND = "The requested archive task was not found."


def archive_error(error: BaseException) -> ApiError | None:
    """
    The answer for a failed archive job (``None``: an unexpected failure, a 500).
    """
    if isinstance(error, UnknownFormat):
        return BadRequest(UNKNOWN_FORMAT)
    if isinstance(error, Unsupported):
        return BadRequest(str(error))
    if isinstance(error, Damaged):
        return BadRequest(DAMAGED)
    if isinstance(error, Busy):
        return BadRequest(BUSY)
    if isinstance(error, Cancelled):
        return BadRequest(CANCELLED)
    return to_api_error(error)


def describe(error: BaseException) -> str:
    """
    The ``error`` text of a failed task.
    """
    translated = archive_error(error)
    return translated.message if translated is not None else GENERIC_MESSAGE


async def _translated(work: Any) -> Any:
    try:
        return await work
    except ApiError:
        raise
    except Exception as e:
        translated = archive_error(e)
        if translated is None:
            raise
        raise translated from None


class CompressRoute(FileRoute):
    """
    ``POST files/compress`` (§5.8).
    """

    modifying = frozenset({b"POST"})

    async def render_POST(self, request: ApiRequest) -> Any:
        """
        The archive's stat object (200), or a task identifier (202).
        """
        body = read_object(request)
        root = text_field(body, "root")
        files = text_items(list_field(body, "files"))
        foreground = bool_field(body, "foreground", True)
        if not files:
            raise ApiError(NO_FILES, status=422)
        volume = self.game_server.volume
        if not await self.node.run_blocking(volume.has_space):
            raise Conflict(NO_SPACE)
        tasks = self.services.archive_tasks
        if not foreground:
            task = tasks.start_compress(self.game_server, root, files, describe)
            request.setResponseCode(202)
            return {"identifier": task.identifier}
        return await _translated(tasks.compress(self.game_server, root, files))


class DecompressRoute(FileRoute):
    """
    ``POST files/decompress`` (§5.9).
    """

    modifying = frozenset({b"POST"})

    async def render_POST(self, request: ApiRequest) -> Any:
        """
        Extract the archive (204), or start a task (202).
        """
        body = read_object(request)
        root = text_field(body, "root")
        file = text_field(body, "file")
        foreground = bool_field(body, "foreground", True)
        if not file:
            raise BadRequest(FILE_REQUIRED)
        tasks = self.services.archive_tasks
        if not foreground:
            await _translated(self.node.run_blocking(identify, self.game_server.volume, root,
                                                     file))
            task = tasks.start_decompress(self.game_server, root, file, describe)
            request.setResponseCode(202)
            return {"identifier": task.identifier}
        await _translated(tasks.decompress(self.game_server, root, file))
        request.setResponseCode(204)
        return None


class ArchiveTasksRoute(FileRoute):
    """
    ``GET files/archive-tasks`` (§8.15).
    """

    async def render_GET(self, request: ApiRequest) -> list[dict[str, Any]]:
        """
        The server's tasks in creation order.
        """
        return [task.to_json() for task in self.services.archive_tasks.tasks(
            self.game_server.uuid)]


class ArchiveStatusRoute(FileRoute):
    """
    ``GET files/archive-status/{identifier}`` (§8.16).
    """

    isLeaf = False

    def __init__(self, node: Node, server: Server, services: FileServices, identifier: str = "") -> None:
        super().__init__(node, server, services)
        self._identifier = identifier

    def getChild(self, path: bytes, request: Request) -> IResource:
        """
        The task named by the next segment (nothing may follow it).
        """
        if not path or request.postpath:
            return ErrorResource(NotFound())
        return ArchiveStatusRoute(self.node, self.game_server, self.services,
                                  path.decode("utf-8", "replace"))

    def render(self, request: Request) -> int | bytes:
        """
        Without an identifier the route does not exist.
        """
        if not self._identifier:
            return ErrorResource(NotFound()).render(request)
        return super().render(request)

    async def render_GET(self, request: ApiRequest) -> dict[str, Any]:
        """
        The task object.
        """
        task = self.services.archive_tasks.get(self.game_server.uuid, self._identifier)
        if task is None:
            raise ApiError(TASK_NOT_FOUND, status=404)
        found: dict[str, Any] = task.to_json()
        return found


ARCHIVE_ROUTES: dict[bytes, type[FileRoute]] = {
    b"compress": CompressRoute,
    b"decompress": DecompressRoute,
    b"archive-tasks": ArchiveTasksRoute,
    b"archive-status": ArchiveStatusRoute,
}
