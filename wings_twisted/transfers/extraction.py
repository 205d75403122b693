"""
Extracting the archive part of an incoming transfer while it arrives (transfers.md §4.3–§4.4,
§10.2).

`ThreadedExtraction` is what the daemon uses: the part's bytes (already hashed by the caller on the
reactor thread) go into a ``streams.feed.ThreadFeed``; one worker thread reads them through the
gzip reader (several members tolerated) and the tar reader into an ``archive.Extractor`` with the
`TRANSFER` policy.  When the tar stream ends (its zero blocks), the worker reads and drops the rest
of the part (gzip trailer, padding), so the feed never stalls the connection.  The feed pauses the
connection while more than its high-water mark waits for the worker: memory stays bounded whatever
the archive's size.

`InlineExtraction` keeps the part in memory and extracts it when the part ends, through
``run_blocking``; unit tests use it with a synchronous ``run_blocking``, where no worker thread
can block on a feed.

``system.transfers.download_limit`` (MiB/s, ≥ 1) is applied as a token bucket on the worker's
reads (`RateLimit`); the full feed then pauses the connection.

Extraction rules (§4.4): names clamped to the volume root, symlink/hard-link/device/FIFO entries
skipped, directory entries created (0755), the quota checked on the bytes written, each file
through a temporary file renamed into place with the entry's mode less the umask of 022 for a new
file (an existing file keeps its mode), owner and mtime; the egg denylist is **not** applied: a
denylisted file and a file of mode 4750 arrive as they were sent.  Any error aborts the extraction
and fails the transfer; what was written stays until the caller removes the volume (§4.7).
"""

from __future__ import annotations

import errno
import io
import threading
import time
from typing import Callable, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..archive import Busy, Damaged, Extractor, ExtractPolicy, ExtractStats, tar_entries
from ..archive.codecs import gzip_source
from ..blocking import RunBlocking
from ..fs import NoSpace, QuotaExceeded, Volume
from ..streams.feed import ThreadFeed

__all__ = ["INTERNAL", "TRANSFER", "RateLimit", "failure_answer", "ArchiveSink", "ExtractionFactory", "InlineExtraction",
           "ThreadedExtraction", "extract_stream"]

log = Logger()

#: Incoming transfers: no denylist, every mode bit kept (setuid/setgid/sticky included), an
#: existing file keeps its mode and a new one gets the stored bits less the umask of 022.
TRANSFER = ExtractPolicy(denylist=False, mode_mask=0o7777, keep_existing_mode=True)


INTERNAL = "An unexpected error was encountered while processing this request"
NO_SPACE = "The node's disk is full: the server could not be received."
QUOTA = "The server does not fit in its disk limit on this node."
UNREADABLE = "The archive could not be read: {}."
BUSY = "A file of the server is busy on this node."


def failure_answer(failure: Failure) -> tuple[int, str]:
    """
    The status and message the source gets for an extraction that failed: 400 for an archive
    that cannot be read or does not fit the disk limit, 507 for a full disk, 409 for a busy file,
    500 (logged) for anything else.
    """
    error = failure.value
    if isinstance(error, Damaged):
        return 400, UNREADABLE.format(str(error) or "damaged")
    if isinstance(error, QuotaExceeded):
        return 400, QUOTA
    if isinstance(error, NoSpace) or (isinstance(error, OSError)
                                      and error.errno in (errno.ENOSPC, errno.EDQUOT)):
        return 507, NO_SPACE
    if isinstance(error, Busy):
        return 409, BUSY
    log.failure("Extracting an incoming transfer failed", failure)
    return 500, INTERNAL


class ArchiveSink(Protocol):
    """
    Where the archive part's bytes go on the destination.
    """

    def write(self, data: bytes) -> None:
        """
        The next bytes of the part (reactor thread; never blocks).
        """

    def finish(self) -> Deferred[ExtractStats]:
        """
        The part ended: fire once every entry is extracted, or fail with the extraction's error.
        """

    def abort(self) -> Deferred[None]:
        """
        Stop now; fire once nothing writes into the volume any more.
        """


#: ``(volume, producer, on_failure)`` → a sink.  ``producer`` is the connection (paused while
#: the disk lags behind); ``on_failure`` is called on the reactor thread when extraction fails
#: before the part ended.
ExtractionFactory = Callable[[Volume, IPushProducer, Callable[[Failure], None]], ArchiveSink]


