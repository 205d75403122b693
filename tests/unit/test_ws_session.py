"""
Tests for the console websocket session logic (websocket.md §2–§13),
driven by a ``Clock`` with a fake server, channel and activity log.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Mapping

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.auth.denials import Denials
from wings_twisted.config import Config, config_from_dict
from wings_twisted.devpanel.tokens import TokenUser, mint_websocket
from wings_twisted.environment import NotAttached
from wings_twisted.servers.events import Batch, EventBus
from wings_twisted.servers.occupancy import Occupancy
from wings_twisted.servers.power import LOCK_BUSY_TEXT, PowerError, PowerLocked
from wings_twisted.websocket.limits import parse_message
from wings_twisted.websocket.session import GENERIC_ERROR, Session

TOKEN = "test-node-token-0123456789abcdef0123456789abcdef0123456789abcdef"
SERVER = "8f2a0c1e-3b4d-4e5f-9a6b-7c8d9e0f1a2b"
OTHER_SERVER = "0c5b4ae6-5a43-4b77-8f0d-6f3e1cd5d0a7"
USER = TokenUser("1b7f3c2a-9d8e-4f6a-8b5c-2d1e0f9a8b7c", 7)
OTHER_USER = TokenUser("2c8f3c2a-9d8e-4f6a-8b5c-2d1e0f9a8b7c", 8)
ADMIN = ["*", "admin.websocket.errors", "admin.websocket.install", "admin.websocket.transfer"]
WRAPPED = re.compile(r"^Error Event \[[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-"
                     r"[0-9a-f]{12}\]: (.*)$", re.S)
START = 1_800_000_000.0


class FakeServer:
    """
    The server facade of ``seams.ServerFacade``, scripted by tests.
    """

    def __init__(self, uuid: str = SERVER) -> None:
        self.uuid = uuid
        self.state = "offline"
        self.suspended = False
        self.occupancy = Occupancy()
        self.events = EventBus()
        self.sockets: set[Any] = set()
        self.ended_file_sessions: list[tuple[str, str | None]] = []
        self.power_calls: list[tuple[str, Deferred[None]]] = []
        self.commands: list[str] = []
        self.command_result: Any = None
        self.running = False
        self.log_lines: list[str] = []
        self.log_error: Exception | None = None
        self.disk_refreshes = 0
        self.disk_result: Deferred[None] | None = None

    def stats_arg(self) -> str:
        return json.dumps({"memory_bytes": 0, "memory_limit_bytes": 0, "cpu_absolute": 0,
                           "network": {"rx_bytes": 0, "tx_bytes": 0}, "uptime": 0,
                           "state": self.state, "disk_bytes": 4096})

    def refresh_disk_usage(self) -> Deferred[None]:
        self.disk_refreshes += 1
        return self.disk_result if self.disk_result is not None else succeed(None)

    def power(self, action: str, *, wait: float = 0) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.power_calls.append((action, d))
        return d

    def send_command(self, text: str) -> Deferred[None]:
        self.commands.append(text)
        if isinstance(self.command_result, Exception):
            return fail(self.command_result)
        return succeed(None)

    def accepts_commands(self) -> bool:
        return self.state != "offline"

    def is_running(self) -> Deferred[bool]:
        return succeed(self.running)

    def read_log(self, n: int) -> Deferred[list[str]]:
        if self.log_error is not None:
            return fail(self.log_error)
        return succeed(self.log_lines[-n:])

    def close_sockets(self, code: int, reason: str, user_uuid: str | None = None) -> None:
        for socket in list(self.sockets):
            if user_uuid is None or socket.user_uuid == user_uuid:
                socket.close_socket(code, reason)

    def end_file_sessions(self, reason: str, user_uuid: str | None = None) -> None:
        self.ended_file_sessions.append((reason, user_uuid))


class FakeChannel:
    """
    Records frames, close frames and drops.
    """

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.batches = 0
        self.closes: list[tuple[int, str]] = []
        self.dropped = False

    def send(self, frame: bytes) -> None:
        self.raw.append(frame)
        self.frames.append(json.loads(frame))

    def send_batch(self, batch: Batch) -> None:
        self.batches += 1
        for event in batch.events:
            self.send(event.frame)

    def close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))

    def drop(self) -> None:
        self.dropped = True


class FakeActivity:
    """
    Collects activity records.
    """

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def record(self, event: str, *, server: str, user: str | None, ip: str,
               metadata: Mapping[str, Any] | None = None) -> None:
        self.records.append({"event": event, "server": server, "user": user, "ip": ip,
                             "metadata": dict(metadata or {})})


def make_config(**websocket: Any) -> Config:
    """
    A configuration with the test token and ``websocket`` overrides; rate
    limits are off unless asked for (``LimitTests`` covers them), so tests
    can authenticate more than twice in a row.
    """
    websocket.setdefault("rate_limits", False)
    return config_from_dict({"token": TOKEN, "remote": "http://panel.test",
                             "websocket": websocket})


def frame(event: str, *args: Any) -> bytes:
    """
    An inbound frame.
    """
    body: dict[str, Any] = {"event": event}
    if args:
        body["args"] = list(args)
    return json.dumps(body).encode("utf-8")


class SessionCase(SynchronousTestCase):
    """
    A session on a fresh clock, fake server and channel.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.server = FakeServer()
        self.denials = Denials(START - 100)
        self.activity = FakeActivity()
        self.config = make_config()
        self.channel = FakeChannel()
        self.session = self.open_session(self.channel)

    def open_session(self, channel: FakeChannel, server: FakeServer | None = None) -> Session:
        server = server or self.server
        session = Session(server, channel, clock=self.clock,
                          config=lambda: self.config, denials=self.denials,
                          activity=self.activity, client_ip="203.0.113.9", power=server.power)
        session.open()
        return session

    def token(self, permissions: list[str] | None = None, *, user: TokenUser = USER,
              server: str = SERVER, **knobs: Any) -> str:
        knobs.setdefault("now", self.clock.seconds())
        return mint_websocket(TOKEN, server, user=user,
                              permissions=["*"] if permissions is None else permissions, **knobs)

    def send(self, *frames: bytes, session: Session | None = None) -> None:
        for f in frames:
            (session or self.session).receive(f, False)

    def auth(self, permissions: list[str] | None = None, **knobs: Any) -> None:
        self.send(frame("auth", self.token(permissions, **knobs)))

    def take(self, channel: FakeChannel | None = None) -> list[tuple[str, Any]]:
        """
        The frames sent since the last call, as (event, args or None).
        """
        channel = channel or self.channel
        out = [(f["event"], f.get("args")) for f in channel.frames]
        channel.frames.clear()
        return out

    def assertWrapped(self, arg: str, text: str) -> None:
        match = WRAPPED.match(arg)
        self.assertIsNotNone(match, arg)
        assert match is not None
        self.assertEqual(match.group(1), text)


