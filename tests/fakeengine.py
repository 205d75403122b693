"""
An in-memory container engine for unit tests of the Docker environment:
``FakeEngine`` answers the Engine API paths the environment uses (with
podman's answers where podman and Docker differ: 500 for killing a stopped
container, 404 for the compatible ``update``), and ``AttachEndpoint`` plays
the attach hijack on a ``StringTransport``.  Tests drive the containers'
lives with ``output``, ``exit`` and ``vanish``, then ``flush``.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.internet.error import ConnectionDone
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from wings_twisted.environment.docker import DockerClient

_VERSIONED = re.compile(r"^/v[\d.]+(/.*)$")


@implementer(IStreamClientEndpoint)
class AttachEndpoint:
    """
    Connects the attach protocol to a ``StringTransport`` and, when
    ``accept`` is set, answers 101 at once.
    """

    def __init__(self, engine: "FakeEngine") -> None:
        self.engine = engine

    def connect(self, factory: Any) -> Deferred[Any]:
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        name = transport.value().split(b"/containers/", 1)[1].split(b"/", 1)[0].decode()
        self.engine.attached[name] = (protocol, transport)
        if self.engine.refuse_attach:
            protocol.dataReceived(b"HTTP/1.1 404 Not Found\r\nContent-Length: 23\r\n\r\n"
                                  b'{"message":"no such c"}')
        else:
            protocol.dataReceived(b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\n"
                                  b"Upgrade: tcp\r\n\r\n")
        return succeed(protocol)


class FakeEngine(Resource):
    """
    The Engine API, in memory (module docstring).
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.containers: dict[str, dict[str, Any]] = {}
        self.images = {"localhost/busybox-test:latest"}
        self.networks: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str, dict[str, str], Any]] = []
        self.attached: dict[str, tuple[Protocol, StringTransport]] = {}
        self.waits: dict[str, list[Any]] = {}
        self.stats: list[dict[str, Any]] = []
        self.logs = b""
        self.pull_lines: list[dict[str, Any]] = [{"status": "Pulling fs layer"},
                                                 {"status": "Downloading", "progress": "[=> ]"}]
        self.refuse_attach = False
        self.down = False
        #: Where created containers' logs are (``LogPath``), when set.
        self.log_directory: str | None = None
        self.clock = Clock()
        self.http = StubTreq(self)
        self.client = DockerClient(self.http, self.clock, api_version="1.41",
                                   endpoint=lambda: AttachEndpoint(self))

    # -- the test's side ---------------------------------------------------

    def flush(self) -> None:
        """
        Deliver every pending answer.
        """
        self.http.flush()

    def output(self, name: str, data: bytes) -> None:
        """
        The container prints ``data``.
        """
        self.attached[name][0].dataReceived(data)

    def exit(self, name: str, code: int, *, oom: bool = False) -> None:
        """
        The container's process ends with ``code``.
        """
        state = self.containers[name]["State"]
        state.update(Running=False, ExitCode=code, OOMKilled=oom, Status="exited")
        self._ended(name)

    def vanish(self, name: str) -> None:
        """
        Someone removes the container behind the daemon's back.
        """
        del self.containers[name]
        self._ended(name)

    def _ended(self, name: str) -> None:
        for request in self.waits.pop(name, []):
            request.write(b'{"StatusCode":0}')
            request.finish()
        protocol, _ = self.attached.pop(name)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.flush()

    def paths(self, method: str | None = None) -> list[str]:
        """
        The paths requested (of ``method``), in order.
        """
        return [path for m, path, _, _ in self.calls if method is None or m == method]

    # -- the engine's side -------------------------------------------------

    def render(self, request: Any) -> Any:
        if self.down:
            request.setResponseCode(500)
            return b"{}"
        path = unquote(request.path.decode())
        match = _VERSIONED.match(path)
        plain = match.group(1) if match else path
        query = {k.decode(): v[0].decode() for k, v in request.args.items()}
        raw = request.content.read() if request.content is not None else b""
        body = json.loads(raw) if raw else None
        method = request.method.decode()
        self.calls.append((method, plain, query, body))
        request.setHeader(b"Content-Type", b"application/json")
        status, answer = self._route(method, plain, query, body, request)
        if answer is NOT_DONE_YET:
            return NOT_DONE_YET
        request.setResponseCode(status)
        return answer if isinstance(answer, bytes) else json.dumps(answer).encode()

    def _route(self, method: str, path: str, query: dict[str, str], body: Any,
               request: Any) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if path == "/_ping":
            return 200, b"OK"
        if parts[0] == "networks":
            if method == "POST":
                self.networks[body["Name"]] = body
                return 201, {"Id": "n1"}
            if parts[1] in self.networks:
                return 200, {"Name": parts[1], "Driver": "bridge"}
            return 404, {"message": "network not found"}
        if parts[0] == "images" and parts[1] == "create":
            reference = "{}:{}".format(query["fromImage"], query.get("tag", "latest"))
            lines = [json.dumps(line).encode() for line in self.pull_lines]
            if not any("error" in line for line in self.pull_lines):
                self.images.add(reference)
            return 200, b"\r\n".join(lines) + b"\r\n"
        if parts[0] == "images":
            return (200, {"Id": "i1"}) if "/".join(parts[1:-1]) in self.images else \
                (404, {"message": "no such image"})
        if parts[0] == "libpod":
            return (201, None) if parts[2] in self.containers else (404, {"message": "gone"})
        if parts[0] != "containers":
            return 404, {"message": "page not found"}
        if parts[1] == "create":
            log_path = ""
            if self.log_directory is not None:
                log_path = "{}/{}.log".format(self.log_directory, len(self.calls))
                with open(log_path, "wb") as f:
                    f.write(b"old run\n")
            self.containers[query["name"]] = {
                "Id": "id-{}".format(len(self.calls)), "Config": dict(body, StopSignal=""),
                "LogPath": log_path,
                "HostConfig": body["HostConfig"],
                "State": {"Running": False, "ExitCode": 0, "OOMKilled": False,
                          "StartedAt": "0001-01-01T00:00:00Z", "Status": "created"}}
            return 201, {"Id": "x", "Warnings": []}
        name = parts[1]
        container = self.containers.get(name)
        if container is None:
            return 404, {"message": "no container with name or ID \"{}\" found".format(name)}
        action = parts[2] if len(parts) > 2 else ""
        state = container["State"]
        if method == "DELETE":
            del self.containers[name]
            return 204, b""
        if action == "json":
            return 200, container
        if action == "start":
            state.update(Running=True, Status="running", StartedAt="2026-01-01T00:00:10.5Z")
            return 204, b""
        if action == "kill":
            if not state["Running"]:
                return 500, {"cause": "container state improper",
                             "message": "can only kill running containers: container state "
                                        "improper", "response": 500}
            return 204, b""
        if action == "wait":
            if not state["Running"]:
                return 200, {"StatusCode": state["ExitCode"]}
            self.waits.setdefault(name, []).append(request)
            return 200, NOT_DONE_YET
        if action == "logs":
            return 200, self.logs
        if action == "update":
            return 404, b"404 page not found"
        if action == "stats":
            return 200, b"".join(json.dumps(d).encode() + b"\n" for d in self.stats)
        return 404, {"message": "page not found"}

