"""
Tests for the Docker Engine API client (``wings_twisted.environment.docker``) and for
``GET /api/system?v=2`` with the Docker driver (api.md §3.1, config.md §5),
against a fake engine served in memory (``FakeEngine`` through
``treq.testing.StubTreq``) or a ``MemoryReactorClock``.  Real engines:
``tests/integration/test_docker_engine.py``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import Agent
from twisted.web.iweb import IAgentEndpointFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from wings_twisted import __version__, tap
from wings_twisted.environment.docker import (
    DEFAULT_TIMEOUT,
    DockerClient,
    DockerError,
    EngineEndpointFactory,
    engine_info_from,
    negotiated_version,
    parse_docker_host,
)
from wings_twisted.web.system import ENGINE_UNREACHABLE, SystemResource, os_pretty_name

from ..support import Expect, Harness, ScriptedPeer, make_config

# Shaped like Docker 24.0.7's answers (Docker Engine API v1.43), trimmed.
VERSION: dict[str, Any] = {
    "Platform": {"Name": "Docker Engine - Community"},
    "Components": [{"Name": "Engine", "Version": "24.0.7",
                    "Details": {"ApiVersion": "1.43", "MinAPIVersion": "1.12"}}],
    "Version": "24.0.7",
    "ApiVersion": "1.43",
    "MinAPIVersion": "1.12",
    "GitCommit": "311b9ff",
    "GoVersion": "go1.20.10",
    "Os": "linux",
    "Arch": "amd64",
    "KernelVersion": "6.1.0-18-amd64",
    "BuildTime": "2023-10-26T09:07:41.000000000+00:00",
}

INFO: dict[str, Any] = {
    "ID": "7TRN:IPZB:QYBB:VPBQ:UWYJ:KHCT:SBZY:3MCE:WLAI:JF4O:KJDC:2QYJ",
    "Containers": 12,
    "ContainersRunning": 3,
    "ContainersPaused": 1,
    "ContainersStopped": 8,
    "Images": 40,
    "Driver": "overlay2",
    "DriverStatus": [["Backing Filesystem", "extfs"], ["Supports d_type", "true"],
                     ["Using metacopy", "false"], ["Native Overlay Diff", "true"],
                     ["userxattr", "false"]],
    "MemoryLimit": True,
    "CgroupDriver": "systemd",
    "CgroupVersion": "2",
    "KernelVersion": "6.1.0-18-amd64",
    "OperatingSystem": "Debian GNU/Linux 12 (bookworm)",
    "OSType": "linux",
    "Architecture": "x86_64",
    "NCPU": 8,
    "MemTotal": 33554432000,
    "ServerVersion": "24.0.7",
    "DefaultRuntime": "runc",
    "ContainerdCommit": {"ID": "d8f198a4ed8892c764191ef7b3b06d8a2eeb5c7f",
                         "Expected": "d8f198a4ed8892c764191ef7b3b06d8a2eeb5c7f"},
    "RuncCommit": {"ID": "v1.1.10-0-g18a0cb0", "Expected": "v1.1.10-0-g18a0cb0"},
    "InitCommit": {"ID": "de40ad0", "Expected": "de40ad0"},
}

EXPECTED_DOCKER = {
    "version": "24.0.7",
    "cgroups": {"driver": "systemd", "version": "2"},
    "containers": {"total": 12, "running": 3, "paused": 1, "stopped": 8},
    "storage": {"driver": "overlay2", "filesystem": "extfs"},
    "runc": {"version": "v1.1.10-0-g18a0cb0"},
}

_VERSIONED = re.compile(r"^/v(\d+\.\d+)(/.*)$")


class FakeEngine(Resource):
    """
    Answers ``/_ping``, ``/v<x>/version`` and ``/v<x>/info`` like Docker;
    ``fail[path]`` (unversioned) makes a path answer ``(status, message)``.
    """

    isLeaf = True

    def __init__(self, api_version: str | None = "1.43") -> None:
        super().__init__()
        self.api_version = api_version
        self.version = dict(VERSION)
        self.info = dict(INFO)
        self.fail: dict[str, tuple[int, str]] = {}
        self.stall: set[str] = set()
        self.paths: list[str] = []
        self.user_agents: list[str] = []

    def render_GET(self, request: Any) -> bytes:
        path = request.path.decode()
        self.paths.append(path)
        self.user_agents.append((request.getHeader(b"user-agent") or b"").decode())
        if self.api_version is not None:
            request.setHeader(b"Api-Version", self.api_version.encode())
        match = _VERSIONED.match(path)
        plain = match.group(2) if match else path
        if plain in self.stall:
            # Headers and a first byte, then nothing: a wedged engine.
            request.setHeader(b"Content-Length", b"100")
            request.write(b"{")
            return NOT_DONE_YET  # type: ignore[return-value]
        if plain in self.fail:
            status, message = self.fail[plain]
            request.setResponseCode(status)
            request.setHeader(b"Content-Type", b"application/json")
            return json.dumps({"message": message}).encode()
        if path == "/_ping":
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"OK"
        documents = {"/version": self.version, "/info": self.info}
        if match is None or plain not in documents:
            request.setResponseCode(404)
            return json.dumps({"message": "page not found"}).encode()
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(documents[plain]).encode()


@implementer(IStreamClientEndpoint)
class _RefusingEndpoint:
    def connect(self, factory: Any) -> Deferred[Any]:
        return fail(ConnectionRefusedError("Connection refused"))


@implementer(IAgentEndpointFactory)
class _RefusingEndpoints:
    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        return _RefusingEndpoint()


def refusing_client(clock: Any) -> DockerClient:
    """
    A client whose engine refuses every connection.
    """
    agent = Agent.usingEndpointFactory(MemoryReactorClock(), _RefusingEndpoints())
    return DockerClient(HTTPClient(agent), clock, where="unix:///gone/docker.sock")


def run(coroutine: Any) -> Deferred[Any]:
    """
    ``coroutine`` as a Deferred.
    """
    return Deferred.fromCoroutine(coroutine)


class DockerClientTests(SynchronousTestCase):
    """
    ``DockerClient`` against ``FakeEngine`` in memory.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.engine = FakeEngine()
        self.client = DockerClient(StubTreq(self.engine), self.clock)

    def test_engine_info_maps_every_field(self) -> None:
        """
        The ``docker`` block of api.md §3.1 is built field by field from
        ``/version`` and ``/info``; ``MemTotal`` and ``OperatingSystem``
        come along for the ``system`` block.
        """
        info = self.successResultOf(run(self.client.engine_info()))
        self.assertEqual(info.docker, EXPECTED_DOCKER)
        self.assertEqual(info.memory_bytes, 33554432000)
        self.assertEqual(info.operating_system, "Debian GNU/Linux 12 (bookworm)")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_version_and_info_documents(self) -> None:
        """
        ``version()`` and ``info()`` return the engine's documents as sent.
        """
        self.assertEqual(self.successResultOf(run(self.client.version())), VERSION)
        self.assertEqual(self.successResultOf(run(self.client.info())), INFO)
        self.assertTrue(self.engine.user_agents[-1].startswith("wings-twisted/" + __version__))

    def test_negotiation_caps_at_client_maximum(self) -> None:
        """
        An engine newer than the client is spoken to at ``MAX_API_VERSION``;
        ``/_ping`` is asked once and the result kept.
        """
        self.successResultOf(run(self.client.engine_info()))
        self.successResultOf(run(self.client.engine_info()))
        self.assertEqual(self.engine.paths, ["/_ping", "/v1.41/version", "/v1.41/info",
                                             "/v1.41/version", "/v1.41/info"])

    def test_negotiation_follows_older_engine(self) -> None:
        """
        An engine older than the client is spoken to at its own version.
        """
        self.engine.api_version = "1.40"
        self.assertEqual(self.successResultOf(run(self.client.api_version())), "1.40")
        self.successResultOf(run(self.client.info()))
        self.assertEqual(self.engine.paths[-1], "/v1.40/info")

    def test_negotiation_without_header(self) -> None:
        """
        No ``API-Version`` header: Docker's fallback 1.24.
        """
        self.engine.api_version = None
        self.successResultOf(run(self.client.version()))
        self.assertEqual(self.engine.paths, ["/_ping", "/v1.24/version"])

    def test_fixed_version_skips_ping(self) -> None:
        """
        A configured API version (``DOCKER_API_VERSION``) is used without
        asking ``/_ping``.
        """
        client = DockerClient(StubTreq(self.engine), self.clock, api_version="1.39")
        self.successResultOf(run(client.engine_info()))
        self.assertEqual(self.engine.paths, ["/v1.39/version", "/v1.39/info"])

    def test_failed_ping_is_retried(self) -> None:
        """
        A failed negotiation is an error and is not remembered.
        """
        self.engine.fail["/_ping"] = (500, "starting up")
        error = self.failureResultOf(run(self.client.version()), DockerError).value
        self.assertIn("HTTP 500: starting up", error.message)
        del self.engine.fail["/_ping"]
        self.assertEqual(self.successResultOf(run(self.client.version())), VERSION)

    def test_error_status(self) -> None:
        """
        A non-2xx answer is a ``DockerError`` with the status and Docker's
        ``message``.
        """
        self.engine.fail["/info"] = (500, "failed to get info: disk I/O error")
        error = self.failureResultOf(run(self.client.engine_info()), DockerError).value
        self.assertEqual(error.status, 500)
        self.assertEqual(error.message, "The engine answered GET /v1.41/info with HTTP 500: "
                                        "failed to get info: disk I/O error")

    def test_invalid_json(self) -> None:
        """
        A body that is not a JSON object is a ``DockerError``.
        """
        self.engine.info = None  # type: ignore[assignment]
        error = self.failureResultOf(run(self.client.info()), DockerError).value
        self.assertIn("non-object", error.message)

    def test_stalled_body_times_out(self) -> None:
        """
        The timeout also bounds the body: an engine that sends its headers
        and then stalls is a ``DockerError`` once the call's time is up.
        """
        self.engine.stall.add("/info")
        d = run(self.client.info())
        self.assertNoResult(d)
        self.clock.advance(DEFAULT_TIMEOUT)
        error = self.failureResultOf(d, DockerError).value
        self.assertEqual(error.message, "The engine at unix:///var/run/docker.sock did not "
                                        "answer GET /v1.41/info within 15 s.")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_unreachable(self) -> None:
        """
        A refused connection is a ``DockerError`` naming the engine.
        """
        client = refusing_client(self.clock)
        error = self.failureResultOf(run(client.engine_info()), DockerError).value
        self.assertTrue(error.message.startswith(
            "Cannot reach the engine at unix:///gone/docker.sock (GET /_ping): "), error.message)
        self.assertIn("Connection refused", error.message)
        self.assertEqual(error.status, 0)


