"""
In-memory remote hosts for the remote-pull unit tests: a scripted name
resolver, and the TCP connections a pull opens on a ``MemoryReactorClock``,
answered by hand over ``StringTransport``s.  No sockets, no global reactor.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import IHostnameResolver, IHostResolution, IResolutionReceiver
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from wings_twisted.node import Outgoing

PUBLIC = "93.184.216.34"


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        pass


@implementer(IHostnameResolver)
class ScriptedResolver:
    """
    Answers each name from a list of answers, one per call (the last one
    repeats): ``{"files.example": [["93.184.216.34"], ["127.0.0.1"]]}`` is a
    rebinding name.  ``calls`` records the names asked for.
    """

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    def resolveHostName(self, resolutionReceiver: IResolutionReceiver, hostName: str,
                        portNumber: int = 0, addressTypes: Any = None,
                        transportSemantics: str = "TCP") -> IHostResolution:
        self.calls.append(hostName)
        resolution = _Resolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)
        script = self.answers.get(hostName, [[]])
        answer = script.pop(0) if len(script) > 1 else script[0]
        for address in answer:
            kind = IPv6Address if ":" in address else IPv4Address
            resolutionReceiver.addressResolved(kind("TCP", address, portNumber))
        resolutionReceiver.resolutionComplete()
        return resolution


@implementer(IPolicyForHTTPS)
class RecordingPolicy:
    """
    Records the host names TLS options are made for.
    """

    def __init__(self) -> None:
        self.netlocs: list[tuple[bytes, int]] = []

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        from twisted.internet.ssl import optionsForClientTLS
        self.netlocs.append((hostname, port))
        return optionsForClientTLS(hostname.decode("ascii"))


class Connection:
    """
    One accepted connection: what the client sent, and ways to answer.
    """

    def __init__(self, protocol: Any, transport: StringTransport) -> None:
        self.protocol = protocol
        self.transport = transport

    def sent(self) -> bytes:
        """
        Everything the client wrote.
        """
        return bytes(self.transport.value())

    def answer(self, data: bytes) -> None:
        """
        Deliver bytes from the remote host.
        """
        self.protocol.dataReceived(data)

    def head(self, status: str = "200 OK", **headers: str) -> None:
        """
        Deliver a response head (``Content_Length`` → ``Content-Length``).
        """
        lines = ["HTTP/1.1 " + status] + ["{}: {}".format(name.replace("_", "-"), value)
                                          for name, value in headers.items()]
        self.answer(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def close(self, reason: Failure | None = None) -> None:
        """
        The remote host hangs up.
        """
        self.protocol.connectionLost(reason or Failure(ConnectionDone()))

    @property
    def state(self) -> str:
        """
        ``producing``, ``paused`` or ``stopped`` (the client's reading).
        """
        return str(self.transport.producerState)


class RemoteHosts:
    """
    The reactor a pull connects with, and the hosts behind it.
    """

    def __init__(self, answers: dict[str, list[list[str]]] | None = None) -> None:
        self.reactor = MemoryReactorClock()
        self.resolver = ScriptedResolver(answers or {"files.example": [[PUBLIC]]})
        self.tls = RecordingPolicy()

    def outgoing(self) -> Outgoing:
        """
        The node's ``Outgoing`` over these hosts.
        """
        return Outgoing(self.reactor, self.resolver, self.tls)

    @property
    def attempts(self) -> list[tuple[str, int]]:
        """
        ``(address, port)`` of every connection attempted, in order.
        """
        return [(host, port) for host, port, *_ in self.reactor.tcpClients]

    def accept(self, index: int = -1) -> Connection:
        """
        Complete the connection attempt ``index``.
        """
        host, port, factory, *_ = self.reactor.tcpClients[index]
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
        protocol.makeConnection(transport)
        return Connection(protocol, transport)

    def refuse(self, index: int = -1) -> None:
        """
        Fail the connection attempt ``index`` (connection refused).
        """
        factory = self.reactor.tcpClients[index][2]
        factory.clientConnectionFailed(self.reactor.connectors[index],
                                       Failure(ConnectionRefusedError()))


class Worker:
    """
    A ``run_blocking`` whose jobs wait until the test runs them.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []

    def __call__(self, fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append((fn, args, d))
        return d

    def finish_all(self) -> None:
        """
        Run jobs until none waits.
        """
        while self.pending:
            fn, args, d = self.pending.pop(0)
            try:
                outcome = succeed(fn(*args))
            except Exception:
                outcome = fail()
            outcome.chainDeferred(d)
