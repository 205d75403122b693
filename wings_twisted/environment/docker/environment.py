"""
``DockerEnvironment``: one server's container, driven through the Engine
API (lifecycle.md §5, §6, §13, §19–§21.3).

Start (§5 step 5): inspect; a running container is adopted (attached, state
``running``) instead of recreated; otherwise ``starting``, the node network,
the image (pulled per ``images``, with the daemon's "Pulling…" lines and
the progress as install output), the old container removed, a fresh one
created from the current settings (``spec``), attached **before** it is
started (``attach``), started, and its stats stream opened.  (One shortcut: when the stopped
container is the one this daemon created last and the document and image
would be identical, it is started again instead of being removed and
recreated — the same container — with its log truncated as upstream does
at every start.)  Any failure
after ``starting`` goes ``stopping`` → ``offline`` (no crash handling), is
printed on the console as ``Server start failed: <reason>`` and fails the
start with an ``EnvironmentError`` saying why.

The end of the attach stream is the end of a run: the daemon waits for the
container to be not running, inspects it for the exit code and goes
``offline`` (a drop from ``starting``/``running`` is a crash for the server
layer).  The cases around it:

* the container was removed behind the daemon's back: exit code 1, not OOM
  (§11), and a console line saying so;
* the stream dropped but the container still runs: attach again;
* the engine is gone (no answer): ``stopping`` → ``offline`` with a console
  line and a warning, no crash restart (a restart could only fail); the next
  start adopts the container if it survived;
* OOM: ``State.OOMKilled`` when the engine sets it (Docker); podman never
  does, so an exit by SIGKILL (137) that the daemon did not send, of a
  container with a memory limit and the OOM killer enabled, also counts as
  killed for memory.  (A ``kill -9`` by hand from the host is
  indistinguishable; that is the price.)

Stop (§6): the stop command on stdin when attached; a stop signal mapped as
Pelican does (``^C`` → SIGINT, …) followed by SIGKILL after 10 s; a native
stop (the image's ``StopSignal``, see ``engine``).  ``wait_for_stop`` waits for
the end of the run, killing on timeout when asked.  Deleting (``destroy``)
force-removes the container; a daemon shutdown (``detach``) only lets go of
the streams: containers outlive the daemon and are adopted at the next boot.

The module is long because ``DockerEnvironment`` is one cohesive state
machine around a single container run: starting, the streams, stopping and
the end of a run share the same run record, and the pure parts (documents,
formulas, pulls, the hijack, the engine's quirks) live in their own modules.
"""

from __future__ import annotations

import json
import signal as signals
from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.internet.defer import Deferred, TimeoutError, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from zope.interface import implementer

from ...blocking import RunBlocking
from .. import (EnvironmentError, EnvironmentSettings, IEnvironment,
                InstallResult, NotAttached)
from ..base import EnvironmentBase, exit_waiter, release_waiters
from ..lines import LineSplitter
from ..process import parse_signal, stop_signal
from . import installer, stats
from .attach import AttachStream, attach
from .client import Stream
from .engine import Engine, parse_timestamp
from .errors import DockerError
from .images import ensure_image
from .network import ensure_outgoing_network
from .spec import resources, server_container

PULLING = "Pulling Docker container image, this could take a few minutes to complete..."
PULLED = "Finished pulling Docker container image"
START_FAILED = "Server start failed: {}"
ENGINE_LOST = ("Lost the connection to the container engine; the server is shown offline until "
               "it can be reached again.")
REMOVED = "The server's container was removed outside of the daemon."
#: Seconds for attach + start together (§5 step 5.5).
START_TIMEOUT = 30.0
#: Seconds between a mapped stop signal and SIGKILL (Pelican).
SIGNAL_GRACE = 10.0
#: Seconds to wait for the exit after SIGKILL.
KILL_WAIT = 10.0
#: Seconds to wait for "not running" after the attach stream ended.
EXIT_WAIT = 10.0
#: Re-attachments to a container whose stream dropped while it ran.
MAX_REATTACH = 3


@dataclass(eq=False)
class _Run:
    """
    One attached container run.
    """

    splitter: LineSplitter
    stream: AttachStream | None = None
    stats: Stream | None = None
    started: float = 0.0
    ended: bool = False
    #: The daemon let go on purpose (shutdown, destroy): not an exit.
    detached: bool = False
    #: The daemon sent a signal that ends the process.
    signalled: bool = False
    reattached: int = 0
    calls: list[IDelayedCall] = field(default_factory=list)
    waiters: list[Deferred[None]] = field(default_factory=list)