class EngineInfoMappingTests(SynchronousTestCase):
    """
    ``engine_info_from``: the field mapping on its own.
    """

    def test_missing_fields(self) -> None:
        """
        Fields an engine does not send become ``""`` or ``0``.
        """
        info = engine_info_from({}, {})
        self.assertEqual(info.docker, {
            "version": "", "cgroups": {"driver": "", "version": ""},
            "containers": {"total": 0, "running": 0, "paused": 0, "stopped": 0},
            "storage": {"driver": "", "filesystem": ""}, "runc": {"version": ""}})
        self.assertEqual((info.memory_bytes, info.operating_system), (0, ""))

    def test_backing_filesystem_entry(self) -> None:
        """
        ``storage.filesystem`` is the "Backing Filesystem" entry wherever it
        sits in ``DriverStatus``, and empty without one.
        """
        status = [["Root Dir", "/var/lib/docker/btrfs"], ["Backing Filesystem", "btrfs"]]
        self.assertEqual(engine_info_from({}, {"DriverStatus": status})
                         .docker["storage"]["filesystem"], "btrfs")
        status = [["Pool Name", "docker-pool"], ["Data file", ""]]
        self.assertEqual(engine_info_from({}, {"DriverStatus": status})
                         .docker["storage"]["filesystem"], "")
        self.assertEqual(engine_info_from({}, {"DriverStatus": None})
                         .docker["storage"]["filesystem"], "")

    def test_mistyped_fields(self) -> None:
        """
        Counts must be integers (not booleans or strings) and names strings.
        """
        info = engine_info_from({"Version": 24}, {
            "Containers": "12", "ContainersRunning": True, "RuncCommit": "v1", "MemTotal": 1.5})
        self.assertEqual(info.docker["version"], "")
        self.assertEqual(info.docker["containers"]["total"], 0)
        self.assertEqual(info.docker["containers"]["running"], 0)
        self.assertEqual(info.docker["runc"]["version"], "")
        self.assertEqual(info.memory_bytes, 0)


