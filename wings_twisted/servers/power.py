"""
Power actions' vocabulary (lifecycle.md §5–§9): the errors they end with and
the per-server power lock.

The error texts are upstream's, because the websocket sends them to admins
as ``daemon error`` and the lock's text is fixed by websocket.md §5.2.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime

ACTIONS = ("start", "stop", "restart", "kill")

LOCK_BUSY_TEXT = ("another power action is currently being processed for this server, "
                  "please try again later")


class PowerError(Exception):
    """
    A power action was refused or failed; ``str()`` is the text shown to
    admins.
    """


class PowerLocked(PowerError):
    """
    The power lock could not be taken in time.
    """

    def __init__(self) -> None:
        super().__init__("locker: cannot acquire lock, already locked")


class UnknownPowerAction(PowerError):
    """
    Not one of ``ACTIONS``.
    """

    def __init__(self) -> None:
        super().__init__("attempting to handle unknown power action")


class ServerBusy(PowerError):
    """
    Installing, transferring or restoring (lifecycle.md §5 step 1).
    """


class PowerLock:
    """
    One power action at a time (lifecycle.md §9.1): non-reentrant,
    acquired at once or within a number of seconds.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._held = False
        self._waiters: list[Deferred[None]] = []

    @property
    def held(self) -> bool:
        """
        Whether an action holds the lock.
        """
        return self._held

    def try_acquire(self) -> bool:
        """
        Take the lock if it is free.
        """
        if self._held:
            return False
        self._held = True
        return True

    async def acquire(self, wait: float = 0) -> None:
        """
        Take the lock, waiting up to ``wait`` seconds; ``PowerLocked`` when
        it stays busy.
        """
        if self.try_acquire():
            return
        if wait <= 0:
            raise PowerLocked()
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        timer: Any = self._clock.callLater(wait, waiter.cancel)
        try:
            await waiter
        except CancelledError:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            raise PowerLocked()
        finally:
            if timer.active():
                timer.cancel()

    def release(self) -> None:
        """
        Hand the lock to the oldest waiter, or free it.
        """
        if self._waiters:
            self._waiters.pop(0).callback(None)
            return
        self._held = False
