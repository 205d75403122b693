"""
A stream of chunks written into files on a worker thread, with back-pressure
on whoever feeds it.

``Spool`` is an ``IConsumer``.  The code that feeds it registers its source
once with ``spool.registerProducer(producer, True)`` (an HTTP transport for
uploads; a response's transport for a remote pull; a transfer stream) and
never pauses or resumes anything itself: while more than ``high_water``
bytes wait for the disk the spool pauses that producer, and it resumes it
once less than ``low_water`` wait, so memory stays bounded whatever the size
of the stream and however many files it carries.

Files are written one after the other::

    spool.begin(lambda: volume.begin_write(directory, name))
    spool.write(chunk)            # any number of times
    spool.commit(check=guard, then=record)
    ...                           # more files
    await spool.flush()           # everything queued is written

Every disk operation is a job run by the injected ``run_blocking``, one at a
time and strictly in the order it was asked for: ``begin`` runs the opening
callable (it returns a ``FileSink``, such as ``fs.AtomicWrite``), consecutive
chunks of a file are batched into ``write_many`` jobs of ``job_min`` to about
``job_max`` bytes (fewer, larger ``writev`` calls, each a GIL hand-off from
the worker thread), ``commit`` runs ``check`` and then ``FileSink.commit``,
``abort`` runs ``FileSink.abort``.  A batch below ``job_min`` waits for more
bytes unless its file has ended or someone waits in ``flush``.

*Inline writes* (``inline_writes=True``, uploads): write jobs run on the
calling (reactor) thread instead, still one batch of ``job_min``-``job_max``
bytes at a time and in order with the other jobs, which stay on the worker.
A page-cache write of 1-2 MiB costs less there than the hand-off (two GIL
switches, a Deferred, a wake-up of the reactor): the upload benchmark's CPU
per GiB fell by about 15%.  The reactor must not wait on a disk, though: the
first write that takes longer than `INLINE_SLOW` (a device throttling
writeback, a full page cache) sends every later write of the stream to the
worker.

The first job that fails is *the* failure of the spool: the file it belongs
to is aborted (its temporary file and the directories made for it removed,
as ``AtomicWrite.abort`` does), every job still queued is dropped, the
producer is resumed and never paused again, and from then on ``begin``,
``write`` and ``commit`` are ignored.  Files committed before stay.  The
failure is kept in ``failure`` and every ``flush`` fails with it; later
failures (of the clean-up itself) are only logged.  ``close`` (input ended or
lost) aborts an unfinished file the same way but lets queued commits of
earlier files finish.
"""

from __future__ import annotations

import collections
import time
from typing import Callable, Protocol, Sequence, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IProducer, IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..blocking import RunBlocking

MIB = 1024 * 1024
# Bytes waiting for the disk: past HIGH_WATER the producer is paused, below
# LOW_WATER it resumes.  Small on purpose: these buffers are most of an
# upload's memory.
HIGH_WATER = 3 * MIB
LOW_WATER = 1 * MIB
# A write job starts once this much is queued for the file (or the file
# ended), and takes at most about JOB_MAX.
JOB_MIN = 1 * MIB
JOB_MAX = 2 * MIB
# An inline write slower than this (seconds) ends inline writing for the stream.
INLINE_SLOW = 0.005


class FileSink(Protocol):
    """
    A file being written; every method blocks and runs on the worker thread.
    ``fs.AtomicWrite`` is one.
    """

    def write_many(self, chunks: Sequence[bytes]) -> None:
        """
        Append ``chunks`` in order.
        """

    def commit(self) -> None:
        """
        Make the file final.
        """

    def abort(self) -> None:
        """
        Discard the file; also called after a failed ``write_many`` or
        ``commit``, and must then still clean up.
        """


_BEGIN, _WRITE, _COMMIT, _ABORT = range(4)


class _File:
    """
    One file of the stream.
    """

    __slots__ = ("open", "sink")

    def __init__(self, open_file: Callable[[], FileSink]) -> None:
        self.open = open_file
        self.sink: FileSink | None = None


class _Job:
    """
    One disk operation; a write job collects consecutive chunks of its file.
    """

    __slots__ = ("kind", "file", "chunks", "size", "check", "then")

    def __init__(self, kind: int, file: _File) -> None:
        self.kind = kind
        self.file = file
        self.chunks: list[bytes] = []
        self.size = 0
        self.check: Callable[[], object] | None = None
        self.then: Callable[[], object] | None = None