class EnvironmentTests(SynchronousTestCase):
    """
    ``DOCKER_HOST`` / ``DOCKER_API_VERSION`` handling and the connection.
    """

    def test_parse_docker_host(self) -> None:
        """
        Unix sockets and plain TCP engines are understood; empty means the
        default socket.
        """
        self.assertEqual(parse_docker_host("").path, "/var/run/docker.sock")
        self.assertEqual(parse_docker_host("unix:///run/podman/podman.sock").path,
                         "/run/podman/podman.sock")
        host = parse_docker_host("tcp://10.0.0.5:2376")
        self.assertEqual((host.host, host.port, host.base_url),
                         ("10.0.0.5", 2376, "http://10.0.0.5:2376"))
        self.assertEqual(parse_docker_host("tcp://docker.lan").port, 2375)
        self.assertEqual(parse_docker_host("tcp://[::1]:2375").base_url, "http://[::1]:2375")

    def test_unsupported_hosts(self) -> None:
        """
        ssh, npipe, TLS, relative sockets and hostless TCP are refused with
        a readable ``DockerError``.
        """
        for value in ("ssh://me@host", "npipe:////./pipe/docker_engine", "https://h:2376",
                      "unix://relative.sock", "tcp://:2375", "tcp://h:port",
                      "unix:///" + "s" * 107):
            self.assertRaises(DockerError, parse_docker_host, value)
        self.assertRaises(DockerError, DockerClient.from_environment, MemoryReactorClock(),
                          {"DOCKER_TLS_VERIFY": "1"})
        self.assertRaises(DockerError, DockerClient.from_environment, MemoryReactorClock(),
                          {"DOCKER_API_VERSION": "v1.41"})

    def test_negotiated_version(self) -> None:
        """
        The lower of the engine's version and ``MAX_API_VERSION``; 1.24
        when the engine says nothing usable.
        """
        self.assertEqual(negotiated_version("1.45"), "1.41")
        self.assertEqual(negotiated_version("1.41"), "1.41")
        self.assertEqual(negotiated_version("1.9"), "1.9")
        self.assertEqual(negotiated_version("1.40"), "1.40")
        self.assertEqual(negotiated_version(None), "1.24")
        self.assertEqual(negotiated_version("banana"), "1.24")

    def test_endpoints(self) -> None:
        """
        A socket engine gets a ``UNIXClientEndpoint`` whatever the URL, a
        TCP engine a ``HostnameEndpoint``.
        """
        reactor = MemoryReactorClock()
        unix = EngineEndpointFactory(reactor, parse_docker_host("unix:///s.sock"),
                                     connect_timeout=5).endpointForURI(object())
        self.assertIsInstance(unix, UNIXClientEndpoint)
        self.assertEqual(unix._path, "/s.sock")
        tcp = EngineEndpointFactory(reactor, parse_docker_host("tcp://h:1"),
                                    connect_timeout=5).endpointForURI(object())
        self.assertIsInstance(tcp, HostnameEndpoint)

    def test_fixed_version_from_environment(self) -> None:
        """
        ``DOCKER_API_VERSION`` is used without connecting.
        """
        reactor = MemoryReactorClock()
        client = DockerClient.from_environment(reactor, {"DOCKER_API_VERSION": "1.40"})
        self.assertEqual(self.successResultOf(run(client.api_version())), "1.40")
        self.assertEqual(reactor.unixClients, [])

    def test_connects_to_docker_host_socket(self) -> None:
        """
        Requests go to the ``DOCKER_HOST`` socket on the given reactor; a
        failed connection is a ``DockerError``.
        """
        reactor = MemoryReactorClock()
        client = DockerClient.from_environment(reactor, {"DOCKER_HOST": "unix:///x/d.sock"})
        d = run(client.version())
        self.assertEqual(reactor.unixClients[0][0], "/x/d.sock")
        factory = reactor.unixClients[0][1]
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError("refused")))
        error = self.failureResultOf(d, DockerError).value
        self.assertIn("Cannot reach the engine at unix:///x/d.sock", error.message)
        self.successResultOf(client.close())

    def test_timeout(self) -> None:
        """
        An engine that never answers is a ``DockerError`` after the timeout,
        measured on the injected clock.
        """
        reactor = MemoryReactorClock()
        client = DockerClient.from_environment(reactor, {})
        d = run(client.version())
        self.assertNoResult(d)
        reactor.advance(DEFAULT_TIMEOUT - 0.1)
        self.assertNoResult(d)
        reactor.advance(0.1)
        error = self.failureResultOf(d, DockerError).value
        self.assertEqual(error.message, "The engine at unix:///var/run/docker.sock did not "
                                        "answer GET /_ping within 15 s.")
        self.assertEqual(reactor.getDelayedCalls(), [])


