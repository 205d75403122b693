"""
What ``GET /api/system?v=2`` needs from the engine (api.md §3.1), mapped
from the answers of ``GET /version`` and ``GET /info``::

    /version  {"Version": "24.0.7", "ApiVersion": "1.43", ...}
    /info     {"Containers": 12, "ContainersRunning": 3, "ContainersPaused": 0,
               "ContainersStopped": 9, "Driver": "overlay2",
               "DriverStatus": [["Backing Filesystem", "extfs"], ...],
               "CgroupDriver": "systemd", "CgroupVersion": "2",
               "RuncCommit": {"ID": "v1.1.10-0-g18a0cb0", ...},
               "MemTotal": 33554432000, "OperatingSystem": "Debian GNU/Linux 12 (bookworm)", ...}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class EngineInfo:
    """
    What ``GET /api/system?v=2`` needs from the engine: ``docker`` is the
    document's whole ``docker`` block (api.md §3.1); ``memory_bytes``
    (``MemTotal``) and ``operating_system`` (``OperatingSystem``, the
    fallback of ``system.os``) feed its ``system`` block.
    """

    docker: dict[str, Any]
    memory_bytes: int
    operating_system: str


def engine_info_from(version: Mapping[str, Any], info: Mapping[str, Any]) -> EngineInfo:
    """
    Map the answers of ``/version`` and ``/info`` to ``EngineInfo``; missing
    or mistyped fields become ``""`` or ``0`` (older engines lack some).
    """
    filesystem = ""
    status = info.get("DriverStatus")
    for entry in status if isinstance(status, list) else ():
        if isinstance(entry, list) and len(entry) >= 2 and entry[0] == "Backing Filesystem":
            filesystem = _str(entry[1])
            break
    runc = info.get("RuncCommit")
    docker = {
        "version": _str(version.get("Version")),
        "cgroups": {"driver": _str(info.get("CgroupDriver")),
                    "version": _str(info.get("CgroupVersion"))},
        "containers": {"total": _int(info.get("Containers")),
                       "running": _int(info.get("ContainersRunning")),
                       "paused": _int(info.get("ContainersPaused")),
                       "stopped": _int(info.get("ContainersStopped"))},
        "storage": {"driver": _str(info.get("Driver")), "filesystem": filesystem},
        "runc": {"version": _str(runc.get("ID") if isinstance(runc, Mapping) else None)},
    }
    return EngineInfo(docker, _int(info.get("MemTotal")), _str(info.get("OperatingSystem")))


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


