"""
One console websocket connection, as plain Python (websocket.md §2–§13).

``Session`` knows nothing about Autobahn: it receives raw frames through
``receive``, writes frames through a ``Channel`` (``send``/``close``/
``drop``), reads the live configuration through a callable, and uses the
injected clock for every timer, so it is unit-tested with ``Clock``.  It is
also the *handle* the server keeps in ``server.sockets`` (``user_uuid``,
``close_socket``).

Wire format (§2): one JSON object per text frame,
``{"event": "<name>", "args": ["<string>", ...]}``; outbound ``args`` is
omitted without data and otherwise has exactly one string.

Inbound pipeline, in order: suspension (``websocket.close_on_suspend``
only: close 4409), the frame limiter, the 32 768-byte / binary check
(answered with ``daemon error`` ``message too large``), JSON decoding (bad
input ignored), the event limiter, the token check for every event but
``auth``, dispatch.  ``auth`` is processed to completion before later frames
(frames arriving while a first ``auth`` waits for the disk-usage refresh are
held, at most ``MAX_BACKLOG``).  Power actions, commands and log replays run
as Deferreds the loop does not wait for.

Outbound: every event (server bus, ``status``/``stats`` of the first auth,
replayed lines, token ticker) passes the token check of §5.4 (a failure
replaces it by a bare ``jwt error``) and then the permission filters of
§6.1.  ``auth success``, ``jwt error``, ``throttled`` and handler errors are
written without the check.

Decisions (where the spec is silent or says MAY/SHOULD):

* Replacement ``jwt error`` frames for suppressed outbound events are
  collapsed to one per second per connection while the text stays the same
  (§8.3 MAY).  Per-message ``jwt error`` replies are never collapsed.
* ``message too large`` is wrapped as ``Error Event [<uuid>]: message too
  large`` and shown to every client (like the lock-busy text), not only to
  holders of ``admin.websocket.errors``.
* Failed ``auth`` with a malformed or badly signed token: admins of the
  *stored* token see ``jwt: HMAC verification failed`` for a bad signature
  and ``jwt: <diagnostic>`` otherwise.
* The auth timeout drops the TCP connection without a close frame (as
  upstream; §11.2 keeps 4400 for the cap case).  An ``auth`` that would
  exceed ``websocket.max_connections_per_server`` closes with 4400.
* Back-pressure (§10.1, ``limits.Outlet``): while the channel is paused,
  frames wait: ``console output``, ``install output``, ``transfer logs`` and
  ``daemon message`` (restore progress is one line per file) are droppable
  lines (newest 256 kept), ``stats`` keeps the newest, everything else is
  kept; more than 1024 waiting non-droppable frames drop the connection.
  Closing flushes whatever waits before the close frame, so ``deleted``
  always precedes the 1001.
* If the disk-usage refresh of a first ``auth`` fails, the failure is logged
  and the ``stats`` event is still sent with the cached values.

``Session`` is one cohesive state machine (a socket's token, its slot, its
timers, its inbound pipeline and its outlet share one state); the pure
pieces it uses are ``limits`` (rate limiting, framing, the outlet) and
``auth.denials`` (token verdicts), so the module stays whole.
"""

from __future__ import annotations

import math
import uuid
from collections import deque
from typing import Any, Callable, Mapping

import jwt
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..auth import WEBSOCKET, ExpiredToken, InvalidToken
from ..config import Config
from ..environment import EnvironmentError as EnvError
from ..servers.events import Batch, Event, encode_frame
from ..servers.power import ACTIONS, LOCK_BUSY_TEXT, PowerError, PowerLocked, UnknownPowerAction
from ..auth.denials import EXP_INVALID, Denials, has_permission, token_error
from .limits import MAX_MESSAGE, OTHER, MessageLimits, Outlet, kind_of, parse_message
from .seams import ActivitySink, Channel, PowerAction, ServerFacade

log = Logger()

