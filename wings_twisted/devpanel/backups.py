"""
The backup part of the Panel's *client* API, so that a newcomer can create, list, download,
restore and delete backups of the development servers the way the Panel's backup page does
(``python -m wings_twisted.devpanel backup ...`` calls these routes)::

    GET    /api/client/servers/{server}/backups                     the server's backups
    POST   /api/client/servers/{server}/backups                     {"ignored": "…"} → a backup
    GET    /api/client/servers/{server}/backups/{backup}/download   {"attributes": {"url": …}}
    POST   /api/client/servers/{server}/backups/{backup}/restore    {"truncate": bool} → 204
    DELETE /api/client/servers/{server}/backups/{backup}            204

``{server}`` is a UUID or its first 8 characters.  Authentication: ``Authorization: Bearer
<key>`` with a key of ``application.api_keys`` (the Panel uses user keys here; one kind of key is
enough for a development tool).

What each route does is what the Panel's services do (backups.md §1): creating records a backup
(UUID v4, the configured ``backup_storage.disk``, the ignored lines) and calls the daemon's
``POST /api/servers/{uuid}/backup``; restoring sets the server's status to ``restoring_backup``,
presigns a 5-minute GET for an S3 backup and calls the daemon (an error rolls the status back);
deleting calls the daemon's ``DELETE`` for a local backup (404 counts as done) and deletes the
object itself for an S3 one; a download link is a signed daemon URL (local) or a presigned GET
(S3).  The daemon is called at ``node.daemon_url`` with the node token, as the Panel does.
"""

from __future__ import annotations

import hmac
import json
import uuid as uuidlib
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from .replies import Reply, error_reply, json_reply, no_content, not_found
from .serving import write_reply
from .state import BackupFixture, DevPanelState
from .tokens import signed_url

__all__ = ["ClientBackupsResource", "backup_attributes"]

log = Logger()


def backup_attributes(backup: BackupFixture, disk: str) -> dict[str, Any]:
    """
    The Panel's ``BackupTransformer`` shape (the fields the backup page shows).
    """
    return {"object": "backup", "attributes": {
        "uuid": backup.uuid, "name": backup.name, "ignored_files": list(backup.ignored_files),
        "checksum": backup.checksum, "bytes": backup.size, "disk": disk,
        "is_successful": backup.successful, "is_locked": backup.locked,
        "completed_at": backup.completed_at if backup.completed else None}}


