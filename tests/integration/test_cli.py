"""
Integration tests of the ``wings`` command as an operator runs it: the
daemon in the foreground with its log file, ``configure`` against the
development panel over HTTP, ``--version``, and the one-line start-up
errors of real processes (exact text, no traceback).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

import treq
import yaml
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest

from wings_twisted import __version__
from wings_twisted.devpanel.application import DEFAULT_API_KEY
from wings_twisted.devpanel.faults import Respond

from ..support import REPO, TOKEN, TOKEN_ID
from .test_daemon import TWISTD, DaemonTestCase, _Daemon, _timeout

WINGS = [sys.executable, "-m", "wings_twisted.cli"]
ENV = dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1")


def _read(path: str) -> Any:
    with open(path) as f:
        return yaml.safe_load(f)


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """
    Run a command from the checkout to completion (60 s at most).
    """
    return subprocess.run(argv, capture_output=True, timeout=60, env=ENV, **kwargs)


class WingsTestCase(DaemonTestCase):
    """
    A development panel in this process and a fresh directory per test.
    """

    wait_timeout = 20.0

    async def prepare(self) -> None:
        self.base = tempfile.mkdtemp(prefix="wings-it-")
        self.addCleanup(shutil.rmtree, self.base, True)
        await self.start_panel()

    def spawn_wings(self, config: str, *flags: str) -> _Daemon:
        """
        Start ``wings --config <config> <flags>`` (stopped at clean-up).
        """
        daemon = _Daemon()
        process = reactor.spawnProcess(daemon, sys.executable,
                                       WINGS + ["--config", config, *flags], env=ENV,
                                       path=self.base)

        def stop() -> Any:
            if daemon.exited.called:
                return None
            process.signalProcess("TERM")
            return _timeout(daemon.exited, 15)
        self.addCleanup(stop)
        self.process = process
        return daemon


    def log_text(self, name: str = "wings.log") -> str:
        path = os.path.join(self.base, "log_directory", name)
        if not os.path.exists(path):
            return ""
        with open(path, encoding="utf-8") as f:
            return f.read()


class DaemonCommandTests(WingsTestCase):
    """
    ``wings`` runs the daemon as ``twistd -n wings`` does.
    """

    async def test_log_file_and_rotation(self) -> None:
        """
        The console and ``wings.log`` carry the same lines, without factory
        noise; after logrotate moved the file, SIGHUP starts a new one; SIGTERM
        stops the daemon with status 0.
        """
        await self.prepare()
        daemon = self.spawn_wings(self.write_config())
        await _timeout(daemon.listening)
        await self.wait_for(lambda: self.state.reset_count, "the boot to finish")
        await self.wait_for(lambda: "Loaded 0 servers" in self.log_text(), "wings.log")
        text = self.log_text()
        self.assertIn("wings-twisted {}: writing logs to {}".format(
            __version__, os.path.join(self.base, "log_directory", "wings.log")), text)
        self.assertEqual(text.count("writing logs to"), 1)
        self.assertEqual(text.count("ApiSite starting on"), 1)
        self.assertNotIn("Starting factory", daemon.output + text)
        self.assertTrue(os.path.isdir(os.path.join(self.base, "log_directory", "install")))
        os.rename(os.path.join(self.base, "log_directory", "wings.log"),
                  os.path.join(self.base, "log_directory", "wings.log.1"))
        self.process.signalProcess("HUP")
        await self.wait_for(lambda: "Reopened" in self.log_text(), "a new wings.log")
        self.assertNotIn("Reopened", self.log_text("wings.log.1"))
        self.process.signalProcess("TERM")
        self.assertEqual(await _timeout(daemon.exited), 0)

    async def test_access_log_only_in_debug(self) -> None:
        """
        Requests are logged with ``--debug`` and not without it.
        """
        await self.prepare()
        for flags, expected in (((), False), (("--debug",), True)):
            daemon = self.spawn_wings(self.write_config(), *flags)
            port = await _timeout(daemon.listening)
            response = await treq.get("http://127.0.0.1:{}/api/system".format(port),
                                      headers={"Authorization": "Bearer " + TOKEN},
                                      reactor=reactor, persistent=False)
            await response.content()
            await self.wait_for(lambda: self.state.reset_count, "the boot to finish")
            self.process.signalProcess("TERM")
            await _timeout(daemon.exited)
            self.assertEqual('"GET /api/system HTTP/1.1" 200' in self.log_text(), expected,
                             flags)
            os.remove(os.path.join(self.base, "log_directory", "wings.log"))

    def test_version(self) -> None:
        """
        ``wings --version`` and ``twistd wings --version`` print our
        version; so does the installed console script, when installed.
        """
        line = "wings-twisted {}\n".format(__version__).encode()
        self.assertEqual(run(WINGS + ["--version"]).stdout, line)
        self.assertEqual(run(TWISTD + ["wings", "--version"]).stdout, line)
        script = os.path.join(os.path.dirname(sys.executable), "wings")
        if not os.path.exists(script):
            if os.environ.get("CI"):
                self.fail("the wings console script is not installed beside " + sys.executable)
            raise SkipTest("wings-twisted is not installed here; `make test` installs it")
        self.assertEqual(run([script, "--version"]).stdout, line)


class StartupLineTests(WingsTestCase):
    """
    What stops start-up is told in one line, without a traceback.
    """

    def assert_one_line(self, result: subprocess.CompletedProcess, line: str) -> None:
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertEqual(result.stderr.decode(), line + "\n")
        self.assertNotIn(b"Traceback", result.stdout + result.stderr)

    def write(self, data: dict[str, Any]) -> str:
        path = os.path.join(self.base, "config.yml")
        with open(path, "w") as f:
            yaml.safe_dump(data, f)
        return path

    async def test_config_mistakes(self) -> None:
        """
        A missing ``remote`` and a missing certificate, through ``wings``
        and ``twistd -n wings`` alike.
        """
        await self.prepare()
        config = _read(self.write_config())
        del config["remote"]
        path = self.write(config)
        line = "wings: {}: remote: must be the Panel's URL (http:// or https://), got ''".format(
            path)
        self.assert_one_line(await deferToThread(run, WINGS + ["--config", path]), line)
        self.assert_one_line(await deferToThread(
            run, TWISTD + ["--pidfile=", "-n", "wings", "--config", path]), line)
        config["remote"] = self.panel.url
        cert = os.path.join(self.base, "missing.pem")
        config["api"]["ssl"] = {"enabled": True, "cert": cert, "key": cert}
        path = self.write(config)
        self.assert_one_line(
            await deferToThread(run, WINGS + ["--config", path]),
            "wings: {}: api.ssl.cert: cannot read {}: No such file or directory".format(
                path, cert))

    async def test_panel_refusal(self) -> None:
        """
        A Panel that refuses the node ends the daemon with status 1 and one
        critical line naming the URL and the status; no traceback.
        """
        await self.prepare()
        self.state.faults.add("GET", "/servers", Respond(403))
        daemon = self.spawn_wings(self.write_config())
        self.assertEqual(await _timeout(daemon.exited), 1)
        critical = [line for line in daemon.output.splitlines() if "#critical]" in line]
        self.assertEqual(
            [line.split(" ", 1)[1] for line in critical],
            ["[wings_twisted.service#critical] failed to load server configurations from "
             "{}/api/remote/servers: Error response from Panel: AccessDeniedHttpException: "
             "Injected fault (403). (HTTP/403)".format(self.panel.url)])
        self.assertNotIn("Traceback", daemon.output)
        self.assertIn(critical[0], self.log_text())

    def test_twistd_without_nodaemon(self) -> None:
        """
        ``twistd wings`` (forking) is refused before anything is written.
        """
        where = tempfile.mkdtemp(prefix="wings-it-")
        self.addCleanup(shutil.rmtree, where, True)
        result = run(TWISTD + ["--pidfile=", "wings", "--config", "/nonexistent.yml"], cwd=where)
        self.assert_one_line(result, "wings: runs in the foreground: use `wings` or `twistd -n "
                                     "wings` (systemd keeps it running)")
        self.assertEqual(os.listdir(where), [])


class ConfigureCommandTests(WingsTestCase):
    """
    ``wings configure`` against the development panel over HTTP.
    """

    def configure(self, *extra: str, key: str = DEFAULT_API_KEY) -> Any:
        return deferToThread(run, WINGS + [
            "configure", "--panel-url", self.panel.url, "--token", key, "--node", "1",
            "--config-path", os.path.join(self.base, "etc", "config.yml"), *extra])

    async def test_configure_then_boot(self) -> None:
        """
        The Panel's Auto-Deploy command writes a file the daemon boots with;
        a second run refuses to overwrite it, ``--override`` replaces it.
        """
        await self.prepare()
        result = await self.configure()
        path = os.path.join(self.base, "etc", "config.yml")
        self.assertEqual((result.returncode, result.stdout.decode()),
                         (0, "Successfully configured wings.\nConfiguration written to {}.\n"
                          .format(path)))
        with open(path) as f:
            written = yaml.safe_load(f)
        self.assertEqual((written["token_id"], written["token"], written["remote"]),
                         (TOKEN_ID, TOKEN, self.panel.url))
        again = await self.configure()
        self.assertEqual((again.returncode, again.stderr.decode()),
                         (1, "wings: Aborting process; a configuration file already exists for "
                             "this node ({}). Pass --override to replace it.\n".format(path)))
        self.assertEqual((await self.configure("--override")).returncode, 0)
        # The written file boots once its address and paths are this test's.
        written["api"].update(host="127.0.0.1", port=0)
        written["system"].update(_read(self.write_config())["system"])
        with open(path, "w") as f:
            yaml.safe_dump(written, f)
        daemon = self.spawn_wings(path)
        await _timeout(daemon.listening)
        await self.wait_for(lambda: self.state.reset_count, "the boot to finish")

    async def test_bad_token(self) -> None:
        """
        A key the Panel does not know is told in upstream's words; nothing
        is written.
        """
        await self.prepare()
        result = await self.configure(key="ptla_wrong")
        self.assertEqual((result.returncode, result.stderr.decode()),
                         (1, "wings: The authentication credentials provided were not valid.\n"))
        self.assertFalse(os.path.exists(os.path.join(self.base, "etc")))
