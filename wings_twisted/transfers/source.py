"""
The source side of a transfer, up to the 202 (transfers.md §3.1, §3.6): the panel's request read,
a second transfer refused (409), the server marked *transferring* (its occupancy: power actions
are refused from now on), the process stopped gracefully within 15 seconds without being killed (a
failure clears the mark: 500), and the outgoing transfer registered.  The push itself is
``outgoing.OutgoingTransfer``.

Decision where the spec is silent: a server that is installing, restoring or being received
cannot be transferred (409, "The server is busy (<state>) and cannot be transferred now.").
"""

from __future__ import annotations

from typing import Any, Mapping
from urllib.parse import urlsplit

from twisted.internet.defer import CancelledError
from twisted.logger import Logger

from ..environment import EnvironmentError as EnvError
from ..servers.occupancy import Occupied
from ..servers.server import Server
from .outgoing import OutgoingTransfer, PushSettings

__all__ = ["TransferError", "begin", "read_request"]

log = Logger()

STOP_BUDGET = 15.0
ALREADY = "A transfer is already in progress for this server."
BAD_URL = "The transfer URL is not valid."
STOP_FAILED = "The server could not be stopped before the transfer."
BUSY = "The server is busy ({}) and cannot be transferred now."


class TransferError(Exception):
    """
    A refusal with the status and message the client sees.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def read_request(body: Mapping[str, Any]) -> tuple[str, str]:
    """
    ``url`` and ``token`` of the panel's request body (§3.1 step 1).

    :raises TransferError: 400 when either is missing or empty, or the URL is not an absolute
        ``http``/``https`` URL.
    """
    url, token = body.get("url"), body.get("token")
    if not isinstance(url, str) or not url or not isinstance(token, str) or not token:
        raise TransferError(400, "The url and token fields are required.")
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        raise TransferError(400, BAD_URL) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok or \
            any(c in url for c in "\r\n\x00 "):
        raise TransferError(400, BAD_URL)
    return url, token


async def begin(server: Server, transfers: dict[str, OutgoingTransfer], url: str, token: str,
                settings: PushSettings) -> OutgoingTransfer:
    """
    §3.1 steps 2–5: the outgoing transfer, registered and ready to `run`.

    :raises TransferError: 409 already transferring or busy, 500 the server did not stop.
    """
    if server.occupancy.transferring or server.uuid in transfers:
        raise TransferError(409, ALREADY)
    try:
        server.occupancy.begin_transfer_out()
    except Occupied as e:
        raise TransferError(409, BUSY.format(e.state)) from None
    env = server.environment
    if env is not None and server.state != "offline":
        try:
            await env.wait_for_stop(STOP_BUDGET, False)
        except (EnvError, CancelledError) as e:
            server.occupancy.finished()
            log.error("Stopping {uuid} for its transfer failed: {error}", uuid=server.uuid,
                      error=str(e) or e.__class__.__name__)
            raise TransferError(500, STOP_FAILED) from None
    transfer = OutgoingTransfer(server, url, token, settings,
                                forget=lambda: _forget(transfers, server.uuid))
    transfers[server.uuid] = transfer
    return transfer


def _forget(transfers: dict[str, OutgoingTransfer], uuid: str) -> None:
    transfers.pop(uuid, None)
