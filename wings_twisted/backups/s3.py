"""
Uploading an archive to S3 through the Panel's presigned part URLs (backups.md §6).

The daemon never holds S3 credentials: the Panel answers ``GET /backups/{uuid}?size=`` with one
presigned ``UploadPart`` URL per part and ``part_size``; the daemon checks the count
(``ceil(size / part_size)``, §6.1 step 4), then uploads the parts **sequentially**
(`upload_parts`), part *i* covering bytes ``[(i−1)·part_size, min(i·part_size, size))`` of the
staging file.

One part (§6.2, `upload_part`):

* ``PUT <url>`` with ``Content-Type: application/x-gzip``; the body is a `PartProducer`, an
  ``IBodyProducer`` with an exact ``length`` that reads the part's byte range from the file in
  64 KiB chunks on the injected cooperator, so ``Content-Length`` is the part length and a part
  is never held in memory;
* the URL is used as given: it goes to an ``IAgent`` as bytes, so its scheme, host, path, query
  and percent-encoding reach the store untouched (a presigned signature covers them);
* success is HTTP **200** only; the ``ETag`` response header is kept verbatim (quotes included);
* network errors and 5xx are retried with exponential back-off (first wait 0.5 s, ×2, ±50 %
  jitter), no retry starting later than 60 s after the first attempt; every retry sends the part
  again **from its first byte** (a new producer over the same range); any other status is
  final; cancellation (the server was deleted) is final;
* each attempt has a 2-hour timeout.
"""

from __future__ import annotations

import math
import random
from typing import Any, Callable, Iterator, Sequence

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IConsumer, IReactorTime
from twisted.internet.task import Cooperator, TaskStopped, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from .report import Part

__all__ = ["PartProducer", "S3Error", "check_part_count", "part_ranges", "upload_part",
           "upload_parts"]

log = Logger()

CONTENT_TYPE = b"application/x-gzip"
READ_SIZE = 64 * 1024
FIRST_WAIT = 0.5
GROWTH = 2.0
JITTER = 0.5
BUDGET = 60.0
ATTEMPT_TIMEOUT = 2 * 3600.0


class S3Error(Exception):
    """
    A part could not be uploaded (or the Panel's part list is unusable).
    """


def part_ranges(size: int, part_size: int) -> list[tuple[int, int]]:
    """
    ``(offset, length)`` of every part of a ``size``-byte file.
    """
    if size <= 0 or part_size <= 0:
        raise S3Error("cannot split {} bytes into parts of {}".format(size, part_size))
    return [(offset, min(part_size, size - offset)) for offset in range(0, size, part_size)]


def check_part_count(urls: Sequence[str], size: int, part_size: int) -> None:
    """
    The Panel's list must hold ``ceil(size / part_size)`` URLs (§6.1 step 4).
    """
    expected = math.ceil(size / part_size) if part_size > 0 else -1
    if len(urls) != expected:
        raise S3Error("the panel returned {} part URLs for {} bytes in parts of {} (expected "
                      "{})".format(len(urls), size, part_size, expected))


