"""
Remote pulls (api.md §6) against a real ``twistd -n wings``: real HTTP(S)
servers on loopback play the remote side, and the operator's
``api.remote_download.allowed_networks`` opens exactly one of them
(``127.0.0.1:<mirror port>``), so every test also proves that the rest of
loopback and the private ranges stay refused.  Upstream advisory regressions
(GHSA-6rg3-8h8x-5xfv / CVE-2024-34068): a pull to a local network, through a
redirect, and through a name that changes its answer (DNS rebinding).

The daemon runs through ``launcher`` where a test needs a scripted resolver
or the write guard up.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from typing import Any

from twisted.internet import reactor, ssl
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.task import deferLater
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from wings_twisted.files.pull import TOO_MANY
from wings_twisted.web.pull import DISABLED

from ..support import REPO, SERVER, TOKEN
from .test_daemon import DaemonTestCase, _Daemon, _timeout

PULL = "/api/servers/{}/files/pull".format(SERVER)
PAYLOAD = os.urandom(300 * 1024)
SLOW_LENGTH = 1024 * 1024
AUTH = {"Authorization": "Bearer " + TOKEN}


class _Remote(Resource):
    """
    A remote host: ``/file.bin`` (the payload), ``/named`` (with a
    ``Content-Disposition``), ``/redirect`` (302 to ``redirect_to``),
    ``/slow`` (a length, a first slice, then nothing until the test says);
    every other path is "secret" and recorded.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[bytes, bytes | None]] = []
        self.redirect_to = b""
        self.slow: list[Request] = []

    def render_GET(self, request: Request) -> bytes | int:
        self.requests.append((request.uri, request.getHeader(b"host")))
        if request.path == b"/file.bin":
            return PAYLOAD
        if request.path == b"/named":
            request.setHeader(b"Content-Disposition", b'attachment; filename="../named.txt"')
            return b"named\n"
        if request.path == b"/redirect":
            request.setResponseCode(302)
            request.setHeader(b"Location", self.redirect_to)
            return b""
        if request.path == b"/slow":
            request.setHeader(b"Content-Length", b"%d" % SLOW_LENGTH)
            request.write(b"s" * 4096)
            self.slow.append(request)
            return NOT_DONE_YET
        return b"secret\n"


class PullTestCase(DaemonTestCase):
    """
    The mirror on ``127.0.0.1:P`` (allowed), an internal host on
    ``127.0.0.2:P`` and another on ``127.0.0.1:Q`` (both refused), then the
    daemon.
    """

    def listen(self, resource: Resource, port: int = 0, interface: str = "127.0.0.1",
               tls: Any = None) -> int:
        site = Site(resource)
        if tls is None:
            listening = reactor.listenTCP(port, site, interface=interface)
        else:
            listening = reactor.listenSSL(port, site, tls, interface=interface)
        self.addCleanup(listening.stopListening)
        return int(listening.getHost().port)

    def serve(self) -> None:
        self.mirror, self.inside, self.other = _Remote(), _Remote(), _Remote()
        self.port = self.listen(self.mirror)
        self.listen(self.inside, self.port, "127.0.0.2")
        self.other_port = self.listen(self.other)
        self.addCleanup(self._abort_slow)

    def _abort_slow(self) -> None:
        for remote in (self.mirror, self.inside, self.other):
            for request in remote.slow:
                if not request.finished and request.channel is not None:
                    request.channel.transport.abortConnection()

    #: Extra environment of the daemon (``launcher``'s seams).
    environ: dict[str, str] = {}

    def spawn(self, config: str) -> _Daemon:
        """
        The daemon through ``launcher``, with ``environ``.
        """
        daemon = _Daemon()
        env = dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1", **self.environ)
        process = reactor.spawnProcess(
            daemon, sys.executable,
            [sys.executable, "-m", "tests.integration.launcher", "--pidfile=", "-n",
             "--logfile=-", "wings", "--config", config], env=env, path=REPO)

        def stop() -> Deferred | None:
            if daemon.exited.called:
                return None
            try:
                process.signalProcess("TERM")
            except ProcessExitedAlready:
                return None
            return _timeout(daemon.exited, 15)
        self.addCleanup(stop)
        return daemon

    async def start_pulling(self, allowed: list[str] | None = None, **environ: str) -> None:
        """
        Serve the remote hosts, then start a daemon allowing the mirror.
        """
        self.serve()
        remote = {"allowed_networks": ["127.0.0.1:{}".format(self.port)]
                  if allowed is None else allowed}
        self.environ = environ
        await self.start(SERVER, remote_download=remote)

    async def pull(self, **body: Any) -> tuple[int, Any]:
        body.setdefault("root", "/")
        response, content = await self.call("POST", PULL, headers=AUTH,
                                            data=json.dumps(body).encode())
        return response.code, json.loads(content) if content else None

    async def listing(self) -> list[dict[str, Any]]:
        response, content = await self.call("GET", PULL, headers=AUTH)
        self.assertEqual(response.code, 200)
        downloads: list[dict[str, Any]] = json.loads(content)["downloads"]
        return downloads

    async def until(self, condition: Any, what: str) -> None:
        for _ in range(200):
            if await condition():
                return
            await deferLater(reactor, 0.05, lambda: None)
        self.fail("timed out waiting for " + what)

    def volume_files(self) -> list[str]:
        return sorted(os.path.relpath(os.path.join(d, f), self.volume)
                      for d, _, names in os.walk(self.volume) for f in names)


