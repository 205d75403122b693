"""
The development Panel's command line (``python -m wings_twisted.devpanel``)
and the example game (``wings_twisted.devpanel.examplegame``) run as bounded
subprocesses.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.devpanel import DevPanelState

from ..unit.test_devpanel import CONFIG, OTHER, ROOT, SERVER, _decode


def _run(args: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    """
    ``python -m <args>`` from the repository root, bounded to 60 seconds.
    """
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, **kw
    )


class CommandLineTests(SynchronousTestCase):
    """
    ``python -m wings_twisted.devpanel sign`` as a subprocess.
    """

    def test_sign_download_file(self) -> None:
        """
        ``sign download-file`` prints one URL whose token carries the path,
        the server and the owner, signed with the file's node token.
        """
        before = int(time.time())
        result = _run(["wings_twisted.devpanel", "sign", "download-file", "--server", SERVER, "--path", "/x"])
        self.assertEqual(result.returncode, 0, result.stderr)
        [line] = result.stdout.splitlines()
        state = DevPanelState.from_yaml(CONFIG)
        prefix = state.node.daemon_url + "/download/file?token="
        self.assertTrue(line.startswith(prefix), line)
        _, claims, _ = _decode(line[len(prefix):], state.node.token)
        self.assertEqual((claims["file_path"], claims["server_uuid"]), ("/x", SERVER))
        self.assertEqual(claims["user_uuid"], state.users["admin"].uuid)
        self.assertEqual(claims["exp"] - claims["iat"], 900)
        self.assertGreaterEqual(claims["iat"], before)

    def test_sign_upload_with_directory(self) -> None:
        """
        ``sign upload --directory`` appends the url-encoded directory.
        """
        result = _run(["wings_twisted.devpanel", "sign", "upload", "--server", SERVER, "--directory", "/a b"])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(result.stdout.strip().endswith("&directory=%2Fa%20b"))

    def test_bad_input(self) -> None:
        """
        Unknown servers, missing options and missing files exit 2 with one
        line on stderr.
        """
        cases = [
            ["sign", "download-file", "--server", OTHER, "--path", "/x"],
            ["sign", "download-file", "--server", SERVER],
            ["sign", "upload"],
            ["sign", "upload", "--server", SERVER, "--config", "missing.yml"],
        ]
        for args in cases:
            result = _run(["wings_twisted.devpanel", *args])
            self.assertEqual(result.returncode, 2, args)
            self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
            self.assertTrue(result.stderr.startswith("devpanel: error: "), result.stderr)


def _read_until(proc: subprocess.Popen[bytes], marker: bytes, timeout: float = 20) -> bytes:
    """
    Read the process's stdout until ``marker`` appears, for at most
    ``timeout`` seconds.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    seen = b""
    while marker not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("timed out waiting for {!r}; got {!r}".format(marker, seen))
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise AssertionError("EOF before {!r}; got {!r}".format(marker, seen))
            seen += chunk
    return seen


class ExampleGameTests(SynchronousTestCase):
    """
    ``python3 -m wings_twisted.devpanel.examplegame`` as a subprocess.
    """

    def test_session(self) -> None:
        """
        Boot lines end with the done-string; commands are echoed and
        answered; ``stop`` exits 0.
        """
        result = _run(["wings_twisted.devpanel.examplegame", "--players", "7"], input="list\nsay hello there\nstop\nlist\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.splitlines()
        ready = lines.index("Server is ready")
        self.assertGreater(ready, 0)
        self.assertEqual(
            lines[ready + 1 :],
            [
                "> list",
                "There are 0 of a max of 7 players online.",
                "> say hello there",
                "[Server] hello there",
                "> stop",
                "[Server] Stopping the server... Goodbye!",
            ],
        )

    def test_crash_and_custom_done(self) -> None:
        """
        ``crash`` exits 1; ``--done`` changes the ready line.
        """
        result = _run(["wings_twisted.devpanel.examplegame", "--done", "Done (1s)!"], input="crash\n")
        self.assertEqual(result.returncode, 1)
        self.assertIn("Done (1s)!", result.stdout.splitlines())
        self.assertIn("crash", result.stderr.lower())

    def test_end_of_input(self) -> None:
        """
        Closing stdin shuts the game down with status 0.
        """
        result = _run(["wings_twisted.devpanel.examplegame"], input="")
        self.assertEqual(result.returncode, 0)
        self.assertIn("Console input closed", result.stdout)

    def test_sigterm(self) -> None:
        """
        SIGTERM after boot prints a shutdown line and exits 0.
        """
        proc = subprocess.Popen(
            [sys.executable, "-m", "wings_twisted.devpanel.examplegame"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        try:
            _read_until(proc, b"Server is ready")
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=20)
        finally:
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self.assertEqual(proc.returncode, 0)
        self.assertIn(b"Received SIGTERM", out)
