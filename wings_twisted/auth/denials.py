"""
Websocket token revocation (websocket.md §8.1): the boot-time rule, the
global JTI deny map and the W1.12 user deny map.  One instance lives on the
node (``node.denials``); it is memory only, and a restart is covered by the
boot-time rule.  Also the per-token checks built on it: ``token_error``
(§4.3 steps 4–7, §5.4) and ``has_permission`` (§4.3).

Rules of ``denied(claims)`` (any one denies):

* ``iat`` missing or not a number (fail closed, W1.12/Pelican);
* ``iat`` before the daemon's boot time, compared in whole seconds
  (``floor(iat) < floor(boot_time)``);
* ``jti`` is in the JTI map with ``iat <= deny_time`` (W1.12/Pelican; W1.11
  used "strictly before").  The map is global, not per server: the Panel's
  ``jti`` already encodes the server;
* ``server_uuid`` or ``user_uuid`` missing or not a non-empty string (fail
  closed, W1.12);
* ``(server_uuid, user_uuid)`` is in the user map with ``iat <= deny_time``.

Decisions:

* Boot time is compared on whole seconds (websocket.md §4.2 "compare on
  whole seconds").  Upstream compares the integer ``iat`` with the
  nanosecond boot instant, which refuses a token minted by the Panel in the
  same second the daemon came up; with the ``auth`` limiter (two attempts,
  then one per 5 s) a browser refreshing its token in that second can stall.
* A repeated deny keeps the latest time.  Entries are never pruned: the maps
  are keyed by (user, server) pairs the Panel knows, so they stay as small as
  the Panel's own permission tables, like upstream's.
* All methods run on the reactor thread; no locking.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from .tokens import WEBSOCKET, ScopeMismatch, check_scope

#: The JWT error texts of §5.3/§5.4; the frontend matches two of them.
NO_JWT = "jwt: no jwt present"
EXP_INVALID = "jwt: exp claim is invalid"
DENYLISTED = "jwt: created too far in past (denylist)"
MISSING_CONNECT = "jwt: missing connect permission"
UUID_MISMATCH = "jwt: server uuid mismatch"


def _number(value: object) -> float | None:
    """
    ``value`` as a finite number, or ``None`` (booleans are not numbers).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return float(value)


def _text(value: object) -> str | None:
    """
    ``value`` when it is a non-empty string, else ``None``.
    """
    return value if isinstance(value, str) and value else None


class Denials:
    """
    The deny lists of websocket tokens.

    :param boot_time: the daemon's start time in seconds (``node.boot_time``).
    """

    def __init__(self, boot_time: float) -> None:
        self.boot_time = boot_time
        #: Changes whenever an entry is added: a verdict cached for the
        #: same generation is still right.
        self.generation = 0
        self._jtis: dict[str, float] = {}
        self._users: dict[tuple[str, str], float] = {}

    def deny_jtis(self, jtis: Iterable[str], now: float) -> None:
        """
        Deny every token with one of these ``jti`` values issued up to
        ``now`` (``POST /api/servers/{uuid}/ws/deny``).
        """
        for jti in jtis:
            self._jtis[jti] = max(now, self._jtis.get(jti, now))
        self.generation += 1

    def deauthorize(self, user_uuid: str, server_uuids: Iterable[str], now: float) -> None:
        """
        Deny every token of ``user_uuid`` for these servers issued up to
        ``now`` (``POST /api/deauthorize-user``).
        """
        for server_uuid in server_uuids:
            key = (server_uuid, user_uuid)
            self._users[key] = max(now, self._users.get(key, now))
        self.generation += 1

    def denied(self, claims: Mapping[str, Any]) -> bool:
        """
        Whether a decoded websocket token is revoked (see the module
        docstring for the rules).
        """
        iat = _number(claims.get("iat"))
        if iat is None:
            return True
        if math.floor(iat) < math.floor(self.boot_time):
            return True
        jti = claims.get("jti")
        if isinstance(jti, str):
            denied_at = self._jtis.get(jti)
            if denied_at is not None and iat <= denied_at:
                return True
        server_uuid = _text(claims.get("server_uuid"))
        user_uuid = _text(claims.get("user_uuid"))
        if server_uuid is None or user_uuid is None:
            return True
        denied_at = self._users.get((server_uuid, user_uuid))
        return denied_at is not None and iat <= denied_at

    def __len__(self) -> int:
        """
        Number of deny entries held (both maps).
        """
        return len(self._jtis) + len(self._users)


def token_error(claims: Mapping[str, Any] | None, *, now: float, server_uuid: str,
                denials: Denials, require_scope: bool) -> str | None:
    """
    The token check of §5.4 (and steps 4–7 of §4.3): the ``jwt error`` text
    for ``claims`` (decoded and signature-checked), or ``None`` when valid.
    """
    if claims is None:
        return NO_JWT
    if math.floor(now) > claims.get("exp", 0):
        return EXP_INVALID
    if denials.denied(claims):
        return DENYLISTED
    permissions = claims.get("permissions")
    if not isinstance(permissions, list) or not (
            "websocket.connect" in permissions or "*" in permissions):
        return MISSING_CONNECT
    try:
        check_scope(claims, WEBSOCKET.scope, require_scope=require_scope)
    except ScopeMismatch:
        return MISSING_CONNECT
    if claims.get("server_uuid") != server_uuid:
        return UUID_MISMATCH
    return None


def has_permission(claims: Mapping[str, Any] | None, permission: str, denials: Denials) -> bool:
    """
    ``HasPermission`` of §4.3: listed exactly, or ``*`` for a permission not
    starting with ``admin``; never while the token is denied.
    """
    if claims is None:
        return False
    permissions = claims.get("permissions")
    if not isinstance(permissions, list):
        return False
    if permission not in permissions and not (
            "*" in permissions and not permission.startswith("admin")):
        return False
    return not denials.denied(claims)
