"""
The SFTP v3 wire protocol on one session channel: Conch's ``FileTransferServer`` made robust and
bounded.

Conch's server parses each request inside its ``packet_*`` methods; we keep those, and replace
what goes wrong with hostile or merely unusual input:

* **Framing.**  Requests are cut from a ``bytearray`` (Conch copies its whole buffer for every
  request).  A request longer than `MAX_MESSAGE` is not buffered: its bytes are skipped as they
  arrive and its id answered ``SSH_FX_BAD_MESSAGE`` (OpenSSH's server would disconnect).
* **Bad input gets a status, never silence.**  A request that does not parse (short fields, a
  string running past the end, trailing bytes) is answered ``SSH_FX_BAD_MESSAGE``; an unknown type
  ``SSH_FX_OP_UNSUPPORTED``; an unknown handle ``SSH_FX_FAILURE`` (Conch calls methods that do not
  exist for unknown handles on ``READ``/``WRITE`` and never answers).  Expected failures are
  mapped without a traceback; only real bugs are logged as failures.
* **Bounded work.**  ``READ`` lengths are capped at `MAX_READ` (a shorter answer is allowed), and
  the bytes of reads and writes under way are counted in `load`; while it is above `HIGH_WATER`
  no further request is dispatched, so requests wait in the channel, whose window the channel
  stops granting (``session.SftpChannel``): a client that floods requests is slowed, not buffered.
* **Extensions.**  ``posix-rename@openssh.com`` answers a status as OpenSSH expects (Conch would
  send an ``EXTENDED_REPLY``); every other extension is ``SSH_FX_OP_UNSUPPORTED``.
"""

from __future__ import annotations

import struct
from typing import Any, Callable

from twisted.conch.ssh import filetransfer as fx
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from .errors import sftp_error

__all__ = ["HIGH_WATER", "MAX_MESSAGE", "MAX_READ", "BadMessage", "SftpServerProtocol"]

log = Logger()

#: Longest request accepted, in bytes after the length field (OpenSSH's limit, 256 KiB).
MAX_MESSAGE = 256 * 1024
#: Longest answer to one ``READ``.
MAX_READ = 255 * 1024
#: Bytes of reads and writes under way above which no further request is dispatched.
HIGH_WATER = 8 * 1024 * 1024


class BadMessage(Exception):
    """
    A request whose fields do not parse.
    """


def string_at(data: bytes, offset: int) -> tuple[bytes, int]:
    """
    The SSH string at ``offset`` and the offset after it; `BadMessage` when it runs past the end.
    """
    if len(data) < offset + 4:
        raise BadMessage("short string length")
    (length,) = struct.unpack_from("!L", data, offset)
    end = offset + 4 + length
    if len(data) < end:
        raise BadMessage("string past the end of the request")
    return data[offset + 4:end], end