class PullTests(PullTestCase):
    """
    Pulls that work, and the allowed mirror's limits.
    """

    async def test_foreground_and_background(self) -> None:
        """
        A foreground pull answers 200 with the stat object and the exact
        bytes on disk; a background pull answers 202 and the file appears;
        the mirror saw the Panel's user agent and the URL's host.
        """
        await self.start_pulling()
        url = "http://127.0.0.1:{}/file.bin".format(self.port)
        code, entry = await self.pull(url=url, root="/downloads", foreground=True)
        self.assertEqual(code, 200, entry)
        self.assertEqual((entry["name"], entry["size"], entry["mode_bits"]),
                         ("file.bin", len(PAYLOAD), "644"))
        with open(os.path.join(self.volume, "downloads", "file.bin"), "rb") as f:
            self.assertEqual(f.read(), PAYLOAD)
        self.assertEqual(self.mirror.requests[0], (b"/file.bin", b"127.0.0.1:%d" % self.port))
        code, body = await self.pull(url="http://127.0.0.1:{}/named".format(self.port),
                                     use_header=True)
        self.assertEqual(code, 202)
        self.assertTrue(len(body["identifier"]) == 36)

        async def written() -> bool:
            return os.path.exists(os.path.join(self.volume, "named.txt")) and \
                not await self.listing()
        await self.until(written, "the background pull")
        self.assertEqual(self.volume_files(), ["downloads/file.bin", "named.txt"])

    async def test_every_other_local_address_refused(self) -> None:
        """
        With only ``127.0.0.1:P`` allowed, every other way to reach this
        machine or a private network is refused with 400 and nothing
        connects to the internal hosts (CVE-2024-34068).
        """
        await self.start_pulling()
        port, other = self.port, self.other_port
        urls = ["http://127.0.0.2:{}/".format(port), "http://127.0.0.1:{}/".format(other),
                "http://localhost:{}/".format(other), "http://[::1]:{}/".format(port),
                "http://[::ffff:127.0.0.1]:{}/".format(other), "http://0.0.0.0:{}/".format(port),
                "http://127.1:{}/".format(other), "http://2130706433:{}/".format(other),
                "http://0x7f000001:{}/".format(other), "http://10.0.0.1/",
                "http://172.16.0.1/", "http://192.168.0.1/", "http://100.64.0.1/",
                "http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/",
                "http://[fd00::1]/", "https://127.0.0.2:{}/".format(port)]
        for url in urls:
            code, body = await self.pull(url=url, file_name="f", foreground=True)
            self.assertEqual(code, 400, (url, body))
            self.assertIn("internal network", body["error"], (url, body))
        self.assertEqual((self.inside.requests, self.other.requests), ([], []))
        self.assertEqual(self.volume_files(), [])

    async def test_redirect_not_followed(self) -> None:
        """
        The allowed mirror redirecting to an internal host fails the pull,
        foreground (400) and background (nothing written); the internal
        host is never asked (GHSA-6rg3-8h8x-5xfv).
        """
        await self.start_pulling()
        self.mirror.redirect_to = "http://127.0.0.2:{}/secret".format(self.port).encode()
        url = "http://127.0.0.1:{}/redirect".format(self.port)
        code, body = await self.pull(url=url, foreground=True)
        self.assertEqual(code, 400)
        self.assertIn("redirect", body["error"])
        code, _ = await self.pull(url=url, file_name="bg.txt")
        self.assertEqual(code, 202)

        async def done() -> bool:
            return len(self.mirror.requests) == 2 and not await self.listing()
        await self.until(done, "the background pull to fail")
        self.assertEqual((self.inside.requests, self.volume_files()), ([], []))

    async def test_cancel_and_limit(self) -> None:
        """
        Three pulls may run per server; a fourth is 400 with upstream's
        text; ``DELETE`` cancels one (its connection dropped, no partial
        file), which frees a slot; unknown identifiers are 204 too.
        """
        await self.start_pulling()
        url = "http://127.0.0.1:{}/slow".format(self.port)
        identifiers = [(await self.pull(url=url, file_name="s{}".format(i)))[1]["identifier"]
                       for i in range(3)]

        async def all_started() -> bool:
            return len(self.mirror.slow) == 3 and all(
                p["Progress"] > 0 for p in await self.listing())
        await self.until(all_started, "three running pulls")
        code, body = await self.pull(url=url)
        self.assertEqual((code, body["error"]), (400, TOO_MANY))
        gone = self.mirror.slow[0].notifyFinish()
        response, _ = await self.call("DELETE", PULL + "/" + identifiers[0], headers=AUTH)
        self.assertEqual(response.code, 204)
        await _timeout(gone.addErrback(lambda f: None))

        async def two_left() -> bool:
            return len(await self.listing()) == 2
        await self.until(two_left, "the cancelled pull to go")
        # The two pulls still running have one temporary file each.
        self.assertEqual(len(self.volume_files()), 2)
        self.assertEqual((await self.pull(url=url, file_name="s3"))[0], 202)
        response, _ = await self.call("DELETE", PULL + "/unknown", headers=AUTH)
        self.assertEqual(response.code, 204)
        for pull in await self.listing():
            await self.call("DELETE", PULL + "/" + pull["Identifier"], headers=AUTH)

        async def nothing_left() -> bool:
            return not await self.listing() and not self.volume_files()
        await self.until(nothing_left, "every pull cancelled without a file left")


