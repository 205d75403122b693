"""
Install scripts of the local-process environment run for real
(``ProcessEnvironment.run_installer``): under bubblewrap, ``unshare`` and
without a sandbox.  Runs that need bwrap or root skip without them, except
under ``CI`` where they fail.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Callable

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase

from wings_twisted.blocking import run_inline
from wings_twisted.environment import EnvironmentSettings, InstallResult
from wings_twisted.environment.process import ProcessEnvironment

from ..support import make_config, process_alive
from ..unit.test_sandbox import SCRIPT
from .test_process_environment import TIMEOUT, poll, real_reactor, require


class InstallerTests(TestCase):
    """
    Real install runs through ``ProcessEnvironment.run_installer``.
    """

    def make_env(self, *, which: Callable[[str], str | None] | None = None,
                 allow: bool = False) -> tuple[ProcessEnvironment, FilePath, FilePath]:
        base = FilePath(self.mktemp())
        volume = base.child("volume")
        volume.makedirs()
        config = make_config(base, environment={
            "driver": "process", "process": {"allow_unsandboxed_install": allow}})
        settings = EnvironmentSettings(uuid="5d0c7a4e-1111-4222-8333-944455556666",
                                       volume=volume.path, invocation="true")
        environment = ProcessEnvironment(settings, reactor=real_reactor(), config=config,
                                         run_blocking=run_inline, cgroups=None, which=which)
        return environment, volume, FilePath(config.system.tmp_directory)

    async def install(self, environment: ProcessEnvironment, script: str = SCRIPT,
                      lines: list[str] | None = None) -> InstallResult:
        out = lines if lines is not None else []
        d = environment.run_installer(script, "ghcr.io/pterodactyl/installers:debian", "bash",
                                      (("EGG_VAR", "v1"),), out.append)
        return await d.addTimeout(TIMEOUT * 2, real_reactor())

    def check_sandboxed_run(self, result: InstallResult, lines: list[str], volume: FilePath,
                            tmp: FilePath) -> None:
        self.assertEqual(result, InstallResult(True, exit_code=3))
        self.assertEqual(lines, ["in /mnt/server as {}".format(os.geteuid()), "install.sh",
                                 "var=v1", "oops"])
        self.assertEqual(volume.child("made.txt").getContent(), b"hello\n")
        self.assertEqual(os.listdir(tmp.path), [])

    async def test_bwrap(self) -> None:
        """
        Under bubblewrap the script sees the volume at /mnt/server (and
        writes into it), itself at /mnt/install, the server variables;
        stderr is merged; the exit code is reported and the temporary
        directory removed.  The CRLF script only exits 3 if it became LF.
        """
        require(shutil.which("bwrap") is not None, "bubblewrap is not installed")
        environment, volume, tmp = self.make_env()
        lines: list[str] = []
        result = await self.install(environment, lines=lines)
        self.check_sandboxed_run(result, lines, volume, tmp)

    async def test_unshare(self) -> None:
        """
        Without bwrap, root uses ``unshare --mount`` with the same view.
        """
        require(os.geteuid() == 0, "unshare needs root")
        require(shutil.which("unshare") is not None, "unshare is not installed")
        environment, volume, tmp = self.make_env(
            which=lambda name: None if name == "bwrap" else shutil.which(name))
        lines: list[str] = []
        result = await self.install(environment, lines=lines)
        self.check_sandboxed_run(result, lines, volume, tmp)

    async def test_refuses_without_sandbox(self) -> None:
        """
        With no helper and ``allow_unsandboxed_install`` false, the script is
        not run and the result says why.
        """
        environment, volume, tmp = self.make_env(which=lambda name: None)
        lines: list[str] = []
        result = await self.install(environment, lines=lines)
        self.assertFalse(result.completed)
        self.assertIn("allow_unsandboxed_install", result.error)
        self.assertEqual(lines, [])
        self.assertFalse(volume.child("made.txt").exists())

    async def test_unsandboxed_when_allowed(self) -> None:
        """
        With no helper but ``allow_unsandboxed_install``, the script runs
        from the temporary directory with the volume as working directory.
        """
        environment, volume, tmp = self.make_env(which=lambda name: None, allow=True)
        lines: list[str] = []
        script = "pwd\r\necho $HOME\r\necho made > made.txt\r\nexit 0\r\n"
        result = await self.install(environment, script, lines)
        self.assertEqual(result, InstallResult(True, exit_code=0))
        self.assertEqual(lines, [volume.path, volume.path])
        self.assertEqual(volume.child("made.txt").getContent(), b"made\n")
        self.assertEqual(os.listdir(tmp.path), [])

    async def test_missing_volume(self) -> None:
        """
        No volume: not completed, nothing written.
        """
        environment, volume, tmp = self.make_env(which=lambda name: None, allow=True)
        volume.remove()
        result = await self.install(environment)
        self.assertFalse(result.completed)
        self.assertIn("does not exist", result.error)

    async def test_cancel(self) -> None:
        """
        Cancelling a running install kills its process group and removes
        the temporary directory.
        """
        environment, volume, tmp = self.make_env(which=lambda name: None, allow=True)
        lines: list[str] = []
        script = "sleep 60 &\necho child $!\necho started\nwait\n"
        d: Deferred[Any] = environment.run_installer(script, "", "bash", (), lines.append)
        await poll(lambda: "started" in lines)
        child = int(lines[0].split()[1])
        d.cancel()
        with self.assertRaises(CancelledError):
            await d
        self.assertEqual(os.listdir(tmp.path), [])
        await poll(lambda: not process_alive(child))

    async def test_cancel_bwrap(self) -> None:
        """
        Cancelling works the same inside bubblewrap.
        """
        require(shutil.which("bwrap") is not None, "bubblewrap is not installed")
        environment, volume, tmp = self.make_env()
        lines: list[str] = []
        d: Deferred[Any] = environment.run_installer("echo started\nsleep 60\n", "", "bash", (),
                                                     lines.append)
        await poll(lambda: "started" in lines)
        d.cancel()
        with self.assertRaises(CancelledError):
            await d
        self.assertEqual(os.listdir(tmp.path), [])

    async def test_destroy_cancels_installer(self) -> None:
        """
        ``destroy`` stops a running install.
        """
        environment, volume, tmp = self.make_env(which=lambda name: None, allow=True)
        lines: list[str] = []
        d: Deferred[Any] = environment.run_installer("echo started\nsleep 60\n", "", "bash", (),
                                                     lines.append)
        await poll(lambda: "started" in lines)
        await environment.destroy()
        with self.assertRaises(CancelledError):
            await d
