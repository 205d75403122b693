"""
``files.fetch``: one remote pull on the wire, in memory (``pullpeer``): the
resolution checked once and pinned, the request sent, every answer that must
fail it, the body written through a temporary file with back-pressure, and
cancellation.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.blocking import RunBlocking, run_inline
from wings_twisted.files.fetch import Fetcher, PullFailed, Refused
from wings_twisted.files.netguard import AddressPolicy
from wings_twisted.files.pullspec import InvalidName, parse_url
from wings_twisted.fs import Denied, QuotaExceeded, Volume

from .pullpeer import PUBLIC, RemoteHosts, Worker
from .test_pull_guard import REFUSED

MIB = 1024 * 1024


class FetchTestCase(SynchronousTestCase):
    """
    A volume, remote hosts and a fetcher over them.
    """

    def setUp(self) -> None:
        self.root = self.mktemp()
        os.makedirs(self.root)
        self.volume = Volume(self.root, uid=os.getuid(), gid=os.getgid(), chown=False)
        self.hosts = RemoteHosts({"files.example": [[PUBLIC]]})
        self.progress: list[tuple[int, int]] = []

    def fetch(self, url: str, *, allowed: tuple[str, ...] = (), root: str = "/downloads",
              run_blocking: RunBlocking = run_inline, **options: Any) -> Deferred[str]:
        fetcher = Fetcher(Clock(), run_blocking, self.hosts.reactor, self.hosts.resolver,
                          self.hosts.tls)
        return Deferred.fromCoroutine(fetcher.fetch(
            parse_url(url), AddressPolicy.from_config(allowed), self.volume, root,
            progress=lambda received, total: self.progress.append((received, total)),
            **options))

    def files(self) -> list[str]:
        """
        Every file under the volume (temporary files included).
        """
        return sorted(os.path.relpath(os.path.join(d, f), self.root)
                      for d, _, names in os.walk(self.root) for f in names)


class PinningTests(FetchTestCase):
    """
    The name is resolved once, every answer is checked, and the connection
    goes to the checked address.
    """

    def test_request_goes_to_the_checked_address(self) -> None:
        """
        The TCP connection is to the resolved address and the URL's port; the
        request carries the host name, the Panel's user agent and the path.
        """
        d = self.fetch("http://files.example:8080/packs/map.zip?v=2")
        self.assertEqual(self.hosts.attempts, [(PUBLIC, 8080)])
        connection = self.hosts.accept()
        request = connection.sent()
        self.assertTrue(request.startswith(b"GET /packs/map.zip?v=2 HTTP/1.1\r\n"), request)
        self.assertIn(b"\r\nHost: files.example:8080\r\n", request)
        self.assertIn(b"\r\nUser-Agent: Pterodactyl Panel (https://pterodactyl.io)\r\n", request)
        connection.head(Content_Length="5")
        connection.answer(b"hello")
        self.assertEqual(self.successResultOf(d), "downloads/map.zip")
        with open(os.path.join(self.root, "downloads", "map.zip"), "rb") as f:
            self.assertEqual(f.read(), b"hello")
        self.assertEqual(os.stat(os.path.join(self.root, "downloads", "map.zip")).st_mode & 0o777,
                         0o644)
        self.assertEqual(self.files(), ["downloads/map.zip"])
        self.assertEqual(self.progress[-1], (5, 5))

    def test_dns_rebinding(self) -> None:
        """
        A name that answers a public address first and loopback afterwards
        is resolved once: the connection goes to the public address.
        """
        self.hosts.resolver.answers["files.example"] = [[PUBLIC], ["127.0.0.1"]]
        self.fetch("http://files.example/x.bin")
        self.assertEqual(self.hosts.resolver.calls, ["files.example"])
        self.assertEqual(self.hosts.attempts, [(PUBLIC, 80)])

    def test_every_refused_answer(self) -> None:
        """
        A name resolving to any refused address (IPv4-mapped forms included)
        fails with ``Refused`` before any connection.
        """
        for address in REFUSED:
            self.hosts.resolver.answers["inside.example"] = [[address]]
            self.failureResultOf(self.fetch("http://inside.example/x"), Refused)
        self.assertEqual(self.hosts.attempts, [])

    def test_one_refused_answer_refuses_the_name(self) -> None:
        """
        One internal address among public ones refuses the whole name.
        """
        self.hosts.resolver.answers["mixed.example"] = [[PUBLIC, "10.0.0.7"]]
        self.failureResultOf(self.fetch("http://mixed.example/x"), Refused)
        self.assertEqual(self.hosts.attempts, [])

    def test_literal_addresses(self) -> None:
        """
        IP literals are checked without a resolver: loopback, ``::1``, the
        mapped form and the zero address are refused; a public one connects.
        """
        for url in ["http://127.0.0.1/x", "http://[::1]/x", "http://[::ffff:127.0.0.1]/x",
                    "http://0.0.0.0/x", "http://[::]:8080/x", "http://169.254.169.254/x"]:
            self.failureResultOf(self.fetch(url), Refused)
        self.assertEqual((self.hosts.resolver.calls, self.hosts.attempts), ([], []))
        self.fetch("http://{}/x".format(PUBLIC))
        self.assertEqual(self.hosts.attempts, [(PUBLIC, 80)])

    def test_unresolvable(self) -> None:
        """
        A name without addresses fails the pull with the same text as an
        internal one (no oracle for internal names).
        """
        failure = self.failureResultOf(self.fetch("http://nowhere.example/x"), PullFailed)
        self.hosts.resolver.answers["inside.example"] = [["10.0.0.1"]]
        refused = self.failureResultOf(self.fetch("http://inside.example/x"), Refused)
        self.assertEqual(str(failure.value), str(refused.value))
        self.assertEqual(refused.value.refused.reason, "private")

    def test_ipv6_literal(self) -> None:
        """
        A public IPv6 literal connects to that address, with the bracketed
        form in ``Host``.
        """
        address = "2606:2800:220:1:248:1893:25c8:1946"
        self.fetch("http://[{}]:8080/x".format(address))
        self.assertEqual(self.hosts.attempts, [(address, 8080)])
        self.assertIn("\r\nHost: [{}]:8080\r\n".format(address).encode(),
                      self.hosts.accept().sent())

    def test_allowed_network_opens_one_port(self) -> None:
        """
        ``127.0.0.1:8123`` allowed: that port connects, the next port and
        another loopback address stay refused.
        """
        allowed = ("127.0.0.1:8123",)
        self.fetch("http://127.0.0.1:8123/x", allowed=allowed)
        self.assertEqual(self.hosts.attempts, [("127.0.0.1", 8123)])
        self.failureResultOf(self.fetch("http://127.0.0.1:8124/x", allowed=allowed), Refused)
        self.failureResultOf(self.fetch("http://127.0.0.2:8123/x", allowed=allowed), Refused)
        self.failureResultOf(self.fetch("http://[::1]:8123/x", allowed=allowed), Refused)
        self.assertEqual(len(self.hosts.attempts), 1)

    def test_next_address_when_one_fails(self) -> None:
        """
        When the first checked address refuses the connection, the next one
        is tried (and only checked ones).
        """
        self.hosts.resolver.answers["two.example"] = [[PUBLIC, "8.8.8.8"]]
        self.fetch("http://two.example/x")
        self.hosts.refuse(0)
        self.assertEqual(self.hosts.attempts, [(PUBLIC, 80), ("8.8.8.8", 80)])

    def test_no_address_connects(self) -> None:
        """
        When every address refuses, the pull fails with a clear reason.
        """
        d = self.fetch("http://files.example/x")
        self.hosts.refuse(0)
        failure = self.failureResultOf(d, PullFailed)
        self.assertIn("Could not connect", str(failure.value))

    def test_https_verifies_the_host_name(self) -> None:
        """
        ``https`` makes TLS options for the URL's host name (SNI and
        verification) while connecting to the checked address on 443.
        """
        self.fetch("https://files.example/x")
        self.assertEqual(self.hosts.attempts, [(PUBLIC, 443)])
        self.assertEqual(self.hosts.tls.netlocs, [(b"files.example", 443)])

    def test_credentials(self) -> None:
        """
        A user and password in the URL are sent as Basic authorization.
        """
        self.fetch("http://me:secret@files.example/x")
        self.assertIn(b"\r\nAuthorization: Basic bWU6c2VjcmV0\r\n", self.hosts.accept().sent())


class AnswerTests(FetchTestCase):
    """
    Answers that fail a pull, and the file names answers give.
    """

    def test_redirect_is_not_followed(self) -> None:
        """
        A 302 to a loopback address fails the pull: no second connection, the
        first one is dropped, nothing is written (GHSA-6rg3-8h8x-5xfv).
        """
        d = self.fetch("http://files.example/x")
        connection = self.hosts.accept()
        connection.head("302 Found", Location="http://127.0.0.1:8080/secret",
                        Content_Length="0")
        failure = self.failureResultOf(d, PullFailed)
        self.assertIn("redirect", str(failure.value))
        self.assertEqual(len(self.hosts.attempts), 1)
        self.assertEqual(self.files(), [])

    def test_other_statuses(self) -> None:
        """
        Anything but 200 fails, and the connection is dropped.
        """
        for status in ["404 Not Found", "206 Partial Content", "500 Internal Server Error",
                       "301 Moved Permanently", "204 No Content"]:
            d = self.fetch("http://files.example/x")
            connection = self.hosts.accept()
            connection.head(status, Content_Length="3")
            self.failureResultOf(d, PullFailed)
            self.assertTrue(connection.transport.disconnecting or connection.state == "stopped")
        self.assertEqual(self.files(), [])

    def test_length_required(self) -> None:
        """
        A chunked answer (no length) and a zero length fail the pull.
        """
        for headers in [{"Transfer_Encoding": "chunked"}, {"Content_Length": "0"}]:
            d = self.fetch("http://files.example/x")
            self.hosts.accept().head(**headers)
            self.assertIn("Content-Length", str(self.failureResultOf(d, PullFailed).value))
        self.assertEqual(self.files(), [])

    def test_short_body(self) -> None:
        """
        A connection that ends before ``Content-Length`` bytes leaves no file
        and no temporary file.
        """
        d = self.fetch("http://files.example/x")
        connection = self.hosts.accept()
        connection.head(Content_Length="10")
        connection.answer(b"12345")
        connection.close(Failure(ConnectionLost()))
        self.failureResultOf(d, PullFailed)
        self.assertEqual(self.files(), [])

    def test_name_from_header(self) -> None:
        """
        ``use_header`` takes the base name of ``Content-Disposition``.
        """
        d = self.fetch("http://files.example/download.php?id=4", use_header=True,
                       file_name="fallback.zip")
        connection = self.hosts.accept()
        connection.head(Content_Length="2",
                        Content_Disposition='attachment; filename="../../plugins/Essentials.jar"')
        connection.answer(b"PK")
        self.assertEqual(self.successResultOf(d), "downloads/Essentials.jar")

    def test_malformed_header(self) -> None:
        """
        A malformed ``Content-Disposition`` fails a ``use_header`` pull.
        """
        d = self.fetch("http://files.example/x.zip", use_header=True)
        self.hosts.accept().head(Content_Length="2", Content_Disposition='attachment; filename="x')
        self.assertIn("Content-Disposition", str(self.failureResultOf(d, PullFailed).value))

    def test_header_name_unusable(self) -> None:
        """
        A header naming ``..`` fails with ``InvalidName``.
        """
        d = self.fetch("http://files.example/x.zip", use_header=True)
        self.hosts.accept().head(Content_Length="2", Content_Disposition="attachment; filename=..")
        self.failureResultOf(d, InvalidName)


class WriteTests(FetchTestCase):
    """
    The body on its way to the volume.
    """

    def test_quota_fits_content_length(self) -> None:
        """
        A length the quota cannot fit fails before any byte is written.
        """
        self.volume.set_disk_limit(100)
        d = self.fetch("http://files.example/big.bin")
        connection = self.hosts.accept()
        connection.head(Content_Length="101")
        connection.answer(b"x" * 50)
        self.failureResultOf(d, QuotaExceeded)
        self.assertEqual(self.files(), [])

    def test_denylisted_target(self) -> None:
        """
        A target on the egg denylist is refused (403 on the route).
        """
        self.volume.set_denylist(["*.jar"])
        d = self.fetch("http://files.example/server.jar", root="/")
        connection = self.hosts.accept()
        connection.head(Content_Length="2")
        connection.answer(b"PK")
        self.failureResultOf(d, Denied)
        self.assertEqual(self.files(), [])

    def test_replaces_existing_file(self) -> None:
        """
        An existing file is replaced whole, keeping its mode.
        """
        os.makedirs(os.path.join(self.root, "downloads"))
        path = os.path.join(self.root, "downloads", "x.txt")
        with open(path, "wb") as f:
            f.write(b"old contents")
        os.chmod(path, 0o600)
        d = self.fetch("http://files.example/x.txt")
        connection = self.hosts.accept()
        connection.head(Content_Length="3")
        connection.answer(b"new")
        self.successResultOf(d)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"new")
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)

    def test_back_pressure(self) -> None:
        """
        While the disk lags more than the spool's high-water mark, the
        connection is paused; it resumes once the disk caught up, and every
        byte lands.
        """
        worker = Worker()
        d = self.fetch("http://files.example/big.bin", run_blocking=worker)
        connection = self.hosts.accept()
        size = 5 * MIB
        connection.head(Content_Length=str(size))
        chunk = b"z" * (64 * 1024)
        for _ in range(size // len(chunk) // 5 * 4):
            connection.answer(chunk)
        self.assertEqual(connection.state, "paused")
        worker.finish_all()
        self.assertEqual(connection.state, "producing")
        for _ in range(size // len(chunk) // 5):
            connection.answer(chunk)
        worker.finish_all()
        self.assertEqual(self.successResultOf(d), "downloads/big.bin")
        self.assertEqual(os.path.getsize(os.path.join(self.root, "downloads", "big.bin")), size)

    def test_cancel_leaves_nothing(self) -> None:
        """
        Cancelling mid-body drops the connection and removes the temporary
        file (and the directory made for it): no partial file stays.
        """
        d = self.fetch("http://files.example/x.bin", root="/new/dir")
        connection = self.hosts.accept()
        connection.head(Content_Length="100")
        connection.answer(b"half")
        self.assertEqual(len(self.files()), 1)  # the hidden temporary file
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(connection.state, "stopped")
        self.assertEqual(self.files(), [])
        self.assertFalse(os.path.exists(os.path.join(self.root, "new")))

    def test_cancel_before_the_answer(self) -> None:
        """
        Cancelling while connecting stops the connection attempt.
        """
        d = self.fetch("http://files.example/x.bin")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(self.hosts.reactor.connectors[0].stoppedConnecting)