class SwitchTests(PullTestCase):
    """
    The disable switch and the write guard on a real daemon.
    """

    async def test_disabled(self) -> None:
        """
        ``api.disable_remote_download``: all three routes answer 400.
        """
        self.serve()
        await self.start(SERVER, disable_remote_download=True)
        for method, path, data in [("GET", PULL, None), ("POST", PULL, b"{}"),
                                   ("DELETE", PULL + "/x", None)]:
            response, content = await self.call(method, path, headers=AUTH, data=data)
            self.assertEqual((response.code, json.loads(content)["error"]), (400, DISABLED))

    async def test_write_guard(self) -> None:
        """
        While the server is restoring, ``POST`` is 409 and connects nowhere;
        ``GET`` and ``DELETE`` still answer.
        """
        await self.start_pulling(WINGS_TEST_RESTORING=SERVER)
        code, body = await self.pull(url="http://127.0.0.1:{}/file.bin".format(self.port))
        self.assertEqual((code, body["error"]), (
            409, "Files cannot be changed while a backup is being restored to this server."))
        self.assertEqual(await self.listing(), [])
        response, _ = await self.call("DELETE", PULL + "/x", headers=AUTH)
        self.assertEqual((response.code, self.mirror.requests), (204, []))


class ResolverTests(PullTestCase):
    """
    Names, through a scripted resolver in the daemon: DNS rebinding, and
    https with SNI and certificate verification for the URL's host name.
    """

    def script(self, answers: dict[str, list[list[str]]]) -> str:
        path = os.path.abspath(self.mktemp() + ".json")
        with open(path, "w") as f:
            json.dump(answers, f)
        return path

    async def test_dns_rebinding(self) -> None:
        """
        ``rebind.test`` answers the allowed mirror first and an internal host
        on the same port afterwards: the daemon resolves once and connects to
        what it checked, so the internal host is never reached.
        """
        script = self.script({"rebind.test": [["127.0.0.1"], ["127.0.0.2"]]})
        await self.start_pulling(WINGS_TEST_RESOLVER=script)
        code, entry = await self.pull(url="http://rebind.test:{}/file.bin".format(self.port),
                                      foreground=True)
        self.assertEqual((code, entry["size"]), (200, len(PAYLOAD)))
        self.assertEqual(self.mirror.requests, [(b"/file.bin", b"rebind.test:%d" % self.port)])
        self.assertEqual(self.inside.requests, [])
        with open(script + ".calls") as f:
            self.assertEqual(f.read().split(), ["rebind.test"])
        # The second answer is internal: a fresh pull of the name is refused.
        code, _ = await self.pull(url="http://rebind.test:{}/x".format(self.port),
                                  foreground=True)
        self.assertEqual((code, self.inside.requests), (400, []))

    async def test_https_host_name(self) -> None:
        """
        https to a checked address still sends SNI and verifies the
        certificate for the URL's host name: ``mirror.test`` (the name in the
        certificate) works, ``other.test`` (same address) fails with 400.
        """
        ca, tls, names = _certificates(os.path.abspath(self.mktemp()), "mirror.test")
        self.serve()
        https = _Remote()
        tls_port = self.listen(https, tls=tls)
        script = self.script({"mirror.test": [["127.0.0.1"]], "other.test": [["127.0.0.1"]]})
        self.environ = {"WINGS_TEST_RESOLVER": script, "SSL_CERT_FILE": ca}
        await self.start(SERVER, remote_download={
            "allowed_networks": ["127.0.0.1:{}".format(tls_port)]})
        code, entry = await self.pull(url="https://mirror.test:{}/file.bin".format(tls_port),
                                      foreground=True)
        self.assertEqual((code, entry["size"]), (200, len(PAYLOAD)), entry)
        self.assertEqual(names, [b"mirror.test"])
        self.assertEqual(https.requests, [(b"/file.bin", b"mirror.test:%d" % tls_port)])
        code, body = await self.pull(url="https://other.test:{}/file.bin".format(tls_port),
                                     foreground=True)
        self.assertEqual(code, 400, body)
        self.assertEqual(len(https.requests), 1)


