"""
Test support: a daemon ``Node`` on a fake clock with a synchronous
``run_blocking``, the development panel joined to it in memory, and an HTTP
exchange with the daemon's real ``Site`` (its request class included) over
``twisted.test.iosim`` — no sockets, no global reactor, no sleeping.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import tarfile
import tempfile
from dataclasses import dataclass, field
from typing import Any, Mapping

import psutil
from treq.testing import HasHeaders, RequestSequence, StringStubbingResource, StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import fail, succeed
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.python.filepath import FilePath
from twisted.test import iosim
from zope.interface import implementer

from wings_twisted.activity import ActivityLog
from wings_twisted.blocking import run_inline
from wings_twisted.config import Config, config_from_dict
from wings_twisted.devpanel.resource import build_resource
from wings_twisted.devpanel.state import DevPanelState
from wings_twisted.environment import (
    STATES,
    EnvironmentError,
    IEnvironment,
    InstallResult,
    NotAttached,
)
from wings_twisted.node import Node
from wings_twisted.panel import PanelClient
from wings_twisted.servers.build import build_server
from wings_twisted.tap import environment_factory
from wings_twisted.web.site import build_site

#: The checkout the tests run from (the daemon under test imports it).
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN_ID = "testTokenId00001"
TOKEN = "test-node-token-0123456789abcdef0123456789abcdef0123456789abcdef"
SERVER = "8f2a0c1e-3b4d-4e5f-9a6b-7c8d9e0f1a2b"
USER = "1b7f3c2a-9d8e-4f6a-8b5c-2d1e0f9a8b7c"


def panel_state(*servers: str) -> DevPanelState:
    """
    A development-panel state with the test node credentials and ``servers``.
    """
    state = DevPanelState.from_dict({
        "node": {"token_id": TOKEN_ID, "token": TOKEN, "daemon_url": "http://127.0.0.1:8080",
                 "url": "http://panel.test"},
        "servers": [{"uuid": uuid} for uuid in servers],
        "users": [{"uuid": USER, "id": 7, "username": "tester", "password": "x",
                   "permissions": {uuid: ["*"] for uuid in servers}}],
    })
    return state


def make_config(base: FilePath, **overrides: Any) -> Config:
    """
    A configuration whose directories live under ``base``.
    """
    raw: dict[str, Any] = {
        "token_id": TOKEN_ID,
        "token": TOKEN,
        "remote": "http://panel.test",
        "system": {
            "root_directory": base.child("root").path,
            "log_directory": base.child("log").path,
            "data": base.child("volumes").path,
            "archive_directory": base.child("archives").path,
            "backup_directory": base.child("backups").path,
            "tmp_directory": base.child("tmp").path,
            "user": {"uid": os.getuid(), "gid": os.getgid()},
        },
    }
    _merge(raw, overrides)
    return config_from_dict(raw)


def _merge(into: dict[str, Any], changes: Mapping[str, Any]) -> None:
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


class Harness:
    """
    A node, its site and the development panel, all in memory.
    """

    def __init__(self, base: FilePath, *servers: str, **config: Any) -> None:
        base.makedirs(ignoreExistingDirectory=True)
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.state = panel_state(*servers)
        self.panel_http = StubTreq(build_resource(self.state, self.clock))
        self.config = make_config(base, **config)
        for path in ("root_directory", "data", "backup_directory"):
            os.makedirs(getattr(self.config.system, path), exist_ok=True)
        panel = PanelClient(self.panel_http, self.clock, remote="http://panel.test",
                            token_id=TOKEN_ID, token=TOKEN, jitter=lambda: 0.5)
        activity = ActivityLog(os.path.join(self.config.system.root_directory, "wings.db"),
                               clock=self.clock.seconds, run_blocking=run_inline,
                               send=panel.send_activity)
        self.node = Node(self.config, clock=self.clock, run_blocking=run_inline, panel=panel,
                         activity=activity,
                         make_environment=environment_factory(
                             self.config.environment.driver, reactor=self.clock,
                             config=lambda: self.node.config, run_blocking=run_inline))
        self.site = build_site(self.node)

    def add_server(self, uuid: str = SERVER) -> Any:
        """
        Register ``uuid`` from the panel's fixture, with its volume.
        """
        fixture = self.state.servers.get(uuid) or self.state.add_server(uuid)
        server = build_server(self.node, uuid, fixture.configuration())
        server.volume.ensure_root()
        self.node.registry.add(server)
        return server

    def request(self, raw: bytes, *, peer: str = "127.0.0.1", chunks: int = 0) -> "Response":
        """
        Send raw request bytes to the site and parse what comes back.
        ``chunks`` > 0 delivers the bytes in pieces of that size.
        """
        return exchange(self.site, raw, peer=peer, chunks=chunks)

    def get(self, path: str, headers: Mapping[str, str] | None = None, *,
            method: str = "GET", body: bytes = b"", peer: str = "127.0.0.1") -> "Response":
        """
        A request with the node token unless ``headers`` has ``Authorization``.
        """
        lines = [f"{method} {path} HTTP/1.1", "Host: daemon.test", "Connection: close"]
        merged = {"Authorization": "Bearer " + TOKEN}
        merged.update(headers or {})
        for name, value in merged.items():
            if value is not None:
                lines.append(f"{name}: {value}")
        if body or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body)}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body
        return self.request(raw, peer=peer)


@dataclass
class Response:
    """
    A parsed HTTP response.
    """

    status: int
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""
    complete: bool = True

    def header(self, name: str) -> str | None:
        """
        The first value of header ``name`` (case-insensitive).
        """
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def json(self) -> Any:
        """
        The body as JSON.
        """
        import json
        return json.loads(self.body)


class _Collector(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True


def parse_response(data: bytes, *, head: bool = False) -> Response:
    """
    Parse one HTTP/1.1 response (Content-Length framing or to end of data).
    """
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        return Response(0, {}, data, complete=False)
    lines = data[:head_end].decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    body = data[head_end + 4:]
    length = headers.get("content-length")
    complete = True
    if length and not head:
        expected = int(length[0])
        complete = len(body) >= expected
        body = body[:expected]
    return Response(status, headers, body, complete)


def exchange(site: Any, raw: bytes, *, peer: str = "127.0.0.1", chunks: int = 0) -> Response:
    """
    Connect a client to ``site`` in memory, send ``raw``, pump until quiet.
    """
    server = site.buildProtocol(IPv4Address("TCP", peer, 40000))
    client = _Collector()
    server_transport = iosim.FakeTransport(server, isServer=True,
                                           peerAddress=IPv4Address("TCP", peer, 40000))
    client_transport = iosim.FakeTransport(client, isServer=False)
    pump = iosim.connect(server, server_transport, client, client_transport, greet=False)
    if chunks:
        for start in range(0, len(raw), chunks):
            client_transport.write(raw[start:start + chunks])
            pump.flush()
    else:
        client_transport.write(raw)
    pump.flush()
    # Hang up: a kept-alive channel would leave its idle timer on the global reactor.
    client_transport.loseConnection()
    pump.flush()
    return parse_response(client.data, head=raw.startswith(b"HEAD "))


def mint(clock: Any, *, key: str = TOKEN, lifetime: int = 900, **claims: Any) -> str:
    """
    A JWT shaped like the panel's (downloads-uploads.md §2.1), signed with
    ``key``; ``claims`` add to or (with ``None``) remove from the defaults.
    """
    import secrets

    import jwt
    now = int(clock.seconds())
    body: dict[str, Any] = {
        "iss": "http://panel.test", "aud": ["http://127.0.0.1:8080"], "jti": "j" * 32,
        "iat": now, "nbf": now - 300, "exp": now + lifetime,
        "unique_id": secrets.token_hex(8), "user_uuid": USER, "user_id": 7,
    }
    for name, value in claims.items():
        if value is None:
            body.pop(name, None)
        else:
            body[name] = value
    return jwt.encode(body, key, algorithm="HS256", headers={"jti": body.get("jti", "")})


@implementer(IEnvironment)
class FakeEnvironment:
    """
    An ``IEnvironment`` the test drives: ``start`` moves to ``starting``
    and "spawns" at once; the test then calls ``emit`` for console lines,
    ``sample`` for stats and ``exit`` for the process ending.  Every call is
    recorded in ``calls``.
    """

    kind = "fake"
    outlives_daemon = False

    def __init__(self) -> None:
        self.state = "offline"
        self.listener: Any = None
        self.settings: Any = None
        self.calls: list[tuple[Any, ...]] = []
        self.alive = False
        self.commands: list[str] = []
        self.history: list[str] = []
        self.exit_code = 0
        self.oom = False
        self.start_error: Exception | None = None
        #: What ``stop`` does: "exit" (the process obeys at once) or "ignore".
        self.on_stop = "exit"
        self.install_result = InstallResult(True, 0)
        self.install_lines: list[str] = []

    def set_state(self, state: str) -> None:
        if state not in STATES:
            raise ValueError(state)
        old, self.state = self.state, state
        if old != state and self.listener is not None:
            self.listener.state_changed(old, state)

    def set_listener(self, listener: Any) -> None:
        self.listener = listener

    def apply_settings(self, settings: Any) -> None:
        self.settings = settings
        self.calls.append(("apply_settings",))

    def exists(self) -> Any:
        return succeed(True)

    def is_running(self) -> Any:
        return succeed(self.alive)

    def create(self) -> Any:
        return succeed(None)

    def prepare_start(self) -> Any:
        return succeed(None)

    def start(self) -> Any:
        self.calls.append(("start",))
        if self.alive:
            self.set_state("running")
            return succeed(None)
        self.history = []
        self.set_state("starting")
        if self.start_error is not None:
            self.set_state("stopping")
            self.set_state("offline")
            return fail(self.start_error)
        self.alive = True
        return succeed(None)

    def is_attached(self) -> bool:
        return self.alive

    def send_command(self, text: str) -> Any:
        if not self.alive:
            return fail(NotAttached())
        stop = self.settings.stop if self.settings is not None else None
        if stop is not None and stop.type == "command" and text == stop.value:
            self.set_state("stopping")
        self.commands.append(text)
        if stop is not None and stop.type == "command" and text == stop.value \
                and self.on_stop == "exit":
            self.exit(0)
        return succeed(None)

    def emit(self, line: str) -> None:
        """
        The process printed ``line``.
        """
        self.history.append(line)
        self.listener.output(line)

    def sample(self, **values: Any) -> None:
        """
        A stats sample.
        """
        self.listener.stats(values)

    def exit(self, code: int = 0, oom: bool = False) -> None:
        """
        The process ended.
        """
        self.alive = False
        self.exit_code, self.oom = code, oom
        self.set_state("offline")

    def stop(self) -> Any:
        self.calls.append(("stop",))
        if self.state != "offline":
            self.set_state("stopping")
        if self.alive and self.on_stop == "exit":
            self.exit(0)
        return succeed(None)

    def wait_for_stop(self, timeout: float, kill_on_timeout: bool) -> Any:
        self.calls.append(("wait_for_stop", timeout, kill_on_timeout))
        self.stop()
        if self.alive:
            if not kill_on_timeout:
                return fail(EnvironmentError("timed out"))
            self.exit(137)
        return succeed(None)

    def terminate(self, signal: str) -> Any:
        self.calls.append(("terminate", signal))
        if self.state != "offline":
            self.set_state("stopping")
        if self.alive:
            self.exit(137 if signal == "SIGKILL" else 143)
        else:
            self.set_state("offline")
        return succeed(None)

    def exit_state(self) -> tuple[int, bool]:
        return self.exit_code, self.oom

    def uptime_ms(self) -> int:
        return 0

    def read_log(self, lines: int) -> Any:
        return succeed(self.history[-lines:])

    def update_limits(self) -> Any:
        self.calls.append(("update_limits",))
        return succeed(None)

    def destroy(self) -> Any:
        self.calls.append(("destroy",))
        if self.alive:
            self.set_state("stopping")
            self.alive = False
        self.set_state("offline")
        return succeed(None)

    def run_installer(self, script: str, image: str, entrypoint: str, env: Any,
                      on_line: Any) -> Any:
        self.calls.append(("run_installer", script, image, entrypoint))
        for line in self.install_lines:
            on_line(line)
        return succeed(self.install_result)


def unix_socket_at(path: str) -> socket.socket:
    """
    A bound UNIX socket whose file is at ``path``, however long the path
    (``bind`` takes at most 107 bytes: bind in a short directory, then
    rename the socket file into place).  The caller closes it.
    """
    scratch = tempfile.mkdtemp(prefix="wt-", dir="/tmp")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(os.path.join(scratch, "s"))
        os.rename(os.path.join(scratch, "s"), path)
    except BaseException:
        sock.close()
        raise
    finally:
        os.rmdir(scratch) if not os.listdir(scratch) else None
    return sock


def kill_quietly(pid: int) -> None:
    """
    SIGKILL ``pid`` if it still exists.
    """
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def process_alive(pid: int) -> bool:
    """
    Whether ``pid`` runs (a zombie waiting to be reaped does not count).
    """
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@dataclass
class Expect:
    """
    One request a scripted peer expects (``ScriptedPeer``) and its answer.
    ``headers`` need only be a subset of what is sent; ``data`` is compared
    exactly (``None`` accepts any body).
    """

    method: str
    url: str
    status: int = 200
    body: bytes = b""
    params: Mapping[bytes, list[bytes]] = field(default_factory=dict)
    headers: Mapping[bytes, list[bytes]] = field(default_factory=dict)
    data: bytes | None = b""
    answer_headers: Mapping[bytes, bytes] = field(default_factory=dict)


class _AnyBody:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, bytes)


class ScriptedPeer:
    """
    A remote HTTP peer that answers exactly the listed requests, in order
    (treq's ``RequestSequence``): an S3 endpoint behind presigned URLs, a
    transfer destination, the Engine API.  Client code under test gets
    ``peer.treq`` as its ``HTTPClient``; ``with peer.consumed(self.fail):``
    around the exchange fails the test on an unexpected request or one left
    unsent.  Synchronous: call ``peer.treq.flush()`` to deliver answers.
    """

    def __init__(self, steps: list[Expect]) -> None:
        self.failures: list[str] = []
        self.sequence = RequestSequence(
            [((step.method.lower().encode("ascii"), step.url, dict(step.params),
               HasHeaders(dict(step.headers)), _AnyBody() if step.data is None else step.data),
              (step.status, dict(step.answer_headers), step.body)) for step in steps],
            self.failures.append)
        self.treq = StubTreq(StringStubbingResource(self.sequence))

    def consumed(self, fail: Any) -> Any:
        """
        A context manager that fails through ``fail`` unless every step was
        requested, in order, and nothing else was.
        """
        return self.sequence.consume(fail)


def hostile_tar_gz() -> bytes:
    """
    A tar.gz of the entries an extraction must neutralise: a ``..`` escape and an absolute
    name (both land inside, as ``escape.txt`` and ``abs.txt``), a symlink and a hard link to
    ``/etc``, and a character device (all three skipped).
    """
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as archive:
        for name, kind, link in (("../../../escape.txt", tarfile.REGTYPE, ""),
                                 ("/abs.txt", tarfile.REGTYPE, ""),
                                 ("evil", tarfile.SYMTYPE, "/etc"),
                                 ("hard", tarfile.LNKTYPE, "/etc/passwd"),
                                 ("tty", tarfile.CHRTYPE, "")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            data = b"payload" if kind == tarfile.REGTYPE else b""
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return raw.getvalue()
