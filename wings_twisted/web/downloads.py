"""
``GET``/``HEAD /download/file`` and ``/download/backup`` (downloads-uploads.md
§2–§5, api.md §7).

Order of work for both routes: verify the signed token (403), find its server
(404), consume its ``unique_id`` for GET (HEAD never does; a consumed token is
honoured again only for a ``Range`` request from the same client before it
expires), open the file and ``fstat`` the descriptor, then decide the status
from ``Range``/``If-Range`` (GET only) and stream exactly the selected bytes
with a ``FileSpanProducer`` registered on the request (``os.sendfile``
straight to the socket on plain TCP, ``pread`` chunks through the request
otherwise).

Every size, time and type comes from the ``fstat`` of the open descriptor, so
a file swapped after the checks cannot change what is sent.
"""

from __future__ import annotations

import os
import stat
from typing import Any, Callable, Sequence

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from .. import fs
from ..auth import DOWNLOAD_BACKUP, DOWNLOAD_FILE, TokenKind
from ..node import Node
from ..servers.server import CANONICAL_UUID, Server
from ..streams.producers import FileSpanProducer, ShortFile, Stopped
from .errors import NOT_DONE, NOT_FOUND_ON_SERVER, ApiError, JsonResource, write_json
from .ranges import (RangeNotSatisfiable, content_disposition, content_range, etag_for,
                     evaluate_range, http_date)
from .request import ApiRequest, abort_connection, query_arg
from .signed import consume_token, verify_signed_token

log = Logger()

BACKUP_NOT_FOUND = "The requested backup was not found on this server."
EXPOSE_HEADERS = b"Content-Disposition, Content-Range, Accept-Ranges, ETag, Last-Modified"


def stream_span(request: ApiRequest, fd: int, offset: int, length: int) -> int:
    """
    Send ``length`` bytes of ``fd`` from ``offset`` as the body of ``request``
    (whose headers are set), finishing it at the end.  The producer owns the
    descriptor from now on.  A file that shrinks, or any other failure once
    the headers are gone, aborts the connection: a short body must never look
    complete.
    """
    producer = FileSpanProducer(fd, offset, length, transport=request.channel.transport)
    request.notifyFinish().addErrback(lambda _: producer.stopProducing())
    # The status line and headers go out through the transport's buffer
    # first; the sendfile path waits for that buffer to drain.
    request.write(b"")
    producer.start(request).addCallbacks(lambda _: request.finish(),
                                         lambda f: _stream_failed(request, f))
    return NOT_DONE


def _stream_failed(request: ApiRequest, failure: Failure) -> None:
    if failure.check(Stopped):
        return
    if failure.check(ShortFile):
        log.warn("File shrank while being sent; aborting the connection ({request_id})",
                 request_id=request.request_id)
    else:
        log.failure("Sending a file failed ({request_id})", failure, request_id=request.request_id)
    if not request.gone:
        abort_connection(request)