def _certificates(base: str, name: str) -> tuple[str, Any, list[bytes]]:
    """
    A test CA (written to ``<base>/ca.pem``), server TLS options for a
    certificate of ``name`` it signed, and the list the SNI names the server
    sees are appended to.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from OpenSSL import crypto

    os.makedirs(base)
    now = datetime.datetime.now(datetime.timezone.utc)

    def issue(subject: str, key: Any, issuer: Any, issuer_key: Any, ca: bool) -> Any:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(issuer).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]),
                                            critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wings-twisted test CA")])
    ca_cert = issue("wings-twisted test CA", ca_key, ca_name, ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue(name, key, ca_name, ca_key, False)
    ca_path = os.path.join(base, "ca.pem")
    with open(ca_path, "wb") as f:
        f.write(ca_cert.public_bytes(serialization.Encoding.PEM))
    names: list[bytes] = []

    class _SniRecording(ssl.CertificateOptions):
        def _makeContext(self) -> Any:
            context = super()._makeContext()
            context.set_tlsext_servername_callback(
                lambda connection: names.append(connection.get_servername()))
            return context

    options = _SniRecording(privateKey=crypto.PKey.from_cryptography_key(key),
                            certificate=crypto.X509.from_cryptography(cert))
    return ca_path, options, names
