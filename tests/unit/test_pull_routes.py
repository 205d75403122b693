"""
The remote-pull routes (api.md §6) through the daemon's real site, in
memory: the listing, background and foreground pulls, validation, the
3-per-server limit, cancellation, the disable switch and the write guard.
The remote side is ``pullpeer``'s in-memory hosts.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol
from twisted.python.filepath import FilePath
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.files.pull import TIMEOUT, TOO_MANY
from wings_twisted.servers import lifecycle
from wings_twisted.web.pull import DISABLED

from ..support import SERVER, TOKEN, Harness, Response, parse_response
from .pullpeer import PUBLIC, RemoteHosts

OTHER = "0d6a5c4e-1f2b-4c3d-8e9f-a1b2c3d4e5f6"
PULL = "/api/servers/{}/files/pull".format(SERVER)
SPACE = "There is not enough disk space available to perform that action."


class _Client(Protocol):
    def __init__(self) -> None:
        self.data = b""

    def dataReceived(self, data: bytes) -> None:
        self.data += data


class OpenRequest:
    """
    A request whose connection stays open while the test drives the remote
    side (foreground pulls).
    """

    def __init__(self, harness: Harness, method: str, path: str, body: bytes = b"") -> None:
        server = harness.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        self.client = _Client()
        server_transport = iosim.FakeTransport(
            server, isServer=True, peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.client_transport = iosim.FakeTransport(self.client, isServer=False)
        self.pump = iosim.connect(server, server_transport, self.client, self.client_transport,
                                  greet=False)
        head = ("{} {} HTTP/1.1\r\nHost: daemon.test\r\nAuthorization: Bearer {}\r\n"
                "Content-Length: {}\r\n\r\n").format(method, path, TOKEN, len(body))
        self.client_transport.write(head.encode("ascii") + body)
        self.pump.flush()

    def response(self) -> Response:
        """
        What came back so far.
        """
        self.pump.flush()
        return parse_response(self.client.data)

    def hang_up(self) -> None:
        """
        The client goes away.
        """
        self.client_transport.loseConnection()
        self.pump.flush()


class PullRouteTestCase(SynchronousTestCase):
    """
    A harness with the test server and remote hosts.
    """

    def setUp(self) -> None:
        self.harness = Harness(FilePath(self.mktemp()), SERVER)
        self.hosts = RemoteHosts({"files.example": [[PUBLIC]]})
        self.harness.node.outgoing = self.hosts.outgoing()
        self.server = self.harness.add_server()
        self.volume = self.server.volume.root

    def post(self, path: str = PULL, **body: Any) -> Response:
        return self.harness.get(path, method="POST", body=json.dumps(body).encode())

    def listing(self, path: str = PULL) -> list[dict[str, Any]]:
        response = self.harness.get(path)
        self.assertEqual(response.status, 200)
        downloads: list[dict[str, Any]] = response.json()["downloads"]
        return downloads

    def files(self) -> list[str]:
        return sorted(os.path.relpath(os.path.join(d, f), self.volume)
                      for d, _, names in os.walk(self.volume) for f in names)


class BackgroundTests(PullRouteTestCase):
    """
    ``POST files/pull`` without ``foreground``, and ``GET files/pull``.
    """

    def test_empty_listing(self) -> None:
        """
        No pulls: ``{"downloads": []}`` (upstream sends null).
        """
        self.assertEqual(self.harness.get(PULL).json(), {"downloads": []})

    def test_pull_progress_and_completion(self) -> None:
        """
        202 with an identifier at once; the listing shows it with capitalised
        keys and its progress; once the body is in, the file is there and the
        listing is empty again.
        """
        response = self.post(url="http://files.example/maps/world.zip", root="/")
        self.assertEqual(response.status, 202)
        identifier = response.json()["identifier"]
        self.assertEqual(self.listing(), [{"Identifier": identifier, "Progress": 0.0}])
        connection = self.hosts.accept()
        connection.head(Content_Length="4")
        connection.answer(b"ab")
        self.assertEqual(self.listing(), [{"Identifier": identifier, "Progress": 0.5}])
        connection.answer(b"cd")
        self.assertEqual(self.listing(), [])
        self.assertEqual(self.files(), ["world.zip"])

    def test_panel_body(self) -> None:
        """
        The Panel's exact body (``url`` and ``root``, ``file_name`` when the
        user gave one) writes ``root/file_name``; ``directory`` is accepted
        when ``root`` is empty.
        """
        self.assertEqual(self.post(url="http://files.example/dl?id=1", root="/plugins",
                                   file_name="Essentials.jar").status, 202)
        self.assertEqual(self.post(url="http://files.example/b.txt", root="",
                                   directory="/docs").status, 202)
        for connection in (self.hosts.accept(0), self.hosts.accept(1)):
            connection.head(Content_Length="1")
            connection.answer(b"x")
        self.assertEqual(self.files(), ["docs/b.txt", "plugins/Essentials.jar"])

    def test_background_failure_is_only_logged(self) -> None:
        """
        A refused address still answers 202 (the failure comes later, in the
        log); nothing is connected to or written, and the pull is forgotten.
        """
        response = self.post(url="http://127.0.0.1:8080/api/system", root="/")
        self.assertEqual(response.status, 202)
        self.assertEqual(self.hosts.attempts, [])
        self.assertEqual(self.listing(), [])
        self.assertEqual(self.files(), [])

    def test_three_at_once(self) -> None:
        """
        A fourth pull of the same server is refused with upstream's text;
        another server may still pull; one finishing frees a slot.
        """
        self.harness.add_server(OTHER)
        for _ in range(3):
            self.assertEqual(self.post(url="http://files.example/a", root="/").status, 202)
        refused = self.post(url="http://files.example/a", root="/")
        self.assertEqual((refused.status, refused.json()["error"]), (400, TOO_MANY))
        other = self.post("/api/servers/{}/files/pull".format(OTHER),
                          url="http://files.example/a", root="/")
        self.assertEqual(other.status, 202)
        self.assertEqual(len(self.listing()), 3)
        connection = self.hosts.accept(0)
        connection.head(Content_Length="1")
        connection.answer(b"x")
        self.assertEqual(self.post(url="http://files.example/a", root="/").status, 202)

    def test_timeout(self) -> None:
        """
        A pull still running after 12 hours is cancelled: forgotten, its
        temporary file removed.
        """
        self.post(url="http://files.example/slow.bin", root="/")
        connection = self.hosts.accept()
        connection.head(Content_Length="100")
        connection.answer(b"x")
        self.assertEqual(len(self.files()), 1)
        self.harness.clock.advance(TIMEOUT)
        self.assertEqual((self.listing(), self.files()), ([], []))
        self.assertEqual(connection.state, "stopped")


class ValidationTests(PullRouteTestCase):
    """
    What ``POST files/pull`` refuses before anything connects.
    """

    def assertRefused(self, response: Response, status: int, text: str | None = None) -> None:
        self.assertEqual(response.status, status, response.body)
        if text is not None:
            self.assertEqual(response.json()["error"], text)
        self.assertEqual((self.hosts.attempts, self.listing()), ([], []))

    def test_required_fields(self) -> None:
        """
        No url, no root or directory, an empty body or a wrongly typed field:
        400.
        """
        self.assertRefused(self.post(root="/"), 400)
        self.assertRefused(self.post(url="http://files.example/a"), 400)
        self.assertRefused(self.post(url="http://files.example/a", root="", directory=""), 400)
        self.assertRefused(self.post(url="http://files.example/a", root="/", foreground="yes"),
                           400)
        self.assertRefused(self.harness.get(PULL, method="POST"), 400)

    def test_bad_urls(self) -> None:
        """
        Unparsable URLs and schemes other than http(s): 400 with upstream's
        prefix.
        """
        for url in ["ftp://files.example/a", "file:///etc/passwd", "http://", "http://[::1/a"]:
            response = self.post(url=url, root="/")
            self.assertRefused(response, 400)
            self.assertTrue(response.json()["error"].startswith(
                "An error occurred while parsing that URL: "))

    def test_no_space(self) -> None:
        """
        A server already over its quota cannot start a pull.
        """
        self.server.volume.set_disk_limit(1)
        with open(os.path.join(self.volume, "big"), "wb") as f:
            f.write(b"xx")
        self.server.volume.refresh_usage()
        self.assertRefused(self.post(url="http://files.example/a", root="/"), 400, SPACE)

    def test_bad_names(self) -> None:
        """
        A name that is empty, ``.`` or ``..``: 400 before connecting.
        """
        self.assertRefused(self.post(url="http://files.example/dir/", root="/"), 400)
        self.assertRefused(self.post(url="http://files.example/a", root="/", file_name=".."), 400)

    def test_denylisted_name(self) -> None:
        """
        A target on the egg denylist is 403 before connecting (also reached
        through ``..`` in the root).
        """
        self.server.volume.set_denylist(["*.jar"])
        self.assertRefused(self.post(url="http://files.example/x.jar", root="/a/../plugins"),
                           403, "This file cannot be modified: present in egg denylist.")


class ForegroundTests(PullRouteTestCase):
    """
    ``foreground: true``: the request waits for the pull.
    """

    def start(self, **body: Any) -> OpenRequest:
        body.setdefault("root", "/")
        body["foreground"] = True
        return OpenRequest(self.harness, "POST", PULL, json.dumps(body).encode())

    def test_stat_object(self) -> None:
        """
        200 with the stat object of the written file.
        """
        request = self.start(url="http://files.example/notes.txt")
        self.assertEqual(request.response().status, 0)
        connection = self.hosts.accept()
        connection.head(Content_Length="6")
        connection.answer(b"hello\n")
        response = request.response()
        self.assertEqual(response.status, 200)
        entry = response.json()
        self.assertEqual({k: entry[k] for k in ("name", "size", "file", "mime", "mode_bits")},
                         {"name": "notes.txt", "size": 6, "file": True,
                          "mime": "text/plain; charset=utf-8", "mode_bits": "644"})

    def test_url_failures_are_400(self) -> None:
        """
        The SSRF guard, a redirect, a bad status and a missing length answer
        400 with a message (upstream 500).
        """
        refused = self.start(url="http://127.0.0.1/x").response()
        self.assertEqual(refused.status, 400)
        self.assertIn("internal network", refused.json()["error"])
        for head in [{"status": "302 Found", "Location": "http://127.0.0.1/x",
                      "Content_Length": "0"},
                     {"status": "403 Forbidden", "Content_Length": "0"},
                     {"Transfer_Encoding": "chunked"}]:
            request = self.start(url="http://files.example/x")
            self.hosts.accept().head(**head)
            response = request.response()
            self.assertEqual(response.status, 400, head)
        self.assertEqual(len(self.hosts.attempts), 3)
        self.assertEqual(self.files(), [])

    def test_filesystem_refusal_keeps_its_status(self) -> None:
        """
        A ``Content-Disposition`` name on the denylist is 403.
        """
        self.server.volume.set_denylist(["*.secret"])
        request = self.start(url="http://files.example/x", use_header=True)
        connection = self.hosts.accept()
        connection.head(Content_Length="1", Content_Disposition="attachment; filename=a.secret")
        connection.answer(b"x")
        self.assertEqual(request.response().status, 403)

    def test_client_leaving_does_not_cancel(self) -> None:
        """
        A foreground client that goes away leaves the pull running to the
        end (api.md §2.1).
        """
        request = self.start(url="http://files.example/keep.bin")
        connection = self.hosts.accept()
        connection.head(Content_Length="3")
        request.hang_up()
        self.assertEqual(len(self.listing()), 1)
        connection.answer(b"abc")
        self.assertEqual(self.files(), ["keep.bin"])

    def test_cancelled_while_waiting(self) -> None:
        """
        A foreground pull cancelled through ``DELETE`` answers 400.
        """
        request = self.start(url="http://files.example/x.bin")
        self.hosts.accept().head(Content_Length="10")
        [pull] = self.listing()
        self.harness.get(PULL + "/" + pull["Identifier"], method="DELETE")
        response = request.response()
        self.assertEqual((response.status, response.json()["error"]),
                         (400, "The download was cancelled."))


class CancelTests(PullRouteTestCase):
    """
    ``DELETE files/pull/{download}``.
    """

    def test_cancel(self) -> None:
        """
        204; the pull is gone, its connection dropped, and no partial file
        stays (upstream leaves one).
        """
        identifier = self.post(url="http://files.example/x.bin", root="/").json()["identifier"]
        connection = self.hosts.accept()
        connection.head(Content_Length="10")
        connection.answer(b"12345")
        response = self.harness.get(PULL + "/" + identifier, method="DELETE")
        self.assertEqual(response.status, 204)
        self.assertEqual((self.listing(), self.files()), ([], []))
        self.assertEqual(connection.state, "stopped")

    def test_unknown_and_foreign(self) -> None:
        """
        204 for an unknown identifier, and for another server's pull, which
        keeps running.
        """
        self.harness.add_server(OTHER)
        other = "/api/servers/{}/files/pull".format(OTHER)
        identifier = self.post(other, url="http://files.example/x", root="/").json()["identifier"]
        self.assertEqual(self.harness.get(PULL + "/nope", method="DELETE").status, 204)
        self.assertEqual(self.harness.get(PULL + "/" + identifier, method="DELETE").status, 204)
        self.assertEqual([p["Identifier"] for p in self.listing(other)], [identifier])

    def test_server_deletion_cancels(self) -> None:
        """
        Deleting a server cancels its pulls (api.md §4.2).
        """
        self.post(url="http://files.example/x.bin", root="/")
        connection = self.hosts.accept()
        connection.head(Content_Length="10")
        self.successResultOf(lifecycle.delete(self.server))
        self.assertEqual(connection.state, "stopped")
        self.assertEqual(self.harness.node.registry.get(SERVER), self.server)
        self.assertEqual(self.listing(), [])


class SwitchAndGuardTests(PullRouteTestCase):
    """
    ``api.disable_remote_download`` and the write guard.
    """

    def test_disabled(self) -> None:
        """
        All three routes answer 400 with upstream's text, before the write
        guard (a restoring server still gets the 400).
        """
        config = self.harness.node.config
        self.harness.node.config = dataclasses.replace(
            config, api=dataclasses.replace(config.api, disable_remote_download=True))
        self.server.occupancy.begin_restore()
        for method, path, body in [("GET", PULL, b""), ("POST", PULL, b"{}"),
                                   ("DELETE", PULL + "/x", b"")]:
            response = self.harness.get(path, method=method, body=body)
            self.assertEqual((response.status, response.json()["error"]), (400, DISABLED))

    def test_write_guard(self) -> None:
        """
        While restoring, ``POST`` is 409 before its body is read; ``GET`` and
        ``DELETE`` still work.
        """
        self.server.occupancy.begin_restore()
        response = self.post(url="http://files.example/a", root="/")
        self.assertEqual(response.status, 409)
        self.assertEqual(self.harness.get(PULL, method="POST", body=b"not json").status, 409)
        self.assertEqual(self.harness.get(PULL).status, 200)
        self.assertEqual(self.harness.get(PULL + "/x", method="DELETE").status, 204)
        self.assertEqual(self.hosts.attempts, [])
