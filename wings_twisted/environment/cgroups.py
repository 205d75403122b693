"""
Control groups for the local-process environment (lifecycle.md §21.4
"limits", §20.1 for the numbers).

Everything here is plain synchronous file work on the cgroup filesystems,
meant to be called through ``run_blocking``; nothing imports Twisted.  A
child joins its group through the launcher (``launcher``) before it runs
anything; hosts without usable cgroups are measured from ``/proc``
(``proctree``).

Detection (``detect_cgroups``) reads ``/proc/self/mountinfo`` and prefers,
in this order:

* **cgroup v2**: a ``cgroup2`` mount whose ``cgroup.controllers`` lists
  ``memory`` (``cpu`` and ``pids`` are used when listed too), where we can
  create ``<mount>/wings-twisted`` and enable the controllers in its
  ``cgroup.subtree_control`` (and, when missing, in the mount root's);
* **cgroup v1**: a writable ``memory`` hierarchy (required) plus whichever of
  ``cpu``, ``cpuacct`` and ``pids`` are mounted and writable.

A v1/v2 hybrid host whose unified hierarchy carries no controllers (systemd's
"hybrid" layout) therefore uses v1.  Anything else (no mount, read-only,
not root) gives ``None`` and the environment falls back to its memory
watchdog.

Each server gets ``<hierarchy>/wings-twisted[-<hash of system.data>]/<uuid>``
(`base_name`): two daemons of one host (a second development node, tests) may
hold the same uuid, and must never empty each other's groups.  The groups sit at the
top of the hierarchy, beside the daemon's own group rather than inside it,
as Docker's ``cgroupfs`` driver does: cgroup v2 forbids enabling controllers
below a group that holds processes, and one layout for both versions is
simpler to reason about.

Limits written (``CgroupLimits``, built by ``cgroup_limits``):

==========  =====================================  ==========================
what        v1                                      v2
==========  =====================================  ==========================
memory      ``memory.limit_in_bytes``               ``memory.max``
swap        ``memory.memsw.limit_in_bytes``         ``memory.swap.max``
            (memory + swap; when present)           (swap alone; when present)
OOM off     ``memory.oom_control`` = 1              not possible (ignored, as
                                                    Docker does on v2)
CPU         ``cpu.cfs_quota_us`` / ``cfs_period``   ``cpu.max``
pids        ``pids.max``                            ``pids.max``
==========  =====================================  ==========================

CPU pinning (``threads``) and IO weight are not applied.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
from dataclasses import dataclass
from typing import Iterable, Mapping

from ..config import OverheadConfig
from . import Limits

#: Name of the directory holding every per-server group.
BASE_NAME = "wings-twisted"
#: ``system.data`` of a default install, whose groups sit under `BASE_NAME` itself.
DEFAULT_DATA = "/var/lib/pterodactyl/volumes"


def base_name(data: str) -> str:
    """
    The base group of the daemon whose volumes are under ``data`` (module docstring).
    """
    data = os.path.abspath(data)
    if data == DEFAULT_DATA:
        return BASE_NAME
    return "{}-{}".format(BASE_NAME, hashlib.sha1(data.encode()).hexdigest()[:10])

#: CFS period in microseconds (Docker's default).
CPU_PERIOD_US = 100_000

_V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids")


@dataclass(frozen=True)
class CgroupLimits:
    """
    The limits of one server in kernel units.

    ``memory_bytes`` 0 = unlimited; ``swap_bytes`` is the swap allowed on top
    of memory (-1 = unlimited, 0 = none); ``cpu_quota_us`` per
    ``CPU_PERIOD_US`` (0 = unlimited); ``pids_max`` 0 = unlimited.
    """

    memory_bytes: int = 0
    swap_bytes: int = -1
    cpu_quota_us: int = 0
    pids_max: int = 0
    oom_disabled: bool = False


def overhead_multiplier(memory_limit: int, overhead: OverheadConfig) -> float:
    """
    The ``docker.overhead`` multiplier for a memory limit in MB
    (lifecycle.md §20.1).
    """
    if not overhead.override:
        if memory_limit <= 2048:
            return 1.15
        if memory_limit <= 4096:
            return 1.10
        return 1.05
    for key in sorted(overhead.multipliers):
        if memory_limit <= key:
            return overhead.multipliers[key]
    return overhead.default_multiplier


def bounded_memory(limits: Limits, overhead: OverheadConfig) -> int:
    """
    The enforced memory limit in bytes, overhead included; 0 = unlimited.
    """
    return limits.memory_bytes(overhead_multiplier(limits.memory_limit, overhead))


def cgroup_limits(limits: Limits, overhead: OverheadConfig, default_pids: int) -> CgroupLimits:
    """
    Translate ``settings.build`` into kernel units (lifecycle.md §20.1):
    swap < 0 is unlimited, otherwise ``swap`` MB on top of memory; the pid
    limit is ``limits.pids_limit`` when set, else ``default_pids``
    (``docker.container_pid_limit``).
    """
    memory = bounded_memory(limits, overhead)
    swap = -1 if limits.swap < 0 else limits.swap * 1_000_000
    quota = limits.cpu_limit * 1000 if limits.cpu_limit > 0 else 0
    pids = limits.pids_limit if limits.pids_limit > 0 else max(default_pids, 0)
    return CgroupLimits(memory_bytes=memory, swap_bytes=swap, cpu_quota_us=quota,
                        pids_max=pids, oom_disabled=limits.oom_disabled)


@dataclass(frozen=True)
class Mount:
    """
    One line of ``/proc/self/mountinfo``, the parts we need.
    """

    mount_point: str
    fstype: str
    options: frozenset[str]


def _unescape(path: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        path = path.replace(code, char)
    return path


def parse_mountinfo(text: str) -> list[Mount]:
    """
    The mounts listed in a ``mountinfo`` text (proc(5)).
    """
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        per_mount = fields[5].split(",") if len(fields) > 5 else []
        options = frozenset(tail[2].split(",")) | frozenset(per_mount)
        mounts.append(Mount(_unescape(fields[4]), tail[0], options))
    return mounts


def _read(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


def _write(path: str, value: str) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(value)


def _keyed(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


@dataclass(frozen=True)
class CgroupHost:
    """
    Where per-server groups are made: ``version`` 1 or 2, and for each
    usable controller (``memory``, ``cpu``, ``cpuacct``, ``pids``) the base
    directory to create them in (all the same directory on v2).
    """

    version: int
    bases: Mapping[str, str]

    @property
    def controllers(self) -> frozenset[str]:
        """
        The controllers groups get.
        """
        return frozenset(self.bases)

    def group(self, uuid: str) -> ServerCgroup:
        """
        The (not yet created) group of server ``uuid``.
        """
        return ServerCgroup(self, uuid)

    def release(self) -> None:
        """
        Remove the base directories if no group is left in them (at shutdown).  Blocking.
        """
        for base in set(self.bases.values()):
            try:
                os.rmdir(base)
            except OSError:
                pass  # a group is left (a server still stopping), or already gone

    def describe(self) -> str:
        """
        A one-line description for logs.
        """
        return "cgroup v{} ({})".format(
            self.version, ", ".join("{}={}".format(k, v) for k, v in sorted(self.bases.items())))


class ServerCgroup:
    """
    The control group(s) of one server: one directory per v1 hierarchy, or a
    single v2 directory.
    """

    def __init__(self, host: CgroupHost, uuid: str) -> None:
        if not uuid or "/" in uuid or uuid in (".", ".."):
            raise ValueError("bad server id {!r}".format(uuid))
        self.host = host
        self.paths = {ctrl: os.path.join(base, uuid) for ctrl, base in host.bases.items()}

    def _dirs(self) -> list[str]:
        return sorted(set(self.paths.values()))

    def create(self) -> None:
        """
        Make the directories (they may exist from an earlier run).
        """
        for path in self._dirs():
            os.makedirs(path, exist_ok=True)

    def procs_files(self) -> list[str]:
        """
        The ``cgroup.procs`` files a process writes its pid to, to join.
        """
        return [os.path.join(path, "cgroup.procs") for path in self._dirs()]

    def apply(self, limits: CgroupLimits) -> list[str]:
        """
        Write ``limits``; returns a description of each write that failed.
        """
        problems: list[str] = []

        def put(ctrl: str, name: str, value: object, optional: bool = False) -> None:
            if ctrl not in self.paths:
                return
            path = os.path.join(self.paths[ctrl], name)
            if optional and not os.path.exists(path):
                return
            try:
                _write(path, str(value))
            except OSError as e:
                problems.append("{}={}: {}".format(path, value, e.strerror or e))

        mem = limits.memory_bytes
        if self.host.version == 1:
            # memsw must never be below limit_in_bytes: lift it first, set
            # the memory limit, then bring memsw down to memory + swap.
            put("memory", "memory.memsw.limit_in_bytes", -1, optional=True)
            put("memory", "memory.limit_in_bytes", mem if mem > 0 else -1)
            if mem > 0 and limits.swap_bytes >= 0:
                put("memory", "memory.memsw.limit_in_bytes", mem + limits.swap_bytes, optional=True)
            put("memory", "memory.oom_control", 1 if limits.oom_disabled else 0, optional=True)
            put("cpu", "cpu.cfs_period_us", CPU_PERIOD_US)
            put("cpu", "cpu.cfs_quota_us", limits.cpu_quota_us if limits.cpu_quota_us > 0 else -1)
        else:
            put("memory", "memory.max", mem if mem > 0 else "max")
            swap = limits.swap_bytes if mem > 0 and limits.swap_bytes >= 0 else "max"
            put("memory", "memory.swap.max", swap, optional=True)
            put("cpu", "cpu.max", "{} {}".format(
                limits.cpu_quota_us if limits.cpu_quota_us > 0 else "max", CPU_PERIOD_US))
        put("pids", "pids.max", limits.pids_max if limits.pids_max > 0 else "max")
        return problems

    def oom_kills(self) -> int:
        """
        How many processes the kernel OOM killer has killed in this group
        (v1 ``memory.oom_control``, v2 ``memory.events``); 0 when unknown.
        """
        path = self.paths.get("memory")
        if path is None:
            return 0
        name = "memory.oom_control" if self.host.version == 1 else "memory.events"
        try:
            return _keyed(_read(os.path.join(path, name))).get("oom_kill", 0)
        except OSError:
            return 0

    def memory_usage(self) -> int | None:
        """
        Memory in use without inactive page cache (as ``docker stats``).
        """
        path = self.paths.get("memory")
        if path is None:
            return None
        v1 = self.host.version == 1
        try:
            usage_file = "memory.usage_in_bytes" if v1 else "memory.current"
            usage = int(_read(os.path.join(path, usage_file)))
            stat = _keyed(_read(os.path.join(path, "memory.stat")))
        except (OSError, ValueError):
            return None
        inactive = stat.get("total_inactive_file" if v1 else "inactive_file", 0)
        return usage - inactive if 0 <= inactive < usage else usage

    def cpu_usage_ns(self) -> int | None:
        """
        Cumulative CPU time of the group in nanoseconds, when accounted.
        """
        try:
            if self.host.version == 1:
                path = self.paths.get("cpuacct")
                return None if path is None else int(_read(os.path.join(path, "cpuacct.usage")))
            path = self.paths.get("cpu")
            if path is None:
                return None
            usec = _keyed(_read(os.path.join(path, "cpu.stat"))).get("usage_usec")
            return None if usec is None else usec * 1000
        except (OSError, ValueError):
            return None

    def members(self) -> set[int]:
        """
        The pids in the group (any hierarchy).
        """
        pids: set[int] = set()
        for procs in self.procs_files():
            try:
                pids.update(int(p) for p in _read(procs).split())
            except (OSError, ValueError):
                continue
        return pids

    def kill(self) -> None:
        """
        SIGKILL every process in the group (``cgroup.kill`` on v2 when the
        kernel has it).
        """
        if self.host.version == 2:
            kill_file = os.path.join(self._dirs()[0], "cgroup.kill")
            if os.path.exists(kill_file):
                try:
                    _write(kill_file, "1")
                    return
                except OSError:
                    pass
        for pid in self.members():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def remove(self) -> bool:
        """
        Remove the directories; False while processes remain in one.
        """
        done = True
        for path in self._dirs():
            try:
                os.rmdir(path)
            except FileNotFoundError:
                continue
            except OSError as e:
                if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    raise
                done = False
        return done


def _v2_host(mount: str, name: str) -> CgroupHost | None:
    try:
        available = set(_read(os.path.join(mount, "cgroup.controllers")).split())
    except OSError:
        return None
    if "memory" not in available:
        return None
    wanted = [c for c in ("memory", "cpu", "pids") if c in available]
    base = os.path.join(mount, name)

    def enabled(path: str) -> set[str]:
        return {w.lstrip("+") for w in _read(os.path.join(path, "cgroup.subtree_control")).split()}

    try:
        missing = [c for c in wanted if c not in enabled(mount)]
        if missing:
            _write(os.path.join(mount, "cgroup.subtree_control"),
                   " ".join("+" + c for c in missing))
        os.makedirs(base, exist_ok=True)
        missing = [c for c in wanted if c not in enabled(base)]
        if missing:
            _write(os.path.join(base, "cgroup.subtree_control"),
                   " ".join("+" + c for c in missing))
        usable = [c for c in wanted if c in enabled(base)]
    except OSError:
        return None
    if "memory" not in usable:
        return None
    return CgroupHost(2, {c: base for c in usable})


def _v1_host(mounts: Iterable[Mount], name: str) -> CgroupHost | None:
    bases: dict[str, str] = {}
    for ctrl in _V1_CONTROLLERS:
        for mount in mounts:
            if mount.fstype != "cgroup" or ctrl not in mount.options or "ro" in mount.options:
                continue
            base = os.path.join(mount.mount_point, name)
            try:
                os.makedirs(base, exist_ok=True)
            except OSError:
                continue
            bases[ctrl] = base
            break
    if "memory" not in bases:
        return None
    return CgroupHost(1, bases)


def detect_cgroups(*, name: str = BASE_NAME,
                   mountinfo: str = "/proc/self/mountinfo") -> CgroupHost | None:
    """
    Find a cgroup hierarchy we can create per-server groups in (see the
    module docstring); ``None`` when there is none.  Creates the base
    directories.  Blocking.
    """
    try:
        mounts = parse_mountinfo(_read(mountinfo))
    except OSError:
        return None
    for mount in mounts:
        if mount.fstype == "cgroup2" and "ro" not in mount.options:
            host = _v2_host(mount.mount_point, name)
            if host is not None:
                return host
    return _v1_host(mounts, name)