#: Frames held while a first ``auth`` finishes.
MAX_BACKLOG = 32
#: Token expiry ticker period and the "expiring" threshold (§8.3).
TICK_SECONDS = 30.0
EXPIRING_SECONDS = 60.0
#: At most one replacement ``jwt error`` per this many seconds (same text).
JWT_ERROR_INTERVAL = 1.0

BAD_SIGNATURE = "jwt: HMAC verification failed"
GENERIC_ERROR = "an unexpected error was encountered while handling this request"
TOO_LARGE = "message too large"

#: Close codes and reasons this module sends (§11.2).
SUSPENDED = (4409, "server is suspended")
TOO_MANY = (4400, "too many open websocket connections")

#: ``set state`` action → permission (§5.2).
POWER_PERMISSIONS = {"start": "control.start", "stop": "control.stop",
                     "restart": "control.restart", "kill": "control.stop"}
#: Inbound events with a ``handle_<event>`` method (spaces as underscores).
INBOUND_EVENTS = frozenset({"auth", "set state", "send command", "send logs", "send stats"})
#: Outbound permission filters (§6.1); ``backup completed*`` is by prefix.
EVENT_PERMISSIONS = {"install output": "admin.websocket.install",
                     "transfer logs": "admin.websocket.transfer"}


def wrap_error(text: str) -> str:
    """
    ``Error Event [<fresh UUIDv4>]: <text>`` (§5.3).
    """
    return "Error Event [{}]: {}".format(uuid.uuid4(), text)


def error_identifier(wrapped: str) -> str:
    """
    The UUID inside a wrapped error text.
    """
    return wrapped[len("Error Event ["):wrapped.index("]")]


def _token_text(error: InvalidToken) -> str:
    """
    The "real" text of a malformed token, shown to admins only.
    """
    if isinstance(error.__cause__, jwt.InvalidSignatureError):
        return BAD_SIGNATURE
    return "jwt: " + str(error)


