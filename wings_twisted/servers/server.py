"""
The server model: one game server on this node as the Panel configured it,
and the parts every feature shares (its volume, occupancy, event bus,
console sockets, power lock, environment and background work).

The Panel's configuration document (panel.md §3.3) is kept as received
(``settings`` and ``process_configuration``) and read through typed
accessors; the suspension flag, the egg denylist and the disk limit are
pushed into the server's sandboxed ``Volume`` whenever it changes, and the
rest into its environment (``environment_settings``).

This module knows no behaviour beyond its own data: what a state change, a
console line or a sample means is ``runtime.Runtime`` (the environment's
listener); power actions, sync and deletion are ``lifecycle``; installs are
``install``.  It imports neither of them, nor the node: what it needs from
the daemon is the ``ServerContext``.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Callable, Coroutine, Mapping, Protocol

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..environment import EnvironmentSettings, IEnvironment, Limits, NotAttached, StopConfig
from ..fs import Volume
from .console import ConsoleThrottle, DoneMatcher, daemon_line, environment_variables
from .context import ServerContext
from .events import CONSOLE_WINDOW, EventBus
from .occupancy import Occupancy
from .power import PowerLock

log = Logger()

UUID_V4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
CANONICAL_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

MIB = 1024 * 1024

class ServerConfigError(ValueError):
    """
    A server entry from the panel that cannot be used.
    """


#: Largest magnitude accepted for a number from the panel (JSON's safe
#: integer range); anything larger is garbage, not a limit.
MAX_PANEL_NUMBER = 2 ** 53


def as_int(value: Any, default: int = 0) -> int:
    """
    A panel number as an int (booleans, nulls and non-numbers give
    ``default``); a non-finite number (``1e309``, ``NaN``) or one beyond
    ``MAX_PANEL_NUMBER`` is a ``ServerConfigError`` (a panel failure), never
    an ``OverflowError``.
    """
    if isinstance(value, bool) or value is None:
        return default
    if isinstance(value, float) and not math.isfinite(value):
        raise ServerConfigError("the panel sent a non-finite number ({!r})".format(value))
    if isinstance(value, (int, float)):
        number = int(value)
    else:
        text = str(value).strip()
        if len(text) > 20:
            return default
        try:
            number = int(text)
        except ValueError:
            return default
    if abs(number) > MAX_PANEL_NUMBER:
        raise ServerConfigError("the panel sent an out-of-range number ({!r})".format(value))
    return number


def check_numbers(settings: Mapping[str, Any]) -> None:
    """
    Read every number of a server document the daemon uses, so that a bad
    one is refused (``ServerConfigError``) before anything is applied.
    """
    build = as_mapping(settings.get("build"))
    for key in ("memory_limit", "swap", "io_weight", "cpu_limit", "disk_space"):
        as_int(build.get(key))
    port = as_int(as_mapping(as_mapping(settings.get("allocations")).get("default")).get("port"))
    if not 0 <= port <= 65535:
        raise ServerConfigError("the panel sent an invalid port ({!r})".format(port))


def as_mapping(value: Any) -> Mapping[str, Any]:
    """
    ``value`` if it is a mapping, else an empty one.
    """
    return value if isinstance(value, Mapping) else {}


class ConsoleSocket(Protocol):
    """
    A console websocket as the server keeps it (``websocket.session.Session``).
    """

    @property
    def user_uuid(self) -> str | None: ...

    def close_socket(self, code: int, reason: str) -> None: ...


class FileSession(Protocol):
    """
    An open SFTP connection as the server keeps it (``sftp.session.SftpUser``).
    """

    @property
    def user_uuid(self) -> str: ...

    def end(self, reason: str) -> None: ...


class Server:
    """
    One server registered on this node.  ``environment`` is set by
    ``build.build_server`` (``None`` when no environment of the configured
    driver can run here).
    """

    def __init__(self, uuid: str, settings: Mapping[str, Any],
                 process_configuration: Mapping[str, Any], volume: Volume, *,
                 context: ServerContext) -> None:
        self.uuid = uuid
        self.volume = volume
        self.context = context
        self.settings: dict[str, Any] = {}
        self.process_configuration: dict[str, Any] = {}
        self.occupancy = Occupancy()
        # Console lines reach the sockets in batches of one window (events.Batch).
        self.events = EventBus(lambda flush: context.clock.callLater(CONSOLE_WINDOW, flush))
        self.sockets: set[ConsoleSocket] = set()
        # SFTP connections, ended on suspension, deletion and deauthorisation (sftp.md §4).
        self.file_sessions: set[FileSession] = set()
        self.crashed_at: float | None = None
        self.done = DoneMatcher(())
        self.environment: IEnvironment | None = None
        # Background work to cancel when the server is deleted (lifecycle.md §1.1).
        self.tasks: set[Deferred[Any]] = set()
        self.power_lock = PowerLock(context.clock)
        throttles = context.config.throttles
        self.throttle = ConsoleThrottle(
            context.clock.seconds, enabled=throttles.enabled, lines=throttles.lines,
            interval=throttles.line_reset_interval / 1000.0)
        self._walking = False
        self._sample = _zero_sample()
        self.update(settings, process_configuration)

    # -- configuration ---------------------------------------------------------------------------

    def update(self, settings: Mapping[str, Any], process_configuration: Mapping[str, Any]) -> None:
        """
        Replace the configuration with a fresh copy from the panel.
        """
        if not isinstance(settings, Mapping):
            raise ServerConfigError("settings must be an object")
        if not isinstance(process_configuration, Mapping):
            raise ServerConfigError("process_configuration must be an object")
        check_numbers(settings)
        self.settings = dict(settings)
        self.process_configuration = dict(process_configuration)
        self.volume.set_denylist(self.denylist)
        self.volume.set_disk_limit(self.disk_limit_bytes)
        startup = as_mapping(self.process_configuration.get("startup"))
        done = startup.get("done")
        if isinstance(done, str):
            done = [done]
        self.done = DoneMatcher(done if isinstance(done, list) else [],
                                strip=bool(startup.get("strip_ansi", False)))
        if self.environment is not None:
            self.environment.apply_settings(self.environment_settings())

    @property
    def suspended(self) -> bool:
        """
        The panel's suspension flag.
        """
        return bool(self.settings.get("suspended", False))

    @property
    def build(self) -> Mapping[str, Any]:
        """
        The ``build`` limits block.
        """
        return as_mapping(self.settings.get("build"))

    @property
    def denylist(self) -> list[str]:
        """
        The egg's ``file_denylist`` (api.md §2.12).
        """
        items = as_mapping(self.settings.get("egg")).get("file_denylist")
        return [str(i) for i in items] if isinstance(items, list) else []

    @property
    def disk_limit_bytes(self) -> int:
        """
        ``build.disk_space`` in bytes; 0 = unlimited (api.md §2.13).
        """
        limit = as_int(self.build.get("disk_space"), 0)
        return limit * MIB if limit > 0 else limit

    @property
    def stop_config(self) -> StopConfig:
        """
        ``process_configuration.stop``.
        """
        stop = as_mapping(self.process_configuration.get("stop"))
        return StopConfig(str(stop.get("type") or ""), str(stop.get("value") or ""))

    @property
    def crash_detection_enabled(self) -> bool:
        """
        The per-server switch, defaulting to ``system.crash_detection.enabled``.
        """
        value = self.settings.get("crash_detection_enabled")
        if isinstance(value, bool):
            return value
        return self.context.config.system.crash_detection.enabled

    @property
    def configs(self) -> list[Any]:
        """
        The egg's configuration-file rewrites (lifecycle.md §2.2).
        """
        configs = self.process_configuration.get("configs")
        return configs if isinstance(configs, list) else []

    def environment_variables(self) -> list[tuple[str, str]]:
        """
        The process environment of lifecycle.md §2.3.
        """
        allocations = as_mapping(self.settings.get("allocations"))
        default = as_mapping(allocations.get("default"))
        environment = as_mapping(self.settings.get("environment"))
        timezone = self.context.config.system.timezone
        return environment_variables(
            timezone or "UTC", str(self.settings.get("invocation") or ""),
            as_int(self.build.get("memory_limit")), str(default.get("ip") or ""),
            as_int(default.get("port")), list(environment.items()))

    def environment_settings(self) -> EnvironmentSettings:
        """
        What the environment needs to run this server now.
        """
        build = self.build
        context = self.context
        limits = Limits(
            memory_limit=as_int(build.get("memory_limit")), swap=as_int(build.get("swap")),
            io_weight=as_int(build.get("io_weight"), 500), cpu_limit=as_int(build.get("cpu_limit")),
            threads=str(build.get("threads") or ""), disk_space=as_int(build.get("disk_space")),
            oom_disabled=bool(build.get("oom_disabled", False)),
            pids_limit=context.config.docker.container_pid_limit)
        mounts = self.settings.get("mounts")
        labels = as_mapping(self.settings.get("labels"))
        return EnvironmentSettings(
            uuid=self.uuid, volume=self.volume.root,
            invocation=str(self.settings.get("invocation") or ""),
            image=str(as_mapping(self.settings.get("container")).get("image") or ""),
            env=tuple(self.environment_variables()), limits=limits, stop=self.stop_config,
            uid=context.uid, gid=context.gid,
            mounts=tuple(m for m in mounts if isinstance(m, Mapping)) if isinstance(mounts, list)
            else (),
            allocations=as_mapping(self.settings.get("allocations")),
            labels={str(k): str(v) for k, v in labels.items()})

    def check_writable(self) -> None:
        """
        The write guard (api.md §2.9): ``occupancy.WriteGuarded`` while a
        restore or an incoming transfer owns the volume.
        """
        self.occupancy.check_writable()

    # -- state and the environment's events ------------------------------------------------------

    @property
    def state(self) -> str:
        """
        The tracked process state (lifecycle.md §3).
        """
        return self.environment.state if self.environment is not None else "offline"

    def set_state(self, state: str) -> None:
        """
        Set the tracked process state (the environment notifies the runtime).
        """
        if self.environment is not None:
            self.environment.set_state(state)

    @property
    def sample(self) -> dict[str, Any]:
        """
        The last resource sample (``memory_bytes``, ``memory_limit_bytes``,
        ``cpu_absolute``, ``network``, ``uptime``); ``runtime`` writes it.
        """
        return self._sample

    def reset_sample(self) -> None:
        """
        Zero the sample after the process ended, keeping the memory limit.
        """
        limit = self._sample["memory_limit_bytes"]
        self._sample = _zero_sample()
        self._sample["memory_limit_bytes"] = limit

    def daemon_line(self, text: str) -> None:
        """
        Publish a daemon-origin console line (websocket.md §6.4).
        """
        app = self.context.config.app_name
        self.events.publish("console output", daemon_line(app, text))

    def track(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any,
              **kwargs: Any) -> Deferred[Any]:
        """
        Run the coroutine function ``fn(*args, **kwargs)`` as background work
        of this server: cancelled on deletion, failures logged.
        """
        d: Deferred[Any] = Deferred.fromCoroutine(fn(*args, **kwargs))
        self.tasks.add(d)

        def done(result: Any) -> None:
            self.tasks.discard(d)
            if isinstance(result, Failure) and not result.check(CancelledError):
                log.failure("Background work on {uuid} failed", result, uuid=self.uuid)

        d.addBoth(done)
        return d

    # -- the facade the websocket and the HTTP routes use ----------------------------------------

    def disk_bytes(self) -> int:
        """
        The cached volume usage; starts a background walk when it is stale
        (the non-blocking check of lifecycle.md §12).
        """
        if not self._walking and self.volume.usage_is_stale():
            self._walking = True
            d = self.context.run_blocking(self.volume.usage)

            def walked(result: Any) -> None:
                self._walking = False
                if isinstance(result, Failure):
                    log.failure("Measuring the volume of {uuid} failed", result, uuid=self.uuid)

            d.addBoth(walked)
        return self.volume.cached_usage()

    def refresh_disk_usage(self) -> Deferred[None]:
        """
        The blocking check: walk the volume in a worker thread if stale.
        """
        return self.context.run_blocking(self.volume.usage).addCallback(lambda _: None)

    def snapshot(self) -> dict[str, Any]:
        """
        The stats object (websocket.md §6.3, api.md §4.1).
        """
        stats = dict(self._sample)
        stats["network"] = dict(self._sample["network"])
        stats["state"] = self.state
        stats["disk_bytes"] = self.disk_bytes()
        return stats

    def stats_arg(self) -> str:
        """
        The argument of a ``stats`` event.
        """
        return json.dumps(self.snapshot(), separators=(",", ":"))

    def send_command(self, text: str) -> Deferred[None]:
        """
        Write a console command to the process.
        """
        if self.environment is None:
            return fail(NotAttached())
        return self.environment.send_command(text)

    def accepts_commands(self) -> bool:
        """
        Whether ``send command`` is handled (websocket.md §5.5).
        """
        env = self.environment
        state = self.state
        if env is None or state == "offline":
            return False
        return not (state == "starting" and not env.is_attached())

    def is_running(self) -> Deferred[bool]:
        """
        Whether the process is really alive (lifecycle.md §3.2).
        """
        if self.environment is None:
            return succeed(False)
        return self.environment.is_running()

    def read_log(self, lines: int) -> Deferred[list[str]]:
        """
        The last ``lines`` lines of process output.
        """
        if self.environment is None:
            return succeed([])
        return self.environment.read_log(lines)

    def close_sockets(self, code: int, reason: str, user_uuid: str | None = None) -> None:
        """
        Close every websocket of this server (or those of one user).
        """
        for socket in list(self.sockets):
            if user_uuid is None or socket.user_uuid == user_uuid:
                socket.close_socket(code, reason)

    def end_file_sessions(self, reason: str, user_uuid: str | None = None) -> None:
        """
        End every SFTP connection to this server (or those of one user).
        """
        for session in list(self.file_sessions):
            if user_uuid is None or session.user_uuid == user_uuid:
                self.file_sessions.discard(session)
                session.end(reason)


def _zero_sample() -> dict[str, Any]:
    return {"memory_bytes": 0, "memory_limit_bytes": 0, "cpu_absolute": 0,
            "network": {"rx_bytes": 0, "tx_bytes": 0}, "uptime": 0}
