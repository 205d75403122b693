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
from .request import ApiRequest, SinkFactory
from .servers import ServersResource
from .system import SystemResource, UpdateResource
from .uploads import upload_sink_factory, upload_tree

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

    def __init__(self, resource: Resource, node: Any, *, access_log: bool = False,
                 **kwargs: Any) -> None:
        kwargs.setdefault("logFormatter", redacting_log_formatter)
        super().__init__(resource, **kwargs)
        self.node = node
        self.access_log = access_log
        self.body_sinks: dict[tuple[bytes, bytes], SinkFactory] = {
            (b"POST", b"/upload/file"): upload_sink_factory(node)}


    def log(self, request: Any) -> None:
        """
        One access-log line per request, in debug mode only.
        """
        if self.access_log:
            super().log(request)


def build_root(node: Any) -> Resource:
    """
    The resource tree, with the one websocket factory every console socket
    of the node is built by.
    """
    root = JsonResource()
    root.putChild(b"api", ApiResource(node, ConsoleFactory(node)))
    root.putChild(b"download", download_tree(node))
    root.putChild(b"upload", upload_tree(node))
    return root


def build_site(node: Any, *, access_log: bool = False, reactor: Any = None) -> ApiSite:
    """
    The site serving ``node``; its connection timers run on ``reactor``
    (the node's clock when not given).
    """
    return ApiSite(build_root(node), node, access_log=access_log,
                   reactor=reactor if reactor is not None else node.clock)
