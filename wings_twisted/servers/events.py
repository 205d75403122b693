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
allowed to stop delivery to the others.  Console sockets subscribe for
*batches*: the lines published within `CONSOLE_WINDOW` of the first pending
one reach them together (one write per socket per window instead of one per
line), everything else as it comes, after the pending lines.

Decision [project]: the window is 10 ms.  A game prints its lines one by one
(1,000 lines/s is one line a millisecond, so a per-turn batch holds one
line), and each write to a socket costs a ``send`` and two ``epoll_ctl``
whatever its size: grouping by turn alone left the fan-out at ~10 µs of CPU
per delivered line at 100 sockets.  10 ms is below what a person reading a
console can notice and a fifth of the latency target of the console
benchmark (``bench/RESULTS.md``).
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

#: Seconds console lines wait for more before a batch goes out (module docstring).
CONSOLE_WINDOW = 0.010

#: Events a batch subscriber receives grouped per window: the
#: high-volume lines.  Every other event flushes what is pending first, so a
#: subscriber still sees all events in publication order.
BATCHED = frozenset({"console output", "install output"})


class Batch:
    """
    The batched events of one window, in order.  ``wire`` joins an
    encoding of their frames once, however many subscribers send it.
    """

    __slots__ = ("events", "_wire", "_names")

    def __init__(self, events: list[Event]) -> None:
        self.events = events
        self._wire: bytes | None = None
        self._names: frozenset[str] | None = None

    @property
    def names(self) -> frozenset[str]:
        """
        The distinct event names in the batch.
        """
        if self._names is None:
            self._names = frozenset(event.name for event in self.events)
        return self._names

    def wire(self, encode: Callable[[bytes], bytes]) -> bytes:
        """
        ``encode(frame)`` of every event, concatenated; computed on the
        first call only (every caller must pass the same encoding).
        """
        if self._wire is None:
            self._wire = b"".join([encode(event.frame) for event in self.events])
        return self._wire

    def __len__(self) -> int:
        return len(self.events)


BatchSubscriber = Callable[[Batch], None]


class EventBus:
    """
    Ordered, synchronous publish/subscribe for one server.

    :param schedule: runs a callable later (``callLater(CONSOLE_WINDOW,
        ...)``); with it, batch subscribers get ``BATCHED`` events grouped
        per scheduled call.  Without it every subscriber gets every event at
        once.
    """

    def __init__(self, schedule: Callable[[Callable[[], None]], object] | None = None) -> None:
        self._subscribers: list[Subscriber] = []
        self._batched: list[tuple[Subscriber, BatchSubscriber]] = []
        self._schedule = schedule
        self._pending: list[Event] = []
        self.closed = False

    def subscribe(self, subscriber: Subscriber, *,
                  batch: BatchSubscriber | None = None) -> Callable[[], None]:
        """
        Call ``subscriber(event)`` for every later event — or, given
        ``batch`` and a scheduler, ``batch(Batch)`` for the ``BATCHED``
        events of each turn and ``subscriber(event)`` for the others; return
        a function that unsubscribes (idempotent).
        """
        if batch is not None and self._schedule is not None:
            entry = (subscriber, batch)
            self._batched = self._batched + [entry]

            def unsubscribe_batched() -> None:
                self._batched = [e for e in self._batched if e is not entry]

            return unsubscribe_batched
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
        if self._batched:
            if name in BATCHED:
                if not self._pending:
                    assert self._schedule is not None  # batch subscribers need one
                    self._schedule(self.flush)
                self._pending.append(event)
            else:
                self.flush()
                for subscriber, _ in self._batched:
                    try:
                        subscriber(event)
                    except Exception:
                        log.failure("An event subscriber failed on {event!r}", event=event)
        return event

    def flush(self) -> None:
        """
        Deliver the pending batch now (the scheduled call, or before an
        event that must follow it).
        """
        if not self._pending:
            return
        batch = Batch(self._pending)
        self._pending = []
        for _, deliver in self._batched:
            try:
                deliver(batch)
            except Exception:
                log.failure("An event subscriber failed on a batch of {count}", count=len(batch))

    def __len__(self) -> int:
        return len(self._subscribers) + len(self._batched)

    def close(self) -> None:
        """
        Drop every subscriber and what is pending; later publishes go
        nowhere (the server was deleted).
        """
        self.closed = True
        self._subscribers = []
        self._batched = []
        self._pending = []
