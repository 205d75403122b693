"""
Tests for ``DockerEnvironment`` (``wings_twisted.environment.docker``)
against the in-memory engine of ``tests/fakeengine.py``: what it asks the
engine, in which order, and what the server layer hears.  The real engine
is ``tests/integration/test_docker_daemon.py``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from wings_twisted.blocking import run_inline
from wings_twisted.environment import (EnvironmentError, EnvironmentSettings, IEnvironment,
                                       Limits, NotAttached, StopConfig)
from wings_twisted.environment.docker.engine import Engine
from wings_twisted.environment.docker.environment import (ENGINE_LOST, PULLED, PULLING,
                                                          REMOVED, DockerEnvironment)
from wings_twisted.environment.factories import DockerEnvironments

from ..fakeengine import FakeEngine
from ..support import make_config

NAME = "8f2a0c1e-3b4d-4e5f-9a6b-7c8d9e0f1a2b"


class Listener:
    """
    Records what the environment reports.
    """

    def __init__(self) -> None:
        self.states: list[str] = []
        self.lines: list[str] = []
        self.samples: list[Any] = []
        self.notices: list[str] = []
        self.progress_lines: list[str] = []

    def state_changed(self, old: str, new: str) -> None:
        self.states.append(new)

    def output(self, line: str) -> None:
        self.lines.append(line)

    def stats(self, sample: Any) -> None:
        self.samples.append(sample)

    def notice(self, text: str) -> None:
        self.notices.append(text)

    def progress(self, line: str) -> None:
        self.progress_lines.append(line)


class DockerEnvironmentTests(SynchronousTestCase):
    """
    One server container's life, step by step.
    """

    def setUp(self) -> None:
        self.engine = FakeEngine()
        base = FilePath(self.mktemp())
        base.makedirs()
        self.config = make_config(base)
        self.env = self.make(StopConfig("command", "stop"))

    def make(self, stop: StopConfig, image: str = "~localhost/busybox-test") -> DockerEnvironment:
        settings = EnvironmentSettings(
            uuid=NAME, volume="/srv/volumes/" + NAME, invocation="./run", image=image,
            env=(("STARTUP", "./run"),), limits=Limits(memory_limit=64), stop=stop,
            uid=988, gid=988)
        env = DockerEnvironment(settings, engine=Engine(self.engine.client, lambda: self.config),
                                run_blocking=run_inline)
        self.listener = Listener()
        env.set_listener(self.listener)
        return env

    def start(self) -> None:
        d = self.env.start()
        self.engine.flush()
        self.successResultOf(d)

    def test_provides_the_interface(self) -> None:
        """
        ``DockerEnvironment`` provides ``IEnvironment``; its processes
        outlive the daemon.
        """
        self.assertTrue(verifyObject(IEnvironment, self.env))
        self.assertTrue(self.env.outlives_daemon)

    def test_start_recreates_attaches_then_starts(self) -> None:
        """
        A start ensures the network, checks the local image (pull lines
        around it), removes the old container, creates a new one, attaches
        **before** starting it, then reads stats; output lines and samples
        reach the listener.
        """
        self.engine.stats = [{"memory_stats": {"usage": 1000, "limit": 73_600_000}}]
        self.start()
        paths = self.engine.paths()
        order = [p for p in paths if not p.startswith("/images") and not p.endswith("/json")]
        self.assertEqual(order[:4], ["/networks/pterodactyl_nw", "/networks/create",
                                     "/containers/" + NAME, "/containers/create"])
        self.assertIn("/containers/{}/start".format(NAME), paths)
        self.assertIn("/containers/{}/stats".format(NAME), paths)
        self.assertEqual(self.listener.states, ["starting"])
        self.assertEqual(self.listener.notices, [PULLING, PULLED])
        self.assertEqual(self.engine.containers[NAME]["HostConfig"]["Memory"], 73_600_000)
        self.engine.output(NAME, b"booting\r\nDone\r\n")
        self.assertEqual(self.listener.lines, ["booting", "Done"])
        self.assertEqual(self.listener.samples[0]["memory_limit_bytes"], 73_600_000)
        self.assertTrue(self.env.is_attached())

    def test_attach_happens_before_start(self) -> None:
        """
        The attach connection exists when ``start`` is requested (so no
        early output is lost).
        """
        seen = []
        route = self.engine._route

        def spy(method: str, path: str, *args: Any) -> Any:
            if path.endswith("/start"):
                seen.append(NAME in self.engine.attached)
            return route(method, path, *args)

        self.engine._route = spy  # type: ignore[method-assign]
        self.start()
        self.assertEqual(seen, [True])

    def test_running_container_is_adopted(self) -> None:
        """
        A start finding the container running attaches to it and sets
        ``running`` without recreating it.
        """
        self.start()
        other = self.make(StopConfig("command", "stop"))
        d = other.start()
        self.engine.flush()
        self.successResultOf(d)
        self.assertEqual(other.state, "running")
        self.assertEqual(self.engine.paths("POST").count("/containers/create"), 1)

    def test_identical_container_is_started_again(self) -> None:
        """
        A start whose container document and image are what the daemon
        created last starts that stopped container again, its log
        truncated; changed settings recreate it.
        """
        self.engine.log_directory = self.mktemp()
        import os
        os.makedirs(self.engine.log_directory)
        self.start()
        self.engine.exit(NAME, 0)
        first = self.engine.containers[NAME]
        self.start()
        self.assertIs(self.engine.containers[NAME], first)
        self.assertEqual(self.engine.paths("POST").count("/containers/create"), 1)
        with open(first["LogPath"], "rb") as f:
            self.assertEqual(f.read(), b"")
        self.engine.exit(NAME, 0)
        self.env.apply_settings(self.env.settings.__class__(
            **dict(vars(self.env.settings), limits=Limits(memory_limit=128))))
        self.start()
        self.assertEqual(self.engine.paths("POST").count("/containers/create"), 2)
        self.assertEqual(self.engine.containers[NAME]["HostConfig"]["Memory"], 147_200_000)

    def test_exit_code_and_crash_state(self) -> None:
        """
        The end of the attach stream is the end of the run: the exit code
        comes from inspecting the container, the state drops to offline.
        """
        self.start()
        self.env.set_state("running")
        self.engine.exit(NAME, 3)
        self.assertEqual(self.listener.states, ["starting", "running", "offline"])
        self.assertEqual(self.env.exit_state(), (3, False))

    def test_sigkill_not_sent_by_daemon_with_memory_limit_is_oom(self) -> None:
        """
        Podman never sets ``OOMKilled``: an exit by SIGKILL the daemon did
        not send, with a memory limit and the OOM killer on, counts as OOM.
        """
        self.start()
        self.engine.exit(NAME, 137)
        self.assertEqual(self.env.exit_state(), (137, True))

    def test_sigkill_sent_by_daemon_is_not_oom(self) -> None:
        """
        A kill by the daemon is not mistaken for the OOM killer.
        """
        self.start()
        self.successResultOf(self.env.terminate("SIGKILL"))
        self.engine.exit(NAME, 137)
        self.assertEqual(self.env.exit_state(), (137, False))
        self.assertEqual(self.listener.states, ["starting", "stopping", "offline"])

    def test_engine_oom_flag(self) -> None:
        """
        ``State.OOMKilled`` (Docker) is reported as is.
        """
        self.start()
        self.engine.exit(NAME, 1, oom=True)
        self.assertEqual(self.env.exit_state(), (1, True))

    def test_removed_behind_our_back(self) -> None:
        """
        A container removed outside the daemon ends the run with exit code
        1, not OOM, and a console notice.
        """
        self.start()
        self.env.set_state("running")
        self.engine.vanish(NAME)
        self.assertEqual(self.env.exit_state(), (1, False))
        self.assertEqual(self.listener.states[-1], "offline")
        self.assertIn(REMOVED, self.listener.notices)

    def test_engine_lost(self) -> None:
        """
        When the engine stops answering as the stream ends, the server goes
        offline through ``stopping`` (no crash) with a console notice.
        """
        self.start()
        self.env.set_state("running")
        self.engine.down = True
        self.engine.exit(NAME, 0)
        self.assertEqual(self.listener.states[-2:], ["stopping", "offline"])
        self.assertIn(ENGINE_LOST, self.listener.notices)

    def test_stop_command_on_stdin(self) -> None:
        """
        A ``command`` stop writes the command to the attach stream.
        """
        self.start()
        transport = self.engine.attached[NAME][1]
        transport.clear()
        self.successResultOf(self.env.stop())
        self.assertEqual(transport.value(), b"stop\n")
        self.assertEqual(self.env.state, "stopping")

    def test_send_command_and_not_attached(self) -> None:
        """
        Commands go to stdin; without a stream they fail ``NotAttached``.
        """
        self.failureResultOf(self.env.send_command("list"), NotAttached)
        self.start()
        transport = self.engine.attached[NAME][1]
        transport.clear()
        self.successResultOf(self.env.send_command("list"))
        self.assertEqual(transport.value(), b"list\n")

    def test_signal_stop_escalates(self) -> None:
        """
        ``^C`` sends SIGINT, then SIGKILL after the grace period.
        """
        self.env = self.make(StopConfig("signal", "C"))
        self.start()
        self.successResultOf(self.env.stop())
        self.engine.flush()
        kills = [q["signal"] for m, p, q, _ in self.engine.calls if p.endswith("/kill")]
        self.assertEqual(kills, ["SIGINT"])
        self.engine.clock.advance(10)
        self.engine.flush()
        kills = [q["signal"] for m, p, q, _ in self.engine.calls if p.endswith("/kill")]
        self.assertEqual(kills, ["SIGINT", "SIGKILL"])

    def test_wait_for_stop_kills_on_timeout(self) -> None:
        """
        A process ignoring its stop is killed when the budget runs out, and
        the wait ends with the run.
        """
        self.start()
        d = self.env.wait_for_stop(60, True)
        self.engine.flush()
        self.assertNoResult(d)
        self.engine.clock.advance(60)
        self.engine.flush()
        kills = [q["signal"] for m, p, q, _ in self.engine.calls if p.endswith("/kill")]
        self.assertEqual(kills, ["SIGKILL"])
        self.engine.exit(NAME, 137)
        self.successResultOf(d)
        self.assertEqual(self.env.exit_state(), (137, False))

    def test_wait_for_stop_without_kill_fails(self) -> None:
        """
        Without kill-on-timeout an overrun budget is an ``EnvironmentError``.
        """
        self.start()
        d = self.env.wait_for_stop(5, False)
        self.engine.flush()
        self.engine.clock.advance(5)
        self.failureResultOf(d, EnvironmentError)

    def test_kill_of_stopped_container(self) -> None:
        """
        Podman's 500 for killing a stopped container means "nothing to
        kill": the state settles offline through stopping.
        """
        self.start()
        self.env.set_state("running")
        self.engine.containers[NAME]["State"]["Running"] = False
        self.env._run = None   # the stream is gone already
        d = self.env.terminate("SIGKILL")
        self.engine.flush()
        self.successResultOf(d)
        self.assertEqual(self.listener.states[-2:], ["stopping", "offline"])

    def test_missing_local_image(self) -> None:
        """
        A ``~`` image that does not exist fails the start with a clear
        reason, on the console too, and the state returns offline.
        """
        self.env = self.make(StopConfig("command", "stop"), image="~localhost/nope")
        d = self.env.start()
        self.engine.flush()
        failure = self.failureResultOf(d, EnvironmentError)
        self.assertIn("localhost/nope does not exist", str(failure.value))
        self.assertEqual(self.listener.states, ["starting", "stopping", "offline"])
        self.assertTrue(self.listener.notices[-1].startswith("Server start failed: "))
        self.assertNotIn("/containers/create", self.engine.paths())

    def test_pull_progress_and_error(self) -> None:
        """
        A remote image is pulled; progress lines go to ``progress``; an
        error inside the pull stream fails the start.
        """
        self.env = self.make(StopConfig("command", "stop"), image="registry.test/game:1")
        self.start()
        self.assertEqual(self.listener.progress_lines, ["Pulling fs layer", "Downloading [=> ]"])
        self.engine.pull_lines = [{"error": "unauthorized: authentication required"}]
        self.engine.images.clear()
        self.engine.exit(NAME, 0)
        d = self.env.start()
        self.engine.flush()
        failure = self.failureResultOf(d, EnvironmentError)
        self.assertIn("unauthorized", str(failure.value))

    def test_failed_pull_uses_local_image(self) -> None:
        """
        A pull failing for an image that exists locally is only a warning.
        """
        self.env = self.make(StopConfig("command", "stop"), image="localhost/busybox-test")
        self.engine.pull_lines = [{"error": "registry unreachable"}]
        self.start()
        self.assertIn("/containers/create", self.engine.paths())

    def test_read_log(self) -> None:
        """
        ``read_log`` splits the engine's log tail into lines.
        """
        self.start()
        self.engine.logs = b"one\r\ntwo\r\n\nthree\r\n"
        d = self.env.read_log(2)
        self.engine.flush()
        self.assertEqual(self.successResultOf(d), ["two", "three"])

    def test_update_limits_falls_back_to_libpod(self) -> None:
        """
        Without a compatible ``update`` (podman) the libpod endpoint gets
        the limits.
        """
        self.start()
        d = self.env.update_limits()
        self.engine.flush()
        self.successResultOf(d)
        updates = [(p, b) for m, p, _, b in self.engine.calls if p.endswith("/update")]
        self.assertEqual(updates[0][0], "/containers/{}/update".format(NAME))
        self.assertEqual(updates[1][0], "/libpod/containers/{}/update".format(NAME))
        self.assertEqual(updates[1][1]["memory"]["limit"], 73_600_000)

    def test_destroy_removes_without_crash(self) -> None:
        """
        ``destroy`` force-removes the container and ends offline through
        stopping; the stream's end is not taken for an exit.
        """
        self.start()
        self.env.set_state("running")
        d = self.env.destroy()
        self.engine.flush()
        self.successResultOf(d)
        self.assertNotIn(NAME, self.engine.containers)
        self.assertEqual(self.listener.states[-2:], ["stopping", "offline"])
        self.assertEqual(self.listener.states.count("offline"), 1)

    def test_detach_leaves_container(self) -> None:
        """
        At shutdown the environment lets go of the streams; the container
        and the state stay as they are.
        """
        self.start()
        transport = self.engine.attached[NAME][1]
        self.env.set_state("running")
        self.env.detach()
        self.assertTrue(transport.disconnecting)
        self.assertIn(NAME, self.engine.containers)
        self.assertEqual(self.listener.states[-1], "running")


class DockerEnvironmentsTests(SynchronousTestCase):
    """
    The factory of ``environment.driver: docker``.
    """

    def test_check_warns_without_engine(self) -> None:
        """
        An engine that cannot be used at boot is a warning naming it, not
        a failure.
        """
        engine = FakeEngine()
        engine.down = True
        base = FilePath(self.mktemp())
        base.makedirs()
        factory = DockerEnvironments(client=engine.client, config=lambda: make_config(base),
                                     run_blocking=run_inline)
        from twisted.logger import globalLogPublisher
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        d: Deferred[bool] = Deferred.fromCoroutine(factory.check())
        engine.flush()
        self.assertFalse(self.successResultOf(d))
        warnings = [e for e in events if "cannot be used" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["log_level"].name, "warn")


class DockerInstallerTests(SynchronousTestCase):
    """
    The install container (lifecycle.md §16.2–§16.3) in memory.
    """

    def setUp(self) -> None:
        self.engine = FakeEngine()
        base = FilePath(self.mktemp())
        base.makedirs()
        self.config = make_config(base)
        settings = EnvironmentSettings(uuid=NAME, volume=base.child("volume").path,
                                       image="~localhost/busybox-test")
        self.env = DockerEnvironment(settings, engine=Engine(self.engine.client,
                                                             lambda: self.config),
                                     run_blocking=run_inline)
        self.name = NAME + "_installer"

    def test_runs_streams_and_cleans_up(self) -> None:
        """
        The script (CRLF made LF) is mounted at ``/mnt/install``, the
        installer attached before its start, its output streamed line by
        line; a non-zero exit still completes; the container and the script
        directory are removed afterwards.
        """
        scripts: list[bytes] = []
        route = self.engine._route

        def spy(method: str, path: str, query: Any, body: Any, request: Any) -> Any:
            if path.endswith("/start"):
                mount = self.engine.containers[self.name]["HostConfig"]["Mounts"][1]["Source"]
                with open(mount + "/install.sh", "rb") as f:
                    scripts.append(f.read())
                self.assertIn(self.name, self.engine.attached)
            return route(method, path, query, body, request)

        self.engine._route = spy  # type: ignore[method-assign]
        lines: list[str] = []
        d = self.env.run_installer("echo hi\r\nexit 3\r\n", "~localhost/busybox-test", "sh",
                                   (("A", "1"),), lines.append)
        self.engine.flush()
        self.assertEqual(scripts, [b"echo hi\nexit 3\n"])
        body = [b for m, p, q, b in self.engine.calls if p == "/containers/create"][0]
        self.assertEqual(body["Cmd"], ["sh", "/mnt/install/install.sh"])
        self.engine.output(self.name, b"hi\r\npartial")
        self.engine.exit(self.name, 3)
        result = self.successResultOf(d)
        self.assertEqual((result.completed, result.exit_code), (True, 3))
        self.assertEqual(lines, ["hi", "partial"])
        self.assertNotIn(self.name, self.engine.containers)
        self.assertFalse(FilePath(self.config.system.tmp_directory).child(NAME).exists())

    def test_missing_image_is_a_failed_install(self) -> None:
        """
        An installer image that cannot be had is a failed pipeline, with
        the reason.
        """
        d = self.env.run_installer("true", "~localhost/nope", "sh", (), lambda line: None)
        self.engine.flush()
        result = self.successResultOf(d)
        self.assertFalse(result.completed)
        self.assertIn("localhost/nope does not exist", result.error)