def _commit(sink: FileSink, check: Callable[[], object] | None) -> None:
    """
    The blocking half of a commit job.
    """
    if check is not None:
        check()
    sink.commit()


@implementer(IConsumer)
class Spool:
    """
    Writes what it is given into a sequence of files on a worker thread; see
    the module docstring.
    """

    _log = Logger()

    def __init__(self, run_blocking: RunBlocking, *, high_water: int = HIGH_WATER,
                 low_water: int = LOW_WATER, job_min: int = JOB_MIN,
                 job_max: int = JOB_MAX, inline_writes: bool = False,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._run_blocking = run_blocking
        self._inline = inline_writes
        self._monotonic = monotonic
        self._high_water = high_water
        self._low_water = low_water
        self._job_min = job_min
        self._job_max = job_max
        self._jobs: collections.deque[_Job] = collections.deque()
        # The last queued job when it is a write batch of the current file
        # that can take more chunks.
        self._tail: _Job | None = None
        self._current: _File | None = None
        self._buffered = 0
        self._busy = False
        self._kicking = False
        self._closed = False
        self._producer: IPushProducer | None = None
        self._paused = False
        self._waiters: list[Deferred[None]] = []
        self.failure: Failure | None = None

    @property
    def buffered(self) -> int:
        """
        Bytes given to ``write`` that are not written yet (queued or being
        written).
        """
        return self._buffered

    # IConsumer

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        """
        Pause and resume ``producer`` by how much waits for the disk.
        """
        if not streaming:
            raise ValueError("a Spool only takes push producers")
        if self._producer is not None:
            raise RuntimeError("a producer is already registered")
        self._producer = cast(IPushProducer, producer)
        self._paused = False
        self._throttle()

    def unregisterProducer(self) -> None:
        """
        Forget the producer, resuming it first if the spool paused it.
        """
        producer, self._producer = self._producer, None
        if producer is not None and self._paused:
            self._paused = False
            producer.resumeProducing()

    def write(self, data: bytes) -> None:
        """
        Append ``data`` to the current file.  The spool keeps ``data`` itself
        until it is written: do not change it afterwards.
        """
        file = self._current
        if file is None:
            if self.failure is not None or self._closed:
                return
            raise RuntimeError("write() outside a file: call begin() first")
        size = len(data)
        self._buffered += size
        tail = self._tail
        if tail is None:
            tail = _Job(_WRITE, file)
            self._jobs.append(tail)
            self._tail = tail
        tail.chunks.append(data)
        tail.size += size
        if tail.size >= self._job_max:
            self._tail = None
        if self._buffered > self._high_water:
            self._throttle()
        if not self._busy:
            self._kick()

    # the file sequence

    def begin(self, open_file: Callable[[], FileSink]) -> None:
        """
        Start the next file: ``open_file`` runs on the worker thread and
        returns its sink.  Ignored once the spool failed or closed.
        """
        if self.failure is not None or self._closed:
            return
        if self._current is not None:
            raise RuntimeError("begin() before the previous file was committed or aborted")
        file = _File(open_file)
        self._current = file
        self._append(_Job(_BEGIN, file))

    def commit(self, *, check: Callable[[], object] | None = None,
               then: Callable[[], object] | None = None) -> None:
        """
        End the current file: once its bytes are written, run ``check`` and
        ``FileSink.commit`` on the worker thread (either failing is the
        spool's failure and aborts the file), then ``then`` on this thread.
        Ignored once the spool failed or closed.
        """
        file = self._current
        if file is None:
            if self.failure is not None or self._closed:
                return
            raise RuntimeError("commit() outside a file")
        self._current = None
        job = _Job(_COMMIT, file)
        job.check = check
        job.then = then
        self._append(job)

    def abort(self) -> None:
        """
        Give up the current file, if any: its queued bytes are dropped and
        what was written of it is removed.  Not a failure of the spool.
        """
        file = self._current
        if file is None:
            return
        self._current = None
        jobs = self._jobs
        # The current file's jobs are the end of the queue.
        while jobs and jobs[-1].file is file:
            self._buffered -= jobs.pop().size
        self._append(_Job(_ABORT, file))
        self._unthrottle()

    def close(self) -> None:
        """
        The input ended or was lost: abort an unfinished file, release the
        producer, write out what is queued.  Everything after is ignored.
        """
        if self._closed:
            return
        self.abort()
        self._closed = True
        self.unregisterProducer()
        self._kick()

    def flush(self) -> Deferred[None]:
        """
        Fire once every job asked for so far has run (a batch below
        ``job_min`` is written at once); fail with ``failure`` if the spool
        failed.
        """
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        self._kick()
        return d

    # the job queue

    def _append(self, job: _Job) -> None:
        self._jobs.append(job)
        self._tail = None
        if not self._busy:
            self._kick()

    def _kick(self) -> None:
        """
        Start the next job unless one is running; fire the waiters once the
        queue is empty.
        """
        if self._kicking:
            return  # the loop below, further up the stack, goes on
        self._kicking = True
        try:
            jobs = self._jobs
            while not self._busy and jobs:
                job = jobs[0]
                if (job.kind == _WRITE and job.size < self._job_min and len(jobs) == 1
                        and not self._waiters and not self._closed):
                    break  # wait for a worthwhile batch
                jobs.popleft()
                if job is self._tail:
                    self._tail = None
                self._start(job)
        finally:
            self._kicking = False
        if not self._busy and not self._jobs and self._waiters:
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                if self.failure is None:
                    d.callback(None)
                else:
                    d.errback(self.failure)

    def _start(self, job: _Job) -> None:
        file = job.file
        run = self._run_blocking
        d: Deferred[object]
        if job.kind == _WRITE and self._inline:
            assert file.sink is not None
            self._write_inline(job, file.sink)
            return
        if job.kind == _WRITE:
            assert file.sink is not None  # a failed begin dropped its writes
            d = run(file.sink.write_many, job.chunks)
        elif job.kind == _BEGIN:
            d = run(file.open)
        elif job.kind == _COMMIT:
            assert file.sink is not None
            d = run(_commit, file.sink, job.check)
        elif file.sink is not None:
            d = run(file.sink.abort)
        else:
            return  # aborted before it was opened: nothing to remove
        self._busy = True
        d.addCallbacks(self._job_done, self._job_failed, callbackArgs=(job,),
                       errbackArgs=(job,))
        d.addErrback(lambda f: self._log.failure("Spool bookkeeping failed", f))

    def _write_inline(self, job: _Job, sink: FileSink) -> None:
        """
        Run a write job on this thread (module docstring, *inline writes*); the first one that
        takes longer than `INLINE_SLOW` sends every later one to the worker again.
        """
        self._busy = True
        started = self._monotonic()
        try:
            sink.write_many(job.chunks)
        except Exception:
            self._job_failed(Failure(), job)
            return
        took = self._monotonic() - started
        if took > INLINE_SLOW:
            self._inline = False
            self._log.info("A write took {ms:.0f} ms: this stream's writes go to a worker thread "
                           "from now on", ms=took * 1000)
        self._job_done(None, job)

    def _job_done(self, result: object, job: _Job) -> None:
        self._busy = False
        kind = job.kind
        if kind == _WRITE:
            self._buffered -= job.size
        elif kind == _BEGIN:
            job.file.sink = cast(FileSink, result)
        elif kind == _COMMIT and job.then is not None:
            try:
                job.then()
            except Exception:
                self._log.failure("After committing a spooled file")
        self._kick()
        self._unthrottle()

    def _job_failed(self, failure: Failure, job: _Job) -> None:
        self._busy = False
        if job.kind == _WRITE:
            self._buffered -= job.size
        if self.failure is not None:
            self._log.failure("Spool job failed after an earlier failure", failure)
        else:
            self.failure = failure
            # Stop: drop everything queued, clean up the file that failed.
            for queued in self._jobs:
                self._buffered -= queued.size
            self._jobs.clear()
            self._tail = None
            self._current = None
            file = job.file
            if job.kind != _ABORT and file.sink is not None:
                self._jobs.append(_Job(_ABORT, file))
        self._kick()
        self._unthrottle()

    # back-pressure

    def _throttle(self) -> None:
        if self._buffered > self._high_water and not self._paused and \
                self._producer is not None and self.failure is None:
            self._paused = True
            self._producer.pauseProducing()

    def _unthrottle(self) -> None:
        if self._paused and (self._buffered < self._low_water or self.failure is not None):
            self._paused = False
            if self._producer is not None:
                self._producer.resumeProducing()