class BuildServiceTests(SynchronousTestCase):
    """
    ``tap.build_service`` wires the client for the Docker driver only.
    """

    def build(self, driver: str, environ: dict[str, str]) -> Any:
        config = make_config(FilePath(self.mktemp()), environment={"driver": driver})
        service = tap.build_service(config, MemoryReactorClock(), listen="tcp:0",
                                    fatal=lambda m: None, environ=environ)
        return service.node

    def test_docker_driver(self) -> None:
        """
        The Docker driver gets a client for ``DOCKER_HOST`` (nothing is
        connected at build time); the process driver gets none.
        """
        node = self.build("docker", {"DOCKER_HOST": "unix:///run/engine.sock"})
        self.assertIsInstance(node.docker, DockerClient)
        self.assertEqual(node.docker.where, "unix:///run/engine.sock")
        self.assertIsNone(self.build("process", {"DOCKER_HOST": "unix:///run/engine.sock"}).docker)

    def test_docker_environments_injected(self) -> None:
        """
        With the Docker driver the environment factory is the Docker one,
        sharing the node's client, and runs as a service of the daemon
        (engine check at boot, letting go of containers at shutdown).
        """
        from wings_twisted.environment.factories import DockerEnvironments

        config = make_config(FilePath(self.mktemp()), environment={"driver": "docker"})
        service = tap.build_service(config, MemoryReactorClock(), listen="tcp:0",
                                    fatal=lambda m: None,
                                    environ={"DOCKER_HOST": "unix:///run/engine.sock"})
        factory = service.node.make_environment
        self.assertIsInstance(factory, DockerEnvironments)
        self.assertIs(factory.engine.client, service.node.docker)
        self.assertIn(factory, list(service))

    def test_unsupported_docker_host(self) -> None:
        """
        An unusable ``DOCKER_HOST`` stops the build with a ``DockerError``
        (``makeService`` turns it into one line and exit status 1).
        """
        self.assertRaises(DockerError, self.build, "docker", {"DOCKER_HOST": "ssh://me@host"})


