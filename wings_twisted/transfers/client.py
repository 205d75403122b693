"""
The HTTP client of the push (transfers.md §3.3, §10.1): one fresh HTTP/1.1 connection per
transfer, 30 seconds to connect, no overall timeout, no redirects.

The destination URL comes from the panel (bearer-authenticated), so no SSRF guard applies: the
host is resolved and connected to like any panel-named host.  TLS certificates are verified with
the node's policy, which ``--ignore-certificate-errors`` turns off for transfers too, as upstream
(its flag switches off verification on the shared Go transport the push uses).
"""

from __future__ import annotations

from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IReactorTCP, IReactorTime, IStreamClientEndpoint

# The class HTTPConnectionPool._factory names (pinned in test_twisted_internals).
from twisted.web.client import URI, Agent, HTTPConnectionPool, _HTTP11ClientFactory
from twisted.web.iweb import IAgent, IAgentEndpointFactory, IPolicyForHTTPS
from zope.interface import implementer

__all__ = ["CONNECT_TIMEOUT", "push_agent"]

#: Seconds to open the connection to the destination.
CONNECT_TIMEOUT = 30


class _QuietFactory(_HTTP11ClientFactory):
    """
    The pool's per-connection factory without "Starting factory" lines.
    """

    noisy = False


class _QuietPool(HTTPConnectionPool):
    _factory = _QuietFactory


@implementer(IAgentEndpointFactory)
class _Endpoints:
    def __init__(self, connector: IReactorTCP, tls: IPolicyForHTTPS, timeout: int) -> None:
        self._connector = connector
        self._tls = tls
        self._timeout = timeout

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        host = uri.host.decode("ascii").strip("[]")
        endpoint: IStreamClientEndpoint = HostnameEndpoint(self._connector, host, uri.port,
                                                           timeout=self._timeout)
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(self._tls.creatorForNetloc(uri.host, uri.port), endpoint)
        return endpoint


def push_agent(clock: IReactorTime, connector: IReactorTCP, tls: IPolicyForHTTPS, *,
               timeout: int = CONNECT_TIMEOUT) -> IAgent:
    """
    An agent for transfer pushes over ``connector`` (the reactor).
    """
    pool = _QuietPool(clock, persistent=False)
    agent: IAgent = Agent.usingEndpointFactory(clock, _Endpoints(connector, tls, timeout),
                                               pool=pool)
    return agent