class AuthTests(SessionCase):
    """
    ``auth`` (§4, §5.1, §7, §8.2).
    """

    def test_nothing_before_auth(self) -> None:
        """
        Nothing is sent on open; any non-``auth`` message before the first
        ``auth`` gets the bare ``jwt: no jwt present``.
        """
        self.assertEqual(self.take(), [])
        self.send(frame("send stats", None), frame("bogus"))
        self.assertEqual(self.take(), [("jwt error", ["jwt: no jwt present"])] * 2)

    def test_first_auth_offline(self) -> None:
        """
        First auth: ``auth success``, ``status``, then (offline, not
        installing) a disk refresh and one ``stats``; the socket takes a slot.
        """
        self.auth()
        events = self.take()
        self.assertEqual([e for e, _ in events], ["auth success", "status", "stats"])
        self.assertIsNone(events[0][1])
        self.assertEqual(events[1][1], ["offline"])
        self.assertEqual(json.loads(events[2][1][0])["disk_bytes"], 4096)
        self.assertEqual(self.server.disk_refreshes, 1)
        self.assertEqual(self.server.sockets, {self.session})
        self.assertEqual(self.session.user_uuid, USER.uuid)

    def test_first_auth_running_or_installing(self) -> None:
        """
        No ``stats`` on first auth while running, or offline but installing
        or transferring.
        """
        for begin, state in (("begin_install", "offline"), ("begin_transfer_out", "offline"),
                             (None, "running")):
            server = FakeServer()
            server.state = state
            if begin:
                getattr(server.occupancy, begin)()
            channel = FakeChannel()
            session = self.open_session(channel, server)
            self.send(frame("auth", self.token()), session=session)
            self.assertEqual(self.take(channel), [("auth success", None), ("status", [state])])
            self.assertEqual(server.disk_refreshes, 0)

    def test_refresh_is_auth_success_only(self) -> None:
        """
        A later ``auth`` only answers ``auth success`` and replaces the token.
        """
        self.auth()
        self.take()
        self.clock.advance(100)
        self.auth(user=OTHER_USER)
        self.assertEqual(self.take(), [("auth success", None)])
        self.assertEqual(self.session.user_uuid, OTHER_USER.uuid)
        self.assertEqual(self.server.disk_refreshes, 1)

    def test_panel_tokens_accepted(self) -> None:
        """
        Panel-shaped tokens (array ``aud``, ``nbf``, ``iat`` in the future)
        and float timestamps pass.
        """
        self.auth(now=self.clock.seconds() + 120)
        self.assertEqual(self.take()[0], ("auth success", None))
        channel = FakeChannel()
        session = self.open_session(channel)
        self.send(frame("auth", self.token(float_timestamps=True)), session=session)
        self.assertEqual(self.take(channel)[0], ("auth success", None))

    def test_jwt_errors_are_wrapped(self) -> None:
        """
        Failed ``auth`` answers a wrapped ``jwt error`` with the exact texts.
        """
        cases: list[tuple[dict[str, Any], str]] = [
            (dict(expired=True), "jwt: exp claim is invalid"),
            (dict(issued_before=START - 100), "jwt: created too far in past (denylist)"),
            (dict(permissions=["control.console"]), "jwt: missing connect permission"),
            (dict(scope="file-download"), "jwt: missing connect permission"),
            (dict(server=OTHER_SERVER), "jwt: server uuid mismatch"),
        ]
        for knobs, text in cases:
            permissions = knobs.pop("permissions", None)
            self.send(frame("auth", self.token(permissions, **knobs)))
            events = self.take()
            self.assertEqual(len(events), 1, knobs)
            self.assertEqual(events[0][0], "jwt error")
            self.assertWrapped(events[0][1][0], text)
        self.assertEqual(self.server.sockets, set())

    def test_scope(self) -> None:
        """
        A ``websocket`` scope passes; a missing scope passes unless
        ``tokens.require_scope``.
        """
        self.auth(scope=True)
        self.assertEqual(self.take()[0], ("auth success", None))
        self.config = config_from_dict({"token": TOKEN, "remote": "http://panel.test",
                                        "tokens": {"require_scope": True},
                                        "websocket": {"rate_limits": False}})
        self.auth()
        events = self.take()
        self.assertEqual(events[0][0], "jwt error")
        self.assertWrapped(events[0][1][0], "jwt: missing connect permission")

    def test_malformed_is_daemon_error(self) -> None:
        """
        A bad signature or garbage is a wrapped ``daemon error`` with the
        generic text on a first auth, even for an admin token.
        """
        self.send(frame("auth", self.token(ADMIN, wrong_key=True)), frame("auth", "garbage"))
        events = self.take()
        self.assertEqual([e for e, _ in events], ["daemon error", "daemon error"])
        for _, args in events:
            self.assertWrapped(args[0], GENERIC_ERROR)

    def test_admin_sees_real_text_on_refresh(self) -> None:
        """
        With ``admin.websocket.errors`` stored, a badly signed refresh shows
        ``jwt: HMAC verification failed``; the old token stays in place.
        """
        self.auth(ADMIN)
        self.take()
        self.send(frame("auth", self.token(ADMIN, wrong_key=True)))
        events = self.take()
        self.assertEqual(events[0][0], "daemon error")
        self.assertWrapped(events[0][1][0], "jwt: HMAC verification failed")
        self.send(frame("send stats", None))
        self.assertEqual(self.take()[0][0], "stats")

    def test_failed_refresh_keeps_token(self) -> None:
        """
        An expired refresh token fails but the stored one keeps working.
        """
        self.auth()
        self.take()
        self.send(frame("auth", self.token(expired=True)), frame("send stats", None))
        events = self.take()
        self.assertEqual(events[0][0], "jwt error")
        self.assertEqual(events[1][0], "stats")

    def test_auth_waits_for_disk_refresh(self) -> None:
        """
        Frames after a first ``auth`` wait until its ``stats`` is out.
        """
        pending: Deferred[None] = Deferred()
        self.server.disk_result = pending
        self.auth()
        self.send(frame("send stats", None))
        self.assertEqual([e for e, _ in self.take()], ["auth success", "status"])
        pending.callback(None)
        self.assertEqual([e for e, _ in self.take()], ["stats", "stats"])

    def test_disk_refresh_failure_still_sends_stats(self) -> None:
        """
        A failing disk walk is logged and the cached ``stats`` still sent.
        """
        self.server.disk_result = fail(OSError("walk failed"))
        self.auth()
        self.assertEqual([e for e, _ in self.take()], ["auth success", "status", "stats"])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)


