"""
The ownership index of backups (backups.md §3): ``backup uuid → (server uuid, adapter,
created_at, state)``, kept in the daemon's state database (``<root_directory>/wings.db``, table
``backups``).

The flat archive layout loses the server a backup belongs to; the index restores it, so that
downloads, restores and deletions of a backup recorded for another server answer 404, delete-all
knows what to remove, and a server deletion knows its archives.  Archives without an entry (made
before, or by upstream Wings) stay reachable by UUID from any server, as upstream.

States: ``generating`` (written when a backup starts), ``complete`` (after its success report).
A failed backup's entry is removed, and so is a deleted one's.

The entries live in memory (reactor thread); every change is also written to SQLite through
``run_blocking``, one statement at a time in order (a ``DeferredLock``), so the reactor never
waits for the disk.  `load` reads the table once at start-up; `flush` waits for pending writes.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from typing import Any, Callable

from twisted.internet.defer import Deferred, DeferredLock
from twisted.logger import Logger

from ..blocking import RunBlocking

__all__ = ["BackupIndex", "IndexEntry"]

log = Logger()

_SCHEMA = ("CREATE TABLE IF NOT EXISTS backups (uuid TEXT PRIMARY KEY, server TEXT NOT NULL, "
           "adapter TEXT NOT NULL, created_at REAL NOT NULL, state TEXT NOT NULL)")


@dataclass(frozen=True)
class IndexEntry:
    """
    One recorded backup.
    """

    uuid: str
    server: str
    adapter: str
    created_at: float
    state: str


class BackupIndex:
    """
    The index of one node.

    :param path: the SQLite file (``None``: memory only, for tests).
    """

    def __init__(self, path: str | None, run_blocking: RunBlocking) -> None:
        self._path = path
        self._run_blocking = run_blocking
        self._entries: dict[str, IndexEntry] = {}
        self._lock = DeferredLock()

    # -- persistence -------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        assert self._path is not None
        os.makedirs(os.path.dirname(self._path) or ".", exist_ok=True)
        connection = sqlite3.connect(self._path, timeout=30)
        connection.execute(_SCHEMA)
        return connection

    def _read_all(self) -> list[IndexEntry]:
        if self._path is None:
            return []
        connection = self._connect()
        try:
            rows = connection.execute(
                "SELECT uuid, server, adapter, created_at, state FROM backups").fetchall()
            connection.commit()
        finally:
            connection.close()
        return [IndexEntry(*row) for row in rows]

    async def load(self) -> None:
        """
        Read the table (start-up).  Entries still ``generating`` belonged to a run that ended
        mid-backup: they are dropped (their staging files are swept at boot).
        """
        entries = await self._run_blocking(self._read_all)
        for entry in entries:
            if entry.state == "generating":
                self._persist("DELETE FROM backups WHERE uuid = ?", (entry.uuid,))
            else:
                self._entries[entry.uuid] = entry

    def _execute(self, sql: str, params: tuple[Any, ...]) -> None:
        connection = self._connect()
        try:
            connection.execute(sql, params)
            connection.commit()
        finally:
            connection.close()

    def _persist(self, sql: str, params: tuple[Any, ...]) -> None:
        if self._path is None:
            return
        run: Callable[[], Deferred[None]] = lambda: self._run_blocking(self._execute, sql, params)
        d = self._lock.run(run)
        d.addErrback(lambda f: log.failure("Writing the backup index failed", f))

    def flush(self) -> Deferred[None]:
        """
        Fires once every change made so far is on disk.
        """
        return self._lock.run(lambda: None)

    # -- queries and changes ---------------------------------------------------------------------

    def get(self, backup_uuid: str) -> IndexEntry | None:
        """
        The entry of a backup, or ``None``.
        """
        return self._entries.get(backup_uuid)

    def of_server(self, server_uuid: str) -> list[IndexEntry]:
        """
        The entries recorded for a server, oldest first.
        """
        return sorted((e for e in self._entries.values() if e.server == server_uuid),
                      key=lambda e: e.created_at)

    def foreign(self, backup_uuid: str, server_uuid: str) -> bool:
        """
        Whether the backup is recorded for another server (its routes then answer 404).
        """
        entry = self._entries.get(backup_uuid)
        return entry is not None and entry.server != server_uuid

    def record(self, backup_uuid: str, server_uuid: str, adapter: str, created_at: float,
               state: str = "generating") -> IndexEntry:
        """
        Add or replace an entry.
        """
        entry = IndexEntry(backup_uuid, server_uuid, adapter, created_at, state)
        self._entries[backup_uuid] = entry
        self._persist("INSERT OR REPLACE INTO backups (uuid, server, adapter, created_at, state) "
                      "VALUES (?, ?, ?, ?, ?)",
                      (backup_uuid, server_uuid, adapter, created_at, state))
        return entry

    def mark(self, backup_uuid: str, state: str) -> None:
        """
        Change an entry's state (nothing when there is no entry).
        """
        entry = self._entries.get(backup_uuid)
        if entry is None:
            return
        self.record(entry.uuid, entry.server, entry.adapter, entry.created_at, state)

    def remove(self, backup_uuid: str) -> None:
        """
        Forget a backup.
        """
        if self._entries.pop(backup_uuid, None) is not None:
            self._persist("DELETE FROM backups WHERE uuid = ?", (backup_uuid,))
