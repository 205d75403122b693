"""
The backup routes of a server (api.md §9.2, backups.md §4.1, §8.1, §9)::

    /api/servers/{uuid}/backup                      POST    start a backup (202)
    /api/servers/{uuid}/backup/delete-all           DELETE  every local backup of the server (204)
    /api/servers/{uuid}/backup/{backup}             DELETE  one local backup (204 / 404)
    /api/servers/{uuid}/backup/{backup}/restore     POST    restore it (202)
    /api/servers/{uuid}/deleteAllBackups            DELETE  Pelican's name for delete-all

The literal ``delete-all`` is matched before the ``{backup}`` parameter.  A ``{backup}`` that is
not a canonical lower-case UUID answers 400 ``The backup identifier must be a valid UUID.``.
Each resource parses, calls one method of ``backups`` and renders; the refusals of the feature
(``BackupError``) become their status with the JSON envelope.
"""

from __future__ import annotations

from typing import Any

from twisted.web.resource import IResource
from twisted.web.server import Request

from ..backups import ADAPTERS, BackupError, BackupServices
from ..backups.download import DownloadRefused
from ..backups.errors import DOWNLOAD_URL_REQUIRED, INVALID_UUID
from ..backups.restore import begin_restore
from ..backups.storage import check_uuid
from ..servers.server import Server
from .body import read_object
from .errors import ApiError, BadRequest, JsonResource
from .request import ApiRequest

INVALID_ADAPTER = "router/backups: provided adapter is not valid: {}"
INVALID_DATA = "The data provided in the request could not be validated."


def _api_error(error: BackupError) -> ApiError:
    return ApiError(error.message, status=error.status)


class _BackupRoute(JsonResource):
    """
    A backup route of one server.
    """

    def __init__(self, backups: BackupServices, server: Server) -> None:
        super().__init__()
        self._backups = backups
        self._server = server


class BackupBranch(_BackupRoute):
    """
    ``/api/servers/{uuid}/backup``: ``POST`` starts a backup; children ``delete-all`` and
    ``{backup}``.
    """

    def getChild(self, path: bytes, request: Request) -> IResource:
        """
        ``delete-all`` first, then a backup UUID.
        """
        if path == b"delete-all":
            return DeleteAllResource(self._backups, self._server)
        return BackupResource(self._backups, self._server, path.decode("utf-8", "replace"))

    async def render_POST(self, request: ApiRequest) -> None:
        """
        backups.md §4.1: 202 at once, the work in the background.
        """
        body = read_object(request)
        adapter, uuid, ignore = body.get("adapter"), body.get("uuid"), body.get("ignore", "")
        if not isinstance(adapter, str) or adapter not in ADAPTERS:
            raise BadRequest(INVALID_ADAPTER.format(adapter))
        if not isinstance(uuid, str) or not check_uuid(uuid):
            raise BadRequest(INVALID_UUID)
        if ignore is None:
            ignore = ""
        if not isinstance(ignore, str):
            raise BadRequest(INVALID_DATA)
        try:
            self._backups.create(self._server, adapter, uuid, ignore)
        except BackupError as e:
            raise _api_error(e) from None
        request.setResponseCode(202)


class DeleteAllResource(_BackupRoute):
    """
    ``DELETE .../backup/delete-all`` and ``.../deleteAllBackups`` (backups.md §9.2).
    """

    isLeaf = True

    async def render_DELETE(self, request: ApiRequest) -> None:
        """
        Remove every local archive recorded for the server: 204.
        """
        await self._backups.delete_all(self._server.uuid)
        request.setResponseCode(204)


class BackupResource(_BackupRoute):
    """
    ``.../backup/{backup}``: ``DELETE``; child ``restore``.
    """

    def __init__(self, backups: BackupServices, server: Server, backup: str) -> None:
        super().__init__(backups, server)
        self._backup = backup

    def _checked(self) -> str:
        if not check_uuid(self._backup):
            raise BadRequest(INVALID_UUID)
        return self._backup

    def getChild(self, path: bytes, request: Request) -> IResource:
        """
        ``restore``; anything else is a 404.
        """
        if path == b"restore":
            return RestoreResource(self._backups, self._server, self._backup)
        return super().getChild(path, request)

    async def render_DELETE(self, request: ApiRequest) -> None:
        """
        backups.md §9.1: 204, or 404 when there is no such archive for this server.
        """
        backup = self._checked()
        try:
            await self._backups.delete(self._server, backup)
        except BackupError as e:
            raise _api_error(e) from None
        request.setResponseCode(204)


class RestoreResource(_BackupRoute):
    """
    ``POST .../backup/{backup}/restore`` (backups.md §8).
    """

    isLeaf = True

    def __init__(self, backups: BackupServices, server: Server, backup: str) -> None:
        super().__init__(backups, server)
        self._backup = backup

    async def render_POST(self, request: ApiRequest) -> None:
        """
        Validate, locate or open the archive, mark the server restoring, 202.
        """
        body = read_object(request)
        adapter = body.get("adapter")
        truncate: Any = body.get("truncate_directory", False)
        url: Any = body.get("download_url", "")
        if not isinstance(adapter, str) or adapter not in ADAPTERS:
            raise BadRequest(INVALID_DATA)
        if truncate is None:
            truncate = False
        if not isinstance(truncate, bool) or not isinstance(url, (str, type(None))):
            raise BadRequest(INVALID_DATA)
        if not check_uuid(self._backup):
            raise BadRequest(INVALID_UUID)
        if adapter == "s3" and not url:
            raise BadRequest(DOWNLOAD_URL_REQUIRED)
        try:
            await begin_restore(self._backups, self._server, self._backup, adapter, truncate,
                                url or "")
        except BackupError as e:
            raise _api_error(e) from None
        except DownloadRefused as e:
            raise BadRequest(str(e)) from None
        request.setResponseCode(202)


def backup_routes(backups: BackupServices, server: Server) -> dict[bytes, IResource]:
    """
    The children of ``/api/servers/{uuid}`` these routes add.
    """
    return {b"backup": BackupBranch(backups, server),
            b"deleteAllBackups": DeleteAllResource(backups, server)}