class ParsingTests(SessionCase):
    """
    Inbound decoding (§2.1).
    """

    def test_parse_message(self) -> None:
        """
        Go's decoding rules: ``null`` elements become "", non-strings drop the
        message, missing parts default, ``null`` is an empty message.
        """
        self.assertEqual(parse_message(b'{"event":"send logs","args":[null]}'), ("send logs", [""]))
        self.assertEqual(parse_message(b'{"event":"x"}'), ("x", []))
        self.assertEqual(parse_message(b'{"args":null,"extra":1}'), ("", []))
        self.assertEqual(parse_message(b"null"), ("", []))
        for bad in (b"nope", b"[]", b'"x"', b'{"event":1}', b'{"event":"x","args":"a"}',
                    b'{"event":"x","args":[1]}', b'{"event":"x","args":[["a"]]}',
                    b'{"event":"x","args":[true]}', b"\xff", b"[" * 5000):
            self.assertIsNone(parse_message(bad), bad)
        self.assertEqual(parse_message(b'{"event":"x","args":["\\ud800a"]}'), ("x", ["\ufffda"]))

    def test_bad_input_ignored(self) -> None:
        """
        Bad JSON and non-string args get no reply; the socket stays usable.
        """
        self.auth()
        self.take()
        self.send(b"{not json", frame("send stats", 5))
        self.assertEqual(self.take(), [])
        self.send(frame("send stats", None))
        self.assertEqual(self.take()[0][0], "stats")

    def test_args_joined(self) -> None:
        """
        Arguments are joined without a separator.
        """
        self.auth()
        self.send(frame("set state", "st", "art"))
        self.assertEqual([a for a, _ in self.server.power_calls], ["start"])

    def test_too_large_and_binary(self) -> None:
        """
        Messages over 32 768 bytes and binary frames get a wrapped ``daemon
        error`` ``message too large`` (for anyone); exactly 32 768 is fine.
        """
        self.auth()
        self.take()
        body = frame("send stats", "")
        fitting = body[:-2] + b" " * (32768 - len(body)) + body[-2:]
        self.assertEqual(len(fitting), 32768)
        self.send(fitting)
        self.assertEqual(self.take()[0][0], "stats")
        self.session.receive(fitting + b" ", False)
        self.session.receive(frame("send stats"), True)
        events = self.take()
        self.assertEqual([e for e, _ in events], ["daemon error", "daemon error"])
        for _, args in events:
            self.assertWrapped(args[0], "message too large")


