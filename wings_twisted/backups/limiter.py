"""
The write limiter of ``system.backups.write_limit`` (backups.md §5.6): a token bucket that runs in
the worker thread writing (or, for a restore, reading) an archive, and sleeps there when it is
empty.  It never runs on the reactor thread.

Rate ``write_limit × 1 048 576`` bytes per second, capacity one second's worth; a limit below 1
means unlimited (`make_bucket` returns ``None``).  A request larger than the capacity is served
in capacity-sized steps, so a 4 MiB write at 1 MiB/s takes about four seconds whatever the
size of the pieces the writer hands over.

The clock and the sleep are injected (``time.monotonic`` and ``time.sleep`` by default) so the
unit tests never sleep.

Pure and blocking: no Twisted.
"""

from __future__ import annotations

import time
from typing import Callable

__all__ = ["MIB", "TokenBucket", "limited", "make_bucket"]

MIB = 1024 * 1024


class TokenBucket:
    """
    ``rate`` bytes per second, at most ``capacity`` saved up; starts full.
    """

    def __init__(self, rate: float, capacity: float | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.capacity = float(capacity if capacity is not None else rate)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.capacity
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def take(self, amount: int) -> None:
        """
        Block (sleep) until ``amount`` bytes may pass.
        """
        remaining = float(amount)
        while remaining > 0:
            step = min(remaining, self.capacity)
            self._refill()
            if self._tokens < step:
                self._sleep((step - self._tokens) / self.rate)
                self._refill()
                # A clock that did not move as far as asked (or a short sleep) loops again.
                if self._tokens < step:
                    continue
            self._tokens -= step
            remaining -= step


def make_bucket(write_limit: int, *, clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep) -> TokenBucket | None:
    """
    The bucket of ``system.backups.write_limit`` (MiB/s), or ``None`` when it is below 1.
    """
    if write_limit < 1:
        return None
    rate = write_limit * MIB
    return TokenBucket(rate, rate, clock=clock, sleep=sleep)


def limited(write: Callable[[bytes], object],
            bucket: TokenBucket | None) -> Callable[[bytes], object]:
    """
    ``write`` behind ``bucket`` (``write`` itself when there is none).
    """
    if bucket is None:
        return write

    def throttled(data: bytes) -> object:
        bucket.take(len(data))
        return write(data)

    return throttled
