"""
Assembling one server from the panel's configuration document
(panel.md §3.3): its sandboxed volume under ``system.data``, the ``Server``
model, the environment the context's factory makes for it, and the
``Runtime`` listening to that environment with the crash and disk-limit
reactions wired in.  The caller registers the result.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from ..fs import Volume
from .context import ServerContext
from .crash import handle_crash
from .lifecycle import stop_for_disk
from .runtime import Runtime
from .server import Server, ServerConfigError


def volume_for(context: ServerContext, uuid: str) -> Volume:
    """
    The sandboxed volume of server ``uuid`` under ``system.data``.
    """
    system = context.config.system
    return Volume(os.path.join(system.data, uuid), uid=context.uid, gid=context.gid,
                  disk_check_interval=system.disk_check_interval,
                  clock=context.clock.seconds, chown=os.geteuid() == 0)


def build_server(context: ServerContext, uuid: str, document: Mapping[str, Any]) -> Server:
    """
    Build (not register) a server from ``{"settings": ..., "process_configuration":
    ...}``; ``ServerConfigError`` when the document cannot be used.
    """
    settings = document.get("settings")
    process = document.get("process_configuration")
    if not isinstance(settings, Mapping) or not isinstance(process, Mapping):
        raise ServerConfigError("the panel's answer lacks settings or process_configuration")
    server = Server(uuid, settings, process, volume_for(context, uuid), context=context)
    environment = context.make_environment(server.environment_settings())
    if environment is not None:
        server.environment = environment
        environment.set_listener(Runtime(server, on_crash=handle_crash,
                                         on_disk_exceeded=stop_for_disk))
    return server
