"""
Tests for ``wings_twisted.environment.cgroups``: the limit arithmetic,
detection and limit writing on fake cgroup trees (plain directories), the
process-tree accounting, and detection on the real host (root only; required
under ``CI``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid as uuidlib

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.config import OverheadConfig
from wings_twisted.environment import Limits
from wings_twisted.environment.cgroups import (CgroupHost, CgroupLimits, bounded_memory,
                                               cgroup_limits, detect_cgroups, launcher_argv,
                                               overhead_multiplier, parse_mountinfo, tree_pids,
                                               tree_usage)

from .support import kill_quietly, process_alive
from .test_process_environment import TEST_BASE, require


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


class AccountingTests(SynchronousTestCase):
    """
    The launcher and ``/proc`` accounting.
    """

    def test_launcher(self) -> None:
        """
        The launcher starts a new session, merges stderr when asked, joins
        the listed ``cgroup.procs`` files (here plain files) and execs.
        """
        procs = FilePath(self.mktemp())
        argv = launcher_argv(sys.executable, procs=[procs.path], merge=True) + [
            sys.executable, "-c",
            "import os, sys; print(os.getpid(), os.getsid(0), flush=True); "
            "print('err', file=sys.stderr)"]
        result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                check=True)
        pid, sid = result.stdout.decode().split("\n")[0].split()
        self.assertEqual(pid, sid)
        self.assertEqual(procs.getContent().decode(), pid)
        self.assertEqual(result.stdout.decode().split("\n")[1], "err")
        self.assertEqual(result.stderr, b"")

    def test_launcher_failure(self) -> None:
        """
        A cgroup that cannot be joined stops the launcher before the
        command runs: exit 127 and a message.
        """
        argv = launcher_argv(sys.executable, procs=["/nonexistent/cgroup.procs"]) + [
            "sh", "-c", "echo ran"]
        result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.assertEqual(result.returncode, 127)
        self.assertEqual(result.stdout, b"")
        self.assertIn(b"wings-twisted: cannot start", result.stderr)

    def test_parent_death_signal(self) -> None:
        """
        A command started with ``parent_death_signal`` dies when the process
        that spawned it does.
        """
        argv = launcher_argv(sys.executable, parent_death_signal=signal.SIGHUP) + ["sleep", "30"]
        parent = subprocess.run(
            [sys.executable, "-c",
             "import subprocess, sys, time; "
             "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL); "
             "time.sleep(0.3); print(p.pid)"] + argv,
            stdout=subprocess.PIPE, check=True)
        child = int(parent.stdout)
        self.addCleanup(kill_quietly, child)
        for _ in range(100):
            if not process_alive(child):
                break
            subprocess.run(["sleep", "0.02"])
        self.assertFalse(process_alive(child))

    def test_tree(self) -> None:
        """
        The tree of a process includes its grandchildren; usage sums RSS.
        """
        proc = subprocess.Popen(["sh", "-c", "sh -c 'sleep 30; true' & wait"])
        self.addCleanup(proc.wait)
        self.addCleanup(proc.kill)
        for _ in range(100):
            if len(tree_pids(proc.pid)) == 3:
                break
            subprocess.run(["sleep", "0.02"])
        self.assertEqual(len(tree_pids(proc.pid)), 3)
        rss, cpu = tree_usage(proc.pid)
        self.assertGreater(rss, 0)
        self.assertGreaterEqual(cpu, 0)
        for pid in tree_pids(proc.pid)[1:]:
            os.kill(pid, 9)


class RealHostTests(SynchronousTestCase):
    """
    Detection and group handling on this machine's cgroups.
    """

    def test_detect_create_apply_remove(self) -> None:
        """
        As root, a hierarchy is found; a group can be created, limited,
        joined, read and removed.
        """
        require(os.geteuid() == 0, "cgroup tests need root")
        host = detect_cgroups(name=TEST_BASE)
        require(host is not None, "no writable cgroup hierarchy on this host")
        assert host is not None
        group = host.group(str(uuidlib.uuid4()))
        group.create()
        self.addCleanup(group.remove)
        self.addCleanup(group.kill)
        self.assertEqual(group.apply(CgroupLimits(memory_bytes=64 * 1024 * 1024,
                                                  swap_bytes=0, pids_max=10)), [])
        self.assertEqual(group.oom_kills(), 0)
        proc = subprocess.Popen(launcher_argv(sys.executable, procs=group.procs_files())
                                + ["sleep", "30"])
        self.addCleanup(proc.wait)
        for _ in range(100):
            if group.members():
                break
            subprocess.run(["sleep", "0.02"])
        self.assertEqual(group.members(), {proc.pid})
        self.assertIsNotNone(group.memory_usage())
        self.assertFalse(group.remove())
        group.kill()
        proc.wait()
        self.assertTrue(group.remove())
        for path in group.paths.values():
            self.assertFalse(os.path.exists(path))