@implementer(IBodyProducer)
class PartProducer:
    """
    Bytes ``[offset, offset + length)`` of a file as a request body, read in chunks on
    ``cooperator``.  The file is opened by `startProducing` and closed when the range has been
    sent, on `stopProducing`, or on an error; a short file fails the request.
    """

    def __init__(self, path: str, offset: int, length: int, cooperator: Cooperator, *,
                 read_size: int = READ_SIZE,
                 opener: Callable[[str], Any] = lambda path: open(path, "rb")) -> None:
        self.path = path
        self.offset = offset
        self.length = length
        self._cooperator = cooperator
        self._read_size = read_size
        self._opener = opener
        self._task: Any = None
        self._file: Any = None
        #: Bytes handed to the consumer so far.
        self.sent = 0

    def _chunks(self, consumer: IConsumer) -> Iterator[None]:
        remaining = self.length
        while remaining > 0:
            data = self._file.read(min(self._read_size, remaining))
            if not data:
                raise S3Error("{} ended before its part was complete".format(self.path))
            remaining -= len(data)
            self.sent += len(data)
            consumer.write(data)
            yield None

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        """
        Start writing the range to ``consumer``; fires when all of it was written.
        """
        self._file = self._opener(self.path)
        self._file.seek(self.offset)
        self._task = self._cooperator.cooperate(self._chunks(consumer))
        d: Deferred[None] = self._task.whenDone()

        def finished(result: Any) -> Any:
            self._close()
            if isinstance(result, Failure):
                if result.check(TaskStopped):
                    return Deferred()  # stopped by the client: never fires (IBodyProducer)
                return result
            return None

        d.addBoth(finished)
        return d

    def pauseProducing(self) -> None:
        """
        The transport's buffer is full.
        """
        if self._task is not None:
            self._task.pause()

    def resumeProducing(self) -> None:
        """
        The transport drained.
        """
        if self._task is not None:
            self._task.resume()

    def stopProducing(self) -> None:
        """
        The request was abandoned: stop reading and close the file.
        """
        if self._task is not None:
            try:
                self._task.stop()
            except Exception:
                pass
        self._close()


def _etag(response: IResponse) -> str:
    values: list[bytes] | None = response.headers.getRawHeaders(b"etag")
    if not values:
        raise S3Error("the store answered 200 without an ETag")
    return values[0].decode("latin-1")


async def upload_part(agent: IAgent, clock: IReactorTime, cooperator: Cooperator, url: str,
                      path: str, offset: int, length: int, *,
                      jitter: Callable[[], float] = random.random,
                      timeout: float = ATTEMPT_TIMEOUT) -> str:
    """
    Upload one part with the retry policy of §6.2; its ETag, verbatim.

    :raises S3Error: a final status, or the retry budget spent.
    :raises CancelledError: the upload was cancelled.
    """
    started = clock.seconds()
    retry = 0
    uri = url.encode("utf-8")
    while True:
        producer = PartProducer(path, offset, length, cooperator)
        headers = Headers({b"Content-Type": [CONTENT_TYPE]})
        attempt = agent.request(b"PUT", uri, headers, producer)
        attempt.addTimeout(timeout, clock)
        try:
            response: IResponse = await attempt
            body = await readBody(response)
        except CancelledError:
            raise
        except Exception as e:
            reasons = getattr(e, "reasons", None) or []
            if any(r.check(CancelledError) for r in reasons):
                raise CancelledError() from None
            error = S3Error("part upload failed: {}".format(
                "; ".join(r.getErrorMessage() for r in reasons) or str(e) or type(e).__name__))
        else:
            if response.code == 200:
                etag: str = _etag(response)
                return etag
            error = S3Error("the store answered {} {}: {}".format(
                response.code, response.phrase.decode("latin-1", "replace"),
                body[:300].decode("utf-8", "replace")))
            if response.code < 500:
                raise error
        wait = FIRST_WAIT * GROWTH ** retry
        wait *= 1 + JITTER * (2 * jitter() - 1)
        if clock.seconds() + wait - started > BUDGET:
            raise error
        log.warn("Uploading a backup part failed ({error}); retrying in {wait:.1f}s",
                 error=str(error), wait=wait)
        retry += 1
        await deferLater(clock, wait, lambda: None)


async def upload_parts(agent: IAgent, clock: IReactorTime, cooperator: Cooperator,
                       urls: Sequence[str], path: str, size: int, part_size: int, *,
                       jitter: Callable[[], float] = random.random) -> tuple[Part, ...]:
    """
    Upload every part in order (§6.1 steps 4–5); the parts to report.
    """
    check_part_count(urls, size, part_size)
    parts = []
    for number, (url, (offset, length)) in enumerate(zip(urls, part_ranges(size, part_size)),
                                                     start=1):
        etag = await upload_part(agent, clock, cooperator, url, path, offset, length,
                                 jitter=jitter)
        parts.append(Part(number, etag))
    return tuple(parts)
