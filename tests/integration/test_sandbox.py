"""
Install scripts of the local-process environment run for real
(``ProcessEnvironment.run_installer``): in the bubblewrap jail, under
``unshare`` and without a sandbox (both only with the unsafe switch), and a
hostile script trying to escape the jail.  Runs that need bwrap, slirp4netns
or root skip without them, except under ``CI`` where they fail.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Callable

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase

from wings_twisted.blocking import run_inline
from wings_twisted.environment import EnvironmentSettings, InstallResult
from wings_twisted.environment.process import ProcessEnvironment

from ..support import TOKEN, make_config, process_alive
from ..unit.test_sandbox import SCRIPT
from .test_process_environment import TIMEOUT, poll, real_reactor, require


class InstallerTests(TestCase):
    """
    Real install runs through ``ProcessEnvironment.run_installer``.
    """

    #: The server's user as root: an id with no account, like a fresh node's.
    uid = 4242 if os.geteuid() == 0 else os.geteuid()

    def make_env(self, *, which: Callable[[str], str | None] | None = None,
                 allow: bool = False, network: str = "auto",
                 ) -> tuple[ProcessEnvironment, FilePath, FilePath]:
        base = FilePath(self.mktemp())
        self.base = base
        volume = base.child("volumes").child("5d0c7a4e-1111-4222-8333-944455556666")
        volume.makedirs()
        # The jail runs as the server's user: like system.data, the path to
        # the volume must be traversable (trial makes its mktemp parent 0700).
        os.chmod(base.path, 0o755)
        os.chmod(os.path.dirname(base.path), 0o755)
        os.chown(volume.path, self.uid, self.uid)
        config = make_config(base, environment={
            "driver": "process", "process": {"allow_unsandboxed_install": allow,
                                             "install_network": network}})
        settings = EnvironmentSettings(uuid="5d0c7a4e-1111-4222-8333-944455556666",
                                       volume=volume.path, invocation="true",
                                       uid=self.uid, gid=self.uid)
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
                            tmp: FilePath, uid: int) -> None:
        self.assertEqual(result, InstallResult(True, exit_code=3))
        lines = [line for line in lines if not line.startswith("wings-twisted: ")]
        self.assertEqual(lines, ["in /mnt/server as {}".format(uid), "install.sh",
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
        self.check_sandboxed_run(result, lines, volume, tmp, self.uid)
        self.assertEqual(volume.child("made.txt").getPermissions().user.shorthand(), "rw-")
        self.assertEqual(os.stat(volume.child("made.txt").path).st_uid, self.uid)

    async def test_unshare_refused_without_the_unsafe_switch(self) -> None:
        """
        Without bwrap, ``unshare`` (which leaves the host writable) is not
        used unless ``allow_unsandboxed_install`` is set: nothing runs.
        """
        environment, volume, tmp = self.make_env(
            which=lambda name: None if name == "bwrap" else shutil.which(name))
        lines: list[str] = []
        result = await self.install(environment, lines=lines)
        self.assertFalse(result.completed)
        self.assertIn("allow_unsandboxed_install", result.error)
        self.assertFalse(volume.child("made.txt").exists())
        self.assertEqual(os.listdir(tmp.path), [])

    async def test_unshare(self) -> None:
        """
        Without bwrap and with the unsafe switch, root uses ``unshare
        --mount`` with the same view (as root: not a boundary).
        """
        require(os.geteuid() == 0, "unshare needs root")
        require(shutil.which("unshare") is not None, "unshare is not installed")
        environment, volume, tmp = self.make_env(
            which=lambda name: None if name == "bwrap" else shutil.which(name), allow=True)
        lines: list[str] = []
        result = await self.install(environment, lines=lines)
        self.check_sandboxed_run(result, lines, volume, tmp, os.geteuid())

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
        # The jail's probe and network take a while on a loaded machine.
        await poll(lambda: "started" in lines, TIMEOUT * 4)
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


ESCAPE_SCRIPT = """\
cat "$CONFIG" && echo READ-CONFIG
cat /etc/pterodactyl/config.yml && echo READ-ETC-CONFIG
ls "$ROOT_DIRECTORY" && echo SAW-ROOT-DIRECTORY
cat "$OTHER_VOLUME/secret.txt" && echo READ-OTHER-VOLUME
mount -o remount,rw / && echo REMOUNTED
unshare -r true && echo NEW-USERNS
touch "$USR_FILE" && echo WROTE-USR
mkdir -p "$(dirname "$HOST_FILE")"; echo x > "$HOST_FILE"
(exec 3<>/dev/tcp/127.0.0.1/$PORT) && echo REACHED-LOOPBACK
(exec 3<>/dev/tcp/10.0.2.2/$PORT) && echo REACHED-HOST-LOOPBACK
grep CapEff /proc/self/status
echo "uid $(id -u)"
echo "download $(curl -sS -o /dev/null -w '%{http_code}' --max-time 20 "$DOWNLOAD_URL")"
echo ok > /mnt/server/written.txt
echo done
"""

#: A package registry the workplace lets every machine reach: the jail's
#: download check is made only where the host itself can fetch it.
DOWNLOAD_URL = "https://deb.debian.org/debian/"


class _Counting(Protocol):
    def connectionMade(self) -> None:
        self.factory.connections += 1  # type: ignore[attr-defined]
        self.transport.loseConnection()


class JailTests(TestCase):
    """
    A hostile install script against the real jail (issue: install scripts
    escape): it can read neither the configuration nor the node token,
    cannot write outside ``/mnt/server``, cannot reach the host's loopback
    where the node API listens, and can still download.
    """

    uid = InstallerTests.uid
    make_env = InstallerTests.make_env

    async def test_hostile_script_is_contained(self) -> None:
        """
        Every escape attempt of ``ESCAPE_SCRIPT`` fails while its write to
        ``/mnt/server`` and (with slirp4netns, where the host can reach the
        registry) its download succeed.
        """
        require(shutil.which("bwrap") is not None, "bubblewrap is not installed")
        require(shutil.which("slirp4netns") is not None, "slirp4netns is not installed")
        require(shutil.which("curl") is not None, "curl is not installed")
        environment, volume, tmp = self.make_env()
        config_file = self.base.child("config.yml")
        config_file.setContent(b"token: " + TOKEN.encode() + b"\n")
        other = self.base.child("volumes").child("0c5b1d6e-3f0a-4b8e-9d2c-7a6f5e4d3c2b")
        other.makedirs()
        other.child("secret.txt").setContent(b"other server's data\n")
        os.chmod(other.path, 0o755)
        host_file = self.base.child("escaped").child("x.txt")
        usr_file = "/usr/.wings-twisted-escape-" + os.path.basename(os.path.dirname(self.base.path))
        self.addCleanup(lambda: os.path.exists(usr_file) and os.unlink(usr_file))
        factory = ServerFactory.forProtocol(_Counting)
        factory.connections = 0  # type: ignore[attr-defined]
        port = real_reactor().listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        host_download = await getProcessOutputAndValue(
            shutil.which("curl"), ["-sS", "-o", "/dev/null", "-w", "%{http_code}",
                                   "--max-time", "20", DOWNLOAD_URL], reactor=real_reactor())
        env = (("CONFIG", config_file.path), ("ROOT_DIRECTORY", self.base.child("root").path),
               ("OTHER_VOLUME", other.path), ("HOST_FILE", host_file.path),
               ("USR_FILE", usr_file),
               ("PORT", str(port.getHost().port)), ("DOWNLOAD_URL", DOWNLOAD_URL),
               ("PATH", "/usr/local/bin:/usr/bin:/bin"))
        lines: list[str] = []
        d = environment.run_installer(ESCAPE_SCRIPT, "", "bash", env, lines.append)
        result = await d.addTimeout(TIMEOUT * 8, real_reactor())
        text = "\n".join(lines)
        self.assertTrue(result.completed, result.error)
        self.assertIn("done", lines)
        for marker in ("READ-CONFIG", "READ-ETC-CONFIG", "SAW-ROOT-DIRECTORY",
                       "READ-OTHER-VOLUME", "REMOUNTED", "WROTE-USR", "REACHED-LOOPBACK",
                       "REACHED-HOST-LOOPBACK", "other server's data"):
            self.assertNotIn(marker, text)
        self.assertNotIn(TOKEN, text)
        self.assertIn("CapEff:\t0000000000000000", lines)
        self.assertIn("uid {}".format(self.uid), lines)
        self.assertFalse(host_file.exists())
        self.assertFalse(os.path.exists(usr_file))
        self.assertEqual(factory.connections, 0)  # type: ignore[attr-defined]
        self.assertEqual(volume.child("written.txt").getContent(), b"ok\n")
        out, _, code = host_download
        if code == 0 and out == b"200":
            self.assertIn("download 200", lines)
        else:
            require(False, "this host cannot reach {} itself".format(DOWNLOAD_URL))

    async def test_no_network_without_slirp(self) -> None:
        """
        ``install_network: none`` gives the script only its own loopback: a
        download fails, the host's loopback stays unreachable, and a line
        says why.
        """
        require(shutil.which("bwrap") is not None, "bubblewrap is not installed")
        environment, volume, tmp = self.make_env(network="none")
        lines: list[str] = []
        script = ("(exec 3<>/dev/tcp/127.0.0.1/$PORT) && echo REACHED\n"
                  "getent hosts deb.debian.org && echo RESOLVED\necho done\n")
        factory = ServerFactory.forProtocol(_Counting)
        factory.connections = 0  # type: ignore[attr-defined]
        port = real_reactor().listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        d = environment.run_installer(script, "", "bash", (("PORT", str(port.getHost().port)),),
                                      lines.append)
        result = await d.addTimeout(TIMEOUT * 4, real_reactor())
        self.assertTrue(result.completed, result.error)
        self.assertIn("done", lines)
        self.assertNotIn("REACHED", lines)
        self.assertNotIn("RESOLVED", lines)
        self.assertEqual(factory.connections, 0)  # type: ignore[attr-defined]
        self.assertTrue([line for line in lines if "without network access" in line])
