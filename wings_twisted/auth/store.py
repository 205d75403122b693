"""
The single-use ``unique_id`` store of the signed-URL routes
(downloads-uploads.md §2.3).

``TokenStore`` is process-wide.  ``consume`` checks and records under one
``threading.Lock`` so two concurrent requests with the same id cannot both
win, whether they come from the reactor thread or from worker threads.  A
first use records a continuation *grant* (client IP and ``exp``) only when
the caller allows resuming at that moment; uploads pass
``allow_resume=False`` and so never leave a grant, which keeps "a
``unique_id`` first seen on an upload cannot later be used on a download"
true even for a Range GET from the same IP.  Entries older than ``ttl``
count as absent (like upstream's expiring cache) even before ``purge`` has
dropped them.  Time comes from the injected clock callable.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Callable

__all__ = ["TokenStore"]



@dataclass(frozen=True)
class _Entry:
    """
    One recorded ``unique_id``: when, and the continuation grant if any.
    """

    recorded_at: float
    client_ip: str
    exp: float
    resumable: bool


class TokenStore:
    """
    The process-wide record of ``unique_id`` values already used, shared by
    ``/download/file``, ``/download/backup`` and ``/upload/file``.

    :param clock: returns the current time in seconds (``reactor.seconds``).
    :param ttl: seconds an entry is kept after being recorded (60 minutes).
    """

    def __init__(self, clock: Callable[[], float], *, ttl: float = 3600.0) -> None:
        self._clock = clock
        self._ttl = ttl
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def _live(self, unique_id: str, now: float) -> _Entry | None:
        entry = self._entries.get(unique_id)
        if entry is not None and now - entry.recorded_at >= self._ttl:
            return None
        return entry

    def consume(self, unique_id: str, *, client_ip: str, exp: float,
                is_range: bool, allow_resume: bool) -> bool:
        """
        Atomically check and record one use of ``unique_id``.

        First use: record it with a grant for ``(client_ip, exp)`` (only when
        ``allow_resume`` is true) and return ``True``.  Already recorded:
        return ``True`` only for the continuation rule, i.e. ``allow_resume``
        and ``is_range`` and a grant from the same ``client_ip`` with
        ``floor(now) <= exp`` of the grant; otherwise ``False`` (404).

        Uploads pass ``is_range=False, allow_resume=False``: strict single use,
        and no grant a later download could continue.  Downloads pass
        ``allow_resume=api.downloads.allow_range_resume`` and the token's
        ``exp`` (plus any configured leeway).
        """
        with self._lock:
            now = self._clock()
            entry = self._live(unique_id, now)
            if entry is None:
                self._entries[unique_id] = _Entry(now, client_ip, exp, allow_resume)
                return True
            return (allow_resume and is_range and entry.resumable
                    and entry.client_ip == client_ip
                    and math.floor(now) <= entry.exp)

    def seen(self, unique_id: str) -> bool:
        """
        Whether ``unique_id`` is currently recorded (HEAD; never records).
        """
        with self._lock:
            return self._live(unique_id, self._clock()) is not None

    def purge(self) -> int:
        """
        Drop entries recorded ``ttl`` seconds ago or more; return how many.

        Run every 5 minutes by a ``TimerService``.
        """
        with self._lock:
            now = self._clock()
            stale = [uid for uid, entry in self._entries.items()
                     if now - entry.recorded_at >= self._ttl]
            for uid in stale:
                del self._entries[uid]
            return len(stale)

    def __len__(self) -> int:
        """
        Number of entries held (expired ones not yet purged included).
        """
        with self._lock:
            return len(self._entries)