class DockerSystemTests(SynchronousTestCase):
    """
    ``GET /api/system`` through the real site with the Docker driver.
    """

    def setUp(self) -> None:
        self.h = Harness(FilePath(self.mktemp()), environment={"driver": "docker"})
        self.engine = FakeEngine()
        self.h.node.docker = DockerClient(StubTreq(self.engine), self.h.clock)

    def test_v2_from_engine(self) -> None:
        """
        Format 2 carries the engine's mapped ``docker`` block, its
        ``MemTotal`` and (on a host with os-release) the host's name.
        """
        response = self.h.get("/api/system?v=2")
        self.assertEqual(response.status, 200)
        body = response.json()
        self.assertEqual(body["version"], __version__)
        self.assertEqual(body["docker"], EXPECTED_DOCKER)
        self.assertEqual(body["system"]["memory_bytes"], 33554432000)
        self.assertEqual(body["system"]["os"],
                         os_pretty_name() or "Debian GNU/Linux 12 (bookworm)")
        self.assertEqual(set(body["system"]), {"architecture", "cpu_threads", "memory_bytes",
                                               "kernel_version", "os", "os_type"})

    def test_v2_unreachable(self) -> None:
        """
        An unreachable engine makes format 2 a 500 envelope; format 1 does
        not ask the engine and still answers.
        """
        self.h.node.docker = refusing_client(self.h.clock)
        response = self.h.get("/api/system?v=2")
        self.assertEqual(response.status, 500)
        body = response.json()
        self.assertEqual(body["error"], ENGINE_UNREACHABLE)
        self.assertEqual(body["request_id"], response.header("X-Request-Id"))
        self.assertEqual(self.h.get("/api/system").status, 200)

    def test_v2_engine_error(self) -> None:
        """
        An engine that answers with an error is a 500 envelope too.
        """
        self.engine.fail["/info"] = (500, "boom")
        response = self.h.get("/api/system?v=2")
        self.assertEqual((response.status, response.json()["error"]), (500, ENGINE_UNREACHABLE))

    def test_os_falls_back_to_engine(self) -> None:
        """
        ``system.os`` is os-release's ``PRETTY_NAME``, else ``NAME``, else
        the engine's ``OperatingSystem``.
        """
        release = FilePath(self.mktemp())

        def os_name(text: str) -> str:
            release.setContent(text.encode())
            http = StubTreq(SystemResource(self.h.node, os_release=release.path))
            response = self.successResultOf(http.get("http://daemon.test/?v=2"))
            return self.successResultOf(response.json())["system"]["os"]

        self.assertEqual(os_name('NAME="Alpine Linux"\nPRETTY_NAME="Alpine v3.19"\n'),
                         "Alpine v3.19")
        self.assertEqual(os_name('NAME="Alpine Linux"\n'), "Alpine Linux")
        self.assertEqual(os_name("ID=alpine\n"), "Debian GNU/Linux 12 (bookworm)")


