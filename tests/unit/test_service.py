"""
Tests for the boot sequence (panel.md §3.1–§3.2) and the periodic jobs of
``WingsService``, and for the local activity log (panel.md §6).
"""

from __future__ import annotations

import os

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.activity import rfc3339
from wings_twisted.devpanel.faults import Drop, Respond
from wings_twisted.service import WingsService

from wings_twisted.servers.store import read_states, write_states

from ..support import SERVER, USER, FakeEnvironment, Harness

OTHER = "0c5b4ae6-5a43-4b77-8f0d-6f3e1cd5d0a7"


class BootTests(SynchronousTestCase):
    """
    ``WingsService.boot``.
    """

    def setUp(self) -> None:
        self.h = Harness(FilePath(self.mktemp()), SERVER, OTHER)
        self.fatal: list[str] = []
        self.service = WingsService(self.h.node, fatal=self.fatal.append)

    def start(self) -> None:
        self.service.startService()
        for _ in range(50):
            self.h.panel_http.flush()
            self.h.clock.advance(1)
        self.addCleanup(self.service.stopService)

    def test_loads_servers_and_resets(self) -> None:
        """
        Every server is registered with its volume created, then the panel
        is told to reset states.
        """
        self.start()
        self.assertEqual(sorted(s.uuid for s in self.h.node.registry), sorted([SERVER, OTHER]))
        for uuid in (SERVER, OTHER):
            self.assertTrue(os.path.isdir(os.path.join(self.h.config.system.data, uuid)))
        self.assertEqual(self.h.state.reset_count, 1)
        self.assertEqual(self.fatal, [])

    def test_before_and_after_boot(self) -> None:
        """
        ``before_boot`` runs before any server is loaded (the backup index must know each
        backup's owner before a server's routes answer); ``after_boot`` once all are.
        """
        seen: list[tuple[str, list[str]]] = []

        async def record(name: str) -> None:
            seen.append((name, sorted(s.uuid for s in self.h.node.registry)))

        self.service = WingsService(self.h.node, fatal=self.fatal.append,
                                    before_boot=[lambda: record("before")],
                                    after_boot=[lambda: record("after")])
        self.start()
        self.assertEqual(seen, [("before", []), ("after", sorted([SERVER, OTHER]))])

    def test_garbage_listing_is_a_panel_failure(self) -> None:
        """
        ``meta.last_page: 1e309`` is retried as a panel error and, when the
        panel recovers, boot completes; no unhandled exception is logged.
        """
        garbage = b'{"data": [], "meta": {"current_page": 1, "last_page": 1e309}}'
        self.h.state.faults.add("GET", "/servers", Respond(200, garbage), Respond(200, garbage))
        self.start()
        self.assertEqual(self.fatal, [])
        self.assertEqual(sorted(s.uuid for s in self.h.node.registry), sorted([SERVER, OTHER]))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_garbage_numbers_skip_the_server(self) -> None:
        """
        A server whose document carries a number that is not finite or out of
        range (``memory_limit: 1e309``, a port of 10**30) is skipped like any
        unusable entry; the others boot.
        """
        settings = dict(self.h.state.servers[SERVER].settings)
        settings["build"] = dict(settings.get("build") or {}, memory_limit=float("inf"))
        other = dict(self.h.state.servers[OTHER].settings)
        other["allocations"] = {"default": {"ip": "0.0.0.0", "port": 10 ** 30}}
        self.h.state.faults.add("GET", "/servers", Respond(200, {
            "data": [{"uuid": SERVER, "settings": settings, "process_configuration": {}},
                     {"uuid": OTHER, "settings": other, "process_configuration": {}}],
            "meta": {"current_page": 1, "last_page": 1}}))
        self.start()
        self.assertEqual(self.fatal, [])
        self.assertEqual(list(self.h.node.registry), [])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_crash_leftovers_removed(self) -> None:
        """
        Temporary upload files a crashed daemon left (at any depth) and half-removed trees are
        gone after boot, and not counted; other files stay (before: they stayed forever).
        """
        volume = os.path.join(self.h.config.system.data, SERVER)
        os.makedirs(os.path.join(volume, "a", ".wings-rm-0011223344556677", "deep"))
        for path in (".upload-0123456789abcdef.part", "a/.upload-fedcba9876543210.part",
                     "a/.wings-rm-0011223344556677/deep/x", "keep.txt", "a/.upload-notes.txt"):
            with open(os.path.join(volume, path), "wb") as f:
                f.write(b"x" * 10)
        self.start()
        found = sorted(os.path.relpath(os.path.join(d, n), volume)
                       for d, dirs, files in os.walk(volume) for n in dirs + files)
        self.assertEqual(found, ["a", "a/.upload-notes.txt", "keep.txt"])

    def test_bad_entry_skipped(self) -> None:
        """
        A malformed entry skips only that server.
        """
        self.h.state.faults.add("GET", "/servers", Respond(200, {
            "data": [{"uuid": SERVER, "settings": self.h.state.servers[SERVER].settings,
                      "process_configuration": {}},
                     {"uuid": "../../etc", "settings": {}, "process_configuration": {}},
                     {"uuid": OTHER, "settings": "nope"}],
            "meta": {"current_page": 1, "last_page": 1}}))
        self.start()
        self.assertEqual([s.uuid for s in self.h.node.registry], [SERVER])
        self.assertFalse(os.path.exists(os.path.join(self.h.config.system.data, "..", "..", "etc", "x")))

    def test_listing_failure_is_fatal(self) -> None:
        """
        A refused listing ends the daemon through ``fatal`` with one
        critical line naming the URL and the Panel's answer, and no
        traceback.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.h.state.faults.add("GET", "/servers", Respond(403))
        self.start()
        line = ("failed to load server configurations from http://panel.test/api/remote/servers: "
                "Error response from Panel: AccessDeniedHttpException: Injected fault (403). "
                "(HTTP/403)")
        self.assertEqual(self.fatal, [line])
        critical = [e for e in events if e["log_level"] == LogLevel.critical]
        self.assertEqual([formatEvent(e) for e in critical], [line])
        self.assertEqual([e for e in events if "log_failure" in e], [])

    def test_unreachable_panel_is_one_line(self) -> None:
        """
        A Panel that cannot be reached is retried for the 30 s budget, then
        ends the daemon with one critical line naming the URL and the reason.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.h.state.faults.add("GET", "/servers", *[Drop()] * 100)
        self.start()
        self.assertEqual(len(self.fatal), 1)
        self.assertTrue(self.fatal[0].startswith(
            "failed to load server configurations from http://panel.test/api/remote/servers: "
            "Panel unreachable: "), self.fatal[0])
        self.assertNotIn("\n", self.fatal[0])
        self.assertEqual([formatEvent(e) for e in events if e["log_level"] == LogLevel.critical],
                         self.fatal)
        self.assertEqual([e for e in events if "log_failure" in e], [])

    def test_token_purge_job(self) -> None:
        """
        Single-use ids are forgotten 60 minutes after use by the periodic job.
        """
        self.start()
        tokens = self.h.node.tokens
        tokens.consume("u1", client_ip="1.2.3.4", exp=self.h.clock.seconds() + 900,
                       is_range=False, allow_resume=True)
        self.assertEqual(len(tokens), 1)
        self.h.clock.advance(3601)
        self.h.clock.advance(300)
        self.assertEqual(len(tokens), 0)


