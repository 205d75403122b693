"""
The local activity log and its flush to the panel (panel.md §6).

Records are written to SQLite (``<system.root_directory>/wings.db``, table
``activity``) the moment they happen, so a daemon restart does not lose
them, and shipped in batches of ``system.activity_send_count`` every
``system.activity_send_interval`` seconds by ``flush``.  Rows are deleted
only after the panel answered 2xx; rows whose ``ip`` is not an IP address are
dropped unsent (as upstream).  Records of ``server:sftp.*`` events are left
to ``flush_sftp``, the second job (§6.2): it reads them by event (descending)
in batches of ``activity_send_count`` rows, merges the records of one user,
server, IP and event within the same minute into one whose ``files`` are all
of theirs and whose timestamp is the earliest, sends at most
``activity_send_count`` merged records per run, and deletes the rows merged
only after the panel answered 2xx.  A run reads at most ``SFTP_ROWS_PER_RUN``
batches, so one huge minute may reach the panel as a few records.

Wire format of one record (§6.3)::

    {"user": "<uuid>" | null, "server": "<uuid>", "event": "server:file.uploaded",
     "metadata": {...}, "ip": "198.51.100.7", "timestamp": "2026-01-02T15:04:05.123456Z"}
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import sqlite3
import threading
from typing import Any, Callable, Mapping, Sequence

from twisted.logger import Logger

from .blocking import RunBlocking

log = Logger()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS activity (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT,
    server TEXT NOT NULL,
    event TEXT NOT NULL,
    metadata TEXT NOT NULL,
    ip TEXT NOT NULL,
    timestamp TEXT NOT NULL
)
"""


def rfc3339(seconds: float) -> str:
    """
    A UTC timestamp in the ``Z`` form the panel parses (§6.3).
    """
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


def _valid_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


#: Batches of rows one SFTP flush reads at most.
SFTP_ROWS_PER_RUN = 50


def merge_sftp(rows: Sequence[Mapping[str, Any]], limit: int) -> tuple[list[dict[str, Any]],
                                                                      list[int]]:
    """
    Merge SFTP rows (``id``, ``user``, ``server``, ``event``, ``metadata``, ``ip``,
    ``timestamp``) per user, server, IP, event and minute (panel.md §6.2).

    :return: at most ``limit`` merged records, in the order of their first row, and the ids of
        the rows they hold (rows that would start a further record are left out).
    """
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    ids: list[int] = []
    for row in rows:
        key = (row["user"], row["server"], row["ip"], row["event"], str(row["timestamp"])[:16])
        group = groups.get(key)
        if group is None:
            if len(groups) >= limit:
                continue
            group = groups[key] = {"user": row["user"], "server": row["server"],
                                   "event": row["event"], "metadata": {"files": []},
                                   "ip": row["ip"], "timestamp": row["timestamp"], "first": row["id"]}
        elif row["id"] < group["first"]:
            group["first"], group["timestamp"] = row["id"], row["timestamp"]
        files = row["metadata"].get("files") if isinstance(row["metadata"], Mapping) else None
        group["metadata"]["files"].extend(files if isinstance(files, list) else [])
        ids.append(row["id"])
    merged = sorted(groups.values(), key=lambda g: g["first"])
    for group in merged:
        del group["first"]
    return merged, ids


