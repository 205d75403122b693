"""
The local-process environment (``environment.driver: process``,
lifecycle.md §21.4): each server is a child process of the daemon, run in its
volume directory, with no container engine.

**Not a security boundary.**  The game runs on the host as the configured
uid/gid (as the daemon user when the daemon is not root), sees the host's
files and network, and its install script runs as the daemon user.  Only run
eggs you trust.

Process.  ``invocation`` is rendered the way the Docker images' entrypoint
does it: every ``{{NAME}}`` becomes ``${NAME}`` and the shell
(``environment.process.shell``, ``/bin/sh`` when that does not exist)
expands it from the environment at run time, so a variable's value is never
parsed as shell code (an unset variable is empty).  The child is spawned on
a PTY by default (``use_pty``; Docker servers run on a TTY: output is
line-buffered and lines end ``\\r\\n``, and typed commands are echoed as on a
Docker TTY) or on pipes with stderr merged into stdout.  Its environment is
the server's variables plus ``HOME=<volume>``, the daemon's ``PATH`` and, on
a PTY, ``TERM=xterm`` unless set (as Docker does for TTY containers).  It is
spawned through the launcher of ``launcher.launcher_argv``: a new session
(signals go to the whole process group), the cgroup joined and privileges
dropped (when the daemon is root and ``uid``/``gid`` are set) before the
command runs.  When the main process exits, whatever is left of its group
and cgroup is killed, as a container's processes die with its init.

Limits, per server:

* with usable cgroups (``cgroups.detect_cgroups``; v2, else v1): memory
  (with the ``docker.overhead`` multiplier), swap, CPU quota and pids
  (``limits.pids_limit``, else ``docker.container_pid_limit``) are enforced
  by the kernel, ``oom_disabled`` on v1 only; ``oom_killed`` comes from the
  group's OOM-kill counter compared before and after the run; stats come
  from the group;
* without: if ``environment.process.memory_watchdog`` is on, the tree is
  SIGKILLed when its summed RSS exceeds the bounded limit at a (1 s) sample
  (``oom_disabled`` notwithstanding: there is no way to pause it instead)
  and ``oom_killed`` is reported; CPU, swap and pids are not enforced (logged
  once per server).  IO weight and CPU pinning are never enforced.

Stats are sampled every second through ``run_blocking`` (a walk of the
process tree in ``/proc``, or the cgroup's counters).  Network counters are
always 0.

Processes cannot be re-attached after a daemon restart, so they should not
outlive it: should the daemon die, the main process gets SIGHUP (on a PTY
the kernel's hangup reaches the whole group too), and with cgroups anything
left in a server's group is killed before its next start.  What survives
anyway (a game that ignores SIGHUP, a ``setsid`` child) carries a marker in
its environment and is stopped by the first ``is_running()`` of the next
daemon run (``leftovers``).  After a restart ``is_running()`` is false and
the server layer starts the server again.

The module is long because ``ProcessEnvironment`` is one cohesive state
machine around a single child: spawning, output, sampling, stopping and
tearing down share the same run record and timers, and the pure pieces
(cgroups, the launcher, ``/proc`` accounting, the install sandbox) already
live in their own modules.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Literal, Mapping, Union

import psutil
from twisted.internet.defer import Deferred, TimeoutError, fail, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..blocking import RunBlocking
from ..config import Config
from ..reactor import IReactor
from .lines import LineSplitter
from . import (EnvironmentError, EnvironmentSettings, IEnvironment,
               InstallResult, NotAttached)
from .base import EnvironmentBase, exit_waiter, release_waiters
from .cgroups import (CgroupHost, ServerCgroup, base_name, bounded_memory, cgroup_limits,
                      detect_cgroups)
from .launcher import launcher_argv
from .leftovers import marker, stop_leftovers
from .proctree import measure_usage
from .sandbox import InstallJob, exit_code, kill_group, run_install

_PLACEHOLDER = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}")
# ``terminate``'s parameter is named ``signal`` (the interface's name).
_SIGKILL = signal.SIGKILL

#: Where a ``ProcessEnvironment`` gets its cgroup hierarchy: a host, ``None``
#: (no cgroups), ``"detect"`` (detect on first start), or a shared detector
#: (the node's, so that the host is looked for once for every server).
CgroupSource = Union[CgroupHost, None, Literal["detect"],
                     Callable[[], Awaitable[Union[CgroupHost, None]]]]

#: Seconds between the mapped stop signal and SIGKILL (Pelican).
SIGNAL_GRACE = 10.0
#: Seconds to wait for the exit after a SIGKILL.
KILL_WAIT = 10.0
#: Seconds the output stream may outlive the main process.
DRAIN_GRACE = 2.0


def render_invocation(invocation: str) -> str:
    """
    The startup command for the shell: ``{{NAME}}`` becomes ``${NAME}``.
    """
    return _PLACEHOLDER.sub(lambda m: "${" + m.group(1) + "}", invocation)


def stop_signal(value: str) -> signal.Signals:
    """
    The signal for a ``signal`` stop (Pelican): ``SIGABRT``, ``SIGINT`` or
    ``C``, ``SIGTERM``; anything else SIGKILL.
    """
    name = value.strip().upper()
    if name == "C":
        name = "SIGINT"
    if name in ("SIGABRT", "SIGINT", "SIGTERM"):
        return signal.Signals[name]
    return signal.SIGKILL


def parse_signal(name: str) -> signal.Signals:
    """
    A signal given by name (``SIGKILL``, ``kill``, ``TERM``).
    """
    key = name.strip().upper()
    if not key.startswith("SIG"):
        key = "SIG" + key
    try:
        return signal.Signals[key]
    except KeyError:
        raise EnvironmentError("unknown signal {!r}".format(name)) from None


@dataclass(eq=False)
class _Run:
    """
    One spawned process and what hangs off it.
    """

    pid: int
    transport: Any
    started: float
    splitter: LineSplitter
    cgroup: ServerCgroup | None
    oom_before: int
    exited: bool = False
    ended: bool = False
    exit_code: int = 0
    watchdog_killed: bool = False
    sampling: bool = False
    previous: tuple[float, float] | None = None
    sampler: LoopingCall | None = None
    calls: list[IDelayedCall] = field(default_factory=list)
    waiters: list[Deferred[None]] = field(default_factory=list)


class _ServerProtocol(ProcessProtocol):
    """
    Forwards the child's output and exit to the environment.
    """

    run: _Run | None = None

    def __init__(self, env: ProcessEnvironment) -> None:
        self._env = env

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if self.run is not None:
            self.run.splitter.feed(data)

    def processExited(self, reason: Failure) -> None:
        if self.run is not None:
            self._env._exited(self.run, reason)

    def processEnded(self, reason: Failure) -> None:
        if self.run is not None:
            self._env._ended(self.run)


@implementer(IEnvironment)
class ProcessEnvironment(EnvironmentBase):
    """
    ``IEnvironment`` for a child process of the daemon (module docstring).

    :param cgroups: a ``CgroupHost`` shared by all servers, ``None`` to use
        no cgroups, or ``"detect"`` to detect on the first start.
    :param which: finds sandbox helpers for ``run_installer`` (tests).
    """

    kind = "process"
    outlives_daemon = False
    #: Seconds between a mapped stop signal and SIGKILL; seconds to wait
    #: for the exit after SIGKILL; seconds the output may outlive the main
    #: process (tests shorten them).
    signal_grace = SIGNAL_GRACE
    kill_wait = KILL_WAIT
    drain_grace = DRAIN_GRACE
    _log = Logger()

    def __init__(self, settings: EnvironmentSettings, *, reactor: IReactor, config: Config,
                 run_blocking: RunBlocking,
                 cgroups: CgroupSource = "detect",
                 which: Callable[[str], str | None] | None = None,
                 daemon_env: Mapping[str, str] | None = None) -> None:
        super().__init__(settings)
        self._reactor = reactor
        self._config = config
        self._run_blocking = run_blocking
        self._cgroups: CgroupSource = cgroups
        self._which = which or shutil.which
        self._daemon_path = (daemon_env if daemon_env is not None else os.environ).get(
            "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        self._history: deque[str] = deque(maxlen=max(config.system.websocket_log_count, 100))
        self._run: _Run | None = None
        self._starting = False
        self._warned_unlimited = False
        self._host_memory = 0
        # The look for leftovers of a previous daemon run (is_running or the first start):
        # done once, and every start waits for it to finish.
        self._sweep_done: Deferred[None] | None = None

    # -- state and listener ------------------------------------------------

    # -- simple queries ----------------------------------------------------

    def _alive(self) -> _Run | None:
        run = self._run
        return run if run is not None and not run.exited else None

    def exists(self) -> Deferred[bool]:
        """
        Always true: there is nothing to create.
        """
        return succeed(True)

    def is_running(self) -> Deferred[bool]:
        """
        Whether the main process is alive.  The first call (the boot restore) first stops what
        a previous daemon run left of this server (``leftovers``): such a process can be neither
        attached nor controlled, so it is never left running unseen.
        """
        if self._sweep_done is not None or self._alive() is not None or self._starting:
            return succeed(self._alive() is not None)
        return Deferred.fromCoroutine(self._swept())

    async def _swept(self) -> bool:
        """
        Sweep once (or wait for the sweep under way); whether a process runs.
        """
        if self._sweep_done is None:
            self._sweep_done = Deferred.fromCoroutine(self._sweep())
        # The sweep never fails (it logs), so every waiter may await it: its result is None.
        await self._sweep_done
        return self._alive() is not None

    async def _sweep(self) -> None:
        uuid = self._settings.uuid
        try:
            found = await self._run_blocking(stop_leftovers, self._settings.volume,
                                             grace=self.signal_grace / 2)
            host = await self._host()
            if host is not None:
                await self._run_blocking(host.group(uuid).kill)
        except Exception:
            self._log.failure("Looking for leftover processes of {uuid} failed", uuid=uuid)
            found = []
        if found:
            self._log.warn("Server {uuid}: stopped {count} process(es) left by a previous run of "
                           "the daemon ({pids})", uuid=uuid, count=len(found), pids=found)

    def is_attached(self) -> bool:
        """
        Whether a live process's stdin can be written.
        """
        run = self._alive()
        return run is not None and getattr(run.transport, "pid", None) is not None

    def create(self) -> Deferred[None]:
        """
        Nothing to do.
        """
        return succeed(None)

    def prepare_start(self) -> Deferred[None]:
        """
        Nothing to do: every start spawns from the current settings.
        """
        return succeed(None)

    def uptime_ms(self) -> int:
        """
        Milliseconds since the spawn; 0 when not running.
        """
        run = self._alive()
        return 0 if run is None else int((self._reactor.seconds() - run.started) * 1000)

    def read_log(self, lines: int) -> Deferred[list[str]]:
        """
        The last ``lines`` output lines of the current or last run.
        """
        return succeed(list(self._history)[-lines:] if lines > 0 else [])

    # -- start -------------------------------------------------------------

    def start(self) -> Deferred[None]:
        """
        Spawn the server process (lifecycle.md §5 step 5).
        """
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        if self._alive() is not None:
            self.set_state("running")
            return
        if self._starting or self._run is not None:
            raise EnvironmentError("the previous server process is still being started or "
                                   "cleaned up")
        self._starting = True
        try:
            # Never start beside a leftover of a previous daemon run, nor while the
            # sweep that looks for them (it would take the new process for one) runs.
            await self._swept()
            self._history.clear()
            self._exit = (0, False)
            self.set_state("starting")
            try:
                await self._spawn()
            except Exception as e:
                self._log.warn("Start of {uuid} failed: {error}", uuid=self._settings.uuid,
                               error=str(e))
                self.set_state("stopping")
                self.set_state("offline")
                if isinstance(e, EnvironmentError):
                    raise
                raise EnvironmentError("could not start the server process: {}".format(e)) from e
        finally:
            self._starting = False

    async def _host(self) -> CgroupHost | None:
        if callable(self._cgroups):
            self._cgroups = await self._cgroups()
        elif self._cgroups == "detect":
            host = await self._run_blocking(
                detect_cgroups, name=base_name(self._config.system.data))
            if host is not None:
                self._log.info("Process limits use {host}", host=host.describe())
            self._cgroups = host
        source = self._cgroups
        return source if isinstance(source, CgroupHost) else None

    def _prepare(self, settings: EnvironmentSettings,
                 host: CgroupHost | None) -> tuple[str, ServerCgroup | None, int]:
        # Blocking: runs through run_blocking.
        if not os.path.isdir(settings.volume):
            raise EnvironmentError("server volume {} does not exist".format(settings.volume))
        shell = self._config.environment.process.shell
        if not os.access(shell, os.X_OK):
            shell = "/bin/sh"
        if host is None:
            return shell, None, 0
        group = host.group(settings.uuid)
        try:
            group.create()
            group.kill()   # leftovers of a run whose group could not be removed
            problems = group.apply(self._limits())
        except OSError as e:
            self._log.warn("Cannot set up the cgroup of {uuid} ({error}); using the memory "
                           "watchdog", uuid=settings.uuid, error=str(e))
            return shell, None, 0
        for problem in problems:
            self._log.warn("cgroup limit not applied: {problem}", problem=problem)
        return shell, group, group.oom_kills()

    def _limits(self) -> Any:
        return cgroup_limits(self._settings.limits, self._config.docker.overhead,
                             self._config.docker.container_pid_limit)

    async def _spawn(self) -> None:
        settings = self._settings
        options = self._config.environment.process
        host = await self._host()
        shell, group, oom_before = await self._run_blocking(self._prepare, settings, host)
        if settings.mounts:
            self._log.warn("Server {uuid}: custom mounts are not supported by the process "
                           "environment and were skipped", uuid=settings.uuid)
        if group is None and not self._warned_unlimited:
            self._warned_unlimited = True
            self._log.warn("No usable cgroups for {uuid}: CPU, swap and pid limits are not "
                           "enforced; memory only by the watchdog ({watchdog})",
                           uuid=settings.uuid, watchdog=options.memory_watchdog)
        drop = os.geteuid() == 0
        argv = launcher_argv(
            sys.executable, procs=group.procs_files() if group else (),
            uid=settings.uid if drop else -1, gid=settings.gid if drop else -1,
            merge=not options.use_pty, parent_death_signal=signal.SIGHUP,
            no_new_privileges=True,
        ) + [shell, "-c", render_invocation(settings.invocation)]
        env = dict(settings.env)
        env["HOME"] = settings.volume
        env["PATH"] = self._daemon_path
        name, value = marker(settings.volume)
        env[name] = value   # found again at boot should the daemon die (leftovers.py)
        if options.use_pty:
            env.setdefault("TERM", "xterm")
        proto = _ServerProtocol(self)
        try:
            if options.use_pty:
                transport = self._reactor.spawnProcess(
                    proto, argv[0], argv, env=env, path=settings.volume, usePTY=True)
            else:
                transport = self._reactor.spawnProcess(
                    proto, argv[0], argv, env=env, path=settings.volume,
                    childFDs={0: "w", 1: "r", 2: "r"})
        except Exception:
            if group is not None:
                await self._run_blocking(group.remove)
            raise
        run = _Run(pid=transport.pid, transport=transport, started=self._reactor.seconds(),
                   splitter=LineSplitter(self._line), cgroup=group, oom_before=oom_before)
        proto.run = run
        self._run = run
        run.sampler = LoopingCall(self._sample, run)
        run.sampler.clock = self._reactor
        run.sampler.start(1.0, now=False).addErrback(
            lambda f: self._log.failure("stats sampling failed", f))

    # -- output and exit ---------------------------------------------------

    def _line(self, line: str) -> None:
        self._history.append(line)
        self._notify("output", line)

    def _signal(self, run: _Run, sig: int) -> None:
        if run.exited:
            # Only the group is safe to address once the leader is reaped:
            # its id cannot be reused while members remain.
            try:
                os.killpg(run.pid, sig)
            except OSError:
                pass
            return
        try:
            kill_group(run.pid, sig)
        except OSError as e:
            self._log.warn("Cannot signal {pid}: {error}", pid=run.pid, error=str(e))

    def _exited(self, run: _Run, reason: Failure) -> None:
        run.exited = True
        run.exit_code = exit_code(reason)
        self._signal(run, signal.SIGKILL)    # the rest of the tree dies with the leader
        run.calls.append(self._reactor.callLater(self.drain_grace, self._drain_timeout, run))

    def _drain_timeout(self, run: _Run) -> None:
        # Something outside the group still holds the PTY/pipes open.
        if not run.ended:
            run.transport.loseConnection()
            run.calls.append(self._reactor.callLater(1.0, self._ended, run))

    def _ended(self, run: _Run) -> None:
        if run.ended:
            return
        run.ended = True
        run.exited = True
        for call in run.calls:
            if call.active():
                call.cancel()
        if run.sampler is not None and run.sampler.running:
            run.sampler.stop()
        run.splitter.flush()
        Deferred.fromCoroutine(self._teardown(run)).addErrback(
            lambda f: self._log.failure("teardown of {uuid} failed", f, uuid=self._settings.uuid))

    async def _teardown(self, run: _Run) -> None:
        oom = run.watchdog_killed
        try:
            if run.cgroup is not None:
                after = await self._run_blocking(run.cgroup.oom_kills)
                oom = oom or after > run.oom_before
                await self._remove_group(run.cgroup)
        finally:
            self._exit = (run.exit_code, oom)
            self._run = None
            self.set_state("offline")
            release_waiters(run.waiters)

    async def _remove_group(self, group: ServerCgroup) -> None:
        for _ in range(30):
            await self._run_blocking(group.kill)
            if await self._run_blocking(group.remove):
                return
            await deferLater(self._reactor, 0.1)
        self._log.warn("cgroup of {uuid} still busy; left in place", uuid=self._settings.uuid)

    # -- stats -------------------------------------------------------------

    def _sample(self, run: _Run) -> None:
        if run.exited or run.sampling:
            return
        run.sampling = True

        def done(result: tuple[int, float]) -> None:
            run.sampling = False
            self._sampled(run, *result)

        def failed(f: Failure) -> None:
            run.sampling = False
            self._log.failure("stats sample failed", f)

        self._run_blocking(measure_usage, run.pid, run.cgroup).addCallbacks(done, failed)

    def _sampled(self, run: _Run, memory: int, cpu: float) -> None:
        if run.exited:
            return
        now = self._reactor.seconds()
        cpu_absolute = 0.0
        if run.previous is not None:
            wall, before = run.previous
            if now > wall and cpu > before:
                cpu_absolute = round((cpu - before) / (now - wall) * 100, 3)
        run.previous = (now, cpu)
        limit = bounded_memory(self._settings.limits, self._config.docker.overhead)
        if (run.cgroup is None and limit > 0 and memory > limit
                and self._config.environment.process.memory_watchdog):
            self._log.warn("Server {uuid} uses {used} bytes, over its {limit} byte limit: "
                           "killing it", uuid=self._settings.uuid, used=memory, limit=limit)
            run.watchdog_killed = True
            self._signal(run, signal.SIGKILL)
        if not limit:
            if not self._host_memory:
                self._host_memory = int(psutil.virtual_memory().total)
            limit = self._host_memory
        self._notify("stats", {
            "memory_bytes": memory,
            "memory_limit_bytes": limit,
            "cpu_absolute": cpu_absolute,
            "network": {"rx_bytes": 0, "tx_bytes": 0},
            "uptime": int((now - run.started) * 1000),
        })

    # -- stdin, stop, kill -------------------------------------------------

    def send_command(self, text: str) -> Deferred[None]:
        """
        Write ``text`` and a newline to the process; ``NotAttached`` when
        there is none.  The stop command sets ``stopping`` first.
        """
        run = self._alive()
        if run is None or not self.is_attached():
            return fail(NotAttached())
        stop = self._settings.stop
        if stop.type == "command" and text == stop.value:
            self.set_state("stopping")
        run.transport.write(text.encode("utf-8") + b"\n")
        return succeed(None)

    def _settle(self) -> None:
        # Nothing alive: an intentional stop still passes through stopping.
        if self._run is None and self.state != "offline":
            self.set_state("stopping")
            self.set_state("offline")

    def stop(self) -> Deferred[None]:
        """
        Issue the configured stop (lifecycle.md §6 step 1); does not wait.
        """
        run = self._alive()
        if run is None:
            self._settle()
            return succeed(None)
        stop = self._settings.stop
        self.set_state("stopping")
        if stop.type == "command":
            if self.is_attached():
                run.transport.write(stop.value.encode("utf-8") + b"\n")
                return succeed(None)
            self._signal(run, signal.SIGTERM)
        elif stop.type == "signal":
            sig = stop_signal(stop.value)
            self._signal(run, sig)
            if sig != signal.SIGKILL:
                run.calls.append(self._reactor.callLater(self.signal_grace, self._escalate, run))
        else:
            if stop.type != "stop":
                self._log.warn("Server {uuid} has no stop configuration; sending SIGTERM",
                               uuid=self._settings.uuid)
            self._signal(run, signal.SIGTERM)
        return succeed(None)

    def _escalate(self, run: _Run) -> None:
        if not run.exited:
            self._log.info("Server {uuid} ignored its stop signal for {grace} s; killing it",
                           uuid=self._settings.uuid, grace=self.signal_grace)
            self._signal(run, signal.SIGKILL)

    def _wait_end(self, run: _Run, timeout: float) -> Deferred[None]:
        if self._run is not run:
            return succeed(None)

        return exit_waiter(run.waiters, timeout, self._reactor)

    def wait_for_stop(self, timeout: float, kill_on_timeout: bool) -> Deferred[None]:
        """
        ``stop()``, then wait up to ``timeout`` seconds for the process to be
        gone; SIGKILL on timeout when asked, else ``EnvironmentError``.
        """
        return Deferred.fromCoroutine(self._wait_for_stop(timeout, kill_on_timeout))

    async def _wait_for_stop(self, timeout: float, kill_on_timeout: bool) -> None:
        await self.stop()
        run = self._run
        if run is None:
            return
        try:
            await self._wait_end(run, timeout)
            return
        except TimeoutError:
            if not kill_on_timeout:
                raise EnvironmentError("the server process did not stop within {} "
                                       "seconds".format(timeout)) from None
        self._log.info("Server {uuid} did not stop in {timeout} s; killing it",
                       uuid=self._settings.uuid, timeout=timeout)
        await self._kill(run)

    async def _kill(self, run: _Run) -> None:
        self.set_state("stopping")
        self._signal(run, signal.SIGKILL)
        if run.cgroup is not None:
            await self._run_blocking(run.cgroup.kill)
        try:
            await self._wait_end(run, self.kill_wait)
        except TimeoutError:
            raise EnvironmentError("the server process did not exit after SIGKILL") from None

    def terminate(self, signal: str) -> Deferred[None]:
        """
        Send ``signal`` to the process group; sets ``stopping`` first.
        Does not wait for the exit.
        """
        try:
            sig = parse_signal(signal)
        except EnvironmentError:
            return fail()
        run = self._alive()
        if run is None:
            self._settle()
            return succeed(None)
        self.set_state("stopping")
        self._signal(run, sig)
        if sig == _SIGKILL and run.cgroup is not None:
            return self._run_blocking(run.cgroup.kill).addCallback(lambda _: None)
        return succeed(None)

    def destroy(self) -> Deferred[None]:
        """
        Kill the process tree and the installer, wait for the exit and
        remove the cgroup; ends ``offline`` through ``stopping``.
        """
        return Deferred.fromCoroutine(self._destroy())

    async def _destroy(self) -> None:
        if self._installer is not None:
            self._installer.cancel()
        run = self._run
        if run is not None:
            try:
                if run.exited:
                    await self._wait_end(run, self.kill_wait)
                else:
                    await self._kill(run)
            except (EnvironmentError, TimeoutError) as e:
                self._log.warn("Destroy of {uuid}: {error}", uuid=self._settings.uuid,
                               error=str(e))
        self._settle()
        host = self._cgroups
        if isinstance(host, CgroupHost):
            await self._remove_group(host.group(self._settings.uuid))

    def update_limits(self) -> Deferred[None]:
        """
        Rewrite the running process's cgroup limits (the watchdog reads the
        current limit at every sample anyway).  Errors are logged.
        """
        run = self._alive()
        if run is None or run.cgroup is None:
            return succeed(None)

        def report(problems: list[str]) -> None:
            for problem in problems:
                self._log.warn("cgroup limit not applied: {problem}", problem=problem)

        return self._run_blocking(run.cgroup.apply, self._limits()).addCallback(
            report).addErrback(lambda f: self._log.failure("updating limits failed", f))

    # -- installer ---------------------------------------------------------

    def run_installer(self, script: str, image: str, entrypoint: str,
                      env: tuple[tuple[str, str], ...],
                      on_line: Callable[[str], None]) -> Deferred[InstallResult]:
        """
        Run an egg install script on this host in a mount-namespace sandbox
        (see ``sandbox``); cancelling kills it and cleans up.
        """
        settings = self._settings
        job = InstallJob(
            uuid=settings.uuid, volume=settings.volume,
            tmp_directory=self._config.system.tmp_directory, script=script, image=image,
            entrypoint=entrypoint, env=tuple(env),
            allow_unsandboxed=self._config.environment.process.allow_unsandboxed_install,
            daemon_path=self._daemon_path, python=sys.executable,
            uid=settings.uid, gid=settings.gid,
            network=self._config.environment.process.install_network)
        d = Deferred.fromCoroutine(run_install(
            self._reactor, self._run_blocking, job, on_line,
            which=self._which, is_root=os.geteuid() == 0))
        return self._track_installer(d)