class PowerTests(SessionCase):
    """
    ``set state`` (§5.2, §13).
    """

    def test_success_records_activity(self) -> None:
        """
        The action runs without blocking the loop; on success the activity
        is recorded for the token's user and the client IP.
        """
        self.auth(["websocket.connect", "control.start"])
        self.take()
        self.send(frame("set state", "start"), frame("send stats", None))
        self.assertEqual(self.take()[0][0], "stats")
        self.assertEqual(self.activity.records, [])
        self.server.power_calls[0][1].callback(None)
        self.assertEqual(self.activity.records, [{
            "event": "server:power.start", "server": SERVER, "user": USER.uuid,
            "ip": "203.0.113.9", "metadata": {}}])

    def test_activity_user_is_the_token_at_dispatch(self) -> None:
        """
        A re-auth as someone else while the action runs does not change who
        the activity is attributed to.
        """
        self.auth()
        self.send(frame("set state", "stop"))
        self.auth(user=OTHER_USER)
        self.server.power_calls[0][1].callback(None)
        self.assertEqual(self.activity.records[0]["user"], USER.uuid)

    def test_permissions(self) -> None:
        """
        Missing permissions are silent; ``kill`` needs ``control.stop``.
        """
        self.auth(["websocket.connect", "control.stop"])
        self.take()
        self.send(frame("set state", "restart"), frame("set state", "start"),
                  frame("set state", "kill"))
        self.assertEqual(self.take(), [])
        self.assertEqual([a for a, _ in self.server.power_calls], ["kill"])

    def test_unknown_action(self) -> None:
        """
        An unknown action is a ``daemon error`` without permission check:
        generic for users, the real text for admins.
        """
        self.auth(["websocket.connect"])
        self.take()
        self.send(frame("set state", "explode"))
        events = self.take()
        self.assertEqual(events[0][0], "daemon error")
        self.assertWrapped(events[0][1][0], GENERIC_ERROR)
        self.auth(ADMIN)
        self.take()
        self.send(frame("set state", "explode"))
        self.assertWrapped(self.take()[0][1][0], "attempting to handle unknown power action")
        self.assertEqual(self.server.power_calls, [])

    def test_lock_busy(self) -> None:
        """
        Lock contention answers the fixed text even without admin rights.
        """
        self.auth()
        self.take()
        self.send(frame("set state", "start"))
        self.server.power_calls[0][1].errback(PowerLocked())
        events = self.take()
        self.assertEqual(events[0][0], "daemon error")
        self.assertWrapped(events[0][1][0], LOCK_BUSY_TEXT)
        self.assertEqual(self.activity.records, [])

    def test_other_failure(self) -> None:
        """
        Other failures: generic text for users, the real one for admins.
        """
        self.auth()
        self.take()
        self.send(frame("set state", "start"))
        self.server.power_calls[0][1].errback(PowerError("server is running"))
        self.assertWrapped(self.take()[0][1][0], GENERIC_ERROR)
        self.auth(ADMIN)
        self.take()
        self.send(frame("set state", "start"))
        self.server.power_calls[1][1].errback(
            PowerError("server is currently in a suspended state"))
        self.assertWrapped(self.take()[0][1][0], "server is currently in a suspended state")

    def test_unexpected_failure_logged(self) -> None:
        """
        An unexpected exception is logged with its traceback and reported.
        """
        self.auth()
        self.take()
        self.send(frame("set state", "start"))
        self.server.power_calls[0][1].errback(ZeroDivisionError())
        self.assertEqual(self.take()[0][0], "daemon error")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class CommandAndLogTests(SessionCase):
    """
    ``send command``, ``send logs``, ``send stats`` (§5.5–§5.7).
    """

    def test_command(self) -> None:
        """
        Written to the server and recorded; ignored while offline or without
        ``control.console``.
        """
        self.auth()
        self.send(frame("send command", "say hi"))
        self.assertEqual(self.server.commands, [])
        self.server.state = "running"
        self.send(frame("send command", "say ", "hi"))
        self.assertEqual(self.server.commands, ["say hi"])
        self.assertEqual(self.activity.records[0]["event"], "server:console.command")
        self.assertEqual(self.activity.records[0]["metadata"], {"command": "say hi"})
        self.auth(["websocket.connect"])
        self.send(frame("send command", "nope"))
        self.assertEqual(self.server.commands, ["say hi"])

    def test_command_failure(self) -> None:
        """
        A failing write is a ``daemon error``; no activity.
        """
        self.server.state = "running"
        self.auth(ADMIN)
        self.take()
        self.server.command_result = NotAttached()
        self.send(frame("send command", "x"))
        self.assertWrapped(self.take()[0][1][0], "environment not attached to the server process")
        self.assertEqual(self.activity.records, [])

    def test_logs(self) -> None:
        """
        Not running: no reply.  Running: the last lines, oldest first, as
        ``console output``; a read failure is a ``daemon error``.
        """
        self.server.log_lines = ["line %d" % i for i in range(200)]
        self.auth()
        self.take()
        self.send(frame("send logs", None))
        self.assertEqual(self.take(), [])
        self.server.running = True
        self.send(frame("send logs", None))
        events = self.take()
        self.assertEqual(len(events), 150)
        self.assertEqual(events[0], ("console output", ["line 50"]))
        self.assertEqual(events[-1], ("console output", ["line 199"]))
        self.server.log_error = OSError("gone")
        self.clock.advance(5)
        self.send(frame("send logs", None))
        self.assertEqual(self.take()[0][0], "daemon error")
        self.flushLoggedErrors(OSError)


