"""
Support for the backup unit tests: a harness whose site carries `BackupServices` running jobs
inline, with an S3 agent joined in memory to the development panel's S3 double, and helpers to
fill a volume and read an archive back.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from typing import Any

from treq.testing import RequestTraversalAgent
from twisted.python.filepath import FilePath

from wings_twisted.backups import BackupServices
from wings_twisted.backups.index import BackupIndex
from wings_twisted.blocking import run_inline
from wings_twisted.devpanel.resource import build_resource
from wings_twisted.web.site import build_site

from ..support import SERVER, Harness

BACKUP = "0c5b4ae6-5a43-4b77-8f0d-6f3e1cd5d0a7"
OTHER_BACKUP = "9b2cf535-f277-41c9-a434-3645a3985328"


class BackupHarness(Harness):
    """
    A harness with backups: ``services`` (jobs inline), ``events`` (what the server published),
    ``agent`` (in memory, to the panel's S3 double).
    """

    def __init__(self, base: FilePath, *servers: str, **config: Any) -> None:
        super().__init__(base, *(servers or (SERVER,)), **config)
        self.agent = RequestTraversalAgent(build_resource(self.state, self.clock))
        self.services = BackupServices(
            self.node, agent=self.agent,
            index=BackupIndex(os.path.join(self.config.system.root_directory, "wings.db"),
                              run_inline))
        self.site = build_site(self.node, backups=self.services)
        self.events: list[tuple[str, str | None]] = []

    def add_server(self, uuid: str = SERVER) -> Any:
        server = super().add_server(uuid)
        server.events.subscribe(lambda event: self.events.append((event.name, event.arg)))
        return server

    def pump(self, turns: int = 200) -> None:
        """
        Run the cooperator and the in-memory connections until quiet.
        """
        for _ in range(turns):
            self.clock.advance(0)
            self.agent.flush()

    def post(self, path: str, body: Any) -> Any:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.get(path, method="POST", body=data)


def fill(root: str, files: dict[str, bytes]) -> None:
    """
    Write ``files`` (relative path → content) under ``root``.
    """
    for name, content in files.items():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content)


def members(data: bytes) -> dict[str, bytes]:
    """
    The regular members of a tar.gz and their contents (with ``tarfile``, a reference reader).
    """
    found = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive:
            assert member.isreg(), member.name
            extracted = archive.extractfile(member)
            assert extracted is not None
            found[member.name] = extracted.read()
    return found
