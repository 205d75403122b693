"""
The environment seam (lifecycle.md §19, §21.1–§21.2): the one interface
through which the server layer runs a game process.

``IEnvironment`` is implemented by ``process.ProcessEnvironment`` (a child
process on a PTY, ``environment.driver: process``) and by
``docker.DockerEnvironment`` (a container over the Docker Engine API,
``environment.driver: docker``), both on ``base.EnvironmentBase`` (the
tracked state, listener, settings, last exit and installer in flight, kept
the same way by both).  Nothing here names containers, images
being pulled or the Engine API: the server layer (state handling, crash detection,
throttling, done-strings, disk checks, stats publishing) is written once
against this interface.

Division of work:

* the environment owns the **tracked state** (``state``/``set_state``, which
  notifies listeners only on a change) because only it knows when a process
  really started or exited; it sets ``starting`` before spawning, ``offline``
  when the process is gone, and ``stopping`` when it issues a stop;
* it turns raw output into lines with ``console.LineSplitter``, keeps the
  replay history (``read_log``) and hands each line to the listener;
* it samples resource usage about once a second while the process runs;
* what the operator should read on the console about the environment itself
  (an image being fetched, why a start failed, a lost engine) it hands over
  as ``notice`` lines, and preparation progress as ``progress`` lines;
* everything else (what a state change means, crash restarts, throttling,
  done-string detection) belongs to the server layer, the listener.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

STATES = ("offline", "starting", "running", "stopping")


class EnvironmentError(Exception):
    """
    The environment could not do what was asked; ``str()`` is shown to admins.
    """


class NotAttached(EnvironmentError):
    """
    No process stdin to write to.
    """

    def __init__(self, message: str = "environment not attached to the server process") -> None:
        super().__init__(message)


@dataclass(frozen=True)
class StopConfig:
    """
    ``process_configuration.stop``: ``type`` is ``command``, ``signal`` or
    ``stop``; ``value`` the command text or signal name.
    """

    type: str = ""
    value: str = ""


@dataclass(frozen=True)
class Limits:
    """
    ``settings.build`` as numbers (MB, percent of one core, ...).
    """

    memory_limit: int = 0
    swap: int = 0
    io_weight: int = 500
    cpu_limit: int = 0
    threads: str = ""
    disk_space: int = 0
    oom_disabled: bool = False
    pids_limit: int = 0

    def memory_bytes(self, multiplier: float = 1.0) -> int:
        """
        The bounded memory limit in bytes (lifecycle.md §20.1 formula:
        decimal megabytes times the overhead multiplier); 0 = unlimited.
        """
        if self.memory_limit <= 0:
            return 0
        return int(round(self.memory_limit * multiplier * 1_000_000))


@dataclass(frozen=True)
class EnvironmentSettings:
    """
    What an environment needs to run one server, rebuilt from the panel's
    settings on every sync (lifecycle.md §1.7 step 3).
    """

    uuid: str
    volume: str
    invocation: str = ""
    image: str = ""
    env: tuple[tuple[str, str], ...] = ()
    limits: Limits = field(default_factory=Limits)
    stop: StopConfig = field(default_factory=StopConfig)
    uid: int = -1
    gid: int = -1
    mounts: tuple[Mapping[str, Any], ...] = ()
    allocations: Mapping[str, Any] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class InstallResult:
    """
    The outcome of ``run_installer``: ``completed`` is "the pipeline ran"
    (lifecycle.md §16.2), ``exit_code`` the script's status when known.
    """

    completed: bool
    exit_code: int | None = None
    error: str = ""


class IEnvironmentListener(Interface):
    """
    The server layer, as the environment sees it.  Every call is made on
    the reactor thread.
    """

    def state_changed(old: str, new: str) -> None:
        """
        The tracked state changed from ``old`` to ``new``.
        """

    def output(line: str) -> None:
        """
        One console line of process output (already split and decoded).
        """

    def stats(sample: Mapping[str, Any]) -> None:
        """
        A resource sample: ``memory_bytes``, ``memory_limit_bytes``,
        ``cpu_absolute``, ``network`` (``rx_bytes``/``tx_bytes``), ``uptime``
        (ms).
        """

    def notice(text: str) -> None:
        """
        A line from the daemon about the environment, for the console
        (e.g. ``Pulling Docker container image, ...``, why a start failed).
        """

    def progress(line: str) -> None:
        """
        One line of preparation progress (an image being pulled), shown to
        admins with the install output.
        """


class IEnvironment(Interface):
    """
    Runs one server's process.  I/O methods return Deferreds.
    """

    kind = Attribute("'process' or 'docker'")
    outlives_daemon = Attribute(
        "Whether the process keeps running when the daemon stops (containers do, and are "
        "adopted at the next boot); the daemon stops the others at shutdown")
    state = Attribute("The tracked state, one of STATES")

    def set_state(state: str) -> None:
        """
        Set the tracked state; notify the listener only on a change.
        ``ValueError`` for an unknown state.
        """

    def set_listener(listener: IEnvironmentListener) -> None:
        """
        Where state changes, lines and samples go.
        """

    def apply_settings(settings: EnvironmentSettings) -> None:
        """
        Adopt new settings; they take effect on the next start (limits also
        through ``update_limits``).
        """

    def exists() -> Deferred[bool]:
        """
        Deferred[bool]: something to start exists (a created container; a
        process environment always exists).
        """

    def is_running() -> Deferred[bool]:
        """
        Deferred[bool]: the process is alive.
        """

    def create() -> Deferred[None]:
        """
        Deferred[None]: prepare whatever ``start`` needs (idempotent).
        """

    def prepare_start() -> Deferred[None]:
        """
        Deferred[None]: rebuild from current settings before a start
        (upstream ``OnBeforeStart``).
        """

    def start() -> Deferred[None]:
        """
        Deferred[None]: start the process (lifecycle.md §5 step 5): if it is
        already running set ``running`` and attach; otherwise set
        ``starting``, attach before starting, start.  Any failure after
        ``starting`` sets ``stopping`` then ``offline`` and fails the
        Deferred.
        """

    def is_attached() -> bool:
        """
        Whether stdin/stdout of a live process are connected.
        """

    def send_command(text: str) -> Deferred[None]:
        """
        Deferred[None]: write ``text + "\\n"`` to stdin; ``NotAttached``
        when there is no process.  Sets ``stopping`` first when ``text`` is
        the stop command (stop type ``command``).
        """

    def stop() -> Deferred[None]:
        """
        Deferred[None]: issue the configured stop (lifecycle.md §6 step 1)
        and return without waiting for the exit.
        """

    def wait_for_stop(timeout: float, kill_on_timeout: bool) -> Deferred[None]:
        """
        Deferred[None]: ``stop()``, then wait up to ``timeout`` seconds for
        the exit; kill on timeout when asked, else fail with
        ``EnvironmentError``.
        """

    def terminate(signal: str) -> Deferred[None]:
        """
        Deferred[None]: send ``signal`` (a name such as ``SIGKILL``) to the
        process; sets ``stopping`` first.
        """

    def exit_state() -> tuple[int, bool]:
        """
        ``(exit_code, oom_killed)`` of the last run; killed by signal N is
        128+N.
        """

    def uptime_ms() -> int:
        """
        Milliseconds since the process started; 0 when not running.
        """

    def read_log(lines: int) -> Deferred[list[str]]:
        """
        Deferred[list[str]]: the last ``lines`` lines of process output,
        oldest first.
        """

    def update_limits() -> Deferred[None]:
        """
        Deferred[None]: apply the current limits to the live process where
        the environment can (errors are logged, not raised).
        """

    def destroy() -> Deferred[None]:
        """
        Deferred[None]: kill the process and remove what ``create`` made;
        the state ends ``offline`` without crash handling (``stopping``
        first).
        """

    def run_installer(script: str, image: str, entrypoint: str,
                      env: tuple[tuple[str, str], ...],
                      on_line: Callable[[str], None]) -> Deferred[InstallResult]:
        """
        Deferred[InstallResult]: run an egg install script with the volume
        at ``/mnt/server`` and the script at ``/mnt/install/install.sh``,
        each output line to ``on_line``.
        """