class OutboundTests(SessionCase):
    """
    Server events, permission filters and the token check (§5.4, §6.1, §8).
    """

    def publish_all(self) -> list[str]:
        bus = self.server.events
        for name in ("console output", "install output", "transfer logs", "backup completed",
                     "backup completed:abc", "backup restore completed", "status"):
            bus.publish(name, "x")
        return [e for e, _ in self.take()]

    def test_filters(self) -> None:
        """
        ``install output``/``transfer logs`` need their admin permissions
        (``*`` never grants them); ``backup completed*`` needs ``backup.read``.
        """
        self.auth(["*"])
        self.take()
        self.assertEqual(self.publish_all(), ["console output", "backup completed",
                                              "backup completed:abc",
                                              "backup restore completed", "status"])
        self.auth(["websocket.connect"])
        self.take()
        self.assertEqual(self.publish_all(), ["console output", "backup restore completed",
                                              "status"])
        self.auth(ADMIN)
        self.take()
        self.assertEqual(len(self.publish_all()), 7)

    def test_frames_are_shared(self) -> None:
        """
        The event's cached frame is written as is.
        """
        self.auth()
        self.take()
        event = self.server.events.publish("deleted", "null")
        self.assertIs(self.channel.raw[-1], event.frame)
        self.assertEqual(self.take(), [("deleted", ["null"])])

    def test_expired_token_replaces_events(self) -> None:
        """
        Once expired, events become bare ``jwt error`` frames, at most one
        per second; the socket stays open and a fresh auth restores delivery.
        """
        self.auth(lifetime=60)
        self.take()
        self.clock.advance(61)
        for _ in range(5):
            self.server.events.publish("console output", "x")
        self.assertEqual(self.take(), [("jwt error", ["jwt: exp claim is invalid"])])
        self.clock.advance(1)
        self.server.events.publish("console output", "x")
        self.assertEqual(self.take(), [("jwt error", ["jwt: exp claim is invalid"])])
        self.send(frame("send stats", None))
        self.assertEqual(self.take(), [("jwt error", ["jwt: exp claim is invalid"])])
        self.auth()
        self.server.events.publish("console output", "y")
        self.assertEqual(self.take(), [("auth success", None), ("console output", ["y"])])
        self.assertEqual(self.channel.closes, [])

    def test_jti_deny(self) -> None:
        """
        A ``ws/deny`` entry turns later messages and events into the
        denylist ``jwt error`` and removes admin rights.
        """
        self.auth(ADMIN)
        self.take()
        self.denials.deny_jtis([self.jti()], self.clock.seconds())
        self.assertFalse(self.session.has_permission("admin.websocket.errors"))
        self.send(frame("send stats", None))
        self.server.events.publish("status", "running")
        self.assertEqual(self.take(), [("jwt error", ["jwt: created too far in past (denylist)"])] * 2)

    def jti(self) -> str:
        return hashlib.md5((str(USER.id) + SERVER).encode()).hexdigest()

    def test_ticker(self) -> None:
        """
        Every 30 s after the first auth: ``token expiring`` within 60 s of
        ``exp``, then ``token expired`` (replaced by ``jwt error``).
        """
        self.auth(lifetime=120)
        self.take()
        self.clock.advance(30)
        self.assertEqual(self.take(), [])
        self.clock.advance(30)
        self.assertEqual(self.take(), [("token expiring", None)])
        self.clock.advance(30)
        self.assertEqual(self.take(), [("token expiring", None)])
        self.clock.advance(30)
        self.assertEqual(self.take(), [("token expired", None)])
        self.clock.advance(30)
        self.assertEqual(self.take(), [("jwt error", ["jwt: exp claim is invalid"])])

    def test_unknown_event_with_token(self) -> None:
        """
        An unknown event with a valid token gets no reply.
        """
        self.auth()
        self.take()
        self.send(frame("mystery", "x"), b"null")
        self.assertEqual(self.take(), [])


