"""
The conformance checks of ``sftp.md`` §10 with the real OpenSSH client (Debian's
``openssh-client``, default configuration: no cipher, key-exchange or MAC options) against a real
``twistd -n wings`` and the development panel; ``sshpass`` types passwords.  Paramiko sends what
OpenSSH's client cannot (a ``SETSTAT`` with only times).  The advisory regressions run over the
wire too.

Outside ``CI`` the tests skip when a tool is missing; under ``CI`` (which installs them) they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from typing import Any

import yaml
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest

from wings_twisted.devpanel.faults import Respond
from wings_twisted.devpanel.resource import listen
from wings_twisted.devpanel.state import DevPanelState

from ..support import SERVER, TOKEN, TOKEN_ID, USER
from .test_daemon import DaemonTestCase

SUBUSER = "5c4b3a29-1807-4f6e-9d5c-4b3a29180706"
LISTENING = re.compile(r"SFTP server listening on 127\.0\.0\.1:(\d+)")
SHORT = SERVER[:8]
SSH_OPTIONS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "LogLevel=ERROR"]


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        message = "missing {} (apt-get install openssh-client sshpass)".format(", ".join(missing))
        if os.environ.get("CI"):
            raise AssertionError(message + " (required under CI)")
        raise SkipTest(message)


class SftpTestCase(DaemonTestCase):
    """
    A daemon with SFTP on a free port, a panel with an owner (password and key) and a subuser.
    """

    system: dict[str, Any] = {}

    def setUp(self) -> None:
        _need("sftp", "ssh", "sshpass", "ssh-keygen")
        self.keys = tempfile.mkdtemp(prefix="wings-sftp-keys-")
        self.addCleanup(shutil.rmtree, self.keys, True)
        self.key = os.path.join(self.keys, "id_ed25519")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", self.key],
                       check=True)

    async def start_panel(self, *servers: str) -> None:
        with open(self.key + ".pub") as f:
            public = f.read().strip()
        self.state = DevPanelState.from_dict({
            "node": {"token_id": TOKEN_ID, "token": TOKEN, "daemon_url": "http://127.0.0.1:8080"},
            "servers": [{"uuid": s, "disk_space": 0, "file_denylist": ["*.secret"]}
                        for s in servers],
            "users": [{"uuid": USER, "id": 7, "username": "tester", "password": "pw-owner",
                       "public_keys": [public], "permissions": {s: ["*"] for s in servers}},
                      {"uuid": SUBUSER, "id": 8, "username": "a.b.c", "password": "pw-sub",
                       "permissions": {s: ["file.read", "file.read-content", "file.create",
                                           "file.update", "file.sftp"] for s in servers}}],
        })
        self.panel = await listen(self.state, reactor)
        self.addCleanup(self.panel.stop)

    def write_config(self, **api: Any) -> str:
        path = super().write_config(**api)
        with open(path) as f:
            config = yaml.safe_load(f)
        config["system"].update({"activity_send_interval": 1, **self.system})
        with open(path, "w") as f:
            yaml.safe_dump(config, f)
        return path

    async def start_sftp(self) -> None:
        await self.start(SERVER)
        for _ in range(400):
            match = LISTENING.search(self.daemon.output)
            if match:
                self.port = int(match.group(1))
                return
            await deferLater(reactor, 0.05, lambda: None)
        self.fail("no SFTP listener:\n" + self.daemon.output)

    def sftp(self, commands: str, *, user: str = "tester." + SHORT, password: str | None = None,
             key: bool = False) -> subprocess.CompletedProcess:
        """
        Run ``sftp`` with ``commands`` on its standard input (not ``-b``: batch mode forbids
        passwords).
        """
        argv = ["sftp", *SSH_OPTIONS, "-P", str(self.port)]
        if key:
            argv += ["-i", self.key, "-o", "PasswordAuthentication=no"]
        else:
            argv += ["-o", "PubkeyAuthentication=no"]
        argv.append("{}@127.0.0.1".format(user))
        if password is not None:
            argv = ["sshpass", "-p", password] + argv
        return subprocess.run(argv, input=commands.encode(), capture_output=True, timeout=60)

    def sftp_async(self, commands: str, **kwargs: Any) -> Deferred:
        return deferToThread(self.sftp, commands, **kwargs)

    def auth_calls(self) -> list[dict[str, Any]]:
        return [r.body for r in self.state.received if r.path == "/sftp/auth"]

    def file(self, name: str) -> str:
        return os.path.join(self.volume, name)

    def write(self, name: str, data: bytes = b"data") -> None:
        os.makedirs(os.path.dirname(self.file(name)), exist_ok=True)
        with open(self.file(name), "wb") as f:
            f.write(data)

    def assertNoTraceback(self) -> None:
        self.assertNotIn("Traceback", self.daemon.output)


class LoginTests(SftpTestCase):
    """
    §10 checks 1–4: logins.
    """

    async def test_key_login_asks_the_panel_once(self) -> None:
        """
        1. A key login with the default client configuration: one ``public_key`` panel call
        (with the exact body) for the query and the signed request together.
        """
        await self.start_sftp()
        result = await self.sftp_async("pwd\n", key=True)
        self.assertIn(b"Remote working directory: /", result.stdout, result.stderr)
        calls = self.auth_calls()
        self.assertEqual([c["type"] for c in calls], ["public_key"])
        with open(self.key + ".pub") as f:
            kind, blob = f.read().split()[:2]
        self.assertEqual(calls[0]["password"], "{} {}\n".format(kind, blob))
        self.assertEqual(calls[0]["username"], "tester." + SHORT)
        self.assertRegex(calls[0]["ip"], r"^127\.0\.0\.1:\d+$")
        self.assertEqual(set(calls[0]), {"type", "username", "password", "ip", "session_id",
                                         "client_version"})
        self.assertNoTraceback()

    async def test_password_and_refusals(self) -> None:
        """
        A password login works; a wrong password is refused by the panel; a username with a
        7-character server id never reaches the panel; ``a.b.c.<id>`` reaches it as is.
        """
        await self.start_sftp()
        ok = await self.sftp_async("pwd\n", password="pw-owner")
        self.assertEqual(ok.returncode, 0, ok.stderr)
        bad = await self.sftp_async("pwd\n", password="wrong")
        self.assertNotEqual(bad.returncode, 0)
        short = await self.sftp_async("pwd\n", user="admin.1234567", password="x")
        self.assertNotEqual(short.returncode, 0)
        self.assertNotIn("admin.1234567", [c["username"] for c in self.auth_calls()])
        sub = await self.sftp_async("pwd\n", user="a.b.c." + SHORT, password="pw-sub")
        self.assertEqual(sub.returncode, 0, sub.stderr)
        self.assertEqual(self.auth_calls()[-1]["username"], "a.b.c." + SHORT)
        self.assertNoTraceback()

    async def test_shell_exec_and_forwarding_refused(self) -> None:
        """
        3. ``ssh`` for a shell or a command and remote port forwarding are refused; ``sftp``
        works on the same credentials.
        """
        await self.start_sftp()
        base = ["ssh", *SSH_OPTIONS, "-i", self.key, "-p", str(self.port),
                "tester.{}@127.0.0.1".format(SHORT)]

        def run(*extra: str) -> subprocess.CompletedProcess:
            return subprocess.run(base[:-1] + list(extra) + base[-1:] + (["id"] if "-N" not in
                                  extra and "-s" not in extra else []),
                                  capture_output=True, timeout=60, stdin=subprocess.DEVNULL)

        self.assertNotEqual((await deferToThread(run)).returncode, 0)
        self.assertNotEqual((await deferToThread(run, "-T")).returncode, 0)
        forward = await deferToThread(run, "-N", "-o", "ExitOnForwardFailure=yes",
                                      "-R", "0:127.0.0.1:9")
        self.assertNotEqual(forward.returncode, 0)
        self.assertEqual((await self.sftp_async("pwd\n", key=True)).returncode, 0)
        self.assertNoTraceback()


class OperationTests(SftpTestCase):
    """
    §10 checks 5, 7–12 and the advisory regressions, with OpenSSH's ``sftp``.
    """

    async def test_transfers_and_activity(self) -> None:
        """
        7. ``put`` of a new file records ``server:sftp.create``, overwriting
        ``server:sftp.write``; 50 deletes in a minute reach the panel as one record with 50
        files.  8. ``reput`` keeps the existing prefix.
        """
        await self.start_sftp()
        # The panel refuses activity while the client works, so that one flush run sees it all.
        self.state.faults.add("POST", "/activity", *[Respond(422)] * 1000)
        local = tempfile.mkdtemp(prefix="wings-sftp-local-")
        self.addCleanup(shutil.rmtree, local, True)
        with open(os.path.join(local, "a.bin"), "wb") as f:
            f.write(os.urandom(300_000))
        commands = "lcd {}\nput a.bin\nput a.bin\nget a.bin back.bin\n".format(local)
        commands += "".join("put a.bin f{}.bin\n".format(i) for i in range(50))
        commands += "".join("rm f{}.bin\n".format(i) for i in range(50))
        result = await self.sftp_async(commands, key=True)
        self.assertEqual(result.returncode, 0, result.stderr)
        with open(os.path.join(local, "a.bin"), "rb") as a, \
                open(os.path.join(local, "back.bin"), "rb") as b:
            self.assertEqual(a.read(), b.read())
        self.write("part.bin", open(os.path.join(local, "a.bin"), "rb").read()[:100_000])
        result = await self.sftp_async("lcd {}\nreput a.bin part.bin\n".format(local), key=True)
        self.assertEqual(result.returncode, 0, result.stderr)
        with open(os.path.join(local, "a.bin"), "rb") as a, open(self.file("part.bin"), "rb") as b:
            self.assertEqual(a.read(), b.read())
        self.state.faults.clear()
        for _ in range(200):
            events = [(a["event"], len(a["metadata"]["files"])) for a in self.state.activity]
            writes = sum(n for event, n in events if event == "server:sftp.write")
            deleted = sum(n for event, n in events if event == "server:sftp.delete")
            if deleted == 50 and writes == 2:
                break
            await deferLater(reactor, 0.05, lambda: None)
        # One record per minute: 50 files unless the run straddled a minute boundary.
        deletes = [a for a in self.state.activity if a["event"] == "server:sftp.delete"]
        self.assertEqual(sum(len(a["metadata"]["files"]) for a in deletes), 50)
        self.assertEqual(len(deletes), len({a["timestamp"][:16] for a in deletes}))
        creates = [a for a in self.state.activity if a["event"] == "server:sftp.create"]
        self.assertEqual(sum(len(a["metadata"]["files"]) for a in creates), 51)
        # put over a.bin, and reput (both opens of existing files), maybe a minute apart.
        self.assertEqual(writes, 2)
        self.assertEqual({a["user"] for a in self.state.activity}, {USER})
        self.assertNoTraceback()

    async def test_subuser_cannot_delete(self) -> None:
        """
        5. A subuser without ``file.delete`` gets "Permission denied" on ``rm``; the file stays.
        """
        await self.start_sftp()
        self.write("keep.txt")
        result = await self.sftp_async("rm keep.txt\n", user="a.b.c." + SHORT, password="pw-sub")
        self.assertIn(b"Permission denied", result.stderr)
        self.assertTrue(os.path.exists(self.file("keep.txt")))

    async def test_paths_links_and_fifo(self) -> None:
        """
        9. ``cd ../../..`` stays at ``/``; a relative link inside the volume is traversed, an
        absolute one is not.  11. ``ln -s target link`` makes ``link`` point to ``target``.
        12. ``ls -l`` of a FIFO answers at once.
        """
        await self.start_sftp()
        self.write("dir/inner.txt")
        os.symlink("dir", self.file("rel"))
        os.symlink(self.file("dir"), self.file("abs"))
        os.mkfifo(self.file("fifo"))
        result = await self.sftp_async("cd ../../..\npwd\ncd /rel\nls\n", key=True)
        self.assertIn(b"Remote working directory: /\n", result.stdout)
        self.assertIn(b"inner.txt", result.stdout)
        result = await self.sftp_async("cd /abs\n", key=True)
        self.assertIn(b"No such file", result.stderr)
        started = time.monotonic()
        result = await self.sftp_async("ln -s target link\nls -l fifo\n", key=True)
        self.assertLess(time.monotonic() - started, 20)
        self.assertIn(b"fifo", result.stdout)
        self.assertEqual(os.readlink(self.file("link")), "target")

    async def test_setstat_times_only(self) -> None:
        """
        10. A ``SETSTAT`` with only times (paramiko's ``utime``) on a 0600 file changes the
        times and keeps the mode.
        """
        try:
            import paramiko
        except ImportError:
            if os.environ.get("CI"):
                raise
            raise SkipTest("paramiko is not installed")
        await self.start_sftp()
        self.write("t.txt")
        os.chmod(self.file("t.txt"), 0o600)

        def utime() -> None:
            transport = paramiko.Transport(("127.0.0.1", self.port))
            try:
                transport.connect(username="tester." + SHORT, password="pw-owner")
                client = paramiko.SFTPClient.from_transport(transport)
                client.utime("/t.txt", (1000, 2000))
                client.close()
            finally:
                transport.close()

        await deferToThread(utime)
        st = os.stat(self.file("t.txt"))
        self.assertEqual((stat.S_IMODE(st.st_mode), st.st_mtime), (0o600, 2000))

    async def test_advisories(self) -> None:
        """
        Write, read, rename and delete through a link out of the volume, ``..`` and absolute
        paths: nothing outside the volume is touched.
        """
        await self.start_sftp()
        outside = os.path.join(self.base, "outside")
        os.mkdir(outside)
        with open(os.path.join(outside, "secret"), "wb") as f:
            f.write(b"secret")
        os.symlink(outside, self.file("out"))
        os.symlink(os.path.join(outside, "secret"), self.file("secret-link"))
        local = tempfile.mkdtemp(prefix="wings-sftp-local-")
        self.addCleanup(shutil.rmtree, local, True)
        with open(os.path.join(local, "evil"), "wb") as f:
            f.write(b"evil")
        commands = ("lcd {}\nput evil out/secret\nput evil secret-link\nget out/secret got\n"
                    "get secret-link got\nrename out/secret stolen\nrm out/secret\n"
                    "put evil ../../outside/secret\nput evil {}/secret\n").format(local, outside)
        result = await self.sftp_async(commands, key=True)
        with open(os.path.join(outside, "secret"), "rb") as f:
            self.assertEqual(f.read(), b"secret")
        self.assertEqual(os.listdir(outside), ["secret"])
        self.assertFalse(os.path.exists(os.path.join(local, "got")))
        self.assertTrue(os.path.isfile(self.file("outside/secret")))
        self.assertNotIn(b"Connection closed", result.stderr)
        self.assertNoTraceback()


class ModeTests(SftpTestCase):
    """
    §10 check 6: read-only mode.
    """

    system = {"sftp": {"bind_address": "127.0.0.1", "bind_port": 0, "read_only": True}}

    async def test_read_only(self) -> None:
        """
        6. With ``read_only``, ``put`` fails with "Operation unsupported" and ``get`` works.
        """
        await self.start_sftp()
        self.write("r.txt", b"readable")
        local = tempfile.mkdtemp(prefix="wings-sftp-local-")
        self.addCleanup(shutil.rmtree, local, True)
        result = await self.sftp_async("lcd {}\nget r.txt\nput r.txt w.txt\n".format(local),
                                       key=True)
        self.assertIn(b"unsupported", result.stderr.lower())
        with open(os.path.join(local, "r.txt"), "rb") as f:
            self.assertEqual(f.read(), b"readable")
        self.assertFalse(os.path.exists(self.file("w.txt")))


class SessionEndTests(SftpTestCase):
    """
    §10 check 13 and deauthorisation: open sessions are closed.
    """

    async def _open_session(self) -> subprocess.Popen:
        argv = ["sftp", *SSH_OPTIONS, "-i", self.key, "-P", str(self.port),
                "tester.{}@127.0.0.1".format(SHORT)]
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        self.addCleanup(lambda: process.poll() is None and process.kill())
        assert process.stdin is not None
        process.stdin.write(b"pwd\n")
        process.stdin.flush()
        for _ in range(400):
            if self.server_sessions():
                break
            await deferLater(reactor, 0.05, lambda: None)
        return process

    def server_sessions(self) -> bool:
        return "SFTP login of " + USER in self.daemon.output

    async def _ended(self, process: subprocess.Popen, reason: bytes) -> None:
        # The ssh child reports the server's disconnect; sftp itself leaves when its input ends.
        for _ in range(400):
            if "Disconnecting with error, code 11" in self.daemon.output:
                break
            await deferLater(reactor, 0.05, lambda: None)
        _, stderr = await deferToThread(process.communicate, b"", 30)
        self.assertIn(b"Received disconnect from 127.0.0.1", stderr)
        self.assertIn(reason, stderr)

    async def test_suspension_closes_sessions(self) -> None:
        """
        13. Suspending the server (panel sync) closes its open SFTP sessions.
        """
        await self.start_sftp()
        process = await self._open_session()
        self.state.servers[SERVER].settings["suspended"] = True
        response, _ = await self.call("POST", "/api/servers/{}/sync".format(SERVER),
                                      headers={"Authorization": "Bearer " + TOKEN})
        self.assertEqual(response.code, 204)
        await self._ended(process, b"server suspended")

    async def test_deauthorize_closes_sessions(self) -> None:
        """
        ``POST /api/deauthorize-user`` closes the user's SFTP sessions.
        """
        await self.start_sftp()
        process = await self._open_session()
        response, _ = await self.call("POST", "/api/deauthorize-user",
                                      headers={"Authorization": "Bearer " + TOKEN},
                                      data=json.dumps({"user": USER}).encode())
        self.assertEqual(response.code, 204)
        await self._ended(process, b"user deauthorized")
