"""
The disk-usage counter and limit of one volume (``api.md`` §2.13).

Usage is a cached total of the sizes of all regular files in the volume (symlinks, directories and
special files count 0; every hard-link name counts).  The cache is recomputed by walking the volume
at most every check interval; between walks every write and deletion of the daemon adjusts it.  An
interval of 0 disables the walk: the figure is then only the tracked counter, which starts at 0.

The counter is the only shared mutable state of the sandbox: it is guarded by a lock, and a second
lock makes concurrent callers that find the cache stale wait for one walk instead of each walking.
"""

from __future__ import annotations

import threading
from typing import Callable

__all__ = ["DiskQuota"]


class DiskQuota:
    """
    The usage counter, the disk limit and the fits / has-space checks of one volume; thread-safe.
    """

    def __init__(
        self,
        measure: Callable[[], int],
        *,
        limit_bytes: int,
        check_interval: float,
        clock: Callable[[], float],
    ) -> None:
        """
        :param measure: walks the volume and returns its regular-file bytes (blocking).
        :param limit_bytes: 0 is unlimited; -1 refuses every write.
        :param check_interval: seconds between usage walks; 0 never walks.
        :param clock: monotonic seconds, used only to age the usage walk.
        """
        self._measure = measure
        self._limit = limit_bytes
        self._interval = check_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._walk_lock = threading.Lock()
        self._usage = 0
        self._last_walk: float | None = None

    def set_limit(self, limit_bytes: int) -> None:
        """
        Replace the disk limit in bytes (0 unlimited, -1 refuses every write).
        """
        with self._lock:
            self._limit = limit_bytes

    def _stale(self) -> bool:
        if self._interval <= 0:
            return False
        return self._last_walk is None or self._clock() - self._last_walk >= self._interval

    def usage(self) -> int:
        """
        The cached bytes of regular files, walked again when older than the check interval.

        With an interval of 0 the volume is never walked: the figure is only the tracked counter.
        """
        with self._lock:
            stale = self._stale()
        if stale:
            with self._walk_lock:
                with self._lock:
                    stale = self._stale()
                if stale:
                    self._walk()
        with self._lock:
            return self._usage

    def cached_usage(self) -> int:
        """
        The last known usage, without walking (safe on the reactor thread).
        """
        with self._lock:
            return self._usage

    def is_stale(self) -> bool:
        """
        Whether `usage` would walk the volume now.
        """
        with self._lock:
            return self._stale()

    def refresh(self) -> int:
        """
        Walk the volume now and return the new usage.
        """
        with self._walk_lock:
            return self._walk()

    def usage_within(self, max_age: float) -> int:
        """
        The usage, walking first when the last walk is older than ``max_age`` seconds (or there
        was none); concurrent callers share one walk.
        """
        with self._walk_lock:
            with self._lock:
                fresh = self._last_walk is not None and self._clock() - self._last_walk < max_age
                if fresh:
                    return self._usage
            return self._walk()

    @property
    def limit(self) -> int:
        """
        The limit in bytes (0 unlimited).
        """
        return self._limit

    def _walk(self) -> int:
        total = self._measure()
        with self._lock:
            self._usage = total
            self._last_walk = self._clock()
        return total

    def reset(self) -> None:
        """
        Forget the usage: the volume was removed (0 bytes, walked again on next use).
        """
        with self._lock:
            self._usage = 0
            self._last_walk = None

    def add(self, delta: int) -> None:
        """
        Adjust the counter after one of the daemon's own writes or deletions (never below 0).
        """
        with self._lock:
            self._usage = max(0, self._usage + delta)

    def fits(self, delta: int) -> bool:
        """
        Whether a write changing usage by ``delta`` bytes is allowed: limit 0, or usage + delta <=
        limit (also for a negative delta).
        """
        limit = self._limit
        if limit == 0:
            return True
        return self.usage() + delta <= limit

    def has_space(self) -> bool:
        """
        Whether an operation of unknown size may start: limit 0, walks disabled, or usage <= limit.
        """
        limit = self._limit
        if limit == 0 or self._interval <= 0:
            return True
        return self.usage() <= limit

    def has_space_cached(self) -> bool:
        """
        `has_space` on the cached usage, never walking (safe on the reactor thread): the check of
        an SFTP open for writing (``sftp.md`` §6.5).
        """
        limit = self._limit
        if limit == 0 or self._interval <= 0:
            return True
        return self.cached_usage() <= limit


class QuotaDelegate:
    """
    The quota operations of a `Volume`, delegated to its `DiskQuota` (``_quota``).
    """

    _quota: DiskQuota

    def set_disk_limit(self, limit_bytes: int) -> None:
        """
        Replace the disk limit in bytes (0 unlimited, -1 refuses every write).
        """
        self._quota.set_limit(limit_bytes)

    def usage(self) -> int:
        """
        The cached bytes of regular files, walked again when older than the check interval.
        """
        return self._quota.usage()

    def cached_usage(self) -> int:
        """
        The last known usage, without walking (safe on the reactor thread).
        """
        return self._quota.cached_usage()

    def usage_is_stale(self) -> bool:
        """
        Whether `usage` would walk the volume now.
        """
        return self._quota.is_stale()

    def refresh_usage(self) -> int:
        """
        Walk the volume now and return the new usage.
        """
        return self._quota.refresh()

    def add_usage(self, delta: int) -> None:
        """
        Adjust the counter after one of the daemon's own writes or deletions (never below 0).
        """
        self._quota.add(delta)

    def fits(self, delta: int) -> bool:
        """
        Whether a write changing usage by ``delta`` bytes is allowed (`DiskQuota.fits`).
        """
        return self._quota.fits(delta)

    def has_space(self) -> bool:
        """
        Whether an operation of unknown size may start (`DiskQuota.has_space`).
        """
        return self._quota.has_space()