class Session:
    """
    The state machine of one console websocket (§3).

    :param server: the server the socket belongs to.
    :param channel: where frames go.
    :param clock: timers and ``now``.
    :param config: returns the live configuration (read on every use).
    :param denials: the node's deny lists.
    :param activity: the node's activity log.
    :param client_ip: the client address (trusted proxies applied).
    :param power: runs a power action on ``server``.
    """

    def __init__(self, server: ServerFacade, channel: Channel, *, clock: IReactorTime,
                 config: Callable[[], Config], denials: Denials, activity: ActivitySink,
                 client_ip: str, power: PowerAction) -> None:
        self.id = str(uuid.uuid4())
        self.client_ip = client_ip
        self._server = server
        self._power = power
        self._channel = channel
        self._clock = clock
        self._config = config
        self._denials = denials
        self._activity = activity
        self._claims: dict[str, Any] | None = None
        self._verdict: tuple[Any, tuple[int, int, bool], str | None] | None = None
        self._registered = False
        self._closed = False
        self._busy = False
        self._backlog: deque[tuple[bytes, bool]] = deque()
        self._outlet = Outlet(channel.send, self._overflowed, send_many=channel.send_batch)
        self._limits = MessageLimits()
        self._auth_timer: IDelayedCall | None = None
        self._ticker: LoopingCall | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._last_jwt_error: tuple[str, float] | None = None

    # -- the handle kept in server.sockets ---------------------------------

    @property
    def user_uuid(self) -> str | None:
        """
        The ``user_uuid`` of the stored token, if any.
        """
        user = self._claims.get("user_uuid") if self._claims else None
        return user if isinstance(user, str) else None

    @property
    def authenticated(self) -> bool:
        """
        Whether a first ``auth`` succeeded (the socket holds a slot).
        """
        return self._registered

    @property
    def closed(self) -> bool:
        """
        Whether the session has ended.
        """
        return self._closed

    def close_socket(self, code: int, reason: str) -> None:
        """
        Close the connection with ``code``/``reason`` after writing whatever
        is waiting; releases the slot at once.
        """
        if self._closed:
            return
        self._teardown()
        self._closed = True
        self._outlet.flush()
        self._channel.close(code, reason)

    # -- connection events -------------------------------------------------

    def open(self) -> None:
        """
        The upgrade completed: apply the suspension rule, start the auth
        timeout.
        """
        config = self._config()
        if config.websocket.close_on_suspend and self._server.suspended:
            self.close_socket(*SUSPENDED)
            return
        timeout = config.websocket.auth_timeout
        if timeout > 0:
            self._auth_timer = self._clock.callLater(timeout, self._auth_timed_out)

    def lost(self) -> None:
        """
        The connection is gone: stop everything, release the slot.
        """
        self._teardown()
        self._closed = True

    def pause(self) -> None:
        """
        The transport's buffer is full: queue frames from now on.
        """
        self._outlet.pause()

    def resume(self) -> None:
        """
        The transport drained: write what waits (until paused again).
        """
        if not self._closed:
            self._outlet.resume()

    def receive(self, payload: bytes, is_binary: bool = False) -> None:
        """
        One inbound frame.
        """
        if self._closed:
            return
        config = self._config()
        if config.websocket.close_on_suspend and self._server.suspended:
            self.close_socket(*SUSPENDED)
            return
        if config.websocket.rate_limits:
            verdict = self._limits.admit_frame(self._clock.seconds())
            if not verdict.allowed:
                if verdict.notice is not None:
                    self._write(encode_frame("throttled", verdict.notice), OTHER)
                return
        if self._busy:
            if len(self._backlog) < MAX_BACKLOG:
                self._backlog.append((payload, is_binary))
            return
        self._process(payload, is_binary)

    # -- inbound -----------------------------------------------------------

    def _process(self, payload: bytes, is_binary: bool) -> None:
        if is_binary or len(payload) > MAX_MESSAGE:
            self._write(encode_frame("daemon error", wrap_error(TOO_LARGE)), OTHER)
            return
        parsed = parse_message(payload)
        if parsed is None:
            return
        event, args = parsed
        if self._config().websocket.rate_limits:
            verdict = self._limits.admit_event(event, self._clock.seconds())
            if not verdict.allowed:
                if verdict.notice is not None:
                    self._write(encode_frame("throttled", verdict.notice), OTHER)
                return
        text = "".join(args)
        if event == "auth":
            self.handle_auth(text)
            return
        error = self._token_error()
        if error is not None:
            self._write(encode_frame("jwt error", error), OTHER)
            return
        handler = getattr(self, "handle_" + event.replace(" ", "_"), None)
        if handler is not None and event in INBOUND_EVENTS:
            handler(text)

    def _drain_backlog(self) -> None:
        while self._backlog and not self._busy and not self._closed:
            payload, is_binary = self._backlog.popleft()
            self._process(payload, is_binary)

    # -- tokens ------------------------------------------------------------

    def _check_claims(self, claims: Mapping[str, Any] | None) -> str | None:
        return token_error(claims, now=self._clock.seconds(), server_uuid=self._server.uuid,
                           denials=self._denials,
                           require_scope=self._config().tokens.require_scope)

    def _token_error(self) -> str | None:
        """
        The per-message / per-event token check (§5.4).  Its answer only
        changes with the token, the whole second (``exp`` is compared in
        seconds), the deny lists and ``tokens.require_scope``, so it is
        computed once per such state rather than for every console line.
        """
        claims = self._claims
        state = (math.floor(self._clock.seconds()), self._denials.generation,
                 self._config().tokens.require_scope)
        cached = self._verdict
        if cached is not None and cached[0] is claims and cached[1] == state:
            return cached[2]
        error = self._check_claims(claims)
        self._verdict = (claims, state, error)
        return error

    def has_permission(self, permission: str) -> bool:
        """
        ``HasPermission`` (§4.3) of the stored token.
        """
        return has_permission(self._claims, permission, self._denials)

    def handle_auth(self, token: str) -> None:
        """
        ``auth`` (§4.3): check the token, answer, register on the first one.
        """
        config = self._config()
        try:
            claims = WEBSOCKET.decode(token, config.token, now=self._clock.seconds(),
                                      require_scope=config.tokens.require_scope,
                                      with_scope=False)
        except ExpiredToken:
            self._write(encode_frame("jwt error", wrap_error(EXP_INVALID)), OTHER)
            return
        except InvalidToken as e:
            self._report(e, _token_text(e))
            return
        error = self._check_claims(claims)
        if error is not None:
            self._write(encode_frame("jwt error", wrap_error(error)), OTHER)
            return
        first = not self._registered
        if first:
            cap = config.websocket.max_connections_per_server
            if cap > 0 and len(self._server.sockets) >= cap:
                log.info("Websocket {id} for server {server}: too many connections",
                         id=self.id, server=self._server.uuid)
                self.close_socket(*TOO_MANY)
                return
        self._claims = claims
        self._write(encode_frame("auth success"), OTHER)
        if first:
            self._register()

    def _register(self) -> None:
        server = self._server
        self._registered = True
        if self._auth_timer is not None and self._auth_timer.active():
            self._auth_timer.cancel()
        self._auth_timer = None
        server.sockets.add(self)
        self._unsubscribe = server.events.subscribe(self._on_event, batch=self._on_batch)
        ticker = self._ticker = LoopingCall(self._tick)
        ticker.clock = self._clock
        ticker.start(TICK_SECONDS, now=False).addErrback(
            lambda f: log.failure("The token ticker of websocket {id} failed", f, id=self.id))
        self._on_event(Event("status", server.state))
        if server.state != "offline" or server.occupancy.state in ("installing", "transferring"):
            return
        self._busy = True
        d = maybeDeferred(server.refresh_disk_usage)
        d.addErrback(lambda f: log.failure("Refreshing the disk usage of {server} failed", f,
                                           server=server.uuid))

        def stats(_: object) -> None:
            self._busy = False
            if not self._closed:
                self._on_event(Event("stats", server.stats_arg()))
                self._drain_backlog()

        d.addCallback(stats)
        d.addErrback(lambda f: log.failure("Sending the first stats failed", f))

    def _auth_timed_out(self) -> None:
        self._auth_timer = None
        if self._registered or self._closed:
            return
        log.info("Websocket {id} for server {server} did not authenticate in time",
                 id=self.id, server=self._server.uuid)
        self._teardown()
        self._closed = True
        self._channel.drop()

    def _tick(self) -> None:
        claims = self._claims
        if claims is None or self._closed:
            return
        remaining = claims.get("exp", 0) - self._clock.seconds()
        if remaining <= 0:
            self._on_event(Event("token expired"))
        elif remaining <= EXPIRING_SECONDS:
            self._on_event(Event("token expiring"))

    # -- handlers ----------------------------------------------------------

    def handle_set_state(self, action: str) -> None:
        """
        ``set state`` (§5.2): a power action, with its permission.
        """
        if action not in ACTIONS:
            self._report(UnknownPowerAction())
            return
        if not self.has_permission(POWER_PERMISSIONS[action]):
            return
        user = self.user_uuid
        d = maybeDeferred(self._power, action)
        d.addCallbacks(lambda _: self._record("server:power." + action, user, {}),
                       self._failed)
        d.addErrback(lambda f: log.failure("Handling a power action failed", f))

    def handle_send_command(self, text: str) -> None:
        """
        ``send command`` (§5.5): a console line to the process.
        """
        if not self.has_permission("control.console"):
            return
        if not self._server.accepts_commands():
            return
        user = self.user_uuid
        d = maybeDeferred(self._server.send_command, text)
        d.addCallbacks(lambda _: self._record("server:console.command", user, {"command": text}),
                       self._failed)
        d.addErrback(lambda f: log.failure("Handling a console command failed", f))

    def handle_send_logs(self, _: str) -> None:
        """
        ``send logs`` (§5.6): replay the console history.
        """
        d = Deferred.fromCoroutine(self._replay())
        d.addErrback(self._failed)
        d.addErrback(lambda f: log.failure("Replaying the console failed", f))

    async def _replay(self) -> None:
        server = self._server
        if not await maybeDeferred(server.is_running):
            return
        lines = await maybeDeferred(server.read_log, self._config().system.websocket_log_count)
        for line in lines:
            self._on_event(Event("console output", line))

    def handle_send_stats(self, _: str) -> None:
        """
        ``send stats`` (§5.7): the current stats.
        """
        self._on_event(Event("stats", self._server.stats_arg()))

    def _record(self, event: str, user: str | None, metadata: Mapping[str, Any]) -> None:
        self._activity.record(event, server=self._server.uuid, user=user, ip=self.client_ip,
                              metadata=metadata)

    def _failed(self, failure: Failure) -> None:
        self._report(failure.value, failure=failure)

    def _report(self, error: BaseException, shown: str | None = None, *,
                failure: Failure | None = None) -> None:
        """
        Send one ``daemon error`` for a failed handler (§5.3) and log it.
        """
        if isinstance(error, PowerLocked):
            self._write(encode_frame("daemon error", wrap_error(LOCK_BUSY_TEXT)), OTHER)
            return
        real = shown if shown is not None else str(error)
        text = real if self.has_permission("admin.websocket.errors") else GENERIC_ERROR
        wrapped = wrap_error(text)
        identifier = error_identifier(wrapped)
        if isinstance(error, InvalidToken):
            log.info("Websocket {id}: auth failed ({error}), error_identifier={error_identifier}",
                     id=self.id, error=real, error_identifier=identifier)
        elif isinstance(error, (PowerError, EnvError)) or failure is None:
            log.warn("Websocket {id} for server {server}: {error}, error_identifier="
                     "{error_identifier}", id=self.id, server=self._server.uuid, error=real,
                     error_identifier=identifier)
        else:
            log.failure("Websocket {id} for server {server}: handler failed, error_identifier="
                        "{error_identifier}", failure, id=self.id, server=self._server.uuid,
                        error_identifier=identifier)
        self._write(encode_frame("daemon error", wrapped), OTHER)

    # -- outbound ----------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        """
        Deliver one event: token check, permission filters, write.
        """
        if self._closed or self._refused_by_token():
            return
        if self._may_see(event.name):
            self._write(event.frame, kind_of(event.name))

    def _on_batch(self, batch: Batch) -> None:
        """
        Deliver the lines of one batch window: one token check, and one
        write of frames framed once for every socket when every line may be
        seen (the usual case); else line by line.
        """
        if self._closed or self._refused_by_token():
            return
        if all(self._may_see(name) for name in batch.names):
            self._outlet.write_batch(batch, kind_of(batch.events[0].name))
            return
        for event in batch.events:
            if self._may_see(event.name):
                self._write(event.frame, kind_of(event.name))

    def _refused_by_token(self) -> bool:
        """
        The per-event token check (§5.4): when it fails, a bare ``jwt error``
        replaces the event (collapsed to one a second while the text stays).
        """
        error = self._token_error()
        if error is None:
            return False
        now = self._clock.seconds()
        last = self._last_jwt_error
        if last is None or last[0] != error or now - last[1] >= JWT_ERROR_INTERVAL:
            self._last_jwt_error = (error, now)
            self._write(encode_frame("jwt error", error), OTHER)
        return True

    def _may_see(self, name: str) -> bool:
        """
        The outbound permission filters (§6.1).
        """
        required = EVENT_PERMISSIONS.get(name)
        if required is None and name.startswith("backup completed"):
            required = "backup.read"
        return required is None or self.has_permission(required)

    def _write(self, frame: bytes, kind: str) -> None:
        if not self._closed:
            self._outlet.write(frame, kind)

    def _overflowed(self) -> None:
        log.warn("Websocket {id} for server {server} is not reading; dropping it",
                 id=self.id, server=self._server.uuid)
        self._teardown()
        self._closed = True
        self._channel.drop()

    def _teardown(self) -> None:
        if self._auth_timer is not None and self._auth_timer.active():
            self._auth_timer.cancel()
        self._auth_timer = None
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        self._ticker = None
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._server.sockets.discard(self)
        self._backlog.clear()
