"""
Who may push a server to this node: the ``Authorization`` header of ``POST /api/transfers`` and
the transfer JWT it carries (transfers.md §4.1).

1. The header splits at the first space; the first part must be exactly ``Bearer`` and the second
   non-empty, else `MissingAuthorization` (401 with ``WWW-Authenticate: Bearer``).
2. The JWT is verified with this node's daemon token by the validator every signed token goes
   through (``auth.tokens``, kind ``TRANSFER``): HS256 only, ``exp`` required and inclusive and at
   most a day ahead, ``aud``/``iss``/``iat``/``nbf`` not checked; ``scope``, when present, must
   name ``transfer`` (required only with ``tokens.require_scope``); a token carrying another kind's
   marker claim (``permissions``, ``file_path``, ``backup_uuid``) is refused.
3. ``sub`` must be a UUID.  Parsed as leniently as upstream (upper case, braces, ``urn:uuid:``, the
   32-digit form) and continued with its canonical lower-case hyphenated form; it must be a
   version 4 UUID (project).
4. [project] A ``server_uuid`` claim, which the Panel never puts in a transfer token, must name
   the same server as ``sub``: a token minted for one server cannot stand for another.

Every refusal after step 1 is `BadTransferToken` (403, "The provided token is invalid or has
expired.").  ``unique_id`` is not single-use (§4.1 step 5).  Pure: no Twisted.
"""

from __future__ import annotations

import uuid as _uuid
from dataclasses import dataclass
from typing import Any, Mapping

from ..auth import TRANSFER, InvalidToken

__all__ = ["BadTransferToken", "MissingAuthorization", "TransferGrant", "authorize",
           "bearer_token", "canonical_uuid"]


class MissingAuthorization(Exception):
    """
    No usable ``Bearer`` header: 401.
    """

    status = 401
    message = "The required authorization heads were not present in the request."


class BadTransferToken(Exception):
    """
    The token is not a valid transfer token of this node: 403.
    """

    status = 403
    message = "The provided token is invalid or has expired."


@dataclass(frozen=True)
class TransferGrant:
    """
    A verified transfer token: the server it moves (canonical UUID) and every claim.
    """

    uuid: str
    claims: Mapping[str, Any]


def bearer_token(header: bytes | None) -> bytes:
    """
    The token of an ``Authorization: Bearer <token>`` value (step 1).

    :raises MissingAuthorization: absent, not ``Bearer``, or empty.
    """
    value = (header or b"").strip(b" \t")
    scheme, _, token = value.partition(b" ")
    token = token.strip(b" \t")
    if scheme != b"Bearer" or not token:
        raise MissingAuthorization()
    return token


def canonical_uuid(value: object) -> str | None:
    """
    The canonical form of a UUID written any way upstream accepts, or ``None``.
    """
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        parsed = _uuid.UUID(value.strip())
    except ValueError:
        return None
    return str(parsed)


def authorize(header: bytes | None, key: str, *, now: float,
              require_scope: bool = False) -> TransferGrant:
    """
    Steps 1–4 of the module docstring.

    :param key: this node's daemon token as configured now.
    :raises MissingAuthorization: step 1.
    :raises BadTransferToken: steps 2–4.
    """
    token = bearer_token(header)
    try:
        claims = TRANSFER.decode(token, key, now=now, require_scope=require_scope)
    except InvalidToken as e:
        raise BadTransferToken(str(e)) from None
    server = canonical_uuid(claims.get("sub"))
    if server is None or _uuid.UUID(server).version != 4:
        raise BadTransferToken("sub is not a version 4 UUID")
    other = claims.get("server_uuid")
    if other is not None and canonical_uuid(other) != server:
        raise BadTransferToken("server_uuid names another server than sub")
    return TransferGrant(server, claims)
