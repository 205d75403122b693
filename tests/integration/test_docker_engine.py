"""
The Docker Engine API client against real engines on the real reactor: an
unreachable unix socket, and podman's Docker-compatible API (bounded,
stopped in a cleanup; skipped only outside CI when podman cannot be
installed).  The unit half is ``tests/unit/test_docker.py``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase

from wings_twisted.environment.docker import (
    DockerClient,
    DockerError,
)

from ..support import REPO
from ..unit.test_docker import EXPECTED_DOCKER

# --- Integration: the real reactor -----------------------------------------

START_TIMEOUT = 240.0
STOP_TIMEOUT = 60.0


def podman_script() -> str | None:
    """
    ``podman-engine.sh``: beside the repository (CI's layout), else the
    development machine's copy.
    """
    for path in (os.path.join(os.path.dirname(REPO), "shared", "tools", "podman-engine.sh"),
                 "/work/shared/tools/podman-engine.sh"):
        if os.path.isfile(path):
            return path
    return None


class _Script(ProcessProtocol):
    """
    Collects a script's output; ``ended`` fires with its exit code.
    """

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ended: Deferred[int | None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        if not self.ended.called:
            self.ended.callback(reason.value.exitCode)


async def run_script(reactor: Any, args: list[str], timeout: float) -> tuple[int | None, str]:
    """
    Run ``sh args...`` to completion within ``timeout`` seconds (killed
    after that); return its exit code and output.
    """
    script = _Script()
    process = reactor.spawnProcess(script, "/bin/sh", ["/bin/sh"] + args, env=dict(os.environ))
    process.closeStdin()
    try:
        code = await script.ended.addTimeout(timeout, reactor)
    except Exception:
        try:
            process.signalProcess("KILL")
        except ProcessExitedAlready:
            pass
        raise
    return code, (script.out + script.err).decode("utf-8", "replace")


class EngineSocketTests(TestCase):
    """
    The client on the real reactor, without an engine.
    """

    timeout = 30

    async def test_missing_socket(self) -> None:
        """
        A ``DOCKER_HOST`` socket that does not exist fails at once with a
        ``DockerError``.
        """
        from twisted.internet import reactor
        # Short on purpose: a checkout deep enough pushes a path under
        # _trial_temp past the 107 bytes a socket address can hold.
        directory = tempfile.mkdtemp(prefix="wings-sock-")
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "docker.sock")
        client = DockerClient.from_environment(reactor, {"DOCKER_HOST": "unix://" + path})
        self.addCleanup(client.close)
        with self.assertRaises(DockerError) as caught:
            await client.engine_info()
        self.assertIn("Cannot reach the engine at unix://" + path, caught.exception.message)


class PodmanEngineTests(TestCase):
    """
    ``engine_info`` against podman's Docker-compatible API.
    """

    timeout = START_TIMEOUT + STOP_TIMEOUT + 60

    async def start_engine(self, reactor: Any) -> str:
        """
        Start podman in a fresh state directory (stopped in a cleanup) and
        return its socket; skip outside CI when it cannot be had.
        """
        in_ci = bool(os.environ.get("CI"))
        script = podman_script()
        if script is None:
            if in_ci:
                self.fail("podman-engine.sh not found beside the repository")
            raise SkipTest("podman-engine.sh not found")
        state = tempfile.mkdtemp(prefix="wings-podman-")

        async def stop() -> None:
            code, output = await run_script(reactor, [script, "stop", state], STOP_TIMEOUT)
            shutil.rmtree(state, ignore_errors=True)
            if code != 0:
                self.fail("podman-engine.sh stop failed ({}):\n{}".format(code, output))

        self.addCleanup(lambda: Deferred.fromCoroutine(stop()))
        code, output = await run_script(reactor, [script, "start", state], START_TIMEOUT)
        lines = output.strip().splitlines()
        if code != 0 or not lines or not lines[-1].endswith(".sock"):
            message = "podman engine unavailable (exit {}):\n{}".format(code, output[-2000:])
            if in_ci:
                self.fail(message)
            raise SkipTest(message)
        return lines[-1]

    async def test_engine_info(self) -> None:
        """
        A real engine yields a complete ``docker`` block: a version,
        integer counts that add up, a storage driver, and memory > 0.
        """
        from twisted.internet import reactor
        socket = await self.start_engine(reactor)
        client = DockerClient.from_environment(reactor, {"DOCKER_HOST": "unix://" + socket})
        self.addCleanup(client.close)
        version = await client.api_version()
        self.assertRegex(version, r"^1\.\d+$")
        self.assertLessEqual(tuple(map(int, version.split("."))), (1, 41))
        info = await client.engine_info()
        docker = info.docker
        self.assertEqual(set(docker), set(EXPECTED_DOCKER))
        self.assertTrue(docker["version"])
        counts = docker["containers"]
        self.assertEqual(set(counts), {"total", "running", "paused", "stopped"})
        for value in counts.values():
            self.assertIsInstance(value, int)
        self.assertEqual(counts["total"], counts["running"] + counts["paused"] + counts["stopped"])
        self.assertTrue(docker["storage"]["driver"])
        self.assertIn(docker["cgroups"]["version"], ("1", "2"))
        self.assertTrue(docker["cgroups"]["driver"])
        self.assertIsInstance(docker["runc"]["version"], str)
        self.assertGreater(info.memory_bytes, 0)
        self.assertTrue(info.operating_system)
