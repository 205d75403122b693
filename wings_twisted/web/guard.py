"""
Bearer authentication declared where a subtree is mounted (api.md §2.5).

``BearerGuard(inner, token)`` stands in the tree for ``inner``: traversal
through it, or rendering it, first checks the ``Authorization`` header
against the node token (read through ``token`` on every request, so a
rotation by ``POST /api/update`` applies at once), then continues into
``inner`` as if the guard were not there.  A missing or malformed header is
the 401 envelope with ``WWW-Authenticate: Bearer``, a wrong token the 403.

Mounting the guard above a lookup (a server UUID, an unknown path) is what
makes a bad token a 401/403 before any 404 (§2.2).  Routes authenticated
otherwise — the console upgrade (its token travels inside the socket,
websocket.md §1.1), the signed-URL routes and ``POST /api/transfers``
(JWTs) — are simply mounted outside any guard.
"""

from __future__ import annotations

from typing import Callable

from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from ..auth.bearer import MissingBearer, WrongBearer, check_bearer
from .channel import mark_authenticated
from .errors import ApiError, ErrorResource, Forbidden, Unauthorized


def bearer_error(request: Request, token: str) -> ApiError | None:
    """
    The error a request's ``Authorization`` header earns, ``None`` when it
    carries ``token``.
    """
    header = request.requestHeaders.getRawHeaders(b"Authorization")
    try:
        check_bearer(header[0] if header else None, token)
    except MissingBearer:
        return Unauthorized()
    except WrongBearer:
        return Forbidden()
    mark_authenticated(request)
    return None


class BearerGuard(Resource):
    """
    ``inner`` behind the node's bearer token.
    """

    def __init__(self, inner: IResource, token: Callable[[], str]) -> None:
        super().__init__()
        self._inner = inner
        self._token = token
        # Traversal must stop where the inner resource stops.
        self.isLeaf = bool(getattr(inner, "isLeaf", False))

    def getChildWithDefault(self, path: bytes, request: Request) -> IResource:
        """
        Authenticate, then traverse into ``inner``.
        """
        error = bearer_error(request, self._token())
        if error is not None:
            return ErrorResource(error)
        child: IResource = self._inner.getChildWithDefault(path, request)
        return child

    def render(self, request: Request) -> int | bytes:
        """
        Authenticate, then render ``inner``.
        """
        error = bearer_error(request, self._token())
        if error is not None:
            return ErrorResource(error).render(request)
        result: int | bytes = self._inner.render(request)
        return result
