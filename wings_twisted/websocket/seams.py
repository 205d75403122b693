"""
What a console ``Session`` is written against: the connection it writes to,
the activity log and the server (``wings_twisted.servers.server.Server``
provides ``ServerFacade``; tests provide fakes of the same shape).  Power
actions are not the server model's: the session is given a ``PowerAction``
(``servers.lifecycle.power`` bound to the server).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol

from ..servers.events import Batch, EventBus
from ..servers.occupancy import Occupancy

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

#: Runs a power action on the session's server.
PowerAction = Callable[[str], "Deferred[None]"]


class Channel(Protocol):
    """
    What a session writes to: one websocket connection (``send`` a text
    frame, ``send_batch`` the frames of an event batch, ``close`` with a
    code and reason, ``drop`` without a close frame).
    """

    def send(self, frame: bytes) -> None: ...

    def send_batch(self, batch: Batch) -> None: ...

    def close(self, code: int, reason: str) -> None: ...

    def drop(self) -> None: ...


class ActivitySink(Protocol):
    """
    Where activity records go (``node.activity``).
    """

    def record(self, event: str, *, server: str, user: str | None, ip: str,
               metadata: Mapping[str, Any] | None = None) -> None: ...


class ServerFacade(Protocol):
    """
    What a session needs of a server (``wings_twisted.servers.server.Server``).
    """

    @property
    def uuid(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def suspended(self) -> bool: ...
    @property
    def occupancy(self) -> Occupancy: ...
    @property
    def events(self) -> EventBus: ...
    @property
    def sockets(self) -> set[Any]: ...
    def stats_arg(self) -> str: ...
    def refresh_disk_usage(self) -> "Deferred[None]": ...
    def send_command(self, text: str, /) -> "Deferred[None]": ...
    def accepts_commands(self) -> bool: ...
    def is_running(self) -> "Deferred[bool]": ...
    def read_log(self, n: int, /) -> "Deferred[list[str]]": ...