class ActivityLog:
    """
    Local store of activity records, flushed to the panel in batches.
    """

    def __init__(self, path: str, *, clock: Callable[[], float], run_blocking: RunBlocking,
                 send: Callable[[Sequence[Mapping[str, Any]]], Any], batch: int = 100) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute(_SCHEMA)
        self._lock = threading.Lock()
        self._clock = clock
        self._run = run_blocking
        self._send = send
        self._batch = batch
        self._flushing = False
        self._flushing_sftp = False

    def record(self, event: str, *, server: str, user: str | None, ip: str,
               metadata: Mapping[str, Any] | None = None) -> None:
        """
        Store one record now (a single small insert; safe from any thread).
        """
        row = (user, server, event, json.dumps(dict(metadata or {})), ip, rfc3339(self._clock()))
        with self._lock:
            self._db.execute("INSERT INTO activity (user, server, event, metadata, ip, timestamp)"
                             " VALUES (?, ?, ?, ?, ?, ?)", row)

    def pending(self) -> list[dict[str, Any]]:
        """
        Records waiting to be sent, oldest first (not the SFTP ones).
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT id, user, server, event, metadata, ip, timestamp FROM activity"
                " WHERE event NOT LIKE 'server:sftp.%' ORDER BY id LIMIT ?", (self._batch,)).fetchall()
        return [{"id": r[0], "user": r[1], "server": r[2], "event": r[3],
                 "metadata": json.loads(r[4]), "ip": r[5], "timestamp": r[6]} for r in rows]

    def pending_sftp(self) -> tuple[list[dict[str, Any]], list[int], list[int]]:
        """
        The merged SFTP records of one run, the ids of their rows, and the ids of rows whose
        ``ip`` is not an address (dropped unsent).
        """
        rows: list[dict[str, Any]] = []
        with self._lock:
            for batch in range(SFTP_ROWS_PER_RUN):
                found = self._db.execute(
                    "SELECT id, user, server, event, metadata, ip, timestamp FROM activity"
                    " WHERE event LIKE 'server:sftp.%' ORDER BY event DESC, id LIMIT ? OFFSET ?",
                    (self._batch, batch * self._batch)).fetchall()
                rows.extend({"id": r[0], "user": r[1], "server": r[2], "event": r[3],
                             "metadata": json.loads(r[4]), "ip": r[5], "timestamp": r[6]}
                            for r in found)
                if len(found) < self._batch or len({(r["user"], r["server"], r["ip"], r["event"],
                                                      str(r["timestamp"])[:16])
                                                     for r in rows}) > self._batch:
                    break
        invalid = [r["id"] for r in rows if not _valid_ip(r["ip"])]
        merged, ids = merge_sftp([r for r in rows if _valid_ip(r["ip"])], self._batch)
        return merged, ids, invalid

    async def flush_sftp(self) -> int:
        """
        Send one run of merged SFTP records; return how many were sent.  Skipped while the
        previous run is still going; a failed send keeps the rows.
        """
        if self._flushing_sftp:
            return 0
        self._flushing_sftp = True
        try:
            records, ids, invalid = await self._run(self.pending_sftp)
            if invalid:
                await self._run(self._delete, invalid)
            if not records:
                return 0
            try:
                await self._send(records)
            except Exception as e:
                log.warn("Sending {count} SFTP activity records to the panel failed: {error}",
                         count=len(records), error=str(e))
                return 0
            await self._run(self._delete, ids)
            return len(records)
        finally:
            self._flushing_sftp = False

    def _delete(self, ids: list[int]) -> None:
        with self._lock:
            self._db.executemany("DELETE FROM activity WHERE id = ?", [(i,) for i in ids])

    async def flush(self) -> int:
        """
        Send one batch; return how many records were sent.  A run is skipped
        while the previous one is still going; a failed send keeps the rows.
        """
        if self._flushing:
            return 0
        self._flushing = True
        try:
            rows = await self._run(self.pending)
            invalid = [r["id"] for r in rows if not _valid_ip(r["ip"])]
            rows = [r for r in rows if _valid_ip(r["ip"])]
            if invalid:
                await self._run(self._delete, invalid)
            if not rows:
                return 0
            records = [{k: r[k] for k in ("user", "server", "event", "metadata", "ip", "timestamp")}
                       for r in rows]
            try:
                await self._send(records)
            except Exception as e:
                log.warn("Sending {count} activity records to the panel failed: {error}",
                         count=len(records), error=str(e))
                return 0
            await self._run(self._delete, [r["id"] for r in rows])
            return len(records)
        finally:
            self._flushing = False

    def close(self) -> None:
        """
        Close the database.
        """
        with self._lock:
            self._db.close()
