"""
The container operations every Docker environment shares, over one
``DockerClient``, and the node network state (``network``).  Each wrapper
turns the engine's answers into what the environment needs to know, and
absorbs the differences between Docker and podman's Docker-compatible API
met on the way (all verified against podman 4.3):

* **kill of a stopped container**: Docker answers 409 ("is not running"),
  podman 500 with cause "container state improper".  ``kill`` treats both,
  and 404, as "nothing to kill".
* **no compatible update**: podman has no ``POST /containers/{id}/update``
  (404 on the compat API).  ``update`` then uses podman's own
  ``POST /v4.0.0/libpod/containers/{id}/update`` with the same limits as an
  OCI ``LinuxResources`` document (``spec.libpod_resources``); on Docker the
  first call succeeds and the fallback is never tried.
* **stop with an unlimited timeout**: podman refuses ``stop?t=-1`` (400).
  A native stop is therefore sent as a kill with the image's stop signal
  (``Config.StopSignal``, default SIGTERM), which is what Docker's ``stop``
  without a timeout does too; the caller's budget then applies.
* **OOM**: podman never sets ``State.OOMKilled`` (see
  ``environment.DockerEnvironment`` for the other evidence used).
* **stats** arrive every 5 s from podman, every second from Docker; nothing
  here depends on the rate.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.logger import Logger
from twisted.python.failure import Failure

from ...config import Config
from .attach import demultiplex
from .client import DockerClient
from .errors import DockerError
from .network import ensure_node_network
from .spec import NetworkView, libpod_resources

log = Logger()

#: podman's own API, for what its Docker-compatible API lacks.
LIBPOD_PREFIX = "/v4.0.0/libpod"
_NOT_RUNNING = re.compile(r"not running|state improper|is not running|cannot kill", re.I)
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def parse_timestamp(value: Any) -> float | None:
    """
    Seconds since the epoch of an engine timestamp (RFC 3339 with up to
    nanoseconds); ``None`` for Go's zero time or anything unparsable.
    """
    match = _STAMP.match(value) if isinstance(value, str) else None
    if match is None or value.startswith("0001-"):
        return None
    base, fraction, zone = match.groups()
    zone = "+00:00" if zone == "Z" else zone
    try:
        when = datetime.fromisoformat(base + zone)
    except ValueError:
        return None
    seconds = when.astimezone(timezone.utc).timestamp()
    if fraction:
        seconds += float("0." + fraction)
    return seconds


class Engine:
    """
    The engine as every Docker environment of this node uses it.

    :param config: the live configuration, read at each use.
    """

    def __init__(self, client: DockerClient, config: Callable[[], Config]) -> None:
        self.client = client
        self.config = config
        self._network: NetworkView | None = None
        self._waiters: list[Deferred[NetworkView]] = []

    @property
    def where(self) -> str:
        """
        The engine's address (``DOCKER_HOST``), for messages.
        """
        return self.client.where

    async def network(self) -> NetworkView:
        """
        The node network, ensured once (retried after a failure; callers
        arriving while it is being ensured share that attempt).
        """
        if self._network is not None:
            return self._network
        waiter: Deferred[NetworkView] = Deferred()
        self._waiters.append(waiter)
        if len(self._waiters) == 1:
            Deferred.fromCoroutine(ensure_node_network(self.client, self.config())).addBoth(
                self._ensured)
        return await waiter

    def _ensured(self, result: NetworkView | Failure) -> None:
        waiters, self._waiters = self._waiters, []
        if isinstance(result, Failure):
            for waiter in waiters:
                waiter.errback(result)
            return
        self._network = result
        log.info("Node network {name} ready (interface {interface!r}, ispn {ispn})",
                 name=self.config().docker.network.name, interface=result.interface,
                 ispn=result.ispn)
        for waiter in waiters:
            waiter.callback(result)

    async def inspect(self, name: str, *, timeout: float | None = None) -> dict[str, Any] | None:
        """
        ``GET /containers/{name}/json``; ``None`` when there is no such
        container.
        """
        try:
            found = await self.client.call("GET", "/containers/{}/json".format(name),
                                           timeout=timeout)
        except DockerError as e:
            if e.missing:
                return None
            raise
        return found if isinstance(found, dict) else None

    async def remove(self, name: str, *, force: bool) -> None:
        """
        Remove a container with its anonymous volumes; a missing one is fine.
        """
        try:
            await self.client.call("DELETE", "/containers/{}".format(name),
                                   params={"v": True, "force": force})
        except DockerError as e:
            if not e.missing:
                raise

    async def create(self, name: str, body: Mapping[str, Any]) -> None:
        """
        ``POST /containers/create?name=…``.
        """
        await self.client.call("POST", "/containers/create", params={"name": name}, body=body)

    async def start(self, name: str, *, timeout: float | None = None) -> None:
        """
        ``POST /containers/{name}/start`` (304, already started, is fine).
        """
        await self.client.call("POST", "/containers/{}/start".format(name), timeout=timeout)

    async def kill(self, name: str, signal: str) -> bool:
        """
        Send ``signal`` (a name such as ``SIGKILL``); ``False`` when the
        container was not running or does not exist.
        """
        try:
            await self.client.call("POST", "/containers/{}/kill".format(name),
                                   params={"signal": signal})
        except DockerError as e:
            if e.missing or e.status == 409 or (
                    e.status == 500 and _NOT_RUNNING.search(e.engine_message)):
                return False
            raise
        return True

    async def wait_stopped(self, name: str, timeout: float) -> bool:
        """
        ``POST /containers/{name}/wait?condition=not-running`` for at most
        ``timeout`` seconds: ``True`` once it is not running (or gone),
        ``False`` on timeout.
        """
        try:
            await self.client.call("POST", "/containers/{}/wait".format(name),
                                   params={"condition": "not-running"}, timeout=timeout)
        except DockerError as e:
            if e.missing:
                return True
            if e.timed_out:
                return False
            raise
        except (TimeoutError, CancelledError):
            return False
        return True

    async def logs(self, name: str, lines: int, *, tty: bool) -> bytes:
        """
        The last ``lines`` lines of output (raw terminal bytes, or
        demultiplexed without a TTY); empty when the container is gone.
        """
        try:
            body = await self.client.get_bytes("/containers/{}/logs".format(name),
                                               {"stdout": 1, "stderr": 1, "tail": lines})
        except DockerError as e:
            if e.missing:
                return b""
            raise
        return body if tty else demultiplex(body)

    async def update(self, name: str, resources: Mapping[str, Any]) -> None:
        """
        Apply new limits to a running container (compat API, else podman's
        libpod API); a missing container is fine.
        """
        try:
            await self.client.call("POST", "/containers/{}/update".format(name), body=resources)
            return
        except DockerError as e:
            if not e.missing:
                raise
        try:
            await self.client.call("POST", "{}/containers/{}/update".format(LIBPOD_PREFIX, name),
                                   body=libpod_resources(resources), absolute=True)
        except DockerError as e:
            if not e.missing:
                raise