class _DownloadResource(JsonResource):
    """
    Shared GET/HEAD machinery; subclasses say which token kind they take and
    how they open the file.
    """

    isLeaf = True
    kind: TokenKind

    def __init__(self, node: Node) -> None:
        super().__init__()
        self._node = node

    async def render_GET(self, request: ApiRequest) -> int | bytes:
        """
        Stream the file (200, 206) or refuse (403, 404, 416, 400).
        """
        return await self._serve(request, head=False)

    async def render_HEAD(self, request: ApiRequest) -> int | bytes:
        """
        The headers of the full 200 GET, no body, token not consumed.
        """
        return await self._serve(request, head=True)

    async def open(self, server: Server, claims: dict[str, Any]) -> tuple[int, os.stat_result, str]:
        """
        Open the file the token names: ``(fd, fstat, download name)``.
        """
        raise NotImplementedError

    async def _serve(self, request: ApiRequest, *, head: bool) -> int | bytes:
        node = self._node
        request.setHeader(b"Access-Control-Expose-Headers", EXPOSE_HEADERS)
        claims, server = verify_signed_token(node, query_arg(request, b"token"), self.kind,
                                             request)
        ranges = request.requestHeaders.getRawHeaders(b"Range")
        if not head:
            consume_token(node, request, claims, is_range=ranges is not None, resumable=True)
        fd, st, name = await self.open(server, claims)
        # The descriptor is ours until a producer takes it.
        try:
            span = self._headers(request, st, name, ranges, head=head)
        except BaseException:
            os.close(fd)
            raise
        if isinstance(span, bytes):
            os.close(fd)
            return span
        offset, length = span
        return stream_span(request, fd, offset, length)

    def _headers(self, request: ApiRequest, st: os.stat_result, name: str,
                 ranges: Sequence[bytes] | None, *, head: bool) -> bytes | tuple[int, int]:
        """
        Decide the status and set the headers from the ``fstat`` of the open
        file: the ``(offset, length)`` to stream, or the whole answer as bytes
        (a HEAD, a 416).
        """
        size = st.st_size
        etag = etag_for(st)
        mtime = int(st.st_mtime)
        request.setHeader(b"Accept-Ranges", b"bytes")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"ETag", etag.encode("ascii"))
        request.setHeader(b"Last-Modified", http_date(mtime).encode("ascii"))
        offset, length = 0, size
        if_range = request.requestHeaders.getRawHeaders(b"If-Range")
        try:
            selected = evaluate_range(b"HEAD" if head else b"GET", ranges,
                                      if_range[0] if if_range else None, size=size, etag=etag,
                                      last_modified=mtime, now=self._node.clock.seconds())
        except RangeNotSatisfiable as e:
            request.setHeader(b"Content-Range", e.content_range.encode("ascii"))
            return write_json(request, 416, {"error": "The requested range is not satisfiable.",
                                             "request_id": request.request_id})
        if selected is not None:
            offset, length = selected
            request.setResponseCode(206)
            request.setHeader(b"Content-Range", content_range(offset, length, size).encode("ascii"))
        request.setHeader(b"Content-Type", b"application/octet-stream")
        request.setHeader(b"Content-Disposition", content_disposition(name).encode("ascii"))
        request.setHeader(b"Content-Length", b"%d" % length)
        return b"" if head else (offset, length)


class FileDownloadResource(_DownloadResource):
    """
    ``/download/file``: a file of the server's volume (downloads-uploads.md §3).
    """

    kind = DOWNLOAD_FILE

    async def open(self, server: Server, claims: dict[str, Any]) -> tuple[int, os.stat_result, str]:
        """
        Resolve ``file_path`` through the sandbox; the final component is
        never followed.
        """
        path = claims["file_path"]
        try:
            fd, st = await self._node.run_blocking(server.volume.open_read, path)
        except fs.IsDirectory:
            raise ApiError(NOT_FOUND_ON_SERVER, status=404)
        return fd, st, os.path.basename(fs.clean_path(path)) or "download"


class BackupDownloadResource(_DownloadResource):
    """
    ``/download/backup``: a local backup archive (downloads-uploads.md §4).
    """

    kind = DOWNLOAD_BACKUP

    def __init__(self, node: Node, servable: Callable[[str, str], bool]) -> None:
        super().__init__(node)
        self._servable = servable

    async def open(self, server: Server, claims: dict[str, Any]) -> tuple[int, os.stat_result, str]:
        """
        Find ``<backup_directory>/<uuid>.tar.gz`` (then the Pelican per-server
        layout) and open it.
        """
        backup = claims["backup_uuid"]
        if not CANONICAL_UUID.match(backup) or not self._servable(server.uuid, backup):
            raise ApiError(BACKUP_NOT_FOUND, status=404)
        directory = self._node.config.system.backup_directory
        candidates = [os.path.join(directory, backup + ".tar.gz"),
                      os.path.join(directory, server.uuid, backup + ".tar.gz")]
        opened = await self._node.run_blocking(_open_first_regular, candidates)
        if opened is None:
            raise ApiError(BACKUP_NOT_FOUND, status=404)
        fd, st = opened
        return fd, st, backup + ".tar.gz"


def _open_first_regular(paths: list[str]) -> tuple[int, os.stat_result] | None:
    """
    Open the first of ``paths`` that is a regular file (blocking).
    """
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            return fd, st
        os.close(fd)
    return None


def download_tree(node: Node,
                  servable: Callable[[str, str], bool] = lambda server, backup: True) -> Resource:
    """
    The ``/download`` resource with its two children.

    :param servable: whether a backup may be served for a server (``(server uuid, backup
        uuid)``: not recorded for another server, not being generated; backups.md §3).
    """
    root = JsonResource()
    root.putChild(b"file", FileDownloadResource(node))
    root.putChild(b"backup", BackupDownloadResource(node, servable))
    return root
