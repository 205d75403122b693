"""
Bytes arriving on the reactor thread, read by blocking code on a worker thread: the reverse of
``pipe``.

``ThreadFeed`` is an ``IConsumer`` on the reactor side (an HTTP request body, a response body) and
a ``Source`` (``read(size)``, ``b""`` at the end) on the worker side, so the blocking readers of
``archive`` (gunzip, the tar reader, the extractor) can consume a stream as it arrives::

    feed = ThreadFeed(reactor.callFromThread)
    feed.registerProducer(BodyProducer(transport, channel), True)
    run_blocking(lambda: extract(gzip_source(feed)))      # reads block until bytes come
    feed.write(chunk)                                     # reactor thread, any number of times
    feed.close()                                          # end of input: the reader gets b""

Back-pressure: once more than ``high_water`` bytes wait for the reader, the registered producer is
paused; the reader resumes it (through ``call_from_thread``) once fewer than ``low_water`` wait, so
memory stays bounded whatever the size of the stream.  ``write`` never blocks.

``abort`` ends the feed from either side: queued bytes are dropped, the reader's next (or current,
blocked) ``read`` raises `FeedAborted`, later writes are dropped and the producer is resumed and
let go (the caller decides what happens to the connection).
"""

from __future__ import annotations

import collections
import threading
from typing import Callable, cast

from twisted.internet.interfaces import IConsumer, IProducer, IPushProducer
from zope.interface import implementer

__all__ = ["FeedAborted", "HIGH_WATER", "LOW_WATER", "ThreadFeed"]

MIB = 1024 * 1024
#: Bytes waiting for the reader past which the producer is paused.
HIGH_WATER = 4 * MIB
#: Bytes waiting below which a paused producer is resumed.
LOW_WATER = 1 * MIB


class FeedAborted(Exception):
    """
    Raised by ``read`` once the feed was aborted.
    """


@implementer(IConsumer)
class ThreadFeed:
    """
    A bounded byte queue from the reactor thread to one worker thread; see the module docstring.

    :param call_from_thread: schedules a call on the reactor thread (``reactor.callFromThread``).
    """

    def __init__(self, call_from_thread: Callable[[Callable[[], None]], object], *,
                 high_water: int = HIGH_WATER, low_water: int = LOW_WATER) -> None:
        self._call_from_thread = call_from_thread
        self._high_water = high_water
        self._low_water = low_water
        self._condition = threading.Condition()
        self._pieces: collections.deque[bytes] = collections.deque()
        self._offset = 0
        self._buffered = 0
        self._closed = False
        self._aborted = False
        self._producer: IPushProducer | None = None
        self._paused = False
        self._resume_scheduled = False
        #: Bytes written (reactor side) and read (worker side) so far.
        self.written = 0
        self.consumed = 0

    @property
    def buffered(self) -> int:
        """
        Bytes written and not read yet.
        """
        with self._condition:
            return self._buffered

    @property
    def paused(self) -> bool:
        """
        Whether the feed holds its producer paused.
        """
        return self._paused

    # -- the reactor side --------------------------------------------------------------------------

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        """
        Pause and resume ``producer`` by how much waits for the reader.
        """
        if not streaming:
            raise ValueError("a ThreadFeed only takes push producers")
        if self._producer is not None:
            raise RuntimeError("a producer is already registered")
        self._producer = cast(IPushProducer, producer)
        with self._condition:
            self._paused = self._buffered > self._high_water and not self._aborted
            pause = self._paused
        if pause:
            self._producer.pauseProducing()

    def unregisterProducer(self) -> None:
        """
        Forget the producer, resuming it first if the feed paused it.
        """
        producer, self._producer = self._producer, None
        with self._condition:
            was_paused, self._paused = self._paused, False
        if producer is not None and was_paused:
            producer.resumeProducing()

    def write(self, data: bytes) -> None:
        """
        Queue ``data`` for the reader (dropped once closed or aborted).  The feed keeps ``data``
        itself: do not change it afterwards.
        """
        if not data:
            return
        with self._condition:
            if self._closed or self._aborted:
                return
            self._pieces.append(data)
            self._buffered += len(data)
            self.written += len(data)
            self._condition.notify()
            pause = (self._buffered > self._high_water and not self._paused
                     and self._producer is not None)
            if pause:
                self._paused = True
        if pause and self._producer is not None:
            self._producer.pauseProducing()

    def close(self) -> None:
        """
        The input ended: once the queued bytes are read, ``read`` returns ``b""``.
        """
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        self.unregisterProducer()

    def abort(self) -> None:
        """
        Drop what is queued and make the reader's ``read`` raise `FeedAborted`; callable from
        any thread (the producer is let go on the reactor thread).
        """
        with self._condition:
            if self._aborted:
                return
            self._aborted = True
            self._pieces.clear()
            self._offset = 0
            self._buffered = 0
            self._condition.notify_all()
            wake = self._paused and not self._resume_scheduled
            if wake:
                self._resume_scheduled = True
        if wake:
            self._call_from_thread(self._resume)

    def release(self) -> None:
        """
        Reactor thread, after `abort`: resume and forget the producer.
        """
        self.unregisterProducer()

    def _resume(self) -> None:
        with self._condition:
            self._resume_scheduled = False
            resume = self._paused and (self._buffered < self._low_water or self._aborted)
            if resume:
                self._paused = False
        if resume and self._producer is not None:
            self._producer.resumeProducing()

    # -- the worker side ---------------------------------------------------------------------------

    def read(self, size: int) -> bytes:
        """
        At most ``size`` bytes (at least one unless the input ended): blocks until bytes come,
        the input ends (``b""``) or the feed is aborted (`FeedAborted`).
        """
        with self._condition:
            while not self._pieces and not self._closed and not self._aborted:
                self._condition.wait()
            if self._aborted:
                raise FeedAborted()
            if not self._pieces:
                return b""
            piece = self._pieces[0]
            start = self._offset
            left = len(piece) - start
            if left <= size:
                self._pieces.popleft()
                self._offset = 0
                data = piece[start:] if start else piece
            else:
                data = piece[start:start + size]
                self._offset = start + size
            self._buffered -= len(data)
            self.consumed += len(data)
            wake = (self._paused and not self._resume_scheduled
                    and self._buffered < self._low_water)
            if wake:
                self._resume_scheduled = True
        if wake:
            self._call_from_thread(self._resume)
        return data

    def drain(self) -> int:
        """
        Read and drop everything up to the end of the input; the bytes dropped.
        """
        dropped = 0
        while True:
            data = self.read(1 << 20)
            if not data:
                return dropped
            dropped += len(data)
