"""
``POST /sftp/auth`` of the development Panel (panel.md §4, sftp.md §3.6).

Order of checks, as in the Panel's ``SftpAuthenticationController``:
validation (422), empty server part (400), throttle (429), user and server
lookup and credentials (403), SFTP permission (403), server state (409).

The throttle key is the lower-cased server identifier plus the *calling
node's* IP; 5 counted failures (unknown user or server, wrong password,
unparsable key) within a fixed 60-second window starting at the first
failure trigger 429.  A well-formed but unknown key is refused without
being counted, since clients offer several keys.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
import struct

from .handlers import Call
from .replies import Reply, Validator, error_reply, json_reply
from .servers import ServerFixture
from .state import DevPanelState

_BAD_CREDENTIALS = "Authorization credentials were not correct, please try again."


def key_blob(line: str) -> bytes | None:
    """
    The wire-format blob of an ``authorized_keys`` line (``<algorithm>
    <base64> [comment]``), or ``None`` when it cannot be parsed.  Two keys
    are the same key when their blobs (hence SHA-256 fingerprints) match.
    """
    fields = line.strip().split()
    if len(fields) < 2:
        return None
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(blob) < 4:
        return None
    (length,) = struct.unpack(">I", blob[:4])
    if blob[4 : 4 + length] != fields[0].encode("ascii", "replace"):
        return None
    return blob


def _find_server(state: DevPanelState, ident: str) -> ServerFixture | None:
    ident = ident.lower()
    for server in state.servers.values():
        if server.uuid.lower() == ident or server.uuid[:8].lower() == ident:
            return server
    return None


def _conflict(server: ServerFixture) -> str | None:
    if server.suspended:
        return "This server is currently suspended and the functionality requested is unavailable."
    if server.status in ("installing", "install_failed"):
        return "This server has not yet completed its installation process, please try again later."
    if server.status == "restoring_backup":
        return "This server is currently restoring from a backup, please try again later."
    if server.transfer:
        return "This server is currently being transferred to a new machine, please try again later."
    return None


class _Throttle:
    """
    Laravel's ``RateLimiter`` for one key: a counter that expires a fixed
    window after its first hit.
    """

    def __init__(self, state: DevPanelState, key: str, now: float) -> None:
        self._state = state
        self._key = key
        self._now = now

    def _entry(self) -> tuple[int, float] | None:
        entry = self._state.sftp_throttle.get(self._key)
        if entry is not None and self._now >= entry[1]:
            del self._state.sftp_throttle[self._key]
            return None
        return entry

    def blocked_for(self) -> int | None:
        """
        Seconds until the next attempt is allowed, or ``None`` when allowed.
        """
        state = self._state
        if state.force_sftp_throttle:
            return int(state.sftp_throttle_window)
        entry = self._entry()
        if entry is None or entry[0] < state.sftp_throttle_attempts:
            return None
        return max(int(math.ceil(entry[1] - self._now)), 0)

    def hit(self) -> None:
        """
        Count one failure.
        """
        entry = self._entry()
        if entry is None:
            entry = (0, self._now + self._state.sftp_throttle_window)
        self._state.sftp_throttle[self._key] = (entry[0] + 1, entry[1])


def sftp_auth(call: Call) -> Reply:
    """
    ``POST /sftp/auth``: check a password or public key for
    ``<user>.<server>`` and answer ``{user, server, permissions}``.
    """
    state = call.state
    v = Validator(call.body)
    kind = v.check("type", nullable=True, choices=("password", "public_key"))
    username = v.check("username", required=True, kind="string")
    password = v.check("password", required=True, kind="string")
    if (reply := v.reply()) is not None:
        return reply
    assert isinstance(username, str) and isinstance(password, str)
    user_part, dot, server_part = username.rpartition(".")
    if not dot:
        user_part, server_part = "", username
    if not server_part:
        return error_reply(400, "No valid server identifier was included in the request.")
    throttle = _Throttle(state, server_part.lower() + "|" + call.client_ip, call.now)
    wait = throttle.blocked_for()
    if wait is not None:
        return error_reply(
            429,
            "Too many login attempts for this account, please try again in {} seconds.".format(wait),
            headers={"Retry-After": str(wait)},
        )

    def reject(count: bool = True) -> Reply:
        if count:
            throttle.hit()
        return error_reply(403, _BAD_CREDENTIALS, code="HttpForbiddenException")

    user = state.users.get(user_part) or next(
        (u for u in state.users.values() if user_part and u.username.lower() == user_part.lower()), None
    )
    server = _find_server(state, server_part)
    if user is None or server is None:
        return reject()
    if kind != "public_key":
        if not hmac.compare_digest(password.encode("utf-8"), user.password.encode("utf-8")):
            state.panel_events.append({"event": "auth:sftp.fail", "user": user.uuid, "method": "password"})
            return reject()
    else:
        offered = key_blob(password)
        if offered is None:
            return reject()
        if not any(key_blob(k) == offered for k in user.public_keys):
            return reject(count=False)
    permissions = user.permissions_for(server.uuid)
    if not user.root_admin and not (permissions and ("*" in permissions or "file.sftp" in permissions)):
        state.panel_events.append({"event": "server:sftp.denied", "user": user.uuid, "server": server.uuid})
        detail = "You do not have permission to access SFTP for this server."
        return error_reply(403, detail, code="HttpForbiddenException")
    conflict = _conflict(server)
    if conflict is not None:
        return error_reply(409, conflict, code="ServerStateConflictException")
    return json_reply(200, {"user": user.uuid, "server": server.uuid, "permissions": permissions or []})
