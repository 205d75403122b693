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

Command line: ``python -m wings_twisted.devpanel serve|sign ...``.
"""

from __future__ import annotations

from .faults import Delay, Drop, FaultQueue, Respond
from .resource import RunningPanel, build_resource, build_site, check_authorization, listen
from .servers import ServerFixture, StateError, build_server
from .state import BackupFixture, DevPanelState, NodeCredentials, PanelUser, ReceivedRequest
from .tokens import (
    TokenUser,
    mint,
    mint_download_backup,
    mint_download_file,
    mint_transfer,
    mint_upload,
    mint_websocket,
    signed_url,
    websocket_url,
)

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
