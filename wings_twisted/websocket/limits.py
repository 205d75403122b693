"""
The boundaries of one console websocket: inbound frame decoding and its size
limit (websocket.md §1.4, §2.1), the W1.12 rate limiters (§9), and the
outbound queue kept while the transport is paused (§10.1).

Pure module: no Twisted imports, no clock reads; every call takes ``now``.

Decoding mirrors Go's ``json.Unmarshal`` into ``{Event string; Args
[]string}``: bad JSON or a non-object is ignored (the literal ``null`` is an
empty message), a missing/``null`` ``event`` is ``""``, missing/``null``
``args`` is ``[]``, a ``null`` element is ``""``, any other non-string
element drops the whole message.  Lone UTF-16 surrogates (``"\\ud800"``)
become U+FFFD, as in Go, so they can never break an encoder downstream.

Rate limits (§9):

* the **global** bucket (burst 10, one token per 200 ms) is taken for every
  frame before it is parsed;
* after parsing, each event name takes a token from its **event** bucket:
  ``auth`` and ``send logs`` (burst 2, one per 5 s), ``send command`` (burst
  10, one per second), and one bucket shared by every other name (burst 4,
  one per second);
* a refused frame or message is dropped; only the first refusal of a *run*
  asks for a ``throttled`` notice.  Runs are tracked per name (``global`` for
  the frame limiter, the event name otherwise), and an accepted message ends
  the run of its own name only.

Decisions:

* Buckets refill continuously (fractional tokens), like Go's
  ``golang.org/x/time/rate`` that upstream uses, and never hold more than
  their burst.  A clock that steps backwards refills nothing.
* The outbound queue (``Outbox``) keeps three streams ordered by one sequence
  number: droppable *lines* in a ring of the newest ``max_lines`` (older ones
  are dropped), the newest ``stats`` only, and everything else (status,
  errors, token and lifecycle events), which is never dropped.  When that
  last stream exceeds ``max_other`` the client is considered dead: ``push``
  reports the overflow and the caller drops the connection, so a client that
  stops reading never makes the daemon buffer without bound.
* ``Outlet`` is the write path in front of a connection: straight through
  while the transport accepts data, into the ``Outbox`` while it is paused
  (and while anything still waits there, so order is kept).
"""

from __future__ import annotations

import json
import re
from collections import deque
from typing import TYPE_CHECKING, Callable, NamedTuple

if TYPE_CHECKING:
    from ..servers.events import Batch

#: Largest decoded inbound message (project, §1.4).
MAX_MESSAGE = 32768
#: (burst, seconds per token) of the frame limiter.
GLOBAL_BUCKET = (10, 0.2)
#: Event buckets by name; every other name shares ``DEFAULT_BUCKET``.
EVENT_BUCKETS: dict[str, tuple[int, float]] = {
    "auth": (2, 5.0),
    "send logs": (2, 5.0),
    "send command": (10, 1.0),
}
DEFAULT_BUCKET = (4, 1.0)
#: Run name of the frame limiter (the argument of its ``throttled`` notice).
GLOBAL = "global"

#: Outbox kinds.
LINE = "line"
STATS = "stats"
OTHER = "other"
#: Events that may be dropped from the back-pressure ring (restore progress
#: is one ``daemon message`` per file).
LINE_EVENTS = frozenset({"console output", "install output", "transfer logs", "daemon message"})

_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_message(payload: bytes) -> tuple[str, list[str]] | None:
    """
    Decode an inbound frame like Go's ``json.Unmarshal`` into
    ``{Event string; Args []string}`` (§2.1): ``None`` means "ignore".
    """
    try:
        message = json.loads(payload)
    except Exception:  # ValueError, UnicodeDecodeError, RecursionError
        return None
    if message is None:
        return "", []
    if not isinstance(message, dict):
        return None
    event = message.get("event")
    if event is None:
        event = ""
    if not isinstance(event, str):
        return None
    raw = message.get("args")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        return None
    args: list[str] = []
    for item in raw:
        if item is None:
            item = ""
        if not isinstance(item, str):
            return None
        args.append(_SURROGATE.sub("\ufffd", item))
    return _SURROGATE.sub("\ufffd", event), args


def kind_of(name: str) -> str:
    """
    The ``Outbox`` kind of an outbound event.
    """
    if name in LINE_EVENTS:
        return LINE
    if name == "stats":
        return STATS
    return OTHER


class TokenBucket:
    """
    A token bucket holding at most ``burst`` tokens, refilled with one token
    every ``interval`` seconds; full at creation.
    """

    def __init__(self, burst: int, interval: float, now: float) -> None:
        self.burst = burst
        self.interval = interval
        self._tokens = float(burst)
        self._last = now

    def take(self, now: float) -> bool:
        """
        Take one token if there is one; ``False`` when the bucket is empty.
        """
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(float(self.burst), self._tokens + elapsed / self.interval)
            self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class ThrottleRuns:
    """
    Which names are inside a run of refusals (one ``throttled`` notice per
    run).
    """

    def __init__(self) -> None:
        self._refusing: set[str] = set()

    def refused(self, name: str) -> bool:
        """
        Record a refusal; ``True`` when it starts a run (send a notice).
        """
        if name in self._refusing:
            return False
        self._refusing.add(name)
        return True

    def accepted(self, name: str) -> None:
        """
        An accepted message ends the run of ``name``.
        """
        self._refusing.discard(name)


class Admission(NamedTuple):
    """
    A limiter's verdict: whether to go on, and the ``throttled`` argument to
    send when the message is dropped at the start of a run (else ``None``).
    """

    allowed: bool
    notice: str | None = None


