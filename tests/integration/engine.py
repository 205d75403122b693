"""
Real engines for the integration tests: podman's Docker-compatible API and
an image registry with password auth, both started through the repository's
``tools/podman-engine.sh`` in a temporary state directory and stopped in a
cleanup, within bounded time.  Without the tools the tests skip, except
under ``CI`` (whose ``.ci/run`` installs them), where they fail.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest

from wings_twisted.environment.docker import DockerClient

from ..support import REPO

SCRIPT = os.path.join(REPO, "tools", "podman-engine.sh")
START_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0
#: The image the engine script builds: a static busybox with the
#: entrypoint of Pterodactyl's images.
IMAGE = "localhost/busybox-test"
#: The same without an entrypoint, as installer images are.
INSTALLER_IMAGE = "localhost/busybox-installer"
REGISTRY_USER = "wings"
REGISTRY_PASSWORD = "registry-secret-1"


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


async def run_script(reactor: Any, args: list[str], timeout: float) -> tuple[int | None, str, str]:
    """
    Run ``sh args...`` to completion within ``timeout`` seconds (killed
    after that); its exit code, standard output and standard error.
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
    return code, script.out.decode("utf-8", "replace"), script.err.decode("utf-8", "replace")


def unavailable(message: str) -> None:
    """
    Skip, or fail under ``CI``.
    """
    if os.environ.get("CI"):
        raise AssertionError("{} (required under CI)".format(message))
    raise SkipTest(message)


@dataclass
class PodmanEngine:
    """
    A running engine: its state directory, socket and a client for checks.
    """

    state: str
    socket: str
    client: DockerClient

    @property
    def docker_host(self) -> str:
        """
        ``DOCKER_HOST`` for it.
        """
        return "unix://" + self.socket


async def start_podman(reactor: Any, add_cleanup: Callable[..., None]) -> PodmanEngine:
    """
    Start podman in a fresh state directory (stopped and removed by a
    cleanup); skip (or fail under CI) when it cannot run here.
    """
    if not os.path.isfile(SCRIPT):
        raise AssertionError("{} is missing".format(SCRIPT))
    # A short path: unix socket addresses hold at most 107 bytes.
    state = tempfile.mkdtemp(prefix="wings-podman-", dir="/tmp")

    async def stop() -> None:
        code, out, err = await run_script(reactor, [SCRIPT, "stop", state], STOP_TIMEOUT)
        shutil.rmtree(state, ignore_errors=True)
        if code != 0:
            raise AssertionError("podman-engine.sh stop failed ({}):\n{}{}".format(code, out, err))

    add_cleanup(lambda: Deferred.fromCoroutine(stop()))
    code, out, err = await run_script(reactor, [SCRIPT, "start", state], START_TIMEOUT)
    lines = out.strip().splitlines()
    if code != 0 or not lines or not lines[-1].endswith(".sock"):
        unavailable("podman engine unavailable (exit {}):\n{}".format(code, (out + err)[-2000:]))
    client = DockerClient.from_environment(reactor, {"DOCKER_HOST": "unix://" + lines[-1]})
    add_cleanup(client.close)
    return PodmanEngine(state, lines[-1], client)


async def start_registry(reactor: Any, engine: PodmanEngine, port: int) -> str:
    """
    Start the registry on ``127.0.0.1:port`` holding the test image; its
    reference for that image (stopped with the engine).
    """
    code, out, err = await run_script(
        reactor, [SCRIPT, "registry", engine.state, str(port), REGISTRY_USER, REGISTRY_PASSWORD],
        START_TIMEOUT)
    lines = out.strip().splitlines()
    if code != 0 or not lines:
        unavailable("registry unavailable (exit {}):\n{}".format(code, (out + err)[-2000:]))
    return lines[-1]


def free_port() -> int:
    """
    A TCP port free on 127.0.0.1 right now.
    """
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
