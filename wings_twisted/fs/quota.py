"""
The disk-usage counter and limit of one volume (``api.md`` §2.13).

Usage is a cached total of what the volume's entries cost the host (`charge`).  The cache is
recomputed by walking the volume at most every check interval; between walks every write and
deletion of the daemon adjusts it.  An interval of 0 disables the walk: the figure is then only the
tracked counter, which starts at 0.

Departures from upstream (which adds up the sizes of regular files only) [project]:

* **Blocks and inodes.**  Every entry (regular file, directory, symlink, special file; every
  hard-link name) is charged ``max(INODE_CHARGE, allocated blocks, size rounded up to a block)``
  (the size only for regular files, so a sparse file costs what it would cost once copied or
  backed up).  An empty file or a directory therefore costs 4 KiB: 8,000 one-byte files need
  31.25 MiB of ``disk_space``, as they need on the host, and a limit bounds the number of inodes.
* **Reservations.**  A write still in progress (an upload part, a pull, an extraction) holds a
  `Reservation` of the growth it has written so far, counted against the limit by every other
  check, and turns it into usage when it commits (or gives it back when it aborts).  Six
  interleaved uploads can therefore never together exceed the limit.

The counter is the only shared mutable state of the sandbox: it is guarded by a lock, and a second
lock makes concurrent callers that find the cache stale wait for one walk instead of each walking.
"""

from __future__ import annotations

import os
import stat as _stat
import threading
from typing import Callable

__all__ = ["Accounting", "BLOCKS", "BYTES", "DiskQuota", "INODE_CHARGE", "Reservation", "charge",
           "charge_size"]

#: The least an entry costs, and the block its size is rounded up to (bytes).
INODE_CHARGE = 4096


def charge_size(size: int) -> int:
    """
    What a regular file of ``size`` bytes is charged once written densely: its size rounded up to
    a block, at least `INODE_CHARGE`.
    """
    return max(INODE_CHARGE, -(-size // INODE_CHARGE) * INODE_CHARGE)


def charge(st: os.stat_result) -> int:
    """
    What one entry of a volume is charged (module docstring): allocated blocks, the rounded size
    of a regular file, at least `INODE_CHARGE`.
    """
    allocated = st.st_blocks * 512
    if _stat.S_ISREG(st.st_mode):
        return max(allocated, charge_size(st.st_size))
    return max(INODE_CHARGE, allocated)


class Accounting:
    """
    A rule for what entries cost: `BLOCKS` (this project's, module docstring) or `BYTES`
    (upstream's: regular files their size, everything else nothing).
    """

    def __init__(self, name: str, entry: Callable[[os.stat_result], int],
                 size: Callable[[int], int]) -> None:
        self.name = name
        #: what one entry costs, from its ``lstat``
        self.charge = entry
        #: what a regular file of so many bytes will cost once written
        self.charge_size = size

    def __repr__(self) -> str:
        return "<Accounting {}>".format(self.name)


def _bytes_charge(st: os.stat_result) -> int:
    return st.st_size if _stat.S_ISREG(st.st_mode) else 0


BLOCKS = Accounting("blocks", charge, charge_size)
BYTES = Accounting("bytes", _bytes_charge, lambda size: size)


class Reservation:
    """
    Bytes held against a volume's limit by one write in progress; see `DiskQuota.reserve`.

    ``require(delta)`` before writing, so that the write's usage change so far is covered;
    ``commit(delta)`` when it becomes final; ``release()`` when it is abandoned.
    """

    def __init__(self, quota: "DiskQuota") -> None:
        self._quota = quota
        #: bytes currently held (never negative)
        self.held = 0

    def require(self, delta: int) -> bool:
        """
        Hold enough for a usage change of ``delta`` (the whole change of this write so far; a
        negative one holds nothing) if usage, every other reservation and ``delta`` fit the limit
        (the fits rule of ``api.md`` §2.13).  False, holding what it held, when they do not.
        """
        return self._quota._hold(self, delta)

    def commit(self, delta: int) -> None:
        """
        The write is final and changed usage by ``delta``: give back the hold, count ``delta``.
        """
        self._quota._settle(self, delta)

    def release(self) -> None:
        """
        The write was abandoned: give back the hold.  Idempotent.
        """
        self._quota._settle(self, 0)


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
        accounting: Accounting = BLOCKS,
    ) -> None:
        """
        :param measure: walks the volume and returns its charged usage (blocking).
        :param limit_bytes: 0 is unlimited; -1 refuses every write.
        :param check_interval: seconds between usage walks; 0 never walks.
        :param clock: monotonic seconds, used only to age the usage walk.
        :param accounting: what entries cost (``measure`` must use the same rule).
        """
        self.accounting = accounting
        self._measure = measure
        self._limit = limit_bytes
        self._interval = check_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._walk_lock = threading.Lock()
        self._usage = 0
        self._reserved = 0
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

    def reserved(self) -> int:
        """
        The bytes held by writes in progress.
        """
        with self._lock:
            return self._reserved

    def reserve(self) -> Reservation:
        """
        A new, empty reservation for one write in progress (the files API's pulls and extractions
        use it like `AtomicWrite` does).
        """
        return Reservation(self)

    def _hold(self, reservation: Reservation, delta: int) -> bool:
        limit = self._limit
        usage = self.usage() if limit != 0 else 0
        with self._lock:
            others = self._reserved - reservation.held
            if limit != 0 and usage + others + delta > limit:
                return False
            held = max(0, delta)
            self._reserved = others + held
            reservation.held = held
        return True

    def _settle(self, reservation: Reservation, delta: int) -> None:
        with self._lock:
            self._reserved = max(0, self._reserved - reservation.held)
            reservation.held = 0
            self._usage = max(0, self._usage + delta)

    def fits(self, delta: int) -> bool:
        """
        Whether a write changing usage by ``delta`` bytes is allowed: limit 0, or usage + the
        reservations of writes in progress + delta <= limit (also for a negative delta).
        """
        limit = self._limit
        if limit == 0:
            return True
        return self.usage() + self.reserved() + delta <= limit

    def has_space(self) -> bool:
        """
        Whether an operation of unknown size may start: limit 0, walks disabled, or usage <= limit.
        """
        limit = self._limit
        if limit == 0 or self._interval <= 0:
            return True
        return self.usage() + self.reserved() <= limit

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

    def reserve(self) -> Reservation:
        """
        A reservation for a write of unknown final size (a pull, an extraction): ``require`` the
        usage change written so far before each chunk, ``commit`` or ``release`` at the end
        (`Reservation`).
        """
        return self._quota.reserve()

    def reserved_usage(self) -> int:
        """
        The bytes held by writes in progress.
        """
        return self._quota.reserved()

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
