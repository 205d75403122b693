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

from wings_twisted.environment import jail
from wings_twisted.environment.sandbox import (
    Sandbox,
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
        The jail: unprivileged namespaces, no capabilities, a new session,
        only the system directories an installer needs (host symlinks such as
        ``/bin -> usr/bin`` kept as symlinks), never the host root, ``/etc``
        as a whole or the daemon's directories; the volume read-write at
        /mnt/server, the script read-only at /mnt/install.
        """
        links = {"/bin": "usr/bin", "/lib": "usr/lib"}
        argv = jail.bwrap_argv("bwrap", "/vol", "/tmp/x/uuid", ["bash", "/mnt/install/install.sh"],
                               network="isolated", readlink=links.__getitem__,
                               exists=lambda p: p in ("/usr", "/sbin"),
                               islink=lambda p: p in links)
        text = " ".join(argv)
        for flag in ("--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                     "--unshare-net", "--new-session", "--die-with-parent",
                     "--cap-drop ALL", "--ro-bind /usr /usr", "--ro-bind /sbin /sbin",
                     "--symlink usr/bin /bin", "--symlink usr/lib /lib",
                     "--ro-bind-try /etc/passwd /etc/passwd",
                     "--ro-bind-try /etc/ssl /etc/ssl", "--tmpfs /tmp",
                     "--bind /vol /mnt/server --ro-bind /tmp/x/uuid /mnt/install",
                     "--chdir /mnt/server -- bash /mnt/install/install.sh"):
            self.assertIn(flag, text)
        binds = [argv[i + 1] for i, a in enumerate(argv) if a.endswith("bind") or a.endswith("-try")]
        self.assertNotIn("/", binds)
        self.assertNotIn("/etc", binds)
        self.assertFalse([b for b in binds if b.startswith(("/etc/pterodactyl", "/var", "/root"))])
        self.assertNotIn("/lib64", text)
        self.assertEqual(argv[-2:], ["bash", "/mnt/install/install.sh"])

    def test_bwrap_network(self) -> None:
        """
        ``host`` shares the host's network; a slirp resolver file replaces
        ``/etc/resolv.conf``.
        """
        host = jail.bwrap_argv("bwrap", "/v", "/s", ["sh"], network="host")
        self.assertNotIn("--unshare-net", host)
        slirp = " ".join(jail.bwrap_argv("bwrap", "/v", "/s", ["sh"], network="isolated",
                                         resolv="/s/.resolv.conf"))
        self.assertIn("--ro-bind /s/.resolv.conf /etc/resolv.conf", slirp)
        self.assertNotIn("--ro-bind-try /etc/resolv.conf", slirp)
        self.assertIn("--disable-host-loopback", jail.slirp_argv("slirp4netns"))

    def test_install_ids(self) -> None:
        """
        As root the script runs as the server's user, never root (nobody
        instead); otherwise as the daemon's user.
        """
        self.assertEqual(jail.install_ids(988, 988, True), (988, 988))
        self.assertEqual(jail.install_ids(0, 0, True), (65534, 65534))
        self.assertEqual(jail.install_ids(-1, -1, True), (65534, 65534))
        self.assertEqual(jail.install_ids(988, 988, False), (-1, -1))

    def test_unsandboxed_command(self) -> None:
        """
        Without a sandbox the script runs from its real path in the volume.
        """
        command = install_command(Sandbox("none"), "/vol", "/tmp/x/uuid", "", "bash")
        self.assertEqual(command.argv, ["bash", "/tmp/x/uuid/install.sh"])
        self.assertEqual(command.cwd, "/vol")

    def test_candidates(self) -> None:
        """
        The bwrap jail first (with slirp4netns unless the network is
        ``none``/``host``, as the server's user when root); ``unshare``, not
        a boundary, only as root and with the unsafe switch.
        """
        which: Callable[[str], str | None] = lambda name: "/usr/bin/" + name
        jailed = Sandbox("bwrap", "/usr/bin/bwrap", "isolated", "/usr/bin/slirp4netns", 988, 988)
        self.assertEqual(candidates(which, True, uid=988, gid=988), [jailed])
        self.assertEqual(candidates(which, True, True, uid=988, gid=988),
                         [jailed, Sandbox("unshare", "/usr/bin/unshare")])
        self.assertEqual(candidates(which, False, True),
                         [Sandbox("bwrap", "/usr/bin/bwrap", "isolated", "/usr/bin/slirp4netns")])
        self.assertEqual(candidates(which, False, network="none"),
                         [Sandbox("bwrap", "/usr/bin/bwrap", "isolated", "")])
        self.assertEqual(candidates(which, False, network="host"),
                         [Sandbox("bwrap", "/usr/bin/bwrap", "host", "")])
        self.assertEqual(candidates(lambda name: None, True, True), [])

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
        self.assertEqual(sorted(os.listdir(script_dir)), [".resolv.conf", "install.sh"])
        self.assertEqual(open(os.path.join(script_dir, ".resolv.conf")).read(),
                         "nameserver 10.0.2.3\n")

    def test_resolve_entrypoint(self) -> None:
        """
        Entrypoints are looked up on PATH; Alpine's ``ash`` falls back to sh.
        """
        path = os.defpath + ":/usr/bin:/bin"
        self.assertEqual(resolve_entrypoint("bash", path), shutil.which("bash", path=path))
        self.assertIsNotNone(resolve_entrypoint("ash", path))
        self.assertIsNone(resolve_entrypoint("no-such-shell-here", path))
