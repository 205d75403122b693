"""
The launcher and ``/proc`` accounting with real child processes, and cgroup
detection on the real host (root only; required under ``CI``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid as uuidlib

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.environment.cgroups import CgroupLimits, detect_cgroups
from wings_twisted.environment.launcher import launcher_argv
from wings_twisted.environment.proctree import tree_pids, tree_usage

from ..support import kill_quietly, process_alive
from .test_process_environment import TEST_BASE, require


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
        # The command says "ready" once it runs, i.e. after the launcher set the signal: the
        # parent exits on that event, not after a guessed delay (slow under coverage).
        argv = launcher_argv(sys.executable, parent_death_signal=signal.SIGHUP) + [
            "sh", "-c", "echo ready; exec sleep 30"]
        parent = subprocess.run(
            [sys.executable, "-c",
             "import subprocess, sys; "
             "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE); "
             "p.stdout.readline(); print(p.pid)"] + argv,
            stdout=subprocess.PIPE, check=True, timeout=60)
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
