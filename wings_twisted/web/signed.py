"""
The token checks shared by the three signed-URL routes (downloads-uploads.md
§2.2 steps 1–8): verify, find the server, consume the single-use id.
"""

from __future__ import annotations

from typing import Any

from ..auth import InvalidToken, TokenKind
from ..node import Node
from ..servers.server import Server
from .channel import mark_authenticated
from .errors import NOT_FOUND_ON_SERVER, ApiError, InvalidTokenError
from .request import ApiRequest



def verify_signed_token(node: Node, token: bytes | None, kind: TokenKind,
                        request: ApiRequest | None = None) -> tuple[dict[str, Any], Server]:
    """
    Steps 1–7: the token's claims and the server it names.  Raises the 403
    (invalid token) or 404 (unknown server) ApiError.
    """
    config = node.config
    if not token:
        raise InvalidTokenError()
    try:
        claims = kind.decode(token, config.token, now=node.clock.seconds(),
                             require_scope=config.tokens.require_scope)
    except InvalidToken:
        raise InvalidTokenError()
    if request is not None:
        mark_authenticated(request)
    server = node.registry.get(claims["server_uuid"])
    if server is None:
        raise ApiError(NOT_FOUND_ON_SERVER, status=404)
    return claims, server


def consume_token(node: Node, request: ApiRequest, claims: dict[str, Any], *, is_range: bool,
                  resumable: bool) -> None:
    """
    Step 8: record the ``unique_id``; a reuse is refused with 404 unless the
    Range continuation rule allows it (§2.3).  Only downloads are
    ``resumable`` (and only while ``api.downloads.allow_range_resume``); an
    id first used by an upload can never be continued by anything.
    """
    allow = resumable and node.config.api.downloads.allow_range_resume
    ok = node.tokens.consume(claims["unique_id"], client_ip=request.client_ip(), exp=claims["exp"],
                             is_range=is_range, allow_resume=allow)
    if not ok:
        raise ApiError(NOT_FOUND_ON_SERVER, status=404)
