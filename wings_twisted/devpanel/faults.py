"""
Scripted faults for the development Panel (panel.md §9.4).

Tests queue responses per route; each request to that route consumes the next
queued fault before the Panel's normal behaviour runs:

* ``Respond(status, body)``: answer with that status instead of the real
  behaviour (``body=None`` renders the Panel's error JSON for the status);
* ``Delay(seconds, then=None)``: wait on the injected clock, then run ``then``
  (or, by default, the normal behaviour);
* ``Drop()``: abort the TCP connection without answering.

Routes are named by method and path below ``/api/remote``: either a concrete
path (``/servers/8f2a0c1e-…``) or the route template (``/servers/{uuid}``).
A concrete entry is consumed before a template entry.  The method ``*``
matches any method.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping, Union

API_PREFIX = "/api/remote"


@dataclass(frozen=True)
class Respond:
    """
    Answer with ``status`` and ``body`` instead of the normal behaviour.

    :param body: ``bytes`` are sent verbatim, any other value is encoded as
        JSON, ``None`` produces the Panel's error JSON for ``status`` (or no
        body for 204).
    """

    status: int
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Drop:
    """
    Abort the connection without writing a response.
    """


@dataclass(frozen=True)
class Delay:
    """
    Wait ``seconds`` on the injected clock, then run ``then`` (a ``Respond``
    or ``Drop``) or, when ``then`` is ``None``, the normal behaviour.
    """

    seconds: float
    then: Union[Respond, Drop, None] = None


Fault = Union[Respond, Delay, Drop]


def normalise_path(path: str) -> str:
    """
    Reduce a path to the form fault keys and request records use: leading
    ``/``, no trailing ``/``, no ``/api/remote`` prefix.
    """
    if not path.startswith("/"):
        path = "/" + path
    if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
        path = path[len(API_PREFIX):] or "/"
    if len(path) > 1:
        path = path.rstrip("/") or "/"
    return path


def describe(fault: Fault) -> str:
    """
    A short label for a fault, stored in the request log.
    """
    if isinstance(fault, Respond):
        return "respond {}".format(fault.status)
    if isinstance(fault, Drop):
        return "drop"
    then = "normal" if fault.then is None else describe(fault.then)
    return "delay {}s then {}".format(fault.seconds, then)


class FaultQueue:
    """
    Per-route FIFO queues of scripted faults.
    """

    def __init__(self) -> None:
        self._queues: dict[tuple[str, str], deque[Fault]] = {}

    def add(self, method: str, path: str, *faults: Fault) -> None:
        """
        Queue ``faults`` (in order) for requests matching ``method`` and
        ``path`` (a concrete path or a route template, with or without the
        ``/api/remote`` prefix).
        """
        for fault in faults:
            if not isinstance(fault, (Respond, Delay, Drop)):
                raise TypeError("not a fault: {!r}".format(fault))
        key = (method.upper(), normalise_path(path))
        self._queues.setdefault(key, deque()).extend(faults)

    def pop(self, method: str, path: str, route: str | None) -> Fault | None:
        """
        Take the next fault for a request, or ``None`` when nothing is queued.

        Lookup order: concrete path with the method, concrete path with ``*``,
        route template with the method, route template with ``*``.
        """
        method = method.upper()
        candidates = [(method, path), ("*", path)]
        if route is not None:
            candidates += [(method, route), ("*", route)]
        for key in candidates:
            queue = self._queues.get(key)
            if queue:
                return queue.popleft()
        return None

    def pending(self, method: str | None = None, path: str | None = None) -> int:
        """
        How many faults are still queued, optionally for one method/path.
        """
        total = 0
        wanted = None if path is None else normalise_path(path)
        for (m, p), queue in self._queues.items():
            if method is not None and m != method.upper():
                continue
            if wanted is not None and p != wanted:
                continue
            total += len(queue)
        return total

    def clear(self) -> None:
        """
        Forget every queued fault.
        """
        self._queues.clear()