@implementer(IEnvironment)
class DockerEnvironment(EnvironmentBase):
    """
    ``IEnvironment`` for one server container (module docstring).
    """

    kind = "docker"
    outlives_daemon = True
    signal_grace = SIGNAL_GRACE
    kill_wait = KILL_WAIT
    _log = Logger()

    def __init__(self, settings: EnvironmentSettings, *, engine: Engine,
                 run_blocking: RunBlocking) -> None:
        super().__init__(settings)
        self._engine = engine
        self._client = engine.client
        self._clock = engine.client.clock
        self._run_blocking = run_blocking
        self._run: _Run | None = None
        self._starting = False
        self._tty = True
        #: (container id, create document, image id) of the last container made.
        self._made: tuple[str, str, str] | None = None

    # -- state and listener ------------------------------------------------

    @property
    def name(self) -> str:
        """
        The container's name: the server's UUID.
        """
        return self._settings.uuid

    def _error(self, error: DockerError) -> EnvironmentError:
        return EnvironmentError(error.message)

    # -- queries -----------------------------------------------------------

    def _alive(self) -> _Run | None:
        run = self._run
        return run if run is not None and not run.ended else None

    async def _inspect(self) -> dict[str, Any] | None:
        try:
            return await self._engine.inspect(self.name)
        except DockerError as e:
            raise self._error(e) from None

    def exists(self) -> Deferred[bool]:
        """
        Whether the container exists.
        """
        async def exists() -> bool:
            return await self._inspect() is not None
        return Deferred.fromCoroutine(exists())

    def is_running(self) -> Deferred[bool]:
        """
        Whether the container runs (``EnvironmentError`` without an engine).
        """
        return Deferred.fromCoroutine(self._is_running())

    async def _is_running(self) -> bool:
        info = await self._inspect()
        return bool(info and info.get("State", {}).get("Running"))

    def is_attached(self) -> bool:
        """
        Whether the container's stdin is connected.
        """
        run = self._alive()
        return run is not None and run.stream is not None and run.stream.open

    def uptime_ms(self) -> int:
        """
        Milliseconds since the container started; 0 when not running.
        """
        run = self._alive()
        if run is None or not run.started:
            return 0
        return max(int((self._clock.seconds() - run.started) * 1000), 0)

    def read_log(self, lines: int) -> Deferred[list[str]]:
        """
        The last ``lines`` lines of the container's log.
        """
        async def read() -> list[str]:
            if lines <= 0:
                return []
            try:
                data = await self._engine.logs(self.name, lines, tty=self._tty)
            except DockerError as e:
                raise self._error(e) from None
            found: list[str] = []
            splitter = LineSplitter(found.append)
            splitter.feed(data)
            splitter.flush()
            return found[-lines:]
        return Deferred.fromCoroutine(read())

    # -- create and start --------------------------------------------------

    def create(self) -> Deferred[None]:
        """
        Create the container when it does not exist (pulls the image).
        """
        async def create() -> None:
            if await self._inspect() is None:
                await self._guard(self._recreate())
        return Deferred.fromCoroutine(create())

    def prepare_start(self) -> Deferred[None]:
        """
        Rebuild the container from the current settings.
        """
        return Deferred.fromCoroutine(self._guard(self._recreate()))

    async def _guard(self, work: Any) -> None:
        try:
            await work
        except DockerError as e:
            raise self._error(e) from None

    async def _recreate(self, existing: dict[str, Any] | None = None) -> None:
        settings = self._settings
        config = self._engine.config()
        view = await self._engine.network()
        allocations = settings.allocations
        if allocations.get("force_outgoing_ip"):
            default = allocations.get("default")
            ip = str(default.get("ip") or "") if isinstance(default, dict) else ""
            if ip:
                mode = await ensure_outgoing_network(self._client, ip)
                view = type(view)(view.interface, view.ispn, mode)
        self._notify("notice", PULLING)
        try:
            image = await ensure_image(self._client, settings.image, config,
                                       lambda line: self._notify("progress", line))
        finally:
            self._notify("notice", PULLED)
        body, skipped = server_container(settings, config, view)
        for source in skipped:
            self._log.warn("Server {uuid}: mount {source} is not under allowed_mounts; skipped",
                           uuid=self.name, source=source)
        made = (json.dumps(body, sort_keys=True), image)
        if existing is not None and image and await self._reusable(existing, made):
            return
        await self._engine.remove(self.name, force=True)
        await self._engine.create(self.name, body)
        created = await self._engine.inspect(self.name)
        self._made = (str((created or {}).get("Id") or ""),) + made

    async def _reusable(self, existing: dict[str, Any], made: tuple[str, str]) -> bool:
        """
        Whether the stopped container this daemon created last is exactly
        what would be created now (same document, same image): then it is
        started again instead of being removed and recreated, its log
        truncated first as upstream does at every start (§5 step 5.2).
        """
        if self._made is None or (str(existing.get("Id") or ""),) + made != self._made:
            return False
        path = existing.get("LogPath")
        if not isinstance(path, str) or not path:
            return False
        try:
            await self._run_blocking(_truncate, path)
        except OSError:
            return False
        return True

    def start(self) -> Deferred[None]:
        """
        Start the server (module docstring).
        """
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        if self._starting:
            raise EnvironmentError("the server is already being started")
        self._starting = True
        try:
            try:
                info = await self._engine.inspect(self.name)
                if info is not None and info.get("State", {}).get("Running"):
                    if self._alive() is None:
                        await self._attach(info)
                    self.set_state("running")
                    return
            except DockerError as e:
                self._notify("notice", START_FAILED.format(e.message))
                raise self._error(e) from None
            self._exit = (0, False)
            self.set_state("starting")
            try:
                await self._recreate(info)
                await self._attach_and_start()
            except Exception as e:
                reason = e.message if isinstance(e, DockerError) else str(e) or repr(e)
                self._log.warn("Start of {uuid} failed: {error}", uuid=self.name, error=reason)
                self._let_go()
                self._notify("notice", START_FAILED.format(reason))
                self.set_state("stopping")
                self.set_state("offline")
                raise EnvironmentError(reason) from None
        finally:
            self._starting = False

    async def _attach(self, info: dict[str, Any] | None) -> _Run:
        self._tty = bool((info or {}).get("Config", {}).get("Tty", True))
        run = _Run(splitter=LineSplitter(lambda line: self._notify("output", line)))
        run.stream = await attach(self._client, self.name, run.splitter.feed, tty=self._tty,
                                  timeout=START_TIMEOUT)
        self._run = run
        run.stream.ended.addCallback(lambda _: self._stream_ended(run))
        if info is not None and info.get("State", {}).get("Running"):
            self._watch(run, info)
        return run

    async def _attach_and_start(self) -> None:
        deadline = self._clock.seconds() + START_TIMEOUT
        run = await self._attach(None)
        left = max(deadline - self._clock.seconds(), 1.0)
        await self._engine.start(self.name, timeout=left)
        info = await self._engine.inspect(self.name)
        if not run.ended:
            self._watch(run, info or {})

    def _watch(self, run: _Run, info: dict[str, Any]) -> None:
        started = parse_timestamp(info.get("State", {}).get("StartedAt"))
        run.started = started if started is not None else self._clock.seconds()
        # In the background: an engine may hold the stream's head until its
        # first sample (podman: up to 5 s), and the start is done already.
        Deferred.fromCoroutine(self._open_stats(run)).addErrback(
            lambda f: self._log.failure("Stats of {uuid} failed", f, uuid=self.name))

    async def _open_stats(self, run: _Run) -> None:
        try:
            stream = await self._client.stream(
                "GET", "/containers/{}/stats".format(self.name),
                lambda document: self._sampled(run, document), params={"stream": 1})
        except DockerError as e:
            if not (run.ended or run.detached):
                self._log.warn("No stats for {uuid}: {error}", uuid=self.name, error=e.message)
            return
        run.stats = stream
        if run.ended or run.detached:
            stream.stop()
        stream.done.addErrback(lambda f: self._log.info(
            "Stats stream of {uuid} ended: {error}", uuid=self.name, error=f.getErrorMessage()))

    def _sampled(self, run: _Run, document: Any) -> None:
        if run.ended or run.detached or not isinstance(document, dict):
            return
        self._notify("stats", stats.sample(document, uptime_ms=self.uptime_ms()))

    # -- the end of a run --------------------------------------------------

    def _stream_ended(self, run: _Run) -> None:
        if run.detached or run.ended:
            return
        run.splitter.flush()
        Deferred.fromCoroutine(self._after_stream(run)).addErrback(
            lambda f: self._log.failure("Handling the exit of {uuid} failed", f, uuid=self.name))

    async def _after_stream(self, run: _Run) -> None:
        try:
            stopped = await self._engine.wait_stopped(self.name, EXIT_WAIT)
            info = await self._engine.inspect(self.name) if stopped else None
        except DockerError as e:
            self._log.warn("Lost the engine at {where} while {uuid} ran: {error}",
                           where=self._engine.where, uuid=self.name, error=e.message)
            self._notify("notice", ENGINE_LOST)
            self._end(run, (1, False), intentional=True)
            return
        if run.detached:
            return
        if not stopped:
            if run.reattached < MAX_REATTACH:
                self._log.info("The attach stream of {uuid} dropped while it runs; attaching "
                               "again", uuid=self.name)
                await self._reattach(run)
                return
            self._log.warn("The attach stream of {uuid} keeps dropping while it runs; letting "
                           "go of it", uuid=self.name)
            self._notify("notice", ENGINE_LOST)
            self._end(run, (1, False), intentional=True)
            return
        if info is None:
            self._log.warn("The container of {uuid} was removed behind the daemon's back",
                           uuid=self.name)
            self._notify("notice", REMOVED)
            self._end(run, (1, False))
            return
        state = info.get("State", {})
        code = state.get("ExitCode")
        code = code if isinstance(code, int) and not isinstance(code, bool) else 1
        oom = bool(state.get("OOMKilled")) or (
            code == 128 + signals.SIGKILL and not run.signalled
            and bool(info.get("HostConfig", {}).get("Memory"))
            and not info.get("HostConfig", {}).get("OomKillDisable"))
        self._end(run, (code, oom))

    async def _reattach(self, run: _Run) -> None:
        try:
            stream = await attach(self._client, self.name, run.splitter.feed, tty=self._tty,
                                  timeout=START_TIMEOUT)
        except DockerError as e:
            self._log.warn("Re-attaching to {uuid} failed: {error}", uuid=self.name,
                           error=e.message)
            self._notify("notice", ENGINE_LOST)
            self._end(run, (1, False), intentional=True)
            return
        run.reattached += 1
        run.stream = stream
        stream.ended.addCallback(lambda _: self._stream_ended(run))

    def _end(self, run: _Run, exit: tuple[int, bool], *, intentional: bool = False) -> None:
        if run.ended:
            return
        run.ended = True
        self._close_streams(run)
        self._exit = exit
        if self._run is run:
            self._run = None
        if intentional and self.state != "offline":
            self.set_state("stopping")
        self.set_state("offline")
        release_waiters(run.waiters)

    def _close_streams(self, run: _Run) -> None:
        for call in run.calls:
            if call.active():
                call.cancel()
        if run.stats is not None:
            run.stats.stop()
        if run.stream is not None:
            run.stream.close()

    def _let_go(self) -> None:
        run = self._run
        if run is not None:
            run.detached = True
            run.ended = True
            self._close_streams(run)
            self._run = None

    def detach(self) -> None:
        """
        Let go of the container's streams without changing anything (the
        daemon shuts down; the container keeps running).
        """
        self._let_go()

    # -- stdin, stop, kill -------------------------------------------------

    def send_command(self, text: str) -> Deferred[None]:
        """
        Write ``text`` and a newline to the container's stdin; the stop
        command sets ``stopping`` first.
        """
        run = self._alive()
        if run is None or run.stream is None or not run.stream.open:
            return Deferred.fromCoroutine(self._not_attached())
        stop = self._settings.stop
        if stop.type == "command" and text == stop.value:
            self.set_state("stopping")
        run.stream.write(text.encode("utf-8") + b"\n")
        return succeed(None)

    async def _not_attached(self) -> None:
        raise NotAttached()

    def _settle(self) -> None:
        if self._alive() is None and self.state != "offline":
            self.set_state("stopping")
            self.set_state("offline")

    async def _signal(self, name: str) -> bool:
        run = self._alive()
        if run is not None:
            run.signalled = True
        try:
            return await self._engine.kill(self.name, name)
        except DockerError as e:
            raise self._error(e) from None

    def stop(self) -> Deferred[None]:
        """
        Issue the configured stop (lifecycle.md §6 step 1); does not wait.
        """
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        run = self._alive()
        if run is None and not await self._is_running():
            self._settle()
            return
        stop = self._settings.stop
        self.set_state("stopping")
        if stop.type == "command" and run is not None and self.is_attached():
            assert run.stream is not None
            run.stream.write(stop.value.encode("utf-8") + b"\n")
        elif stop.type == "signal":
            sig = stop_signal(stop.value)
            await self._signal(sig.name)
            if sig != signals.SIGKILL and run is not None:
                run.calls.append(self._clock.callLater(self.signal_grace, self._escalate, run))
        else:
            if stop.type not in ("stop", "command"):
                self._log.warn("Server {uuid} has no stop configuration; using the image's stop "
                               "signal", uuid=self.name)
            info = await self._inspect()
            await self._signal(str((info or {}).get("Config", {}).get("StopSignal")
                                   or "SIGTERM"))

    def _escalate(self, run: _Run) -> None:
        if not run.ended:
            self._log.info("Server {uuid} ignored its stop signal for {grace} s; killing it",
                           uuid=self.name, grace=self.signal_grace)
            Deferred.fromCoroutine(self._signal("SIGKILL")).addErrback(
                lambda f: self._log.warn("Killing {uuid} failed: {error}", uuid=self.name,
                                         error=f.getErrorMessage()))

    async def _wait_end(self, timeout: float) -> None:
        run = self._alive()
        if run is None:
            if not await self._engine.wait_stopped(self.name, timeout):
                raise TimeoutError()
            self._settle()
            return

        await exit_waiter(run.waiters, timeout, self._clock)

    def wait_for_stop(self, timeout: float, kill_on_timeout: bool) -> Deferred[None]:
        """
        ``stop()``, then wait up to ``timeout`` seconds for the container to
        stop; SIGKILL on timeout when asked, else ``EnvironmentError``.
        """
        return Deferred.fromCoroutine(self._wait_for_stop(timeout, kill_on_timeout))

    async def _wait_for_stop(self, timeout: float, kill_on_timeout: bool) -> None:
        await self._stop()
        try:
            await self._wait_end(timeout)
            return
        except (TimeoutError, DockerError):
            if not kill_on_timeout:
                raise EnvironmentError("the server did not stop within {:g} seconds".format(
                    timeout)) from None
        self._log.info("Server {uuid} did not stop in {timeout} s; killing it", uuid=self.name,
                       timeout=timeout)
        self.set_state("stopping")
        await self._signal("SIGKILL")
        try:
            await self._wait_end(self.kill_wait)
        except (TimeoutError, DockerError):
            raise EnvironmentError("the server did not exit after SIGKILL") from None

    def terminate(self, signal: str) -> Deferred[None]:
        """
        Send ``signal`` to the container; sets ``stopping`` first.  Does not
        wait for the exit.
        """
        return Deferred.fromCoroutine(self._terminate(signal))

    async def _terminate(self, signal: str) -> None:
        sig = parse_signal(signal)
        if self._alive() is None and not await self._is_running():
            self._settle()
            return
        self.set_state("stopping")
        if not await self._signal(sig.name):
            self._settle()
        elif self._alive() is None:
            # Not attached (nothing will see the exit): ask the engine.
            try:
                await self._engine.wait_stopped(self.name, self.kill_wait)
            except DockerError as e:
                raise self._error(e) from None
            self._settle()

    def destroy(self) -> Deferred[None]:
        """
        Force-remove the container (and an installer); ends ``offline``
        through ``stopping``.
        """
        return Deferred.fromCoroutine(self._destroy())

    async def _destroy(self) -> None:
        if self._installer is not None:
            self._installer.cancel()
        self._let_go()
        if self.state != "offline":
            self.set_state("stopping")
        try:
            await self._engine.remove(self.name, force=True)
        except DockerError as e:
            self._log.warn("Removing the container of {uuid} failed: {error}", uuid=self.name,
                           error=e.message)
        finally:
            self.set_state("offline")

    def update_limits(self) -> Deferred[None]:
        """
        Apply the current limits to the running container; errors logged.
        """
        async def update() -> None:
            if self._alive() is None:
                return
            try:
                await self._engine.update(self.name, resources(self._settings.limits,
                                                               self._engine.config()))
            except DockerError as e:
                self._log.warn("Updating the limits of {uuid} failed: {error}", uuid=self.name,
                               error=e.message)
        return Deferred.fromCoroutine(update())

    # -- installer ---------------------------------------------------------

    def run_installer(self, script: str, image: str, entrypoint: str,
                      env: tuple[tuple[str, str], ...],
                      on_line: Callable[[str], None]) -> Deferred[InstallResult]:
        """
        Run the install script in ``<uuid>_installer`` (``installer``).
        """
        d = Deferred.fromCoroutine(installer.run(
            self._engine, self._settings, self._run_blocking, script=script, image=image,
            entrypoint=entrypoint, env=env, on_line=on_line,
            on_progress=lambda line: self._notify("progress", line)))
        return self._track_installer(d)


def _truncate(path: str) -> None:
    """
    Empty a container's log file (blocking).
    """
    with open(path, "r+b") as f:
        f.truncate(0)
