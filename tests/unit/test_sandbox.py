"""
The install sandbox's command lines and script files
(``wings_twisted.environment.sandbox``), without running anything.  Real
runs: ``tests/integration/test_sandbox.py``.
"""

from __future__ import annotations

import os
import shutil
import stat
from typing import Callable

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.environment.sandbox import (
    Sandbox,
    bwrap_argv,
    candidates,
    install_command,
    resolve_entrypoint,
    script_text,
    write_script,
)

SCRIPT = ("#!/bin/bash\r\n"
          "echo \"in $(pwd) as $(id -u)\"\r\n"
          "ls /mnt/install\r\n"
          "echo \"var=$EGG_VAR\"\r\n"
          "echo hello > /mnt/server/made.txt\r\n"
          "echo oops >&2\r\n"
          "exit 3\r\n")


class CommandTests(SynchronousTestCase):
    """
    Command lines and the script file.
    """

    def test_bwrap_argv(self) -> None:
        """
        The bubblewrap command line of lifecycle.md §21.4, verbatim.
        """
        self.assertEqual(
            " ".join(bwrap_argv("bwrap", "/vol", "/tmp/x/uuid", "bash")),
            "bwrap --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp --tmpfs /mnt "
            "--bind /vol /mnt/server --ro-bind /tmp/x/uuid /mnt/install --unshare-pid "
            "--die-with-parent --chdir /mnt/server bash /mnt/install/install.sh")

    def test_unsandboxed_command(self) -> None:
        """
        Without a sandbox the script runs from its real path in the volume.
        """
        command = install_command(Sandbox("none"), "/vol", "/tmp/x/uuid", "", "bash")
        self.assertEqual(command.argv, ["bash", "/tmp/x/uuid/install.sh"])
        self.assertEqual(command.cwd, "/vol")

    def test_candidates(self) -> None:
        """
        bwrap first; unshare only as root.
        """
        which: Callable[[str], str | None] = lambda name: "/usr/bin/" + name
        self.assertEqual(candidates(which, True), [Sandbox("bwrap", "/usr/bin/bwrap"),
                                                   Sandbox("unshare", "/usr/bin/unshare")])
        self.assertEqual(candidates(which, False), [Sandbox("bwrap", "/usr/bin/bwrap")])
        self.assertEqual(candidates(lambda name: None, True), [])

    def test_crlf(self) -> None:
        """
        CRLF line ends become LF.
        """
        self.assertEqual(script_text("a\r\nb\r\n"), "a\nb\n")

    def test_write_script(self) -> None:
        """
        ``<tmp>/<uuid>/install.sh``: directory 0700, file 0644, LF ends, old
        contents replaced.
        """
        tmp = FilePath(self.mktemp())
        tmp.child("abc").makedirs()
        tmp.child("abc").child("stale").setContent(b"x")
        script_dir, _ = write_script(tmp.path, "abc", "echo a\r\necho b\r\n", False)
        self.assertEqual(script_dir, tmp.child("abc").path)
        self.assertEqual(stat.S_IMODE(os.stat(script_dir).st_mode), 0o700)
        path = os.path.join(script_dir, "install.sh")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o644)
        self.assertEqual(open(path, "rb").read(), b"echo a\necho b\n")
        self.assertEqual(os.listdir(script_dir), ["install.sh"])

    def test_resolve_entrypoint(self) -> None:
        """
        Entrypoints are looked up on PATH; Alpine's ``ash`` falls back to sh.
        """
        path = os.defpath + ":/usr/bin:/bin"
        self.assertEqual(resolve_entrypoint("bash", path), shutil.which("bash", path=path))
        self.assertIsNotNone(resolve_entrypoint("ash", path))
        self.assertIsNone(resolve_entrypoint("no-such-shell-here", path))