class LimitTests(SessionCase):
    """
    Rate limits, the connection cap and the auth timeout (§9, §11.1).
    """

    def setUp(self) -> None:
        super().setUp()
        self.config = make_config(rate_limits=True)

    def test_global_limiter(self) -> None:
        """
        The 11th frame in a burst is dropped with ``throttled global``, the
        12th silently — even bad JSON counts.
        """
        self.send(*([b"junk"] * 12))
        self.assertEqual(self.take(), [("throttled", ["global"])])
        self.clock.advance(0.2)
        self.send(frame("x"))
        self.assertEqual(self.take(), [("jwt error", ["jwt: no jwt present"])])

    def test_event_limiter(self) -> None:
        """
        A third ``auth`` in a burst is throttled.
        """
        self.auth()
        self.auth()
        self.take()
        self.auth()
        self.assertEqual(self.take(), [("throttled", ["auth"])])

    def test_limits_switch(self) -> None:
        """
        ``websocket.rate_limits: false`` turns both layers off.
        """
        self.config = make_config(rate_limits=False)
        self.send(*([frame("x")] * 20))
        self.assertEqual(len(self.take()), 20)

    def test_cap(self) -> None:
        """
        Only authenticated sockets count; the auth over the cap closes 4400;
        a closed socket frees its slot; 0 is unlimited.
        """
        self.config = make_config(max_connections_per_server=2, rate_limits=True)
        channels = [FakeChannel() for _ in range(4)]
        sessions = [self.open_session(c) for c in channels]
        for session in sessions[:2]:
            self.send(frame("auth", self.token()), session=session)
        self.send(frame("auth", self.token()), session=sessions[2])
        self.assertEqual(channels[2].closes, [(4400, "too many open websocket connections")])
        self.assertEqual(self.take(channels[2]), [])
        self.assertEqual(len(self.server.sockets), 2)
        sessions[0].lost()
        self.send(frame("auth", self.token()), session=sessions[3])
        self.assertEqual(self.take(channels[3])[0], ("auth success", None))
        self.config = make_config(max_connections_per_server=0)
        more = [self.open_session(FakeChannel()) for _ in range(3)]
        for session in more:
            self.send(frame("auth", self.token()), session=session)
        self.assertEqual(len(self.server.sockets), 5)

    def test_auth_timeout(self) -> None:
        """
        An unauthenticated socket is dropped after 30 s; an authenticated one
        is not; 0 disables the timeout.
        """
        self.clock.advance(29)
        self.assertFalse(self.channel.dropped)
        self.clock.advance(1)
        self.assertTrue(self.channel.dropped)
        channel = FakeChannel()
        session = self.open_session(channel)
        self.send(frame("auth", self.token()), session=session)
        self.clock.advance(60)
        self.assertFalse(channel.dropped)
        self.config = make_config(auth_timeout=0)
        channel = FakeChannel()
        self.open_session(channel)
        self.clock.advance(3600)
        self.assertFalse(channel.dropped)