class RestoreTests(SynchronousTestCase):
    """
    ``states.json`` at boot (lifecycle.md §1.4) and at shutdown.
    """

    def setUp(self) -> None:
        self.h = Harness(FilePath(self.mktemp()), SERVER, OTHER)
        self.envs: dict[str, FakeEnvironment] = {}

        def make(settings: object) -> FakeEnvironment:
            env = FakeEnvironment()
            self.envs[getattr(settings, "uuid")] = env
            return env

        self.h.node.make_environment = make  # type: ignore[method-assign,assignment]
        self.fatal: list[str] = []
        self.service = WingsService(self.h.node, fatal=self.fatal.append)
        self.path = os.path.join(self.h.config.system.root_directory, "states.json")

    def boot(self) -> None:
        self.service.startService()
        for _ in range(50):
            self.h.panel_http.flush()
            self.h.clock.advance(1)

    def test_recorded_running_is_started(self) -> None:
        """
        A server recorded ``running`` is started again; one recorded ``offline`` is not.
        """
        write_states(self.path, {SERVER: "running", OTHER: "offline"})
        self.boot()
        self.addCleanup(self.service.stopService)
        self.assertIn(("start",), self.envs[SERVER].calls)
        self.assertNotIn(("start",), self.envs[OTHER].calls)

    def test_shutdown_records_then_stops(self) -> None:
        """
        At shutdown the states are written first (a running server recorded ``running``), then
        every running server is stopped with the 10 s budget, killed if needed.
        """
        write_states(self.path, {SERVER: "running"})
        self.boot()
        self.envs[SERVER].set_state("running")
        self.service.stopService()
        self.assertEqual(read_states(self.path)[SERVER], "running")
        self.assertIn(("wait_for_stop", 10.0, True), self.envs[SERVER].calls)
        self.assertNotIn(("wait_for_stop", 10.0, True), self.envs[OTHER].calls)
        self.assertEqual(self.envs[SERVER].state, "offline")



