"""
SFTP logins decided by the panel (``sftp.auth``), the host key (``sftp.hostkey``) and the
merging of SFTP activity records (``activity.merge_sftp``).
"""

from __future__ import annotations

import os
import stat
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.error import ValidPublicKey
from twisted.conch.ssh.keys import Key
from twisted.cred.error import UnauthorizedLogin
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.activity import merge_sftp
from wings_twisted.devpanel.faults import Respond
from wings_twisted.sftp.auth import (ConnectionFacts, Login, PanelChecker, PanelKey,
                                     PanelPassword, split_username)
from wings_twisted.sftp.hostkey import HostKeyError, host_key_path, load_or_create

from ..support import SERVER, USER, Harness

NAME = ("tester." + SERVER[:8]).encode()


class CheckerTests(SynchronousTestCase):
    """
    `PanelChecker` against the development panel.
    """

    def setUp(self) -> None:
        self.h = Harness(FilePath(self.mktemp()), SERVER)
        self.h.add_server()
        self.key = Key(ed25519.Ed25519PrivateKey.generate())
        self.h.state.users["tester"].public_keys.append(
            self.key.public().toString("openssh").decode())
        self.key_only = False
        self.checker = PanelChecker(self.h.node.panel, key_only=lambda: self.key_only,
                                    registered=lambda uuid: uuid in self.h.node.registry)
        self.facts = ConnectionFacts("198.51.100.7", 53122, b"session", b"SSH-2.0-OpenSSH_9.2")

    def attempt(self, credentials: Any) -> Any:
        results: list[Any] = []
        self.checker.requestAvatarId(credentials).addBoth(results.append)
        for _ in range(100):
            self.h.panel_http.flush()
            if results:
                break
            self.h.clock.advance(1)
        return results[0]

    def calls(self) -> list[dict[str, Any]]:
        return [r.body for r in self.h.state.received if r.path == "/sftp/auth"]

    def test_key_query_then_signature_asks_once(self) -> None:
        """
        The query is answered ``ValidPublicKey`` from the panel; the signed request is then
        decided from the remembered answer: one ``public_key`` call with the key line.
        """
        blob = self.key.public().blob()
        query = self.attempt(PanelKey(NAME, b"ssh-ed25519", blob, None, None, self.facts))
        self.assertIsInstance(query, Failure)
        query.trap(ValidPublicKey)
        data = b"signed data"
        login = self.attempt(PanelKey(NAME, b"ssh-ed25519", blob, data, self.key.sign(data),
                                      self.facts))
        self.assertEqual(login, Login(USER, SERVER, frozenset({"*"}), "198.51.100.7"))
        calls = self.calls()
        self.assertEqual(len(calls), 1)
        self.assertEqual(calls[0]["type"], "public_key")
        self.assertEqual(calls[0]["password"],
                         self.key.public().toString("openssh").decode() + "\n")
        self.assertEqual(calls[0]["ip"], "198.51.100.7:53122")
        self.assertEqual(calls[0]["client_version"], "U1NILTIuMC1PcGVuU1NIXzkuMg==")

    def test_bad_signature_never_asks(self) -> None:
        """
        A signature that does not verify is refused without a panel call.
        """
        other = Key(ed25519.Ed25519PrivateKey.generate())
        result = self.attempt(PanelKey(NAME, b"ssh-ed25519", self.key.public().blob(), b"data",
                                       other.sign(b"data"), self.facts))
        result.trap(UnauthorizedLogin)
        self.assertEqual(self.calls(), [])

    def test_username_format(self) -> None:
        """
        ``admin.1234567`` is refused without a panel call; ``a.b.c.<8>`` splits at the last dot.
        """
        self.attempt(PanelPassword(b"admin.1234567", b"x", self.facts)).trap(UnauthorizedLogin)
        self.assertEqual(self.calls(), [])
        self.assertEqual(split_username(b"a.b.c.0c5b4ae6"), ("a.b.c", "0c5b4ae6"))
        self.assertEqual(split_username(b"A.0C5B4AE6"), ("A", "0C5B4AE6"))
        for bad in (b"admin.1234567", b"nodot12345678", b"x.0c5b4ae6\n", b".0c5b4ae6",
                    b"\xff.0c5b4ae6"):
            self.assertIsNone(split_username(bad), bad)

    def test_passwords(self) -> None:
        """
        The right password logs in, a wrong one is refused, and with ``key_only`` passwords
        are refused without a panel call.
        """
        self.assertIsInstance(self.attempt(PanelPassword(NAME, b"x", self.facts)), Login)
        self.attempt(PanelPassword(NAME, b"wrong", self.facts)).trap(UnauthorizedLogin)
        self.key_only = True
        before = len(self.calls())
        self.attempt(PanelPassword(NAME, b"x", self.facts)).trap(UnauthorizedLogin)
        self.assertEqual(len(self.calls()), before)

    def test_server_not_on_this_node(self) -> None:
        """
        A panel success for a server that is not registered here is refused.
        """
        self.h.node.registry.remove(SERVER)
        self.attempt(PanelPassword(NAME, b"x", self.facts)).trap(UnauthorizedLogin)

    def test_panel_down_is_a_refusal(self) -> None:
        """
        A panel answering 500 is retried within the 30-second budget, then the attempt is
        refused; the answer is not remembered, so a later attempt asks again.
        """
        self.h.state.faults.add("POST", "/sftp/auth", *[Respond(500)] * 50)
        blob = self.key.public().blob()
        started = self.h.clock.seconds()
        self.attempt(PanelKey(NAME, b"ssh-ed25519", blob, None, None, self.facts)).trap(
            UnauthorizedLogin)
        self.assertLessEqual(self.h.clock.seconds() - started, 31)
        self.assertGreater(len(self.calls()), 1)
        self.h.state.faults.clear()
        self.attempt(PanelKey(NAME, b"ssh-ed25519", blob, None, None, self.facts)).trap(
            ValidPublicKey)