_ALLOWED = Admission(True)


class MessageLimits:
    """
    The per-connection limiters of websocket.md §9.
    """

    def __init__(self) -> None:
        self._global: TokenBucket | None = None
        self._events: dict[str, TokenBucket] = {}
        self._frame_runs = ThrottleRuns()
        self._event_runs = ThrottleRuns()

    def admit_frame(self, now: float) -> Admission:
        """
        The frame limiter, applied to every frame before parsing.
        """
        if self._global is None:
            self._global = TokenBucket(*GLOBAL_BUCKET, now)
        if self._global.take(now):
            self._frame_runs.accepted(GLOBAL)
            return _ALLOWED
        return Admission(False, GLOBAL if self._frame_runs.refused(GLOBAL) else None)

    def admit_event(self, name: str, now: float) -> Admission:
        """
        The event limiter for a parsed message named ``name``.
        """
        key = name if name in EVENT_BUCKETS else ""
        bucket = self._events.get(key)
        if bucket is None:
            burst, interval = EVENT_BUCKETS.get(key, DEFAULT_BUCKET)
            bucket = self._events[key] = TokenBucket(burst, interval, now)
        if bucket.take(now):
            self._event_runs.accepted(name)
            return _ALLOWED
        return Admission(False, name if self._event_runs.refused(name) else None)


class Outbox:
    """
    Frames waiting while the transport is paused, in production order.

    :param max_lines: how many droppable lines are kept (newest win).
    :param max_other: how many never-dropped frames may wait before the
        connection is given up.
    """

    def __init__(self, *, max_lines: int = 256, max_other: int = 1024) -> None:
        self._lines: deque[tuple[int, bytes]] = deque(maxlen=max_lines)
        self._other: deque[tuple[int, bytes]] = deque()
        self._stats: tuple[int, bytes] | None = None
        self._max_other = max_other
        self._seq = 0
        #: Lines and stats dropped so far (for logs and tests).
        self.dropped = 0

    def push(self, frame: bytes, kind: str) -> bool:
        """
        Queue ``frame`` of ``kind`` (``LINE``, ``STATS`` or ``OTHER``);
        ``False`` when the never-dropped stream overflowed.
        """
        self._seq += 1
        entry = (self._seq, frame)
        if kind == LINE:
            if len(self._lines) == self._lines.maxlen:
                self.dropped += 1
            self._lines.append(entry)
        elif kind == STATS:
            if self._stats is not None:
                self.dropped += 1
            self._stats = entry
        else:
            self._other.append(entry)
            if len(self._other) > self._max_other:
                return False
        return True

    def pop(self) -> bytes | None:
        """
        The oldest waiting frame, or ``None``.
        """
        best: str | None = None
        seq = 0
        for name, head in (("line", self._lines[0] if self._lines else None),
                           ("other", self._other[0] if self._other else None),
                           ("stats", self._stats)):
            if head is not None and (best is None or head[0] < seq):
                best, seq = name, head[0]
        if best == "line":
            return self._lines.popleft()[1]
        if best == "other":
            return self._other.popleft()[1]
        if best == "stats":
            assert self._stats is not None
            frame = self._stats[1]
            self._stats = None
            return frame
        return None

    def __len__(self) -> int:
        return len(self._lines) + len(self._other) + (self._stats is not None)


class Outlet:
    """
    Writes frames, or queues them while paused (websocket.md §10.1).

    :param send: writes one frame to the connection.
    :param overflow: called once when too many never-dropped frames wait;
        the caller drops the connection.  Later writes are ignored.
    """

    def __init__(self, send: Callable[[bytes], None], overflow: Callable[[], None], *,
                 max_lines: int = 256, max_other: int = 1024,
                 send_many: Callable[[Batch], None] | None = None) -> None:
        self._send = send
        self._send_many = send_many
        self._overflow = overflow
        self._box = Outbox(max_lines=max_lines, max_other=max_other)
        self._paused = False
        self._dead = False

    @property
    def paused(self) -> bool:
        """
        Whether the transport asked us to stop writing.
        """
        return self._paused

    @property
    def dropped(self) -> int:
        """
        Lines and stats dropped while paused.
        """
        return self._box.dropped

    def __len__(self) -> int:
        return len(self._box)

    def write(self, frame: bytes, kind: str) -> None:
        """
        Send ``frame`` now, or queue it as ``kind``.
        """
        if self._dead:
            return
        if not self._paused and not len(self._box):
            self._send(frame)
        elif not self._box.push(frame, kind):
            self._dead = True
            self._overflow()

    def write_batch(self, batch: Batch, kind: str) -> None:
        """
        Send every frame of ``batch`` now (in one write where the channel
        can), or queue each as ``kind``.
        """
        if self._dead:
            return
        if not self._paused and not len(self._box) and self._send_many is not None:
            self._send_many(batch)
            return
        for event in batch.events:
            self.write(event.frame, kind)

    def pause(self) -> None:
        """
        Queue from now on.
        """
        self._paused = True

    def resume(self) -> None:
        """
        Send what waits, oldest first, until paused again.
        """
        self._paused = False
        while not self._paused and not self._dead:
            frame = self._box.pop()
            if frame is None:
                return
            self._send(frame)

    def flush(self) -> None:
        """
        Send everything that waits, paused or not (before a close frame).
        """
        while not self._dead:
            frame = self._box.pop()
            if frame is None:
                return
            self._send(frame)