class ActivityTests(SynchronousTestCase):
    """
    ``ActivityLog`` and its flush job.
    """

    def setUp(self) -> None:
        self.h = Harness(FilePath(self.mktemp()), SERVER)
        self.log = self.h.node.activity

    def flush(self) -> int:
        from twisted.internet.defer import Deferred
        results: list = []
        Deferred.fromCoroutine(self.log.flush()).addBoth(results.append)
        self.h.panel_http.flush()
        return results[0]

    def test_flush_sends_and_deletes(self) -> None:
        """
        Records reach the panel in the documented shape and are deleted.
        """
        self.log.record("server:file.uploaded", server=SERVER, user=USER, ip="127.0.0.1",
                        metadata={"file": "a", "directory": "."})
        self.assertEqual(self.flush(), 1)
        sent = self.h.state.activity[0]
        self.assertEqual(sent["event"], "server:file.uploaded")
        self.assertEqual(sent["user"], USER)
        self.assertTrue(sent["timestamp"].endswith("Z"))
        self.assertEqual(self.log.pending(), [])

    def test_failed_flush_keeps_rows(self) -> None:
        """
        A panel error leaves the rows for the next run.
        """
        self.log.record("server:file.uploaded", server=SERVER, user=None, ip="127.0.0.1")
        self.h.state.faults.add("POST", "/activity", Respond(422))
        self.assertEqual(self.flush(), 0)
        self.assertEqual(len(self.log.pending()), 1)
        self.assertEqual(self.flush(), 1)

    def test_invalid_ip_dropped(self) -> None:
        """
        Records whose ip is not an address are deleted unsent.
        """
        self.log.record("server:file.uploaded", server=SERVER, user=None, ip="")
        self.assertEqual(self.flush(), 0)
        self.assertEqual(self.log.pending(), [])
        self.assertEqual(self.h.state.activity, [])

    def test_rfc3339(self) -> None:
        """
        UTC with ``Z`` and trailing zeros of the fraction removed.
        """
        self.assertEqual(rfc3339(1767366245.5), "2026-01-02T15:04:05.5Z")
        self.assertEqual(rfc3339(1767366245), "2026-01-02T15:04:05Z")


class EnvironmentLifetimeTests(SynchronousTestCase):
    """
    Processes found running at boot, and what shutdown does to them.
    """

    def setUp(self) -> None:
        self.h = Harness(FilePath(self.mktemp()), SERVER, OTHER)
        self.made: dict[str, FakeEnvironment] = {}

        def make(settings: object) -> FakeEnvironment:
            environment = FakeEnvironment()
            environment.alive = True            # already running before this boot
            environment.outlives_daemon = getattr(settings, "uuid") == SERVER
            self.made[getattr(settings, "uuid")] = environment
            return environment

        self.h.node.make_environment = make  # type: ignore[assignment]
        self.service = WingsService(self.h.node, fatal=lambda message: None)
        self.service.startService()
        for _ in range(50):
            self.h.panel_http.flush()
            self.h.clock.advance(1)

    def test_running_process_is_adopted(self) -> None:
        """
        A process running at boot is adopted through ``start`` (which
        attaches to it) and reported running, without being started anew.
        """
        for environment in self.made.values():
            self.assertEqual(environment.state, "running")
            self.assertEqual([c for c in environment.calls if c[0] == "start"], [("start",)])
            self.assertTrue(environment.alive)
        self.service.stopService()

    def test_shutdown_stops_only_what_cannot_outlive_the_daemon(self) -> None:
        """
        At shutdown a process that outlives the daemon (a container) is left
        running; the others are stopped with the shutdown budget.
        """
        self.service.stopService()
        self.assertNotIn("wait_for_stop", [c[0] for c in self.made[SERVER].calls])
        self.assertTrue(self.made[SERVER].alive)
        self.assertIn(("wait_for_stop", 10.0, True), self.made[OTHER].calls)
