"""
Attaching to a container's stdio (lifecycle.md §14 step 1, §21.3): the
Engine API's ``POST /containers/{id}/attach?stream=1&stdin=1&stdout=1&stderr=1``
answers ``101 UPGRADED`` (or, from old engines, ``200``) and then the same
connection carries raw bytes both ways: what we write is the container's
stdin, what we read its output.

Why not treq: an ``Agent`` response only ever delivers a *body*; it cannot
hand over the connection after a 101, nor write to it afterwards.  So this
module opens its own connection with the client's endpoint (the same UNIX or
TCP endpoint the agent uses) and speaks the minimal HTTP/1.1 for that one
request: the request line and headers, then the status line and headers of
the answer, then raw mode.  A non-101/200 answer is read to its end (by
``Content-Length``, or until the engine closes) and becomes a
``DockerError`` with the engine's message.

Output framing: with a TTY (server and installer containers, §20.1) the
bytes are the terminal's, stdout and stderr merged.  Without one the engine
multiplexes: each frame is an 8-byte header (stream type 0/1/2, three zero
bytes, the payload length as a big-endian uint32) then the payload;
``Demultiplexer`` strips the headers.  Attaching happens *before* the
container is started, so no early output is lost and an immediate exit is
seen as the end of the stream.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, cast
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from .client import USER_AGENT, DockerClient
from .errors import DockerError, describe, status_error

#: The most of a refusal's head and body we read before giving up.
MAX_HEAD = 64 * 1024
_HEADER = struct.Struct(">BxxxL")


class Demultiplexer:
    """
    Turns the engine's multiplexed stream (module docstring) into payload
    bytes for ``on_output`` (stdout and stderr alike).
    """

    def __init__(self, on_output: Callable[[bytes], None]) -> None:
        self._on_output = on_output
        self._buffer = b""

    def feed(self, data: bytes) -> None:
        """
        Take bytes as they arrive, in any pieces.
        """
        self._buffer += data
        while len(self._buffer) >= _HEADER.size:
            _, size = _HEADER.unpack_from(self._buffer)
            if len(self._buffer) < _HEADER.size + size:
                return
            payload = self._buffer[_HEADER.size:_HEADER.size + size]
            self._buffer = self._buffer[_HEADER.size + size:]
            if payload:
                self._on_output(payload)


def demultiplex(data: bytes) -> bytes:
    """
    The payload of a whole multiplexed body (``GET /containers/{id}/logs``
    of a container without a TTY).
    """
    out: list[bytes] = []
    Demultiplexer(out.append).feed(data)
    return b"".join(out)


class AttachStream(Protocol):
    """
    One hijacked attach connection.  ``upgraded`` fires once the engine
    accepted (or fails with ``DockerError``); then ``on_output`` gets the
    container's output and ``write`` feeds its stdin; ``ended`` fires when
    the stream ends for whatever reason (the container exited, the engine
    went away, ``close``).
    """

    def __init__(self, request: bytes, on_output: Callable[[bytes], None], *, tty: bool,
                 what: str) -> None:
        self._request = request
        self._what = what
        self.upgraded: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self._head = b""
        self._refusal: tuple[int, int | None] | None = None
        self._body = b""
        self._raw = False
        self._closed = False
        self._deliver: Callable[[bytes], None] = (
            on_output if tty else Demultiplexer(on_output).feed)

    @property
    def open(self) -> bool:
        """
        Upgraded and not yet ended.
        """
        return self._raw and not self._closed

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self._request)

    def write(self, data: bytes) -> None:
        """
        Send ``data`` to the container's stdin.
        """
        if not self.open:
            raise DockerError("The attach stream of {} is closed.".format(self._what))
        assert self.transport is not None
        self.transport.write(data)

    def close(self) -> None:
        """
        Drop the connection (the container keeps running).
        """
        if self.transport is not None and not self._closed:
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._raw:
            self._deliver(data)
            return
        if self._refusal is not None:
            self._refused_body(data)
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_HEAD:
                self._fail(DockerError("The engine sent an over-long answer to {}.".format(
                    self._what)))
            return
        head, rest = self._head[:end], self._head[end + 4:]
        self._head = b""
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            self._fail(DockerError("The engine answered {} with {!r}.".format(
                self._what, lines[0][:80])))
            return
        if status in (101, 200):
            self._raw = True
            self.upgraded.callback(None)
            if rest:
                self._deliver(rest)
            return
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length" and value.strip().isdigit():
                length = int(value.strip())
        self._refusal = (status, length)
        self._refused_body(rest)

    def _refused_body(self, data: bytes) -> None:
        assert self._refusal is not None
        self._body += data
        status, length = self._refusal
        if (length is not None and len(self._body) >= length) or len(self._body) > MAX_HEAD:
            self._fail(status_error(self._what, status, self._body[:length]))

    def _fail(self, error: DockerError) -> None:
        if not self.upgraded.called:
            self.upgraded.errback(error)
        self.close()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closed = True
        if not self.upgraded.called:
            if self._refusal is not None:
                self.upgraded.errback(status_error(self._what, self._refusal[0], self._body))
            else:
                self.upgraded.errback(DockerError("The engine closed {} before answering: {}"
                                                  .format(self._what, describe(reason.value))))
        if not self.ended.called:
            self.ended.callback(None)


def attach_request(path: str, host: str) -> bytes:
    """
    The bytes of the attach request for ``path`` (versioned, with query).
    """
    return ("POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {}\r\nConnection: Upgrade\r\n"
            "Upgrade: tcp\r\nContent-Length: 0\r\n\r\n").format(
                path, host, USER_AGENT.decode("ascii")).encode("latin-1")


async def attach(client: DockerClient, container: str, on_output: Callable[[bytes], None], *,
                 tty: bool = True, timeout: float | None = None) -> AttachStream:
    """
    Attach to ``container``'s stdin/stdout/stderr; returns the open stream
    (``DockerError`` when the engine refuses or cannot be reached within
    ``timeout`` seconds).
    """
    timeout = client.timeout if timeout is None else timeout
    path = await client.versioned("/containers/{}/attach".format(container),
                                  {"stream": 1, "stdin": 1, "stdout": 1, "stderr": 1})
    what = "POST " + path
    stream = AttachStream(attach_request(path, urlsplit(client.base_url).netloc), on_output,
                          tty=tty, what=what)
    try:
        connecting: Deferred[Any] = connectProtocol(client.endpoint(), stream)
        await connecting.addTimeout(timeout, client.clock)
        await stream.upgraded.addTimeout(timeout, client.clock)
    except DockerError:
        stream.close()
        raise
    except Exception as e:
        stream.close()
        raise DockerError("Cannot attach to {} at {}: {}".format(
            container, client.where, describe(e))) from None
    return cast(AttachStream, stream)