class CloseTests(SessionCase):
    """
    Suspension, deletion, deauthorization and back-pressure (§10.1, §11).
    """

    def test_suspended_close(self) -> None:
        """
        With ``close_on_suspend``: a suspended server's upgrade and messages
        are closed with 4409; without it the socket stays open.
        """
        self.server.suspended = True
        self.auth()
        self.assertEqual(self.take()[0], ("auth success", None))
        self.config = make_config(close_on_suspend=True)
        self.send(frame("send stats", None))
        self.assertEqual(self.take(), [])
        self.assertEqual(self.channel.closes, [(4409, "server is suspended")])
        self.assertEqual(self.server.sockets, set())
        channel = FakeChannel()
        self.open_session(channel)
        self.assertEqual(channel.closes, [(4409, "server is suspended")])

    def test_deleted(self) -> None:
        """
        ``deleted`` (``"null"``) then the 1001 close; the slot is released
        and events stop.
        """
        self.auth()
        self.take()
        self.server.events.publish("deleted", "null")
        self.server.close_sockets(1001, "server deleted")
        self.assertEqual(self.take(), [("deleted", ["null"])])
        self.assertEqual(self.channel.closes, [(1001, "server deleted")])
        self.assertEqual(self.server.sockets, set())
        self.assertEqual(len(self.server.events), 0)
        self.server.events.publish("status", "offline")
        self.send(frame("send stats", None))
        self.assertEqual(self.take(), [])

    def test_close_by_user(self) -> None:
        """
        ``close_sockets`` with a user closes only that user's sockets.
        """
        self.auth()
        other = FakeChannel()
        session = self.open_session(other)
        self.send(frame("auth", self.token(user=OTHER_USER)), session=session)
        self.server.close_sockets(4409, "user deauthorized", user_uuid=OTHER_USER.uuid)
        self.assertEqual(other.closes, [(4409, "user deauthorized")])
        self.assertEqual(self.channel.closes, [])
        self.assertEqual(self.server.sockets, {self.session})

    def test_lost_stops_timers(self) -> None:
        """
        A lost connection cancels the ticker and auth timer.
        """
        self.auth()
        self.session.lost()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_backpressure(self) -> None:
        """
        While paused: the newest 256 lines, every status, the newest stats;
        written in order on resume.
        """
        self.auth()
        self.take()
        self.session.pause()
        bus = self.server.events
        bus.publish("status", "starting")
        for i in range(300):
            bus.publish("console output", str(i))
        bus.publish("stats", "s1")
        bus.publish("status", "running")
        bus.publish("stats", "s2")
        self.assertEqual(self.take(), [])
        self.session.resume()
        events = self.take()
        self.assertEqual(events[0], ("status", ["starting"]))
        self.assertEqual(events[1], ("console output", ["44"]))
        self.assertEqual(events[256], ("console output", ["299"]))
        self.assertEqual(events[257:], [("status", ["running"]), ("stats", ["s2"])])
        bus.publish("console output", "live")
        self.assertEqual(self.take(), [("console output", ["live"])])

    def test_close_flushes(self) -> None:
        """
        Closing while paused writes what waits before the close frame.
        """
        self.auth()
        self.take()
        self.session.pause()
        self.server.events.publish("deleted", "null")
        self.server.close_sockets(1001, "server deleted")
        self.assertEqual(self.take(), [("deleted", ["null"])])
        self.assertEqual(self.channel.closes, [(1001, "server deleted")])

    def test_overflow_drops(self) -> None:
        """
        A client that never drains loses the connection instead of growing
        the daemon's memory.
        """
        self.auth()
        self.session.pause()
        for _ in range(2000):
            self.server.events.publish("status", "running")
        self.assertTrue(self.channel.dropped)
        self.assertEqual(self.server.sockets, set())
        self.assertEqual(len(self.server.events), 0)


