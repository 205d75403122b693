"""
``<root_directory>/states.json`` (lifecycle.md §1.4–§1.5): the state of every
server, rewritten every 60 seconds and at shutdown, read at boot so that a
server that was running comes back after a restart of the daemon or host.
"""

from __future__ import annotations

import errno
import json
import os
from typing import Callable, Iterable, Mapping

from twisted.logger import Logger

from ..environment import STATES

log = Logger()

STATES_INTERVAL = 60.0
#: Servers restored at once at boot (lifecycle.md §1.4).
RESTORE_CONCURRENCY = 4


def read_states(path: str) -> dict[str, str]:
    """
    The recorded states; an unreadable or malformed file counts as empty
    (logged), unknown state strings are dropped.
    """
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.warn("Ignoring {path}: {error}", path=path, error=str(e))
        return {}
    if not isinstance(data, Mapping):
        log.warn("Ignoring {path}: not a JSON object", path=path)
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, str) and v in STATES}


def write_states(path: str, states: Mapping[str, str], *,
                 write: Callable[[int, bytes], int] = os.write,
                 fsync: Callable[[int], None] = os.fsync) -> None:
    """
    Replace the file atomically and durably (mode 0644): the whole text is
    written to a temporary file (short writes continued, a write that makes
    no progress is an error), the file is fsynced, renamed over ``path``, and
    the directory fsynced, so a crash or power loss leaves the old file or
    the complete new one, never a truncated one.  On any error the temporary
    file is removed and the old file stays.  ``write``/``fsync`` are for
    tests.
    """
    directory = os.path.dirname(path) or "."
    temp = os.path.join(directory, ".states.json.tmp")
    data = memoryview(json.dumps(dict(states), sort_keys=True).encode())
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        try:
            while data:
                written = write(fd, bytes(data))
                if written <= 0:
                    raise OSError(errno.EIO, "short write with no progress", temp)
                data = data[written:]
            os.fchmod(fd, 0o644)
            fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fsync(dir_fd)
    finally:
        os.close(dir_fd)


def restore_action(running: bool, recorded: str | None) -> str:
    """
    The decision table of lifecycle.md §1.4: ``start``, ``adopt`` or
    ``offline``.
    """
    if running:
        return "adopt"
    if recorded in ("running", "starting"):
        return "start"
    return "offline"


def states_of(servers: Iterable[object]) -> dict[str, str]:
    """
    ``{uuid: state}`` of the registered servers.
    """
    return {getattr(s, "uuid"): getattr(s, "state") for s in servers}
