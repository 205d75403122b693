"""
Server fixtures of the development Panel: ``ServerFixture`` and the builder
with the defaults of panel.md §9.2.

``build_server(uuid, **overrides)`` returns the configuration of panel.md §3.3
(``skip_egg_scripts: true``, stop command ``stop``, done-string ``Server is
ready``, image ``~test/image``, allocation ``127.0.0.1:25565``, unlimited
limits, an invocation that runs ``wings_twisted.devpanel.examplegame``), changed only
where the overrides say so.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping

DEFAULT_INVOCATION = "python3 -m wings_twisted.devpanel.examplegame"
DEFAULT_DONE = "Server is ready"
DEFAULT_IMAGE = "~test/image"
DEFAULT_EGG_ID = "5f2f3d8e-0a51-4c3b-9c4e-2f8a6b1d7e90"

_SERVER_KEYS = frozenset(
    {
        "name", "description", "suspended", "invocation", "environment", "image", "done",
        "stop", "skip_egg_scripts", "memory_limit", "swap", "cpu_limit", "disk_space",
        "allocation", "mappings", "configs", "file_denylist", "egg_id", "install_script",
        "status", "transfer", "settings", "process_configuration", "node",
    }
)


class StateError(ValueError):
    """
    The fixture description is invalid; the message says where.
    """


@dataclass
class ServerFixture:
    """
    One server of the node, with the Panel-side state that matters to the
    daemon.  ``status`` is the Panel's column (``None``, ``installing``,
    ``install_failed``, ``reinstall_failed``, ``suspended``,
    ``restoring_backup``); ``transfer`` marks a pending transfer.
    """

    uuid: str
    settings: dict[str, Any]
    process_configuration: dict[str, Any]
    install_script: dict[str, Any]
    status: str | None = None
    transfer: bool = False
    installed_at: float | None = None
    #: The name of the node the server is on (``None``: the first node).
    node: str | None = None

    def configuration(self) -> dict[str, Any]:
        """
        The body of ``GET /servers/{uuid}`` (panel.md §3.3), a deep copy.
        """
        return {
            "settings": copy.deepcopy(self.settings),
            "process_configuration": copy.deepcopy(self.process_configuration),
        }

    @property
    def suspended(self) -> bool:
        """
        Whether the Panel considers the server suspended.
        """
        return bool(self.settings.get("suspended")) or self.status == "suspended"


def _deep_merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """
    Merge ``overrides`` into ``base`` in place: nested mappings merge, any
    other value (lists included) replaces.
    """
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _allocation(value: Any, where: str) -> tuple[str, int]:
    if isinstance(value, Mapping):
        ip, port = value.get("ip"), value.get("port")
    elif isinstance(value, str) and ":" in value:
        ip, _, port_text = value.rpartition(":")
        port = int(port_text) if port_text.isdigit() else None
    else:
        ip, port = None, None
    if not isinstance(ip, str) or not isinstance(port, int):
        raise StateError("{}: allocation must be 'ip:port' or {{ip, port}}".format(where))
    return ip, port


def _stop(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    text = str(value)
    if text.startswith("^"):
        # The Panel turns "^C" / "^SIGTERM" into a signal stop (lifecycle.md §2.2).
        return {"type": "signal", "value": text[1:].upper()}
    return {"type": "command", "value": text}


def build_server(uuid: str, **overrides: Any) -> ServerFixture:
    """
    A server with the §9.2 defaults (the JSON of panel.md §3.3 with
    ``skip_egg_scripts: true``, stop command ``stop``, done-string ``Server is
    ready``, image ``~test/image``, allocation ``127.0.0.1:25565``, unlimited
    limits, invocation running ``wings_twisted.devpanel.examplegame``), changed only
    where ``overrides`` says so.

    Shortcuts: ``name``, ``description``, ``suspended``, ``invocation``,
    ``environment`` (merged over the defaults), ``image``, ``done`` (string or
    list), ``stop`` (command, ``^SIGNAL`` or a dict), ``skip_egg_scripts``,
    ``memory_limit``, ``swap``, ``cpu_limit``, ``disk_space``, ``allocation``
    (``"ip:port"``), ``mappings``, ``configs``, ``file_denylist``, ``egg_id``,
    ``install_script``, ``status``, ``transfer``, ``node`` (the name of the
    node the server is on; the first node when absent).  ``settings`` and
    ``process_configuration`` are deep-merged last and win.
    """
    unknown = set(overrides) - _SERVER_KEYS
    if unknown:
        raise StateError("server {}: unknown keys {}".format(uuid, ", ".join(sorted(unknown))))
    where = "server {}".format(uuid)
    invocation = overrides.get("invocation", DEFAULT_INVOCATION)
    ip, port = _allocation(overrides.get("allocation", "127.0.0.1:25565"), where)
    environment: dict[str, Any] = dict(overrides.get("environment") or {})
    # Egg variables first, then the Panel's own mappings (EnvironmentService order).
    environment.update(
        {"STARTUP": invocation, "P_SERVER_LOCATION": "dev", "P_SERVER_UUID": uuid, "P_SERVER_ALLOCATION_LIMIT": 0}
    )
    done = overrides.get("done", DEFAULT_DONE)
    settings: dict[str, Any] = {
        "uuid": uuid,
        "meta": {"name": overrides.get("name", "Server " + uuid[:8]), "description": overrides.get("description", "")},
        "suspended": bool(overrides.get("suspended", False)),
        "environment": environment,
        "invocation": invocation,
        "skip_egg_scripts": bool(overrides.get("skip_egg_scripts", True)),
        "build": {
            "memory_limit": overrides.get("memory_limit", 0),
            "swap": overrides.get("swap", 0),
            "io_weight": 500,
            "cpu_limit": overrides.get("cpu_limit", 0),
            "threads": None,
            "disk_space": overrides.get("disk_space", 0),
            "oom_disabled": True,
        },
        "container": {"image": overrides.get("image", DEFAULT_IMAGE), "oom_disabled": True, "requires_rebuild": False},
        "allocations": {
            "force_outgoing_ip": False,
            "default": {"ip": ip, "port": port},
            "mappings": copy.deepcopy(overrides.get("mappings", {ip: [port]})),
        },
        "mounts": [],
        "egg": {
            "id": overrides.get("egg_id", DEFAULT_EGG_ID),
            "file_denylist": list(overrides.get("file_denylist", [])),
        },
    }
    process: dict[str, Any] = {
        "startup": {
            "done": [done] if isinstance(done, str) else list(done),
            "user_interaction": [],
            "strip_ansi": False,
        },
        "stop": _stop(overrides.get("stop", "stop")),
        "configs": copy.deepcopy(overrides.get("configs", [])),
    }
    _deep_merge(settings, overrides.get("settings") or {})
    _deep_merge(process, overrides.get("process_configuration") or {})
    script = {
        "container_image": "~test/installer",
        "entrypoint": "bash",
        "script": "#!/bin/bash\necho 'devpanel install script'\n",
    }
    _deep_merge(script, overrides.get("install_script") or {})
    return ServerFixture(
        uuid=uuid,
        settings=settings,
        process_configuration=process,
        install_script=script,
        status=overrides.get("status"),
        transfer=bool(overrides.get("transfer", False)),
        node=None if overrides.get("node") is None else str(overrides["node"]),
    )


