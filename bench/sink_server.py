"""
The upload ceiling: the daemon's real ``Site`` (request class, routing, CORS,
access log) on the real reactor, but ``POST /upload/file`` bodies go to a sink
that drops every byte and the route answers an empty 200 (with an ``X-Received`` byte count for
the benchmark to check).  What is left is
Twisted's HTTP parsing and the request plumbing: the most the daemon's upload
path could reach without multipart parsing and disk writes.

    PYTHONPATH=. .venv/bin/python bench/sink_server.py --base bench/out/sink [--profile out.prof]

Prints ``listening on <port>`` (127.0.0.1, a free port) and serves until
SIGTERM/SIGINT.  ``--profile`` runs the reactor under cProfile and writes the
stats on exit.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.web.resource import Resource

log = Logger()


class DiscardSink:
    """
    A ``BodySink`` that counts and drops the body.
    """

    def __init__(self) -> None:
        self.received = 0

    def write(self, data: bytes) -> None:
        """
        Drop one chunk.
        """
        self.received += len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        """
        Nothing to rewind.
        """
        return 0

    def tell(self) -> int:
        """
        Bytes dropped so far.
        """
        return self.received

    def read(self, size: int = -1) -> bytes:
        """
        Nothing kept.
        """
        return b""

    def close(self) -> None:
        """
        Nothing to release.
        """


class OkResource(Resource):
    """
    An empty 200, like a successful upload.
    """

    isLeaf = True

    def render_POST(self, request: Any) -> bytes:
        """
        The body is already gone; ``X-Received`` says how much of it came.
        """
        request.setHeader(b"X-Received", b"%d" % request.content.tell())
        return b""


def build(base: str, reactor: Any) -> Any:
    """
    A node configured like the benchmark daemon and its site with the
    discarding upload route.
    """
    from treq.client import HTTPClient
    from twisted.web.client import Agent

    from wings_twisted.activity import ActivityLog
    from wings_twisted.blocking import run_inline
    from wings_twisted.config import config_from_dict
    from wings_twisted.node import Node
    from wings_twisted.panel import PanelClient
    from wings_twisted.web.site import build_site

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import TOKEN, TOKEN_ID

    system: dict[str, Any] = {name: os.path.join(base, name) for name in
              ("root_directory", "log_directory", "data", "archive_directory", "backup_directory",
               "tmp_directory")}
    system["user"] = {"uid": os.getuid(), "gid": os.getgid()}
    config = config_from_dict({"token_id": TOKEN_ID, "token": TOKEN, "remote": "http://127.0.0.1:9",
                               "api": {"host": "127.0.0.1", "port": 0, "upload_limit": 4096},
                               "system": system, "environment": {"driver": "process"}})
    os.makedirs(config.system.root_directory, exist_ok=True)
    panel = PanelClient(HTTPClient(Agent(reactor)), reactor, remote=config.remote,
                        token_id=TOKEN_ID, token=TOKEN)
    activity = ActivityLog(os.path.join(config.system.root_directory, "wings.db"),
                           clock=reactor.seconds, run_blocking=run_inline, send=panel.send_activity)
    node = Node(config, clock=reactor, run_blocking=run_inline, panel=panel, activity=activity)
    site = build_site(node)
    sinks: dict[tuple[bytes, bytes], Any] = site.body_sinks
    sinks[(b"POST", b"/upload/file")] = lambda request, uri, length: DiscardSink()
    upload = Resource()
    upload.putChild(b"file", OkResource())
    site.resource.putChild(b"upload", upload)
    return site


def main() -> None:
    """
    Serve until stopped.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="scratch directory for the node's state")
    parser.add_argument("--profile", help="write cProfile stats here on exit")
    args = parser.parse_args()
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    from twisted.internet import reactor

    site = build(args.base, reactor)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    log.info("listening on {port}", port=getattr(port.getHost(), "port", 0))
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.runcall(reactor.run)
        profiler.dump_stats(args.profile)
    else:
        reactor.run()


if __name__ == "__main__":
    main()
