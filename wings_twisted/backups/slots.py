"""
The node-wide limit of simultaneously generating backups, ``system.backups.max_concurrent``
(backups.md §2, §10; project): ``0`` is unlimited; further backups wait in order (their request
was already answered 202).  The limit is read at every acquisition and release, so a new value
from ``POST /api/update`` applies to the next backup.  Reactor thread only.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from twisted.internet.defer import Deferred, succeed

__all__ = ["Slots"]


class Slots:
    """
    A counting limiter whose limit is read live.
    """

    def __init__(self, limit: Callable[[], int]) -> None:
        self._limit = limit
        self.running = 0
        self._waiting: deque[Deferred[None]] = deque()

    @property
    def waiting(self) -> int:
        """
        Backups waiting for a slot.
        """
        return len(self._waiting)

    def _free(self) -> bool:
        limit = self._limit()
        return limit <= 0 or self.running < limit

    def acquire(self) -> Deferred[None]:
        """
        Fires once a slot is held (at once when one is free).  Cancelling it leaves the queue.
        """
        if self._free() and not self._waiting:
            self.running += 1
            return succeed(None)

        def cancel(d: Deferred[None]) -> None:
            try:
                self._waiting.remove(d)
            except ValueError:
                pass

        d: Deferred[None] = Deferred(cancel)
        self._waiting.append(d)
        return d

    def release(self) -> None:
        """
        Give a slot back and wake the next waiter(s).
        """
        self.running -= 1
        while self._waiting and self._free():
            self.running += 1
            self._waiting.popleft().callback(None)