class SftpServerProtocol(fx.FileTransferServer):
    """
    One SFTP server on one channel.

    :param filesystem: provides ``ISFTPServer`` (``filesystem.SftpFilesystem``).
    :param on_progress: called when work finished, so the channel may grant window again.
    """

    def __init__(self, filesystem: Any, on_progress: Callable[[], None]) -> None:
        super().__init__(avatar=filesystem)
        self._on_progress = on_progress
        self._input = bytearray()
        self._skip = 0
        self._dispatching = False
        #: Bytes of reads and writes under way.
        self.load = 0
        #: Set by the channel while its output waits for the client's window.
        self.output_blocked = False

    # -- framing ---------------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """
        Bytes received and not yet dispatched.
        """
        return len(self._input)

    def busy(self) -> bool:
        """
        Whether dispatching waits (work above the high-water mark, or output blocked).
        """
        return self.load >= HIGH_WATER or self.output_blocked

    def dataReceived(self, data: bytes) -> None:
        """
        Buffer ``data`` (less what an oversized request still skips) and dispatch what is whole.
        """
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
        if data:
            self._input += data
        self.dispatch()

    def dispatch(self) -> None:
        """
        Dispatch every whole request in the buffer, unless busy (a call made while dispatching,
        by work that finished at once, returns: the running loop goes on).
        """
        if self._dispatching:
            return
        self._dispatching = True
        buf = self._input
        pos = 0
        try:
            while len(buf) - pos >= 9 and not self.busy():
                length, kind, request = struct.unpack_from("!LBL", buf, pos)
                if length < 5:
                    # Not even a request id: nothing to answer.
                    log.info("Ignoring an SFTP message of {length} bytes", length=length)
                    pos += 4 + length
                    continue
                if length > MAX_MESSAGE:
                    self._sendStatus(struct.pack("!L", request), fx.FX_BAD_MESSAGE,
                                     b"message too long")
                    available = len(buf) - pos
                    self._skip = max(0, 4 + length - available)
                    pos += min(available, 4 + length)
                    continue
                if len(buf) - pos < 4 + length:
                    break
                data = bytes(buf[pos + 5:pos + 4 + length])
                pos += 4 + length
                self._dispatch_one(kind, request, data)
        finally:
            del buf[:pos]
            self._dispatching = False

    def _dispatch_one(self, kind: int, request: int, data: bytes) -> None:
        request_id = struct.pack("!L", request)
        name = self.packetTypes.get(kind)
        handler = getattr(self, "packet_" + name, None) if name else None
        if handler is None:
            self._sendStatus(request_id, fx.FX_OP_UNSUPPORTED, b"unsupported request")
            return
        try:
            handler(data)
        except (BadMessage, struct.error, AssertionError, ValueError, IndexError) as e:
            log.info("Malformed SFTP {kind} request: {error}", kind=name, error=str(e))
            self._sendStatus(request_id, fx.FX_BAD_MESSAGE, b"malformed request")
        except Exception:
            log.failure("Handling an SFTP {kind} request failed", kind=name)
            self._sendStatus(request_id, fx.FX_FAILURE, b"failure")

    def _sendStatus(self, requestId: bytes, code: int, message: bytes | str,
                    lang: bytes = b"") -> None:
        if isinstance(message, str):
            message = message.encode("utf-8", "replace")
        if self.transport is not None and getattr(self, "connected", True):
            super()._sendStatus(requestId, code, message, lang)

    def sendPacket(self, kind: int, data: bytes) -> None:
        """
        Send one answer, unless the channel is gone.
        """
        if self.transport is not None and getattr(self, "connected", True):
            super().sendPacket(kind, data)

    # -- requests Conch gets wrong ---------------------------------------------------------------

    @staticmethod
    def _end(data: bytes, offset: int) -> None:
        if offset != len(data):
            raise BadMessage("trailing bytes")

    def packet_READ(self, data: bytes) -> None:
        """
        ``READ``: at most `MAX_READ` bytes; an unknown handle is a failure status.
        """
        request_id = data[:4]
        handle, offset = string_at(data, 4)
        if len(data) < offset + 12:
            raise BadMessage("short READ")
        position, length = struct.unpack_from("!QL", data, offset)
        self._end(data, offset + 12)
        file = self.openFiles.get(handle)
        if file is None:
            self._sendStatus(request_id, fx.FX_FAILURE, b"invalid handle")
            return
        length = min(length, MAX_READ)
        self._begin(length)
        d = maybeDeferred(file.readChunk, position, length)
        d.addBoth(self._settled, length)
        d.addCallback(self._cbRead, request_id)
        d.addErrback(self._ebStatus, request_id, b"read failed")

    def packet_WRITE(self, data: bytes) -> None:
        """
        ``WRITE``: the whole string must be there; an unknown handle is a failure status.
        """
        request_id = data[:4]
        handle, offset = string_at(data, 4)
        if len(data) < offset + 8:
            raise BadMessage("short WRITE")
        (position,) = struct.unpack_from("!Q", data, offset)
        chunk, end = string_at(data, offset + 8)
        self._end(data, end)
        file = self.openFiles.get(handle)
        if file is None:
            self._sendStatus(request_id, fx.FX_FAILURE, b"invalid handle")
            return
        self._begin(len(chunk))
        d = maybeDeferred(file.writeChunk, position, chunk)
        d.addBoth(self._settled, len(chunk))
        d.addCallback(self._cbStatus, request_id, b"write succeeded")
        d.addErrback(self._ebStatus, request_id, b"write failed")

    def packet_CLOSE(self, data: bytes) -> None:
        """
        ``CLOSE``: waits for the handle's work; an unknown handle is a failure status.
        """
        request_id = data[:4]
        handle, end = string_at(data, 4)
        self._end(data, end)
        if handle in self.openFiles:
            obj, is_dir = self.openFiles[handle], 0
        elif handle in self.openDirs:
            obj, is_dir = self.openDirs[handle][0], 1
        else:
            self._sendStatus(request_id, fx.FX_FAILURE, b"invalid handle")
            return
        d = maybeDeferred(obj.close)
        d.addCallback(self._cbClose, handle, request_id, is_dir)
        d.addErrback(self._ebStatus, request_id, b"close failed")

    def packet_EXTENDED(self, data: bytes) -> None:
        """
        ``posix-rename@openssh.com`` (a status answer); anything else is unsupported.
        """
        request_id = data[:4]
        name, offset = string_at(data, 4)
        if name != b"posix-rename@openssh.com":
            self._sendStatus(request_id, fx.FX_OP_UNSUPPORTED, b"unsupported extension")
            return
        old, offset = string_at(data, offset)
        new, end = string_at(data, offset)
        self._end(data, end)
        d = maybeDeferred(self.client.renameFile, old, new)
        d.addCallback(self._cbStatus, request_id, b"rename succeeded")
        d.addErrback(self._ebStatus, request_id, b"rename failed")

    # -- accounting ------------------------------------------------------------------------------

    def _begin(self, size: int) -> None:
        self.load += size

    def _settled(self, result: object, size: int) -> object:
        self.load -= size
        self._on_progress()
        return result

    # -- answers ---------------------------------------------------------------------------------

    def _cbOpenFile(self, fileObj: Any, requestId: bytes) -> None:
        handle = str(id(fileObj)).encode("ascii")
        self.openFiles[handle] = fileObj
        self.sendPacket(fx.FXP_HANDLE, requestId + fx.NS(handle))

    def _cbOpenDirectory(self, dirObj: Any, requestId: bytes) -> None:
        handle = str(id(dirObj)).encode("ascii")
        self.openDirs[handle] = [dirObj, iter(dirObj)]
        self.sendPacket(fx.FXP_HANDLE, requestId + fx.NS(handle))

    def _ebStatus(self, reason: Failure, requestId: bytes, msg: bytes = b"request failed") -> None:
        """
        Answer a failed request with the status its error stands for; only unexpected errors are
        logged with their traceback.
        """
        error = sftp_error(reason.value)
        if isinstance(error, fx.SFTPError):
            code, message = error.code, error.message
        elif isinstance(error, EOFError):
            code, message = fx.FX_EOF, b"end of file"
        elif isinstance(error, NotImplementedError):
            code, message = fx.FX_OP_UNSUPPORTED, b"operation unsupported"
        elif isinstance(error, KeyError):
            code, message = fx.FX_FAILURE, b"invalid handle"
        else:
            log.failure("SFTP request failed", reason)
            code, message = fx.FX_FAILURE, msg
        self._sendStatus(requestId, code, message)

    def connectionLost(self, reason: Any = None) -> None:
        """
        Close every open handle (each waits for its own work first).
        """
        self.connected = False
        files, self.openFiles = list(self.openFiles.values()), {}
        directories, self.openDirs = [d[0] for d in self.openDirs.values()], {}
        for obj in files + directories:
            d: Deferred[Any] = maybeDeferred(obj.close)
            d.addErrback(lambda f: log.failure("Closing an SFTP handle failed", f))