class HostKeyTests(SynchronousTestCase):
    """
    ``<system.data>/.sftp/id_ed25519``.
    """

    def test_generated_as_upstream(self) -> None:
        """
        A missing key is generated as unencrypted PKCS#8 PEM, mode 0600, in a 0755 directory.
        """
        data = self.mktemp()
        key, created = load_or_create(data)
        path = host_key_path(data)
        self.assertTrue(created)
        with open(path, "rb") as f:
            self.assertTrue(f.read().startswith(b"-----BEGIN PRIVATE KEY-----"))
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode), 0o755)
        self.assertEqual(key.sshType(), b"ssh-ed25519")

    def test_existing_key_reused_unchanged(self) -> None:
        """
        An existing key (as upstream wrote it) is used and its file left byte for byte.
        """
        data = self.mktemp()
        os.makedirs(os.path.dirname(host_key_path(data)))
        pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        with open(host_key_path(data), "wb") as f:
            f.write(pem)
        key, created = load_or_create(data)
        self.assertFalse(created)
        with open(host_key_path(data), "rb") as f:
            self.assertEqual(f.read(), pem)
        again, _ = load_or_create(data)
        self.assertEqual(key.fingerprint(), again.fingerprint())

    def test_unusable_key(self) -> None:
        """
        A file that is not an unencrypted Ed25519 PEM key is an error (fatal at start-up).
        """
        data = self.mktemp()
        os.makedirs(os.path.dirname(host_key_path(data)))
        with open(host_key_path(data), "wb") as f:
            f.write(b"garbage")
        self.assertRaises(HostKeyError, load_or_create, data)


class MergeTests(SynchronousTestCase):
    """
    ``merge_sftp`` (panel.md §6.2).
    """

    def rows(self, count: int, event: str = "server:sftp.delete",
             minute: str = "2026-01-02T15:04") -> list[dict[str, Any]]:
        return [{"id": i, "user": USER, "server": SERVER, "event": event, "ip": "198.51.100.7",
                 "metadata": {"files": ["/f{}".format(i)]},
                 "timestamp": "{}:{:02d}.5Z".format(minute, i % 60)} for i in range(count)]

    def test_fifty_deletes_one_record(self) -> None:
        """
        50 deletes of one minute are one record with the 50 files and the earliest timestamp.
        """
        merged, ids = merge_sftp(self.rows(50), 100)
        self.assertEqual(len(merged), 1)
        self.assertEqual(merged[0]["metadata"]["files"], ["/f{}".format(i) for i in range(50)])
        self.assertEqual(merged[0]["timestamp"], "2026-01-02T15:04:00.5Z")
        self.assertEqual(ids, list(range(50)))

    def test_groups_and_limit(self) -> None:
        """
        Another minute or event is another record; past the limit, rows wait for the next run.
        """
        rows = self.rows(2) + [dict(r, id=r["id"] + 10) for r in
                               self.rows(2, minute="2026-01-02T15:05")]
        rows += [dict(r, id=r["id"] + 20) for r in self.rows(1, event="server:sftp.create")]
        merged, ids = merge_sftp(rows, 2)
        self.assertEqual(len(merged), 2)
        self.assertEqual(ids, [0, 1, 10, 11])