class ScriptedEngineTests(SynchronousTestCase):
    """
    Exact Engine API exchanges, scripted with ``ScriptedPeer``.
    """

    def test_pull_sends_registry_auth(self) -> None:
        """
        A pull asks ``/images/create`` with the image and tag as query and
        the matching registry's credentials in ``X-Registry-Auth``; the
        progress lines arrive as ``"<status> <progress>"``.
        """
        from wings_twisted.environment.docker.images import pull
        from wings_twisted.environment.docker.spec import registry_auth

        config = make_config(FilePath(self.mktemp()), docker={"registries": {
            "registry.test": {"username": "u", "password": "p"}}})
        auth = registry_auth("registry.test/game:17", config)
        assert auth is not None
        progress = b'{"status":"Pulling fs layer"}\r\n{"status":"Downloading","progress":"[=>]"}\r\n'
        peer = ScriptedPeer([Expect(
            "POST", "http://docker/v1.41/images/create",
            params={b"fromImage": [b"registry.test/game"], b"tag": [b"17"]},
            headers={b"X-Registry-Auth": [auth.encode()]}, body=progress)])
        client = DockerClient(peer.treq, Clock(), api_version="1.41")
        lines: list[str] = []
        with peer.consumed(self.fail):
            d = Deferred.fromCoroutine(pull(client, "registry.test/game:17", config, lines.append))
            peer.treq.flush()
            self.successResultOf(d)
        self.assertEqual(lines, ["Pulling fs layer", "Downloading [=>]"])

    def test_kill_answers(self) -> None:
        """
        ``kill`` of a stopped container is "nothing to kill" for Docker's
        409 and podman's 500 alike; other errors are raised.
        """
        from wings_twisted.environment.docker.engine import Engine

        config = make_config(FilePath(self.mktemp()))
        url = "http://docker/v1.41/containers/s1/kill"
        peer = ScriptedPeer([
            Expect("POST", url, status=409, body=b'{"message":"Container s1 is not running"}',
                   params={b"signal": [b"SIGKILL"]}),
            Expect("POST", url, status=500, params={b"signal": [b"SIGKILL"]},
                   body=b'{"cause":"container state improper","message":"can only kill '
                        b'running containers: container state improper","response":500}'),
            Expect("POST", url, status=500, body=b'{"message":"runtime exploded"}',
                   params={b"signal": [b"SIGKILL"]}),
        ])
        engine = Engine(DockerClient(peer.treq, Clock(), api_version="1.41"), lambda: config)
        with peer.consumed(self.fail):
            for _ in range(2):
                d = Deferred.fromCoroutine(engine.kill("s1", "SIGKILL"))
                peer.treq.flush()
                self.assertFalse(self.successResultOf(d))
            d = Deferred.fromCoroutine(engine.kill("s1", "SIGKILL"))
            peer.treq.flush()
            failure = self.failureResultOf(d, DockerError)
        self.assertIn("runtime exploded", failure.value.message)
        self.assertEqual(failure.value.status, 500)
