"""
Tests for the local-process environment (``wings_twisted.environment.process``).

Most of these run real child processes ("eggs" written as tiny shell
commands) on the real reactor and wait on Deferreds with a few seconds of
timeout: that is the only honest way to test PTYs, process groups, signals
and cgroups.  Tests needing root, cgroups or bubblewrap skip without them,
except under ``CI`` where they fail instead (CI installs everything).
"""

from __future__ import annotations

import os
import signal
import uuid as uuidlib
from typing import Any, Callable

import psutil
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from wings_twisted.blocking import run_inline
from wings_twisted.environment import (
    EnvironmentError,
    EnvironmentSettings,
    IEnvironment,
    IEnvironmentListener,
    Limits,
    NotAttached,
    StopConfig,
)
from wings_twisted.environment.cgroups import CgroupHost, detect_cgroups
from wings_twisted.environment.process import (
    ProcessEnvironment,
    parse_signal,
    render_invocation,
    stop_signal,
)

from ..support import kill_quietly, make_config, process_alive

TIMEOUT = 8.0
TEST_BASE = "wings-twisted-test"


def require(ok: bool, reason: str) -> None:
    """
    Skip when ``ok`` is false, but fail under ``CI`` (which must provide
    everything).
    """
    if ok:
        return
    if os.environ.get("CI"):
        raise AssertionError("{} (required under CI)".format(reason))
    raise SkipTest(reason)


def real_reactor() -> Any:
    """
    The global reactor: these tests drive real processes.
    """
    from twisted.internet import reactor
    return reactor


