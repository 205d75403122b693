"""
The request body of an outgoing transfer: the multipart framing of ``framing`` around the archive
stream a worker thread makes, hashed as it is sent (transfers.md §3.4, §10.1).

`TransferBody` is the ``IBodyProducer`` (length unknown, so Twisted's HTTP/1.1 client sends it
chunked) handed to the agent.  It writes the first part's head, then relays every chunk of the
archive pipe (a ``streams.pipe.ThreadPipeProducer`` running ``archive.write_tar_gz``), hashing it
with SHA-256 on the reactor thread just before it is written, then the checksum part(s) and the
closing delimiter.  The checksum therefore covers exactly the bytes of the archive part body that
were sent.

Flow control: the transport pauses and resumes this producer, which pauses and resumes the pipe
(its worker blocks on a full queue).  A transport that stays paused for ``stall_timeout`` seconds
(the destination stopped reading: 10 minutes, §3.3) calls ``on_stall``; the caller aborts the
request.

Early answers: when the destination answers before the body is complete, Twisted's client stops
writing and ``stopProducing`` is called (or the caller calls it once it has the response): the
pipe's worker is stopped (its next write raises), and, as ``IBodyProducer`` requires, the Deferred
of ``startProducing`` never fires.  ``finished`` tells the caller whether the whole body was
written.

Resuming (``resume``): ``skip`` bytes of the body are generated and hashed but not written, so a
push can continue where a destination confirmed it stopped, from a deterministic archive stream.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IPushProducer,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from .framing import Framing

__all__ = ["ArchivePipe", "STALL_TIMEOUT", "TransferBody"]

log = Logger()

#: Seconds the destination may leave the connection unwritable before the push is aborted.
STALL_TIMEOUT = 600.0


class ArchivePipe(Protocol):
    """
    The archive stream as the body sees it (``ThreadPipeProducer``).
    """

    def startProducing(self, consumer: IConsumer) -> Deferred[Any]: ...

    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...

    def stopProducing(self) -> None: ...


@implementer(IConsumer)
class _Hashing:
    """
    The pipe's consumer: hash, count, pass on.
    """

    def __init__(self, body: TransferBody) -> None:
        self._body = body

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self._body._archive_bytes(data)


@implementer(IBodyProducer, IPushProducer)
class TransferBody:
    """
    The multipart body of one push; see the module docstring.

    :param on_archive_end: called once the archive part is complete, before the checksum part is
        written (the "Finished streaming" log line).
    :param on_stall: called when the transport stayed paused for ``stall_timeout`` seconds.
    :param skip: body bytes not to write (a resumed push).
    """

    length = UNKNOWN_LENGTH

    def __init__(self, framing: Framing, pipe: ArchivePipe, *, clock: IReactorTime,
                 on_archive_end: Callable[[], None] = lambda: None,
                 on_stall: Callable[[], None] = lambda: None,
                 stall_timeout: float = STALL_TIMEOUT, skip: int = 0) -> None:
        self._framing = framing
        self._pipe = pipe
        self._clock = clock
        self._on_archive_end = on_archive_end
        self._on_stall = on_stall
        self._stall_timeout = stall_timeout
        self._skip = skip
        self._consumer: IConsumer | None = None
        self._hash = hashlib.sha256()
        self._stall: IDelayedCall | None = None
        self._stopped = False
        #: Body bytes generated so far (written or skipped).
        self.position = 0
        #: Archive (compressed) bytes generated so far.
        self.archive_bytes = 0
        #: The hex digest once the archive part is complete.
        self.digest: str | None = None
        #: Fires with ``True`` once the closing delimiter was written, ``False`` when the body was
        #: stopped first, or with the archive's failure.
        self.finished: Deferred[bool] = Deferred()

    # -- IBodyProducer -------------------------------------------------------------------------

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        """
        Write the body into ``consumer``; fires once the closing delimiter is written (never
        after `stopProducing`).
        """
        self._consumer = consumer
        done: Deferred[None] = Deferred()
        self._emit(self._framing.head())
        ran = self._pipe.startProducing(_Hashing(self))
        ran.addCallbacks(self._archive_done, self._archive_failed, callbackArgs=(done,),
                         errbackArgs=(done,))
        ran.addErrback(lambda f: log.failure("Finishing a transfer body failed", f))
        return done

    def pauseProducing(self) -> None:
        """
        The connection is full: pause the archive; start the stall timer.
        """
        self._pipe.pauseProducing()
        if self._stall is None and not self._stopped:
            self._stall = self._clock.callLater(self._stall_timeout, self._stalled)

    def resumeProducing(self) -> None:
        """
        The connection takes more.
        """
        self._cancel_stall()
        self._pipe.resumeProducing()

    def stopProducing(self) -> None:
        """
        Give up the body (the request is aborted or answered early): stop the archive worker.
        """
        if self._stopped:
            return
        self._stopped = True
        self._cancel_stall()
        self._pipe.stopProducing()
        if not self.finished.called:
            self.finished.callback(False)

    # -- the stream ----------------------------------------------------------------------------

    def _emit(self, data: bytes) -> None:
        size = len(data)
        start = self.position
        self.position += size
        if self.position <= self._skip or self._consumer is None or self._stopped:
            return
        if start < self._skip:
            data = data[self._skip - start:]
        self._consumer.write(data)

    def _archive_bytes(self, data: bytes) -> None:
        if self._stopped:
            return
        self._hash.update(data)
        self.archive_bytes += len(data)
        self._emit(data)

    def _archive_done(self, result: object, done: Deferred[None]) -> None:
        if self._stopped:
            return
        self.digest = self._hash.hexdigest()
        self._on_archive_end()
        self._emit(self._framing.tail(self.digest))
        self._cancel_stall()
        self.finished.callback(True)
        done.callback(None)

    def _archive_failed(self, failure: Failure, done: Deferred[None]) -> None:
        self._cancel_stall()
        if not self.finished.called:
            self.finished.errback(failure)
        if not self._stopped:
            done.errback(failure)

    def _stalled(self) -> None:
        self._stall = None
        if not self._stopped:
            self._on_stall()

    def _cancel_stall(self) -> None:
        if self._stall is not None and self._stall.active():
            self._stall.cancel()
        self._stall = None
