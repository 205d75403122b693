"""
The Docker environment end to end: a real ``twistd -n wings`` with
``environment.driver: docker`` against podman's Docker-compatible API (and
a password-protected registry), driven by the development panel and a real
websocket console the way the Panel's browser drives it.

The "eggs" are shell loops run by the test image's entrypoint (Pterodactyl's
rule: ``{{VAR}}`` in ``STARTUP`` becomes ``${VAR}``).  Each test starts its
own engine (half a second) and daemon, and waits on events with bounded
timeouts.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import yaml
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from wings_twisted.devpanel import tokens
from wings_twisted.devpanel.resource import listen
from wings_twisted.devpanel.state import DevPanelState
from wings_twisted.environment.docker import DockerError

from ..support import SERVER, TOKEN, TOKEN_ID, USER
from .engine import IMAGE, INSTALLER_IMAGE, REGISTRY_PASSWORD, REGISTRY_USER, PodmanEngine, free_port, \
    start_podman, start_registry
from .test_daemon import DaemonTestCase, _timeout
from .wsclient import WsClient

OTHER = "0b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e"
#: Answers commands; "stop" exits 0, "crash" exits 3, "hog" replaces the
#: shell with a process that needs more memory than the limit.
ECHO_EGG = ('echo booting; echo "Done (ready)"; while read -r line; do case "$line" in '
            'stop) echo bye; exit 0;; crash) echo crashing; exit 3;; '
            'hog) exec dd if=/dev/zero of=/dev/null bs=200M count=1;; '
            '*) echo "got: $line";; esac; done')
#: Stops on SIGINT (an egg whose stop is "^C").
SIGNAL_EGG = 'trap "echo caught INT; exit 0" INT; echo "Done (ready)"; while true; do sleep 1; done'
INSTALL_SCRIPT = ("#!/bin/sh\r\necho installing into /mnt/server\r\n"
                  "echo hello > /mnt/server/installed.txt\r\nexit 3\r\n")


def statuses(events: list[dict[str, Any]]) -> list[str]:
    """
    The ``status`` arguments among ``events``.
    """
    return [e["args"][0] for e in events if e["event"] == "status"]


def console(events: list[dict[str, Any]]) -> str:
    """
    The console lines among ``events``, one per line.
    """
    return "\n".join(e["args"][0] for e in events if e["event"] == "console output")


class DockerDaemonTestCase(DaemonTestCase):
    """
    An engine, the development panel and a daemon with the Docker driver.
    """

    timeout = 180

    async def start_docker(self, servers: dict[str, dict[str, Any]], *,
                           engine: bool = True, docker_host: str | None = None,
                           registries: dict[str, dict[str, str]] | None = None) -> None:
        """
        Start the engine (unless ``engine`` is false), the panel with
        ``servers`` (uuid → fixture overrides) and the daemon.
        """
        self.engine: PodmanEngine | None = None
        if engine:
            self.engine = await start_podman(reactor, self.addCleanup)
        self.docker_host = docker_host or (self.engine.docker_host if self.engine else "")
        self.registries = registries or {}
        self.servers = servers
        await self.start(*servers)

    async def start_panel(self, *servers: str) -> None:
        fixtures = []
        for uuid in servers:
            fixture = {"uuid": uuid, "image": "~" + IMAGE, "invocation": ECHO_EGG,
                       "done": "Done (ready)", "stop": "stop", "memory_limit": 64}
            fixture.update(self.servers[uuid])
            fixtures.append(fixture)
        self.state = DevPanelState.from_dict({
            "node": {"token_id": TOKEN_ID, "token": TOKEN, "daemon_url": "http://127.0.0.1:8080"},
            "servers": fixtures,
            "users": [{"uuid": USER, "id": 7, "username": "owner", "password": "x",
                       "root_admin": True, "permissions": {s: ["*"] for s in servers}}],
        })
        self.panel = await listen(self.state, reactor)
        self.addCleanup(self.panel.stop)

    def write_config(self, **api: Any) -> str:
        path = super().write_config(**api)
        with open(path) as f:
            config = yaml.safe_load(f)
        config["environment"] = {"driver": "docker"}
        config["docker"] = {"log_config": {"type": "json-file"}, "registries": self.registries}
        config["throttles"] = {"lines": 5000}
        with open(path, "w") as f:
            yaml.safe_dump(config, f)
        self.config_path = path
        return path

    # Shutdown waits on the engine's answers: slower than with child processes.
    stop_timeout = 30
    wait_timeout = 20.0

    def daemon_env(self) -> dict[str, str]:
        return dict(super().daemon_env(), DOCKER_HOST=self.docker_host)

    async def restart_daemon(self) -> None:
        """
        Stop the daemon (SIGTERM) and start a new one on the same files.
        """
        self.process.signalProcess("TERM")
        await _timeout(self.daemon.exited, 30)
        self.state.reset_count = 0
        self.daemon = self.spawn(self.config_path)
        port = await _timeout(self.daemon.listening)
        self.url = "http://127.0.0.1:{}".format(port)
        await self.wait_for(lambda: bool(self.state.reset_count), "the boot", timeout=30)

    async def connect(self, uuid: str = SERVER) -> WsClient:
        """
        An authenticated console of ``uuid``.
        """
        url = self.url.replace("http://", "ws://") + "/api/servers/{}/ws".format(uuid)
        client = WsClient(reactor, url, self.panel.url)
        self.addCleanup(client.close)
        self.clients = getattr(self, "clients", []) + [client]
        await client.opened.addTimeout(15, reactor)
        client.send("auth", tokens.mint_websocket(self.state, uuid, user=USER))
        self.assertEqual(await client.next(), {"event": "auth success"})
        await self.until(client, "status", "")     # the state sent on auth
        return client

    async def power(self, action: str, uuid: str = SERVER) -> None:
        """
        A power action as the Panel sends it, waiting up to 30 s for the
        power lock (a start holds it until the engine has answered, which
        can be after the done-string was printed).
        """
        code, _ = await self.api("POST", "/api/servers/{}/power".format(uuid),
                                 {"action": action, "wait_seconds": 30})
        self.assertEqual(code, 202)

    async def until(self, client: WsClient, name: str, arg: str,
                    timeout: float = 60.0) -> list[dict[str, Any]]:
        """
        ``client.until`` within ``timeout`` seconds overall (stats events
        would otherwise keep restarting its per-message timeout).
        """
        waiting: Deferred[list[dict[str, Any]]] = Deferred.fromCoroutine(
            client.until(name, arg, timeout=timeout))
        return await waiting.addTimeout(timeout, reactor)

    async def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """
        A node API call with the node token: status and decoded body.
        """
        kwargs = {} if body is None else {"json": body}
        response, data = await self.call(method, path, headers={
            "Authorization": "Bearer " + TOKEN}, **kwargs)
        return response.code, json.loads(data) if data.strip() else None

    async def details(self, uuid: str = SERVER) -> dict[str, Any]:
        """
        ``GET /api/servers/{uuid}``.
        """
        code, body = await self.api("GET", "/api/servers/" + uuid)
        self.assertEqual(code, 200)
        return body

    async def inspect(self, name: str) -> dict[str, Any] | None:
        """
        The engine's view of container ``name`` (``None`` when missing).
        """
        assert self.engine is not None
        try:
            return await self.engine.client.call("GET", "/containers/{}/json".format(name))
        except DockerError as e:
            if e.missing:
                return None
            raise



class DockerLifecycleTests(DockerDaemonTestCase):
    """
    Install, console, stats, stop, restart, kill and deletion of a server
    container.
    """

    async def test_install_console_stats_stop_restart_kill_delete(self) -> None:
        """
        The install script runs in ``<uuid>_installer`` (output streamed and
        logged, the container removed, a non-zero exit still a success);
        start attaches before starting (no early line lost) and reaches
        ``running`` on the done-string; commands go through the attach
        stream; stats carry the memory limit the engine enforces; stop by
        command, restart (a new container), kill and deletion (the
        container is gone) all work.
        """
        await self.start_docker({SERVER: {
            "skip_egg_scripts": False,
            "install_script": {"container_image": "~" + INSTALLER_IMAGE, "entrypoint": "sh",
                               "script": INSTALL_SCRIPT},
            "settings": {"build": {"oom_disabled": False}}}})
        client = await self.connect()
        code, _ = await self.api("POST", "/api/servers/{}/install".format(SERVER))
        self.assertEqual(code, 202)
        seen = await self.until(client, "install completed", "", timeout=60)
        install = [e["args"][0] for e in seen if e["event"] == "install output"]
        self.assertIn("installing into /mnt/server", install)
        self.assertEqual(self.state.install_reports,
                         [{"server": SERVER, "successful": True, "reinstall": False}])
        with open(os.path.join(self.volume, "installed.txt")) as f:
            self.assertEqual(f.read(), "hello\n")
        with open(os.path.join(self.base, "log_directory", "install", SERVER + ".log")) as f:
            log = f.read()
        self.assertIn("installing into /mnt/server", log)
        self.assertIn("Exit Code:            3", log)
        self.assertIsNone(await self.inspect(SERVER + "_installer"))

        client.send("set state", "start")
        seen = await self.until(client, "status", "running", timeout=60)
        self.assertEqual(statuses(seen), ["starting", "running"])
        text = console(seen)
        self.assertIn("Pulling Docker container image", text)
        self.assertIn("booting", text)
        self.assertIn("Done (ready)", text)
        info = await self.inspect(SERVER)
        assert info is not None
        self.assertEqual(info["HostConfig"]["Memory"], 73_600_000)  # 64 MB × 1.15
        self.assertEqual(info["Config"]["Labels"]["Service"], "Pterodactyl")
        self.assertEqual(info["Config"]["Hostname"], SERVER)

        client.send("send command", "hello")
        await self.until(client, "console output", "got: hello")
        stats = json.loads((await client.next("stats", timeout=20))["args"][0])
        self.assertEqual(stats["memory_limit_bytes"], 73_600_000)
        self.assertGreater(stats["memory_bytes"], 0)
        code, body = await self.api("GET", "/api/servers/{}/logs?size=5".format(SERVER))
        self.assertEqual(code, 200)
        self.assertIn("got: hello", body["data"])

        client.send("set state", "stop")
        seen = await self.until(client, "status", "offline", timeout=30)
        self.assertEqual(statuses(seen), ["stopping", "offline"])
        self.assertIn("bye", console(seen))
        self.assertNotIn("crashed state", console(seen))
        info = await self.inspect(SERVER)
        assert info is not None
        first_id = info["Id"]

        started_at = info["State"]["StartedAt"]
        client.send("set state", "restart")
        seen = await self.until(client, "status", "running", timeout=60)
        self.assertEqual(statuses(seen), ["starting", "running"])
        info = await self.inspect(SERVER)
        assert info is not None
        self.assertNotEqual(info["State"]["StartedAt"], started_at)
        # The same settings start the same container again, its log emptied.
        self.assertEqual(info["Id"], first_id)
        code, body = await self.api("GET", "/api/servers/{}/logs?size=20".format(SERVER))
        self.assertIn("Done (ready)", body["data"])
        self.assertNotIn("got: hello", body["data"])

        client.send("set state", "kill")
        seen = await self.until(client, "status", "offline", timeout=30)
        self.assertEqual(statuses(seen), ["stopping", "offline"])
        info = await self.inspect(SERVER)
        assert info is not None
        self.assertFalse(info["State"]["Running"])
        self.assertEqual(info["State"]["ExitCode"], 137)

        code, _ = await self.api("DELETE", "/api/servers/" + SERVER)
        self.assertEqual(code, 204)
        for _ in range(100):
            if await self.inspect(SERVER) is None:
                break
            await deferLater(reactor, 0.1, lambda: None)
        self.assertIsNone(await self.inspect(SERVER))

    async def test_stop_by_signal(self) -> None:
        """
        A ``^C`` egg is stopped with SIGINT (Pelican's mapping), and exits
        cleanly through ``stopping``.
        """
        await self.start_docker({SERVER: {"invocation": SIGNAL_EGG, "stop": "^C"}})
        client = await self.connect()
        client.send("set state", "start")
        await self.until(client, "status", "running", timeout=60)
        await self.power("stop")
        seen = await self.until(client, "status", "offline", timeout=30)
        self.assertEqual(statuses(seen), ["stopping", "offline"])
        self.assertIn("caught INT", console(seen))
        info = await self.inspect(SERVER)
        assert info is not None
        self.assertEqual(info["State"]["ExitCode"], 0)


class DockerCrashTests(DockerDaemonTestCase):
    """
    Crash detection, automatic restart and OOM.
    """

    async def test_crash_restart_then_oom(self) -> None:
        """
        An exit with code 3 is a crash: the three lines, then a restart; a
        process killed for exceeding the memory limit is reported with
        ``Out of memory: true`` (podman never sets ``OOMKilled``), and a
        second crash within the timeout is not restarted.
        """
        await self.start_docker({SERVER: {"memory_limit": 32,
                                          "settings": {"build": {"oom_disabled": False}}}})
        client = await self.connect()
        client.send("set state", "start")
        await self.until(client, "status", "running", timeout=60)
        await self.until(client, "stats", "")    # the start has returned by now
        client.send("send command", "crash")
        seen = await self.until(client, "status", "running", timeout=60)
        text = console(seen)
        self.assertIn("Detected server process in a crashed state!", text)
        self.assertIn("Exit code: 3", text)
        self.assertIn("Out of memory: false", text)
        self.assertEqual(statuses(seen), ["offline", "starting", "running"])
        client.send("send command", "hog")
        seen = await self.until(client, "console output", "Aborting automatic restart", timeout=60)
        text = console(seen)
        self.assertIn("Exit code: 137", text)
        self.assertIn("Out of memory: true", text)
        self.assertEqual((await self.details())["state"], "offline")


class DockerAdoptionTests(DockerDaemonTestCase):
    """
    Containers outlive the daemon and are adopted at the next boot.
    """

    async def test_restart_adopts_running_container(self) -> None:
        """
        A daemon restart leaves the container running; the new daemon
        reports it ``running`` without restarting it and its console works.
        """
        await self.start_docker({SERVER: {}})
        client = await self.connect()
        client.send("set state", "start")
        await self.until(client, "status", "running", timeout=60)
        before = await self.inspect(SERVER)
        assert before is not None
        await client.close()
        await self.restart_daemon()
        after = await self.inspect(SERVER)
        assert after is not None
        self.assertTrue(after["State"]["Running"])
        self.assertEqual((after["Id"], after["State"]["StartedAt"]),
                         (before["Id"], before["State"]["StartedAt"]))
        await self.wait_for(lambda: self.state.reset_count > 0)
        self.assertEqual((await self.details())["state"], "running")
        client = await self.connect()
        client.send("send command", "again")
        await self.until(client, "console output", "got: again")


class DockerRegistryTests(DockerDaemonTestCase):
    """
    Image pulls from a registry with password authentication.
    """

    async def test_pull_with_credentials_and_refused(self) -> None:
        """
        The configured credentials pull the image (progress as install
        output, the daemon's pull lines on the console); wrong credentials
        fail the start with the registry's reason on the console, and the
        power lock is free for the next attempt.
        """
        engine = await start_podman(reactor, self.addCleanup)
        port = free_port()
        image = await start_registry(reactor, engine, port)
        refused = image.replace("/wings/", "/other/")
        self.engine = engine
        self.docker_host = engine.docker_host
        self.registries = {
            "127.0.0.1:{}/wings".format(port): {"username": REGISTRY_USER,
                                                "password": REGISTRY_PASSWORD},
            "127.0.0.1:{}/other".format(port): {"username": REGISTRY_USER,
                                                "password": "wrong"}}
        self.servers = {SERVER: {"image": image}, OTHER: {"image": refused}}
        await self.start(SERVER, OTHER)
        client = await self.connect()
        client.send("set state", "start")
        seen = await self.until(client, "status", "running", timeout=90)
        text = console(seen)
        self.assertIn("Pulling Docker container image", text)
        self.assertIn("Finished pulling Docker container image", text)
        self.assertTrue([e for e in seen if e["event"] == "install output"])

        other = await self.connect(OTHER)
        for _ in range(2):
            other.send("set state", "start")
            seen = await self.until(other, "status", "offline", timeout=60)
            self.assertEqual(statuses(seen), ["starting", "stopping", "offline"])
            self.assertIn("Server start failed", console(seen))
            self.assertIn("unauthorized", console(seen).lower())
        self.assertIn("unauthorized", self.daemon.output.lower())


class DockerFailureTests(DockerDaemonTestCase):
    """
    What goes wrong around the engine gives a clear message, never a crash
    of the daemon or a stuck power lock.
    """

    async def test_missing_image(self) -> None:
        """
        A local image that does not exist: the start fails with a console
        line naming it, twice in a row (the lock is released).
        """
        await self.start_docker({SERVER: {"image": "~localhost/no-such-image"}})
        client = await self.connect()
        for _ in range(2):
            client.send("set state", "start")
            seen = await self.until(client, "status", "offline", timeout=30)
            self.assertEqual(statuses(seen), ["starting", "stopping", "offline"])
            self.assertIn("Server start failed: The local image localhost/no-such-image does "
                          "not exist", console(seen))
        self.assertEqual((await self.details())["state"], "offline")

    async def test_engine_down_at_boot(self) -> None:
        """
        No engine: boot warns and serves the panel; every start says on the
        console that the engine cannot be reached.
        """
        missing = "/tmp/wings-no-engine-{}.sock".format(os.getpid())
        await self.start_docker({SERVER: {}}, engine=False, docker_host="unix://" + missing)
        await self.wait_for(lambda: "cannot be used" in self.daemon.output)
        self.assertIn("[wings_twisted.environment.factories#warn]", self.daemon.output)
        client = await self.connect()
        for _ in range(2):
            client.send("set state", "start")
            message = await self.until(client, "console output", "Server start failed", timeout=30)
            self.assertIn("Cannot reach the engine at unix://" + missing,
                          message[-1]["args"][0])
        self.assertEqual((await self.details())["state"], "offline")
        self.assertNotIn("Traceback", self.daemon.output)

    async def test_container_removed_then_engine_gone(self) -> None:
        """
        A container removed behind the daemon's back is a crash with exit
        code 1 (and is recreated by the restart); an engine that goes away
        while the server runs turns it offline with a console line, no
        restart loop, and later starts say why they fail.
        """
        await self.start_docker({SERVER: {}})
        assert self.engine is not None
        client = await self.connect()
        client.send("set state", "start")
        await self.until(client, "status", "running", timeout=60)
        await self.engine.client.call("DELETE", "/containers/" + SERVER,
                                      params={"force": True})
        seen = await self.until(client, "status", "running", timeout=60)
        text = console(seen)
        self.assertIn("The server's container was removed outside of the daemon.", text)
        self.assertIn("Exit code: 1", text)
        self.assertIsNotNone(await self.inspect(SERVER))

        await self.until(client, "stats", "")    # the restart's start has returned
        with open(os.path.join(self.engine.state, "service.pid")) as f:
            os.kill(int(f.read()), signal.SIGKILL)
        seen = await self.until(client, "status", "offline", timeout=60)
        self.assertEqual(statuses(seen), ["stopping", "offline"])
        self.assertIn("Lost the connection to the container engine", console(seen))
        self.assertNotIn("crashed state", console(seen))
        client.send("set state", "start")
        await self.until(client, "console output", "Server start failed", timeout=30)
        self.assertEqual((await self.details())["state"], "offline")
