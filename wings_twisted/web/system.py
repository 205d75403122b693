"""
Node routes: ``GET /api/system`` (api.md §3.1) and ``POST /api/update``
(§3.2).

Format 2 of ``/api/system`` describes the container engine.  With
``environment.driver: process`` there is none; the ``docker`` block then
reports empty version strings and the servers of this node as its
"containers", so the panel's telemetry still gets a well-formed document
(a project decision).  With the Docker driver the engine is asked through
``node.docker`` (``wings_twisted.environment.docker``): its answer fills the ``docker``
block, ``system.memory_bytes`` (Docker's ``MemTotal``) and the last fallback
of ``system.os``.  When the engine cannot be reached (or no client is wired)
format 2 answers 500; format 1 never asks the engine.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import psutil
from twisted.logger import Logger

from .. import __version__
from ..config import UpdateError, apply_panel_update, write_config
from ..environment.docker import DockerError
from .body import read_json
from ..node import Node
from .errors import ApiError, BadRequest, JsonResource
from .request import ApiRequest, query_arg

log = Logger()

ENGINE_UNREACHABLE = "The container engine could not be reached."

ARCHITECTURES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
                 "i686": "386", "i386": "386", "armv7l": "arm", "armv6l": "arm"}


def architecture() -> str:
    """
    Go's name for this machine's architecture.
    """
    machine = platform.machine()
    return ARCHITECTURES.get(machine, machine.lower())


def os_pretty_name(path: str = "/etc/os-release") -> str:
    """
    ``PRETTY_NAME`` (else ``NAME``) from os-release.
    """
    values: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                values[key] = value.strip().strip('"')
    except OSError:
        return ""
    return values.get("PRETTY_NAME") or values.get("NAME", "")


def cgroup_version() -> str:
    """
    "2" on a unified hierarchy, else "1".
    """
    return "2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "1"


def system_v1() -> dict[str, Any]:
    """
    Format 1: what the panel's node page and heartbeat read.
    """
    return {
        "architecture": architecture(),
        "cpu_count": os.cpu_count() or 1,
        "kernel_version": platform.release(),
        "os": "linux",
        "version": __version__,
    }


class SystemResource(JsonResource):
    """
    ``GET /api/system``.

    :param os_release: the os-release file ``system.os`` is read from.
    """

    isLeaf = True

    def __init__(self, node: Node, *, os_release: str = "/etc/os-release") -> None:
        super().__init__()
        self._node = node
        self._os_release = os_release

    async def render_GET(self, request: ApiRequest) -> dict[str, Any]:
        """
        Format 1, or format 2 with ``?v=2``.
        """
        if query_arg(request, b"v") != b"2":
            return system_v1()
        return await self._v2()

    async def _v2(self) -> dict[str, Any]:
        node = self._node
        servers = list(node.registry)
        running = sum(1 for s in servers if s.state != "offline")
        docker: dict[str, Any] = {
            "version": "",
            "cgroups": {"driver": "cgroupfs", "version": cgroup_version()},
            "containers": {"total": len(servers), "running": running, "paused": 0,
                           "stopped": len(servers) - running},
            "storage": {"driver": "", "filesystem": ""},
            "runc": {"version": ""},
        }
        os_name = os_pretty_name(self._os_release)
        if node.config.environment.driver != "docker":
            memory_bytes = psutil.virtual_memory().total
        else:
            client = node.docker
            if client is None:
                raise ApiError(ENGINE_UNREACHABLE, status=500)
            try:
                engine = await client.engine_info()
            except DockerError as e:
                log.warn("GET /api/system?v=2: {error}", error=e.message)
                raise ApiError(ENGINE_UNREACHABLE, status=500)
            docker = engine.docker
            memory_bytes = engine.memory_bytes
            os_name = os_name or engine.operating_system
        return {
            "version": __version__,
            "docker": docker,
            "system": {
                "architecture": architecture(),
                "cpu_threads": os.cpu_count() or 1,
                "memory_bytes": memory_bytes,
                "kernel_version": platform.release(),
                "os": os_name,
                "os_type": "linux",
            },
        }


class UpdateResource(JsonResource):
    """
    ``POST /api/update``: merge the panel's node configuration, write it,
    swap it in.
    """

    isLeaf = True

    def __init__(self, node: Node) -> None:
        super().__init__()
        self._node = node

    async def render_POST(self, request: ApiRequest) -> dict[str, bool]:
        """
        200 ``{"applied": true|false}``.
        """
        node = self._node
        if node.config.ignore_panel_config_updates:
            return {"applied": False}
        body = read_json(request)
        try:
            updated = apply_panel_update(node.config, body)
        except UpdateError as e:
            raise BadRequest(str(e))
        if node.config_path:
            await node.run_blocking(write_config, updated, node.config_path)
        node.config = updated
        node.panel.set_credentials(updated.token_id, updated.token)
        return {"applied": True}
