"""
The server as ``GET /api/servers`` and ``GET /api/servers/{uuid}`` describe
it (api.md §3.3, §4.1): state, suspension, utilization and the configuration
object the Panel reads back.
"""

from __future__ import annotations

from typing import Any

from .server import Server


def configuration(server: Server) -> dict[str, Any]:
    """
    The ``configuration`` object of the details route (api.md §4.1).
    """
    s = server.settings
    return {
        "uuid": server.uuid,
        "meta": s.get("meta", {"name": "", "description": ""}),
        "suspended": server.suspended,
        "invocation": s.get("invocation", ""),
        "skip_egg_scripts": bool(s.get("skip_egg_scripts", False)),
        "environment": s.get("environment", {}),
        "labels": s.get("labels", {}),
        "allocations": s.get("allocations", {}),
        "build": s.get("build", {}),
        "crash_detection_enabled": server.crash_detection_enabled,
        "mounts": s.get("mounts", []),
        "egg": s.get("egg", {}),
        "container": s.get("container", {}),
    }


def details(server: Server) -> dict[str, Any]:
    """
    The body of ``GET /api/servers/{uuid}``.  Blocking (it may walk the
    volume to refresh the disk usage): call through ``run_blocking``.
    """
    server.volume.usage()
    return {
        "state": server.state,
        "is_suspended": server.suspended,
        "utilization": server.snapshot(),
        "configuration": configuration(server),
    }
