"""
Resource usage of a server's process tree from ``/proc``, for hosts (or
controllers) without cgroup accounting; ``measure_usage`` prefers the
server's cgroup where it counts.  Plain blocking file work, called through
``run_blocking``.
"""

from __future__ import annotations

import os

import psutil

from .cgroups import ServerCgroup, _read

def _children(pid: int) -> list[int] | None:
    try:
        tids = os.listdir("/proc/{}/task".format(pid))
    except OSError:
        return []
    out: list[int] = []
    for tid in tids:
        try:
            out.extend(int(c) for c in _read("/proc/{}/task/{}/children".format(pid, tid)).split())
        except FileNotFoundError:
            if not os.path.exists("/proc/{}/task/{}".format(pid, tid)):
                continue
            return None    # kernel without CONFIG_PROC_CHILDREN
        except (OSError, ValueError):
            continue
    return out


def tree_pids(root: int) -> list[int]:
    """
    ``root`` and its descendants (via ``/proc/<pid>/task/*/children``, or a
    full process scan through psutil where the kernel lacks that file).
    """
    seen = [root]
    index = 0
    while index < len(seen):
        kids = _children(seen[index])
        if kids is None:
            try:
                return [root] + [p.pid for p in psutil.Process(root).children(recursive=True)]
            except psutil.Error:
                return [root]
        seen.extend(k for k in kids if k not in seen)
        index += 1
    return seen


_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_usage(root: int) -> tuple[int, float]:
    """
    ``(rss bytes, cpu seconds)`` summed over ``root``'s process tree.  CPU
    includes the reaped children's time (``cutime``/``cstime``), so the sum
    does not drop when a child exits.
    """
    rss = 0
    ticks = 0
    for pid in tree_pids(root):
        try:
            stat = _read("/proc/{}/stat".format(pid))
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) < 22:
            continue
        ticks += sum(int(f) for f in fields[11:15])
        rss += int(fields[21]) * _PAGE
    return rss, ticks / _TICKS


def measure_usage(root: int, group: ServerCgroup | None) -> tuple[int, float]:
    """
    ``(memory bytes, cpu seconds)`` of a server: from its cgroup where that
    accounts for it, else summed over the process tree of ``root``.
    Blocking.
    """
    memory = cpu = None
    if group is not None:
        memory = group.memory_usage()
        ns = group.cpu_usage_ns()
        cpu = None if ns is None else ns / 1e9
    if memory is None or cpu is None:
        rss, seconds = tree_usage(root)
        memory = rss if memory is None else memory
        cpu = seconds if cpu is None else cpu
    return memory, cpu
