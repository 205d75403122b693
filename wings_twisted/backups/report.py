"""
What a finished backup or restore tells the Panel and the websocket (backups.md §7, §8.4 steps
6–8), as pure functions so that the byte shapes are tested on their own.

Panel, ``POST /api/remote/backups/{uuid}`` (§7.1), a flat object, keys in this order (Python's
``json.dumps`` then gives exactly the bytes of the spec)::

    {"checksum": "<sha1>", "checksum_type": "sha1", "size": 123, "successful": true, "parts": null}
    {"checksum": "<sha1>", "checksum_type": "sha1", "size": 123, "successful": true,
     "parts": [{"etag": "\\"<etag>\\"", "part_number": 1}]}
    {"checksum": "", "checksum_type": "", "size": 0, "successful": false, "parts": null}

Websocket (§7.2): ``backup completed`` with a JSON document as its one argument (keys
alphabetical, as upstream's), and on success only ``backup completed:<uuid>`` with the same
argument right after it (``websocket.md`` §6.5)::

    {"checksum":"<sha1>","checksum_type":"sha1","file_size":123,"is_successful":true,"uuid":"…"}
    {"checksum":"","checksum_type":"sha1","file_size":0,"is_successful":false,"uuid":"…"}

Restores (§8.4): ``POST /api/remote/backups/{uuid}/restore`` with ``{"successful": bool}``, a
``daemon message`` and ``backup restore completed`` with the argument ``""``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

__all__ = ["BackupResult", "Part", "event_argument", "failure_report", "fork_argument",
           "restore_message", "result_events", "success_report"]

CHECKSUM_TYPE = "sha1"
COMPLETED = "backup completed"
RESTORE_COMPLETED = "backup restore completed"
#: The fork's extra events (§7.2), sent only with ``websocket.emit_fork_backup_events``.
STARTED = "backup started"
DELETED = "backup deleted"
RESTORE_STARTED = "backup restore started"


@dataclass(frozen=True)
class Part:
    """
    One uploaded S3 part: its 1-based number and the ``ETag`` the store returned, verbatim
    (quotes included, §6.2).
    """

    number: int
    etag: str


@dataclass(frozen=True)
class BackupResult:
    """
    A successful backup: SHA-1 (lower-case hex) and size of the archive file, and the parts of
    an S3 upload (``None`` for a local backup).
    """

    checksum: str
    size: int
    parts: tuple[Part, ...] | None = None


def success_report(result: BackupResult) -> dict[str, Any]:
    """
    The success body of ``POST /backups/{uuid}`` (§7.1).
    """
    parts = None if result.parts is None else [
        {"etag": part.etag, "part_number": part.number} for part in result.parts]
    return {"checksum": result.checksum, "checksum_type": CHECKSUM_TYPE, "size": result.size,
            "successful": True, "parts": parts}


def failure_report() -> dict[str, Any]:
    """
    The failure body of ``POST /backups/{uuid}`` (§7.1, any adapter).
    """
    return {"checksum": "", "checksum_type": "", "size": 0, "successful": False, "parts": None}


def event_argument(backup_uuid: str, result: BackupResult | None) -> str:
    """
    The argument of ``backup completed`` (§7.2): ``checksum_type`` is ``sha1`` even on failure.
    """
    document = {
        "checksum": result.checksum if result is not None else "",
        "checksum_type": CHECKSUM_TYPE,
        "file_size": result.size if result is not None else 0,
        "is_successful": result is not None,
        "uuid": backup_uuid,
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def fork_argument(backup_uuid: str) -> str:
    """
    The argument of the fork's events (§7.2): ``{"uuid":"<backup uuid>"}``.
    """
    return json.dumps({"uuid": backup_uuid}, separators=(",", ":"))


def result_events(backup_uuid: str, result: BackupResult | None, *,
                  suffixed: bool = True) -> Sequence[tuple[str, str]]:
    """
    The ``(event, argument)`` pairs to publish, in order (§7.2): the bare event always, the
    suffixed one after it on success only (and only when ``websocket.emit_suffixed_backup_events``
    is on).
    """
    argument = event_argument(backup_uuid, result)
    events = [(COMPLETED, argument)]
    if result is not None and suffixed:
        events.append(("{}:{}".format(COMPLETED, backup_uuid), argument))
    return events


def restore_message(adapter: str, successful: bool) -> str:
    """
    The ``daemon message`` at the end of a restore (§8.4 step 7; the failure texts are the
    project's).
    """
    source = "S3" if adapter == "s3" else "local"
    if successful:
        return "Completed server restoration from {} backup.".format(source)
    return "Server restoration from {} backup failed.".format(source)
