"""
The console websocket and power control end to end: a real ``twistd -n
wings`` process with the process environment runs the project's example
game for the development panel; a real websocket client (Autobahn) drives
it the way the Panel's browser console does.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import sys
import time
from typing import Any

import psutil
from twisted.internet import reactor

from wings_twisted.devpanel import tokens
from wings_twisted.devpanel.resource import listen
from wings_twisted.devpanel.state import DevPanelState

from ..support import REPO, SERVER, TOKEN, TOKEN_ID, USER, process_alive
from .test_daemon import DaemonTestCase
from .wsclient import WsClient

HELPER = "6d7e8f90-1a2b-4c3d-8e4f-5a6b7c8d9e0f"
# The game imports the checkout, not whatever copy is installed in the virtualenv.
GAME = "PYTHONPATH={} {} -m wings_twisted.devpanel.examplegame --players {{{{MAX_PLAYERS}}}}".format(
    shlex.quote(REPO), shlex.quote(sys.executable))


def status_args(events: list[dict[str, Any]]) -> list[str]:
    return [e["args"][0] for e in events if e["event"] == "status"]


class ConsoleTestCase(DaemonTestCase):
    """
    A daemon whose server runs the example game; ``connect`` opens an
    authenticated console.
    """

    timeout = 90
    throttle_lines = 2000
    rate_limits = True

    async def start_panel(self, *servers: str) -> None:
        self.state = DevPanelState.from_dict({
            "node": {"token_id": TOKEN_ID, "token": TOKEN, "daemon_url": "http://127.0.0.1:8080"},
            "servers": [{"uuid": s, "invocation": GAME, "environment": {"MAX_PLAYERS": "12"},
                         "done": "Server is ready", "stop": "stop"} for s in servers],
            "users": [
                {"uuid": USER, "id": 7, "username": "owner", "password": "x", "root_admin": True,
                 "permissions": {s: ["*"] for s in servers}},
                {"uuid": HELPER, "id": 8, "username": "helper", "password": "x",
                 "permissions": {s: ["websocket.connect", "control.console"] for s in servers}},
            ],
        })
        self.panel = await listen(self.state, reactor)
        self.addCleanup(self.panel.stop)

    def write_config(self, **api: Any) -> str:
        import yaml
        path = super().write_config(**api)
        with open(path) as f:
            config = yaml.safe_load(f)
        config["system"]["activity_send_interval"] = 1
        config["throttles"] = {"lines": self.throttle_lines, "line_reset_interval": 1000}
        config["websocket"] = {"rate_limits": self.rate_limits}
        with open(path, "w") as f:
            yaml.safe_dump(config, f)
        return path

    def ws_token(self, user: str = USER, **knobs: Any) -> str:
        return tokens.mint_websocket(self.state, SERVER, user=user, **knobs)

    async def connect(self, user: str = USER, origin: str | None = None,
                      auth: bool = True) -> WsClient:
        url = self.url.replace("http://", "ws://") + "/api/servers/{}/ws".format(SERVER)
        client = WsClient(reactor, url, self.panel.url if origin is None else origin)
        self.addCleanup(client.close)
        self.clients = getattr(self, "clients", []) + [client]
        await client.opened.addTimeout(15, reactor)
        if auth:
            client.send("auth", self.ws_token(user))
            self.assertEqual(await client.next(), {"event": "auth success"})
        return client

    async def running(self, client: WsClient) -> None:
        client.send("set state", "start")
        await client.until("status", "running", timeout=30)

    def game_process(self) -> psutil.Process:
        daemon = psutil.Process(self.process.pid)
        for child in daemon.children(recursive=True):
            if "wings_twisted.devpanel.examplegame" in " ".join(child.cmdline()):
                return child
        raise AssertionError("the example game is not running")



class ConsoleTests(ConsoleTestCase):
    async def test_console_session(self) -> None:
        """
        auth → status + stats; start → starting, console output, running;
        a command echoes; logs replay; stop → stopping, offline; activity
        reaches the panel.
        """
        await self.start(SERVER)
        client = await self.connect()
        first = await client.next()
        self.assertEqual(first, {"event": "status", "args": ["offline"]})
        stats = json.loads((await client.next("stats"))["args"][0])
        self.assertEqual(stats["state"], "offline")
        self.assertEqual(set(stats), {"memory_bytes", "memory_limit_bytes", "cpu_absolute",
                                      "network", "uptime", "state", "disk_bytes"})
        client.send("set state", "start")
        seen = await client.until("status", "running", timeout=30)
        self.assertEqual(status_args(seen), ["starting", "running"])
        console = [e["args"][0] for e in seen if e["event"] == "console output"]
        self.assertIn("Server is ready", console)
        self.assertTrue(any("players" in line for line in console))
        client.send("send command", "say hello")
        await client.until("console output", "[Server] hello")
        # The first samples of a loaded machine may predate the process's pages: wait for
        # one that measured it (the event, not a fixed delay).
        stats = json.loads((await client.next("stats"))["args"][0])
        while stats["memory_bytes"] == 0:
            stats = json.loads((await client.next("stats"))["args"][0])
        self.assertGreater(stats["memory_bytes"], 0)
        self.assertGreater(stats["uptime"], 0)
        # History for a reconnecting browser.
        other = await self.connect()
        other.send("send logs", None)
        replay = await other.until("console output", "[Server] hello")
        self.assertIn("Server is ready", [e["args"][0] for e in replay
                                          if e["event"] == "console output"])
        client.send("set state", "stop")
        seen = await client.until("status", "offline", timeout=30)
        self.assertEqual(status_args(seen), ["stopping", "offline"])
        self.assertNotIn("Detected server process in a crashed state!",
                         " ".join(e["args"][0] for e in seen if e.get("args")))
        await self.wait_for(lambda: {"server:power.start", "server:console.command",
                                     "server:power.stop"} <= {a["event"] for a in
                                                              self.state.activity})
        command = [a for a in self.state.activity if a["event"] == "server:console.command"]
        self.assertEqual((command[0]["metadata"], command[0]["user"], command[0]["ip"]),
                         ({"command": "say hello"}, USER, "127.0.0.1"))

    async def test_restart_and_kill(self) -> None:
        await self.start(SERVER)
        client = await self.connect()
        await self.running(client)
        client.send("set state", "restart")
        seen = await client.until("status", "running", timeout=30)
        self.assertEqual(status_args(seen), ["stopping", "offline", "starting", "running"])
        first = self.game_process().pid
        client.send("set state", "kill")
        seen = await client.until("status", "offline")
        self.assertEqual(status_args(seen), ["stopping", "offline"])
        await self.wait_for(lambda: not process_alive(first))

    async def test_crash_from_outside_is_restarted(self) -> None:
        """
        A game killed by someone else is a crash: the daemon prints the
        crash lines and starts it again.
        """
        await self.start(SERVER)
        client = await self.connect()
        await self.running(client)
        os.kill(self.game_process().pid, signal.SIGKILL)
        seen = await client.until("status", "running", timeout=30)
        lines = [e["args"][0] for e in seen if e["event"] == "console output"]
        text = "\n".join(lines)
        self.assertIn("Detected server process in a crashed state!", text)
        self.assertIn("Exit code: 137", text)
        self.assertIn("Out of memory: false", text)
        self.assertEqual(status_args(seen), ["offline", "starting", "running"])

    async def test_http_power_and_commands(self) -> None:
        await self.start(SERVER)
        client = await self.connect()
        headers = {"Authorization": "Bearer " + TOKEN}
        response, _ = await self.call("POST", "/api/servers/{}/commands".format(SERVER),
                                      headers=headers, json={"commands": ["list"]})
        self.assertEqual(response.code, 502)
        response, _ = await self.call("POST", "/api/servers/{}/power".format(SERVER),
                                      headers=headers, json={"action": "start"})
        self.assertEqual(response.code, 202)
        await client.until("status", "running", timeout=30)
        response, _ = await self.call("POST", "/api/servers/{}/commands".format(SERVER),
                                      headers=headers, json={"commands": ["list"]})
        self.assertEqual(response.code, 204)
        await client.until("console output", "of a max of 12 players")
        response, body = await self.call("GET", "/api/servers/{}/logs?size=3".format(SERVER),
                                         headers=headers)
        self.assertEqual(len(json.loads(body)["data"]), 3)
        while json.loads((await client.next("stats"))["args"][0])["memory_bytes"] == 0:
            pass
        response, body = await self.call("GET", "/api/servers/" + SERVER, headers=headers)
        details = json.loads(body)
        self.assertEqual(details["state"], "running")
        self.assertGreater(details["utilization"]["memory_bytes"], 0)


class TokenTests(ConsoleTestCase):
    # Three auths in a row: the per-socket auth limiter (unit-tested) would hold the third.
    rate_limits = False

    async def test_origin_and_token_errors(self) -> None:
        await self.start(SERVER)
        url = self.url.replace("http://", "ws://") + "/api/servers/{}/ws".format(SERVER)
        refused = WsClient(reactor, url, "https://evil.example")
        with self.assertRaises(ConnectionError):
            await refused.opened.addTimeout(15, reactor)
        client = await self.connect(auth=False)
        client.send("send stats", None)
        self.assertEqual(await client.next(), {"event": "jwt error",
                                               "args": ["jwt: no jwt present"]})
        client.send("auth", self.ws_token(expired=True))
        error = (await client.next("jwt error"))["args"][0]
        self.assertRegex(error, r"^Error Event \[[0-9a-f-]{36}\]: jwt: exp claim is invalid$")
        client.send("auth", self.ws_token())
        self.assertEqual(await client.next(), {"event": "auth success"})
        self.assertEqual(await client.next(), {"event": "status", "args": ["offline"]})
        # The panel revokes this user's tokens: every message now gets the denylist error.
        jti = hashlib.md5(("7" + SERVER).encode()).hexdigest()
        response, _ = await self.call("POST", "/api/servers/{}/ws/deny".format(SERVER),
                                      headers={"Authorization": "Bearer " + TOKEN},
                                      json={"jtis": [jti]})
        self.assertEqual(response.code, 204)
        client.send("send stats", None)
        self.assertEqual(await client.next("jwt error"),
                         {"event": "jwt error", "args": ["jwt: created too far in past (denylist)"]})
        # A token minted after the deny (a second later) works again on the same socket.
        client.send("auth", self.ws_token(now=time.time() + 1))
        self.assertEqual(await client.next("auth success"), {"event": "auth success"})
        client.send("send stats", None)
        self.assertEqual((await client.next())["event"], "stats")

    async def test_permissions(self) -> None:
        """
        A subuser without control.start cannot start the server, and never
        sees install output; the owner can.
        """
        await self.start(SERVER)
        helper = await self.connect(user=HELPER)
        await helper.next("status")
        helper.send("set state", "start")
        owner = await self.connect()
        await owner.next("status")
        owner.send("send stats", None)
        await owner.next("stats")
        self.assertEqual([e for e in helper.events if e["event"] == "status"],
                         [{"event": "status", "args": ["offline"]}])
        await self.running(owner)
        helper.send("send command", "say from helper")
        await helper.until("console output", "[Server] from helper")


class ThrottleTests(ConsoleTestCase):
    throttle_lines = 50

    async def test_console_flood_is_throttled(self) -> None:
        await self.start(SERVER)
        client = await self.connect()
        await self.running(client)
        client.send("send command", "flood 5000")
        seen = await client.until("console output", "throttling...", timeout=30)
        self.assertIn("Server is outputting console data too quickly -- throttling...",
                      seen[-1]["args"][0])
        floods = [e for e in client.events if e["event"] == "console output"
                  and e["args"][0].startswith("flood 0")]
        self.assertLessEqual(len(floods), 50)
        # The daemon keeps serving: once a throttle window has passed, paced
        # lines come through again, and then the game still answers.
        client.send("send command", "pace 10 5")
        await client.until("console output", "pace 0", timeout=30)
        client.send("send command", "say still here")
        # The game answers once its 5-second pace is over.
        await client.until("console output", "[Server] still here", timeout=30)