class ClientBackupsResource(Resource):
    """
    Below ``/api/client``: the backup routes of the module docstring.

    :param http: a treq-like client for the daemon (``request(method, url, ...)``).
    """

    isLeaf = True

    def __init__(self, state: DevPanelState, reactor: Any, http: Any = None) -> None:
        super().__init__()
        self._state = state
        self._reactor = reactor
        self._http = http

    def _client(self) -> Any:
        if self._http is None:
            from treq.client import HTTPClient
            from twisted.web.client import Agent
            self._http = HTTPClient(Agent(self._reactor))
        return self._http

    def render(self, request: Request) -> int:
        """
        Authenticate, route, answer.
        """
        d = Deferred.fromCoroutine(self._handle(request))
        d.addCallback(lambda reply: write_reply(request, reply))

        def failed(failure: Any) -> None:
            log.failure("devpanel client API failed", failure)
            write_reply(request, error_reply(500, "An unexpected error was encountered."))

        d.addErrback(failed)
        return NOT_DONE_YET

    def _authorized(self, request: Request) -> bool:
        header = (request.getHeader("authorization") or "")
        presented = header[7:].strip() if header.startswith("Bearer ") else ""
        return any(hmac.compare_digest(k.key.encode(), presented.encode())
                   for k in self._state.application.api_keys)

    async def _handle(self, request: Request) -> Reply:
        if not self._authorized(request):
            return error_reply(401, "Unauthenticated.", code="AuthenticationException")
        segments = [s.decode("utf-8", "replace") for s in request.postpath or []]
        if segments and segments[-1] == "":
            segments.pop()
        method = request.method.decode("ascii", "replace").upper()
        if len(segments) < 3 or segments[0] != "servers" or segments[2] != "backups":
            return not_found()
        server = self._server(segments[1])
        if server is None:
            return not_found()
        content = request.content.read() if request.content is not None else b""
        try:
            body = json.loads(content) if content.strip() else {}
        except ValueError:
            body = {}
        rest = segments[3:]
        if not rest and method == "GET":
            return json_reply(200, {"object": "list", "data": [
                backup_attributes(b, self._state.backup_disk) for b in
                self._state.backups.values() if b.server_uuid == server]})
        if not rest and method == "POST":
            return await self._create(server, body if isinstance(body, dict) else {})
        backup = self._state.backups.get(rest[0]) if rest else None
        if backup is None or backup.server_uuid != server:
            return not_found()
        if rest[1:] == ["download"] and method == "GET":
            return json_reply(200, {"object": "signed_url",
                                    "attributes": {"url": self._download_url(backup)}})
        if rest[1:] == ["restore"] and method == "POST":
            truncate = bool(body.get("truncate", False)) if isinstance(body, dict) else False
            return await self._restore(server, backup, truncate)
        if not rest[1:] and method == "DELETE":
            return await self._delete(server, backup)
        return not_found()

    def _server(self, ident: str) -> str | None:
        for uuid in self._state.servers:
            if uuid == ident or uuid[:8] == ident:
                return uuid
        return None

    async def _daemon(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        node = self._state.node
        data = None if body is None else json.dumps(body).encode()
        response = await self._client().request(
            method, node.daemon_url + path, data=data,
            headers={"Authorization": "Bearer " + node.token, "Accept": "application/json",
                     "Content-Type": "application/json"})
        return response.code, await response.content()

    async def _create(self, server: str, body: dict[str, Any]) -> Reply:
        ignored = body.get("ignored", "")
        lines = [line for line in str(ignored or "").split("\n") if line.strip()]
        backup = self._state.add_backup(str(uuidlib.uuid4()), server=server)
        backup.name = str(body.get("name") or "Backup at {:.0f}".format(self._reactor.seconds()))
        backup.ignored_files = lines
        code, answer = await self._daemon("POST", "/api/servers/{}/backup".format(server), {
            "adapter": self._state.backup_disk, "uuid": backup.uuid, "ignore": "\n".join(lines)})
        if code != 202:
            del self._state.backups[backup.uuid]
            return _daemon_error(code, answer)
        return json_reply(200, backup_attributes(backup, self._state.backup_disk))

    def _download_url(self, backup: BackupFixture) -> str:
        if self._state.backup_disk == "s3":
            store = self._state.object_store
            if store is not None:
                return store.download_url(self._state.object_key(backup.uuid), 900)
            return self._state.backup_download_url(backup.uuid)
        return signed_url("download-backup", self._state, backup.server_uuid or "",
                          backup_uuid=backup.uuid)

    async def _restore(self, server: str, backup: BackupFixture, truncate: bool) -> Reply:
        fixture = self._state.servers[server]
        previous = fixture.status
        fixture.status = "restoring_backup"
        disk = self._state.backup_disk
        url = self._state.backup_download_url(backup.uuid) if disk == "s3" else ""
        code, answer = await self._daemon(
            "POST", "/api/servers/{}/backup/{}/restore".format(server, backup.uuid),
            {"adapter": disk, "truncate_directory": truncate, "download_url": url})
        if code != 202:
            fixture.status = previous
            return _daemon_error(code, answer)
        return no_content()

    async def _delete(self, server: str, backup: BackupFixture) -> Reply:
        if self._state.backup_disk == "s3":
            if self._state.object_store is not None:
                self._state.object_store.delete(self._state.object_key(backup.uuid))
        else:
            code, answer = await self._daemon(
                "DELETE", "/api/servers/{}/backup/{}".format(server, backup.uuid))
            if code not in (204, 404):
                return _daemon_error(code, answer)
        del self._state.backups[backup.uuid]
        return no_content()


def _daemon_error(code: int, answer: bytes) -> Reply:
    try:
        detail = str(json.loads(answer).get("error"))
    except (ValueError, AttributeError):
        detail = answer[:200].decode("utf-8", "replace")
    return error_reply(502 if code >= 500 or code == 0 else code,
                       "The daemon answered {}: {}".format(code, detail),
                       code="DaemonConnectionException")
