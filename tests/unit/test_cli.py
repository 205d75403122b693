"""
Tests for the ``wings`` command (``wings_twisted.cli``): the parser and its
dispatch, ``configure`` against the development panel in memory, and
``diagnostics``.  The daemon itself (``wings`` without a verb) runs in
``tests/integration/test_cli.py``.
"""

from __future__ import annotations

import argparse
import io
import os
import stat
import urllib.error
import urllib.request
from typing import Any

import yaml
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted import __version__
from wings_twisted.cli.configure import configuration_url, configure, fetch
from wings_twisted.cli.daemon import tap_arguments
from wings_twisted.cli.diagnostics import REDACTED, diagnostics, docker_summary
from wings_twisted.cli.main import build_parser, main
from wings_twisted.cli import CommandError
from wings_twisted.devpanel.application import DEFAULT_API_KEY, ApplicationKey
from wings_twisted.devpanel.resource import build_resource

from ..support import TOKEN, TOKEN_ID, panel_state


class _Answer(io.BytesIO):
    """
    What ``urlopen`` returns, as far as ``fetch`` reads it.
    """

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(body)
        self.status = status


class PanelOpener:
    """
    A ``urlopen`` that sends the request to the development panel in
    memory (``StubTreq``), raising ``HTTPError`` for 4xx/5xx like urllib.
    """

    def __init__(self) -> None:
        self.state = panel_state()
        self.http = StubTreq(build_resource(self.state, Clock()))

    def _wait(self, d: Any) -> Any:
        results: list[Any] = []
        d.addBoth(results.append)
        self.http.flush()
        return results[0]

    def __call__(self, request: urllib.request.Request, timeout: float, context: Any) -> Any:
        response = self._wait(self.http.request(
            request.get_method(), request.full_url,
            headers={name: [value] for name, value in request.header_items()}))
        body = self._wait(response.content())
        if response.code >= 400:
            raise urllib.error.HTTPError(request.full_url, response.code, "error",
                                         None, io.BytesIO(body))  # type: ignore[arg-type]
        return _Answer(response.code, body)