class BatchTests(SessionCase):
    """
    Console lines reach a session once per reactor turn (``events.Batch``),
    with the same filters, token check and order as single events.
    """

    def setUp(self) -> None:
        super().setUp()
        self.server.events = EventBus(lambda flush: self.clock.callLater(0, flush))
        self.session = self.open_session(self.channel)

    def test_one_write_per_turn_in_order(self) -> None:
        """
        The lines of one turn go out together, after what was published
        before them and before what comes after.
        """
        self.auth()
        self.take()
        bus = self.server.events
        for n in range(5):
            bus.publish("console output", "line {}".format(n))
        self.assertEqual(self.take(), [])
        self.clock.advance(0)
        self.assertEqual(self.channel.batches, 1)
        self.assertEqual([a[0] for _, a in self.take()], ["line {}".format(n) for n in range(5)])
        bus.publish("console output", "before")
        bus.publish("status", "stopping")
        self.assertEqual(self.take(), [("console output", ["before"]), ("status", ["stopping"])])
        self.clock.advance(0)
        self.assertEqual(self.take(), [])

    def test_filters_and_token(self) -> None:
        """
        ``install output`` in a batch still needs its permission; an expired
        token turns a whole batch into one ``jwt error``.
        """
        self.auth(["*"], lifetime=60)
        self.take()
        bus = self.server.events
        bus.publish("install output", "secret step")
        bus.publish("console output", "public")
        self.clock.advance(0)
        self.assertEqual(self.take(), [("console output", ["public"])])
        self.clock.advance(61)
        self.clock.advance(2)  # past the collapse window of the ticker's own jwt error
        self.take()
        for n in range(3):
            bus.publish("console output", str(n))
        self.clock.advance(0)
        self.assertEqual([e for e, _ in self.take()], ["jwt error"])

    def test_paused_session_queues_lines(self) -> None:
        """
        While the transport is paused the batch's lines wait in the outbox
        (newest kept) and go out on resume.
        """
        self.auth()
        self.take()
        self.session.pause()
        self.server.events.publish("console output", "a")
        self.server.events.publish("console output", "b")
        self.clock.advance(0)
        self.assertEqual(self.take(), [])
        self.session.resume()
        self.assertEqual(self.take(), [("console output", ["a"]), ("console output", ["b"])])
        self.assertEqual(self.channel.batches, 0)


class BusBatchTests(SynchronousTestCase):
    """
    ``EventBus`` with a scheduler: plain subscribers get every event at once,
    batch subscribers the lines of a turn together.
    """

    def test_plain_and_batched(self) -> None:
        """
        One flush is scheduled per turn; a non-batched event flushes first;
        ``close`` drops what is pending.
        """
        clock = Clock()
        bus = EventBus(lambda flush: clock.callLater(0, flush))
        plain: list[str] = []
        batches: list[list[str]] = []
        singles: list[str] = []
        bus.subscribe(lambda e: plain.append(e.arg or ""))
        bus.subscribe(lambda e: singles.append(e.name),
                      batch=lambda b: batches.append([e.arg or "" for e in b.events]))
        bus.publish("console output", "1")
        bus.publish("install output", "2")
        self.assertEqual((plain, batches), (["1", "2"], []))
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(0)
        self.assertEqual(batches, [["1", "2"]])
        bus.publish("console output", "3")
        bus.publish("deleted", "null")
        self.assertEqual((batches[-1], singles), (["3"], ["deleted"]))
        bus.publish("console output", "4")
        bus.close()
        clock.advance(0)
        self.assertEqual(len(batches), 2)

    def test_wire_joined_once(self) -> None:
        """
        ``Batch.wire`` encodes the frames once for every caller.
        """
        clock = Clock()
        bus = EventBus(lambda flush: clock.callLater(0, flush))
        seen: list[Batch] = []
        bus.subscribe(lambda e: None, batch=seen.append)
        bus.publish("console output", "a")
        bus.publish("console output", "b")
        clock.advance(0)
        calls: list[bytes] = []

        def encode(payload: bytes) -> bytes:
            calls.append(payload)
            return b"<" + payload + b">"

        wire = seen[0].wire(encode)
        self.assertIs(seen[0].wire(encode), wire)
        self.assertEqual(len(calls), 2)
        self.assertTrue(wire.startswith(b'<{"event":"console output","args":["a"]}>'))
