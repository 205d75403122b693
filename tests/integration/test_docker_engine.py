"""
The Docker Engine API client against real engines on the real reactor: an
unreachable unix socket, and podman's Docker-compatible API started by the
repository's ``tools/podman-engine.sh`` (bounded, stopped in a cleanup;
skipped only outside CI when podman is not installed).  The unit half is
``tests/unit/test_docker.py``; the Docker environment end to end is
``test_docker_daemon.py``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from twisted.trial.unittest import TestCase

from wings_twisted.environment.docker import (
    DockerClient,
    DockerError,
)

from ..unit.test_docker import EXPECTED_DOCKER
from .engine import START_TIMEOUT, STOP_TIMEOUT, start_podman


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
        Start podman (stopped in a cleanup) and return its socket.
        """
        engine = await start_podman(reactor, self.addCleanup)
        return engine.socket

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
