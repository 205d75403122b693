"""
The per-server process routes (api.md §4.3–§4.8, §8.1): ``logs``,
``power``, ``commands``, ``install``, ``reinstall``, ``sync`` and the fork's
``install-logs``.  Each parses the request, calls one lifecycle function and
renders the answer; the actions that take long run in the background as the
server's tracked work (cancelled if the server is deleted).
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from ..environment import EnvironmentError as EnvError
from ..servers import install, lifecycle
from ..servers.power import ACTIONS, PowerError
from ..servers.server import Server
from ..node import Node
from .body import read_object
from .errors import ApiError, BadRequest, Conflict, JsonResource, NotFound
from .request import ApiRequest, query_arg

log = Logger()

INVALID_ACTION = ('The power action provided was not valid, should be one of "stop", "start", '
                  '"restart", "kill"')
SUSPENDED = "Cannot start or restart a server that is suspended."
NOT_RUNNING = "Cannot send commands to a stopped server instance."
REINSTALL_BUSY = "Cannot execute server reinstall event while another power action is running."
NO_INSTALL_LOG = "No installation log exists for this server."
INSTALL_LOG_FAILED = "failed to read the log for the installation process."


class _ServerRoute(JsonResource):
    """
    A route of one server.
    """

    def __init__(self, node: Node, server: Server) -> None:
        super().__init__()
        self._node = node
        self._server = server


def lock_wait(value: Any) -> float:
    """
    ``wait_seconds`` (api.md §4.4): absent/0 → 0, 1–300 as given, anything
    else → 30.
    """
    if value is None or value == 0:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 300:
        return 30
    return float(value)


class PowerResource(_ServerRoute):
    """
    ``POST /api/servers/{uuid}/power`` (api.md §4.4): 202, action in the
    background (failures only logged).
    """

    def render_POST(self, request: ApiRequest) -> None:
        """
        Validate and start the action.
        """
        body = read_object(request)
        action = body.get("action")
        if action not in ACTIONS:
            raise ApiError(INVALID_ACTION, status=422)
        server = self._server
        if action in ("start", "restart") and server.suspended:
            raise BadRequest(SUSPENDED)
        server.track(_logged_power, server, action, lock_wait(body.get("wait_seconds")))
        request.setResponseCode(202)


async def _logged_power(server: Server, action: str, wait: float) -> None:
    try:
        await lifecycle.power(server, action, wait=wait)
    except (PowerError, EnvError) as e:
        log.info("Power action {action} on {uuid} refused: {error}", action=action,
                 uuid=server.uuid, error=str(e))


class CommandsResource(_ServerRoute):
    """
    ``POST /api/servers/{uuid}/commands`` (api.md §4.5).
    """

    async def render_POST(self, request: ApiRequest) -> None:
        """
        502 when not running (checked before the body), else each command.
        """
        server = self._server
        if not await server.is_running():
            raise ApiError(NOT_RUNNING, status=502)
        commands = read_object(request).get("commands")
        if not isinstance(commands, list) or not all(isinstance(c, str) for c in commands):
            raise BadRequest()
        for command in commands:
            try:
                await server.send_command(command)
            except EnvError as e:
                log.warn("Sending a command to {uuid} failed: {error}", uuid=server.uuid,
                         error=str(e))
        request.setResponseCode(204)


def log_size(request: ApiRequest) -> int:
    """
    ``?size=`` (api.md §4.3): default 100, non-numeric or ≤ 0 → 100, at most 100.
    """
    raw = query_arg(request, b"size") or b""
    try:
        size = int(raw)
    except ValueError:
        return 100
    return 100 if size <= 0 else min(size, 100)


class LogsResource(_ServerRoute):
    """
    ``GET /api/servers/{uuid}/logs?size=N`` (api.md §4.3).
    """

    async def render_GET(self, request: ApiRequest) -> dict[str, list[str]]:
        """
        The last lines of process output, oldest first.
        """
        return {"data": list(await self._server.read_log(log_size(request)))}


class InstallResource(_ServerRoute):
    """
    ``POST /api/servers/{uuid}/install`` (api.md §4.6).
    """

    def render_POST(self, request: ApiRequest) -> bytes:
        """
        202; sync and install in the background (a second one is ignored).
        """
        server = self._server
        server.track(install.sync_and_install, server)
        request.setResponseCode(202)
        return b""


class ReinstallResource(_ServerRoute):
    """
    ``POST /api/servers/{uuid}/reinstall`` (api.md §4.7).
    """

    def render_POST(self, request: ApiRequest) -> None:
        """
        409 while a power action holds the lock, else 202 and reinstall.
        """
        server = self._server
        if server.power_lock.held:
            raise Conflict(REINSTALL_BUSY)
        server.track(install.reinstall, server)
        request.setResponseCode(202)


class SyncResource(_ServerRoute):
    """
    ``POST /api/servers/{uuid}/sync`` (api.md §4.8): 204 once the new
    configuration is in place, 500 when it cannot be fetched or applied.
    """

    async def render_POST(self, request: ApiRequest) -> None:
        """
        Fetch and apply the panel's configuration.
        """
        try:
            await lifecycle.sync(self._server)
        except lifecycle.SyncError as e:
            log.error("Sync of {uuid} failed: {error}", uuid=self._server.uuid, error=str(e))
            raise ApiError()
        request.setResponseCode(204)


class InstallLogsResource(_ServerRoute):
    """
    ``GET /api/servers/{uuid}/install-logs`` (api.md §8.1).
    """

    async def render_GET(self, request: ApiRequest) -> dict[str, str]:
        """
        The script output of the last install run.
        """
        node = self._node
        path = install.install_log_path(node.config, self._server.uuid)
        try:
            text = await node.run_blocking(install.read_install_log, path)
        except OSError as e:
            log.error("Reading {path} failed: {error}", path=path, error=str(e))
            raise ApiError(INSTALL_LOG_FAILED)
        if text is None:
            raise NotFound(NO_INSTALL_LOG)
        return {"data": text}


ROUTES: dict[bytes, type[_ServerRoute]] = {
    b"power": PowerResource,
    b"commands": CommandsResource,
    b"logs": LogsResource,
    b"install": InstallResource,
    b"reinstall": ReinstallResource,
    b"sync": SyncResource,
    b"install-logs": InstallLogsResource,
}
