"""
Node routes: ``GET /api/system`` (api.md §3.1) and ``POST /api/update``
(§3.2).

Format 2 of ``/api/system`` describes the container engine.  With
``environment.driver: process`` there is none; the ``docker`` block then
reports empty version strings and the servers of this node as its
"containers", so the panel's telemetry still gets a well-formed document
(a project decision).  With the Docker driver the engine is asked through
``node.engine_info`` when one is wired (the Docker environment issue); when
it cannot be reached the answer is 500, as upstream.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import psutil

from .. import __version__
from ..config import UpdateError, apply_panel_update, write_config
from .body import read_json
from .errors import ApiError, BadRequest, JsonResource, render_async

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
    """

    isLeaf = True

    def __init__(self, node: Any) -> None:
        super().__init__()
        self._node = node

    def render_GET(self, request: Any) -> Any:
        """
        Format 1, or format 2 with ``?v=2``.
        """
        v = request.args.get(b"v", [b""])[0]
        if v != b"2":
            return render_async(request, system_v1)
        return render_async(request, lambda: self._v2())

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
        if node.config.environment.driver == "docker":
            engine = getattr(node, "engine_info", None)
            if engine is None:
                raise ApiError("The container engine could not be reached.", status=500)
            docker = await engine()
        return {
            "version": __version__,
            "docker": docker,
            "system": {
                "architecture": architecture(),
                "cpu_threads": os.cpu_count() or 1,
                "memory_bytes": psutil.virtual_memory().total,
                "kernel_version": platform.release(),
                "os": os_pretty_name(),
                "os_type": "linux",
            },
        }


class UpdateResource(JsonResource):
    """
    ``POST /api/update``: merge the panel's node configuration, write it,
    swap it in.
    """

    isLeaf = True

    def __init__(self, node: Any) -> None:
        super().__init__()
        self._node = node

    def render_POST(self, request: Any) -> Any:
        """
        200 ``{"applied": true|false}``.
        """
        return render_async(request, lambda: self._apply(request))

    async def _apply(self, request: Any) -> dict[str, bool]:
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
