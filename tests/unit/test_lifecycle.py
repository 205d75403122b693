"""
The shared server layer against ``FakeEnvironment`` on a ``Clock``: states
and events, power actions and the lock, crash handling, the disk limit,
throttling, sync, installs, deletion and ``states.json`` — the rules of
lifecycle.md §3–§18 without a process.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from wings_twisted.devpanel.faults import Respond
from wings_twisted.environment import IEnvironment, InstallResult
from wings_twisted.servers import crash, install, lifecycle
from wings_twisted.servers.events import CONSOLE_WINDOW
from wings_twisted.servers.power import (
    PowerError,
    PowerLocked,
    ServerBusy,
    UnknownPowerAction,
)
from wings_twisted.servers.store import read_states, restore_action, write_states

from ..support import SERVER, TOKEN, FakeEnvironment, Harness


def power_of(server: Any, action: str, **kwargs: Any) -> Deferred[None]:
    """
    Run a power action on ``server`` as the routes do.
    """
    return Deferred.fromCoroutine(lifecycle.power(server, action, **kwargs))


class LifecycleCase(SynchronousTestCase):
    """
    A harness whose servers get a ``FakeEnvironment``; ``self.events``
    records every published event of the server.
    """

    config: dict[str, Any] = {}

    def setUp(self) -> None:
        self.harness = Harness(FilePath(self.mktemp()), SERVER, **self.config)
        self.env = FakeEnvironment()
        self.harness.node.make_environment = lambda settings: self.env
        self.fixture = self.harness.state.servers[SERVER]
        self.server = self.harness.add_server()
        self.events: list[tuple[str, Any]] = []
        self.server.events.subscribe(lambda e: self.events.append((e.name, e.arg)))

    def named(self, name: str) -> list[Any]:
        return [arg for event, arg in self.events if event == name]

    def daemon_lines(self) -> list[str]:
        return [line.split("\x1b[39m ", 1)[1][:-4] for line in self.named("console output")
                if "Daemon]:" in line]

    def power(self, action: str, **kwargs: Any) -> None:
        self.successResultOf(power_of(self.server, action, **kwargs))

    def refused(self, action: str, kind: type = PowerError) -> str:
        failure = self.failureResultOf(power_of(self.server, action), kind)
        return str(failure.value)

    def panel_calls(self, method: str, path: str) -> int:
        return len([r for r in self.harness.state.received
                    if r.method == method and r.path == path])


class StartStopTests(LifecycleCase):
    def test_fake_provides_the_interface(self) -> None:
        self.assertTrue(verifyObject(IEnvironment, self.env))

    def test_start_runs_the_pre_start_steps_then_the_process(self) -> None:
        self.power("start")
        self.assertEqual(self.panel_calls("GET", "/servers/" + SERVER), 1)
        self.assertEqual(self.daemon_lines(), [
            "Updating process configuration files...",
            "Ensuring file permissions are set correctly, this could take a few seconds..."])
        self.assertEqual(self.named("status"), ["starting"])
        self.env.emit("Loading world")
        self.env.emit("Server is ready for players")
        self.assertEqual(self.named("status"), ["starting", "running"])
        # The done line reaches the console before the status change.
        names = [e for e, _ in self.events]
        self.assertLess(len(names) - 1 - names[::-1].index("console output"),
                        len(names) - 1 - names[::-1].index("status"))
        self.assertEqual(self.env.settings.stop.value, "stop")
        self.assertFalse(self.server.power_lock.held)

    def test_start_refused_when_not_offline(self) -> None:
        self.power("start")
        self.assertEqual(self.refused("start"), "server is running")

    def test_stop_passes_through_stopping(self) -> None:
        self.power("start")
        self.env.emit("Server is ready")
        self.events.clear()
        self.power("stop")
        self.assertEqual(self.named("status"), ["stopping", "offline"])
        stats = json.loads(self.named("stats")[-1])
        self.assertEqual(stats["state"], "offline")
        self.assertEqual(stats["uptime"], 0)
        self.assertEqual(self.env.calls[-2][0], "wait_for_stop")
        self.assertEqual(self.env.calls[-2][1:], (600.0, True))
        self.assertEqual(self.daemon_lines(), [])

    def test_restart_syncs_again(self) -> None:
        self.power("start")
        self.env.emit("Server is ready")
        self.power("restart")
        self.assertEqual(self.named("status"),
                         ["starting", "running", "stopping", "offline", "starting"])
        self.assertEqual(self.panel_calls("GET", "/servers/" + SERVER), 2)

    def test_kill(self) -> None:
        self.power("start")
        self.power("kill")
        self.assertEqual(self.named("status"), ["starting", "stopping", "offline"])
        self.assertEqual(self.env.exit_state(), (137, False))
        self.harness.clock.advance(1)
        self.assertNotIn(crash.CRASH_BANNER, self.daemon_lines())

    def test_unknown_action_and_busy_occupancy(self) -> None:
        """
        An unknown action is refused first; every busy occupancy refuses
        power actions (kill included) with its text; once finished, power
        works again.
        """
        self.assertEqual(self.refused("jump", UnknownPowerAction),
                         "attempting to handle unknown power action")
        occupancy = self.server.occupancy
        for begin, text in ((occupancy.begin_install, "server is currently installing"),
                            (occupancy.begin_transfer_out, "server is currently being transferred"),
                            (occupancy.begin_restore, "server is currently being restored"),
                            (occupancy.begin_receive, "server is currently being transferred")):
            begin()
            for action in ("start", "kill"):
                self.assertEqual(self.refused(action, ServerBusy), text)
            occupancy.finished()
        self.power("start")
        occupancy.delete()
        self.assertEqual(self.refused("kill", ServerBusy), "server has been deleted")

    def test_lock(self) -> None:
        self.assertTrue(self.server.power_lock.try_acquire())
        self.refused("start", PowerLocked)
        self.refused("stop", PowerLocked)
        waiting = power_of(self.server, "start", wait=5)
        self.assertNoResult(waiting)
        self.harness.clock.advance(5)
        self.failureResultOf(waiting, PowerLocked)
        waiting = power_of(self.server, "start", wait=5)
        self.server.power_lock.release()
        self.successResultOf(waiting)
        self.assertEqual(self.named("status"), ["starting"])
        self.assertFalse(self.server.power_lock.held)

    def test_kill_bypasses_a_held_lock(self) -> None:
        self.power("start")
        self.server.power_lock.try_acquire()
        self.power("kill")
        self.assertEqual(self.server.state, "offline")
        self.assertTrue(self.server.power_lock.held)

    def test_suspended_server_cannot_start(self) -> None:
        self.fixture.settings["suspended"] = True
        self.assertEqual(self.refused("start"), "server is currently in a suspended state")
        self.assertEqual(self.named("status"), [])

    def test_sync_failure_blocks_start(self) -> None:
        del self.harness.state.servers[SERVER]
        self.assertEqual(self.refused("start"), "unable to sync server data from Panel "
                         "instance: server does not exist on remote system")
        self.assertEqual(self.env.calls.count(("start",)), 0)

    def test_disk_space_checked_before_start(self) -> None:
        self.fixture.settings["build"]["disk_space"] = 1
        with open(os.path.join(self.server.volume.root, "big"), "wb") as f:
            f.truncate(2 * 1024 * 1024)
        self.server.volume.refresh_usage()
        self.assertEqual(self.refused("start"), "filesystem: not enough disk space")
        self.assertEqual(self.daemon_lines(), [
            "Checking server disk space usage, this could take a few seconds..."])

    def test_start_failure_reaches_offline_without_a_crash(self) -> None:
        self.env.start_error = RuntimeError("spawn failed")
        self.failureResultOf(power_of(self.server, "start"), RuntimeError)
        self.harness.clock.advance(1)
        self.assertEqual(self.named("status"), ["starting", "stopping", "offline"])
        self.assertNotIn(crash.CRASH_BANNER, self.daemon_lines())

    def test_typed_stop_command_is_not_a_crash(self) -> None:
        self.power("start")
        self.env.emit("Server is ready")
        self.successResultOf(self.server.send_command("stop"))
        self.harness.clock.advance(1)
        self.assertEqual(self.named("status"), ["starting", "running", "stopping", "offline"])
        self.assertEqual(self.env.calls.count(("start",)), 1)

    def test_output_equal_to_the_stop_command_sets_stopping(self) -> None:
        self.power("start")
        self.env.emit("stop")
        self.assertEqual(self.server.state, "stopping")

    def test_commands_need_an_attached_process(self) -> None:
        self.assertFalse(self.server.accepts_commands())
        self.power("start")
        self.assertTrue(self.server.accepts_commands())
        self.successResultOf(self.server.send_command("say hi"))
        self.assertEqual(self.env.commands, ["say hi"])


class CrashTests(LifecycleCase):
    def crash(self, code: int = 1, oom: bool = False) -> None:
        self.env.exit(code, oom)
        self.harness.clock.advance(0)

    def running(self) -> None:
        self.power("start")
        self.env.emit("Server is ready")

    def test_crash_restarts(self) -> None:
        self.running()
        self.crash(1)
        lines = self.daemon_lines()
        banner = lines.index(crash.CRASH_BANNER)
        self.assertEqual(lines[banner:banner + 3],
                         [crash.CRASH_BANNER, "Exit code: 1", "Out of memory: false"])
        self.assertEqual(self.env.calls.count(("start",)), 2)
        self.assertEqual(self.panel_calls("GET", "/servers/" + SERVER), 2)
        self.assertEqual(self.named("status")[-3:], ["running", "offline", "starting"])

    def test_second_crash_within_the_timeout_is_not_restarted(self) -> None:
        self.running()
        self.crash(1)
        self.harness.clock.advance(30)
        self.env.emit("Server is ready")
        self.crash(137, oom=True)
        self.assertEqual(self.daemon_lines()[-4:], [
            crash.CRASH_BANNER, "Exit code: 137", "Out of memory: true",
            "Aborting automatic restart, last crash occurred less than 60 seconds ago."])
        self.assertEqual(self.server.state, "offline")
        self.harness.clock.advance(31)
        self.running()
        self.crash(1)
        self.assertEqual(self.server.state, "starting")

    def test_clean_exit(self) -> None:
        self.running()
        self.crash(0)
        self.assertIn(crash.CRASH_BANNER, self.daemon_lines())

    def test_crash_while_starting(self) -> None:
        self.power("start")
        self.crash(2)
        self.assertIn("Exit code: 2", self.daemon_lines())

    def test_crash_detection_disabled_per_server(self) -> None:
        self.fixture.settings["crash_detection_enabled"] = False
        self.running()
        self.crash(1)
        self.assertEqual(self.daemon_lines()[-1], crash.CRASH_DISABLED)
        self.assertEqual(self.env.calls.count(("start",)), 1)

    def test_restart_failure(self) -> None:
        self.running()
        self.fixture.settings["suspended"] = True
        self.crash(1)
        self.assertEqual(self.daemon_lines()[-1], crash.CRASH_FAILED)
        self.assertEqual(self.server.state, "offline")


class CleanExitTests(LifecycleCase):
    config = {"system": {"crash_detection": {"detect_clean_exit_as_crash": False,
                                             "timeout": 0}}}

    def test_clean_exit_is_not_a_crash(self) -> None:
        self.successResultOf(power_of(self.server, "start"))
        self.env.exit(0)
        self.harness.clock.advance(0)
        self.assertNotIn(crash.CRASH_BANNER, self.daemon_lines())

    def test_timeout_zero_always_restarts(self) -> None:
        self.successResultOf(power_of(self.server, "start"))
        for _ in range(3):
            self.env.exit(1)
            self.harness.clock.advance(0)
        self.assertEqual(self.env.calls.count(("start",)), 4)


class StatsAndConsoleTests(LifecycleCase):
    config = {"throttles": {"lines": 3, "line_reset_interval": 100}}

    def test_samples_publish_stats(self) -> None:
        self.power("start")
        self.env.sample(memory_bytes=1024, memory_limit_bytes=4096, cpu_absolute=12.34567,
                        network={"rx_bytes": 5, "tx_bytes": 6}, uptime=1500)
        stats = json.loads(self.named("stats")[-1])
        self.assertEqual(stats, {"memory_bytes": 1024, "memory_limit_bytes": 4096,
                                 "cpu_absolute": 12.346, "network": {"rx_bytes": 5, "tx_bytes": 6},
                                 "uptime": 1500, "state": "starting", "disk_bytes": 0})
        self.env.exit(0)
        stats = json.loads(self.named("stats")[-1])
        self.assertEqual((stats["memory_bytes"], stats["cpu_absolute"], stats["uptime"],
                          stats["memory_limit_bytes"]), (0, 0, 0, 4096))

    def test_throttle(self) -> None:
        self.power("start")
        for i in range(6):
            self.env.emit("line {}".format(i))
        self.env.emit("Server is ready")
        lines = self.named("console output")
        self.assertEqual([line for line in lines if line.startswith("line")],
                         ["line 0", "line 1", "line 2"])
        self.assertEqual(self.daemon_lines()[-1],
                         "Server is outputting console data too quickly -- throttling...")
        self.assertEqual(self.daemon_lines().count(self.daemon_lines()[-1]), 1)
        # Throttled lines are still scanned for the done-string.
        self.assertEqual(self.server.state, "running")
        self.harness.clock.advance(0.2)
        self.env.emit("after")
        self.assertEqual(self.named("console output")[-1], "after")

    def test_disk_limit_while_running(self) -> None:
        self.fixture.settings["build"]["disk_space"] = 1
        self.power("start")
        with open(os.path.join(self.server.volume.root, "big"), "wb") as f:
            f.truncate(2 * 1024 * 1024)
        self.server.volume.refresh_usage()
        self.env.on_stop = "ignore"
        self.env.sample(memory_bytes=1)
        self.env.sample(memory_bytes=1)
        self.assertEqual(self.daemon_lines().count(
            "Server is exceeding the assigned disk space limit, stopping process now."), 1)
        self.assertIn(("wait_for_stop", 60.0, True), self.env.calls)
        self.assertEqual(self.server.state, "offline")


class ConsoleBatchTests(LifecycleCase):
    def test_console_lines_batched_per_window(self) -> None:
        """
        A console socket gets the lines printed within ``CONSOLE_WINDOW`` of the first pending
        one in one batch (one write per socket), a later line in the next; a status change
        sends the pending lines first, so the order holds.
        """
        batches: list[list[str]] = []
        self.server.events.subscribe(lambda e: batches.append([e.name]),
                                     batch=lambda b: batches.append([e.arg or "" for e in b.events]))
        self.power("start")
        batches.clear()
        clock = self.harness.clock
        self.env.emit("a")
        clock.advance(CONSOLE_WINDOW / 2)
        self.env.emit("b")
        self.assertEqual(batches, [])
        clock.advance(CONSOLE_WINDOW / 2)
        self.assertEqual(batches, [["a", "b"]])
        self.env.emit("c")
        self.env.emit("Server is ready")
        self.assertEqual(batches[1:], [["c", "Server is ready"], ["status"]])
        clock.advance(CONSOLE_WINDOW)
        self.assertEqual(len(batches), 3)


class SyncTests(LifecycleCase):
    def test_sync_replaces_settings(self) -> None:
        self.fixture.settings["build"]["disk_space"] = 7
        self.fixture.process_configuration["stop"] = {"type": "signal", "value": "C"}
        self.successResultOf(Deferred.fromCoroutine(lifecycle.sync(self.server)))
        self.assertEqual(self.server.disk_limit_bytes, 7 * 1024 * 1024)
        self.assertEqual(self.env.settings.stop.type, "signal")
        self.assertIn(("update_limits",), self.env.calls)

    def test_http_sync(self) -> None:
        response = self.harness.request(self.post("sync"))
        self.assertEqual(response.status, 204)
        self.harness.state.faults.add("GET", "/servers/" + SERVER, Respond(404))
        response = self.harness.request(self.post("sync"))
        self.assertEqual(response.status, 500)

    def test_suspension_stops_the_server(self) -> None:
        self.power("start")
        self.fixture.settings["suspended"] = True
        self.assertEqual(self.harness.request(self.post("sync")).status, 204)
        self.assertIn(("wait_for_stop", 60.0, True), self.env.calls)
        self.assertEqual(self.server.state, "offline")
        self.assertNotIn(crash.CRASH_BANNER, self.daemon_lines())

    def post(self, route: str, body: bytes = b"") -> bytes:
        return ("POST /api/servers/{}/{} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n"
                "Content-Length: {}\r\n\r\n".format(SERVER, route, TOKEN, len(body))
                ).encode() + body


class InstallTests(LifecycleCase):
    def install(self, **kwargs: Any) -> bool:
        return bool(self.successResultOf(Deferred.fromCoroutine(
            install.install(self.server, **kwargs))))

    def test_skipped_scripts_report_success(self) -> None:
        self.assertTrue(self.install())
        self.assertEqual(self.harness.state.install_reports,
                         [{"server": SERVER, "successful": True, "reinstall": False}])
        self.assertEqual(self.named("install completed"), [""])
        self.assertEqual(self.named("install started"), [])
        self.assertNotIn("run_installer", [c[0] for c in self.env.calls])

    def test_script_run(self) -> None:
        self.fixture.settings["skip_egg_scripts"] = False
        self.server.settings["skip_egg_scripts"] = False
        self.env.install_lines = ["fetching", "done"]
        self.env.install_result = InstallResult(True, 3)
        self.assertTrue(self.install(reinstall=True))
        self.assertEqual([e for e, _ in self.events if e != "stats"], [
            "install started", "daemon message", "install output", "install output",
            "daemon message", "install completed"])
        self.assertEqual(self.named("daemon message"),
                         [install.INSTALL_STARTING, install.INSTALL_DONE])
        self.assertEqual(self.harness.state.install_reports[-1],
                         {"server": SERVER, "successful": True, "reinstall": True})
        path = install.install_log_path(self.harness.config, SERVER)
        self.assertEqual(install.read_install_log(path), "fetching\ndone\n")
        with open(path) as f:
            text = f.read()
        self.assertIn("Exit Code:            3", text)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        self.assertFalse(self.server.occupancy.installing)

    def test_pipeline_failure(self) -> None:
        self.server.settings["skip_egg_scripts"] = False
        self.env.install_result = InstallResult(False, None, "no sandbox")
        self.assertFalse(self.install())
        self.assertEqual(self.harness.state.install_reports[-1]["successful"], False)
        self.assertEqual(self.named("install output"), ["no sandbox"])
        self.assertEqual(self.named("install completed"), [""])

    def test_script_fetch_failure(self) -> None:
        self.server.settings["skip_egg_scripts"] = False
        self.harness.state.faults.add("GET", "/servers/{uuid}/install", Respond(404))
        self.assertFalse(self.install())
        self.assertEqual(self.harness.state.install_reports[-1]["successful"], False)

    def test_second_install_is_ignored(self) -> None:
        self.server.occupancy.begin_install()
        self.assertFalse(self.install())
        self.assertEqual(self.harness.state.install_reports, [])

    def test_start_on_completion(self) -> None:
        self.assertTrue(self.install(start_after=True))
        self.assertEqual(self.env.calls.count(("start",)), 1)

    def test_install_logs_route(self) -> None:
        response = self.harness.get("/api/servers/{}/install-logs".format(SERVER))
        self.assertEqual((response.status, response.json()["error"]),
                         (404, "No installation log exists for this server."))
        self.server.settings["skip_egg_scripts"] = False
        self.env.install_lines = ["hello"]
        self.install()
        response = self.harness.get("/api/servers/{}/install-logs".format(SERVER))
        self.assertEqual((response.status, response.json()), (200, {"data": "hello\n"}))


class RouteTests(LifecycleCase):
    def post(self, route: str, body: str = "") -> Any:
        raw = ("POST /api/servers/{}/{} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n"
               "Content-Length: {}\r\n\r\n{}".format(SERVER, route, TOKEN, len(body), body))
        return self.harness.request(raw.encode())

    def test_power(self) -> None:
        response = self.post("power", '{"action": "jump"}')
        self.assertEqual((response.status, response.json()["error"]),
                         (422, 'The power action provided was not valid, should be one of '
                               '"stop", "start", "restart", "kill"'))
        self.assertEqual(self.post("power", "nope").status, 400)
        self.assertEqual(self.post("power", '{"action": "start"}').status, 202)
        self.assertEqual(self.server.state, "starting")
        # Refused in the background: only logged.
        self.assertEqual(self.post("power", '{"action": "start"}').status, 202)
        self.assertEqual(self.post("power", '{"action": "kill"}').status, 202)
        self.assertEqual(self.server.state, "offline")

    def test_power_on_a_suspended_server(self) -> None:
        self.server.settings["suspended"] = True
        for action in ("start", "restart"):
            response = self.post("power", '{"action": "%s"}' % action)
            self.assertEqual((response.status, response.json()["error"]),
                             (400, "Cannot start or restart a server that is suspended."))
        self.assertEqual(self.post("power", '{"action": "stop"}').status, 202)

    def test_wait_seconds(self) -> None:
        from wings_twisted.web.server_routes import lock_wait
        self.assertEqual([lock_wait(v) for v in (None, 0, 5, 300, 301, -1, "x", True)],
                         [0, 0, 5, 300, 30, 30, 30, 30])

    def test_commands(self) -> None:
        response = self.post("commands", '{"commands": ["say hi"]}')
        self.assertEqual((response.status, response.json()["error"]),
                         (502, "Cannot send commands to a stopped server instance."))
        self.power("start")
        self.assertEqual(self.post("commands", '{"commands": "say hi"}').status, 400)
        self.assertEqual(self.post("commands", '{"commands": ["say hi", "list"]}').status, 204)
        self.assertEqual(self.post("commands", '{"commands": []}').status, 204)
        self.assertEqual(self.env.commands, ["say hi", "list"])

    def test_logs(self) -> None:
        self.power("start")
        for i in range(150):
            self.env.emit("line {}".format(i))
        response = self.harness.get("/api/servers/{}/logs?size=2".format(SERVER))
        self.assertEqual(response.json(), {"data": ["line 148", "line 149"]})
        for size in ("x", "0", "-4", "500"):
            response = self.harness.get("/api/servers/{}/logs?size={}".format(SERVER, size))
            self.assertEqual(len(response.json()["data"]), 100)

    def test_reinstall(self) -> None:
        self.server.power_lock.try_acquire()
        response = self.post("reinstall")
        self.assertEqual((response.status, response.json()["error"]), (409, (
            "Cannot execute server reinstall event while another power action is running.")))
        self.server.power_lock.release()
        self.power("start")
        self.assertEqual(self.post("reinstall").status, 202)
        self.assertIn(("wait_for_stop", 10.0, True), self.env.calls)
        self.assertEqual(self.harness.state.install_reports[-1],
                         {"server": SERVER, "successful": True, "reinstall": True})

    def test_install(self) -> None:
        self.assertEqual(self.post("install").status, 202)
        self.assertEqual(self.harness.state.install_reports[-1]["reinstall"], False)

    def test_details_show_live_utilization(self) -> None:
        self.power("start")
        self.env.sample(memory_bytes=2048, cpu_absolute=50)
        body = self.harness.get("/api/servers/" + SERVER).json()
        self.assertEqual((body["state"], body["utilization"]["memory_bytes"],
                          body["utilization"]["cpu_absolute"], body["utilization"]["state"]),
                         ("starting", 2048, 50, "starting"))

    def test_delete(self) -> None:
        self.power("start")

        class Socket:
            user_uuid = None
            closed: list[tuple[int, str]] = []

            def close_socket(self, code: int, reason: str) -> None:
                self.closed.append((code, reason))

        socket = Socket()
        self.server.sockets.add(socket)
        raw = ("DELETE /api/servers/{} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n"
               "\r\n".format(SERVER, TOKEN))
        self.assertEqual(self.harness.request(raw.encode()).status, 204)
        self.assertEqual(self.named("deleted"), ["null"])
        self.assertEqual(socket.closed, [(1001, "server deleted")])
        self.assertIn(("destroy",), self.env.calls)
        self.assertNotIn(SERVER, self.harness.node.registry)
        self.assertFalse(os.path.exists(self.server.volume.root))
        self.harness.clock.advance(1)
        self.assertNotIn(crash.CRASH_BANNER, self.daemon_lines())


class StatesFileTests(SynchronousTestCase):
    """
    ``states.json``: read leniently, written completely and durably.
    """

    def test_round_trip_and_garbage(self) -> None:
        """
        What is written is read back (mode 0644); unknown states and garbage
        are ignored.
        """
        path = self.mktemp()
        self.assertEqual(read_states(path), {})
        write_states(path, {"a": "running", "b": "offline"})
        self.assertEqual(read_states(path), {"a": "running", "b": "offline"})
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o644)
        with open(path, "w") as f:
            f.write('{"a": "flying", "b": 3, "c": "starting"}')
        self.assertEqual(read_states(path), {"c": "starting"})
        with open(path, "w") as f:
            f.write("[not json")
        self.assertEqual(read_states(path), {})

    def test_short_writes_continued(self) -> None:
        """
        A ``write`` that takes a few bytes at a time still yields the whole
        file.
        """
        path = self.mktemp()
        states = {"a" * 36: "running", "b" * 36: "offline"}
        write_states(path, states, write=lambda fd, data: os.write(fd, data[:3]))
        self.assertEqual(read_states(path), states)

    def test_stalled_write_keeps_the_old_file(self) -> None:
        """
        A ``write`` that makes no progress (a full disk) is an error; the old
        file stays whole and the temporary file is removed.
        """
        path = self.mktemp()
        write_states(path, {"a": "running"})
        calls = []

        def stall(fd: int, data: bytes) -> int:
            calls.append(len(data))
            return os.write(fd, data[:2]) if len(calls) == 1 else 0

        self.assertRaises(OSError, write_states, path, {"b": "offline"}, write=stall)
        self.assertEqual(read_states(path), {"a": "running"})
        self.assertEqual(os.listdir(os.path.dirname(path)), [os.path.basename(path)])

    def test_file_and_directory_synced_around_the_rename(self) -> None:
        """
        The temporary file is fsynced before the rename and the directory
        after it.
        """
        path = os.path.abspath(self.mktemp())
        synced = []

        def fsync(fd: int) -> None:
            target = os.readlink("/proc/self/fd/%d" % fd)
            synced.append((target, os.path.exists(path)))

        write_states(path, {"a": "running"}, fsync=fsync)
        directory = os.path.dirname(path)
        self.assertEqual(synced, [(os.path.join(directory, ".states.json.tmp"), False),
                                  (directory, True)])

    def test_decisions(self) -> None:
        """
        The restore table of lifecycle.md §1.4.
        """
        self.assertEqual(restore_action(False, "running"), "start")
        self.assertEqual(restore_action(False, "starting"), "start")
        self.assertEqual(restore_action(True, "offline"), "adopt")
        self.assertEqual(restore_action(True, None), "adopt")
        self.assertEqual(restore_action(False, "stopping"), "offline")
        self.assertEqual(restore_action(False, None), "offline")


class CgroupDetectionTests(SynchronousTestCase):
    def test_detected_once_for_every_server(self) -> None:
        """
        The process driver's factory looks for a cgroup hierarchy once,
        however many process environments ask, and hands each environment
        the same source.
        """
        from wings_twisted.blocking import run_inline
        from wings_twisted.environment.cgroups import detect_cgroups
        from wings_twisted.environment.factories import ProcessEnvironments
        harness = Harness(FilePath(self.mktemp()), SERVER, environment={"driver": "process"})
        calls: list[Any] = []

        def counting(fn: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(fn)
            return run_inline(fn, *args, **kwargs)

        factory = ProcessEnvironments(reactor=harness.clock, config=lambda: harness.config,
                                      run_blocking=counting)
        # Detection makes the (empty) base group of this data directory on a host with cgroups.
        self.addCleanup(lambda: self.successResultOf(factory.release()))
        first = self.successResultOf(Deferred.fromCoroutine(factory.cgroup_host()))
        second = self.successResultOf(Deferred.fromCoroutine(factory.cgroup_host()))
        self.assertIs(first, second)
        self.assertEqual(calls.count(detect_cgroups), 1)
        harness.node.make_environment = factory
        environment = harness.add_server().environment
        self.assertEqual(getattr(environment, "_cgroups"), factory.cgroup_host)