async def poll(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """
    Wait until ``predicate()`` holds, checking every 50 ms; fail after
    ``timeout`` seconds.
    """
    reactor = real_reactor()
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError("condition not met within {} s".format(timeout))
        await deferLater(reactor, 0.05)


_HOSTS: dict[str, CgroupHost | None] = {}


def cgroup_host_for_tests() -> CgroupHost:
    """
    A cgroup host under a test-only base name, or skip.
    """
    require(os.geteuid() == 0, "cgroup tests need root")
    if "host" not in _HOSTS:
        _HOSTS["host"] = detect_cgroups(name=TEST_BASE)
    host = _HOSTS["host"]
    require(host is not None, "no writable cgroup hierarchy on this host")
    assert host is not None
    return host


@implementer(IEnvironmentListener)
class RecordingListener:
    """
    Records everything the environment reports; ``wait`` fires when a
    predicate over the recording becomes true.
    """

    def __init__(self) -> None:
        self.states: list[str] = []
        self.lines: list[str] = []
        self.samples: list[Any] = []
        self.notices: list[str] = []
        self.progress_lines: list[str] = []
        self._waits: list[tuple[Callable[[], bool], Deferred[None]]] = []

    def state_changed(self, old: str, new: str) -> None:
        self.states.append(new)
        self._check()

    def output(self, line: str) -> None:
        self.lines.append(line)
        self._check()

    def stats(self, sample: Any) -> None:
        self.samples.append(sample)
        self._check()

    def notice(self, text: str) -> None:
        self.notices.append(text)
        self._check()

    def progress(self, line: str) -> None:
        self.progress_lines.append(line)
        self._check()

    def _check(self) -> None:
        for pair in list(self._waits):
            if pair[0]():
                self._waits.remove(pair)
                pair[1].callback(None)

    def wait(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> Deferred[None]:
        """
        Fire once ``predicate()`` holds (checked now and after every event).
        """
        d: Deferred[None] = Deferred()
        if predicate():
            d.callback(None)
            return d
        self._waits.append((predicate, d))
        return d.addTimeout(timeout, real_reactor())

    def line(self, text: str, timeout: float = TIMEOUT) -> Deferred[None]:
        """
        Fire once a line containing ``text`` was output.
        """
        return self.wait(lambda: any(text in line for line in self.lines), timeout)

    def offline(self, timeout: float = TIMEOUT) -> Deferred[None]:
        """
        Fire once the state is back to offline after a start.
        """
        return self.wait(lambda: len(self.states) > 1 and self.states[-1] == "offline", timeout)


class EnvTestMixin:
    """
    Builds a ``ProcessEnvironment`` on the real reactor for an egg.
    """

    mktemp: Callable[[], str]
    addCleanup: Callable[..., None]

    def make_env(self, invocation: str, *, stop: StopConfig = StopConfig("command", "stop"),
                 limits: Limits = Limits(), cgroups: Any = None, process: Any = None,
                 env: tuple[tuple[str, str], ...] = (), uid: int = -1, gid: int = -1,
                 volume: str | None = None,
                 ) -> tuple[ProcessEnvironment, RecordingListener]:
        base = FilePath(self.mktemp())
        base.makedirs()
        if volume is None:
            vol = base.child("volume")
            vol.makedirs()
            volume = vol.path
        config = make_config(base, environment={"driver": "process", "process": process or {}},
                             system={"websocket_log_count": 10})
        settings = EnvironmentSettings(
            uuid=str(uuidlib.uuid4()), volume=volume, invocation=invocation,
            env=(("STARTUP", invocation),) + env, limits=limits, stop=stop, uid=uid, gid=gid)
        environment = ProcessEnvironment(settings, reactor=real_reactor(), config=config,
                                         run_blocking=run_inline, cgroups=cgroups)
        listener = RecordingListener()
        environment.set_listener(listener)
        self.addCleanup(self._kill, environment)
        return environment, listener

    async def _kill(self, environment: ProcessEnvironment) -> None:
        if await environment.is_running():
            await environment.destroy()


ECHO_EGG = ('echo booting; echo "Done (ready)"; '
            'while read -r line; do '
            'if [ "$line" = stop ]; then echo bye; exit 0; fi; '
            'echo "got: $line"; done')


# A child that starts its own session (out of the group), says its pid, and
# lingers holding stdout; the main process exits as soon as the child is out.
ESCAPE_EGG = ('python3 -c "import os, time; os.setsid(); '
              'print(\'child=%d\' % os.getpid(), flush=True); '
              'open(\'escaped\', \'w\').write(\'1\'); time.sleep(300)" & '
              'while [ ! -s escaped ]; do sleep 0.05; done; exit 0')


class ProcessEnvironmentTests(EnvTestMixin, TestCase):
    """
    Start, output, commands, stop and exit of real child processes.
    """

    async def test_start_waits_for_the_leftover_sweep(self) -> None:
        """
        A start that arrives while the boot's look for leftovers of a previous daemon run is
        still under way waits for it: the sweep can never take the new process for a leftover
        and kill it (before: the game was stopped right after it started and counted as a
        crash).
        """
        from wings_twisted.environment.leftovers import stop_leftovers

        environment, listener = self.make_env(ECHO_EGG)
        held: list[Deferred[Any]] = []

        def run_blocking(fn: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
            if fn is stop_leftovers:
                d: Deferred[Any] = Deferred()
                held.append(d)
                d.addCallback(lambda _: fn(*args, **kwargs))
                return d
            return run_inline(fn, *args, **kwargs)

        environment._run_blocking = run_blocking  # type: ignore[attr-defined]
        running = environment.is_running()
        started = environment.start()
        self.assertEqual(listener.states, [])
        self.assertFalse(started.called)
        self.assertEqual(len(held), 1)
        held[0].callback(None)
        self.assertFalse(await running)
        await started
        await listener.line("Done (ready)")
        self.assertEqual(listener.states[0], "starting")
        self.assertNotIn("offline", listener.states)
        self.assertTrue(await environment.is_running())

    def test_provides_interface(self) -> None:
        """
        ``ProcessEnvironment`` provides ``IEnvironment`` completely.
        """
        environment, _ = self.make_env("true")
        self.assertTrue(verifyObject(IEnvironment, environment))
        self.assertEqual(environment.kind, "process")

    async def test_start_output_command_stop(self) -> None:
        """
        A started egg goes offline→starting, its lines reach the listener and
        the history, a command is answered, and ``stop`` (type command)
        passes through ``stopping`` to ``offline`` with exit code 0.
        """
        environment, listener = self.make_env(ECHO_EGG)
        await environment.start()
        self.assertEqual(listener.states, ["starting"])
        self.assertTrue(environment.is_attached())
        self.assertTrue(await environment.is_running())
        await listener.line("Done (ready)")
        await environment.send_command("hello world")
        await listener.line("got: hello world")
        self.assertIn("got: hello world", await environment.read_log(10))
        await environment.wait_for_stop(5, True)
        self.assertEqual(listener.states, ["starting", "stopping", "offline"])
        self.assertIn("bye", listener.lines)
        self.assertEqual(environment.exit_state(), (0, False))
        self.assertFalse(await environment.is_running())
        self.assertEqual(environment.uptime_ms(), 0)

    async def test_typed_stop_command_sets_stopping(self) -> None:
        """
        A console command equal to the stop command sets ``stopping`` before
        it is written, so the exit is not a crash.
        """
        environment, listener = self.make_env(ECHO_EGG)
        await environment.start()
        await listener.line("Done (ready)")
        await environment.send_command("stop")
        await listener.offline()
        self.assertEqual(listener.states, ["starting", "stopping", "offline"])

    async def test_crash_goes_offline_directly(self) -> None:
        """
        A process exiting on its own goes straight to ``offline`` (the
        listener's crash signal) with its exit code, its last unterminated
        line flushed.
        """
        environment, listener = self.make_env("echo dying; printf 'last words'; exit 1")
        await environment.start()
        await listener.offline()
        self.assertEqual(listener.states, ["starting", "offline"])
        self.assertEqual(environment.exit_state(), (1, False))
        self.assertEqual(listener.lines, ["dying", "last words"])

    async def test_invocation_placeholders(self) -> None:
        """
        ``{{NAME}}`` is replaced by the variable's value (empty when unset)
        and a value is not parsed as shell code.
        """
        environment, listener = self.make_env(
            "echo [{{GREETING}}] [{{MISSING}}] [{{EVIL}}]",
            env=(("GREETING", "hi there"), ("EVIL", "x; echo injected")))
        await environment.start()
        await listener.offline()
        self.assertEqual(listener.lines, ["[hi there] [] [x; echo injected]"])

    async def test_environment_home_and_cwd(self) -> None:
        """
        The process runs in the volume with ``HOME`` set to it.
        """
        environment, listener = self.make_env('echo "cwd=$(pwd) home=$HOME"')
        await environment.start()
        await listener.offline()
        volume = environment.settings.volume
        self.assertEqual(listener.lines, ["cwd={0} home={0}".format(volume)])

    async def test_shell_fallback(self) -> None:
        """
        A configured shell that does not exist falls back to ``/bin/sh``.
        """
        environment, listener = self.make_env('echo "shell=$0"',
                                              process={"shell": "/nonexistent/bash"})
        await environment.start()
        await listener.offline()
        self.assertEqual(listener.lines, ["shell=/bin/sh"])

    async def test_read_log_and_history_reset(self) -> None:
        """
        ``read_log(n)`` returns the last n lines, the history keeps at most
        max(websocket_log_count, 100) lines, and a new start clears it.
        """
        environment, listener = self.make_env("for i in $(seq 1 120); do echo line $i; done")
        await environment.start()
        await listener.offline()
        self.assertEqual(await environment.read_log(3), ["line 118", "line 119", "line 120"])
        history = await environment.read_log(1000)
        self.assertEqual(len(history), 100)
        self.assertEqual(history[0], "line 21")
        environment.apply_settings(EnvironmentSettings(
            uuid=environment.settings.uuid, volume=environment.settings.volume,
            invocation="echo again"))
        await environment.start()
        await listener.wait(lambda: listener.states.count("offline") == 2)
        self.assertEqual(await environment.read_log(10), ["again"])

    async def test_send_command_not_attached(self) -> None:
        """
        ``send_command`` without a process fails with ``NotAttached``.
        """
        environment, _ = self.make_env("true")
        with self.assertRaises(NotAttached):
            await environment.send_command("say hi")
        self.assertFalse(environment.is_attached())

    async def test_missing_volume_fails_cleanly(self) -> None:
        """
        A start whose volume is missing fails with ``EnvironmentError`` and
        goes starting→stopping→offline (no crash).
        """
        environment, listener = self.make_env("true", volume="/nonexistent/volume/dir")
        with self.assertRaises(EnvironmentError):
            await environment.start()
        self.assertEqual(listener.states, ["starting", "stopping", "offline"])

    async def test_start_when_running_sets_running(self) -> None:
        """
        ``start`` while the process lives only sets ``running``.
        """
        environment, listener = self.make_env(ECHO_EGG)
        await environment.start()
        await listener.line("Done (ready)")
        await environment.start()
        self.assertEqual(listener.states, ["starting", "running"])
        self.assertEqual(listener.lines.count("booting"), 1)

    async def test_pipes_merge_stderr(self) -> None:
        """
        With ``use_pty: false`` stdout and stderr arrive merged, in order.
        """
        environment, listener = self.make_env("echo out; echo err >&2; echo out2",
                                              process={"use_pty": False})
        await environment.start()
        await listener.offline()
        self.assertEqual(listener.lines, ["out", "err", "out2"])

    async def test_signal_stop_reaches_children(self) -> None:
        """
        Stop type ``signal`` sends the mapped signal to the whole process
        group: a child in the background sees it.
        """
        egg = ("(trap 'echo child got TERM; exit 3' TERM; echo child ready; "
               "while :; do sleep 0.1; done) & "
               "child=$!; trap 'wait $child; echo leader done; exit 0' TERM; "
               "echo ready; wait $child")
        environment, listener = self.make_env(egg, stop=StopConfig("signal", "SIGTERM"))
        await environment.start()
        await listener.wait(lambda: {"ready", "child ready"} <= set(listener.lines))
        await environment.stop()
        self.assertEqual(listener.states[-1], "stopping")
        await listener.offline()
        self.assertIn("child got TERM", listener.lines)
        self.assertEqual(environment.exit_state(), (0, False))

    async def test_caret_c_is_sigint(self) -> None:
        """
        Stop signal ``C`` (``^C``) delivers SIGINT.
        """
        egg = "trap 'echo got INT; exit 0' INT; echo ready; while :; do sleep 0.1; done"
        environment, listener = self.make_env(egg, stop=StopConfig("signal", "C"))
        await environment.start()
        await listener.line("ready")
        await environment.wait_for_stop(5, False)
        self.assertIn("got INT", listener.lines)
        self.assertEqual(listener.states, ["starting", "stopping", "offline"])

    async def test_ignored_signal_escalates_to_kill(self) -> None:
        """
        A process ignoring its stop signal is SIGKILLed after the grace
        period (Pelican), exit code 137.
        """
        egg = "trap '' TERM; echo ready; while :; do sleep 0.1; done"
        environment, listener = self.make_env(egg, stop=StopConfig("signal", "SIGTERM"))
        environment.signal_grace = 0.3
        await environment.start()
        await listener.line("ready")
        await environment.stop()
        await listener.offline()
        self.assertEqual(environment.exit_state(), (137, False))

    async def test_wait_for_stop_kills_on_timeout(self) -> None:
        """
        ``wait_for_stop`` with kill-on-timeout SIGKILLs a process that
        ignores SIGTERM (native stop): exit code 128+9.
        """
        egg = "trap '' TERM; echo ready; while :; do sleep 0.1; done"
        environment, listener = self.make_env(egg, stop=StopConfig("stop", ""))
        await environment.start()
        await listener.line("ready")
        await environment.wait_for_stop(0.5, True)
        self.assertEqual(listener.states, ["starting", "stopping", "offline"])
        self.assertEqual(environment.exit_state(), (137, False))

    async def test_wait_for_stop_timeout_error(self) -> None:
        """
        Without kill-on-timeout, ``wait_for_stop`` fails and the process
        lives on.
        """
        egg = "trap '' TERM; echo ready; while :; do sleep 0.1; done"
        environment, listener = self.make_env(egg, stop=StopConfig("stop", ""))
        await environment.start()
        await listener.line("ready")
        with self.assertRaises(EnvironmentError):
            await environment.wait_for_stop(0.3, False)
        self.assertTrue(await environment.is_running())
        await environment.terminate("SIGKILL")
        await listener.offline()
        self.assertEqual(environment.exit_state()[0], 137)

    async def test_terminate_and_leftovers(self) -> None:
        """
        ``terminate`` sets ``stopping`` and signals the group; children left
        behind when the main process exits are killed with it.
        """
        environment, listener = self.make_env("sleep 300 & echo child=$!; echo ready; wait")
        await environment.start()
        await listener.line("ready")
        child = int([line for line in listener.lines if line.startswith("child=")][0][6:])
        await environment.terminate("KILL")
        self.assertEqual(listener.states, ["starting", "stopping"])
        await listener.offline()
        self.assertEqual(environment.exit_state(), (137, False))
        await poll(lambda: not process_alive(child))

    async def test_natural_exit_kills_orphans(self) -> None:
        """
        When the main process exits, its background children die too (as a
        container's do, even when they ignore the terminal's SIGHUP) and do
        not keep the server online by holding the PTY.
        """
        environment, listener = self.make_env(
            "(trap '' HUP; exec sleep 300) & echo child=$!; sleep 0.2; exit 0")
        await environment.start()
        await listener.offline()
        child = int(listener.lines[0][6:])
        await poll(lambda: not process_alive(child))

    async def test_natural_exit_kills_orphans_pipes(self) -> None:
        """
        The same on pipes, where nothing sends SIGHUP.
        """
        environment, listener = self.make_env("sleep 300 & echo child=$!; exit 0",
                                              process={"use_pty": False})
        await environment.start()
        await listener.offline()
        child = int(listener.lines[0][6:])
        await poll(lambda: not process_alive(child))

    async def test_escaped_child_does_not_hold_the_server(self) -> None:
        """
        A child that left the process group (``setsid``) and still holds
        the output pipe does not keep the server online past the drain
        grace (without cgroups it survives: documented).
        """
        environment, listener = self.make_env(ESCAPE_EGG, process={"use_pty": False})
        environment.drain_grace = 0.3
        await environment.start()
        await listener.line("child=")
        child = int(listener.lines[0][6:])
        self.addCleanup(kill_quietly, child)
        await listener.offline(timeout=4)
        self.assertEqual(environment.exit_state(), (0, False))
        self.assertTrue(process_alive(child))

    async def test_terminate_when_not_running(self) -> None:
        """
        Terminating with no process moves a non-offline state through
        ``stopping`` to ``offline``; an unknown signal name fails.
        """
        environment, listener = self.make_env("true")
        environment.set_state("running")
        await environment.terminate("SIGKILL")
        self.assertEqual(listener.states, ["running", "stopping", "offline"])
        with self.assertRaises(EnvironmentError):
            await environment.terminate("SIGNOPE")

    async def test_stats_samples(self) -> None:
        """
        While running, a sample arrives about every second with the memory
        of the tree, the host memory as the limit when unlimited, a busy
        core's CPU and a growing uptime.
        """
        environment, listener = self.make_env("echo ready; while :; do :; done")
        await environment.start()
        await listener.wait(lambda: len(listener.samples) >= 2, timeout=5)
        first, second = listener.samples[:2]
        self.assertEqual(set(second), {"memory_bytes", "memory_limit_bytes", "cpu_absolute",
                                       "network", "uptime"})
        self.assertGreater(second["memory_bytes"], 0)
        self.assertEqual(second["memory_limit_bytes"], psutil.virtual_memory().total)
        self.assertGreater(second["cpu_absolute"], 20)
        self.assertEqual(second["network"], {"rx_bytes": 0, "tx_bytes": 0})
        self.assertGreater(second["uptime"], first["uptime"])
        self.assertGreater(environment.uptime_ms(), 900)
        await environment.destroy()
        self.assertEqual(listener.states[-2:], ["stopping", "offline"])

    async def test_watchdog_kills_memory_hog(self) -> None:
        """
        Without cgroups, the watchdog SIGKILLs a tree over its bounded limit
        and reports ``oom_killed``; the exit is a crash (no ``stopping``),
        and the sample limit is the bounded limit.
        """
        egg = ('python3 -c "import time; b = b\'x\' * (200 * 1024 * 1024); '
               'print(\'allocated\', flush=True); time.sleep(30)"')
        environment, listener = self.make_env(egg, limits=Limits(memory_limit=32))
        await environment.start()
        await listener.offline()
        self.assertEqual(environment.exit_state(), (137, True))
        self.assertEqual(listener.states, ["starting", "offline"])
        self.assertEqual(listener.samples[-1]["memory_limit_bytes"], round(32 * 1.15 * 1e6))

    async def test_runs_as_configured_user(self) -> None:
        """
        A root daemon runs the process as the server's uid/gid.
        """
        require(os.geteuid() == 0, "dropping privileges needs root")
        environment, listener = self.make_env('echo "$(id -u):$(id -g):$(id -G)"',
                                              uid=65534, gid=65534)
        os.chmod(environment.settings.volume, 0o777)
        await environment.start()
        await listener.offline()
        self.assertEqual(listener.lines, ["65534:65534:65534"])




class CgroupEnvironmentTests(EnvTestMixin, TestCase):
    """
    The environment with real cgroups (root and a writable hierarchy).
    """

    async def test_limits_written_and_removed(self) -> None:
        """
        The process runs inside its group, whose memory, CPU and pid limits
        are written; the group is removed after the exit.
        """
        host = cgroup_host_for_tests()
        require(os.geteuid() == 0, "dropping privileges needs root")
        limits = Limits(memory_limit=64, swap=0, cpu_limit=50, pids_limit=40)
        environment, listener = self.make_env("echo ready; exec sleep 30", limits=limits,
                                              cgroups=host, uid=65534, gid=65534)
        await environment.start()
        await listener.line("ready")
        group = host.group(environment.settings.uuid)
        memory = group.paths["memory"]
        expected = round(64 * 1.15 * 1e6)
        if host.version == 1:
            limit = int(open(os.path.join(memory, "memory.limit_in_bytes")).read())
            self.assertEqual(limit, expected // 4096 * 4096)
            if "cpu" in group.paths:
                quota = open(os.path.join(group.paths["cpu"], "cpu.cfs_quota_us")).read()
                self.assertEqual(int(quota), 50_000)
        else:
            limit = int(open(os.path.join(memory, "memory.max")).read())
            self.assertEqual(limit, expected // 4096 * 4096)
            if "cpu" in group.paths:
                self.assertEqual(open(os.path.join(memory, "cpu.max")).read().split(),
                                 ["50000", "100000"])
        if "pids" in group.paths:
            self.assertEqual(open(os.path.join(group.paths["pids"], "pids.max")).read().strip(),
                             "40")
        members = group.members()
        self.assertEqual(len(members), 1)
        member = psutil.Process(members.pop())
        await poll(lambda: member.cmdline() == ["sleep", "30"])    # "ready" precedes the exec
        self.assertEqual((member.uids().real, member.gids().real), (65534, 65534))
        await listener.wait(lambda: len(listener.samples) >= 1)
        self.assertEqual(listener.samples[0]["memory_limit_bytes"], expected)
        await environment.terminate("SIGKILL")
        await listener.offline()
        self.assertEqual(environment.exit_state(), (137, False))
        for path in group.paths.values():
            self.assertFalse(os.path.exists(path))

    async def test_cgroup_oom_kill(self) -> None:
        """
        A memory hog over its 32 MB (×1.15) limit is killed by the kernel
        inside its group, reported as ``oom_killed``.
        """
        host = cgroup_host_for_tests()
        egg = 'python3 -c "b = b\'x\' * (200 * 1024 * 1024); print(\'survived\')"'
        environment, listener = self.make_env(egg, limits=Limits(memory_limit=32), cgroups=host)
        await environment.start()
        await listener.offline()
        self.assertEqual(environment.exit_state(), (137, True))
        self.assertNotIn("survived", listener.lines)
        self.assertEqual(listener.states, ["starting", "offline"])

    async def test_pids_limit(self) -> None:
        """
        ``pids.max`` stops a process from forking past its limit.
        """
        host = cgroup_host_for_tests()
        require("pids" in host.controllers, "no pids controller")
        egg = ('python3 -c "\nimport os, time\nn = 0\nfor i in range(30):\n'
               '    try:\n        pid = os.fork()\n    except OSError:\n        break\n'
               '    if pid == 0:\n        time.sleep(5)\n        os._exit(0)\n'
               '    n += 1\nprint(\'forked\', n, flush=True)\n"')
        environment, listener = self.make_env(egg, limits=Limits(pids_limit=8), cgroups=host)
        await environment.start()
        await listener.offline()
        forked = [line for line in listener.lines if line.startswith("forked")]
        self.assertEqual(len(forked), 1)
        self.assertLess(int(forked[0].split()[1]), 8)

    async def test_group_members_die_with_the_server(self) -> None:
        """
        A child that escaped the process group is still killed through the
        cgroup when the server exits.
        """
        host = cgroup_host_for_tests()
        environment, listener = self.make_env(ESCAPE_EGG, cgroups=host,
                                              process={"use_pty": False})
        environment.drain_grace = 0.3
        await environment.start()
        await listener.line("child=")
        child = int(listener.lines[0][6:])
        self.addCleanup(kill_quietly, child)
        await listener.offline(timeout=4)
        await poll(lambda: not process_alive(child))

    async def test_update_limits(self) -> None:
        """
        ``update_limits`` rewrites the running group's memory limit.
        """
        host = cgroup_host_for_tests()
        environment, listener = self.make_env("echo ready; exec sleep 30",
                                              limits=Limits(memory_limit=64), cgroups=host)
        await environment.start()
        await listener.line("ready")
        settings = environment.settings
        environment.apply_settings(EnvironmentSettings(
            uuid=settings.uuid, volume=settings.volume, invocation=settings.invocation,
            limits=Limits(memory_limit=128)))
        await environment.update_limits()
        memory = host.group(settings.uuid).paths["memory"]
        name = "memory.limit_in_bytes" if host.version == 1 else "memory.max"
        limit = int(open(os.path.join(memory, name)).read())
        self.assertEqual(limit, round(128 * 1.15 * 1e6) // 4096 * 4096)


class HelperTests(SynchronousTestCase):
    """
    The pure pieces: rendering, signal names.
    """

    def test_render_invocation(self) -> None:
        """
        ``{{NAME}}`` becomes ``${NAME}``; other braces are left alone.
        """
        self.assertEqual(render_invocation("java -Xmx{{SERVER_MEMORY}}M -jar {{JAR}} {{a.b}}"),
                         "java -Xmx${SERVER_MEMORY}M -jar ${JAR} {{a.b}}")

    def test_stop_signal_mapping(self) -> None:
        """
        Pelican's mapping: SIGABRT, SIGINT or C, SIGTERM; anything else KILL.
        """
        self.assertEqual(stop_signal("SIGABRT"), signal.SIGABRT)
        self.assertEqual(stop_signal("c"), signal.SIGINT)
        self.assertEqual(stop_signal("SIGINT"), signal.SIGINT)
        self.assertEqual(stop_signal("sigterm"), signal.SIGTERM)
        self.assertEqual(stop_signal("SIGHUP"), signal.SIGKILL)
        self.assertEqual(stop_signal(""), signal.SIGKILL)

    def test_parse_signal(self) -> None:
        """
        Names with or without ``SIG``, any case; unknown names fail.
        """
        self.assertEqual(parse_signal("kill"), signal.SIGKILL)
        self.assertEqual(parse_signal("SIGTERM"), signal.SIGTERM)
        self.assertRaises(EnvironmentError, parse_signal, "SIGWHAT")



class LeftoverTests(EnvTestMixin, TestCase):
    """
    Processes a crashed daemon left behind (issue: orphans after a daemon crash) are found and
    stopped by the next run, never left running unseen.
    """

    async def test_orphans_stopped_at_boot(self) -> None:
        """
        A game that ignores SIGHUP and its ``setsid`` child, both carrying the server's marker
        (as a previous run spawned them), are stopped by the first ``is_running()`` of a new
        environment, which then reports the server not running; another server's processes
        are left alone, and so are those of the same server uuid on another daemon of the
        host (another volume root: a second node, a transfer between two local nodes).
        """
        import subprocess
        from wings_twisted.environment.leftovers import find_marked, marker
        uuid = "6e1d8b5f-2222-4333-8444-a55566667777"
        other = "6e1d8b5f-2222-4333-8444-a55566668888"
        base = FilePath(self.mktemp())
        volume = base.child("volumes").child(uuid)
        volume.makedirs()
        others = [base.child("volumes").child(other).path,
                  base.child("second-node").child(uuid).path]
        script = "trap '' HUP TERM; setsid sh -c 'trap \"\" HUP; sleep 300' & sleep 300"
        spawned = []
        for owner in [volume.path] + others:
            env = dict(os.environ, **dict([marker(owner)]))
            spawned.append(subprocess.Popen(["sh", "-c", script], env=env,
                                            start_new_session=True))
        self.addCleanup(lambda: [p.kill() for p in spawned])
        for owner in others:
            self.addCleanup(lambda o=owner: [os.kill(pid, 9) for pid in find_marked(o)])
        for owner in [volume.path] + others:
            await poll(lambda o=owner: len(find_marked(o)) >= 3)
        config = make_config(base, environment={"driver": "process"})
        settings = EnvironmentSettings(uuid=uuid, volume=volume.path, invocation="true")
        environment = ProcessEnvironment(settings, reactor=real_reactor(), config=config,
                                         run_blocking=run_inline, cgroups=None)
        environment.signal_grace = 1.0
        running = await environment.is_running().addTimeout(TIMEOUT, real_reactor())
        self.assertFalse(running)
        spawned[0].wait(TIMEOUT)
        await poll(lambda: find_marked(volume.path) == [])
        for owner in others:
            self.assertGreaterEqual(len(find_marked(owner)), 3, owner)

    async def test_started_processes_are_marked(self) -> None:
        """
        A server process started by this run carries the marker (so a later run finds it), and
        is not mistaken for a leftover by this run.
        """
        from wings_twisted.environment.leftovers import find_marked
        environment, _ = self.make_env("sleep 30")
        await environment.start()
        self.assertTrue(await environment.is_running())
        await poll(lambda: len(find_marked(environment.settings.volume)) >= 1)
        self.assertTrue(await environment.is_running())
        await environment.wait_for_stop(TIMEOUT, True)
