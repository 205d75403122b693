"""
The node's bearer token (api.md §2.5): the ``Authorization`` check of every
``/api`` route the Panel calls.

Pure module: no Twisted imports.  The key is passed on every call, so a
token rotation through ``/api/update`` applies to the very next request.

``check_bearer`` strips SP/HTAB around the header value before splitting,
exactly as an HTTP parser does with a field value, so ``"Bearer "`` is the
401 of the case table whether or not the caller's parser already stripped
it.  An empty configured token never authenticates anything.
"""

from __future__ import annotations

import hmac

__all__ = ["BearerError", "MissingBearer", "WrongBearer", "check_bearer"]


class BearerError(Exception):
    """
    The ``Authorization`` header did not authenticate the request.
    """


class MissingBearer(BearerError):
    """
    No usable ``Bearer <token>`` header: answer 401 with
    ``WWW-Authenticate: Bearer``.
    """

    status = 401
    message = "The required authorization heads were not present in the request."


class WrongBearer(BearerError):
    """
    A well-formed ``Bearer`` header carrying the wrong token: answer 403.
    """

    status = 403
    message = "You are not authorized to access this endpoint."


def check_bearer(header: bytes | None, token: str) -> None:
    """
    Check an ``Authorization`` header value against the node token.

    Follows api.md §2.5: split at the first space into two parts; the first
    must be exactly ``Bearer`` and the second is compared with ``token`` in
    constant time.  Returns ``None`` when the request is authenticated.

    :param header: the raw header value, or ``None`` when absent.
    :param token: the node token as currently configured (re-read per request).
    :raises MissingBearer: absent, empty or malformed header (401).
    :raises WrongBearer: the token does not match, or no token is configured (403).
    """
    value = (header or b"").strip(b" \t")
    parts = value.split(b" ", 1)
    if len(parts) != 2 or parts[0] != b"Bearer":
        raise MissingBearer("no Bearer credentials")
    expected = token.encode("utf-8")
    # compare_digest first, so the timing does not depend on whether a token
    # is configured; an empty configured token must still never match.
    matches = hmac.compare_digest(parts[1], expected)
    if not matches or not expected:
        raise WrongBearer("bearer token mismatch")
