"""
Open SFTP handles: files (``ISFTPFile`` over an ``fs.FileHandle``) and directory listings.

Every operation on one file handle runs in a worker thread, one after the other, in the order the
requests arrived (`HandleQueue`): the handle's quota accounting needs one thread at a time, and a
``CLOSE`` must wait for the writes before it.  Requests that arrive while a batch runs are run
together in the next batch, in one thread hop; and a read or write that finds the queue idle waits
`GATHER` seconds for the ones behind it — a client keeps 64 reads or writes of 32 KiB in flight but
they arrive two per socket read, and a thread hop (waking a worker, the GIL handed over and back)
costs more CPU than the write itself (``bench/RESULTS.md``).  A batch holds at most `BATCH_BYTES`
of writes.

Errors are raised as they come from ``fs``; `errors.sftp_error` turns them into statuses.
"""

from __future__ import annotations

import os
import stat as _stat
from collections import deque
from typing import Any, Callable, Iterator

from twisted.conch.interfaces import ISFTPFile
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..blocking import RunBlocking
from ..fs import FileHandle
from .errors import sftp_error

__all__ = ["BATCH_BYTES", "HandleQueue", "SftpDirectory", "SftpFile", "attributes"]

log = Logger()

#: Bytes of writes run in one thread hop at most.
BATCH_BYTES = 4 * 1024 * 1024
#: Operations run in one thread hop at most.
BATCH_OPERATIONS = 256
#: Seconds a read or write that finds its queue idle waits for more (production; tests use 0).
GATHER = 0.001


def attributes(st: os.stat_result) -> dict[str, int]:
    """
    The SFTP attributes of a status (``sftp.md`` §6.2): size, owner, full mode, times.
    """
    return {"size": st.st_size, "uid": st.st_uid, "gid": st.st_gid,
            "permissions": st.st_mode, "atime": int(st.st_atime), "mtime": int(st.st_mtime)}


