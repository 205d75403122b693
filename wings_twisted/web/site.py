"""
The whole resource tree, assembled in one place, and the ``Site`` that
serves it.

::

    /api                      behind the node's BearerGuard unless said otherwise
      /system                 GET
      /update                 POST
      /deauthorize-user       POST
      /servers                GET, POST
        /{uuid}               GET, DELETE, and the per-server routes
          /ws                 GET upgrade: no bearer (the token travels in the socket)
            /deny             POST
          /backup             POST; /delete-all DELETE; /{backup} DELETE; /{backup}/restore POST
          /deleteAllBackups   DELETE
      /transfers              POST: an incoming transfer (transfer JWT, streamed body)
        /{uuid}               DELETE
    /download/file            GET, HEAD (signed URL)
    /download/backup          GET, HEAD (signed URL)
    /upload/file              POST (signed URL, streamed body)

Anything else is a JSON 404 (below ``/api``, after the bearer check);
``OPTIONS`` anywhere is the CORS preflight (``ApiRequest.process``).  Auth is
declared where each subtree is mounted (``guard.BearerGuard``), never
decided by looking at the path.

Requests are logged only in debug mode (``debug: true`` or ``--debug``),
as upstream logs them at debug level only; the access log never shows a
``token`` query value.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.web import http
from twisted.web.http import combinedLogFormatter
from twisted.web.resource import IResource, Resource
from twisted.internet.interfaces import IReactorTime
from twisted.web.server import Request, Site

from ..backups import BackupServices
from ..files import FileServices
from ..node import Node
from ..transfers.services import TransferServices

from ..websocket.protocol import ConsoleFactory
from .channel import ApiChannel, ConnectionGuard
from .console import DeauthorizeUserResource
from .downloads import download_tree
from .errors import ErrorResource, JsonResource, NotFound
from .guard import BearerGuard
from .request import ApiRequest, BodySinks, Subtree
from .servers import ServersBranch
from .system import SystemResource, UpdateResource
from .transfers import TransfersBranch, transfer_sink_factory
from .uploads import upload_tree

_TOKEN = re.compile(r"([?&]token=)[^&\s\"]*")


def redacting_log_formatter(timestamp: str, request: Request) -> str:
    """
    The combined log format with signed-URL tokens replaced by ``***``.
    """
    return _TOKEN.sub(r"\1***", combinedLogFormatter(timestamp, request))


class ApiBranch(JsonResource):
    """
    ``/api``: every child behind the node's bearer token except where a
    branch says otherwise (``servers`` mounts the console upgrade outside
    it); unknown paths are a 404 after the check (§2.2).
    """

    def __init__(self, node: Node, console: ConsoleFactory, services: FileServices,
                 backups: BackupServices | None = None,
                 transfers: TransferServices | None = None) -> None:
        super().__init__()
        self._node = node
        transfers = transfers or TransferServices.for_reactor(node, node.clock)
        self.putChild(b"system", self._guard(SystemResource(node)))
        self.putChild(b"update", self._guard(UpdateResource(node)))
        self.putChild(b"servers", ServersBranch(node, console, services, backups, transfers))
        self.putChild(b"deauthorize-user", self._guard(DeauthorizeUserResource(node)))
        # The JWT authenticates POST; {uuid} below it has its own guard.
        self.putChild(b"transfers", TransfersBranch(node, transfers))

    def _guard(self, resource: IResource) -> BearerGuard:
        return BearerGuard(resource, lambda: str(self._node.config.token))

    def getChild(self, path: bytes, request: Request) -> IResource:
        """
        No such route: 401/403 without the token, else 404.
        """
        return self._guard(ErrorResource(NotFound()))

    def render(self, request: Request) -> int | bytes:
        """
        ``/api`` itself: authenticate, then 404.
        """
        result: int | bytes = self.getChild(b"", request).render(request)
        return result


class ApiSite(Site):
    """
    The daemon's HTTP site.
    """

    requestFactory = ApiRequest
    # HTTP/1.1 only (downloads-uploads.md §7.3): the channel itself, not the
    # generic HTTP/2-negotiating wrapper.
    protocol = ApiChannel  # type: ignore[assignment]

    def __init__(self, resource: IResource, node: Node, *, body_sinks: BodySinks | None = None,
                 access_log: bool = False, reactor: IReactorTime | None = None,
                 **kwargs: Any) -> None:
        """
        :param body_sinks: of the routes below ``resource``, paths relative
            to it (``build_root`` collects them).
        :param reactor: runs the connection timers (default: the node's clock).
        """
        kwargs.setdefault("logFormatter", redacting_log_formatter)
        api = node.config.api
        kwargs.setdefault("timeout", api.idle_timeout or None)
        super().__init__(resource, reactor=reactor if reactor is not None else node.clock,
                         **kwargs)
        self.node = node
        #: unauthenticated connections per client IP (channel.py)
        self.guard = ConnectionGuard(api.max_unauthenticated_per_ip)
        self.access_log = access_log
        # (method, absolute path) -> the factory of the object that takes the
        # request body instead of request.content (ApiRequest.gotLength).
        self.body_sinks: BodySinks = {(method, b"/" + path): factory for (method, path), factory
                                      in (body_sinks or {}).items()}

    def buildProtocol(self, addr: Any) -> Any:
        """
        An ``ApiChannel`` with the configured timeouts and the per-IP guard.
        """
        channel = super().buildProtocol(addr)
        if isinstance(channel, ApiChannel):
            api = self.node.config.api
            channel.guard = self.guard
            channel.header_timeout = api.header_timeout
            channel.keepalive_timeout = api.keepalive_timeout
        return channel

    def log(self, request: http.Request) -> None:
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


def build_root(node: Node, backups: BackupServices | None = None,
               transfers: TransferServices | None = None) -> Subtree:
    """
    The resource tree, with the one websocket factory every console socket
    of the node is built by, and the body sinks of its routes.

    :param backups: the node's backups (``tap`` makes them with their own
        worker pool); one running jobs on ``node.run_blocking`` otherwise.
    :param transfers: the node's transfers (default: for the node's clock).
    """
    root = JsonResource()
    body_sinks: BodySinks = {}
    backups = backups if backups is not None else BackupServices(node)
    transfers = transfers or TransferServices.for_reactor(node, node.clock)
    root.putChild(b"api", ApiBranch(node, ConsoleFactory(node), FileServices(node), backups,
                                    transfers))
    body_sinks[(b"POST", b"api/transfers")] = transfer_sink_factory(transfers)
    root.putChild(b"download", download_tree(node, backups.servable))
    mount(root, b"upload", upload_tree(node), body_sinks)
    return Subtree(root, body_sinks)


def build_site(node: Node, *, access_log: bool = False,
               reactor: IReactorTime | None = None,
               backups: BackupServices | None = None,
               transfers: TransferServices | None = None) -> ApiSite:
    """
    The site serving ``node``; its connection timers run on ``reactor``
    (the node's clock when not given), as do the worker threads of its
    transfers (``transfers``, made for ``reactor`` when not given).
    """
    if transfers is None:
        transfers = TransferServices.for_reactor(node, reactor if reactor is not None
                                                 else node.clock)
    root = build_root(node, backups, transfers)
    return ApiSite(root.resource, node, body_sinks=root.body_sinks, access_log=access_log,
                   reactor=reactor)
