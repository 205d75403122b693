"""
The whole resource tree, assembled in one place, and the ``Site`` that
serves it.

::

    /api                      bearer auth for everything below (api.md §2.5)
      /system                 GET
      /update                 POST
      /servers                GET, POST
        /{uuid}               GET, DELETE
    /download/file            GET, HEAD (signed URL)
    /download/backup          GET, HEAD (signed URL)
    /upload/file              POST (signed URL, streamed body)

Anything else is a JSON 404; ``OPTIONS`` anywhere is the CORS preflight
(``ApiRequest.process``).

Requests are logged only in debug mode (``debug: true`` or ``--debug``),
as upstream logs them at debug level only; the access log never shows a
``token`` query value.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.web.http import combinedLogFormatter
from twisted.web.resource import Resource
from twisted.web.server import Site

from ..auth import MissingBearer, WrongBearer, check_bearer
from ..websocket.protocol import ConsoleFactory
from ..websocket.resource import DeauthorizeUserResource, is_console_upgrade
from .downloads import download_tree
from .errors import ErrorResource, Forbidden, JsonResource, Unauthorized
from .request import ApiRequest, BodySinks, Subtree
from .servers import ServersResource
from .system import SystemResource, UpdateResource
from .uploads import upload_tree

_TOKEN = re.compile(r"([?&]token=)[^&\s\"]*")


def redacting_log_formatter(timestamp: str, request: Any) -> str:
    """
    The combined log format with signed-URL tokens replaced by ``***``.
    """
    return _TOKEN.sub(r"\1***", combinedLogFormatter(timestamp, request))


class ApiResource(JsonResource):
    """
    ``/api``: checks the node token before any child is looked up, so a bad
    token is 401/403 even for unknown servers and paths (§2.2).
    """

    def __init__(self, node: Any, console: ConsoleFactory) -> None:
        super().__init__()
        self._node = node
        self.putChild(b"system", SystemResource(node))
        self.putChild(b"update", UpdateResource(node))
        self.putChild(b"servers", ServersResource(node, console))
        self.putChild(b"deauthorize-user", DeauthorizeUserResource(node))

    def getChildWithDefault(self, path: bytes, request: Any) -> Resource:
        """
        Authenticate, then traverse.  The console upgrade is the one route
        below ``/api`` without the node token: it authenticates inside the
        socket (websocket.md §1.1).
        """
        if is_console_upgrade(path, request):
            return super().getChildWithDefault(path, request)
        header = request.requestHeaders.getRawHeaders(b"Authorization")
        try:
            check_bearer(header[0] if header else None, self._node.config.token)
        except MissingBearer:
            return ErrorResource(Unauthorized())
        except WrongBearer:
            return ErrorResource(Forbidden())
        return super().getChildWithDefault(path, request)

    def render(self, request: Any) -> Any:
        """
        ``/api`` itself: authenticate, then 404.
        """
        return self.getChildWithDefault(b"", request).render(request)


class ApiSite(Site):
    """
    The daemon's HTTP site.
    """

    requestFactory = ApiRequest

    def __init__(self, resource: Resource, node: Any, *, body_sinks: BodySinks | None = None,
                 access_log: bool = False, **kwargs: Any) -> None:
        """
        :param body_sinks: of the routes below ``resource``, paths relative
            to it (``build_root`` collects them).
        """
        kwargs.setdefault("logFormatter", redacting_log_formatter)
        super().__init__(resource, **kwargs)
        self.node = node
        self.access_log = access_log
        # (method, absolute path) -> the factory of the object that takes the
        # request body instead of request.content (ApiRequest.gotLength).
        self.body_sinks: BodySinks = {(method, b"/" + path): factory for (method, path), factory
                                      in (body_sinks or {}).items()}

    def log(self, request: Any) -> None:
        """
        One access-log line per request, in debug mode only.
        """
        if self.access_log:
            super().log(request)


def mount(parent: Resource, name: bytes, subtree: Subtree, body_sinks: BodySinks) -> None:
    """
    Put ``subtree`` under ``parent`` as ``name``, and its body sinks into
    ``body_sinks`` (those of ``parent``) with their paths prefixed by
    ``name``, so that mounts nest.
    """
    parent.putChild(name, subtree.resource)
    for (method, path), factory in subtree.body_sinks.items():
        body_sinks[(method, name + b"/" + path if path else name)] = factory


def build_root(node: Any) -> Subtree:
    """
    The resource tree, with the one websocket factory every console socket
    of the node is built by, and the body sinks of its routes.
    """
    root = JsonResource()
    body_sinks: BodySinks = {}
    root.putChild(b"api", ApiResource(node, ConsoleFactory(node)))
    root.putChild(b"download", download_tree(node))
    mount(root, b"upload", upload_tree(node), body_sinks)
    return Subtree(root, body_sinks)


def build_site(node: Any, **kwargs: Any) -> ApiSite:
    """
    The site serving ``node``.
    """
    root = build_root(node)
    return ApiSite(root.resource, node, body_sinks=root.body_sinks, **kwargs)
