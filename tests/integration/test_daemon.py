"""
Integration tests: a real ``twistd -n wings`` process against the
development panel (served by this test process on a loopback port), driven
with real HTTP clients (treq and curl).

These are the project's only tests with real sockets and real time; each
waits on events (log lines, process exit) with a bounded timeout, never a
fixed sleep.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import psutil
import treq
import yaml
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase

from wings_twisted.devpanel.faults import Respond
from wings_twisted.devpanel.resource import listen
from wings_twisted.devpanel.state import DevPanelState

from ..support import REPO, SERVER, TOKEN, TOKEN_ID, USER, mint

LISTENING = re.compile(r"ApiSite(?: \(TLS\))? starting on (\d+)")
TIMEOUT = 30.0
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


class _Daemon(ProcessProtocol):
    """
    Collects a twistd process's output and tells when it listens or exits.
    """

    def __init__(self) -> None:
        self.output = ""
        self.port: int | None = None
        self.listening: Deferred[int] = Deferred()
        self.exited: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self._text(data)

    def errReceived(self, data: bytes) -> None:
        self._text(data)

    def _text(self, data: bytes) -> None:
        self.output += data.decode("utf-8", "replace")
        match = LISTENING.search(self.output)
        if match and self.port is None:
            self.port = int(match.group(1))
            self.listening.callback(self.port)

    def processEnded(self, reason: Any) -> None:
        code = reason.value.exitCode
        if not self.listening.called:
            self.listening.errback(RuntimeError("twistd exited ({}) before listening:\n{}".format(
                code, self.output)))
        self.exited.callback(code)


def _timeout(d: Deferred, seconds: float = TIMEOUT) -> Deferred:
    return d.addTimeout(seconds, reactor)


def daemon_config(base: str, token_id: str, token: str, remote: str,
                  api: dict[str, Any] | None = None) -> dict[str, Any]:
    """
    A test daemon's configuration: everything under ``base``, the API and SFTP on free
    loopback ports, the process driver, the current user's account.
    """
    config: dict[str, Any] = {
        "token_id": token_id, "token": token, "remote": remote,
        "api": dict({"host": "127.0.0.1", "port": 0}, **(api or {})),
        "system": {name: os.path.join(base, name) for name in
                   ("root_directory", "log_directory", "data", "archive_directory",
                    "backup_directory", "tmp_directory")},
        "environment": {"driver": "process"},
    }
    # An existing account: the daemon would otherwise create "pterodactyl".
    config["system"]["username"] = pwd.getpwuid(os.getuid()).pw_name
    # Tests never write /etc/logrotate.d/wings.
    config["system"]["enable_log_rotate"] = False
    # SFTP on a free loopback port (the default 2022 would collide between tests).
    config["system"]["sftp"] = {"bind_address": "127.0.0.1", "bind_port": 0}
    return config


def spawn_daemon(test: TestCase, config: str, cwd: str, env: dict[str, str],
                 stop_timeout: float) -> tuple[_Daemon, Any]:
    """
    ``twistd -n wings --config <config>`` as a child of the test, sent SIGTERM at clean-up
    and given ``stop_timeout`` seconds to exit.
    """
    daemon = _Daemon()
    process = reactor.spawnProcess(
        daemon, sys.executable,
        TWISTD + ["--pidfile=", "-n", "--logfile=-", "wings", "--config", config],
        env=env, path=cwd)

    def stop() -> Deferred | None:
        if daemon.exited.called:
            return None
        try:
            process.signalProcess("TERM")
        except Exception:
            return None
        return _timeout(daemon.exited, stop_timeout)
    test.addCleanup(stop)
    return daemon, process


class DaemonTestCase(TestCase):
    """
    Starts the development panel and a daemon process per test.
    """

    timeout = 120

    def write_config(self, **api: Any) -> str:
        base = self.base
        config = daemon_config(base, TOKEN_ID, TOKEN, self.panel.url,
                               dict({"upload_limit": 64}, **api))
        path = os.path.join(base, "config.yml")
        with open(path, "w") as f:
            yaml.safe_dump(config, f)
        return path

    async def start_panel(self, *servers: str) -> None:
        self.state = DevPanelState.from_dict({
            "node": {"token_id": TOKEN_ID, "token": TOKEN, "daemon_url": "http://127.0.0.1:8080"},
            "servers": [{"uuid": s, "disk_space": 0, "file_denylist": ["*.secret"]} for s in servers],
            "users": [{"uuid": USER, "id": 7, "username": "tester", "password": "x",
                       "permissions": {s: ["*"] for s in servers}}],
        })
        self.panel = await listen(self.state, reactor)
        self.addCleanup(self.panel.stop)

    #: Seconds the daemon gets to exit after SIGTERM at clean-up.
    stop_timeout = 15
    #: Seconds `wait_for` waits unless told otherwise.
    wait_timeout = 15.0

    async def wait_for(self, predicate: Any, what: str = "", timeout: float | None = None) -> None:
        """
        Poll ``predicate`` every 50 ms until it is true; fail after ``timeout`` seconds
        (`wait_timeout` by default), naming ``what`` (or the predicate).
        """
        limit = self.wait_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while not predicate():
            if time.monotonic() > deadline:
                self.fail("timed out after {}s waiting for {}".format(limit, what or predicate))
            await deferLater(reactor, 0.05, lambda: None)

    def daemon_env(self) -> dict[str, str]:
        """
        The daemon's environment.
        """
        return dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1")

    def spawn(self, config: str) -> _Daemon:
        daemon, self.process = spawn_daemon(self, config, self.base, self.daemon_env(),
                                            self.stop_timeout)
        self.addCleanup(self._keep_output, daemon)
        return daemon

    def _keep_output(self, daemon: _Daemon) -> None:
        # The daemon's log and what the consoles saw, beside trial's log (in
        # trial's working directory), for reading a failure.
        with open("daemon-{}.log".format(self.id().rsplit(".", 1)[-1]), "a") as f:
            f.write(daemon.output)
            for client in getattr(self, "clients", []):
                f.write("\n--- console events\n")
                f.write("\n".join(json.dumps(e) for e in client.events))

    async def start(self, *servers: str, **api: Any) -> None:
        log = "daemon-{}.log".format(self.id().rsplit(".", 1)[-1])
        if os.path.exists(log):
            os.remove(log)
        self.base = tempfile.mkdtemp(prefix="wings-it-")
        self.addCleanup(shutil.rmtree, self.base, True)
        await self.start_panel(*servers)
        self.daemon = self.spawn(self.write_config(**api))
        port = await _timeout(self.daemon.listening)
        self.url = "http://127.0.0.1:{}".format(port)
        # Boot is done once the panel saw the reset.
        for _ in range(300):
            if self.state.reset_count:
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.volume = os.path.join(self.base, "data", SERVER)

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[Any, bytes]:
        headers = kwargs.pop("headers", {})
        response = await treq.request(method, self.url + path, headers=headers,
                                      reactor=reactor, persistent=False, **kwargs)
        return response, await response.content()

    def token(self, **claims: Any) -> str:
        """
        A panel-shaped signed-URL token for the test server, on the wall clock.
        """
        claims.setdefault("server_uuid", SERVER)
        return mint(_WallClock, **claims)

    def curl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=60)

    def curl_async(self, *args: str) -> Deferred:
        from twisted.internet.threads import deferToThread
        return deferToThread(self.curl, *args)


class BootTests(DaemonTestCase):
    """
    Start-up of a real daemon process.
    """

    async def test_boot_loads_servers_and_resets(self) -> None:
        """
        The daemon lists servers from page 0, creates their volumes, resets
        states on the panel, and answers the node API.
        """
        await self.start(SERVER)
        listing = [r for r in self.state.received if r.path == "/servers"]
        self.assertEqual(listing[0].query.get("page"), ["0"])
        self.assertTrue(os.path.isdir(self.volume))
        response, body = await self.call("GET", "/api/servers",
                                         headers={"Authorization": "Bearer " + TOKEN})
        self.assertEqual(response.code, 200)
        self.assertEqual([s["configuration"]["uuid"] for s in json.loads(body)], [SERVER])
        self.assertEqual(self.state.received[0].headers.get("authorization"),
                         "Bearer {}.{}".format(TOKEN_ID, TOKEN))
        # Under twistd too, wings.log gets every line once.
        with open(os.path.join(self.base, "log_directory", "wings.log")) as f:
            self.assertEqual(f.read().count("ApiSite starting on"), 1)

    async def test_panel_refusal_is_fatal(self) -> None:
        """
        A panel that refuses the listing stops the daemon with status 1.
        """
        self.base = tempfile.mkdtemp(prefix="wings-it-")
        self.addCleanup(shutil.rmtree, self.base, True)
        await self.start_panel(SERVER)
        self.state.faults.add("GET", "/servers", Respond(403))
        daemon = self.spawn(self.write_config())
        code = await _timeout(daemon.exited)
        self.assertEqual(code, 1)
        self.assertIn("failed to load server configurations", daemon.output)

    async def test_bad_config_one_line(self) -> None:
        """
        A config with a wrong type stops start-up with one line naming the
        key, exit status 1.
        """
        self.base = tempfile.mkdtemp(prefix="wings-it-")
        self.addCleanup(shutil.rmtree, self.base, True)
        path = os.path.join(self.base, "config.yml")
        with open(path, "w") as f:
            f.write("token: abc\napi:\n  port: nope\n")
        result = subprocess.run(
            TWISTD + ["--pidfile=", "-n", "wings", "--config", path],
            capture_output=True, timeout=60, env=dict(os.environ, PYTHONPATH=REPO), cwd=self.base)
        self.assertEqual(result.returncode, 1)
        lines = result.stderr.decode().strip().splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertIn("api.port", lines[0])

    async def test_busy_port_fails(self) -> None:
        """
        A port already in use makes start-up fail with a non-zero status.
        """
        import socket
        self.base = tempfile.mkdtemp(prefix="wings-it-")
        self.addCleanup(shutil.rmtree, self.base, True)
        await self.start_panel(SERVER)
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        self.addCleanup(blocker.close)
        daemon = self.spawn(self.write_config(port=blocker.getsockname()[1]))
        daemon.listening.addErrback(lambda f: None)
        code = await _timeout(daemon.exited)
        self.assertEqual(code, 1)
        errors = [line for line in daemon.output.splitlines() if "[stderr#error]" in line]
        self.assertEqual(len(errors), 1, daemon.output)
        self.assertIn("wings: cannot listen on", errors[0])
        self.assertIn("Address already in use", errors[0])


class SignedUrlTests(DaemonTestCase):
    """
    Downloads and uploads through a real daemon with real clients.
    """


    async def test_download_statuses(self) -> None:
        """
        200, 206, 416, HEAD, 403, 404 (reuse, missing, unknown server) and
        400 (FIFO) with a real client.
        """
        await self.start(SERVER)
        data = os.urandom(300_000)
        with open(os.path.join(self.volume, "world.dat"), "wb") as f:
            f.write(data)
        os.mkfifo(os.path.join(self.volume, "pipe"))
        token = self.token(file_path="/world.dat")
        path = "/download/file?token=" + token
        response, _ = await self.call("HEAD", path)
        self.assertEqual((response.code, response.headers.getRawHeaders("content-length")),
                         (200, [str(len(data))]))
        response, body = await self.call("GET", path)
        self.assertEqual((response.code, body), (200, data))
        response, body = await self.call("GET", path, headers={"Range": "bytes=1000-1999"})
        self.assertEqual((response.code, body), (206, data[1000:2000]))
        response, body = await self.call("GET", path, headers={"Range": "bytes=999999-"})
        self.assertEqual(response.code, 416)
        self.assertEqual(response.headers.getRawHeaders("content-range"), ["bytes */300000"])
        response, _ = await self.call("GET", path)
        self.assertEqual(response.code, 404)
        response, body = await self.call("GET", "/download/file?token=" + self.token(
            file_path="/world.dat", exp=int(time.time()) - 5))
        self.assertEqual(response.code, 403)
        response, _ = await self.call("GET", "/download/file?token=" + self.token(file_path="/nope"))
        self.assertEqual(response.code, 404)
        response, _ = await self.call("GET", "/download/file?token=" + self.token(
            file_path="/world.dat", server_uuid="0c5b4ae6-5a43-4b77-8f0d-6f3e1cd5d0a7"))
        self.assertEqual(response.code, 404)
        response, body = await self.call("GET", "/download/file?token=" + self.token(file_path="/pipe"))
        self.assertEqual((response.code, json.loads(body)["error"]), (400, "Cannot open files of this type."))

    async def test_client_gone_mid_download_closes_file(self) -> None:
        """
        A client that disconnects in the middle of a (sendfile) download
        leaves no open descriptor of the file in the daemon.
        """
        await self.start(SERVER)
        path = os.path.join(self.volume, "big.dat")
        with open(path, "wb") as f:
            f.truncate(64 * 1024 * 1024)
        url = self.url + "/download/file?token=" + self.token(file_path="/big.dat")
        client = subprocess.Popen(["curl", "-sS", "--limit-rate", "1M", "-o", "/dev/null", url])
        daemon = psutil.Process(self.process.pid)

        def holds_file() -> bool:
            return any(f.path == path for f in daemon.open_files())
        for _ in range(200):
            if holds_file():
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertTrue(holds_file(), "the download never started")
        client.kill()
        client.wait(10)
        for _ in range(200):
            if not holds_file():
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertFalse(holds_file())
        response, _ = await self.call("GET", "/api/system", headers={"Authorization": "Bearer " + TOKEN})
        self.assertEqual(response.code, 200)

    async def test_curl_resume(self) -> None:
        """
        An interrupted download resumes with ``curl -C -`` on the same URL.
        """
        await self.start(SERVER)
        data = os.urandom(3_000_000)
        with open(os.path.join(self.volume, "backup.tar.gz"), "wb") as f:
            f.write(data)
        url = self.url + "/download/file?token=" + self.token(file_path="/backup.tar.gz")
        out = os.path.join(self.base, "out.bin")
        first = await self.curl_async("-o", out, "-r", "0-999999", url)
        self.assertEqual(first.returncode, 0, first.stderr)
        self.assertEqual(os.path.getsize(out), 1_000_000)
        resumed = await self.curl_async("-f", "-C", "-", "-o", out, url)
        self.assertEqual(resumed.returncode, 0, resumed.stderr)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), data)

    async def test_backup_download(self) -> None:
        """
        A local backup archive is served from the backup directory.
        """
        await self.start(SERVER)
        backup = "4b1d7c3e-8a2f-4c6d-9e0b-1a2b3c4d5e6f"
        with open(os.path.join(self.base, "backup_directory", backup + ".tar.gz"), "wb") as f:
            f.write(b"tarball")
        response, body = await self.call("GET", "/download/backup?token=" + self.token(backup_uuid=backup))
        self.assertEqual((response.code, body), (200, b"tarball"))
        response, _ = await self.call("GET", "/download/backup?token=" + self.token(
            backup_uuid="5b1d7c3e-8a2f-4c6d-9e0b-1a2b3c4d5e6f"))
        self.assertEqual(response.code, 404)

    async def test_curl_upload(self) -> None:
        """
        ``curl -F files=@file`` uploads; a too-large file is the size 400 and
        leaves nothing; a reused token is 404; the panel's CORS preflight
        passes.
        """
        await self.start(SERVER, upload_limit=1)
        src = os.path.join(self.base, "map.zip")
        with open(src, "wb") as f:
            f.write(os.urandom(200_000))
        token = self.token()
        url = self.url + "/upload/file?token=" + token + "&directory=/maps+new"
        ok = await self.curl_async("-w", "%{http_code}", "-o", "/dev/null", "-F", "files=@" + src, url)
        self.assertEqual(ok.stdout, b"200", ok.stderr)
        with open(src, "rb") as a, open(os.path.join(self.volume, "maps new", "map.zip"), "rb") as b:
            self.assertEqual(a.read(), b.read())
        again = await self.curl_async("-w", "%{http_code}", "-o", "/dev/null", "-F", "files=@" + src, url)
        self.assertEqual(again.stdout, b"404")
        big = os.path.join(self.base, "big.bin")
        with open(big, "wb") as f:
            f.write(b"\0" * (2 * 1024 * 1024))
        refused = await self.curl_async("-F", "files=@" + big,
                                        self.url + "/upload/file?token=" + self.token())
        self.assertEqual(json.loads(refused.stdout)["error"],
                         "File big.bin is larger than the maximum file upload size of 1 MB.")
        self.assertFalse(os.path.exists(os.path.join(self.volume, "big.bin")))
        self.assertEqual(os.listdir(self.volume), ["maps new"])
        preflight = await self.curl_async(
            "-i", "-X", "OPTIONS", "-H", "Origin: " + self.panel.url,
            "-H", "Access-Control-Request-Method: POST", self.url + "/upload/file")
        self.assertIn(b"204", preflight.stdout.splitlines()[0])
        self.assertIn(("Access-Control-Allow-Origin: " + self.panel.url).encode(), preflight.stdout)

    async def test_large_upload_memory_flat(self) -> None:
        """
        A 200 MiB upload streams to disk: the daemon's resident memory grows
        by far less than the file.
        """
        await self.start(SERVER, upload_limit=1024)
        src = os.path.join(self.base, "large.bin")
        with open(src, "wb") as f:
            for _ in range(200):
                f.write(os.urandom(1024 * 1024))
        daemon = psutil.Process(self.process.pid)
        before = daemon.memory_info().rss
        peak = [before]

        def sample() -> None:
            try:
                peak[0] = max(peak[0], daemon.memory_info().rss)
            except psutil.Error:
                pass
        from twisted.internet.task import LoopingCall
        sampler = LoopingCall(sample)
        sampler.start(0.05)
        result = await self.curl_async("-w", "%{http_code}", "-o", "/dev/null", "-F",
                                       "files=@" + src, self.url + "/upload/file?token=" + self.token())
        sampler.stop()
        self.assertEqual(result.stdout, b"200", result.stderr)
        self.assertEqual(os.path.getsize(os.path.join(self.volume, "large.bin")), 200 * 1024 * 1024)
        self.assertLess(peak[0] - before, 48 * 1024 * 1024)

    async def test_upload_then_download_over_tls(self) -> None:
        """
        With ``api.ssl`` the same routes work over HTTPS (the copy producer
        path), including a Range request.
        """
        keys = tempfile.mkdtemp(prefix="wings-tls-")
        self.addCleanup(shutil.rmtree, keys, True)
        cert, key = _self_signed(keys)
        await self.start(SERVER, ssl={"enabled": True, "cert": cert, "key": key})
        self.url = self.url.replace("http://", "https://")
        data = os.urandom(2_000_000)
        with open(os.path.join(self.volume, "tls.bin"), "wb") as f:
            f.write(data)
        url = self.url + "/download/file?token=" + self.token(file_path="/tls.bin")
        out = os.path.join(self.base, "tls.out")
        got = await self.curl_async("-k", "-f", "-o", out, url)
        self.assertEqual(got.returncode, 0, got.stderr)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), data)
        ranged = await self.curl_async("-k", "-f", "-r", "10-19", url)
        self.assertEqual(ranged.stdout, data[10:20])


class StatusCodeTests(DaemonTestCase):
    """
    The remaining status codes of the routes of this issue, through a real
    daemon and curl.
    """

    async def status(self, *args: str) -> tuple[int, dict]:
        result = await self.curl_async("-w", "\n%{http_code}", *args)
        text, _, code = result.stdout.decode().rpartition("\n")
        return int(code), (json.loads(text) if text.strip() else {})

    async def test_node_api(self) -> None:
        """
        401, 403, 404, 405, 422, 409, 202, 204 and 400 on the node API.
        """
        await self.start(SERVER)
        auth = ["-H", "Authorization: Bearer " + TOKEN]
        other = "0c5b4ae6-5a43-4b77-8f0d-6f3e1cd5d0a7"
        self.state.add_server(other)
        cases = [
            ([self.url + "/api/system"], 401),
            (["-H", "Authorization: Bearer nope", self.url + "/api/system"], 403),
            (auth + [self.url + "/api/servers/" + other], 404),
            (auth + ["-X", "PATCH", self.url + "/api/system"], 405),
            (auth + ["-X", "POST", "-d", '{"uuid": "nope"}', self.url + "/api/servers"], 422),
            (auth + ["-X", "POST", "-d", '{"uuid": "%s"}' % SERVER, self.url + "/api/servers"], 409),
            (auth + ["-X", "POST", "-d", "", self.url + "/api/update"], 400),
            (auth + ["-X", "POST", "-d", '{"uuid": "%s"}' % other, self.url + "/api/servers"], 202),
            (auth + ["-X", "DELETE", self.url + "/api/servers/" + other], 204),
            (auth + ["-X", "DELETE", self.url + "/api/servers/" + other], 404),
        ]
        for args, expected in cases:
            code, body = await self.status(*args)
            self.assertEqual(code, expected, args)
            if expected >= 400:
                self.assertIn("request_id", body)

    async def test_signed_url_refusals(self) -> None:
        """
        Upload 403 (token), 400 (not multipart, no files, invalid name), and
        download 403 (egg denylist).
        """
        await self.start(SERVER)
        with open(os.path.join(self.volume, "db.secret"), "wb") as f:
            f.write(b"s")
        upload = self.url + "/upload/file?token="
        cases = [
            (["-F", "files=@/etc/hostname", upload + "bad"], 403,
             "The provided token is invalid or has expired."),
            (["-d", "x=1", upload + self.token()], 400, "Failed to get multipart form data from request."),
            (["-F", "other=@/etc/hostname", upload + self.token()], 400,
             "No files were found on the request body."),
            (["-F", "files=@/etc/hostname;filename=..", upload + self.token()], 400, "Invalid file name."),
            (["-F", "files=@/etc/hostname;filename=x.secret", upload + self.token()], 403,
             "This file cannot be modified: present in egg denylist."),
            ([self.url + "/download/file?token=" + self.token(file_path="/db.secret")], 403,
             "This file cannot be modified: present in egg denylist."),
        ]
        for args, expected, message in cases:
            code, body = await self.status(*args)
            self.assertEqual((code, body.get("error")), (expected, message), args)
        self.assertEqual(sorted(os.listdir(self.volume)), ["db.secret"])



class _WallClock:
    """
    ``mint`` needs ``seconds()``: the real time, as the daemon sees it.
    """

    @staticmethod
    def seconds() -> float:
        return time.time()


def _self_signed(directory: str) -> tuple[str, str]:
    """
    A throwaway certificate for 127.0.0.1.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


class InstalledPluginTests(TestCase):
    """
    The installed package (``pip install .``, as ``make test`` does) provides
    the ``wings`` tap from any working directory.
    """

    def test_twistd_finds_wings_outside_the_checkout(self) -> None:
        """
        ``twistd wings --help`` run from an empty directory, without the
        checkout on ``sys.path``, lists the tap's options.
        """
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        where = tempfile.mkdtemp(prefix="wings-cwd-")
        self.addCleanup(shutil.rmtree, where, True)
        probe = subprocess.run([sys.executable, "-c", "import wings_twisted, sys; print(wings_twisted.__file__)"],
                               capture_output=True, cwd=where, env=env, timeout=60)
        if probe.returncode != 0 and not os.environ.get("CI"):
            raise SkipTest("wings-twisted is not installed in this interpreter; `make test` installs it")
        self.assertNotIn(REPO + os.sep + "wings_twisted", probe.stdout.decode())
        result = subprocess.run(TWISTD + ["wings", "--help"], capture_output=True, cwd=where, env=env,
                                timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(b"--config", result.stdout)
