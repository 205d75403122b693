"""
Tests for ``wings_twisted.environment.cgroups``: the limit arithmetic, and
detection and limit writing on fake cgroup trees (plain directories).
"""

from __future__ import annotations

import os

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.config import OverheadConfig
from wings_twisted.environment import Limits
from wings_twisted.environment.cgroups import (
    CgroupHost,
    CgroupLimits,
    base_name,
    bounded_memory,
    cgroup_limits,
    detect_cgroups,
    overhead_multiplier,
    parse_mountinfo,
)


def _mountinfo(*lines: tuple[str, str, str]) -> str:
    return "".join("{} 1 0:1 / {} rw,relatime - {} {} rw,{}\n".format(
        30 + i, point, fstype, fstype, opts) for i, (point, fstype, opts) in enumerate(lines))


class LimitArithmeticTests(SynchronousTestCase):
    """
    ``settings.build`` to kernel units (lifecycle.md §20.1).
    """

    def test_default_multipliers(self) -> None:
        """
        Without override: ≤ 2048 MB 1.15, ≤ 4096 MB 1.10, else 1.05.
        """
        overhead = OverheadConfig()
        self.assertEqual(overhead_multiplier(2048, overhead), 1.15)
        self.assertEqual(overhead_multiplier(2049, overhead), 1.10)
        self.assertEqual(overhead_multiplier(4096, overhead), 1.10)
        self.assertEqual(overhead_multiplier(8192, overhead), 1.05)

    def test_override_multipliers(self) -> None:
        """
        With override, the smallest key ≥ the limit wins, else the default.
        """
        overhead = OverheadConfig(override=True, default_multiplier=1.5,
                                  multipliers={1024: 1.3, 4096: 1.2})
        self.assertEqual(overhead_multiplier(512, overhead), 1.3)
        self.assertEqual(overhead_multiplier(1025, overhead), 1.2)
        self.assertEqual(overhead_multiplier(9000, overhead), 1.5)

    def test_cgroup_limits(self) -> None:
        """
        Memory in decimal MB times the multiplier, swap on top (−1
        unlimited), CPU quota per 100 ms, the configured pid limit as the
        default.
        """
        limits = cgroup_limits(Limits(memory_limit=1000, swap=200, cpu_limit=150),
                               OverheadConfig(), 512)
        self.assertEqual(limits, CgroupLimits(memory_bytes=1_150_000_000,
                                              swap_bytes=200_000_000, cpu_quota_us=150_000,
                                              pids_max=512))
        unlimited = cgroup_limits(Limits(swap=-1, pids_limit=20), OverheadConfig(), 512)
        self.assertEqual(unlimited, CgroupLimits(memory_bytes=0, swap_bytes=-1,
                                                 cpu_quota_us=0, pids_max=20))
        self.assertEqual(bounded_memory(Limits(), OverheadConfig()), 0)

    def test_parse_mountinfo(self) -> None:
        """
        Mount point (unescaped), type and options of each line.
        """
        text = ("35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
                "41 31 0:38 / /sys/fs/cgroup/un\\040ified ro,relatime - cgroup2 cgroup2 rw\n")
        mounts = parse_mountinfo(text)
        self.assertEqual([(m.mount_point, m.fstype) for m in mounts],
                         [("/sys/fs/cgroup/memory", "cgroup"),
                          ("/sys/fs/cgroup/un ified", "cgroup2")])
        self.assertIn("memory", mounts[0].options)
        self.assertIn("ro", mounts[1].options)


