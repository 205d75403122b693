"""
A spec-faithful development Panel: the Panel's remote API (panel.md §9) as
a twisted.web resource, for in-process tests and for ``make run``.

It plays the Panel, it does not mock the daemon: the daemon under test calls
it over HTTP with its node token, and tests inspect and script it through
``DevPanelState``::

    state = DevPanelState.from_yaml("conf/devpanel.yml")   # or from_dict / add_server
    resource = build_resource(state, clock)                 # in memory (StubTreq)
    running = await listen(state, reactor)                  # or on an ephemeral port
    state.faults.add("GET", "/servers/{uuid}", Respond(500), Drop())
    url = signed_url("download-file", state, server_uuid, path="/server.properties")

Command line: ``python -m wings_twisted.devpanel serve|sign ...``.  The
example console game the development servers run is ``examplegame``.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Where each public name lives.  Loaded on first use (PEP 562), so that
#: ``python3 -m wings_twisted.devpanel.examplegame`` starts without Twisted.
_EXPORTS = {
    "Delay": "faults", "Drop": "faults", "FaultQueue": "faults", "Respond": "faults",
    "RunningPanel": "resource", "build_resource": "resource", "build_site": "resource",
    "check_authorization": "resource", "listen": "resource",
    "ServerFixture": "servers", "StateError": "servers", "build_server": "servers",
    "BackupFixture": "state", "DevPanelState": "state", "NodeCredentials": "state",
    "PanelUser": "state", "ReceivedRequest": "state",
    "TokenUser": "tokens", "mint": "tokens", "mint_download_backup": "tokens",
    "mint_download_file": "tokens", "mint_transfer": "tokens", "mint_upload": "tokens",
    "mint_websocket": "tokens", "signed_url": "tokens", "websocket_url": "tokens",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError("module {!r} has no attribute {!r}".format(__name__, name))
    return getattr(importlib.import_module("." + module, __name__), name)


__all__ = [
    "BackupFixture",
    "Delay",
    "DevPanelState",
    "Drop",
    "FaultQueue",
    "NodeCredentials",
    "PanelUser",
    "ReceivedRequest",
    "Respond",
    "RunningPanel",
    "ServerFixture",
    "StateError",
    "TokenUser",
    "build_resource",
    "build_server",
    "build_site",
    "check_authorization",
    "listen",
    "mint",
    "mint_download_backup",
    "mint_download_file",
    "mint_transfer",
    "mint_upload",
    "mint_websocket",
    "signed_url",
    "websocket_url",
]
