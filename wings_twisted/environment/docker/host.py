"""
Where the engine is and which API version to speak (config.md §5).

``DOCKER_HOST`` names the engine, default ``unix:///var/run/docker.sock``.
Supported forms are ``unix:///path`` and ``tcp://host[:port]`` (plain HTTP,
default port 2375).  TLS (``DOCKER_TLS_VERIFY``, ``DOCKER_CERT_PATH``,
``https://``) and ``ssh://`` / ``npipe://`` are not supported:
``parse_docker_host`` refuses them with a ``DockerError`` rather than
silently talking plain HTTP.

API version: ``DOCKER_API_VERSION`` (``<major>.<minor>``) is used as is, as
Docker's own client does; otherwise the lower of the engine's ``API-Version``
(from ``GET /_ping``) and ``MAX_API_VERSION``, or ``FALLBACK_API_VERSION``
when the engine sends none.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from ...reactor import IReactor
from .errors import DockerError

DEFAULT_HOST = "unix:///var/run/docker.sock"
#: ``sizeof(sockaddr_un.sun_path)`` on Linux, less the terminating NUL.
MAX_SOCKET_PATH = 107
DEFAULT_TCP_PORT = 2375
MAX_API_VERSION = "1.41"
FALLBACK_API_VERSION = "1.24"

_VERSION = re.compile(r"^(\d+)\.(\d+)$")


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

    def endpoint(self) -> IStreamClientEndpoint:
        """
        An endpoint to the engine (the attach hijack opens its own
        connection with it).
        """
        return self.endpointForURI(None)
