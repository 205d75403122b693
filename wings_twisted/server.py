"""
The server model: one game server on this node, as the panel configured it,
plus the registry of every server loaded here.

The panel's configuration document (panel.md §3.3) is kept as received
(``settings`` and ``process_configuration``) and read through typed
accessors; the suspension flag, the egg denylist and the disk limit are
pushed into the server's sandboxed ``Volume`` whenever it changes, and the
rest into its environment (``environment_settings``).

A ``Server`` is also the environment's listener (lifecycle.md §19): it turns
state changes, console lines and resource samples into events on its
``EventBus`` (``status``, ``stats``, ``console output``), applies the
console throttle and done-strings, watches the disk limit and triggers
crash handling.  The power actions, sync and install runs that drive it are
in ``lifecycle.py``; the flags of api.md §2.9 live here so that the write
guard has one home.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from . import lifecycle
from .console import THROTTLE_NOTICE, ConsoleThrottle, DoneMatcher, daemon_line, \
    environment_variables
from .environment import EnvironmentSettings, IEnvironment, IEnvironmentListener, Limits, \
    NotAttached, StopConfig
from .events import EventBus
from .fs import Volume
from .power import PowerLock

if TYPE_CHECKING:
    from .node import Node

log = Logger()

UUID_V4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
CANONICAL_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

MIB = 1024 * 1024

RESTORING_MESSAGE = "Files cannot be changed while a backup is being restored to this server."
RECEIVING_MESSAGE = "Files cannot be changed while this server is being transferred to this node."


class ServerConfigError(ValueError):
    """
    A server entry from the panel that cannot be used.
    """


class WriteGuarded(Exception):
    """
    The write guard of api.md §2.9 refuses a modification (409).
    """


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool) or value is None:
        return default
    if isinstance(value, (int, float)):
        return int(value)
    try:
        return int(str(value))
    except ValueError:
        return default


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


DISK_EXCEEDED = "Server is exceeding the assigned disk space limit, stopping process now."


@implementer(IEnvironmentListener)
class Server:
    """
    One server registered on this node.

    ``node`` is what the runtime needs (clock, live config, worker threads,
    panel, environment factory); a server built without one (configuration
    tests) has no environment and cannot run.
    """

    def __init__(self, uuid: str, settings: Mapping[str, Any],
                 process_configuration: Mapping[str, Any], volume: Volume, *,
                 node: Node | None = None) -> None:
        self.uuid = uuid
        self.volume = volume
        self.node = node
        self.settings: dict[str, Any] = {}
        self.process_configuration: dict[str, Any] = {}
        self.installing = False
        self.transferring = False
        self.restoring = False
        self.receiving_transfer = False
        self.deleted = False
        self.events = EventBus()
        self.sockets: set[Any] = set()
        self.crashed_at: float | None = None
        self.done = DoneMatcher(())
        self.environment: IEnvironment | None = None
        # Background work to cancel when the server is deleted (lifecycle.md §1.1).
        self.tasks: set[Deferred[Any]] = set()
        self._disk_stop_armed = True
        self._walking = False
        self._snapshot = _zero_snapshot()
        if node is not None:
            self.power_lock = PowerLock(node.clock)
            throttles = node.config.throttles
            self.throttle = ConsoleThrottle(
                node.clock.seconds, enabled=throttles.enabled, lines=throttles.lines,
                interval=throttles.line_reset_interval / 1000.0)
        self.update(settings, process_configuration)
        if node is not None:
            self.environment = node.make_environment(self)
            if self.environment is not None:
                self.environment.set_listener(self)

    # -- configuration ---------------------------------------------------------------------------

    def update(self, settings: Mapping[str, Any], process_configuration: Mapping[str, Any]) -> None:
        """
        Replace the configuration with a fresh copy from the panel.
        """
        if not isinstance(settings, Mapping):
            raise ServerConfigError("settings must be an object")
        if not isinstance(process_configuration, Mapping):
            raise ServerConfigError("process_configuration must be an object")
        self.settings = dict(settings)
        self.process_configuration = dict(process_configuration)
        self.volume.set_denylist(self.denylist)
        self.volume.set_disk_limit(self.disk_limit_bytes)
        startup = _mapping(self.process_configuration.get("startup"))
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
        return _mapping(self.settings.get("build"))

    @property
    def denylist(self) -> list[str]:
        """
        The egg's ``file_denylist`` (api.md §2.12).
        """
        items = _mapping(self.settings.get("egg")).get("file_denylist")
        return [str(i) for i in items] if isinstance(items, list) else []

    @property
    def disk_limit_bytes(self) -> int:
        """
        ``build.disk_space`` in bytes; 0 = unlimited (api.md §2.13).
        """
        limit = _int(self.build.get("disk_space"), 0)
        return limit * MIB if limit > 0 else limit

    @property
    def stop_config(self) -> StopConfig:
        """
        ``process_configuration.stop``.
        """
        stop = _mapping(self.process_configuration.get("stop"))
        return StopConfig(str(stop.get("type") or ""), str(stop.get("value") or ""))

    @property
    def crash_detection_enabled(self) -> bool:
        """
        The per-server switch, defaulting to ``system.crash_detection.enabled``.
        """
        value = self.settings.get("crash_detection_enabled")
        if isinstance(value, bool):
            return value
        return self.node.config.system.crash_detection.enabled if self.node else True

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
        allocations = _mapping(self.settings.get("allocations"))
        default = _mapping(allocations.get("default"))
        environment = _mapping(self.settings.get("environment"))
        timezone = self.node.config.system.timezone if self.node else ""
        return environment_variables(
            timezone or "UTC", str(self.settings.get("invocation") or ""),
            _int(self.build.get("memory_limit")), str(default.get("ip") or ""),
            _int(default.get("port")), list(environment.items()))

    def environment_settings(self) -> EnvironmentSettings:
        """
        What the environment needs to run this server now.
        """
        build = self.build
        node = self.node
        limits = Limits(
            memory_limit=_int(build.get("memory_limit")), swap=_int(build.get("swap")),
            io_weight=_int(build.get("io_weight"), 500), cpu_limit=_int(build.get("cpu_limit")),
            threads=str(build.get("threads") or ""), disk_space=_int(build.get("disk_space")),
            oom_disabled=bool(build.get("oom_disabled", False)),
            pids_limit=node.config.docker.container_pid_limit if node else 0)
        mounts = self.settings.get("mounts")
        labels = _mapping(self.settings.get("labels"))
        return EnvironmentSettings(
            uuid=self.uuid, volume=self.volume.root,
            invocation=str(self.settings.get("invocation") or ""),
            image=str(_mapping(self.settings.get("container")).get("image") or ""),
            env=tuple(self.environment_variables()), limits=limits, stop=self.stop_config,
            uid=node.uid if node else -1, gid=node.gid if node else -1,
            mounts=tuple(m for m in mounts if isinstance(m, Mapping)) if isinstance(mounts, list)
            else (),
            allocations=_mapping(self.settings.get("allocations")),
            labels={str(k): str(v) for k, v in labels.items()})

    def check_writable(self) -> None:
        """
        Raise ``WriteGuarded`` while a restore or an incoming transfer owns the
        volume (api.md §2.9).
        """
        if self.restoring:
            raise WriteGuarded(RESTORING_MESSAGE)
        if self.receiving_transfer:
            raise WriteGuarded(RECEIVING_MESSAGE)

    # -- state and the environment's events ------------------------------------------------------

    @property
    def state(self) -> str:
        """
        The tracked process state (lifecycle.md §3).
        """
        return self.environment.state if self.environment is not None else "offline"

    def state_changed(self, old: str, new: str) -> None:
        """
        The state handler of lifecycle.md §3: ``status``; zeroed ``stats`` on
        ``offline``; throttle and disk trigger reset on ``starting``; crash
        handling for ``starting``/``running`` → ``offline``.
        """
        self.events.publish("status", new)
        if new == "starting":
            self.throttle.reset()
            self._disk_stop_armed = True
        if new == "offline":
            limit = self._snapshot["memory_limit_bytes"]
            self._snapshot = _zero_snapshot()
            self._snapshot["memory_limit_bytes"] = limit
            self.events.publish("stats", self.stats_arg())
            if old in ("starting", "running") and self.node is not None:
                self.node.clock.callLater(0, self.track, lifecycle.handle_crash, self)

    def output(self, line: str) -> None:
        """
        One process console line (lifecycle.md §14 step 3).
        """
        state = self.state
        running = False
        stop = self.stop_config
        if state == "starting" and self.done.matches(line):
            running = True
        elif (state in ("starting", "running") and stop.type == "command" and stop.value
              and line == stop.value):
            # Upstream sets offline here (§6.4); stopping avoids a false crash.
            self._set_state("stopping")
        forward, notice = self.throttle.allow()
        if forward:
            self.events.publish("console output", line)
        elif notice:
            self.daemon_line(THROTTLE_NOTICE)
        if running and self.state == "starting":
            self._set_state("running")

    def stats(self, sample: Mapping[str, Any]) -> None:
        """
        A resource sample: update the snapshot, enforce the disk limit,
        publish ``stats`` (lifecycle.md §12, §13).
        """
        snapshot = self._snapshot
        for key in ("memory_bytes", "memory_limit_bytes", "uptime"):
            snapshot[key] = _int(sample.get(key))
        cpu = sample.get("cpu_absolute", 0)
        snapshot["cpu_absolute"] = round(float(cpu), 3) if isinstance(cpu, (int, float)) else 0
        network = _mapping(sample.get("network"))
        snapshot["network"] = {"rx_bytes": _int(network.get("rx_bytes")),
                               "tx_bytes": _int(network.get("tx_bytes"))}
        limit = self.disk_limit_bytes
        if (limit > 0 and self._disk_stop_armed and self.state in ("starting", "running")
                and self.disk_bytes() > limit):
            self._disk_stop_armed = False
            self.daemon_line(DISK_EXCEEDED)
            self.track(lifecycle.stop_process, self, 60.0, True)
        self.events.publish("stats", self.stats_arg())

    def _set_state(self, state: str) -> None:
        if self.environment is not None:
            self.environment.set_state(state)

    def daemon_line(self, text: str) -> None:
        """
        Publish a daemon-origin console line (websocket.md §6.4).
        """
        app = self.node.config.app_name if self.node else "Pterodactyl"
        self.events.publish("console output", daemon_line(app, text))

    def track(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
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
        if self.node is not None and not self._walking and self.volume.usage_is_stale():
            self._walking = True
            d = self.node.run_blocking(self.volume.usage)

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
        if self.node is None:
            return succeed(None)
        return self.node.run_blocking(self.volume.usage).addCallback(lambda _: None)

    def snapshot(self) -> dict[str, Any]:
        """
        The stats object (websocket.md §6.3, api.md §4.1).
        """
        stats = dict(self._snapshot)
        stats["network"] = dict(self._snapshot["network"])
        stats["state"] = self.state
        stats["disk_bytes"] = self.disk_bytes()
        return stats

    def stats_arg(self) -> str:
        """
        The argument of a ``stats`` event.
        """
        return json.dumps(self.snapshot(), separators=(",", ":"))

    def power(self, action: str, *, wait: float = 0) -> Deferred[None]:
        """
        Run a power action (lifecycle.md §5–§9).
        """
        return Deferred.fromCoroutine(lifecycle.power(self, action, wait=wait))

    def send_command(self, text: str) -> Deferred[None]:
        """
        Write a console command to the process.
        """
        if self.environment is None:
            return fail(NotAttached())
        return self.environment.send_command(text)  # type: ignore[no-any-return]

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
        return self.environment.is_running()  # type: ignore[no-any-return]

    def read_log(self, lines: int) -> Deferred[list[str]]:
        """
        The last ``lines`` lines of process output.
        """
        if self.environment is None:
            return succeed([])
        return self.environment.read_log(lines)  # type: ignore[no-any-return]

    def close_sockets(self, code: int, reason: str, user_uuid: str | None = None) -> None:
        """
        Close every websocket of this server (or those of one user).
        """
        for socket in list(self.sockets):
            if user_uuid is None or socket.user_uuid == user_uuid:
                socket.close_socket(code, reason)

    def configuration(self) -> dict[str, Any]:
        """
        The ``configuration`` object of the details route (api.md §4.1).
        """
        s = self.settings
        return {
            "uuid": self.uuid,
            "meta": s.get("meta", {"name": "", "description": ""}),
            "suspended": self.suspended,
            "invocation": s.get("invocation", ""),
            "skip_egg_scripts": bool(s.get("skip_egg_scripts", False)),
            "environment": s.get("environment", {}),
            "labels": s.get("labels", {}),
            "allocations": s.get("allocations", {}),
            "build": s.get("build", {}),
            "crash_detection_enabled": self.crash_detection_enabled,
            "mounts": s.get("mounts", []),
            "egg": s.get("egg", {}),
            "container": s.get("container", {}),
        }

    def details(self) -> dict[str, Any]:
        """
        The body of ``GET /api/servers/{uuid}``.  Blocking (it may walk the
        volume to refresh the disk usage): call through ``run_blocking``.
        """
        self.volume.usage()
        return {
            "state": self.state,
            "is_suspended": self.suspended,
            "utilization": self.snapshot(),
            "configuration": self.configuration(),
        }


def _zero_snapshot() -> dict[str, Any]:
    return {"memory_bytes": 0, "memory_limit_bytes": 0, "cpu_absolute": 0,
            "network": {"rx_bytes": 0, "tx_bytes": 0}, "uptime": 0}


class ServerRegistry:
    """
    The servers loaded on this node, looked up by exact, case-sensitive UUID
    (api.md §2.8).
    """

    def __init__(self) -> None:
        self._servers: dict[str, Server] = {}

    def get(self, uuid: str) -> Server | None:
        """
        The server with this UUID, if registered.
        """
        return self._servers.get(uuid)

    def add(self, server: Server) -> None:
        """
        Register ``server``; a UUID may only be registered once.
        """
        if server.uuid in self._servers:
            raise KeyError(server.uuid)
        self._servers[server.uuid] = server

    def remove(self, uuid: str) -> Server | None:
        """
        Unregister and return the server, if it was registered.
        """
        return self._servers.pop(uuid, None)

    def __contains__(self, uuid: object) -> bool:
        return uuid in self._servers

    def __iter__(self) -> Iterator[Server]:
        return iter(list(self._servers.values()))

    def __len__(self) -> int:
        return len(self._servers)
