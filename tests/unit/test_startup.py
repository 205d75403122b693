"""
Start-up errors: each configuration mistake the daemon refuses before it
boots is one line naming the file and the key (``tap.load``,
``config.check_for_boot``), and ``twistd wings`` without ``-n`` is refused.
The same lines from a real process, without traceback, are checked in
``tests/integration/test_cli.py``.
"""

from __future__ import annotations

from typing import Any

import yaml
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted import tap

from ..support import TOKEN, TOKEN_ID


class StartupErrorTests(SynchronousTestCase):
    """
    ``tap.load`` raises ``SystemExit`` with one exact line.
    """

    def setUp(self) -> None:
        self.base = FilePath(self.mktemp())
        self.base.makedirs()
        self.path = self.base.child("config.yml").path

    def config(self, **overrides: Any) -> dict[str, Any]:
        data: dict[str, Any] = {
            "token_id": TOKEN_ID, "token": TOKEN, "remote": "https://panel.example.com",
            "system": {name: self.base.child(name).path for name in (
                "root_directory", "log_directory", "data", "archive_directory",
                "backup_directory", "tmp_directory")},
        }
        data["system"]["timezone"] = "UTC"
        data["system"]["user"] = {"rootless": {"enabled": True}}
        for key, value in overrides.items():
            if value is None:
                data.pop(key, None)
            elif isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key].update(value)
            else:
                data[key] = value
        return data

    def refused(self, data: dict[str, Any] | str) -> str:
        with open(self.path, "w") as f:
            f.write(data if isinstance(data, str) else yaml.safe_dump(data))
        with self.assertRaises(SystemExit) as caught:
            tap.load(self.path)
        message = str(caught.exception.code)
        self.assertNotIn("\n", message)
        return message

    def test_accepted(self) -> None:
        """
        A complete configuration loads, with its directories created.
        """
        with open(self.path, "w") as f:
            yaml.safe_dump(self.config(), f)
        config = tap.load(self.path)
        self.assertEqual(config.remote, "https://panel.example.com")
        self.assertTrue(self.base.child("data").isdir())

    def test_remote_missing(self) -> None:
        """
        No ``remote``: named, instead of retrying ``Unsupported scheme``.
        """
        self.assertEqual(self.refused(self.config(remote=None)),
                         "wings: {}: remote: must be the Panel's URL (http:// or https://), "
                         "got ''".format(self.path))

    def test_remote_without_scheme(self) -> None:
        """
        A scheme-less ``remote`` is refused with its value.
        """
        self.assertEqual(self.refused(self.config(remote="panel.example.com")),
                         "wings: {}: remote: must be the Panel's URL (http:// or https://), "
                         "got 'panel.example.com'".format(self.path))

    def test_token_id_missing(self) -> None:
        """
        An empty ``token_id`` is refused (the Panel would answer 400).
        """
        self.assertEqual(self.refused(self.config(token_id=None)),
                         "wings: {}: token_id: must not be empty: copy it from the Panel's node "
                         "configuration".format(self.path))

    def test_token_with_a_dot(self) -> None:
        """
        A ``.`` in the token would split the Panel's bearer value wrongly.
        """
        self.assertEqual(self.refused(self.config(token="abc.def")),
                         "wings: {}: token: must not contain '.' or spaces: the Panel reads "
                         "'Authorization: Bearer <token_id>.<token>'".format(self.path))

    def test_token_missing(self) -> None:
        """
        An empty token is refused by loading already (api.md §2.5).
        """
        self.assertEqual(self.refused(self.config(token=None)),
                         "wings: {}: token: must not be empty; the daemon refuses to start "
                         "without a node token".format(self.path))

    def test_tls_files(self) -> None:
        """
        With ``api.ssl.enabled``, a missing certificate or key names the key
        and the path; an empty one says a file is needed.
        """
        cert = self.base.child("cert.pem")
        self.assertEqual(
            self.refused(self.config(api={"ssl": {"enabled": True, "cert": cert.path,
                                                  "key": cert.path}})),
            "wings: {}: api.ssl.cert: cannot read {}: No such file or directory".format(
                self.path, cert.path))
        cert.setContent(b"")
        self.assertEqual(
            self.refused(self.config(api={"ssl": {"enabled": True, "cert": cert.path}})),
            "wings: {}: api.ssl.key: must name a PEM file when api.ssl.enabled is true".format(
                self.path))

    def test_tls_contents(self) -> None:
        """
        Files that are not a PEM certificate and its unencrypted key, or a
        key of another certificate, are refused by name (the TLS listener
        would fail with a traceback); a matching pair is accepted.
        """
        cert, key = self.base.child("cert.pem"), self.base.child("key.pem")
        other = self.base.child("other.pem")
        _pair(cert.path, key.path)
        _pair(self.base.child("unused.pem").path, other.path)
        garbage = self.base.child("garbage.pem")
        garbage.setContent(b"garbage\n")
        cases = [
            (garbage, key, "api.ssl.cert: {} holds no PEM certificate".format(garbage.path)),
            (cert, garbage, "api.ssl.key: {} holds no unencrypted PEM private key".format(
                garbage.path)),
            (cert, other, "api.ssl.key: {} is not the private key of {}".format(
                other.path, cert.path)),
        ]
        for cert_file, key_file, problem in cases:
            data = self.config(api={"ssl": {"enabled": True, "cert": cert_file.path,
                                            "key": key_file.path}})
            self.assertEqual(self.refused(data), "wings: {}: {}".format(self.path, problem))
        with open(self.path, "w") as f:
            yaml.safe_dump(self.config(api={"ssl": {"enabled": True, "cert": cert.path,
                                                    "key": key.path}}), f)
        self.assertTrue(tap.load(self.path).api.ssl.enabled)

    def test_port_and_type(self) -> None:
        """
        Out-of-range ports and wrong types name the key (loading).
        """
        self.assertEqual(self.refused(self.config(api={"port": 70000})),
                         "wings: {}: api.port: must be between 0 and 65535, got 70000".format(
                             self.path))
        self.assertEqual(self.refused(self.config(system={"sftp": {"bind_port": "x"}})),
                         "wings: {}: system.sftp.bind_port: expected an integer, got 'x'".format(
                             self.path))

    def test_query_settings(self) -> None:
        """
        A Panel call timeout below one second is refused.
        """
        self.assertEqual(self.refused(self.config(remote_query={"timeout": 0})),
                         "wings: {}: remote_query.timeout: must be at least 1, got 0".format(
                             self.path))

    def test_directory_cannot_be_created(self) -> None:
        """
        A directory that cannot be created names its key and path.
        """
        blocker = self.base.child("file")
        blocker.setContent(b"")
        data = self.config(system={"data": blocker.child("volumes").path})
        self.assertEqual(self.refused(data),
                         "wings: {}: system.data: cannot create {}: Not a directory".format(
                             self.path, blocker.child("volumes").path))

    def test_missing_file(self) -> None:
        """
        A missing configuration file is one line saying how to get one.
        """
        self.assertEqual(str(self.assertRaises(SystemExit, tap.load, self.path + ".nope").code),
                         "wings: {}.nope: no configuration file: run the Panel's Auto-Deploy "
                         "command (wings configure ...) or copy the node's configuration "
                         "there".format(self.path))


def _pair(cert_path: str, key_path: str) -> None:
    """
    Write a throwaway self-signed certificate and its key.
    """
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


class ForegroundTests(SynchronousTestCase):
    """
    ``twistd wings`` runs in the foreground only.
    """

    def test_daemonising_refused(self) -> None:
        """
        Under twistd without ``-n`` the tap refuses in one line before
        touching the configuration.
        """
        options = tap.Options()
        options.parseOptions(["--config", "/nonexistent.yml"])
        options.parent = {"nodaemon": False}
        with self.assertRaises(SystemExit) as caught:
            tap.makeService(options)
        self.assertEqual(caught.exception.code,
                         "wings: runs in the foreground: use `wings` or `twistd -n wings` "
                         "(systemd keeps it running)")
