"""
The development Panel's twisted.web resource tree (panel.md §9.1, §9.3).

Layout::

    /api/remote/...                              RemoteApiResource: the Panel's remote API
    /api/application/nodes/{id}/configuration    ApplicationApiResource (``application.py``)
    /api/client/servers/{server}/backups...      ClientBackupsResource (``backups.py``)
    /s3/...                                      S3Resource: the S3 double (panel.md §9.6)
    /admin/...                                   AdminResource: start transfers (``transfers.py``)
    anything else                                404 in the Panel's error JSON

The remote API accepts the credentials of any node the Panel knows (``node`` and ``nodes``) and
answers each node about its own servers.

Each ``/api/remote`` request is handled in this order: recorded in
``state.received``; matched against ``ROUTES`` (Laravel matches routes before
running middleware, so an unknown route is a 404 even without credentials);
the next scripted fault for the route is consumed (``faults.py``); the
``DaemonAuthenticate`` check of panel.md §1.4 runs; the route's handler runs.

Entry points: ``build_resource(state, reactor)`` for in-memory tests (e.g.
``treq.testing.StubTreq``), ``build_site`` and ``listen`` to serve it on a
real port.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any, Callable, cast

from treq.client import HTTPClient
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.logger import Logger
from twisted.web.resource import IResource, Resource
from twisted.web.client import Agent
from twisted.web.server import NOT_DONE_YET, Request, Site

from . import handlers
from .application import configuration_reply, node_configuration
from .backups import ClientBackupsResource
from .faults import describe
from .handlers import Call, Handler
from .replies import Reply, error_reply, not_found
from .s3 import S3Resource
from .serving import record_request, serve, write_reply
from .sftp import sftp_auth
from .state import DevPanelState, NodeCredentials
from .transfers import AdminResource, DaemonCalls, transfer_failure, transfer_success

log = Logger()


@dataclass(frozen=True)
class Route:
    """
    One remote API route: allowed methods, path template (``{name}``
    segments capture one path segment) and handler.
    """

    methods: tuple[str, ...]
    template: str
    handler: Handler

    def match(self, segments: list[str]) -> dict[str, str] | None:
        """
        The captured parameters when ``segments`` fit the template.
        """
        parts = [p for p in self.template.split("/") if p]
        if len(parts) != len(segments):
            return None
        params: dict[str, str] = {}
        for part, segment in zip(parts, segments):
            if part.startswith("{") and part.endswith("}"):
                if not segment:
                    return None
                params[part[1:-1]] = segment
            elif part != segment:
                return None
        return params


ROUTES: tuple[Route, ...] = (
    Route(("GET",), "/servers", handlers.list_servers),
    Route(("POST",), "/servers/reset", handlers.reset_servers),
    Route(("GET",), "/servers/{uuid}", handlers.get_server),
    Route(("GET",), "/servers/{uuid}/install", handlers.get_install),
    Route(("POST",), "/servers/{uuid}/install", handlers.post_install),
    Route(("GET", "POST"), "/servers/{uuid}/transfer/success", transfer_success),
    Route(("GET", "POST"), "/servers/{uuid}/transfer/failure", transfer_failure),
    Route(("POST",), "/sftp/auth", sftp_auth),
    Route(("GET",), "/backups/{uuid}", handlers.backup_part_urls),
    Route(("POST",), "/backups/{uuid}", handlers.backup_report),
    Route(("POST",), "/backups/{uuid}/restore", handlers.restore_report),
    Route(("POST",), "/activity", handlers.post_activity),
)


def find_route(method: str, segments: list[str]) -> tuple[Route, dict[str, str]] | None:
    """
    The first route accepting ``method`` whose template fits ``segments``
    (``HEAD`` is accepted wherever ``GET`` is).
    """
    for route in ROUTES:
        # Like Laravel, every GET route also answers HEAD.
        if method in route.methods or (method == "HEAD" and "GET" in route.methods):
            params = route.match(segments)
            if params is not None:
                return route, params
    return None


def check_authorization(header: str | None, node: NodeCredentials) -> Reply | None:
    """
    The Panel's ``DaemonAuthenticate`` middleware (panel.md §1.4): ``None``
    when the header carries ``Bearer <token_id>.<token>`` of this node,
    otherwise the 401/400/403 reply.

    The bearer token is extracted like Laravel's ``Request::bearerToken()``
    (text after the last ``Bearer ``, cut at a comma); both halves are
    compared in constant time.
    """
    position = (header or "").rfind("Bearer ")
    if header is None or position < 0:
        return error_reply(
            401,
            "Access to this endpoint must include an Authorization header.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    token = header[position + 7 :].split(",", 1)[0]
    parts = token.split(".")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        return error_reply(400, "The Authorization header provided was not in a valid format.")
    id_ok = hmac.compare_digest(parts[0].encode("utf-8"), node.token_id.encode("utf-8"))
    secret_ok = hmac.compare_digest(parts[1].encode("utf-8"), node.token.encode("utf-8"))
    if not (id_ok and secret_ok):
        return error_reply(403, "You are not authorized to access this resource.")
    return None


def authenticate(header: str | None, state: DevPanelState) -> tuple[Reply | None, str]:
    """
    ``check_authorization`` against every node: ``(None, node name)`` for the node whose
    credentials the header carries, else the refusal (as the first node would answer it).
    """
    refusal = None
    for node in state.all_nodes():
        denied = check_authorization(header, node)
        if denied is None:
            return None, node.name
        refusal = refusal or denied
    return refusal, ""


class RemoteApiResource(Resource):
    """
    Everything below ``/api/remote``: one leaf that records, routes, applies
    faults, authenticates and calls the route's handler.
    """

    isLeaf = True

    def __init__(self, state: DevPanelState, reactor: IReactorTime) -> None:
        super().__init__()
        self._state = state
        self._reactor = reactor

    def render(self, request: Request) -> int:
        """
        Answer any method; see the module docstring for the order of steps.
        """
        segments = [s.decode("utf-8", "replace") for s in request.postpath or []]
        if segments and segments[-1] == "":
            segments.pop()
        method = request.method.decode("ascii", "replace").upper()
        found = find_route(method, segments)
        route, params = found if found is not None else (None, {})
        record = record_request(self._state, request, self._reactor.seconds(), route.template if route else None)
        fault = self._state.faults.pop(method, record.path, record.route)
        if fault is not None:
            record.fault = describe(fault)
            log.info("devpanel: {method} {path}: scripted {fault}", method=method, path=record.path, fault=record.fault)

        def normal() -> Reply | Deferred[Reply]:
            if route is None:
                return not_found()
            denied, caller = authenticate(record.headers.get("authorization"), self._state)
            if denied is not None:
                return denied
            call = Call(
                state=self._state,
                method=method,
                params=params,
                query=record.query,
                body=record.body,
                client_ip=record.client_ip,
                now=self._reactor.seconds(),
                node=caller,
            )
            return route.handler(call)

        def done(status: int | None) -> None:
            record.status = status

        serve(request, self._reactor, fault, normal, done)
        return NOT_DONE_YET


class ApplicationApiResource(Resource):
    """
    Below ``/api/application``: the node configuration ``wings configure``
    fetches, recorded and open to scripted faults like the remote API.
    """

    isLeaf = True
    TEMPLATE = "/api/application/nodes/{id}/configuration"

    def __init__(self, state: DevPanelState, reactor: IReactorTime) -> None:
        super().__init__()
        self._state = state
        self._reactor = reactor

    def render(self, request: Request) -> int:
        """
        Answer ``GET nodes/{id}/configuration``; anything else is a 404.
        """
        segments = [s.decode("utf-8", "replace") for s in request.postpath or []]
        if segments and segments[-1] == "":
            segments.pop()
        method = request.method.decode("ascii", "replace").upper()
        matched = (method in ("GET", "HEAD") and len(segments) == 3
                   and segments[0] == "nodes" and segments[2] == "configuration")
        record = record_request(self._state, request, self._reactor.seconds(),
                                self.TEMPLATE if matched else None)
        fault = self._state.faults.pop(method, record.path, record.route)

        def normal() -> Reply:
            if not matched:
                return not_found()
            state = self._state
            configuration = node_configuration(
                state.application, token_id=state.node.token_id, token=state.node.token,
                daemon_url=state.node.daemon_url, panel_url=state.node.url)
            return configuration_reply(state.application, record.headers.get("authorization"),
                                       segments[1], configuration)

        def done(status: int | None) -> None:
            record.status = status

        serve(request, self._reactor, fault, normal, done)
        return NOT_DONE_YET


class _NotFound(Resource):
    """
    A leaf answering 404 in the Panel's error JSON.
    """

    isLeaf = True

    def render(self, request: Request) -> int:
        """
        Always 404.
        """
        write_reply(request, not_found())
        return NOT_DONE_YET


class _Api(Resource):
    """
    ``/api``: ``remote`` and ``application`` below it.
    """

    def __init__(self, remote: IResource, application: IResource, client: IResource) -> None:
        super().__init__()
        self._remote = remote
        self._application = application
        self._client = client

    def getChild(self, path: bytes, request: Request) -> IResource:
        """
        ``remote``, ``application`` or a JSON 404.
        """
        if path == b"remote":
            return self._remote
        if path == b"application":
            return self._application
        if path == b"client":
            return self._client
        return _NotFound()

    def render(self, request: Request) -> int:
        """
        ``/api`` itself is not a route.
        """
        return _NotFound().render(request)


class _Root(Resource):
    """
    ``/``: ``api`` and ``s3`` below it, a JSON 404 for anything else.
    """

    def __init__(self, state: DevPanelState, reactor: IReactorTime,
                 calls: DaemonCalls | None) -> None:
        super().__init__()
        self._api = _Api(RemoteApiResource(state, reactor),
                         ApplicationApiResource(state, reactor),
                         ClientBackupsResource(state, reactor))
        self._s3 = S3Resource(state, reactor)
        self._admin = AdminResource(state, calls)

    def getChild(self, path: bytes, request: Request) -> IResource:
        """
        Dispatch on the first path segment.
        """
        if path == b"api":
            return self._api
        if path == b"s3":
            return self._s3
        if path == b"admin":
            return self._admin
        return _NotFound()

    def render(self, request: Request) -> int:
        """
        ``/`` itself is not a route.
        """
        return _NotFound().render(request)


def build_resource(state: DevPanelState, reactor: IReactorTime,
                   daemons: HTTPClient | None = None) -> IResource:
    """
    The root resource of the development Panel; ``reactor`` provides
    ``seconds`` (request timestamps, throttle) and ``callLater`` (delays).

    :param daemons: the Panel's HTTP client to its nodes' daemons (transfers:
        the call to the source, the deletion after success); none by default.
    """
    calls = None
    if daemons is not None:
        calls = DaemonCalls(state, daemons, reactor)
        state.daemon_calls = calls
    return _Root(state, reactor, calls)


def build_site(state: DevPanelState, reactor: Any) -> Site:
    """
    A ``Site`` serving ``build_resource`` with a client of the daemons on ``reactor``.
    """
    daemons = HTTPClient(Agent(reactor))
    site = Site(build_resource(state, reactor, daemons), reactor=reactor)
    return site


@dataclass
class RunningPanel:
    """
    A listening development Panel: ``url`` is ``http://host:port``.
    """

    port: IListeningPort
    url: str

    def stop(self) -> Deferred[None]:
        """
        Stop listening.
        """
        return maybeDeferred(cast(Callable[[], Any], self.port.stopListening))


async def _listen(state: DevPanelState, reactor: Any, description: str, set_url: bool) -> RunningPanel:
    port = await serverFromString(reactor, description).listen(build_site(state, reactor))
    address = port.getHost()
    url = "http://{}:{}".format(address.host, address.port)
    if set_url:
        state.node.url = url
    log.info("devpanel listening on {url}", url=url)
    return RunningPanel(port, url)


def listen(
    state: DevPanelState, reactor: Any, description: str = "tcp:0:interface=127.0.0.1", *, set_url: bool = True
) -> Deferred[RunningPanel]:
    """
    Serve the Panel on the endpoint ``description`` (default: an ephemeral
    loopback port).  With ``set_url`` the state's Panel URL (JWT ``iss``,
    pagination links, S3 part URLs) becomes the bound address.
    """
    return Deferred.fromCoroutine(_listen(state, reactor, description, set_url))
