"""
The fork's chunked uploads (api.md §8.11–§8.14) over ``files.chunked``:

* ``POST files/upload/init`` ``{"path", "file_size", "chunk_size"}`` → 200
  ``{"upload_id", "total_chunks", "chunk_size"}``;
* ``POST files/upload/chunk`` with ``X-Upload-Id``, ``X-Chunk-Index``,
  ``X-Total-Chunks`` and the raw chunk → 200 ``{"chunk_index", "status":
  "received", "bytes_received", "total_bytes", "progress"}`` (percent);
* ``POST files/upload/finalize`` ``{"upload_id"}`` → 200 ``{"status":
  "completed", "file_path", "file_size", "checksum": "sha256:<hex>"}``;
* ``DELETE files/upload/{upload_id}`` → 204.

The write guard applies to ``init``, ``chunk`` and ``finalize``.  Errors:
unknown (or expired) session 404, another server's 403, a missing chunk at
``finalize`` 400, the server at ``max_concurrent_uploads`` 409.  A chunk body
must be exactly the chunk's size (project).  ``finalize`` records
``server:file.uploaded`` with no user (project).
"""

from __future__ import annotations

import stat as _stat
from typing import IO, Any, cast

from twisted.web.resource import IResource
from twisted.web.server import Request

from ..files.chunked import (ForeignUpload, Session, TooManyUploads, UnknownUpload, assemble,
                             discard, store_chunk)
from ..files import FileServices
from ..fs import IsDirectory, NotFound, QuotaExceeded, Volume, clean_path
from ..node import Node
from ..servers.server import Server
from .body import read_object
from .errors import ApiError, BadRequest, Conflict, ErrorResource, Forbidden
from .errors import NotFound as RouteNotFound
from .filebase import FileRoute, int_field, text_field
from .formdata import clean_directory
from .request import ApiRequest

MIB = 1024 * 1024
UNKNOWN = "The requested upload was not found."
FOREIGN = "This upload belongs to another server."
TOO_MANY = "Maximum concurrent uploads reached for this server."
NOT_ALL = "Not all chunks have been received."


def _session(route: FileRoute, upload_id: str) -> Session:
    try:
        return cast(Session, route.services.uploads.get(upload_id, route.game_server.uuid))
    except UnknownUpload:
        raise ApiError(UNKNOWN, status=404)
    except ForeignUpload:
        raise Forbidden(FOREIGN)


def _check_target(volume: Volume, path: str, file_size: int) -> None:
    """
    The destination may be written: inside the volume, not a directory or a
    symlink, not denylisted, and the file fits.
    """
    clean = clean_path(path)
    volume.check_denied(clean)
    if not clean:
        raise IsDirectory(clean)
    try:
        current = volume.lstat(clean)
    except NotFound:
        current = None
    if current is not None:
        if _stat.S_ISDIR(current.st_mode):
            raise IsDirectory(clean)
        if _stat.S_ISLNK(current.st_mode):
            raise NotFound(clean)
    if not volume.fits(file_size - (current.st_size if current is not None else 0)):
        raise QuotaExceeded(clean)


class InitRoute(FileRoute):
    """
    ``POST files/upload/init``.
    """

    modifying = frozenset({b"POST"})

    async def render_POST(self, request: ApiRequest) -> dict[str, Any]:
        """
        Start a session.
        """
        body = read_object(request)
        path = text_field(body, "path")
        file_size = int_field(body, "file_size")
        chunk_size = int_field(body, "chunk_size")
        limits = self.node.config
        if not path or file_size is None or chunk_size is None:
            raise BadRequest("The path, file_size and chunk_size fields are required.")
        if not 1 <= file_size <= limits.chunked_upload.max_file_size * MIB:
            raise BadRequest("The file size must be between 1 byte and {} MiB.".format(
                limits.chunked_upload.max_file_size))
        if not 1 <= chunk_size <= limits.api.upload_limit * MIB:
            raise BadRequest("The chunk size must be between 1 byte and {} MiB.".format(
                limits.api.upload_limit))
        await self.blocking(_check_target, self.game_server.volume, path, file_size)
        try:
            session = self.services.uploads.create(self.game_server.uuid, path, file_size,
                                                   chunk_size)
        except TooManyUploads:
            raise Conflict(TOO_MANY)
        return {"upload_id": session.upload_id, "total_chunks": session.total_chunks,
                "chunk_size": session.chunk_size}


