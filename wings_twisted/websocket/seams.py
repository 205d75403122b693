"""
What a console ``Session`` is written against: the connection it writes to,
the activity log and the server (``wings_twisted.server.Server`` provides
``ServerFacade``; tests provide fakes of the same shape).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Protocol

from ..events import EventBus

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred


class Channel(Protocol):
    """
    What a session writes to: one websocket connection (``send`` a text
    frame, ``close`` with a code and reason, ``drop`` without a close frame).
    """

    def send(self, frame: bytes) -> None: ...

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
    What a session needs of a server (``wings_twisted.server.Server``).
    """

    @property
    def uuid(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def suspended(self) -> bool: ...
    @property
    def installing(self) -> bool: ...
    @property
    def transferring(self) -> bool: ...
    @property
    def events(self) -> EventBus: ...
    @property
    def sockets(self) -> set[Any]: ...
    def stats_arg(self) -> str: ...
    def refresh_disk_usage(self) -> "Deferred[None]": ...
    def power(self, action: str, *, wait: float = 0) -> "Deferred[None]": ...
    def send_command(self, text: str, /) -> "Deferred[None]": ...
    def accepts_commands(self) -> bool: ...
    def is_running(self) -> "Deferred[bool]": ...
    def read_log(self, n: int, /) -> "Deferred[list[str]]": ...
