"""
The environment's listener (lifecycle.md §3, §11, §12, §14 step 3,
§19): what a state change, a console line and a resource sample mean for a
server.

* State changes become ``status`` events; ``offline`` publishes zeroed
  ``stats``; ``starting`` resets the console throttle and re-arms the disk
  trigger; ``starting``/``running`` → ``offline`` hands the server to the
  crash handler on the next reactor turn.
* Console lines are checked against the done-strings (``starting`` →
  ``running``) and the stop command (→ ``stopping``: upstream sets
  ``offline`` here, §6.4, which would look like a crash), then pass the
  console throttle.
* Samples update the server's stats, enforce the disk limit once per run
  (``DISK_EXCEEDED``, then a stop in the background) and publish ``stats``.
* Notices from the environment are daemon console lines; progress lines
  (an image being pulled) go out as ``install output``, as upstream sends
  pull progress.

What happens on a crash or a disk overrun is injected (``on_crash``,
``on_disk_exceeded``), so this module does not depend on the lifecycle.
"""

from __future__ import annotations

from typing import Any, Callable, Coroutine, Mapping

from zope.interface import implementer

from ..environment import IEnvironmentListener
from .console import THROTTLE_NOTICE
from .server import Server, as_int, as_mapping

DISK_EXCEEDED = "Server is exceeding the assigned disk space limit, stopping process now."

#: Background work started for a server by the runtime.
Reaction = Callable[[Server], Coroutine[Any, Any, None]]


@implementer(IEnvironmentListener)
class Runtime:
    """
    Listens to ``server.environment`` on behalf of ``server``.
    """

    def __init__(self, server: Server, *, on_crash: Reaction, on_disk_exceeded: Reaction) -> None:
        self.server = server
        self._on_crash = on_crash
        self._on_disk_exceeded = on_disk_exceeded
        self._disk_stop_armed = True

    def state_changed(self, old: str, new: str) -> None:
        """
        The state handler of lifecycle.md §3.
        """
        server = self.server
        server.events.publish("status", new)
        if new == "starting":
            server.throttle.reset()
            self._disk_stop_armed = True
        if new == "offline":
            server.reset_sample()
            server.events.publish("stats", server.stats_arg())
            if old in ("starting", "running"):
                server.context.clock.callLater(0, server.track, self._on_crash, server)

    def output(self, line: str) -> None:
        """
        One process console line (lifecycle.md §14 step 3).
        """
        server = self.server
        state = server.state
        running = False
        stop = server.stop_config
        if state == "starting" and server.done.matches(line):
            running = True
        elif (state in ("starting", "running") and stop.type == "command" and stop.value
              and line == stop.value):
            server.set_state("stopping")
        forward, notice = server.throttle.allow()
        if forward:
            server.events.publish("console output", line)
        elif notice:
            server.daemon_line(THROTTLE_NOTICE)
        if running and server.state == "starting":
            server.set_state("running")

    def notice(self, text: str) -> None:
        """
        A daemon console line about the environment.
        """
        self.server.daemon_line(text)

    def progress(self, line: str) -> None:
        """
        Preparation progress, to admins as ``install output``.
        """
        self.server.events.publish("install output", line)

    def stats(self, sample: Mapping[str, Any]) -> None:
        """
        A resource sample: update the stats, enforce the disk limit, publish
        ``stats`` (lifecycle.md §12, §13).
        """
        server = self.server
        current = server.sample
        for key in ("memory_bytes", "memory_limit_bytes", "uptime"):
            current[key] = as_int(sample.get(key))
        cpu = sample.get("cpu_absolute", 0)
        current["cpu_absolute"] = round(float(cpu), 3) if isinstance(cpu, (int, float)) else 0
        network = as_mapping(sample.get("network"))
        current["network"] = {"rx_bytes": as_int(network.get("rx_bytes")),
                              "tx_bytes": as_int(network.get("tx_bytes"))}
        limit = server.disk_limit_bytes
        if (limit > 0 and self._disk_stop_armed and server.state in ("starting", "running")
                and server.disk_bytes() > limit):
            self._disk_stop_armed = False
            server.daemon_line(DISK_EXCEEDED)
            server.track(self._on_disk_exceeded, server)
        server.events.publish("stats", server.stats_arg())