def _args(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


class MainTests(SynchronousTestCase):
    """
    ``wings`` argument handling.
    """

    def run_main(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = main(list(argv), stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    def test_version(self) -> None:
        """
        ``--version`` and ``version`` print ``wings-twisted <version>`` and
        exit 0.
        """
        for argv in (["--version"], ["version"]):
            self.assertEqual(self.run_main(*argv),
                             (0, "wings-twisted {}\n".format(__version__), ""))

    def test_usage_error_is_one_line(self) -> None:
        """
        An unknown flag is one ``wings:`` line on standard error, status 2.
        """
        self.assertEqual(self.run_main("--bogus"),
                         (2, "", "wings: unrecognized arguments: --bogus\n"))

    def test_configure_needs_its_flags(self) -> None:
        """
        ``configure`` without its three flags says which are missing.
        """
        self.assertEqual(
            self.run_main("configure"),
            (2, "", "wings: the following arguments are required: -p/--panel-url, "
                    "-t/--token, -n/--node\n"))

    def test_auto_tls_refused(self) -> None:
        """
        ``--auto-tls`` is refused in one line: certificates go in ``api.ssl``.
        """
        self.assertEqual(
            self.run_main("--auto-tls", "--tls-hostname", "node.example.com"),
            (1, "", "wings: --auto-tls is not supported: put the node's certificate and key "
                    "in api.ssl (for example from certbot)\n"))

    def test_daemon_flags_map_to_the_tap(self) -> None:
        """
        The daemon's flags become the ``twistd wings`` options; the Go
        profiler flags are accepted and dropped.
        """
        args = _args(["--config", "/c.yml", "--debug", "--ignore-certificate-errors",
                      "--listen", "tcp:0", "--pprof", "--pprof-port", "6060"])
        self.assertEqual(tap_arguments(args), ["--config", "/c.yml", "--debug",
                                               "--ignore-certificate-errors",
                                               "--listen", "tcp:0"])

    def test_configure_config_spellings(self) -> None:
        """
        ``-c``, ``--config-path`` and ``--config`` all name the file
        ``configure`` writes; the default is ``/etc/pterodactyl/config.yml``.
        """
        base = ["configure", "-p", "http://p", "-t", "k", "-n", "1"]
        for flag in ("-c", "--config-path", "--config"):
            self.assertEqual(_args(base + [flag, "/x.yml"]).config, "/x.yml")
        self.assertEqual(_args(base).config, "/etc/pterodactyl/config.yml")
        self.assertEqual(_args(["--config", "/y.yml"] + base).config, "/y.yml")


class ConfigureTests(SynchronousTestCase):
    """
    ``wings configure`` against the development panel's application API.
    """

    def setUp(self) -> None:
        self.opener = PanelOpener()
        self.state = self.opener.state
        self.path = FilePath(self.mktemp()).child("pterodactyl").child("config.yml")

    def configure(self, *extra: str, key: str = DEFAULT_API_KEY, node: str = "1") -> str:
        out = io.StringIO()
        args = _args(["configure", "-p", "http://panel.test", "-t", key, "-n", node,
                      "-c", self.path.path, *extra])
        self.assertEqual(configure(args, out, opener=self.opener), 0)
        return out.getvalue()

    def test_writes_the_generated_configuration(self) -> None:
        """
        The Panel's node configuration is written complete (defaults
        included), mode 0600, in a directory created for it; the request
        carries the key and the Panel's Accept header.
        """
        self.state.application.mounts = ["/srv/shared"]
        output = self.configure()
        self.assertEqual(output, "Successfully configured wings.\n"
                                 "Configuration written to {}.\n".format(self.path.path))
        written = yaml.safe_load(self.path.getContent())
        self.assertEqual((written["token_id"], written["token"], written["remote"]),
                         (TOKEN_ID, TOKEN, "http://panel.test"))
        self.assertEqual((written["api"]["host"], written["api"]["port"]), ("0.0.0.0", 8080))
        self.assertEqual(written["system"]["data"], "/var/lib/pterodactyl/volumes")
        self.assertEqual(written["system"]["log_directory"], "/var/log/pterodactyl")
        self.assertEqual(written["allowed_mounts"], [])
        self.assertEqual(stat.S_IMODE(os.stat(self.path.path).st_mode), 0o600)
        request = self.state.received[-1]
        self.assertEqual(request.path, "/api/application/nodes/1/configuration")
        self.assertEqual(request.headers["authorization"], "Bearer " + DEFAULT_API_KEY)
        self.assertEqual(request.headers["accept"], "application/vnd.pterodactyl.v1+json")

    def test_refuses_to_overwrite(self) -> None:
        """
        An existing file is left alone without ``--override``, and the Panel
        is not even asked; with it, the file is replaced.
        """
        self.path.parent().makedirs()
        self.path.setContent(b"token: mine\n")
        with self.assertRaises(CommandError) as caught:
            self.configure()
        self.assertEqual(str(caught.exception),
                         "Aborting process; a configuration file already exists for this node "
                         "({}). Pass --override to replace it.".format(self.path.path))
        self.assertEqual(self.path.getContent(), b"token: mine\n")
        self.assertEqual(self.state.received, [])
        self.configure("--override")
        self.assertEqual(yaml.safe_load(self.path.getContent())["token"], TOKEN)

    def test_bad_token(self) -> None:
        """
        An unknown key (401) and a key that may not read nodes (403) are
        both upstream's credentials message; nothing is written.
        """
        self.state.application.api_keys.append(ApplicationKey("ptla_readsNothing", False))
        for key in ("ptla_wrong", "ptla_readsNothing"):
            with self.assertRaises(CommandError) as caught:
                self.configure(key=key)
            self.assertEqual(str(caught.exception),
                             "The authentication credentials provided were not valid.")
        self.assertFalse(self.path.exists())

    def test_unknown_node(self) -> None:
        """
        Any other status names it and quotes the Panel's answer.
        """
        with self.assertRaises(CommandError) as caught:
            self.configure(node="7")
        self.assertEqual(
            str(caught.exception),
            'An error occurred while processing this request (HTTP 404): {"errors": '
            '[{"code": "NotFoundHttpException", "status": "404", "detail": "The requested '
            'resource could not be found on the server."}]}')

    def test_unreachable(self) -> None:
        """
        A transport failure names the URL and the reason.
        """
        def refuse(request: Any, timeout: float, context: Any) -> Any:
            raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))
        with self.assertRaises(CommandError) as caught:
            fetch("http://panel.test/api/application/nodes/1/configuration", "k", opener=refuse)
        self.assertEqual(str(caught.exception),
                         "Failed to fetch configuration from the panel at http://panel.test/api/"
                         "application/nodes/1/configuration: [Errno 111] Connection refused")

    def test_url(self) -> None:
        """
        The application API path goes below the Panel URL (a sub-path
        kept); a URL without scheme or a non-numeric node is refused.
        """
        self.assertEqual(configuration_url("https://example.com/panel/", "12"),
                         "https://example.com/panel/api/application/nodes/12/configuration")
        with self.assertRaises(CommandError) as caught:
            configuration_url("example.com", "1")
        self.assertEqual(str(caught.exception), "--panel-url must be the Panel's http:// or "
                                                "https:// URL, got 'example.com'")
        with self.assertRaises(CommandError) as caught:
            configuration_url("https://example.com", "one")
        self.assertEqual(str(caught.exception), "--node must be the node's numeric id, got 'one'")


class DiagnosticsTests(SynchronousTestCase):
    """
    ``wings diagnostics``.
    """

    SECRET_HEADER = "Basic c2VjcmV0LWhlYWRlcg=="
    REGISTRY_PASSWORD = "registry-password-value"

    def setUp(self) -> None:
        base = FilePath(self.mktemp())
        base.makedirs()
        self.logs = base.child("log")
        self.logs.makedirs()
        self.config = base.child("config.yml")
        self.config.setContent(yaml.safe_dump({
            "token_id": TOKEN_ID, "token": TOKEN, "remote": "https://panel.example.com",
            "api": {"host": "203.0.113.5", "ssl": {"cert": "/etc/ssl/node.pem"}},
            "system": {"log_directory": self.logs.path, "root_directory": base.child("r").path},
            "docker": {"registries": {"ghcr.io": {"username": "bob",
                                                   "password": self.REGISTRY_PASSWORD}}},
            "remote_query": {"custom_headers": {"X-Auth": self.SECRET_HEADER}},
            "environment": {"driver": "process"},
        }).encode())
        lines = ["line {}".format(i) for i in range(300)]
        lines.append("GET /download/file?token={} 200".format(TOKEN))
        self.logs.child("wings.log").setContent("\n".join(lines).encode() + b"\n")

    def report(self, *extra: str) -> str:
        out = io.StringIO()
        args = _args(["diagnostics", "--config", self.config.path, *extra])
        self.assertEqual(diagnostics(args, out, environ={}), 0)
        return out.getvalue()

    def test_secrets_absent(self) -> None:
        """
        The node token and its id, registry passwords and custom header
        values appear nowhere, not even in the log lines.
        """
        text = self.report("--include-endpoints")
        for secret in (TOKEN, TOKEN_ID, self.REGISTRY_PASSWORD, self.SECRET_HEADER):
            self.assertNotIn(secret, text)
        self.assertIn("GET /download/file?token={} 200".format(REDACTED), text)
        self.assertIn("token: '{}'".format(REDACTED), text)

    def test_endpoints_redacted_unless_asked(self) -> None:
        """
        The Panel URL, the listen address and certificate paths are
        redacted by default, as upstream, and kept with
        ``--include-endpoints``.
        """
        endpoints = ("https://panel.example.com", "203.0.113.5", "/etc/ssl/node.pem")
        text = self.report()
        for value in endpoints:
            self.assertNotIn(value, text)
        self.assertIn("      Panel Location: {redacted}", text)
        text = self.report("--include-endpoints")
        for value in endpoints:
            self.assertIn(value, text)

    def test_sections_and_logs(self) -> None:
        """
        Versions, environment and the last ``--log-lines`` lines of
        ``wings.log``; ``--no-logs`` leaves them out.
        """
        text = self.report("--log-lines", "5")
        self.assertIn("       wings-twisted: " + __version__, text)
        self.assertIn("              Driver: process", text)
        self.assertIn("line 299\nGET /download/file", text)
        self.assertNotIn("line 295", text)
        text = self.report("--no-logs")
        self.assertIn("Logs redacted.", text)
        self.assertNotIn("line 299", text)

    def test_unreadable_configuration(self) -> None:
        """
        A configuration that does not load is reported in one line and the
        rest of the report still comes.
        """
        self.config.setContent(b"api: [\n")
        text = self.report()
        self.assertIn("Failed to load configuration: {}: line 2, column 1: invalid YAML"
                      .format(self.config.path), text)
        self.assertIn("| Latest Wings Logs", text)

    def test_output_file(self) -> None:
        """
        ``--output`` writes the report with mode 0600 and says where.
        """
        target = FilePath(self.mktemp())
        out = self.report("--output", target.path)
        self.assertEqual(out, "Report written to {}.\n".format(target.path))
        self.assertEqual(stat.S_IMODE(os.stat(target.path).st_mode), 0o600)
        self.assertIn(b"| Versions", target.getContent())

    def test_unusable_docker_host(self) -> None:
        """
        A ``DOCKER_HOST`` this daemon cannot use is reported, not raised.
        """
        self.assertEqual(
            docker_summary({"DOCKER_HOST": "ssh://node"}),
            "unusable: DOCKER_HOST 'ssh://node': only unix:// and tcp:// engines are supported "
            "(TLS and ssh are not supported yet).")
