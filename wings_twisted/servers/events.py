"""
The per-server event bus (lifecycle.md §1.1, websocket.md §6.1).

Everything a websocket may forward about a server is published here, in the
order it happens: ``status``, ``stats``, ``console output`` (process lines and
daemon-origin lines), ``install output``, ``install started``/``completed``,
``daemon message``, backup/transfer events and ``deleted``.

An ``Event`` carries its wire frame, encoded once however many sockets
receive it (console fan-out to 100 browsers must not encode a line 100
times).  Subscribers are called synchronously on the reactor thread in
subscription order; a subscriber that raises is logged and skipped, never
allowed to stop delivery to the others.
"""

from __future__ import annotations

import json
from typing import Callable

from twisted.logger import Logger

log = Logger()


class Event:
    """
    One published event: ``name`` and its single string argument (or none).
    """

    __slots__ = ("name", "arg", "_frame")

    def __init__(self, name: str, arg: str | None = None) -> None:
        self.name = name
        self.arg = arg
        self._frame: bytes | None = None

    @property
    def frame(self) -> bytes:
        """
        The websocket text frame payload (websocket.md §2.2): ``args``
        omitted without an argument, else a one-element array.
        """
        if self._frame is None:
            self._frame = encode_frame(self.name, self.arg)
        return self._frame

    def __repr__(self) -> str:
        return "Event({!r}, {!r})".format(self.name, self.arg)


def encode_frame(name: str, arg: str | None = None) -> bytes:
    """
    ``{"event": name, "args": [arg]}`` as compact UTF-8 JSON.
    """
    message: dict[str, object] = {"event": name}
    if arg is not None:
        message["args"] = [arg]
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


Subscriber = Callable[[Event], None]


class EventBus:
    """
    Ordered, synchronous publish/subscribe for one server.
    """

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self.closed = False

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """
        Call ``subscriber(event)`` for every later event; return a function
        that unsubscribes (idempotent).
        """
        self._subscribers = self._subscribers + [subscriber]

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers = [s for s in self._subscribers if s is not subscriber]

        return unsubscribe

    def publish(self, name: str, arg: str | None = None) -> Event:
        """
        Deliver ``Event(name, arg)`` to every subscriber and return it.
        """
        event = Event(name, arg)
        if self.closed:
            return event
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception:
                log.failure("An event subscriber failed on {event!r}", event=event)
        return event

    def __len__(self) -> int:
        return len(self._subscribers)

    def close(self) -> None:
        """
        Drop every subscriber; later publishes go nowhere (the server was
        deleted).
        """
        self.closed = True
        self._subscribers = []
