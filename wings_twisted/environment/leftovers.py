"""
Server processes left behind by a previous run of the daemon (a crash, ``kill -9``), found and
stopped at boot so that nothing runs unseen.

Every process the process environment starts carries ``WINGS_TWISTED_SERVER=<volume path>`` in
its environment, and its children inherit it, including a ``setsid`` child that left the server's
process group and a game that ignores SIGHUP.  A process of this daemon run cannot be confused
with a leftover: the sweep runs once per server, before the daemon starts anything for it.  The
value is the server's volume path, not its uuid alone: two daemons on one host (a second
development node, a transfer between two local nodes, parallel tests) may hold the same uuid,
and one daemon's boot must not stop the other's server (the per-daemon cgroup base of
``cgroups.base_name`` keeps their groups apart in the same way).

Decision [project]: leftovers are **stopped**, not adopted.  The process environment cannot
re-attach to a process it did not spawn (no PTY, no exit status), so adopting would leave a
server the daemon can neither read nor control; stopping it lets the boot restore (lifecycle.md
§1.4) start it again when ``states.json`` says it was running.  They get SIGTERM, then SIGKILL
after ``grace`` seconds.  With cgroups, the server's group is emptied too (that also catches a
process that cleared its environment).  A process that clears its environment on a host without
cgroups escapes the sweep: the process environment is not a boundary (README, Security).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Callable

#: The environment variable that marks a server's processes.
MARKER = "WINGS_TWISTED_SERVER"


def marker(volume: str) -> tuple[str, str]:
    """
    The ``(name, value)`` added to the environment of the processes of the server whose volume
    is ``volume``.
    """
    return MARKER, os.path.abspath(volume)


def find_marked(volume: str, *, proc: str = "/proc", own_pid: int | None = None) -> list[int]:
    """
    The pids whose environment carries the marker of ``volume`` (unreadable entries skipped).
    """
    needle = ("{}={}".format(*marker(volume))).encode()
    me = os.getpid() if own_pid is None else own_pid
    found = []
    try:
        names = os.listdir(proc)
    except OSError:
        return []
    for name in names:
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(os.path.join(proc, name, "environ"), "rb") as f:
                entries = f.read().split(b"\0")
        except OSError:
            continue
        if needle in entries:
            found.append(int(name))
    return sorted(found)


def stop_leftovers(volume: str, *, grace: float = 5.0, proc: str = "/proc",
                   kill: Callable[[int, int], None] = os.kill,
                   sleep: Callable[[float], None] = time.sleep,
                   own_pid: int | None = None) -> list[int]:
    """
    SIGTERM every leftover process of the server of ``volume``, SIGKILL those still there after
    ``grace`` seconds; returns the pids found.  Blocking (run it through ``run_blocking``).
    """
    pids = find_marked(volume, proc=proc, own_pid=own_pid)
    if not pids:
        return []
    for pid in pids:
        _signal(kill, pid, signal.SIGTERM)
    waited = 0.0
    while waited < grace and find_marked(volume, proc=proc, own_pid=own_pid):
        sleep(0.1)
        waited += 0.1
    for pid in find_marked(volume, proc=proc, own_pid=own_pid):
        _signal(kill, pid, signal.SIGKILL)
    return pids


def _signal(kill: Callable[[int, int], None], pid: int, sig: int) -> None:
    try:
        kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
