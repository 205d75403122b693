"""
SFTP test support: Conch's SFTP client joined in memory (``iosim``) to our SFTP server protocol for
one login on a `support.Harness` server, and a raw wire client for requests no client library
would send.  Synchronous: the harness's ``run_blocking`` runs work inline.
"""

from __future__ import annotations

import struct
from typing import Any, Iterable

from twisted.conch.ssh import filetransfer as fx
from twisted.conch.ssh.common import NS
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.test import iosim

from wings_twisted.blocking import run_inline
from wings_twisted.sftp.auth import Login
from wings_twisted.sftp.filesystem import SftpFilesystem
from wings_twisted.sftp.protocol import SftpServerProtocol

from .support import USER

CLIENT_IP = "203.0.113.9"


def filesystem(harness: Any, server: Any, permissions: Iterable[str] = ("*",), *,
               read_only: bool = False, user: str = USER) -> SftpFilesystem:
    """
    The SFTP operations of a session of ``user`` on ``server``.
    """
    login = Login(user, server.uuid, frozenset(permissions), CLIENT_IP)
    return SftpFilesystem(server, login, run_blocking=run_inline,
                          activity=harness.node.activity, read_only=read_only)


class SftpPair:
    """
    ``client`` (Conch's ``FileTransferClient``) talking to ``protocol`` in memory.
    """

    def __init__(self, fs: SftpFilesystem) -> None:
        self.fs = fs
        self.protocol = SftpServerProtocol(fs, lambda: None)
        self.client = fx.FileTransferClient()
        self.pump = iosim.connect(self.protocol, iosim.FakeTransport(self.protocol, True),
                                  self.client, iosim.FakeTransport(self.client, False),
                                  greet=False)
        self.pump.flush()

    def wait(self, d: Deferred[Any]) -> Any:
        """
        Pump until ``d`` fired; its result, or the `Failure` it failed with.
        """
        results: list[Any] = []
        d.addBoth(results.append)
        self.pump.flush()
        if not results:
            raise AssertionError("no answer")
        return results[0]

    def ok(self, d: Deferred[Any]) -> Any:
        """
        The result of ``d``, which must succeed.
        """
        result = self.wait(d)
        if isinstance(result, Failure):
            result.raiseException()
        return result

    def code(self, d: Deferred[Any]) -> int:
        """
        The status code ``d`` failed with.
        """
        result = self.wait(d)
        if isinstance(result, Failure):
            # Conch's client turns these two statuses into exceptions of their own.
            if isinstance(result.value, NotImplementedError):
                return fx.FX_OP_UNSUPPORTED
            if isinstance(result.value, EOFError):
                return fx.FX_EOF
            if isinstance(result.value, fx.SFTPError):
                return int(result.value.code)
        raise AssertionError("expected an SFTP status, got {!r}".format(result))

    def put(self, path: str, data: bytes, flags: int = fx.FXF_WRITE | fx.FXF_CREAT | fx.FXF_TRUNC,
            offset: int = 0) -> None:
        """
        Open, write ``data`` at ``offset``, close.
        """
        handle = self.ok(self.client.openFile(path.encode(), flags, {}))
        if data:
            self.ok(handle.writeChunk(offset, data))
        self.ok(handle.close())

    def get(self, path: str) -> bytes:
        """
        Open, read everything, close.
        """
        handle = self.ok(self.client.openFile(path.encode(), fx.FXF_READ, {}))
        chunks = []
        offset = 0
        while True:
            result = self.wait(handle.readChunk(offset, 65536))
            if isinstance(result, Failure):
                result.trap(EOFError)
                break
            chunks.append(result)
            offset += len(result)
        self.ok(handle.close())
        return b"".join(chunks)


class RawWire:
    """
    Raw SFTP packets to ``protocol`` and the answers it wrote, parsed.
    """

    def __init__(self, protocol: SftpServerProtocol) -> None:
        self.protocol = protocol
        self.transport = StringTransport()
        protocol.makeConnection(self.transport)
        self._next = 100

    def send(self, kind: int, body: bytes, request: int | None = None) -> int:
        """
        Send one request (``body`` after the request id); return its id.
        """
        if request is None:
            self._next += 1
            request = self._next
        payload = struct.pack("!BL", kind, request) + body
        self.protocol.dataReceived(struct.pack("!L", len(payload)) + payload)
        return request

    def raw(self, data: bytes) -> None:
        """
        Send bytes as they are.
        """
        self.protocol.dataReceived(data)

    def answers(self) -> list[tuple[int, int, bytes]]:
        """
        ``(type, request id, rest)`` of every answer written since the last call.
        """
        data = self.transport.value()
        self.transport.clear()
        found = []
        while data:
            (length,) = struct.unpack("!L", data[:4])
            packet, data = data[4:4 + length], data[4 + length:]
            found.append((packet[0], struct.unpack("!L", packet[1:5])[0], packet[5:]))
        return found

    def status(self) -> list[tuple[int, int]]:
        """
        ``(request id, status code)`` of the status answers since the last call.
        """
        return [(request, struct.unpack("!L", rest[:4])[0])
                for kind, request, rest in self.answers() if kind == fx.FXP_STATUS]

    def open(self, path: bytes, flags: int = fx.FXF_READ) -> bytes:
        """
        Open ``path``; the handle (the answer must be a handle).
        """
        self.send(fx.FXP_OPEN, NS(path) + struct.pack("!LL", flags, 0))
        (kind, _, rest), = self.answers()
        assert kind == fx.FXP_HANDLE, (kind, rest)
        return rest[4:]
