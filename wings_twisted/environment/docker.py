"""
The Docker Engine API client: the one place the daemon talks to the
container engine.  It starts with what ``GET /api/system?v=2`` needs (api.md
§3.1) and is meant to grow into the client of the Docker environment.

Connection (config.md §5): ``DOCKER_HOST`` names the engine, default
``unix:///var/run/docker.sock``.  Supported forms are ``unix:///path`` and
``tcp://host[:port]`` (plain HTTP, default port 2375).  TLS
(``DOCKER_TLS_VERIFY``, ``DOCKER_CERT_PATH``, ``https://``) and ``ssh://`` /
``npipe://`` are not supported yet: ``DockerClient.from_environment`` refuses
them with a ``DockerError`` rather than silently talking plain HTTP.

API version: ``DOCKER_API_VERSION`` (``<major>.<minor>``) is used as is, with
no negotiation, as Docker's own client does.  Otherwise the first call asks
``GET /_ping`` (an unversioned path) and uses the lower of the engine's
``API-Version`` header and ``MAX_API_VERSION``; an engine that sends no such
header gets ``FALLBACK_API_VERSION`` (Docker's client does the same).  Every
other request goes to ``/v<version>/...``: versioned paths pin the JSON shapes
we decode, where unversioned paths would follow whatever the engine speaks
today.  A negotiated version is kept for the client's lifetime; a failed
negotiation is retried by the next call.

Requests go through a treq ``HTTPClient`` whose agent connects with an
endpoint factory (a ``UNIXClientEndpoint`` for unix sockets), on the reactor
passed in.  Each call has one deadline (``timeout`` seconds, default
``DEFAULT_TIMEOUT``) covering the connection, the response head (treq's
``timeout=``) and the body; it is passed to treq together with ``reactor=`` so
no global reactor is touched.  Every failure, transport errors included, is a
``DockerError`` with a readable message.

Wire format read here (Docker Engine API, ``GET /version`` and ``GET /info``)::

    /version  {"Version": "24.0.7", "ApiVersion": "1.43", ...}
    /info     {"Containers": 12, "ContainersRunning": 3, "ContainersPaused": 0,
               "ContainersStopped": 9, "Driver": "overlay2",
               "DriverStatus": [["Backing Filesystem", "extfs"], ...],
               "CgroupDriver": "systemd", "CgroupVersion": "2",
               "RuncCommit": {"ID": "v1.1.10-0-g18a0cb0", ...},
               "MemTotal": 33554432000, "OperatingSystem": "Debian GNU/Linux 12 (bookworm)", ...}
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping, cast
from urllib.parse import urlsplit

from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from .. import __version__
from ..reactor import IReactor

log = Logger()

DEFAULT_HOST = "unix:///var/run/docker.sock"
#: ``sizeof(sockaddr_un.sun_path)`` on Linux, less the terminating NUL.
MAX_SOCKET_PATH = 107
DEFAULT_TCP_PORT = 2375
MAX_API_VERSION = "1.41"
FALLBACK_API_VERSION = "1.24"
DEFAULT_TIMEOUT = 15.0
MAX_BODY = 8 * 1024 * 1024

_USER_AGENT = "wings-twisted/{}".format(__version__).encode()
_VERSION = re.compile(r"^(\d+)\.(\d+)$")


class DockerError(Exception):
    """
    The engine could not be reached, did not answer in time, or answered
    with an error (``status`` is the HTTP status, 0 when there was none).
    """

    def __init__(self, message: str, *, status: int = 0) -> None:
        self.message = message
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class DockerHost:
    """
    A parsed ``DOCKER_HOST``: a unix socket ``path``, or a TCP ``host`` and
    ``port``.
    """

    url: str
    path: str = ""
    host: str = ""
    port: int = 0

    @property
    def base_url(self) -> str:
        """
        The URL prefix of every request (the host part is cosmetic for unix
        sockets: the endpoint factory ignores it).
        """
        if self.path:
            return "http://docker"
        host = "[{}]".format(self.host) if ":" in self.host else self.host
        return "http://{}:{}".format(host, self.port)


def parse_docker_host(value: str) -> DockerHost:
    """
    Parse a ``DOCKER_HOST`` value (empty means ``DEFAULT_HOST``); raise
    ``DockerError`` for forms this client does not support.
    """
    value = value or DEFAULT_HOST
    parts = urlsplit(value)
    if parts.scheme == "unix":
        path = parts.path
        if not path.startswith("/"):
            raise DockerError("DOCKER_HOST {!r} does not name an absolute socket path.".format(
                value))
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            # connect(2) cannot address it; Twisted would fail obscurely.
            raise DockerError("DOCKER_HOST {!r}: a socket path may be at most {} bytes long."
                              .format(value, MAX_SOCKET_PATH))
        return DockerHost(value, path=path)
    if parts.scheme in ("tcp", "http"):
        try:
            port = parts.port or DEFAULT_TCP_PORT
        except ValueError:
            raise DockerError("DOCKER_HOST {!r} has an invalid port.".format(value))
        if not parts.hostname:
            raise DockerError("DOCKER_HOST {!r} names no host.".format(value))
        return DockerHost(value, host=parts.hostname, port=port)
    raise DockerError("DOCKER_HOST {!r}: only unix:// and tcp:// engines are supported "
                      "(TLS and ssh are not supported yet).".format(value))


def parse_api_version(value: str) -> tuple[int, int]:
    """
    ``"1.41"`` → ``(1, 41)``; ``DockerError`` when it is not ``<int>.<int>``.
    """
    match = _VERSION.match(value.strip())
    if match is None:
        raise DockerError("{!r} is not a Docker API version (expected e.g. 1.41).".format(value))
    return int(match.group(1)), int(match.group(2))


def negotiated_version(server: str | None) -> str:
    """
    The API version to use against an engine whose ``/_ping`` answered
    ``API-Version: server`` (``None`` when the header was absent).
    """
    if not server:
        return FALLBACK_API_VERSION
    try:
        parsed = parse_api_version(server)
    except DockerError:
        return FALLBACK_API_VERSION
    if parsed < parse_api_version(MAX_API_VERSION):
        return "{}.{}".format(*parsed)
    return MAX_API_VERSION


@implementer(IAgentEndpointFactory)
class EngineEndpointFactory:
    """
    Connects every request to the engine of ``host``, whatever the URL says.
    """

    def __init__(self, reactor: IReactor, host: DockerHost, *, connect_timeout: float) -> None:
        self._reactor = reactor
        self._host = host
        self._connect_timeout = connect_timeout

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        """
        A ``UNIXClientEndpoint`` for a socket, else a ``HostnameEndpoint``.
        """
        timeout = max(1, int(self._connect_timeout))
        if self._host.path:
            return UNIXClientEndpoint(self._reactor, self._host.path, timeout=timeout)
        return HostnameEndpoint(self._reactor, self._host.host, self._host.port,
                                timeout=timeout)


@dataclass(frozen=True)
class EngineInfo:
    """
    What ``GET /api/system?v=2`` needs from the engine: ``docker`` is the
    document's whole ``docker`` block (api.md §3.1); ``memory_bytes``
    (``MemTotal``) and ``operating_system`` (``OperatingSystem``, the
    fallback of ``system.os``) feed its ``system`` block.
    """

    docker: dict[str, Any]
    memory_bytes: int
    operating_system: str


def engine_info_from(version: Mapping[str, Any], info: Mapping[str, Any]) -> EngineInfo:
    """
    Map the answers of ``/version`` and ``/info`` to ``EngineInfo``; missing
    or mistyped fields become ``""`` or ``0`` (older engines lack some).
    """
    filesystem = ""
    status = info.get("DriverStatus")
    for entry in status if isinstance(status, list) else ():
        if isinstance(entry, list) and len(entry) >= 2 and entry[0] == "Backing Filesystem":
            filesystem = _str(entry[1])
            break
    runc = info.get("RuncCommit")
    docker = {
        "version": _str(version.get("Version")),
        "cgroups": {"driver": _str(info.get("CgroupDriver")),
                    "version": _str(info.get("CgroupVersion"))},
        "containers": {"total": _int(info.get("Containers")),
                       "running": _int(info.get("ContainersRunning")),
                       "paused": _int(info.get("ContainersPaused")),
                       "stopped": _int(info.get("ContainersStopped"))},
        "storage": {"driver": _str(info.get("Driver")), "filesystem": filesystem},
        "runc": {"version": _str(runc.get("ID") if isinstance(runc, Mapping) else None)},
    }
    return EngineInfo(docker, _int(info.get("MemTotal")), _str(info.get("OperatingSystem")))


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class _BodyReader(Protocol):
    """
    Collects a response body up to ``MAX_BODY``; cancelling ``done`` drops
    the connection so a stalled engine does not keep it.
    """

    def __init__(self) -> None:
        self.done: Deferred[bytes] = Deferred(self._cancel)
        self._chunks: list[bytes] = []
        self._size = 0

    def _cancel(self, _: Deferred[bytes]) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self._size += len(data)
        if self._size > MAX_BODY:
            self.done.errback(DockerError("The engine's answer exceeds {} bytes.".format(
                MAX_BODY)))
            self._cancel(self.done)
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self._chunks))
        else:
            self.done.errback(reason)


class DockerClient:
    """
    Calls the Docker Engine API through ``http`` at ``base_url``.

    :param clock: the reactor's clock, for timeouts.
    :param api_version: a fixed API version (``DOCKER_API_VERSION``), or
        ``None`` to negotiate.
    :param pool: the connection pool behind ``http``, closed by ``close``.
    """

    def __init__(self, http: HTTPClient, clock: IReactorTime, *, base_url: str = "http://docker",
                 where: str = DEFAULT_HOST, api_version: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT,
                 pool: HTTPConnectionPool | None = None) -> None:
        self._http = http
        self._clock = clock
        self.base_url = base_url.rstrip("/")
        self.where = where
        self.timeout = timeout
        self._pool = pool
        self._api_version: str | None = None
        if api_version:
            parsed = parse_api_version(api_version)
            self._api_version = "{}.{}".format(*parsed)

    @classmethod
    def from_environment(cls, reactor: IReactor, environ: Mapping[str, str], *,
                         timeout: float = DEFAULT_TIMEOUT) -> "DockerClient":
        """
        A client for the engine named by ``DOCKER_HOST`` and
        ``DOCKER_API_VERSION`` in ``environ`` (config.md §5), connecting
        with ``reactor``.  Nothing is connected yet.
        """
        if environ.get("DOCKER_TLS_VERIFY") or environ.get("DOCKER_CERT_PATH"):
            raise DockerError("DOCKER_TLS_VERIFY / DOCKER_CERT_PATH: TLS connections to the "
                              "engine are not supported yet.")
        host = parse_docker_host(environ.get("DOCKER_HOST", ""))
        pool = HTTPConnectionPool(reactor, persistent=True)
        agent = Agent.usingEndpointFactory(
            reactor, EngineEndpointFactory(reactor, host, connect_timeout=timeout), pool=pool)
        return cls(HTTPClient(agent), reactor, base_url=host.base_url, where=host.url,
                   api_version=environ.get("DOCKER_API_VERSION") or None, timeout=timeout,
                   pool=pool)

    def close(self) -> Deferred[None]:
        """
        Close idle connections; fires when they are gone.
        """
        if self._pool is None:
            return succeed(None)
        closed: Deferred[None] = self._pool.closeCachedConnections()
        return closed

    async def request(self, method: str, path: str, *,
                      timeout: float | None = None) -> tuple[int, Any, bytes]:
        """
        One call to ``path`` as given (no version prefix): ``(status,
        headers, body)`` whatever the status; ``DockerError`` when there is
        no complete answer within ``timeout`` seconds.
        """
        timeout = self.timeout if timeout is None else timeout
        started = self._clock.seconds()
        what = "{} {}".format(method, path)
        try:
            response = await self._http.request(
                method, self.base_url + path, headers=Headers({b"User-Agent": [_USER_AGENT]}),
                unbuffered=True, allow_redirects=False, reactor=cast(Any, self._clock),
                timeout=timeout)
            reader = _BodyReader()
            response.deliverBody(reader)
            left = max(timeout - (self._clock.seconds() - started), 0.001)
            body = await reader.done.addTimeout(left, self._clock)
        except CancelledError:
            raise
        except DockerError:
            raise
        except Exception as e:
            if self._clock.seconds() - started >= timeout:
                raise DockerError("The engine at {} did not answer {} within {:g} s.".format(
                    self.where, what, timeout))
            raise DockerError("Cannot reach the engine at {} ({}): {}".format(
                self.where, what, _describe(e)))
        return response.code, response.headers, body

    async def api_version(self) -> str:
        """
        The API version in use, negotiated with ``/_ping`` on first use.
        """
        if self._api_version is None:
            status, headers, body = await self.request("GET", "/_ping")
            if status != 200:
                raise _status_error("GET /_ping", status, body)
            server = headers.getRawHeaders(b"API-Version", [None])[0]
            self._api_version = negotiated_version(
                server.decode("ascii", "replace") if server else None)
            log.debug("Using Docker API {version} (engine offers {server})",
                      version=self._api_version, server=server)
        return self._api_version

    async def get_json(self, path: str, *, timeout: float | None = None) -> Any:
        """
        ``GET /v<version><path>`` and decode its JSON answer; a non-2xx
        status is a ``DockerError`` carrying the engine's ``message``.
        """
        version = await self.api_version()
        versioned = "/v{}{}".format(version, path)
        status, _, body = await self.request("GET", versioned, timeout=timeout)
        if not 200 <= status < 300:
            raise _status_error("GET " + versioned, status, body)
        try:
            return json.loads(body)
        except ValueError:
            raise DockerError("The engine answered GET {} with invalid JSON.".format(versioned),
                              status=status)

    async def version(self) -> dict[str, Any]:
        """
        ``GET /version``: the engine's version document.
        """
        return _object(await self.get_json("/version"), "/version")

    async def info(self) -> dict[str, Any]:
        """
        ``GET /info``: the engine's system-wide information.
        """
        return _object(await self.get_json("/info"), "/info")

    async def engine_info(self) -> EngineInfo:
        """
        ``/version`` and ``/info`` mapped for ``GET /api/system?v=2``.
        """
        version = await self.version()
        info = await self.info()
        return engine_info_from(version, info)


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DockerError("The engine answered GET {} with a non-object.".format(path))
    return value


def _status_error(what: str, status: int, body: bytes) -> DockerError:
    """
    The error for a non-2xx answer; Docker's error body is
    ``{"message": "..."}``.
    """
    try:
        message = str(json.loads(body)["message"])
    except (ValueError, TypeError, KeyError):
        message = body[:200].decode("utf-8", "replace").strip() or "no message"
    return DockerError("The engine answered {} with HTTP {}: {}".format(what, status, message),
                       status=status)


def _describe(error: BaseException) -> str:
    """
    A readable reason for a transport failure; the agent wraps the real
    cause in ``reasons`` lists.
    """
    reasons = getattr(error, "reasons", None)
    if reasons:
        return "; ".join(_describe(r.value) if isinstance(r, Failure) else str(r)
                         for r in reasons)
    return str(error) or error.__class__.__name__
