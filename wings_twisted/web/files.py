"""
``/api/servers/{uuid}/files/...``: the Panel's file manager and the fork's
file extras.  ``FilesResource`` dispatches on the route name through
``FILE_ROUTES``; this module also holds the read routes:

* ``GET files/contents?file=`` (api.md §5.1): the raw bytes, exactly the size
  ``fstat`` gave when the file was opened, with ``X-Mime-Type`` and (project)
  that type as ``Content-Type``; ``?download=<non-empty>`` switches to an
  attachment.  Denylisted files are 403 (project).
* ``GET files/list-directory?directory=`` (§5.2): stat objects.
* ``GET files/stat?file=`` (§8.3), ``GET files/search?pattern=&directory=``
  (§8.2; project: ``&content=<text>`` also finds regular files containing
  that text — with it ``pattern`` may be left out), ``GET files/disk-usage``
  (§8.5).  Searches stop after 10,000 results or 10 seconds.

Every route reaches the volume only through ``fs`` (the sandboxed walk), in
worker threads.  The modifying routes are in ``file_edits``, the line routes
in ``file_lines``, chunked uploads in ``chunked``, archives in ``archives``.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.web.resource import IResource
from twisted.web.server import Request

from ..fs import Volume
from ..fs.info import sniff_fd
from ..fs.listing import list_directory_json, search, stat_entry
from ..files import FileServices
from ..node import Node
from ..servers.server import Server
from .archives import ARCHIVE_ROUTES
from .chunked import CHUNKED_ROUTES
from .downloads import stream_span
from .errors import BadRequest, ErrorResource, JsonResource, NotFound
from .file_edits import EDIT_ROUTES
from .file_lines import LINE_ROUTES
from .filebase import FileRoute, query_text, required_file
from .pull import PULL_ROUTES
from .ranges import content_disposition
from .request import ApiRequest, query_arg

#: Seconds a ``disk-usage`` answer may be old (§8.5).
DISK_USAGE_MAX_AGE = 30.0
SHORT_PATTERN = "Pattern must be at least 3 characters long"
SHORT_CONTENT = "Content must be at least 3 characters long"


def _open_with_mime(volume: Volume, path: str) -> tuple[int, os.stat_result, str]:
    fd, st = volume.open_read(path)
    try:
        return fd, st, sniff_fd(fd, st)
    except BaseException:
        os.close(fd)
        raise


class ContentsRoute(FileRoute):
    """
    ``GET files/contents``.
    """

    async def render_GET(self, request: ApiRequest) -> int:
        """
        Stream the file with its exact length and sniffed type.
        """
        path = query_text(request, b"file") or ""
        fd, st, mime = await self.blocking(_open_with_mime, self.game_server.volume, path)
        try:
            request.setHeader(b"Content-Length", b"%d" % st.st_size)
            request.setHeader(b"X-Mime-Type", mime.encode("ascii"))
            if query_arg(request, b"download"):
                name = os.path.basename(path.rstrip("/")) or "download"
                request.setHeader(b"Content-Type", b"application/octet-stream")
                request.setHeader(b"Content-Disposition",
                                  content_disposition(name).encode("ascii"))
            else:
                request.setHeader(b"Content-Type", mime.encode("ascii"))
        except BaseException:
            os.close(fd)
            raise
        return stream_span(request, fd, 0, st.st_size)


class ListDirectoryRoute(FileRoute):
    """
    ``GET files/list-directory``.
    """

    async def render_GET(self, request: ApiRequest) -> bytes:
        """
        The stat objects of the directory's entries, encoded in the worker
        thread too (10,000 entries are megabytes of JSON).
        """
        directory = query_text(request, b"directory") or ""
        volume = self.game_server.volume
        body: bytes = await self.blocking(list_directory_json, volume, directory)
        request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
        return body


class StatRoute(FileRoute):
    """
    ``GET files/stat`` (fork).
    """

    async def render_GET(self, request: ApiRequest) -> dict[str, Any]:
        """
        The stat object of one entry, not following a final symlink.
        """
        path = required_file(request)
        entry: dict[str, Any] = await self.blocking(stat_entry, self.game_server.volume, path)
        return entry


class SearchRoute(FileRoute):
    """
    ``GET files/search`` (fork, Pelican; ``content`` is this project's).
    """

    async def render_GET(self, request: ApiRequest) -> list[dict[str, Any]]:
        """
        Entries whose names match ``pattern`` and, with ``content``, regular
        files containing that text, below ``directory``.
        """
        pattern = query_text(request, b"pattern")
        content = query_text(request, b"content")
        if content is not None and len(content) < 3:
            raise BadRequest(SHORT_CONTENT)
        if (pattern is not None or content is None) and len(pattern or "") < 3:
            raise BadRequest(SHORT_PATTERN)
        directory = (query_text(request, b"directory") or "").rstrip("/")
        options = self.node.config.search
        needle = None if content is None else content.encode("utf-8", "surrogateescape")
        found: list[dict[str, Any]] = await self.blocking(
            lambda: search(self.game_server.volume, directory, pattern,
                           blacklist=options.blacklisted_dirs,
                           max_depth=options.max_recursion_depth, content=needle))
        return found


class DiskUsageRoute(FileRoute):
    """
    ``GET files/disk-usage`` (fork).
    """

    async def render_GET(self, request: ApiRequest) -> dict[str, int]:
        """
        The usage (at most 30 s old) and the limit (0 = unlimited).
        """
        quota = self.game_server.volume.quota
        current: int = await self.blocking(quota.usage_within, DISK_USAGE_MAX_AGE)
        return {"current_bytes": current, "limit_bytes": max(quota.limit, 0)}


FILE_ROUTES: dict[bytes, type[FileRoute]] = {
    b"contents": ContentsRoute,
    b"list-directory": ListDirectoryRoute,
    b"stat": StatRoute,
    b"search": SearchRoute,
    b"disk-usage": DiskUsageRoute,
    **EDIT_ROUTES,
    **LINE_ROUTES,
    **CHUNKED_ROUTES,
    **PULL_ROUTES,
    **ARCHIVE_ROUTES,
}


class FilesResource(JsonResource):
    """
    ``/api/servers/{uuid}/files``: one child per route.
    """

    def __init__(self, node: Node, server: Server, services: FileServices) -> None:
        super().__init__()
        self._node = node
        self._server = server
        self._services = services

    def getChild(self, path: bytes, request: Request) -> IResource:
        """
        The route named by the segment, or a JSON 404.
        """
        route = FILE_ROUTES.get(path)
        if route is None:
            return ErrorResource(NotFound())
        return route(self._node, self._server, self._services)