def _run_batch(operations: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> list[Any]:
    """
    Run ``operations`` in order in this (worker) thread; each result, or the exception it raised.
    """
    results: list[Any] = []
    for fn, args in operations:
        try:
            results.append((True, fn(*args)))
        except Exception as e:
            results.append((False, e))
    return results


class HandleQueue:
    """
    Runs the operations of one handle in order, in batches, off the reactor thread.
    """

    def __init__(self, run_blocking: RunBlocking, clock: IReactorTime | None = None,
                 gather: float = 0.0) -> None:
        """
        :param gather: seconds a transfer operation that finds the queue idle waits for more
            (with ``clock``); 0 runs it at once.
        """
        self._run = run_blocking
        self._clock = clock
        self._gather = gather
        self._waiting: deque[tuple[Callable[..., Any], tuple[Any, ...], int, Deferred[Any]]]
        self._waiting = deque()
        self._running = False
        self._scheduled: IDelayedCall | None = None

    @property
    def idle(self) -> bool:
        """
        Nothing runs or waits.
        """
        return not self._running and not self._waiting

    def submit(self, fn: Callable[..., Any], *args: Any, size: int = 0,
               transfer: bool = False) -> Deferred[Any]:
        """
        Run ``fn(*args)`` after everything submitted before; fires with its result.

        :param size: bytes the operation writes (bounds the batch).
        :param transfer: a read or write, which may wait a moment for the ones behind it.
        """
        d: Deferred[Any] = Deferred()
        self._waiting.append((fn, args, size, d))
        if self._running or self._scheduled is not None:
            return d
        if transfer and self._gather > 0 and self._clock is not None:
            self._scheduled = self._clock.callLater(self._gather, self._gathered)
        else:
            self._next()
        return d

    def _gathered(self) -> None:
        self._scheduled = None
        if not self._running:
            self._next()

    def _next(self) -> None:
        if self._scheduled is not None:
            if self._scheduled.active():
                self._scheduled.cancel()
            self._scheduled = None
        batch: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        waiters: list[Deferred[Any]] = []
        total = 0
        while self._waiting and len(batch) < BATCH_OPERATIONS:
            fn, args, size, d = self._waiting[0]
            if batch and total + size > BATCH_BYTES:
                break
            self._waiting.popleft()
            batch.append((fn, args))
            waiters.append(d)
            total += size
        if not batch:
            self._running = False
            return
        self._running = True
        done = self._run(_run_batch, batch)
        done.addCallbacks(self._finished, self._crashed, callbackArgs=(waiters,),
                          errbackArgs=(waiters,))

    def _finished(self, results: list[Any], waiters: list[Deferred[Any]]) -> None:
        self._running = False
        for (ok, value), d in zip(results, waiters):
            if ok:
                d.callback(value)
            else:
                d.errback(Failure(value))
        if not self._running:
            self._next()

    def _crashed(self, failure: Failure, waiters: list[Deferred[Any]]) -> None:
        log.failure("An SFTP handle's batch failed", failure)
        self._running = False
        for d in waiters:
            d.errback(failure)
        self._next()


@implementer(ISFTPFile)
class SftpFile:
    """
    An open regular file.

    :param check_write: run before each write on the reactor thread (suspension, write guard);
        raises the ``SFTPError`` to answer.  ``check_read`` likewise before each read.
    :param prepare_attrs: checks an ``FSETSTAT`` and returns the attributes to apply.
    :param on_close: called once the file is closed.
    """

    def __init__(self, handle: FileHandle, run_blocking: RunBlocking, *,
                 check_write: Callable[[], None], check_read: Callable[[], None],
                 prepare_attrs: Callable[[dict[str, Any]], dict[str, Any]],
                 on_close: Callable[[], None], clock: IReactorTime | None = None,
                 gather: float = 0.0) -> None:
        self._handle = handle
        self._prepare_attrs = prepare_attrs
        self._queue = HandleQueue(run_blocking, clock, gather)
        self._check_write = check_write
        self._check_read = check_read
        self._on_close = on_close
        self._closing: Deferred[None] | None = None

    def _submit(self, fn: Callable[..., Any], *args: Any, size: int = 0,
                transfer: bool = False) -> Deferred[Any]:
        if self._closing is not None:
            raise sftp_error(ValueError("closed"))
        return self._queue.submit(fn, *args, size=size, transfer=transfer).addErrback(_translate)

    def readChunk(self, offset: int, length: int) -> Deferred[bytes]:
        """
        Up to ``length`` bytes at ``offset``; ``EOFError`` at or past the end.
        """
        self._check_read()
        d = self._submit(self._handle.pread, offset, length, transfer=True)

        def read(data: bytes) -> bytes:
            if not data and length:
                raise EOFError()
            return data

        return d.addCallback(read)

    def writeChunk(self, offset: int, data: bytes) -> Deferred[None]:
        """
        Write ``data`` at ``offset`` through the quota.
        """
        self._check_write()
        d = self._submit(self._handle.pwrite, offset, data, size=len(data), transfer=True)
        return d.addCallback(lambda _: None)

    def getAttrs(self) -> Deferred[dict[str, int]]:
        """
        ``FSTAT``.
        """
        return self._submit(self._handle.fstat).addCallback(attributes)

    def setAttrs(self, attrs: dict[str, Any]) -> Deferred[None]:
        """
        ``FSETSTAT`` (the filesystem checks permissions and maps the mode first).
        """
        return self._submit(_set_attributes, self._handle, self._prepare_attrs(attrs))

    def close(self) -> Deferred[None]:
        """
        Close after the handle's pending work; idempotent.
        """
        if self._closing is None:
            self._closing = self._queue.submit(self._handle.close)
            self._closing.addBoth(self._closed)
        d: Deferred[None] = Deferred()
        self._closing.addBoth(lambda _: d.callback(None))
        return d

    def _closed(self, result: object) -> None:
        self._on_close()
        if isinstance(result, Failure):
            log.warn("Closing an SFTP file failed: {error}", error=str(result.value))


def _translate(failure: Failure) -> None:
    """
    Raise the status error for the error of a file operation.
    """
    raise sftp_error(failure.value)


def _set_attributes(handle: FileHandle, attrs: dict[str, Any]) -> None:
    """
    Apply the attributes present to an open file: size, then mode, then times (``sftp.md``
    §6.2; ``attrs`` already holds the mode to set, if any).
    """
    if "size" in attrs:
        handle.truncate(attrs["size"])
    if "permissions" in attrs:
        handle.chmod(attrs["permissions"])
    if "atime" in attrs and "mtime" in attrs:
        handle.utime(attrs["atime"], attrs["mtime"])


class SftpDirectory:
    """
    A directory listing read whole when it was opened: ``(name, long name, attributes)`` triples.
    """

    def __init__(self, entries: list[tuple[bytes, bytes, dict[str, int]]],
                 on_close: Callable[[], None]) -> None:
        self._entries = entries
        self._on_close: Callable[[], None] | None = on_close

    def __iter__(self) -> Iterator[tuple[bytes, bytes, dict[str, int]]]:
        return iter(self._entries)

    def close(self) -> Deferred[None]:
        """
        Forget the listing; idempotent.
        """
        self._entries = []
        on_close = self._on_close
        self._on_close = None
        if on_close is not None:
            on_close()
        return succeed(None)


def long_name(name: str, st: os.stat_result) -> str:
    """
    The ``ls -l`` line of a listing entry (numeric owner, modification time in UTC).
    """
    import time

    mode = _stat.filemode(st.st_mode)
    when = time.strftime("%b %d %H:%M", time.gmtime(st.st_mtime))
    return "{} {:>4} {:<8} {:<8} {:>8} {} {}".format(
        mode, st.st_nlink, st.st_uid, st.st_gid, st.st_size, when, name)