class FakeTreeTests(SynchronousTestCase):
    """
    Detection and limit files on directories standing in for cgroupfs.
    """

    def setUp(self) -> None:
        self.root = FilePath(self.mktemp())
        self.root.makedirs()
        self.mountinfo = self.root.child("mountinfo")

    def _dir(self, name: str) -> str:
        path = self.root.child(name)
        path.makedirs()
        return path.path

    def _v1(self) -> CgroupHost:
        memory, cpu, pids = self._dir("memory"), self._dir("cpu,cpuacct"), self._dir("pids")
        self.mountinfo.setContent(_mountinfo(
            (self._dir("unified"), "cgroup2", ""), (memory, "cgroup", "memory"),
            (cpu, "cgroup", "cpu,cpuacct"), (pids, "cgroup", "pids")).encode())
        host = detect_cgroups(mountinfo=self.mountinfo.path)
        assert host is not None
        return host

    def test_v1_detection(self) -> None:
        """
        A hybrid host whose unified hierarchy has no controllers uses the v1
        hierarchies, cpu and cpuacct sharing a co-mounted directory.
        """
        host = self._v1()
        self.assertEqual(host.version, 1)
        self.assertEqual(host.bases["memory"],
                         self.root.child("memory").child("wings-twisted").path)
        self.assertEqual(host.bases["cpu"], host.bases["cpuacct"])
        self.assertEqual(host.controllers, {"memory", "cpu", "cpuacct", "pids"})

    def test_base_per_daemon_and_released_when_empty(self) -> None:
        """
        The default install keeps ``wings-twisted``; another volume root gets its own base, so
        two daemons of one host holding the same server uuid never share a group.  ``release``
        removes the bases only once no group is left in them.
        """
        self.assertEqual(base_name("/var/lib/pterodactyl/volumes"), "wings-twisted")
        self.assertEqual(base_name("/var/lib/pterodactyl/volumes/"), "wings-twisted")
        first, second = base_name("/srv/a/volumes"), base_name("/srv/b/volumes")
        self.assertNotEqual(first, second)
        self.assertTrue(first.startswith("wings-twisted-"))
        self.assertEqual(first, base_name("/srv/a/volumes"))
        memory = self._dir("memory")
        self.mountinfo.setContent(_mountinfo((memory, "cgroup", "memory")).encode())
        host = detect_cgroups(name=first, mountinfo=self.mountinfo.path)
        assert host is not None
        self.assertEqual(host.bases["memory"], self.root.child("memory").child(first).path)
        group = host.group("abc")
        group.create()
        host.release()
        self.assertTrue(os.path.isdir(host.bases["memory"]))
        os.rmdir(group.paths["memory"])
        host.release()
        self.assertFalse(os.path.exists(host.bases["memory"]))

    def test_v1_limits(self) -> None:
        """
        v1 files: memory, memsw = memory + swap (when the file exists), CFS
        quota and period, pids.max; unlimited values are -1 / max.
        """
        host = self._v1()
        group = host.group("abc")
        group.create()
        memory = FilePath(group.paths["memory"])
        memory.child("memory.memsw.limit_in_bytes").setContent(b"")
        problems = group.apply(CgroupLimits(memory_bytes=1000, swap_bytes=500,
                                            cpu_quota_us=50_000, pids_max=64))
        self.assertEqual(problems, [])
        self.assertEqual(memory.child("memory.limit_in_bytes").getContent(), b"1000")
        self.assertEqual(memory.child("memory.memsw.limit_in_bytes").getContent(), b"1500")
        cpu = FilePath(group.paths["cpu"])
        self.assertEqual(cpu.child("cpu.cfs_quota_us").getContent(), b"50000")
        self.assertEqual(cpu.child("cpu.cfs_period_us").getContent(), b"100000")
        pids = FilePath(group.paths["pids"])
        self.assertEqual(pids.child("pids.max").getContent(), b"64")
        group.apply(CgroupLimits())
        self.assertEqual(memory.child("memory.limit_in_bytes").getContent(), b"-1")
        self.assertEqual(memory.child("memory.memsw.limit_in_bytes").getContent(), b"-1")
        self.assertEqual(cpu.child("cpu.cfs_quota_us").getContent(), b"-1")
        self.assertEqual(pids.child("pids.max").getContent(), b"max")

    def test_v1_counters(self) -> None:
        """
        OOM kills from ``memory.oom_control``, memory without inactive
        file cache, CPU from ``cpuacct.usage``, members from every hierarchy.
        """
        host = self._v1()
        group = host.group("abc")
        group.create()
        memory = FilePath(group.paths["memory"])
        memory.child("memory.oom_control").setContent(
            b"oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
        memory.child("memory.usage_in_bytes").setContent(b"5000\n")
        memory.child("memory.stat").setContent(b"cache 10\ntotal_inactive_file 1000\n")
        memory.child("cgroup.procs").setContent(b"10\n11\n")
        FilePath(group.paths["cpuacct"]).child("cpuacct.usage").setContent(b"123456789\n")
        FilePath(group.paths["pids"]).child("cgroup.procs").setContent(b"11\n12\n")
        self.assertEqual(group.oom_kills(), 2)
        self.assertEqual(group.memory_usage(), 4000)
        self.assertEqual(group.cpu_usage_ns(), 123456789)
        self.assertEqual(group.members(), {10, 11, 12})

    def test_v2_detection_and_limits(self) -> None:
        """
        A cgroup2 mount offering memory, cpu and pids wins: the controllers
        are enabled for the base, and limits go to ``memory.max``,
        ``memory.swap.max``, ``cpu.max`` and ``pids.max``.
        """
        unified = FilePath(self._dir("unified"))
        unified.child("cgroup.controllers").setContent(b"cpuset cpu io memory pids\n")
        unified.child("cgroup.subtree_control").setContent(b"")
        self.mountinfo.setContent(_mountinfo((unified.path, "cgroup2", "")).encode())
        base = unified.child("wings-twisted")
        base.makedirs()
        base.child("cgroup.subtree_control").setContent(b"")
        host = detect_cgroups(mountinfo=self.mountinfo.path)
        assert host is not None
        self.assertEqual(host.version, 2)
        self.assertEqual(host.controllers, {"memory", "cpu", "pids"})
        self.assertEqual(unified.child("cgroup.subtree_control").getContent(),
                         b"+memory +cpu +pids")
        self.assertEqual(base.child("cgroup.subtree_control").getContent(),
                         b"+memory +cpu +pids")
        group = host.group("abc")
        group.create()
        path = FilePath(group.paths["memory"])
        path.child("memory.swap.max").setContent(b"")
        group.apply(CgroupLimits(memory_bytes=1000, swap_bytes=0, cpu_quota_us=200_000,
                                 pids_max=0))
        self.assertEqual(path.child("memory.max").getContent(), b"1000")
        self.assertEqual(path.child("memory.swap.max").getContent(), b"0")
        self.assertEqual(path.child("cpu.max").getContent(), b"200000 100000")
        self.assertEqual(path.child("pids.max").getContent(), b"max")
        path.child("memory.events").setContent(b"low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n")
        self.assertEqual(group.oom_kills(), 1)

    def test_nothing_usable(self) -> None:
        """
        A v2 mount without the memory controller and no v1 memory hierarchy
        means no cgroups.
        """
        unified = FilePath(self._dir("unified"))
        unified.child("cgroup.controllers").setContent(b"cpu pids\n")
        self.mountinfo.setContent(_mountinfo((unified.path, "cgroup2", ""),
                                             (self._dir("pids"), "cgroup", "pids")).encode())
        self.assertIsNone(detect_cgroups(mountinfo=self.mountinfo.path))
        self.assertIsNone(detect_cgroups(mountinfo=self.root.child("missing").path))

    def test_bad_uuid(self) -> None:
        """
        A server id cannot name a path outside the base.
        """
        host = CgroupHost(1, {"memory": self.root.path})
        self.assertRaises(ValueError, host.group, "../x")
        self.assertRaises(ValueError, host.group, "")
