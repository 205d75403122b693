"""
Two real ``twistd -n wings`` daemons on loopback, each with its own root, configuration and node
credentials, and one development panel (in this test process) that knows both nodes and drives
transfers between them as the Panel does (``wings_twisted.devpanel.transfers``).  A TCP relay can be
put between the source and the destination to cut or hold the connection mid-stream.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from typing import Any

import treq
import yaml
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from wings_twisted.devpanel.resource import listen
from wings_twisted.devpanel.state import DevPanelState, NodeCredentials
from wings_twisted.devpanel.tokens import mint_transfer, mint_websocket
from wings_twisted.devpanel.transfers import DaemonCalls, TransferRecord

from ..support import REPO, SERVER, TOKEN, TOKEN_ID, USER
from .test_daemon import _Daemon, _timeout, daemon_config, spawn_daemon
from .wsclient import WsClient

TOKEN_ID_2 = "testTokenId00002"
TOKEN_2 = "second-node-token-0123456789abcdef0123456789abcdef0123456789abcd"


class Node:
    """
    One daemon: its directory, process, URL and credentials.
    """

    def __init__(self, name: str, base: str, token_id: str, token: str) -> None:
        self.name = name
        self.base = base
        self.token_id = token_id
        self.token = token
        self.url = ""
        self.daemon: _Daemon | None = None
        self.process: Any = None

    @property
    def data(self) -> str:
        return os.path.join(self.base, "data")

    def volume(self, uuid: str = SERVER) -> str:
        return os.path.join(self.data, uuid)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": "Bearer " + self.token}

    def log(self) -> str:
        return self.daemon.output if self.daemon is not None else ""


class _RelayClient(Protocol):
    def __init__(self, peer: _RelayServer) -> None:
        self.peer = peer

    def connectionMade(self) -> None:
        self.peer.attach(self)

    def dataReceived(self, data: bytes) -> None:
        # The destination's answer always goes back.
        if self.peer.transport is not None:
            self.peer.transport.write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.peer.transport is not None:
            self.peer.transport.loseConnection()


class _RelayServer(Protocol):
    """
    One relayed connection: the source's bytes go to the destination until ``relay.limit``
    bytes went through; then the relay cuts (``mode == "cut"``) or holds (``"hold"``: what
    follows is kept, not forwarded, until ``release``).
    """

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.client: _RelayClient | None = None
        self.buffer: list[bytes] = []
        self.held: list[bytes] = []

    def connectionMade(self) -> None:
        self.relay.connections.append(self)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.relay.target_port)
        endpoint.connect(Factory.forProtocol(lambda: _RelayClient(self))).addErrback(
            lambda _: self.transport.loseConnection())

    def attach(self, client: _RelayClient) -> None:
        self.client = client
        for data in self.buffer:
            self._forward(data)
        self.buffer = []

    def dataReceived(self, data: bytes) -> None:
        if self.client is None:
            self.buffer.append(data)
        else:
            self._forward(data)

    def _forward(self, data: bytes) -> None:
        relay = self.relay
        assert self.client is not None
        if relay.limit is None:
            self.client.transport.write(data)
            return
        room = relay.limit - relay.forwarded
        if room > 0:
            self.client.transport.write(data[:room])
            relay.forwarded += min(room, len(data))
        if relay.forwarded >= relay.limit:
            if not relay.reached.called:
                relay.reached.callback(None)
            if relay.mode == "cut":
                self.transport.abortConnection()
                self.client.transport.abortConnection()
            else:
                # Kept, not paused: a paused reader would not notice the source hanging up.
                self.held.append(data[max(room, 0):])

    def release(self) -> None:
        """
        Stop holding: forward everything from now on.
        """
        self.relay.limit = None
        held, self.held = self.held, []
        if self.client is not None:
            for data in held:
                self.client.transport.write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.client is not None and self.client.transport is not None:
            self.client.transport.loseConnection()


class Relay:
    """
    A loopback TCP relay in front of ``target_port``.
    """

    def __init__(self, target_port: int, limit: int | None = None, mode: str = "cut") -> None:
        self.target_port = target_port
        self.limit = limit
        self.mode = mode
        self.forwarded = 0
        self.connections: list[_RelayServer] = []
        self.reached: Deferred[None] = Deferred()
        self.port: Any = None

    async def start(self) -> int:
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        self.port = await endpoint.listen(Factory.forProtocol(lambda: _RelayServer(self)))
        return int(self.port.getHost().port)

    def release(self) -> None:
        for connection in self.connections:
            connection.release()

    async def stop(self) -> None:
        for connection in self.connections:
            if connection.transport is not None:
                connection.transport.abortConnection()
        if self.port is not None:
            await self.port.stopListening()


class TwoNodeTestCase(TestCase):
    """
    The development panel with nodes ``node1`` (the source: the server ``SERVER`` lives there)
    and ``node2``, and a daemon for each.
    """

    timeout = 90

    async def start(self, **server: Any) -> None:
        self.base = tempfile.mkdtemp(prefix="wings-xfer-")
        self.addCleanup(shutil.rmtree, self.base, True)
        self.node1 = Node("node1", os.path.join(self.base, "node1"), TOKEN_ID, TOKEN)
        self.node2 = Node("node2", os.path.join(self.base, "node2"), TOKEN_ID_2, TOKEN_2)
        server.setdefault("file_denylist", ["*.secret"])
        self.state = DevPanelState.from_dict({
            "node": {"token_id": TOKEN_ID, "token": TOKEN, "name": "node1"},
            "nodes": {"node2": {"token_id": TOKEN_ID_2, "token": TOKEN_2,
                                "daemon_url": "http://127.0.0.1:1"}},
            "servers": [dict({"uuid": SERVER}, **server)],
            "users": [{"uuid": USER, "id": 7, "username": "tester", "password": "x",
                       "root_admin": True, "permissions": {SERVER: ["*"]}}],
        })
        self.panel = await listen(self.state, reactor)
        self.addCleanup(self.panel.stop)
        for node in (self.node1, self.node2):
            os.makedirs(node.base)
            await self.spawn(node)
        self.state.node.daemon_url = self.node1.url
        self.state.nodes["node2"].daemon_url = self.node2.url
        assert isinstance(self.state.daemon_calls, DaemonCalls)
        self.calls: DaemonCalls = self.state.daemon_calls

    def write_config(self, node: Node) -> str:
        config = daemon_config(node.base, node.token_id, node.token, self.panel.url)
        path = os.path.join(node.base, "config.yml")
        with open(path, "w") as f:
            yaml.safe_dump(config, f)
        return path

    async def spawn(self, node: Node) -> None:
        env = dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1")
        resets = self.state.reset_count
        daemon, process = spawn_daemon(self, self.write_config(node), node.base, env, 20)
        node.daemon, node.process = daemon, process
        port = await _timeout(daemon.listening)
        node.url = "http://127.0.0.1:{}".format(port)
        await self.wait_for(lambda: self.state.reset_count > resets, 30)

    async def wait_for(self, predicate: Any, timeout: float = 30.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("not met in {}s: {}\n--- node1:\n{}\n--- node2:\n{}".format(
                    timeout, what, self.node1.log()[-4000:], self.node2.log()[-4000:]))
            await deferLater(reactor, 0.05, lambda: None)

    async def call(self, node: Node, method: str, path: str, **kwargs: Any) -> tuple[Any, bytes]:
        headers = kwargs.pop("headers", node.auth)
        response = await treq.request(method, node.url + path, headers=headers, reactor=reactor,
                                      persistent=False, **kwargs)
        return response, await response.content()

    def token(self, **knobs: Any) -> str:
        """
        A transfer token for ``SERVER`` signed with node2's daemon token, as the panel mints it.
        """
        node = NodeCredentials(TOKEN_ID_2, TOKEN_2, daemon_url=self.node2.url,
                               url=self.panel.url, name="node2")
        return mint_transfer(node, SERVER, **knobs)

    def pending(self, old: str = "node1", new: str = "node2") -> TransferRecord:
        """
        A pending transfer record, as the panel writes it before it calls the source.
        """
        record = TransferRecord(SERVER, old, new, {}, None, time.time())
        self.state.transfers[SERVER] = record
        self.state.servers[SERVER].transfer = True
        return record

    async def push(self, url: str, token: str) -> tuple[Any, bytes]:
        """
        The panel's call to the source with a given destination URL and token.
        """
        body = {"server_id": SERVER, "url": url, "token": "Bearer " + token,
                "server": {"uuid": SERVER, "start_on_completion": False}}
        return await self.call(self.node1, "POST", "/api/servers/{}/transfer".format(SERVER),
                               data=json.dumps(body).encode())

    def reports(self, path_end: str) -> list[Any]:
        """
        The panel's received transfer reports ending with ``path_end`` (``success``/``failure``).
        """
        return [r for r in self.state.received
                if r.path == "/servers/{}/transfer/{}".format(SERVER, path_end)]

    async def websocket(self, node: Node) -> WsClient:
        credentials = NodeCredentials(node.token_id, node.token, daemon_url=node.url,
                                      url=self.panel.url, name=node.name)
        url = node.url.replace("http://", "ws://") + "/api/servers/{}/ws".format(SERVER)
        client = WsClient(reactor, url, self.panel.url)
        self.addCleanup(client.close)
        await client.opened.addTimeout(15, reactor)
        client.send("auth", mint_websocket(credentials, SERVER,
                                           permissions=["*", "admin.websocket.transfer"]))
        self.assertEqual((await client.next("auth success"))["event"], "auth success")
        return client

    async def registered(self, node: Node) -> bool:
        response, _ = await self.call(node, "GET", "/api/servers/" + SERVER)
        return bool(response.code == 200)