def _header_int(request: Request, name: bytes) -> int:
    value = request.getHeader(name)
    if value is None or not value.isdigit():
        raise BadRequest("The {} header is missing or not a number.".format(name.decode()))
    return int(value)


class ChunkRoute(FileRoute):
    """
    ``POST files/upload/chunk``.
    """

    modifying = frozenset({b"POST"})

    async def render_POST(self, request: ApiRequest) -> dict[str, Any]:
        """
        Store one chunk (replacing an earlier copy).
        """
        upload_id = request.getHeader(b"X-Upload-Id")
        if not upload_id:
            raise BadRequest("The X-Upload-Id header is required.")
        index = _header_int(request, b"X-Chunk-Index")
        total = _header_int(request, b"X-Total-Chunks")
        length = _header_int(request, b"Content-Length")
        session = _session(self, upload_id.decode("latin-1"))
        if total != session.total_chunks:
            raise BadRequest("X-Total-Chunks does not match the upload.")
        if index >= session.total_chunks:
            raise BadRequest("X-Chunk-Index is outside the upload.")
        if length != session.chunk_length(index):
            raise BadRequest("Chunk {} must be {} bytes.".format(index,
                                                                 session.chunk_length(index)))
        body = cast(IO[bytes], request.content)
        await self.node.run_blocking(store_chunk, session, index, body, length)
        session.received[index] = length
        received = session.bytes_received
        return {"chunk_index": index, "status": "received", "bytes_received": received,
                "total_bytes": session.file_size,
                "progress": round(received / session.file_size * 100, 2)}


class FinalizeRoute(FileRoute):
    """
    ``POST files/upload/finalize``.
    """

    modifying = frozenset({b"POST"})

    async def render_POST(self, request: ApiRequest) -> dict[str, Any]:
        """
        Assemble the file in the volume and end the session.
        """
        upload_id = text_field(read_object(request), "upload_id")
        session = _session(self, upload_id)
        if len(session.received) != session.total_chunks:
            raise BadRequest(NOT_ALL)
        volume = self.game_server.volume
        await self.blocking(_check_target, volume, session.path, session.file_size)
        digest = await self.blocking(assemble, session, volume)
        self.services.uploads.forget(session)
        await self.node.run_blocking(discard, session)
        clean = clean_path(session.path)
        directory, _, name = clean.rpartition("/")
        self.node.activity.record("server:file.uploaded", server=self.game_server.uuid,
                                  user=None, ip=request.client_ip(),
                                  metadata={"file": name,
                                            "directory": clean_directory("/" + directory)})
        return {"status": "completed", "file_path": "/" + clean, "file_size": session.file_size,
                "checksum": "sha256:" + digest}


class AbortRoute(FileRoute):
    """
    ``DELETE files/upload/{upload_id}``.
    """

    def __init__(self, node: Node, server: Server, services: FileServices, upload_id: str) -> None:
        super().__init__(node, server, services)
        self._upload_id = upload_id

    async def render_DELETE(self, request: ApiRequest) -> None:
        """
        Drop the session and its chunks; 204 (also when it is unknown).
        """
        try:
            session = self.services.uploads.get(self._upload_id, self.game_server.uuid)
        except UnknownUpload:
            session = None
        except ForeignUpload:
            raise Forbidden(FOREIGN)
        if session is not None:
            self.services.uploads.forget(session)
            await self.node.run_blocking(discard, session)
        request.setResponseCode(204)


_ACTIONS: dict[bytes, type[FileRoute]] = {
    b"init": InitRoute,
    b"chunk": ChunkRoute,
    b"finalize": FinalizeRoute,
}


class UploadBranch(FileRoute):
    """
    ``files/upload/...``.
    """

    isLeaf = False

    def getChild(self, path: bytes, request: Request) -> IResource:
        """
        ``init``, ``chunk``, ``finalize``, else an upload id.
        """
        action = _ACTIONS.get(path)
        if action is not None:
            return action(self.node, self.game_server, self.services)
        if not path:
            return ErrorResource(RouteNotFound())
        return AbortRoute(self.node, self.game_server, self.services,
                          path.decode("ascii", "replace"))


CHUNKED_ROUTES: dict[bytes, type[FileRoute]] = {b"upload": UploadBranch}