class RateLimit:
    """
    A token bucket on the reads of the worker thread (``system.transfers.download_limit``, MiB/s,
    transfers.md §4.4 [project]): a capacity of one second's worth; a read that finds the bucket
    empty sleeps (on the worker thread) until its bytes are paid for.  The feed then fills up and
    pauses the connection: the limit reaches the source as TCP back-pressure.
    """

    def __init__(self, read: Callable[[int], bytes], bytes_per_second: float, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._read = read
        self._rate = bytes_per_second
        self._clock = clock
        self._sleep = sleep
        self._tokens = bytes_per_second
        self._last = clock()

    def read(self, size: int) -> bytes:
        """
        At most ``size`` bytes, once the bucket allows them.
        """
        data = self._read(size)
        now = self._clock()
        self._tokens = min(self._rate, self._tokens + (now - self._last) * self._rate)
        self._last = now
        self._tokens -= len(data)
        if self._tokens < 0:
            self._sleep(-self._tokens / self._rate)
        return data


def extract_stream(volume: Volume, read: Callable[[int], bytes],
                   cancel: threading.Event) -> ExtractStats:
    """
    Blocking: extract the gzip-compressed tar stream ``read`` gives into ``volume`` (created when
    missing), until the end of the tar stream.
    """
    volume.ensure_root()

    class _Source:
        def read(self, size: int) -> bytes:
            return read(size)

    with Extractor(volume, policy=TRANSFER, cancel=cancel) as extractor:
        extractor.extract_all(tar_entries(gzip_source(_Source())))
        return extractor.stats


class ThreadedExtraction:
    """
    The archive extracted on a worker thread from a bounded feed; see the module docstring.

    :param call_from_thread: ``reactor.callFromThread``.
    """

    def __init__(self, volume: Volume, producer: IPushProducer,
                 on_failure: Callable[[Failure], None], *, run_blocking: RunBlocking,
                 call_from_thread: Callable[[Callable[[], None]], object],
                 limit_mib: int = 0) -> None:
        """
        :param limit_mib: ``system.transfers.download_limit``: MiB/s; below 1, unlimited.
        """
        self._volume = volume
        self._limit = limit_mib * 1024 * 1024 if limit_mib >= 1 else 0
        self._cancel = threading.Event()
        self._feed = ThreadFeed(call_from_thread)
        self._feed.registerProducer(producer, True)
        self._on_failure = on_failure
        self._finished = False
        self._aborted = False
        self.stats: ExtractStats | None = None
        #: Fires when the worker returned: the stats, or its failure.
        self.done: Deferred[ExtractStats] = run_blocking(self._work)
        self.done.addErrback(self._failed)

    def _work(self) -> ExtractStats:
        feed = self._feed
        read = RateLimit(feed.read, self._limit).read if self._limit else feed.read
        try:
            stats = extract_stream(self._volume, read, self._cancel)
            while read(1 << 20):
                pass  # what the tar reader left of the part (trailer, padding)
            return stats
        except BaseException:
            feed.abort()
            raise

    def _failed(self, failure: Failure) -> Failure:
        self._feed.release()
        if not self._finished and not self._aborted:
            self._on_failure(failure)
        return failure

    def write(self, data: bytes) -> None:
        """
        Queue ``data`` for the worker.
        """
        self._feed.write(data)

    def finish(self) -> Deferred[ExtractStats]:
        """
        End of the part: the worker extracts what is queued and returns.
        """
        self._finished = True
        self._feed.close()
        result: Deferred[ExtractStats] = Deferred()
        self.done.addBoth(_relay, result)
        return result

    def abort(self) -> Deferred[None]:
        """
        Cancel the worker (it stops at its next piece) and wait for it.
        """
        self._aborted = True
        self._cancel.set()
        self._feed.abort()
        self._feed.release()
        stopped: Deferred[None] = Deferred()
        self.done.addBoth(lambda _: stopped.callback(None))
        return stopped


def _relay(result: ExtractStats | Failure, into: Deferred[ExtractStats]) -> None:
    if isinstance(result, Failure):
        into.errback(result)
    else:
        into.callback(result)


class InlineExtraction:
    """
    The part kept in memory and extracted when it ends (tests); see the module docstring.
    """

    def __init__(self, volume: Volume, producer: IPushProducer,
                 on_failure: Callable[[Failure], None], *, run_blocking: RunBlocking) -> None:
        self._volume = volume
        self._run_blocking = run_blocking
        self._pieces: list[bytes] = []
        self._cancel = threading.Event()

    def write(self, data: bytes) -> None:
        """
        Keep ``data``.
        """
        self._pieces.append(data)

    def finish(self) -> Deferred[ExtractStats]:
        """
        Extract everything now.
        """
        stream = io.BytesIO(b"".join(self._pieces))
        self._pieces = []

        def work() -> ExtractStats:
            stats = extract_stream(self._volume, stream.read, self._cancel)
            return stats

        return self._run_blocking(work)

    def abort(self) -> Deferred[None]:
        """
        Drop what was kept.
        """
        self._cancel.set()
        self._pieces = []
        done: Deferred[None] = Deferred()
        done.callback(None)
        return done

