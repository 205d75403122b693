"""
Bytes made by blocking code on a worker thread, pushed to a consumer on the reactor thread.

``ThreadPipeProducer`` runs ``work(write)`` through the injected ``run_blocking``; every
``write(chunk)`` the work makes on its thread is handed to the consumer's ``write`` on the reactor
thread (through ``call_from_thread``), in order.  It is an ``IPushProducer`` and an
``IBodyProducer`` of unknown length, so the same object feeds an HTTP request body (treq), a
response, or anything else that registers producers — for example a tar.gz stream of a volume for
a server transfer::

    producer = ThreadPipeProducer(
        lambda write: archive.write_tar_gz(volume, archive.volume_selection(), write, level=1),
        run_blocking=node.run_blocking, call_from_thread=reactor.callFromThread)
    await treq.post(url, data=producer)

Back-pressure: the worker blocks in ``write`` while the consumer has paused the producer or while
more than ``high_water`` bytes wait for the reactor thread, so memory stays bounded whatever the
size of the stream.

Ownership (``stopProducing``): the producer owns the worker.  Stopping makes the worker's next (or
current, blocked) ``write`` raise `Stopped`, which unwinds the work: whatever it opened is closed by
its own ``finally`` blocks (the archive writer closes each file as it goes).  Chunks still queued
are dropped.  As ``IBodyProducer`` requires, the Deferred of ``startProducing`` then never fires;
``finished`` fires in every case once the worker has returned.
"""

from __future__ import annotations

import threading
from typing import Callable, Generic, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from ..blocking import RunBlocking

__all__ = ["HIGH_WATER", "Stopped", "ThreadPipeProducer"]

log = Logger()
T = TypeVar("T")

#: Bytes handed over by the worker and not yet written to the consumer, at most.
HIGH_WATER = 4 * 1024 * 1024


class Stopped(Exception):
    """
    Raised in the worker by ``write`` once the producer was stopped.
    """


@implementer(IPushProducer, IBodyProducer)
class ThreadPipeProducer(Generic[T]):
    """
    ``work(write)`` on a worker thread, its output pushed to a consumer.

    :param work: blocking; calls ``write(chunk)`` any number of times (a chunk must not be changed
        afterwards) and returns a result.
    :param run_blocking: where the work runs.
    :param call_from_thread: schedules a call on the reactor thread (``reactor.callFromThread``).
    """

    length = UNKNOWN_LENGTH

    def __init__(self, work: Callable[[Callable[[bytes], None]], T], *,
                 run_blocking: RunBlocking,
                 call_from_thread: Callable[[Callable[[], None]], object],
                 high_water: int = HIGH_WATER) -> None:
        self._work = work
        self._run_blocking = run_blocking
        self._call_from_thread = call_from_thread
        self._high_water = high_water
        self._condition = threading.Condition()
        self._paused = False
        self._stopped = False
        self._in_flight = 0
        self._consumer: IConsumer | None = None
        self._done: Deferred[T] | None = None
        #: Fires once the worker returned: with the work's result, ``None`` when it ended because
        #: the producer was stopped, or the work's failure.
        self.finished: Deferred[T] = Deferred()
        #: Bytes written to the consumer.
        self.delivered = 0

    def startProducing(self, consumer: IConsumer) -> Deferred[T]:
        """
        Start the work; the result fires with the work's result once every chunk was written to
        ``consumer``, or fails with the work's failure (never after `stopProducing`).
        """
        self._consumer = consumer
        done: Deferred[T] = Deferred()
        self._done = done
        ran: Deferred[T] = self._run_blocking(self._work, self._write)
        # A synchronous run_blocking (tests) has already ended here.
        ran.addBoth(self._ended)
        return done

    def start(self, consumer: IConsumer) -> Deferred[T]:
        """
        Register as a streaming producer on ``consumer`` and start; unregistered at the end.
        """
        consumer.registerProducer(self, True)
        done = self.startProducing(consumer)

        def unregister(result: object) -> object:
            consumer.unregisterProducer()
            return result

        done.addBoth(unregister)
        return done

    # -- the worker thread -----------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if not data:
            return
        with self._condition:
            while not self._stopped and (self._paused or self._in_flight >= self._high_water):
                self._condition.wait()
            if self._stopped:
                raise Stopped()
            self._in_flight += len(data)
        self._call_from_thread(lambda: self._deliver(data))

    # -- the reactor thread ----------------------------------------------------------------------

    def _deliver(self, data: bytes) -> None:
        try:
            if not self._stopped and self._consumer is not None:
                self._consumer.write(data)
                self.delivered += len(data)
        finally:
            with self._condition:
                self._in_flight -= len(data)
                self._condition.notify_all()

    def _ended(self, result: T | Failure) -> None:
        done, self._done = self._done, None
        if isinstance(result, Failure):
            if self._stopped and result.check(Stopped):
                # The expected end of a stopped pipe: nothing to report.
                self.finished.callback(None)  # type: ignore[arg-type]
                return
            if done is not None and not self._stopped:
                done.errback(result)
            self.finished.errback(result)
            return
        if done is not None and not self._stopped:
            done.callback(result)
        self.finished.callback(result)

    def pauseProducing(self) -> None:
        """
        The consumer is full: the worker blocks at its next write.
        """
        with self._condition:
            self._paused = True

    def resumeProducing(self) -> None:
        """
        The consumer can take more.
        """
        with self._condition:
            self._paused = False
            self._condition.notify_all()

    def stopProducing(self) -> None:
        """
        Stop the worker (its next write raises `Stopped`) and drop what is queued.
        """
        with self._condition:
            self._stopped = True
            self._condition.notify_all()
